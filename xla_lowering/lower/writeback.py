"""Writing new values over storage that still holds old ones: a loop's state, a variable, a conditional's output
that is a variable's own storage.

Two ways, both safe against reading what a copy has already overwritten:

- ``carry``: at the end of a sequence, every read before any write; a value that reads storage another of the
  copies writes goes through a temporary first (``(a, b) -> (b, a)``, a view of another state element).
- ``write_early``: each copy right after the last step of the sequence that touches its destination or its source,
  instead of all at the end, so that the new values (an optimizer's new weights and slots) are not all live at
  once. Only for copies that ``separable`` picks (a source that no copy writes, storage no other copy claims); the
  caller writes the others with ``carry`` or at its end. Steps added to the sequence before ``write_early`` count
  as touches, so an early copy never overwrites storage that a later copy still reads.
"""
from __future__ import annotations

import numpy as np

from kernels.program import Copy, Sequence, walk

from ..mapping.arrays import distinct
from ..mapping.memory import mark_used
from ..mapping.tensor import OFFSET_BITS, DTensor, copy_runs


def blocks(tensors) -> set:
    """The storage blocks (one a tensor and tile) of ``tensors``."""
    return {x for t in tensors for x in (t.syms >> OFFSET_BITS).tolist()}


def same_storage(a: DTensor, b: DTensor) -> bool:
    return len(a.syms) == len(b.syms) and np.array_equal(a.syms, b.syms) and np.array_equal(a.starts, b.starts) \
        and np.array_equal(a.counts, b.counts)


def carry(b, dsts: list[DTensor], srcs: list[DTensor], name: str, origin: str) -> None:
    """Copy each of ``srcs`` into the matching ``dsts`` now, every read before any write."""
    jobs = []
    for s, r in zip(dsts, srcs):
        if r is s:
            continue
        dst, src = s.element_syms(), r.element_syms()
        keep = dst != src
        if keep.any():
            jobs.append((s, r, keep, dst[keep], src[keep]))
    if not jobs:
        return
    written = distinct(np.concatenate([d >> OFFSET_BITS for _, _, _, d, _ in jobs]))
    first, second = [], []
    for s, r, keep, dst, src in jobs:
        isz = s.itemsize
        if np.isin(src >> OFFSET_BITS, written).any():
            tmp = b.like(r, r.shape, f"{name}/carry_tmp", "temporary", origin).element_syms()[keep]
            first.append(copy_runs(tmp, src, isz))
            second.append(copy_runs(dst, tmp, isz))
        else:
            second.append(copy_runs(dst, src, isz))
    add_copy(b, f"{name}/carry_read", first, origin)
    add_copy(b, f"{name}/carry", second, origin)


def add_copy(b, name: str, rows: list[np.ndarray], origin: str) -> None:
    rows = [r for r in rows if len(r)]
    if rows:
        b.add(Copy(name, np.concatenate(rows).astype(np.int64), origin))


def separable(jobs: list, keep: set = frozenset()) -> list[int]:
    """Indices of the (dst, src) ``jobs`` that ``write_early`` may write on their own: the source is no job's
    destination, shares no block with the source of a job picked before (a block has one last use to follow), and
    the destination is none of the ``keep`` blocks (storage the caller still reads after the sequence)."""
    written = blocks(d for d, _ in jobs)
    picked, claimed = [], set()
    for k, (dst, src) in enumerate(jobs):
        sb = blocks([src])
        if blocks([dst]) & keep or sb & written or sb & claimed:
            continue
        claimed |= sb
        picked.append(k)
    return picked


def write_early(b, seq: Sequence, jobs: list, name: str, origin: str | None = None) -> None:
    """Copy each (dst, src) of ``jobs`` (``separable`` ones) into ``dst`` right after the last step of ``seq`` that
    touches either; a copy is named ``name`` + the destination's name (origin: the destination's by default)."""
    if not jobs:
        return
    owner = np.full(b.nblocks, -1, np.int64)           # block -> job whose destination or source it holds
    for k, (dst, src) in enumerate(jobs):
        owner[list(blocks([dst, src]))] = k
    last = np.full(len(jobs), -1, np.int64)
    for i, step in enumerate(seq.steps):
        mark_used(walk(Sequence([step])), owner, last, i)
    after: dict[int, list] = {}
    for k, (dst, src) in enumerate(jobs):
        copies = Sequence()
        with b.into(copies):
            b.copy(f"{name}{dst.name}", dst.element_syms(), src.element_syms(), dst.itemsize,
                   dst.origin if origin is None else origin)
        after.setdefault(int(last[k]), []).extend(copies.steps)
    steps = list(after.pop(-1, []))
    for i, step in enumerate(seq.steps):
        steps.append(step)
        steps.extend(after.pop(i, []))
    seq.steps[:] = steps
