"""Copy lists from element addresses (host side, used by the compiler when it builds a Copy step).

Not a codelet: ``xla_lowering.mapping.tensor.copy_runs`` in C. An element-wise copy (destination and source
address of every element) becomes rows of [dst, src, nbytes, count, dst_stride, src_stride] (see
``kernels/codelets/copy.pyx``) in three steps:

1. ``element_runs``: runs of elements contiguous in both destination and source (elements already in place are
   dropped);
2. the caller orders the runs by (destination block, source block), so that the runs one tile receives from one
   source tensor's block are together (a transpose or a gather reads every k-th element of a run's source);
3. ``merge_runs``: runs that continue each other in both memories are joined, then runs of equal length whose
   destination and source advance by the same strides become one strided row. A row never leaves the storage
   block (``sym >> 32``) its first run is in, so symbolic addresses resolve to absolute ones row by row.
"""
import numpy as np


def element_runs(const long long[::1] dst, const long long[::1] src, long long itemsize):
    """[n, 3] rows of [dst, src, nbytes]: maximal runs contiguous in both memories, in element order."""
    cdef Py_ssize_t n = dst.shape[0], i, m = 0
    cdef long long d_end = -1, s_end = -1
    out = np.empty((n, 3), np.int64)
    cdef long long[:, ::1] o = out
    with nogil:
        for i in range(n):
            if dst[i] == src[i]:
                continue
            if m > 0 and dst[i] == d_end and src[i] == s_end:
                o[m - 1, 2] += itemsize
            else:
                o[m, 0] = dst[i]
                o[m, 1] = src[i]
                o[m, 2] = itemsize
                m += 1
            d_end = dst[i] + itemsize
            s_end = src[i] + itemsize
    return out[:m]


def gather_runs(const long long[::1] dst_first, const long long[::1] dst_counts, const long long[::1] src_elem,
                const long long[::1] index, long long itemsize):
    """``element_runs(dst, src_elem[index], itemsize)`` without making either per-element address array.

    The destination is given by its regions as ``DTensor.element_syms`` reads them: element p of region r (in
    region order) is at ``dst_first[r] + p * itemsize`` (``dst_first`` = region address - region start *
    itemsize). ``index`` may be negative (from the end), as in NumPy; out of range is an IndexError."""
    cdef Py_ssize_t nreg = dst_first.shape[0], n = index.shape[0], nsrc = src_elem.shape[0]
    cdef Py_ssize_t r, p = 0, end, m = 0
    cdef long long d, s, k, d_end = -1, s_end = -1, base
    cdef bint bad = False
    cdef long long total = 0
    if dst_counts.shape[0] != nreg:
        raise ValueError("dst_first and dst_counts differ in length")
    for r in range(nreg):
        total += dst_counts[r]
    if total != n:
        raise ValueError(f"the destination has {total} elements, the index map {n}")
    out = np.empty((n, 3), np.int64)
    cdef long long[:, ::1] o = out
    with nogil:
        for r in range(nreg):
            base = dst_first[r]
            end = p + dst_counts[r]
            while p < end:
                k = index[p]
                if k < 0:
                    k += nsrc
                if k < 0 or k >= nsrc:
                    bad = True
                    break
                d = base + p * itemsize
                s = src_elem[k]
                p += 1
                if d == s:
                    continue
                if m > 0 and d == d_end and s == s_end:
                    o[m - 1, 2] += itemsize
                else:
                    o[m, 0] = d
                    o[m, 1] = s
                    o[m, 2] = itemsize
                    m += 1
                d_end = d + itemsize
                s_end = s + itemsize
            if bad:
                break
    if bad:
        raise IndexError(f"index {index[p]} is out of bounds for a source of {nsrc} elements")
    return out[:m]


