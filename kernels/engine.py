"""The BSP engine: runs an executable's program on the simulated IPU's tile memories and counts cycles.

Device memory is one byte array of tiles x tile memory; each tile's region is that tile's SRAM. Python walks
the program tree (a few hundred steps); every step is one call into a Cython codelet that runs all of that
step's vertices or copies in C, in parallel over the host's cores. Cycle counts are estimated when the
executable is built (they depend only on shapes); the engine adds them up for the steps it executes.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from . import dtypes
from .codelets import copy as copy_codelets
from .codelets import dynamic as dynamic_codelet
from .codelets import expr as expr_codelet
from .codelets import matmul as matmul_codelet
from .codelets import reduce as reduce_codelet
from .codelets import rng as rng_codelet
from .executable import Executable
from . import cycles
from .program import FED, Copy, Execute, If, Repeat, Sequence, StreamIn, StreamOut, Switch, While


@dataclass
class Profile:
    """Cycles of one or more runs, split the way Poplar's reports split them."""
    compute: int = 0
    exchange: int = 0
    sync: int = 0
    host_io: int = 0
    steps: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    tile_compute: np.ndarray | None = None
    exchange_bytes: int = 0
    step_exchange_bytes: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # copy name -> bytes
    iterations: int = 1               # steps run (an infeed loop's completed iterations)

    @property
    def total(self) -> int:
        return self.compute + self.exchange + self.sync + self.host_io


_BLAS = None


def _blas_limits():
    """Our own threads run the vertices; BLAS inside each vertex must use one thread."""
    global _BLAS
    try:
        if _BLAS is None:
            from threadpoolctl import ThreadpoolController
            _BLAS = ThreadpoolController()
        return _BLAS.limit(limits=1, user_api="blas")
    except Exception:  # pragma: no cover - threadpoolctl is a dependency; keep running without it
        import contextlib
        return contextlib.nullcontext()


class Device:
    """One simulated IPU: every tile's memory, and which executable is loaded on it.

    Like a real IPU, a device holds one executable at a time; running another loads it (its constants) first.
    Loading another executable overwrites the memory of the one loaded before: its ``before_unload`` hook runs
    first (the owner of resident tensors reads back the values the host does not have yet).
    """

    def __init__(self, model):
        self.model = model
        # np.zeros maps pages lazily: untouched tile memory costs the host nothing.
        self.mem = np.zeros(model.num_tiles * model.tile_memory, dtype=np.uint8)
        self.loaded = None
        self.loads = 0
        self.transfer_cycles = 0       # host link cycles of resident tensors written and read (weights moved)
        self.transfer_bytes = 0


