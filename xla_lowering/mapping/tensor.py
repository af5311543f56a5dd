"""Tensors placed on tiles.

A ``DTensor`` is a logical array (HLO shape) whose row-major elements are split into *regions*: runs of
consecutive elements held contiguously in one tile's memory. Its tile mapping is the list of regions. Region
addresses are symbolic until the memory plan is made: ``block << 32 | byte offset``, where a block is one
tensor's storage on one tile (see ``xla_lowering.program.ProgramBuilder``).
"""
from __future__ import annotations

import weakref
from collections import OrderedDict

import numpy as np

from kernels.program import COPY_COLUMNS, plain_copy_rows

from .. hlo.ir import Shape
from .arrays import distinct

try:
    from kernels.codelets import copyplan as _copyplan
except ImportError:  # pragma: no cover - the Cython extensions are not built
    _copyplan = None

OFFSET_BITS = 32
OFFSET_MASK = (1 << OFFSET_BITS) - 1


def block_of(sym):
    return np.asarray(sym) >> OFFSET_BITS


class _SymsCache:
    """Which tensors keep their per-element addresses: the most recently used ones, up to ``budget`` bytes.

    Entries hold weak references: a tensor that is no longer used frees its addresses as before."""

    def __init__(self, budget: int):
        self.budget = budget
        self.bytes = 0
        self._entries: OrderedDict[int, tuple] = OrderedDict()    # id(tensor) -> (weak reference, nbytes)

    def add(self, t, nbytes: int) -> None:
        key = id(t)
        self._entries[key] = (weakref.ref(t, lambda _r, key=key: self._forget(key)), nbytes)
        self.bytes += nbytes
        while self.bytes > self.budget and len(self._entries) > 1:
            old, (ref, n) = self._entries.popitem(last=False)
            self.bytes -= n
            victim = ref()
            if victim is not None:
                victim._elem_syms = None

    def touch(self, t) -> None:
        if id(t) in self._entries:
            self._entries.move_to_end(id(t))

    def _forget(self, key: int) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry[1]


_SYMS_CACHE = _SymsCache(256 << 20)


class DTensor:
    """A tensor on the simulated IPU: shape + regions (tile, first element, element count, symbolic address)."""

    def __init__(self, shape: Shape, tiles, starts, counts, syms, name: str = "", category: str = "activation",
                 origin: str = ""):
        order = np.argsort(starts, kind="stable")
        self.shape = shape
        self.tiles = np.asarray(tiles, dtype=np.int64)[order]
        self.starts = np.asarray(starts, dtype=np.int64)[order]
        self.counts = np.asarray(counts, dtype=np.int64)[order]
        self.syms = np.asarray(syms, dtype=np.int64)[order]
        self.name = name
        self.category = category
        self.origin = origin
        self._elem_syms = None
        if int(self.counts.sum()) != shape.size:
            raise AssertionError(f"regions of {name} cover {int(self.counts.sum())} elements, shape {shape} has {shape.size}")

    # --- derived views -------------------------------------------------------------------------
    @property
    def dtype(self) -> str:
        return self.shape.dtype

    @property
    def size(self) -> int:
        return self.shape.size

    @property
    def itemsize(self) -> int:
        return self.shape.itemsize

    def element_syms(self, cache: bool = True) -> np.ndarray:
        """Symbolic byte address of every element, in row-major order (read-only).

        Recently used tensors keep theirs (``_SymsCache``, bounded in bytes): a compile reads the same tensor
        several times in a row, but keeping every tensor's per-element addresses for the whole compile would cost
        more host memory than the program itself. ``cache=False``: compute without keeping it (a destination
        written once)."""
        if self._elem_syms is not None:
            _SYMS_CACHE.touch(self)
            return self._elem_syms
        isz = self.itemsize
        out = np.repeat(self.syms - self.starts * isz, self.counts)
        out += np.arange(self.size, dtype=np.int64) * isz
        out.flags.writeable = False
        if cache:
            self._elem_syms = out
            _SYMS_CACHE.add(self, out.nbytes)
        return out

    def element_tiles(self) -> np.ndarray:
        return np.repeat(self.tiles, self.counts)

    def tiles_used(self) -> np.ndarray:
        return distinct(self.tiles)

    def same_placement(self, other: "DTensor") -> bool:
        """Same tiles for the same element ranges (addresses may differ)."""
        return (len(self.starts) == len(other.starts) and np.array_equal(self.starts, other.starts)
                and np.array_equal(self.counts, other.counts) and np.array_equal(self.tiles, other.tiles))

    def view(self, shape: Shape, name: str | None = None) -> "DTensor":
        """The same storage seen with another shape of the same size and element type (reshape, bitcast)."""
        if shape.size != self.size or shape.itemsize != self.itemsize:
            raise AssertionError(f"cannot view {self.shape} as {shape}")
        return DTensor(shape, self.tiles, self.starts, self.counts, self.syms, name or self.name, self.category,
                       self.origin)

    @staticmethod
    def from_element_syms(shape: Shape, syms: np.ndarray, block_tiles: np.ndarray, name: str = "",
                          category: str = "activation", origin: str = "") -> "DTensor":
        """A tensor whose elements live at the given symbolic addresses (a view into other tensors' storage)."""
        syms = np.asarray(syms, dtype=np.int64).reshape(-1)
        isz = shape.itemsize
        if len(syms) == 0:
            return DTensor(shape, [], [], [], [], name, category, origin)
        brk = np.flatnonzero(np.diff(syms) != isz) + 1
        starts = np.concatenate([[0], brk])
        counts = np.diff(np.concatenate([starts, [len(syms)]]))
        tiles = block_tiles[syms[starts] >> OFFSET_BITS]
        return DTensor(shape, tiles, starts, counts, syms[starts], name, category, origin)

    def __repr__(self) -> str:
        return f"<DTensor {self.name} {self.shape} on {len(np.unique(self.tiles))} tiles, {len(self.starts)} regions>"


