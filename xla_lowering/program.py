"""Building the Poplar-style program: tensors with tile mappings, compute sets, copies, loops, host streams.

The step types themselves are the device's (``kernels.program``): the compiler only builds them. Lowering rules
call the builder; ``finalize`` (``xla_lowering.mapping.memory``) then plans every tile's memory and turns the
symbolic addresses into absolute ones.
"""
from __future__ import annotations

import contextlib
import itertools

import numpy as np

from kernels.program import (ComputeSet, Copy, Execute, If, Repeat, Sequence, StreamIn, StreamOut,  # noqa: F401
                             VertexGroup, walk)

from .hlo.ir import Shape
from .mapping.arrays import distinct
from .mapping.linear import linear_pieces
from .mapping.tensor import OFFSET_BITS, DTensor, copy_runs, gather_copy_runs

try:
    from kernels.codelets import copyplan as _copyplan
except ImportError:  # pragma: no cover - the Cython extensions are not built
    _copyplan = None

BLOCK_ALIGN = 8


class ProgramBuilder:
    """Collects tensors (as per-tile blocks) and program steps for one executable."""

    def __init__(self, device):
        self.device = device
        self.num_tiles = device.num_tiles
        # block table: one entry per (tensor, tile) storage block
        self._block_tiles: list[np.ndarray] = []
        self._block_bytes: list[np.ndarray] = []
        self._block_tensor: list[np.ndarray] = []
        self.nblocks = 0
        self.tensors: list[DTensor] = []           # tensors that own blocks, by index
        self.root = Sequence()
        self._stack = [self.root]
        self._rotate = itertools.count()
        self.constant_inits: list[tuple[DTensor, np.ndarray]] = []
        self._scalar_cache: dict = {}
        self._tile_buf = np.zeros(1024, np.int64)    # tile of every block so far (grown by doubling)

    # --- tensors -----------------------------------------------------------------------------------
    def add_tensor(self, shape: Shape, tiles, starts, counts, name: str, category: str = "activation",
                   origin: str = "") -> DTensor:
        """A new tensor whose regions are (tile, first element, count); one block per tile it uses."""
        tiles = np.asarray(tiles, np.int64)
        starts = np.asarray(starts, np.int64)
        counts = np.asarray(counts, np.int64)
        isz = shape.itemsize
        tensor_index = len(self.tensors)
        if len(tiles) == 0:
            t = DTensor(shape, tiles, starts, counts, counts, name, category, origin)
            self.tensors.append(t)
            return t
        order = np.lexsort((starts, tiles))                 # regions grouped by tile, in element order
        t_sorted = tiles[order]
        nbytes = counts[order] * isz
        first = np.concatenate([[True], t_sorted[1:] != t_sorted[:-1]])
        block_index = np.cumsum(first) - 1                  # per region: which of this tensor's blocks
        csum = np.cumsum(nbytes) - nbytes
        block_start = csum[first]
        offsets = csum - block_start[block_index]
        block_tiles = t_sorted[first]
        block_bytes = np.add.reduceat(nbytes, np.flatnonzero(first))
        block_ids = self.nblocks + np.arange(len(block_tiles), dtype=np.int64)
        self.nblocks += len(block_tiles)
        self._block_tiles.append(block_tiles)
        if self.nblocks > len(self._tile_buf):
            grown = np.zeros(max(2 * len(self._tile_buf), self.nblocks), np.int64)
            grown[:len(self._tile_buf)] = self._tile_buf
            self._tile_buf = grown
        self._tile_buf[block_ids[0]:self.nblocks] = block_tiles
        self._block_bytes.append(-(-block_bytes // BLOCK_ALIGN) * BLOCK_ALIGN)
        self._block_tensor.append(np.full(len(block_tiles), tensor_index, np.int64))
        syms = np.empty(len(tiles), np.int64)
        syms[order] = (block_ids[block_index] << OFFSET_BITS) + offsets
        t = DTensor(shape, tiles, starts, counts, syms, name, category, origin)
        self.tensors.append(t)
        return t

    def linear(self, shape: Shape, name: str, category: str = "activation", origin: str = "",
               max_tiles: int | None = None) -> DTensor:
        first = (next(self._rotate) * 97) % self.num_tiles if shape.nbytes < 64 * 1024 else 0
        tiles, starts, counts = linear_pieces(shape.size, shape.itemsize, self.num_tiles, first_tile=first,
                                              max_tiles=max_tiles)
        return self.add_tensor(shape, tiles, starts, counts, name, category, origin)

    def like(self, other: DTensor, shape: Shape, name: str, category: str = "activation", origin: str = "") -> DTensor:
        """A new tensor with the same tile mapping as ``other`` (same size; the element type may differ)."""
        assert shape.size == other.size, (shape, other.shape)
        return self.add_tensor(shape, other.tiles, other.starts, other.counts, name, category, origin)

    def block_tiles(self) -> np.ndarray:
        """Tile of every block so far, by block id (a view: blocks added later do not change these entries)."""
        return self._tile_buf[:self.nblocks]

    def block_arrays(self):
        """(tile, bytes, owning tensor index) of every block."""
        if not self._block_tiles:
            z = np.zeros(0, np.int64)
            return z, z, z
        return self.block_tiles(), np.concatenate(self._block_bytes), np.concatenate(self._block_tensor)

    def constant(self, value: np.ndarray, shape: Shape, name: str, origin: str = "") -> DTensor:
        t = self.linear(shape, name, "constant", origin)
        self.constant_inits.append((t, np.ascontiguousarray(value, dtype=shape.np_dtype).reshape(-1)))
        return t

    # --- program steps -----------------------------------------------------------------------------
    def add(self, step) -> None:
        self._stack[-1].steps.append(step)

    @contextlib.contextmanager
    def repeat(self, count: int):
        body = Sequence()
        self.add(Repeat(count, body))
        self._stack.append(body)
        try:
            yield body
        finally:
            self._stack.pop()

    @contextlib.contextmanager
    def into(self, seq: Sequence):
        """Direct the steps added inside the ``with`` block into ``seq`` (a loop body, a branch...)."""
        self._stack.append(seq)
        try:
            yield seq
        finally:
            self._stack.pop()

    def execute(self, name: str, groups: list[VertexGroup], origin: str = "") -> None:
        groups = [g for g in groups if len(g.records)]
        if groups:
            self.add(Execute(ComputeSet(name, groups, origin)))

    def copy(self, name: str, dst_syms: np.ndarray, src_syms: np.ndarray, itemsize: int, origin: str = "") -> None:
        rows = copy_runs(dst_syms, src_syms, itemsize)
        if len(rows):
            self.add(Copy(name, rows, origin))

    # --- data movement helpers used by many rules --------------------------------------------------
    def rearrange(self, dst: DTensor, sources: list[DTensor], src_index: np.ndarray, src_which=None,
                  name: str = "", origin: str = "") -> DTensor:
        """Fill ``dst`` element i from element ``src_index[i]`` of ``sources[src_which[i]]``.

        A one-element source read by many elements (a padding value, an init value) is first broadcast to
        the destination tiles, so that one tile does not send the same value thousands of times.
        """
        src_index = np.asarray(src_index).reshape(-1)
        if src_which is None and len(sources) == 1 and sources[0].size > 1:   # a plain gather from one source
            rows = gather_copy_runs(dst, sources[0].element_syms(), src_index)
            if len(rows):
                self.add(Copy(name or f"copy/{dst.name}", rows, origin))
            return dst
        # several sources: one gather from the sources' element addresses laid end to end
        if _copyplan is not None:
            return self._rearrange_sources(dst, sources, src_index, src_which, name, origin)
        which = np.zeros(len(src_index), np.int8) if src_which is None else np.asarray(src_which).reshape(-1)
        index = np.zeros(len(src_index), np.int64)
        parts, offset = [], 0
        block_tiles = self.block_tiles()
        dst_tiles = None
        for k, s in enumerate(sources):
            sel = which == k
            if not sel.any():
                continue
            if s.size == 1 and sel.sum() > 1:
                if dst_tiles is None:       # the tile of every destination element (its region's block's)
                    dst_tiles = np.repeat(block_tiles[dst.syms >> OFFSET_BITS], dst.counts)
                tiles = dst_tiles[sel]
                used = distinct(tiles)
                local = self.scalar_per_tile(s, used, origin)
                part, idx = local.syms, np.searchsorted(used, tiles)
            else:
                part, idx = s.element_syms(), src_index[sel]
                if len(idx) and (idx.min() < -s.size or idx.max() >= s.size):
                    raise IndexError(f"rearrange into {dst.name}: an index is out of bounds for {s.name} "
                                     f"({s.size} elements)")
                idx = np.where(idx < 0, idx + s.size, idx)
            index[sel] = offset + idx
            parts.append(part)
            offset += len(part)
        src_all = np.concatenate(parts) if parts else np.zeros(1, np.int64)
        rows = gather_copy_runs(dst, src_all, index)
        if len(rows):
            self.add(Copy(name or f"copy/{dst.name}", rows, origin))
        return dst

    def _rearrange_sources(self, dst: DTensor, sources: list[DTensor], src_index: np.ndarray, src_which,
                           name: str, origin: str) -> DTensor:
        """``rearrange`` from several sources (or one element), the element loops in C."""
        n = len(src_index)
        which = np.zeros(n, np.int64) if src_which is None else \
            np.ascontiguousarray(np.asarray(src_which).reshape(-1), np.int64)
        region_tiles = np.ascontiguousarray(self.block_tiles()[dst.syms >> OFFSET_BITS], np.int64)
        region_counts = np.ascontiguousarray(dst.counts, np.int64)
        # one-element sources (may be broadcast to the destination tiles) get a row of per-tile tables
        one = np.array([s.size == 1 for s in sources], bool)
        row_of = np.where(one, np.cumsum(one) - 1, -1).astype(np.int64)
        counts, per_tile = _copyplan.source_tiles(which, region_tiles, region_counts, row_of, int(one.sum()),
                                                  self.num_tiles)
        offsets = np.full(len(sources), -1, np.int64)     # where each source's addresses start; -1: not read
        tile_slot = np.full((int(one.sum()), self.num_tiles), -1, np.int64)   # a tile's copy of the element
        parts, offset = [], 0
        for k, s in enumerate(sources):
            if not counts[k]:
                continue
            if s.size == 1 and counts[k] > 1:
                used = np.flatnonzero(per_tile[row_of[k]])   # the destination tiles that read it, sorted
                part = self.scalar_per_tile(s, used, origin).syms
                tile_slot[row_of[k], used] = np.arange(len(used))
            else:
                part = s.element_syms()
            offsets[k] = offset
            parts.append(part)
            offset += len(part)
        index = np.zeros(n, np.int64)
        sizes = np.array([s.size for s in sources], np.int64)
        bad = _copyplan.source_index(which, np.ascontiguousarray(src_index, np.int64), sizes, offsets, region_tiles,
                                     region_counts, row_of, tile_slot, index)
        if bad >= 0:
            s = sources[int(which[bad])]
            raise IndexError(f"rearrange into {dst.name}: an index is out of bounds for {s.name} ({s.size} elements)")
        src_all = np.concatenate(parts) if parts else np.zeros(1, np.int64)
        rows = gather_copy_runs(dst, src_all, index)
        if len(rows):
            self.add(Copy(name or f"copy/{dst.name}", rows, origin))
        return dst

    def aligned(self, t: DTensor, like: DTensor, name: str, origin: str = "") -> DTensor:
        """``t`` with the tile mapping of ``like`` (copied when it differs), so vertices see local operands."""
        if t.same_placement(like):
            return t
        out = self.like(like, t.shape, name, "temporary", origin)
        return self.rearrange(out, [t], np.arange(t.size), name=f"{name}/rearrange", origin=origin)

    def scalar_per_tile(self, s: DTensor, tiles: np.ndarray, origin: str = "") -> DTensor:
        """Copies of a one-element tensor on each of ``tiles`` (element k on tiles[k]): a broadcast exchange."""
        key = (id(s), id(self._stack[-1]), tiles.tobytes())
        hit = self._scalar_cache.get(key)
        if hit is not None and hit[0] is s:
            return hit[1]
        n = len(tiles)
        out = self.add_tensor(s.shape.with_dims((n,)), tiles, np.arange(n), np.ones(n, np.int64),
                              f"{s.name}/per_tile", "temporary", origin)
        self.copy(f"broadcast/{s.name}", out.element_syms(), np.repeat(s.element_syms()[:1], n), s.itemsize, origin)
        self._scalar_cache[key] = (s, out)
        return out

    def windows_per_tile(self, s: DTensor, tiles: np.ndarray, first: np.ndarray, lengths: np.ndarray, block: int,
                         origin: str = "") -> DTensor:
        """Windows of a vector on tiles (a broadcast operand's share of each tile, one exchange): window k, on
        ``tiles[k]``, holds elements (first[k] + j) % s.size for j < lengths[k]; it is region k of the result.

        A window is either the whole vector or whole blocks of ``block`` elements (the last block of the vector
        may be shorter), and it is copied block by block (and piece by piece of the vector): every tile receives
        runs from the same small set, a multicast that the source tiles send once."""
        key = ("windows", id(s), id(self._stack[-1]), tiles.tobytes(), first.tobytes(), lengths.tobytes(), block)
        hit = self._scalar_cache.get(key)
        if hit is not None and hit[0] is s:
            return hit[1]
        vec = s
        size, isz = s.size, s.itemsize
        n = -(-size // block)
        if len(s.counts) > n:
            # a vector in more pieces than blocks (a reduction's output, an element or two a tile): first laid out
            # a block a tile, so that a tile's window is a descriptor or two, not one per piece
            gkey = ("blocks", id(s), id(self._stack[-1]), block)
            ghit = self._scalar_cache.get(gkey)
            if ghit is not None and ghit[0] is s:
                s = ghit[1]
            else:
                first_tile = (next(self._rotate) * 97) % self.num_tiles
                starts = np.arange(n) * block
                t = self.add_tensor(s.shape.with_dims((size,)), (first_tile + np.arange(n)) % self.num_tiles, starts,
                                    np.minimum(block, size - starts), f"{s.name}/blocks", "temporary", origin)
                self._scalar_cache[gkey] = (s, t)
                s = self.rearrange(t, [s], np.arange(size), name=f"gather/{s.name}", origin=origin)
        starts = np.cumsum(lengths) - lengths
        out = self.add_tensor(s.shape.with_dims((int(lengths.sum()),)), tiles, starts, lengths, f"{vec.name}/windows",
                              "temporary", origin)
        # rows: a whole vector in one run; other windows (which start at a block) block by block, wrapping at the end
        whole = lengths == size
        nrun = np.where(whole, 1, -(-lengths // block) + 1)                # enough blocks; the extra are dropped
        win = np.repeat(np.arange(len(lengths)), nrun)
        j = np.arange(len(win)) - np.repeat(np.cumsum(nrun) - nrun, nrun)
        p = np.where(whole[win], 0, ((first[win] // block + j) % n) * block)
        run = np.where(whole[win], size, np.minimum(block, size - p))
        done = np.cumsum(run) - run
        done -= np.repeat(done[np.cumsum(nrun) - nrun], nrun)              # elements of the window before the run
        run = np.minimum(run, lengths[win] - done)
        ok = run > 0
        dst, p, run = (out.syms[win] + done * isz)[ok], p[ok], run[ok]
        # a run crossing the vector's pieces (tiles) is one row per piece: still the same runs for every tile
        r0 = np.searchsorted(s.starts, p, side="right") - 1
        npieces = np.searchsorted(s.starts, p + run - 1, side="right") - r0
        k = np.repeat(np.arange(len(p)), npieces)
        r = np.repeat(r0, npieces) + np.arange(len(k)) - np.repeat(np.cumsum(npieces) - npieces, npieces)
        lo = np.maximum(p[k], s.starts[r])
        hi = np.minimum(p[k] + run[k], s.starts[r] + s.counts[r])
        rows = np.stack([dst[k] + (lo - p[k]) * isz, s.syms[r] + (lo - s.starts[r]) * isz, (hi - lo) * isz],
                        axis=1).astype(np.int64)
        if len(rows):
            self.add(Copy(f"window/{vec.name}", rows, origin))
        self._scalar_cache[key] = (vec, out)
        return out

    def steps(self):
        return walk(self.root)
