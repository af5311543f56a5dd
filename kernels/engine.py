"""The BSP engine: runs an executable's program on the simulated IPU's tile memories and counts cycles.

Device memory is one byte array of tiles x tile memory; each tile's region is that tile's SRAM. Python walks
the program tree (a few hundred steps); every step is one call into a Cython codelet that runs all of that
step's vertices or copies in C, in parallel over the host's cores. Cycle counts are estimated when the
executable is built (they depend only on shapes); the engine adds them up for the steps it executes.
"""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from . import dtypes
from .codelets import copy as copy_codelets
from .codelets import expr as expr_codelet
from .codelets import matmul as matmul_codelet
from .codelets import reduce as reduce_codelet
from .codelets import rng as rng_codelet
from .executable import Executable
from .program import Copy, Execute, If, Repeat, Sequence, StreamIn, StreamOut


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

    @property
    def total(self) -> int:
        return self.compute + self.exchange + self.sync + self.host_io


def _blas_limits():
    # Our own threads run the vertices; BLAS inside each vertex must use one thread.
    try:
        from threadpoolctl import threadpool_limits
        return threadpool_limits(limits=1, user_api="blas")
    except Exception:  # pragma: no cover - threadpoolctl is a dependency; keep running without it
        import contextlib
        return contextlib.nullcontext()


class Engine:
    """One simulated IPU with an executable loaded on it."""

    def __init__(self, exe: Executable, seed: int = 0):
        self.exe = exe
        dev = exe.device
        # np.zeros maps pages lazily: untouched tile memory costs the host nothing.
        self.mem = np.zeros(dev.num_tiles * dev.tile_memory, dtype=np.uint8)
        self.seed = np.uint64(seed)
        self.runs = 0
        self._load_constants()

    def _load_constants(self) -> None:
        if len(self.exe.constant_rows):
            copy_codelets.host_to_device(self.mem, self.exe.constant_data, self.exe.constant_rows)

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
            elif g.codelet == "matmul":
                matmul_codelet.run_matmul(mem, g.records, p["in_dt"], p["out_dt"])
            elif g.codelet == "reduce":
                reduce_codelet.run_reduce(mem, g.records, p["op"], p["in_dt"], p["out_dt"], p["init_dt"])
            elif g.codelet == "rng":
                # a fresh stream for every run and every rng op, as the tiles' PRNG state advances
                seed = (int(self.seed) * 1000003 + self.runs * 7919 + p["stream"]) & 0xFFFFFFFFFFFFFFFF
                rng_codelet.run_rng(mem, g.records, p["distribution"], p["out_dt"], seed)
            else:  # pragma: no cover
                raise TypeError(f"unknown codelet {g.codelet!r}")


def host_threads() -> int:
    return int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))
