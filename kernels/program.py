"""The device program: plain data that the engine runs, the exporter writes and the reports read.

Poplar's program tree, simplified: a Sequence of steps; Execute(compute set) runs vertices on their tiles;
Copy moves bytes between tiles (exchange) or within a tile; Repeat loops a fixed number of times; While loops
while a device predicate holds; If branches on a device predicate, Switch on a device index; StreamIn/StreamOut
move host buffers. Addresses are absolute byte addresses into device memory (tile index x
tile memory + offset) once the executable is finalised; before that they are symbolic (block << 32 | offset).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


# Every codelet the engine runs, with the params its vertex groups must carry (the engine's ``_execute`` reads
# them). A loaded executable naming another codelet, or missing one of these params, is refused.
CODELETS: dict[str, tuple[str, ...]] = {
    "expr": ("code", "in_dt", "in_scalar", "out_dt", "out_slot", "nslots", "fconst", "iconst"),
    "reduce_expr": ("code", "in_dt", "out_slots", "nacc", "nslots", "fconst", "iconst"),
    "matmul": ("in_dt", "out_dt"),
    "reduce": ("op", "in_dt", "out_dt", "init_dt"),
    "rng": ("distribution", "out_dt", "stream"),
    "dyn_gather": ("esz", "idx_dt", "idx_sz", "dim_size", "win", "row_step", "oi_off"),
    "dyn_scatter": ("dt", "esz", "idx_dt", "idx_sz", "dim_size", "win", "row_step", "oi_off", "op", "mode"),
}


@dataclass
class VertexGroup:
    """Vertices of one codelet in a compute set. ``records`` rows are that codelet's vertex fields."""
    codelet: str                       # 'expr', 'matmul', 'reduce', 'rng'
    records: np.ndarray                # int64 [vertices, fields]
    addr_cols: tuple[int, ...]         # which record columns hold addresses
    tiles: np.ndarray                  # int32 [vertices]: the tile each vertex runs on
    cycles: np.ndarray                 # int64 [vertices]: estimated tile cycles of each vertex
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ComputeSet:
    name: str
    groups: list[VertexGroup]
    origin: str = ""                   # the HLO instruction / TF op it implements


@dataclass
class Execute:
    cs: ComputeSet
    tile_cycles: np.ndarray | None = None     # per tile, filled in when finalised

    @property
    def name(self) -> str:
        return self.cs.name


@dataclass
class Copy:
    """A fixed copy list: rows of [dst_addr, src_addr, nbytes]."""
    name: str
    rows: np.ndarray
    origin: str = ""
    exchange_cycles: int = 0           # filled in when finalised
    local_cycles: int = 0
    exchange_bytes: int = 0


@dataclass
class Sequence:
    steps: list = field(default_factory=list)


@dataclass
class Repeat:
    count: int
    body: Sequence


@dataclass
class If:
    cond_addr: int                      # address of a pred byte
    then_body: Sequence
    else_body: Sequence


@dataclass
class While:
    """Run ``cond`` (it leaves a pred byte at ``cond_addr``); while that byte is non-zero run ``body`` and repeat.

    ``max_iterations`` (None: no limit) stops a run that loops longer, with an error. Each evaluation of the
    predicate costs the device one sync (the tile holding the predicate tells every tile whether to go on).
    """
    cond: Sequence
    cond_addr: int                      # address of a pred byte written by ``cond``
    body: Sequence
    max_iterations: int | None = None
    name: str = "while"


@dataclass
class Switch:
    """Run ``branches[i]`` where i is the s32 at ``index_addr``; an index out of range runs the last branch."""
    index_addr: int
    branches: list[Sequence]
    name: str = "switch"


@dataclass
class StreamIn:
    """Host -> device: ``rows`` of [dev_addr, host_offset, nbytes] fill a tensor from input ``index``."""
    index: int
    rows: np.ndarray
    nbytes: int
    cycles: int = 0


@dataclass
class StreamOut:
    index: int
    rows: np.ndarray
    nbytes: int
    cycles: int = 0


def walk(seq: Sequence):
    """Every step of a program tree, depth first, with loops and branches entered once."""
    for step in seq.steps:
        yield step
        if isinstance(step, Repeat):
            yield from walk(step.body)
        elif isinstance(step, If):
            yield from walk(step.then_body)
            yield from walk(step.else_body)
        elif isinstance(step, While):
            yield from walk(step.cond)
            yield from walk(step.body)
        elif isinstance(step, Switch):
            for branch in step.branches:
                yield from walk(branch)