def copy_runs(dst_syms: np.ndarray, src_syms: np.ndarray, itemsize: int) -> np.ndarray:
    """The copy list of an element-wise copy: rows of [dst, src, nbytes, count, dst_stride, src_stride].

    Elements already in place are dropped; runs contiguous in both memories become one run; runs grouped by
    (destination block, source block) that advance by constant strides (a transpose, a gather of every k-th
    element, a padding value repeated) become one strided row that stays in its blocks.
    """
    dst_syms = np.ascontiguousarray(dst_syms, np.int64)
    src_syms = np.ascontiguousarray(src_syms, np.int64)
    if _copyplan is None:  # pragma: no cover - the Cython extensions are not built
        return _copy_runs_numpy(dst_syms, src_syms, itemsize)
    return _rows_from_runs(_copyplan.element_runs(dst_syms, src_syms, itemsize))


def gather_copy_runs(dst: DTensor, src_elem_syms: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``copy_runs(dst.element_syms(), src_elem_syms[index], dst.itemsize)`` without making the per-element
    destination and source address arrays (a gather from one source straight into copy rows)."""
    isz = dst.itemsize
    index = np.ascontiguousarray(index, np.int64).reshape(-1)
    if _copyplan is None:  # pragma: no cover - the Cython extensions are not built
        return copy_runs(dst.element_syms(cache=False), np.asarray(src_elem_syms)[index], isz)
    first = np.ascontiguousarray(dst.syms - dst.starts * isz, np.int64)
    runs = _copyplan.gather_runs(first, np.ascontiguousarray(dst.counts, np.int64),
                                 np.ascontiguousarray(src_elem_syms, np.int64), index, isz)
    return _rows_from_runs(runs)


def _rows_from_runs(runs: np.ndarray) -> np.ndarray:
    """Copy rows from ``element_runs``' runs: ordered by (destination block, source block), then merged."""
    if len(runs) < 2:
        return plain_copy_rows(runs)
    key, rising = _copyplan.run_keys(runs)
    if rising:
        order = np.arange(len(runs), dtype=np.int64)
    else:
        order = np.argsort(key, kind="stable").astype(np.int64)
    rows = _copyplan.merge_runs(runs, order)
    if rows.base is not None and rows.base.nbytes > rows.nbytes:
        rows = rows.copy()      # the merged rows only: the program keeps them, not the buffer they were cut from
    return rows


def _copy_runs_numpy(dst_syms: np.ndarray, src_syms: np.ndarray, itemsize: int) -> np.ndarray:
    """``copy_runs`` without strided rows (the NumPy fallback when the Cython extensions are not built)."""
    keep = dst_syms != src_syms
    if not keep.all():
        dst_syms, src_syms = dst_syms[keep], src_syms[keep]
    if len(dst_syms) == 0:
        return np.zeros((0, COPY_COLUMNS), dtype=np.int64)
    brk = np.flatnonzero((np.diff(dst_syms) != itemsize) | (np.diff(src_syms) != itemsize)) + 1
    starts = np.concatenate([[0], brk])
    lens = np.diff(np.concatenate([starts, [len(dst_syms)]]))
    return plain_copy_rows(np.stack([dst_syms[starts], src_syms[starts], lens * itemsize], axis=1).astype(np.int64))
