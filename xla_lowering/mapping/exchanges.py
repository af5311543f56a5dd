"""Merging adjacent exchanges: copies with no hazard between them run as one exchange phase.

Every program step ends at a sync, so each copy the lowering rules emit costs the device a sync even when it is
independent of the one before it (a convolution stages its input boxes and its weight blocks; an expression
aligns several operands). Adjacent copies in a sequence whose storage does not conflict -- the later one neither
reads nor writes what the earlier one writes, nor writes what it reads -- are one exchange: the tiles send and
receive both sets of runs in the same phase, and the phase takes as long as its busiest tile (the cycle model
counts the merged bytes per tile, not the sum of two phases). Conflicts are judged by storage block (a tensor's
storage on one tile), before memory is planned, so that two tensors never alias.
"""
from __future__ import annotations

import numpy as np

from kernels.program import Copy, If, Repeat, Sequence, Switch, While

from .arrays import distinct
from .tensor import OFFSET_BITS

MAX_NAME = 160


class _Touched:
    """The storage blocks a growing merged copy writes and reads, as flags by block number."""

    def __init__(self):
        self.written = np.zeros(0, bool)
        self.read = np.zeros(0, bool)
        self.marked = []

    def conflicts(self, dst: np.ndarray, src: np.ndarray) -> bool:
        self._grow(max(int(dst.max()), int(src.max())) + 1)
        return bool(self.written[dst].any() or self.written[src].any() or self.read[dst].any())

    def add(self, dst: np.ndarray, src: np.ndarray) -> None:
        self._grow(max(int(dst.max()), int(src.max())) + 1)
        self.written[dst] = True
        self.read[src] = True
        self.marked.append((dst, src))

    def clear(self) -> None:
        for dst, src in self.marked:
            self.written[dst] = False
            self.read[src] = False
        self.marked = []

    def _grow(self, n: int) -> None:
        if n > len(self.written):
            size = max(n, 2 * len(self.written))
            self.written = np.concatenate([self.written, np.zeros(size - len(self.written), bool)])
            self.read = np.concatenate([self.read, np.zeros(size - len(self.read), bool)])


def merge_exchanges(seq: Sequence) -> int:
    """Merge hazard-free adjacent copies in ``seq`` and every sequence inside it; returns the steps saved."""
    saved = 0
    out = []
    run = None                # the copy being grown: [copy, names, rows]
    touched = _Touched()

    def close():
        if run is not None and len(run[1]) > 1:
            run[0].rows = np.concatenate(run[2])
            run[0].name = _merged_name(run[1])
        touched.clear()

    for step in seq.steps:
        if isinstance(step, Repeat):
            saved += merge_exchanges(step.body)
        elif isinstance(step, If):
            saved += merge_exchanges(step.then_body) + merge_exchanges(step.else_body)
        elif isinstance(step, While):
            saved += merge_exchanges(step.cond) + merge_exchanges(step.body)
        elif isinstance(step, Switch):
            saved += sum(merge_exchanges(b) for b in step.branches)
        if not isinstance(step, Copy) or not len(step.rows):
            close()
            run = None
            out.append(step)
            continue
        dst = distinct(step.rows[:, 0] >> OFFSET_BITS)
        src = distinct(step.rows[:, 1] >> OFFSET_BITS)
        if run is not None and not touched.conflicts(dst, src):
            touched.add(dst, src)
            run[1].append(step.name)
            run[2].append(step.rows)
            saved += 1
            continue
        close()
        touched.add(dst, src)
        run = [step, [step.name], [step.rows]]
        out.append(step)
    close()
    seq.steps[:] = out
    return saved


def _merged_name(names: list[str]) -> str:
    """'conv.5/patch_boxes+rhs_blocks' for steps of one op, 'a + b' otherwise; long lists are cut short."""
    head = names[0].rsplit("/", 1)[0] + "/" if "/" in names[0] else None
    if head and all(n.startswith(head) for n in names):
        name = head + "+".join(n[len(head):] for n in names)
    else:
        name = " + ".join(names)
    if len(name) > MAX_NAME:
        name = f"{names[0]} + {len(names) - 1} more exchanges"
    return name
