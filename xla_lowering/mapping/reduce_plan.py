"""Planning reductions whose index map is a partition of the input (each element read by at most one output).

Stage 1 runs where the input lives. The input x is seen as [K1, R, K2] (kept outer, reduced, kept inner) and
every region of x's tile mapping is reduced over its own memory into partials, one per output it touches: in a
piece of one K1 block the elements of inner index c are c, c + K2, c + 2 K2... (a "column" record: outputs next
to each other in memory, elements K2 apart); with K2 == 1 the rows are contiguous and whole K1 blocks of a region
make one record.

Then a tree of levels reduces the partials: a level moves each output's partials to one tile and reduces them
there. When an output's partials are spread over more than ``FANIN`` tiles, an intermediate level first reduces
the partials of groups of neighbouring tiles, so that no tile receives from more than about FANIN others.

Everything here is NumPy over the mapping's regions; the builder (``lower/popops_reduce.py``) makes the tensors,
copies and vertices.
"""
from __future__ import annotations

import math

import numpy as np

from .arrays import distinct

MAX_WORK = 1 << 16      # elements one first-stage vertex reduces at most: big regions become several vertices
FANIN = 64              # source tiles a tree level gathers one output's partials from, at most


def partition_shape(index: np.ndarray, size: int) -> tuple[int, int, int] | None:
    """(K1, R, K2) when the [O, R] map is index[a*K2 + c, k] == (a*R + k)*K2 + c over all of x, else None."""
    outs, r = index.shape
    if outs * r != size or size == 0 or index[0, 0] != 0:
        return None
    k2 = int(index[0, 1]) if r > 1 else 1
    if k2 < 1 or outs % k2:
        return None
    k1 = outs // k2
    expect = np.arange(size, dtype=np.int64).reshape(k1, r, k2).transpose(0, 2, 1).reshape(outs, r)
    return (k1, r, k2) if np.array_equal(index, expect) else None


def partition_owner(index: np.ndarray, size: int) -> np.ndarray | None:
    """owner[i]: the output (row of ``index``) that reads element i, -1 for none; None unless a partition."""
    outs, r = index.shape
    flat = index.reshape(-1)
    if flat.size == 0 or flat.min() < 0 or flat.max() >= size:
        return None
    owner = np.full(size, -1, np.int64)
    owner[flat] = np.repeat(np.arange(outs, dtype=np.int64), r)
    if np.count_nonzero(owner >= 0) != flat.size:
        return None                     # an element read twice (overlapping windows)
    return owner


