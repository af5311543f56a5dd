"""First-fit placement of blocks with lifetimes (host side, used by the compiler's memory plan).

Not a codelet: the compiler's per-tile memory plan (xla_lowering/mapping/memory.py ``_place``) in C. Blocks come
in ``order`` (by first use, largest first among equals); each goes at the lowest offset that does not overlap a
placed block still alive at its first use. The active set is kept sorted by (offset, end); blocks that died
before the current first use are dropped (they can never overlap a later block).

The active set's leading blocks often cover [0, reach) without a gap (the constants and variables, alive
throughout, are placed first): a block of nonzero size cannot go below that reach, so the search starts after
those blocks, at the reach (the offsets are the same as scanning them).
"""
from cython.parallel cimport prange
from libc.stdlib cimport malloc, free
from libc.string cimport memmove

import numpy as np


cdef int _fit(const long long *sizes, const long long *first, const long long *last, const long long *order,
              Py_ssize_t n, long long *offsets) noexcept nogil:
    """Offsets of blocks ``order[0..n)`` (indices into the other arrays) into ``offsets``; -1 if out of memory."""
    cdef Py_ssize_t m = 0, k, j, pos, i, lead = 0
    cdef long long s, f, l, off, end, reach = 0
    cdef long long big = 0x7FFFFFFFFFFFFFFF
    cdef long long lead_last = big, rest_last = big     # earliest death among the lead's blocks, the others'
    cdef long long *a_off = <long long *> malloc(max(n, 1) * sizeof(long long))
    cdef long long *a_end = <long long *> malloc(max(n, 1) * sizeof(long long))
    cdef long long *a_last = <long long *> malloc(max(n, 1) * sizeof(long long))
    if a_off == NULL or a_end == NULL or a_last == NULL:
        free(a_off); free(a_end); free(a_last)
        return -1
    for k in range(n):
        i = order[k]
        s, f, l = sizes[i], first[i], last[i]
        if f > lead_last or f > rest_last:
            # drop the blocks dead before f (from the lead's end on when the lead's blocks all live on)
            if f > lead_last:
                lead = 0
                reach = 0
                lead_last = big
            pos = lead
            rest_last = big
            for j in range(lead, m):
                if a_last[j] >= f:
                    a_off[pos], a_end[pos], a_last[pos] = a_off[j], a_end[j], a_last[j]
                    if a_last[j] < rest_last:
                        rest_last = a_last[j]
                    pos += 1
            m = pos
        # the active blocks a_off[0..lead) cover [0, reach) with no gap
        while lead < m and a_off[lead] <= reach:
            if a_end[lead] > reach:
                reach = a_end[lead]
            if a_last[lead] < lead_last:
                lead_last = a_last[lead]
            lead += 1
        if s > 0:
            off = reach
            j = lead
        else:                       # an empty block fits at the first offset where one starts: scan them all
            off = 0
            j = 0
        while j < m:
            if off + s <= a_off[j]:
                break
            if a_end[j] > off:
                off = a_end[j]
            j += 1
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
        if l < rest_last:
            rest_last = l
        if pos < lead:              # only an empty block lands inside the lead; find it again
            lead = 0
            reach = 0
            if lead_last < rest_last:
                rest_last = lead_last
            lead_last = big
    free(a_off); free(a_end); free(a_last)
    return 0


def first_fit(const long long[::1] sizes, const long long[::1] first, const long long[::1] last,
              const long long[::1] order):
    """Offsets of one tile's blocks placed in ``order``."""
    cdef Py_ssize_t n = sizes.shape[0]
    cdef int err
    out = np.zeros(n, np.int64)
    cdef long long[::1] offsets = out
    if n == 0:
        return out
    with nogil:
        err = _fit(&sizes[0], &first[0], &last[0], &order[0], order.shape[0], &offsets[0])
    if err:
        raise MemoryError()
    return out


def first_fit_tiles(const long long[::1] sizes, const long long[::1] first, const long long[::1] last,
                    const long long[::1] order, const long long[::1] cuts):
    """``first_fit`` of many tiles at once (in parallel): tile t places blocks ``order[cuts[t]:cuts[t + 1]]``
    (indices into the whole arrays); returns every block's offset on its tile."""
    cdef Py_ssize_t n = sizes.shape[0], ntiles = cuts.shape[0] - 1, t
    cdef int failed = 0
    out = np.zeros(n, np.int64)
    cdef long long[::1] offsets = out
    if n == 0 or ntiles <= 0:
        return out
    for t in range(ntiles):
        if cuts[t] < 0 or cuts[t] > cuts[t + 1] or cuts[t + 1] > order.shape[0]:
            raise ValueError("cuts must rise from 0 to at most the length of order")
    for t in range(order.shape[0]):
        if order[t] < 0 or order[t] >= n:
            raise IndexError("order holds an index out of range")
    for t in prange(ntiles, nogil=True, schedule="dynamic"):
        if cuts[t + 1] > cuts[t]:
            failed += _fit(&sizes[0], &first[0], &last[0], &order[cuts[t]], cuts[t + 1] - cuts[t],
                           &offsets[0]) != 0
    if failed:
        raise MemoryError()
    return out

def touch_blocks(const long long[:, :] syms, const long long[::1] cols, long long[::1] first, long long[::1] last,
                 long long step):
    """Liveness: the blocks (``sym >> 32``) of ``syms[:, cols]`` are used at ``step`` (first and last use updated)."""
    cdef Py_ssize_t n = syms.shape[0], nc = cols.shape[0], i, c
    cdef long long b
    with nogil:
        for i in range(n):
            for c in range(nc):
                b = syms[i, cols[c]] >> 32
                if first[b] > step:
                    first[b] = step
                if last[b] < step:
                    last[b] = step


def copy_state(const long long[:, :] rows, const long long[::1] block_tiles, long long[::1] out,
               long long plain_bytes, long long strided_bytes):
    """Copy descriptor bytes of ``rows`` (symbolic addresses) added to ``out`` by the tile that receives."""
    cdef Py_ssize_t n = rows.shape[0], i
    with nogil:
        for i in range(n):
            out[block_tiles[rows[i, 0] >> 32]] += strided_bytes if rows[i, 3] > 1 else plain_bytes


def resolve_cols(long long[:, :] syms, const long long[::1] cols, const long long[::1] base):
    """Symbolic addresses (block << 32 | offset) in ``syms[:, cols]`` made absolute (``base`` per block), in place."""
    cdef Py_ssize_t n = syms.shape[0], nc = cols.shape[0], i, c
    cdef long long s, mask = (1LL << 32) - 1
    with nogil:
        for i in range(n):
            for c in range(nc):
                s = syms[i, cols[c]]
                syms[i, cols[c]] = base[s >> 32] + (s & mask)


def mark_owners(const long long[:, :] syms, const long long[::1] cols, const long long[::1] owner,
                long long[::1] mark, long long value):
    """``mark[owner[b]] = value`` for the block b (``sym >> 32``) of every address in ``syms[:, cols]`` whose
    owner is not -1."""
    cdef Py_ssize_t n = syms.shape[0], nc = cols.shape[0], i, c
    cdef long long o
    with nogil:
        for i in range(n):
            for c in range(nc):
                o = owner[syms[i, cols[c]] >> 32]
                if o >= 0:
                    mark[o] = value
