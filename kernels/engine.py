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
from .program import Copy, Execute, If, Repeat, Sequence, StreamIn, StreamOut, Switch, While


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
    """

    def __init__(self, model):
        self.model = model
        # np.zeros maps pages lazily: untouched tile memory costs the host nothing.
        self.mem = np.zeros(model.num_tiles * model.tile_memory, dtype=np.uint8)
        self.loaded = None
        self.loads = 0


class Engine:
    """An executable bound to a simulated IPU (its own, or one shared with other executables)."""

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

    @property
    def mem(self) -> np.ndarray:
        return self.device.mem

    def load(self) -> None:
        """Make this executable the one on the device (writes its constants)."""
        if self.device.loaded is self:
            return
        if len(self.exe.constant_rows):
            copy_codelets.host_to_device(self.device.mem, self.exe.constant_data, self.exe.constant_rows)
        self.device.loaded = self
        self.device.loads += 1

    # --- running -------------------------------------------------------------------------------
    def run(self, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], Profile]:
        exe = self.exe
        if len(inputs) != len(exe.inputs):
            raise ValueError(f"the executable takes {len(exe.inputs)} inputs, got {len(inputs)}")
        host_in = []
        for i, (arr, spec) in enumerate(zip(inputs, exe.inputs)):
            arr = np.asarray(arr)
            want = np.dtype(dtypes.NUMPY[spec.dtype])
            if tuple(arr.shape) != tuple(spec.dims):
                raise ValueError(f"input {i} ('{spec.name}') must have shape {tuple(spec.dims)} "
                                 f"({spec.dtype}), got {tuple(arr.shape)}; shapes are fixed when a program is "
                                 f"compiled: a new shape compiles a new executable")
            host_in.append(np.ascontiguousarray(arr, dtype=want).reshape(-1).view(np.uint8))
        host_out = [np.zeros(spec.nbytes, dtype=np.uint8) for spec in exe.outputs]
        profile = Profile(tile_compute=np.zeros(exe.device.num_tiles, dtype=np.int64))
        self.load()
        self.runs += 1
        with _blas_limits():
            self._run_seq(exe.program, host_in, host_out, profile)
        outs = [buf.view(dtypes.NUMPY[spec.dtype]).reshape(spec.dims) for buf, spec in zip(host_out, exe.outputs)]
        return outs, profile

    def _run_seq(self, seq: Sequence, host_in, host_out, prof: Profile) -> None:
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
                copy_codelets.host_to_device(self.mem, host_in[step.index], step.rows)
                prof.host_io += step.cycles
            elif kind is StreamOut:
                copy_codelets.device_to_host(self.mem, host_out[step.index], step.rows)
                prof.host_io += step.cycles
            elif kind is Repeat:
                for _ in range(step.count):
                    self._run_seq(step.body, host_in, host_out, prof)
            elif kind is If:
                taken = step.then_body if self.mem[step.cond_addr] else step.else_body
                self._run_seq(taken, host_in, host_out, prof)
            elif kind is While:
                # every evaluation of the predicate costs one sync: its tile tells all tiles whether to go on
                n = 0
                while True:
                    self._run_seq(step.cond, host_in, host_out, prof)
                    prof.sync += sync
                    prof.steps[step.name] += sync
                    if not self.mem[step.cond_addr]:
                        break
                    if step.max_iterations is not None and n >= step.max_iterations:
                        raise RuntimeError(f"the device loop '{step.name}' ran more than {step.max_iterations} "
                                           "iterations")
                    self._run_seq(step.body, host_in, host_out, prof)
                    n += 1
            elif kind is Switch:
                # like While's predicate, the index is broadcast to every tile at a sync
                a = step.index_addr
                index = int.from_bytes(self.mem[a:a + 4].tobytes(), "little", signed=True)
                if not 0 <= index < len(step.branches):
                    index = len(step.branches) - 1
                prof.sync += sync
                prof.steps[step.name] += sync
                self._run_seq(step.branches[index], host_in, host_out, prof)
            elif kind is Sequence:
                self._run_seq(step, host_in, host_out, prof)
            else:  # pragma: no cover - the compiler makes only the kinds above
                raise TypeError(f"unknown program step {step!r}")

    def _execute(self, step: Execute) -> None:
        mem = self.mem
        for g in step.cs.groups:
            p = g.params
            if g.codelet == "expr":
                expr_codelet.run_expression(mem, g.records, p["code"], p["in_dt"], p["in_scalar"], p["out_dt"],
                                            p["out_slot"], p["nslots"], p["fconst"], p["iconst"])
            elif g.codelet == "reduce_expr":
                expr_codelet.run_reduce_expression(mem, g.records, p["code"], p["in_dt"], p["out_slots"], p["nacc"],
                                                   p["nslots"], p["fconst"], p["iconst"])
            elif g.codelet == "matmul":
                matmul_codelet.run_matmul(mem, g.records, p["in_dt"], p["out_dt"], p.get("ta", False), p.get("tb", False))
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
