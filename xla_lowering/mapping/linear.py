"""Linear tile mapping: a tensor's row-major elements cut into equal contiguous pieces, one piece a tile.

Like PopLibs' linear mapping, pieces are a multiple of a grain (so vector codelets see whole vectors) and at
least a minimum size (so tiny tensors use few tiles instead of paying a vertex on every tile).
"""
from __future__ import annotations

import numpy as np

GRAIN_BYTES = 8            # one 64-bit vector
MIN_BYTES_PER_TILE = 256   # below this, spreading costs more in vertex overhead than it saves


def linear_pieces(n: int, itemsize: int, num_tiles: int, first_tile: int = 0,
                  min_bytes: int = MIN_BYTES_PER_TILE, max_tiles: int | None = None):
    """(tiles, starts, counts) of a linear mapping of ``n`` elements over the device's tiles.

    Tiles are spread evenly over the device starting at ``first_tile`` so that many small tensors do not all
    land on tile 0.
    """
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    grain = max(1, GRAIN_BYTES // itemsize)
    min_elems = max(grain, min_bytes // itemsize)
    limit = num_tiles if max_tiles is None else max(1, min(num_tiles, max_tiles))
    per_tile = max(min_elems, -(-n // limit))
    per_tile = -(-per_tile // grain) * grain
    used = -(-n // per_tile)
    starts = np.arange(used, dtype=np.int64) * per_tile
    counts = np.minimum(per_tile, n - starts)
    tiles = (first_tile + np.arange(used, dtype=np.int64) * num_tiles // used) % num_tiles
    return tiles, starts, counts


def rows_pieces(rows: int, row_len: int, num_tiles: int, first_tile: int = 0):
    """Whole rows per tile: a linear mapping whose pieces never split a row (for reductions)."""
    if rows == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    used = min(num_tiles, rows)
    per = -(-rows // used)
    used = -(-rows // per)
    row_starts = np.arange(used, dtype=np.int64) * per
    row_counts = np.minimum(per, rows - row_starts)
    tiles = (first_tile + np.arange(used, dtype=np.int64) * num_tiles // used) % num_tiles
    return tiles, row_starts * row_len, row_counts * row_len