def merge_runs(const long long[:, ::1] runs, const long long[::1] order):
    """[m, 6] strided rows from [n, 3] runs visited in ``order`` (greedy: each row takes as many runs as follow)."""
    cdef Py_ssize_t n = order.shape[0], i, j, k, m = 0
    cdef long long d, s, nb, dd, ds, cnt
    # pass 1: join runs that continue each other (an order other than element order can make them neighbours)
    joined = np.empty((n, 3), np.int64)
    cdef long long[:, ::1] a = joined
    with nogil:
        for i in range(n):
            j = order[i]
            if m > 0 and runs[j, 0] == a[m - 1, 0] + a[m - 1, 2] and runs[j, 1] == a[m - 1, 1] + a[m - 1, 2] \
                    and (runs[j, 0] >> 32) == (a[m - 1, 0] >> 32) and (runs[j, 1] >> 32) == (a[m - 1, 1] >> 32):
                a[m - 1, 2] += runs[j, 2]
            else:
                a[m, 0] = runs[j, 0]
                a[m, 1] = runs[j, 1]
                a[m, 2] = runs[j, 2]
                m += 1
    n = m
    m = 0
    out = np.empty((n, 6), np.int64)
    cdef long long[:, ::1] o = out
    # pass 2: runs of one length at constant destination and source strides, within one block of each
    with nogil:
        i = 0
        while i < n:
            d, s, nb = a[i, 0], a[i, 1], a[i, 2]
            cnt = 1
            dd = 0
            ds = 0
            if i + 1 < n and a[i + 1, 2] == nb and (a[i + 1, 0] >> 32) == (d >> 32) \
                    and (a[i + 1, 1] >> 32) == (s >> 32):
                dd = a[i + 1, 0] - d
                ds = a[i + 1, 1] - s
                if dd >= nb or dd <= -nb:           # destinations of a row never overlap
                    cnt = 2
                    k = i + 2
                    while k < n and a[k, 2] == nb and a[k, 0] - a[k - 1, 0] == dd and a[k, 1] - a[k - 1, 1] == ds \
                            and (a[k, 0] >> 32) == (d >> 32) and (a[k, 1] >> 32) == (s >> 32):
                        cnt += 1
                        k += 1
                else:
                    dd = 0
                    ds = 0
            o[m, 0] = d
            o[m, 1] = s
            o[m, 2] = nb
            o[m, 3] = cnt
            o[m, 4] = dd
            o[m, 5] = ds
            m += 1
            i += cnt
    return out[:m]


def copy_traffic(const long long[:, :] rows, long long tile_memory, Py_ssize_t ntiles):
    """What a copy step moves, per tile, from rows with absolute addresses (the cycle estimate's inputs).

    Returns int64 arrays by tile: bytes and runs copied on the tile (destination and source on one tile), bytes
    and runs received from other tiles; then the keys ``src * (tile_memory + 1) + nbytes`` of the remote plain
    rows (count 1), the indices of the remote strided rows, and the bytes moved between tiles."""
    cdef Py_ssize_t n = rows.shape[0], i, nk = 0, ns = 0
    cdef long long dt, st, cnt, nb, moved = 0
    local_bytes = np.zeros(ntiles, np.int64)
    local_runs = np.zeros(ntiles, np.int64)
    recv = np.zeros(ntiles, np.int64)
    msgs = np.zeros(ntiles, np.int64)
    keys = np.empty(n, np.int64)
    strided = np.empty(n, np.int64)
    cdef long long[::1] lb = local_bytes, lr = local_runs, rb = recv, rm = msgs, k = keys, sx = strided
    with nogil:
        for i in range(n):
            dt = rows[i, 0] // tile_memory
            st = rows[i, 1] // tile_memory
            cnt = rows[i, 3]
            nb = rows[i, 2] * cnt
            if dt == st:
                lb[dt] += nb
                lr[dt] += cnt
            else:
                rb[dt] += nb
                rm[dt] += cnt
                moved += nb
                if cnt == 1:
                    k[nk] = rows[i, 1] * (tile_memory + 1) + rows[i, 2]
                    nk += 1
                else:
                    sx[ns] = i
                    ns += 1
    return local_bytes, local_runs, recv, msgs, keys[:nk], strided[:ns], moved


