"""The device program: plain data that the engine runs, the exporter writes and the reports read.

Poplar's program tree, simplified: a Sequence of steps; Execute(compute set) runs vertices on their tiles;
Copy moves bytes between tiles (exchange) or within a tile; Repeat loops a fixed number of times (or, with
count FED, once for every element the host feeds: an infeed loop); While loops while a device predicate holds; If
branches on a device predicate, Switch on a device index; StreamIn/StreamOut move host buffers (a fed stream takes
or gives the next element of its host buffer each time it runs). Addresses are absolute byte addresses into device memory (tile index x
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
    "conv": ("in_dt", "out_dt"),
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
    """A fixed copy list: int64 rows of [dst, src, nbytes, count, dst_stride, src_stride].

    A row moves ``count`` runs of ``nbytes``, run i from src + i * src_stride to dst + i * dst_stride (count 1: one
    plain run). Its runs stay in one tile's memory at each end. Rows of the older [dst, src, nbytes] form (files
    written before strided rows, hand-made lists) are read as plain runs.
    """
    name: str
    rows: np.ndarray
    origin: str = ""
    exchange_cycles: int = 0           # filled in when finalised
    local_cycles: int = 0
    exchange_bytes: int = 0

    def __post_init__(self):
        self.rows = plain_copy_rows(self.rows)


COPY_COLUMNS = 6


def plain_copy_rows(rows: np.ndarray) -> np.ndarray:
    """Copy rows of 3 columns [dst, src, nbytes] as 6-column rows of one run each; other rows unchanged."""
    if isinstance(rows, np.ndarray) and rows.ndim == 2 and rows.shape[1] == 3:
        out = np.zeros((len(rows), COPY_COLUMNS), rows.dtype)
        out[:, :3] = rows
        out[:, 3] = 1
        return out
    return rows


@dataclass
class Sequence:
    steps: list = field(default_factory=list)


FED = -1        # Repeat.count of an infeed loop: as many iterations as the run's host buffers hold elements


@dataclass
class Repeat:
    """Run ``body`` ``count`` times; an infeed loop (count FED) runs once per element of the run's fed buffers,
    and the engine may stop it between iterations (Ctrl-C): a step is never left half done."""
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
    """Host -> device: ``rows`` of [dev_addr, host_offset, nbytes] fill a tensor from input ``index``.

    ``feed`` (an infeed): input ``index`` holds one ``nbytes`` element per loop iteration, and each execution of
    the step takes the next one (host offsets are relative to that element)."""
    index: int
    rows: np.ndarray
    nbytes: int
    cycles: int = 0
    feed: bool = False


@dataclass
class StreamOut:
    """Device -> host: the tensor at ``rows`` into output ``index`` (``feed``: an outfeed, one element a run of
    the step)."""
    index: int
    rows: np.ndarray
    nbytes: int
    cycles: int = 0
    feed: bool = False


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