def max_work(size: int) -> int:
    """Per-vertex work bound: at most MAX_WORK, and small enough that a big input makes >= 8 vertices."""
    return int(min(MAX_WORK, max(4096, -(-size // 8))))


def _pieces(seg_region, seg_start, seg_end, k2, work):
    """Cut segments longer than ``work`` into pieces of whole multiples of K2 (the last one shorter)."""
    m = seg_end - seg_start
    n = np.maximum(1, -(-m // work))
    step = -(-m // n)
    step = np.maximum(k2, -(-step // k2) * k2)
    n = -(-m // step)
    reg = np.repeat(seg_region, n)
    ramp = np.arange(int(n.sum()), dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
    start = np.repeat(seg_start, n) + ramp * np.repeat(step, n)
    end = np.minimum(start + np.repeat(step, n), np.repeat(seg_end, n))
    return reg, start, end


def stage_one(k1: int, r: int, k2: int, starts: np.ndarray, counts: np.ndarray, work: int) -> dict:
    """First-stage records over x's regions (element starts and counts), as int64 arrays, one entry a record:

    region, elem (first element read), rows, row_len, row_stride, elem_stride (in elements), out (output of
    row 0; row j reduces into output out + j). Every element of x is read by exactly one record.
    """
    blk = r * k2
    s = np.asarray(starts, np.int64)
    e = s + np.asarray(counts, np.int64)
    reg = np.arange(len(s), dtype=np.int64)
    keep = e > s
    s, e, reg = s[keep], e[keep], reg[keep]
    w0 = -(-s // blk)                   # whole K1 blocks of a region: [w0, w1)
    w1 = e // blk
    head_end = np.minimum(e, w0 * blk)
    has_head = s < head_end
    has_tail = (w1 >= w0) & (e > w1 * blk)
    seg = [(reg[has_head], s[has_head], head_end[has_head]),
           (reg[has_tail], (w1 * blk)[has_tail], e[has_tail])]
    nwhole = np.maximum(w1 - w0, 0)
    recs = []
    if k2 == 1 and r <= work:
        # contiguous rows: whole blocks of a region in records of up to work // R rows
        per = max(1, work // r)
        nch = -(-nwhole // per)
        creg = np.repeat(reg, nch)
        ramp = np.arange(int(nch.sum()), dtype=np.int64) - np.repeat(np.cumsum(nch) - nch, nch)
        first = np.repeat(w0, nch) + ramp * per
        rows = np.minimum(per, np.repeat(w0 + nwhole, nch) - first)
        recs.append(dict(region=creg, elem=first * blk, rows=rows, row_len=np.full(len(creg), r, np.int64),
                         row_stride=np.full(len(creg), r, np.int64), elem_stride=np.ones(len(creg), np.int64),
                         out=first))
    else:
        wreg = np.repeat(reg, nwhole)
        ramp = np.arange(int(nwhole.sum()), dtype=np.int64) - np.repeat(np.cumsum(nwhole) - nwhole, nwhole)
        a = np.repeat(w0, nwhole) + ramp
        seg.append((wreg, a * blk, (a + 1) * blk))
    sreg = np.concatenate([x[0] for x in seg])
    pr, ps, pe = _pieces(sreg, np.concatenate([x[1] for x in seg]), np.concatenate([x[2] for x in seg]), k2, work)
    recs.append(_column_records(pr, ps, pe, r, k2))
    out = {k: np.concatenate([d[k] for d in recs]).astype(np.int64) for k in recs[0]}
    return _split_rows(out, work)


def _column_records(reg, ps, pe, r, k2):
    """Records of pieces [ps, pe) that each lie in one K1 block: up to three runs of inner indices per piece,
    cut where the count of elements changes (q + 1 -> q) and where the inner index wraps from K2 - 1 to 0."""
    blk = r * k2
    a = ps // blk
    cs = (ps - a * blk) % k2
    m = pe - ps
    q, rem = m // k2, m % k2
    jmax = np.minimum(m, k2)
    b1 = np.where((q > 0) & (rem > 0), rem, jmax)
    wrap = k2 - cs
    b2 = np.where((wrap > 0) & (wrap < jmax), wrap, jmax)
    bounds = np.sort(np.stack([np.zeros_like(m), b1, b2, jmax], axis=1), axis=1)
    j0, j1 = bounds[:, :3], bounds[:, 1:]
    ok = j1 > j0
    idx = np.nonzero(ok)[0]
    j0, j1 = j0[ok], j1[ok]
    return dict(region=reg[idx], elem=ps[idx] + j0, rows=j1 - j0, row_len=q[idx] + (j0 < rem[idx]),
                row_stride=np.ones(len(idx), np.int64), elem_stride=np.full(len(idx), k2, np.int64),
                out=a[idx] * k2 + (cs[idx] + j0) % k2)


def _split_rows(rec: dict, work: int) -> dict:
    """Records of more than ``work`` elements with several rows become records of fewer rows."""
    per = np.maximum(1, work // np.maximum(rec["row_len"], 1))
    n = np.where(rec["rows"] * rec["row_len"] > work, -(-rec["rows"] // per), 1)
    if (n == 1).all():
        return rec
    ramp = np.arange(int(n.sum()), dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
    out = {k: np.repeat(v, n) for k, v in rec.items()}
    per_r = np.where(np.repeat(n, n) > 1, np.repeat(per, n), out["rows"])
    first = ramp * per_r
    out["elem"] = out["elem"] + first * out["row_stride"]
    out["out"] = out["out"] + first
    out["rows"] = np.minimum(per_r, out["rows"] - first)
    return out


def runs(tiles: np.ndarray):
    """(tiles, starts, counts) of the maximal runs of equal tiles in a per-element tile array."""
    tiles = np.asarray(tiles, np.int64)
    if len(tiles) == 0:
        z = np.zeros(0, np.int64)
        return z, z, z
    starts = np.concatenate([[0], np.flatnonzero(np.diff(tiles)) + 1])
    counts = np.diff(np.concatenate([starts, [len(tiles)]]))
    return tiles[starts], starts, counts


def is_last_level(owner: np.ndarray, tiles: np.ndarray, fanin: int | None = None) -> bool:
    """Whether every output's partials come from at most ``fanin`` (FANIN) tiles."""
    fanin = fanin or FANIN
    pairs = distinct(owner * (int(tiles.max()) + 1) + tiles)
    per_out = np.bincount(pairs // (int(tiles.max()) + 1))
    return int(per_out.max()) <= fanin


def final_tiles(owner: np.ndarray, tiles: np.ndarray, num_outputs: int, rotate: int = 0) -> np.ndarray:
    """The tile that reduces each output: the tile of its partials when they are all on one tile (nothing to
    exchange); otherwise the outputs are shared out in contiguous ranges over every tile that holds partials
    (moved round by ``rotate``, so that successive reductions do not all start at the same tile), so that each
    tile receives about as much as the others and from each source tile one run of consecutive outputs."""
    nt = int(tiles.max()) + 1
    keys = distinct(owner * nt + tiles)
    o, t = keys // nt, keys % nt                  # sorted by (output, tile)
    k = np.bincount(o, minlength=num_outputs)
    first = np.cumsum(k) - k
    used = distinct(tiles)
    spread = used[((np.arange(num_outputs, dtype=np.int64) * len(used)) // max(num_outputs, 1) + rotate) % len(used)]
    return np.where(k == 1, t[np.minimum(first, len(t) - 1)], spread)


def group_level(owner: np.ndarray, tiles: np.ndarray, fanin: int | None = None, rotate: int = 0):
    """An intermediate level: tiles (in order) in groups of about S^(1/L) for L levels of at most ``fanin``.

    Returns (row of every partial, tile of every row, output of every row); rows are ordered by (tile, output),
    one per (group, output) present. The outputs are shared out among the group's tiles in contiguous ranges
    (moved round by ``rotate``), so that every tile of a group receives about as much as the others: no tile
    takes the whole group's partials."""
    fanin = fanin or FANIN
    used, tile_rank = np.unique(tiles, return_inverse=True)
    s = len(used)
    levels = max(1, math.ceil(math.log(s) / math.log(fanin) - 1e-9))
    size = max(2, math.ceil(s ** (1.0 / levels) - 1e-9))
    group = tile_rank // size
    gstart = group * size
    gsize = np.minimum(size, s - gstart)
    nout = int(owner.max()) + 1
    share = ((owner + rotate) % nout) * gsize // nout
    dest = used[gstart + share]
    key = dest * nout + owner
    rows, row_of = np.unique(key, return_inverse=True)
    return row_of.astype(np.int64), rows // nout, rows % nout
