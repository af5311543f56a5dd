"""Copy codelets: exchange and on-tile copies, and host stream copies.

A copy list is fixed when the executable is built: rows of [dst, src, nbytes, count, dst_stride, src_stride] in
absolute bytes of the device memory. A row copies ``count`` runs of ``nbytes``: run i from src + i * src_stride to
dst + i * dst_stride (count 1: one plain run; a src_stride of 0 repeats one source run, e.g. a padding value).
Rows never overlap in their destinations, so they run in parallel on the host cores. Host streams use rows of
[dev_addr, host_offset, nbytes].
"""
from cython.parallel cimport prange
from libc.string cimport memcpy
from libc.stdint cimport int64_t, uint8_t
from ._common cimport host_threads


cdef int64_t total_bytes(const int64_t[:, ::1] rows) noexcept nogil:
    cdef Py_ssize_t r
    cdef int64_t total = 0
    for r in range(rows.shape[0]):
        total += rows[r, 2]
    return total


cdef int64_t strided_bytes(const int64_t[:, ::1] rows) noexcept nogil:
    cdef Py_ssize_t r
    cdef int64_t total = 0
    for r in range(rows.shape[0]):
        total += rows[r, 2] * rows[r, 3]
    return total


cdef inline void copy_run(uint8_t* d, const uint8_t* s, int64_t n) noexcept nogil:
    """One run; the common element sizes as fixed-size moves (a library call costs more than the move)."""
    if n == 4:
        memcpy(d, s, 4)
    elif n == 8:
        memcpy(d, s, 8)
    elif n == 2:
        memcpy(d, s, 2)
    elif n == 16:
        memcpy(d, s, 16)
    else:
        memcpy(d, s, n)


cdef void copy_rows(uint8_t* base, const int64_t* rows, int64_t lo, int64_t hi) noexcept nogil:
    cdef int64_t r, i, d, s, n, c, ds, ss
    cdef const int64_t* q
    for r in range(lo, hi):
        q = rows + 6 * r
        d, s, n, c = q[0], q[1], q[2], q[3]
        if c == 1:
            copy_run(base + d, base + s, n)
            continue
        ds, ss = q[4], q[5]
        for i in range(c):
            copy_run(base + d, base + s, n)
            d += ds
            s += ss


def run_copies(uint8_t[::1] mem, const int64_t[:, ::1] rows):
    """Device-to-device copies (exchange between tiles, or copies within a tile): rows of 6 columns, split into
    one contiguous share per host thread."""
    cdef int64_t n = rows.shape[0], k, lo, hi, share
    cdef uint8_t* base = &mem[0]
    cdef int nt
    if n == 0:
        return
    if rows.shape[1] != 6:
        raise ValueError(f"copy rows must have 6 columns, found {rows.shape[1]}")
    nt = host_threads(strided_bytes(rows))
    share = (n + nt - 1) // nt
    for k in prange(nt, nogil=True, schedule='static', num_threads=nt):
        lo = k * share
        hi = min(n, lo + share)
        if lo < hi:
            copy_rows(base, &rows[0, 0], lo, hi)


def host_to_device(uint8_t[::1] mem, const uint8_t[::1] host, const int64_t[:, ::1] rows):
    """Stream a host buffer in: rows of [dev_addr, host_offset, nbytes]."""
    cdef Py_ssize_t n = rows.shape[0], r
    cdef int nt
    if n == 0:
        return
    nt = host_threads(total_bytes(rows))
    for r in prange(n, nogil=True, schedule='static', num_threads=nt):
        memcpy(&mem[0] + rows[r, 0], &host[0] + rows[r, 1], rows[r, 2])


def device_to_host(const uint8_t[::1] mem, uint8_t[::1] host, const int64_t[:, ::1] rows):
    """Stream device memory out: rows of [dev_addr, host_offset, nbytes]."""
    cdef Py_ssize_t n = rows.shape[0], r
    cdef int nt
    if n == 0:
        return
    nt = host_threads(total_bytes(rows))
    for r in prange(n, nogil=True, schedule='static', num_threads=nt):
        memcpy(&host[0] + rows[r, 1], &mem[0] + rows[r, 0], rows[r, 2])