class Engine:
    """An executable bound to a simulated IPU (its own, or one shared with other executables).

    ``before_unload``: called with this engine just before another executable is loaded over it.
    ``stop``: set it (from a signal handler, another thread) to end a running infeed loop after the current
    iteration; the run then returns the completed iterations (``Profile.iterations``).
    """

    def __init__(self, exe: Executable, seed: int = 0, device: Device | None = None):
        self.exe = exe
        if device is not None and (device.model.num_tiles, device.model.tile_memory) != \
                (exe.device.num_tiles, exe.device.tile_memory):
            raise ValueError(f"the executable was compiled for {exe.device.num_tiles} tiles x "
                             f"{exe.device.tile_memory} bytes, the device has {device.model.num_tiles} x "
                             f"{device.model.tile_memory}")
        self.device = device or Device(exe.device)
        self.seed = np.uint64(seed)
        self.runs = 0
        self.before_unload = None
        self.stop = False
        self._iteration = 0

    @property
    def mem(self) -> np.ndarray:
        return self.device.mem

    @property
    def loaded(self) -> bool:
        return self.device.loaded is self

    def load(self) -> None:
        """Make this executable the one on the device (writes its constants)."""
        device = self.device
        if device.loaded is self:
            return
        previous = device.loaded
        if previous is not None and previous.before_unload is not None:
            previous.before_unload(previous)
        if len(self.exe.constant_rows):
            copy_codelets.host_to_device(device.mem, self.exe.constant_data, self.exe.constant_rows)
        device.loaded = self
        device.loads += 1

    # --- resident tensors (variables kept on the device between runs) ------------------------------------
    def write_resident(self, k: int, value: np.ndarray) -> None:
        """Write resident tensor ``k`` (``exe.resident[k]``) from the host; loads this executable first."""
        spec = self.exe.resident[k]
        arr = np.asarray(value)
        if tuple(arr.shape) != tuple(spec.dims):
            raise ValueError(f"resident tensor {k} ('{spec.name}') has shape {tuple(spec.dims)}, got "
                             f"{tuple(arr.shape)}")
        self.load()
        raw = np.ascontiguousarray(arr, dtype=dtypes.NUMPY[spec.dtype]).reshape(-1).view(np.uint8)
        copy_codelets.host_to_device(self.mem, raw, spec.rows)
        self._count_transfer(spec.nbytes)

    def read_resident(self, k: int) -> np.ndarray:
        """The current value of resident tensor ``k``, read from the device (this executable must be loaded)."""
        spec = self.exe.resident[k]
        if not self.loaded:
            raise RuntimeError(f"resident tensor '{spec.name}' cannot be read: another executable was loaded on "
                               f"the device since this one ran (its before_unload hook should have read it)")
        raw = np.zeros(spec.nbytes, np.uint8)
        copy_codelets.device_to_host(self.mem, raw, spec.rows)
        self._count_transfer(spec.nbytes)
        return raw.view(dtypes.NUMPY[spec.dtype]).reshape(spec.dims)

    def _count_transfer(self, nbytes: int) -> None:
        self.device.transfer_cycles += cycles.host_stream_cycles(self.exe.device, nbytes)
        self.device.transfer_bytes += nbytes

    # --- running -------------------------------------------------------------------------------
    def run(self, inputs: list[np.ndarray], iterations: int | None = None) -> tuple[list[np.ndarray], Profile]:
        """Run the program once. An infeed-loop program runs ``iterations`` steps (by default the length of its
        fed inputs, which hold one element per step); its fed outputs hold one element per completed step."""
        exe = self.exe
        if len(inputs) != len(exe.inputs):
            raise ValueError(f"the executable takes {len(exe.inputs)} inputs, got {len(inputs)}")
        inputs = [np.asarray(a) for a in inputs]
        iterations = self._iterations(inputs, iterations)
        host_in = []
        for i, (arr, spec) in enumerate(zip(inputs, exe.inputs)):
            want = np.dtype(dtypes.NUMPY[spec.dtype])
            dims = (iterations, *spec.dims) if spec.feed else tuple(spec.dims)
            if tuple(arr.shape) != dims:
                what = f"one element of shape {tuple(spec.dims)} per step" if spec.feed else f"shape {dims}"
                raise ValueError(f"input {i} ('{spec.name}') must have {what} ({spec.dtype}), got "
                                 f"{tuple(arr.shape)}; shapes are fixed when a program is compiled: a new shape "
                                 f"compiles a new executable")
            host_in.append(np.ascontiguousarray(arr, dtype=want).reshape(-1).view(np.uint8))
        host_out = [np.zeros(spec.nbytes * (iterations if spec.feed else 1), dtype=np.uint8) for spec in exe.outputs]
        profile = Profile(tile_compute=np.zeros(exe.device.num_tiles, dtype=np.int64), iterations=iterations)
        self.load()
        self.runs += 1
        self.stop = False
        self._iteration = 0
        with _blas_limits():
            self._run_seq(exe.program, host_in, host_out, profile, iterations)
        outs = []
        for buf, spec in zip(host_out, exe.outputs):
            out = buf.view(dtypes.NUMPY[spec.dtype])
            outs.append(out.reshape(iterations, *spec.dims)[:profile.iterations] if spec.feed else out.reshape(spec.dims))
        return outs, profile

    def _iterations(self, inputs, iterations) -> int:
        exe = self.exe
        fed = {int(a.shape[0]) for a, spec in zip(inputs, exe.inputs) if spec.feed and a.ndim}
        if not exe.loop:
            if iterations not in (None, 1):
                raise ValueError(f"this executable runs one step a run (it has no infeed loop), not {iterations}")
            return 1
        if iterations is None:
            if len(fed) != 1:
                raise ValueError("say how many steps to run (iterations=N): the fed inputs "
                                 + ("disagree on how many elements they hold" if fed else "do not tell"))
            iterations = fed.pop()
        elif fed and fed != {iterations}:
            raise ValueError(f"{iterations} steps to run but the fed inputs hold {sorted(fed)} elements")
        if iterations < 0:
            raise ValueError(f"a negative number of steps ({iterations})")
        return int(iterations)

    def _run_seq(self, seq: Sequence, host_in, host_out, prof: Profile, iterations: int) -> None:
        sync = self.exe.device.sync_cycles
        for step in seq.steps:
            kind = type(step)
            if kind is Execute:
                self._execute(step)
                cyc = int(step.tile_cycles.max()) if step.tile_cycles is not None and len(step.tile_cycles) else 0
                prof.compute += cyc
                prof.sync += sync
                prof.tile_compute += step.tile_cycles
                prof.steps[step.cs.name] += cyc + sync
            elif kind is Copy:
                copy_codelets.run_copies(self.mem, step.rows)
                prof.compute += step.local_cycles
                prof.exchange += step.exchange_cycles
                prof.exchange_bytes += step.exchange_bytes
                prof.step_exchange_bytes[step.name] += step.exchange_bytes
                prof.sync += sync
                prof.steps[step.name] += step.local_cycles + step.exchange_cycles + sync
            elif kind is StreamIn:
                buf = host_in[step.index]
                if step.feed:
                    buf = buf[self._iteration * step.nbytes:(self._iteration + 1) * step.nbytes]
                copy_codelets.host_to_device(self.mem, buf, step.rows)
                prof.host_io += step.cycles
            elif kind is StreamOut:
                buf = host_out[step.index]
                if step.feed:
                    buf = buf[self._iteration * step.nbytes:(self._iteration + 1) * step.nbytes]
                copy_codelets.device_to_host(self.mem, buf, step.rows)
                prof.host_io += step.cycles
            elif kind is Repeat:
                if step.count == FED:
                    # the infeed loop: one iteration per fed element; a stop request ends it between iterations
                    done = 0
                    for done in range(iterations + 1):
                        if done == iterations or self.stop:
                            break
                        self._iteration = done
                        self._run_seq(step.body, host_in, host_out, prof, iterations)
                    prof.iterations = done
                else:
                    for _ in range(step.count):
                        self._run_seq(step.body, host_in, host_out, prof, iterations)
            elif kind is If:
                taken = step.then_body if self.mem[step.cond_addr] else step.else_body
                self._run_seq(taken, host_in, host_out, prof, iterations)
            elif kind is While:
                # every evaluation of the predicate costs one sync: its tile tells all tiles whether to go on
                n = 0
                while True:
                    self._run_seq(step.cond, host_in, host_out, prof, iterations)
                    prof.sync += sync
                    prof.steps[step.name] += sync
                    if not self.mem[step.cond_addr]:
                        break
                    if step.max_iterations is not None and n >= step.max_iterations:
                        raise RuntimeError(f"the device loop '{step.name}' ran more than {step.max_iterations} "
                                           "iterations")
                    self._run_seq(step.body, host_in, host_out, prof, iterations)
                    n += 1
            elif kind is Switch:
                # like While's predicate, the index is broadcast to every tile at a sync
                a = step.index_addr
                index = int.from_bytes(self.mem[a:a + 4].tobytes(), "little", signed=True)
                if not 0 <= index < len(step.branches):
                    index = len(step.branches) - 1
                prof.sync += sync
                prof.steps[step.name] += sync
                self._run_seq(step.branches[index], host_in, host_out, prof, iterations)
            elif kind is Sequence:
                self._run_seq(step, host_in, host_out, prof, iterations)
            else:  # pragma: no cover - the compiler makes only the kinds above
                raise TypeError(f"unknown program step {step!r}")

    def _execute(self, step: Execute) -> None:
        mem = self.mem
        for g in step.cs.groups:
            p = g.params
            if g.codelet == "expr":
                expr_codelet.run_expression(mem, g.records, p["code"], p["in_dt"], p["in_scalar"], p["out_dt"],
                                            p["out_slot"], p["nslots"], p["fconst"], p["iconst"], p.get("in_bcast"))
            elif g.codelet == "reduce_expr":
                expr_codelet.run_reduce_expression(mem, g.records, p["code"], p["in_dt"], p["out_slots"], p["nacc"],
                                                   p["nslots"], p["fconst"], p["iconst"])
            elif g.codelet == "matmul":
                matmul_codelet.run_matmul(mem, g.records, p["in_dt"], p["out_dt"], p.get("ta", False), p.get("tb", False))
            elif g.codelet == "conv":
                matmul_codelet.run_conv(mem, g.records, p["in_dt"], p["out_dt"], p.get("tb", False))
            elif g.codelet == "reduce":
                reduce_codelet.run_reduce(mem, g.records, p["op"], p["in_dt"], p["out_dt"], p["init_dt"])
            elif g.codelet == "rng":
                # a fresh stream for every run and every rng op, as the tiles' PRNG state advances
                seed = (int(self.seed) * 1000003 + self.runs * 7919 + p["stream"]) & 0xFFFFFFFFFFFFFFFF
                rng_codelet.run_rng(mem, g.records, p["distribution"], p["out_dt"], seed)
            elif g.codelet == "dyn_gather":
                dynamic_codelet.run_gather(mem, g.records, p["esz"], p["idx_dt"], p["idx_sz"], p["dim_size"], p["win"],
                                           p["row_step"], p["oi_off"])
            elif g.codelet == "dyn_scatter":
                dynamic_codelet.run_scatter(mem, g.records, p["dt"], p["esz"], p["idx_dt"], p["idx_sz"], p["dim_size"],
                                            p["win"], p["row_step"], p["oi_off"], p["op"], p["mode"])
            else:  # pragma: no cover
                raise TypeError(f"unknown codelet {g.codelet!r}")
