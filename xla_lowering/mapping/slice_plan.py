"""The multiSlice / multiUpdate planner: how to partition a dynamic slice's table over the tiles.

The lowering (``xla_lowering/lower/popops_dynamic.py``) states every dynamic-slice, gather and scatter as a table
of K rows by C columns (the indexed positions by the window elements) from which G index vectors each read, or
into which they write, O rows. A plan cuts the columns into ``pc`` pieces, the rows into ``pk`` parts and, for a
gather, the index vectors into ``pg`` groups; each tile gets one (piece, part, group), so a vertex only touches
rows of its tile. As PopLibs' multiSlice plan does, the choice is made with a cost model of the busiest tile:
bytes it receives (its share of the table, its index vectors, a scatter's updates) at the exchange bandwidth plus
one message per contiguous run the copy lists need, the vertex's cycles (``kernels.cycles``), and, when the rows of
a gather are split, exchanging and merging the parts' partial results. Plans whose blocks need more than
MEMORY_FRACTION of a tile's memory (copy descriptors included) are rejected, and so are plans that spread a small
table thinner than MIN_BYTES_PER_TILE a tile.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernels import cycles as cyc

from .linear import MIN_BYTES_PER_TILE
from .memory import COPY_DESCRIPTOR_BYTES

MEMORY_FRACTION = 0.5       # of a tile's usable memory that one dynamic slice's blocks may take


@dataclass(frozen=True)
class SlicePlan:
    pc: int                 # column pieces
    pk: int                 # row parts
    pg: int                 # index-vector groups (gathers)
    width: int              # columns a piece holds (the last may hold fewer)
    k_rows: int             # table rows a part holds
    lookups: int            # index vectors a group reads
    cycles: int
    bytes_per_tile: int

    @property
    def tiles(self) -> int:
        return self.pc * self.pk * self.pg


def _candidates(d: int, limit: int) -> np.ndarray:
    """Split counts worth trying for d items over at most ``limit`` tiles: powers of two and the largest,
    each turned into the fewest parts giving its block size."""
    top = max(1, min(d, limit))
    tries = np.unique(np.append(2 ** np.arange(int(np.log2(top)) + 1), top))
    return np.unique(-(-d // -(-d // tries)))


def plan_slice(device, C: int, K: int, G: int, O: int, N: int, dtype: str, itemsize: int, idx_itemsize: int,
               table_run: float, rows_run: float, gather: bool, combine: bool) -> SlicePlan:
    """``table_run`` / ``rows_run``: mean length of the runs of consecutive columns that are consecutive in the
    table's source (and a scatter's updates): a column piece narrower than a run costs no extra messages."""
    T = device.num_tiles
    bpc = device.exchange_bytes_per_cycle
    pc, pk, pg = np.meshgrid(_candidates(C, T), _candidates(K, T), _candidates(G, T) if gather else [1],
                             indexing="ij")
    pc, pk, pg = (a.reshape(-1) for a in (pc, pk, pg))
    ok = pc * pk * pg <= T
    pc, pk, pg = pc[ok], pk[ok], pg[ok]
    w, kn, gn = -(-C // pc), -(-K // pk), -(-G // pg)
    table = kn * w * itemsize
    rows = gn * O * w * itemsize
    index = gn * N * idx_itemsize
    table_msgs = kn * np.ceil(w / max(table_run, 1.0))
    rows_msgs = 0 if gather else gn * O * np.ceil(w / max(rows_run, 1.0))
    received = table + index + (0 if gather else rows)
    exchange = received / bpc + (table_msgs + rows_msgs) * device.exchange_message_cycles
    vertex = cyc.dynamic_slice_cycles(device, gn, N, O, w, dtype, combine)
    # split rows of a gather: every part's partial rows are exchanged once more and OR-ed, spread over the tiles
    partials = pk * G * O * C * itemsize / T
    merge = np.where(pk > 1, partials / bpc + partials / 8 + 2 * device.sync_cycles, 0)
    cost = exchange + vertex + merge
    mem = table + rows + index + (table_msgs + rows_msgs) * COPY_DESCRIPTOR_BYTES
    fits = mem <= device.usable_tile_memory * MEMORY_FRACTION
    fits &= (table + rows >= MIN_BYTES_PER_TILE) | (pc * pk * pg == 1)
    if not fits.any():
        fits = mem == mem.min()          # nothing fits: take the smallest; the memory plan will say where
    cost = np.where(fits, cost, np.inf)
    best = int(np.lexsort((pc * pk * pg, cost))[0])
    return SlicePlan(int(pc[best]), int(pk[best]), int(pg[best]), int(w[best]), int(kn[best]), int(gn[best]),
                     int(cost[best]), int(mem[best]))