def sent_once(const long long[::1] keys, long long tile_memory, Py_ssize_t ntiles):
    """Bytes each tile sends for sorted ``copy_traffic`` keys, a repeated key (a multicast) counted once."""
    cdef Py_ssize_t n = keys.shape[0], i
    sent = np.zeros(ntiles, np.int64)
    cdef long long[::1] out = sent
    with nogil:
        for i in range(n):
            if i == 0 or keys[i] != keys[i - 1]:
                out[keys[i] // (tile_memory + 1) // tile_memory] += keys[i] % (tile_memory + 1)
    return sent



def _check_regions(const long long[::1] region_tiles, const long long[::1] region_counts, Py_ssize_t ntiles,
                   Py_ssize_t n):
    """A destination's regions: every non-empty one on a tile of the device, ``n`` elements in all."""
    cdef Py_ssize_t r, total = 0
    for r in range(region_tiles.shape[0]):
        total += region_counts[r]
        if region_counts[r] and not 0 <= region_tiles[r] < ntiles:
            raise ValueError("a region's tile is out of range")
    if total != n:
        raise ValueError(f"the regions hold {total} elements, which has {n}")


def source_tiles(const long long[::1] which, const long long[::1] region_tiles, const long long[::1] region_counts,
                 const long long[::1] row_of, Py_ssize_t nrows, Py_ssize_t ntiles):
    """For a destination given by its regions' tiles and element counts (in element order): how many elements
    read each source, and [nrows, ntiles] how many of those are on each tile, for the sources k with a row
    ``row_of[k]`` (not -1) (``which`` outside the sources counts for none)."""
    cdef Py_ssize_t nreg = region_tiles.shape[0], nsources = row_of.shape[0], r, p = 0, end
    cdef long long k, t
    counts = np.zeros(nsources, np.int64)
    per_tile = np.zeros((nrows, ntiles), np.int64)
    cdef long long[::1] c = counts
    cdef long long[:, ::1] pt = per_tile
    if region_counts.shape[0] != nreg:
        raise ValueError("region_tiles and region_counts differ in length")
    for k in range(nsources):
        if row_of[k] >= nrows:
            raise ValueError("row_of names a row beyond nrows")
    _check_regions(region_tiles, region_counts, ntiles, which.shape[0])
    p = 0
    with nogil:
        for r in range(nreg):
            t = region_tiles[r]
            end = p + region_counts[r]
            while p < end:
                k = which[p]
                if 0 <= k < nsources:
                    c[k] += 1
                    if row_of[k] >= 0:
                        pt[row_of[k], t] += 1
                p += 1
    return counts, per_tile


def source_index(const long long[::1] which, const long long[::1] src_index, const long long[::1] sizes,
                 const long long[::1] offsets, const long long[::1] region_tiles, const long long[::1] region_counts,
                 const long long[::1] row_of, const long long[:, ::1] tile_slot, long long[::1] index):
    """The gather index of a copy from several sources laid end to end (source k's first element at
    ``offsets[k]``; -1: source k is not read). Element i reads element ``src_index[i]`` (negative from the end)
    of source k = ``which[i]``, or, where ``tile_slot[row_of[k]]`` of its tile is not -1 (a one-element source broadcast
    to the destination tiles), that slot. Other elements are left as they are. Returns -1, or the first element
    whose index is out of bounds for its source. The destination's regions are as for ``source_tiles``."""
    cdef Py_ssize_t n = which.shape[0], nsrc = sizes.shape[0], nreg = region_tiles.shape[0], r, i = 0, end
    cdef Py_ssize_t bad = -1, ntiles = tile_slot.shape[1]
    cdef long long k, j, t
    if src_index.shape[0] != n or index.shape[0] != n or offsets.shape[0] != nsrc or row_of.shape[0] != nsrc \
            or region_counts.shape[0] != nreg:
        raise ValueError("which, src_index and index differ in length, or the per-source or per-region arrays do")
    for k in range(nsrc):
        if row_of[k] >= tile_slot.shape[0]:
            raise ValueError("row_of names a row tile_slot does not have")
    _check_regions(region_tiles, region_counts, ntiles, n)
    i = 0
    with nogil:
        for r in range(nreg):
            t = region_tiles[r]
            end = i + region_counts[r]
            while i < end:
                k = which[i]
                if 0 <= k < nsrc and offsets[k] >= 0:
                    if row_of[k] >= 0 and tile_slot[row_of[k], t] >= 0:
                        index[i] = offsets[k] + tile_slot[row_of[k], t]
                    else:
                        j = src_index[i]
                        if j < -sizes[k] or j >= sizes[k]:
                            bad = i
                            break
                        if j < 0:
                            j += sizes[k]
                        index[i] = offsets[k] + j
                i += 1
            if bad >= 0:
                break
    return bad


def run_keys(const long long[:, ::1] runs):
    """The (destination block, source block) key of every run: dst block * (largest source block + 1) + source
    block; and whether the keys already rise (runs in order)."""
    cdef Py_ssize_t n = runs.shape[0], i
    cdef long long top = 0, b
    cdef bint rising = True
    keys = np.empty(n, np.int64)
    cdef long long[::1] k = keys
    with nogil:
        for i in range(n):
            b = runs[i, 1] >> 32
            if b > top:
                top = b
        for i in range(n):
            k[i] = (runs[i, 0] >> 32) * (top + 1) + (runs[i, 1] >> 32)
            if i > 0 and k[i] < k[i - 1]:
                rising = False
    return keys, rising
