"""Tensors placed on tiles.

A ``DTensor`` is a logical array (HLO shape) whose row-major elements are split into *regions*: runs of
consecutive elements held contiguously in one tile's memory. Its tile mapping is the list of regions. Region
addresses are symbolic until the memory plan is made: ``block << 32 | byte offset``, where a block is one
tensor's storage on one tile (see ``xla_lowering.program.ProgramBuilder``).
"""
from __future__ import annotations

import numpy as np

from kernels.program import COPY_COLUMNS, plain_copy_rows

from .. hlo.ir import Shape

try:
    from kernels.codelets import copyplan as _copyplan
except ImportError:  # pragma: no cover - the Cython extensions are not built
    _copyplan = None

OFFSET_BITS = 32
OFFSET_MASK = (1 << OFFSET_BITS) - 1


def block_of(sym):
    return np.asarray(sym) >> OFFSET_BITS


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

    def element_syms(self) -> np.ndarray:
        """Symbolic byte address of every element, in row-major order (computed once)."""
        if self._elem_syms is None:
            isz = self.itemsize
            first = np.repeat(self.syms - self.starts * isz, self.counts)
            self._elem_syms = first + np.arange(self.size, dtype=np.int64) * isz
        return self._elem_syms

    def element_tiles(self) -> np.ndarray:
        return np.repeat(self.tiles, self.counts)

    def tiles_used(self) -> np.ndarray:
        return np.unique(self.tiles)

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
    runs = _copyplan.element_runs(dst_syms, src_syms, itemsize)
    if len(runs) < 2:
        return plain_copy_rows(runs)
    key = runs[:, 0] >> OFFSET_BITS
    src_block = runs[:, 1] >> OFFSET_BITS
    key = key * (int(src_block.max()) + 1) + src_block
    if (key[1:] >= key[:-1]).all():
        order = np.arange(len(runs), dtype=np.int64)
    else:
        order = np.argsort(key, kind="stable").astype(np.int64)
    return _copyplan.merge_runs(runs, order)


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
