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
