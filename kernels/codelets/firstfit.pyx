"""First-fit placement of blocks with lifetimes (host side, used by the compiler's memory plan).

Not a codelet: the compiler's per-tile memory plan (xla_lowering/mapping/memory.py ``_place``) in C. Blocks come
in ``order`` (by first use, largest first among equals); each goes at the lowest offset that does not overlap a
placed block still alive at its first use. The active set is kept sorted by (offset, end); blocks that died
before the current first use are dropped (they can never overlap a later block).
"""
from libc.stdlib cimport malloc, free
from libc.string cimport memmove

import numpy as np


def first_fit(const long long[:] sizes, const long long[:] first, const long long[:] last,
              const long long[:] order):
    cdef Py_ssize_t n = sizes.shape[0], m = 0, k, j, pos, i
    cdef long long s, f, l, off, end, min_last = 0x7FFFFFFFFFFFFFFF
    cdef long long big = 0x7FFFFFFFFFFFFFFF
    out = np.zeros(n, np.int64)
    cdef long long[:] offsets = out
    cdef long long *a_off = <long long *> malloc(max(n, 1) * sizeof(long long))
    cdef long long *a_end = <long long *> malloc(max(n, 1) * sizeof(long long))
    cdef long long *a_last = <long long *> malloc(max(n, 1) * sizeof(long long))
    if a_off == NULL or a_end == NULL or a_last == NULL:
        free(a_off); free(a_end); free(a_last)
        raise MemoryError()
    try:
        with nogil:
            for k in range(n):
                i = order[k]
                s, f, l = sizes[i], first[i], last[i]
                if f > min_last:
                    pos = 0
                    min_last = big
                    for j in range(m):
                        if a_last[j] >= f:
                            a_off[pos], a_end[pos], a_last[pos] = a_off[j], a_end[j], a_last[j]
                            if a_last[j] < min_last:
                                min_last = a_last[j]
                            pos += 1
                    m = pos
                off = 0
                for j in range(m):
                    if off + s <= a_off[j]:
                        break
                    if a_end[j] > off:
                        off = a_end[j]
                offsets[i] = off
                end = off + s
                pos = m
                while pos > 0 and (a_off[pos - 1] > off or (a_off[pos - 1] == off and a_end[pos - 1] > end)):
                    pos -= 1
                memmove(&a_off[pos + 1], &a_off[pos], (m - pos) * sizeof(long long))
                memmove(&a_end[pos + 1], &a_end[pos], (m - pos) * sizeof(long long))
                memmove(&a_last[pos + 1], &a_last[pos], (m - pos) * sizeof(long long))
                a_off[pos], a_end[pos], a_last[pos] = off, end, l
                m += 1
                if l < min_last:
                    min_last = l
    finally:
        free(a_off); free(a_end); free(a_last)
    return out
