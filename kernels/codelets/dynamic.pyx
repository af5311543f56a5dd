"""Dynamic-slice codelets: gather and scatter of rows chosen by runtime indices (popops multiSlice/multiUpdate).

The compiler lays the sliced tensor out as a table per tile: rows are the positions of the indexed dimensions
(whole on the tile), a row holds the tile's share of the other (window) elements. A vertex reads index vectors
from its own tile's memory, turns each into a row number and copies (or combines) whole rows. Every address a
vertex touches is on its tile; nothing here moves data between tiles.

records[v] = [table_addr, rows_addr, idx_addr, n_index, width, stride, first_row, n_table_rows]:
  table   table rows first_row .. first_row + n_table_rows - 1 (the tile's part of the table), ``stride``
          elements each, of which the vertex owns ``width`` (from the address given);
  rows    ``n_index * len(oi_off)`` rows of the same stride: the gathered rows (gather) or the updates (scatter);
  idx     ``n_index`` index vectors of ``len(dim_size)`` elements of type ``idx_dt``.
A row outside the tile's part of the table is another tile's business: a gather writes zeros there (the parts'
results are merged by OR-ing their bits), a scatter leaves it.
Per indexed dimension j: ``dim_size[j]`` positions, ``win[j]`` the window, ``row_step[j]`` table rows a step;
``oi_off`` lists the row offset of every position in the window. The start s of dimension j is clamped to
[0, dim_size - win] (mode CLAMP) or, for scatter, the whole window is skipped unless it fits (mode SKIP).
"""
from cython.parallel cimport prange
from libc.math cimport isnan
from libc.stdint cimport int64_t, uint8_t
from libc.string cimport memcpy, memset
from ._common cimport *

cdef enum:
    MODE_CLAMP = 0
    MODE_SKIP = 1

cdef enum:
    C_REPLACE = 0
    C_ADD = 1
    C_MUL = 2
    C_MAX = 3
    C_MIN = 4
    C_SUB = 5


cdef inline int64_t first_row(const uint8_t* idx, int idx_dt, int isz, Py_ssize_t ndims,
                              const int64_t[::1] dim_size, const int64_t[::1] win, const int64_t[::1] row_step,
                              int mode) noexcept nogil:
    """The table row of an index vector's window start, or -1 when mode is SKIP and the window does not fit."""
    cdef Py_ssize_t j
    cdef int64_t s, hi, row = 0
    for j in range(ndims):
        s = load_i(idx + j * isz, idx_dt)
        hi = dim_size[j] - win[j]
        if s < 0 or s > hi:
            if mode == MODE_SKIP:
                return -1
            s = 0 if s < 0 else hi
        row = row + s * row_step[j]
    return row


cdef void combine_row(uint8_t* dst, const uint8_t* src, int64_t n, int dt, int esz, int op) noexcept nogil:
    """dst[i] = op(dst[i], src[i]) for n elements of type dt (floats round to dt once, integers wrap)."""
    cdef int64_t i
    cdef double a, b
    cdef int64_t x, y
    cdef float* fd
    cdef const float* fs
    if op == C_REPLACE:
        memcpy(dst, src, n * esz)
        return
    if dt == DT_F32 and op == C_ADD:
        fd = <float*>dst
        fs = <const float*>src
        for i in range(n):
            fd[i] = fd[i] + fs[i]
        return
    if is_float(dt):
        for i in range(n):
            a = load_f(dst + i * esz, dt)
            b = load_f(src + i * esz, dt)
            if op == C_ADD:
                a = a + b
            elif op == C_MUL:
                a = a * b
            elif op == C_SUB:
                a = a - b
            elif op == C_MAX:
                if isnan(b) or b > a:
                    a = b if not isnan(a) else a
            elif op == C_MIN:
                if isnan(b) or b < a:
                    a = b if not isnan(a) else a
            store_f(dst + i * esz, dt, a)
        return
    for i in range(n):
        x = load_i(dst + i * esz, dt)
        y = load_i(src + i * esz, dt)
        if op == C_ADD:
            x = <int64_t>(<unsigned long long>x + <unsigned long long>y)
        elif op == C_MUL:
            x = <int64_t>(<unsigned long long>x * <unsigned long long>y)
        elif op == C_SUB:
            x = <int64_t>(<unsigned long long>x - <unsigned long long>y)
        elif op == C_MAX:
            x = y if y > x else x
        elif op == C_MIN:
            x = y if y < x else x
        store_i(dst + i * esz, dt, wrap_i(x, dt))


def run_gather(uint8_t[::1] mem, const int64_t[:, ::1] records, int esz, int idx_dt, int idx_sz,
               const int64_t[::1] dim_size, const int64_t[::1] win, const int64_t[::1] row_step,
               const int64_t[::1] oi_off):
    """rows[g, o] = table[row(g) + oi_off[o]] for every index vector g (starts clamped into range)."""
    cdef Py_ssize_t nv = records.shape[0], v, g, o
    cdef Py_ssize_t ndims = dim_size.shape[0], nwin = oi_off.shape[0]
    cdef uint8_t* base = &mem[0]
    cdef const uint8_t* table
    cdef uint8_t* rows
    cdef const uint8_t* idx
    cdef int64_t row, r, nbytes, sbytes
    if nv == 0:
        return
    for v in prange(nv, nogil=True, schedule='dynamic'):
        table = base + records[v, 0]
        rows = base + records[v, 1]
        idx = base + records[v, 2]
        nbytes = records[v, 4] * esz
        sbytes = records[v, 5] * esz
        for g in range(records[v, 3]):
            row = first_row(idx + g * ndims * idx_sz, idx_dt, idx_sz, ndims, dim_size, win, row_step, MODE_CLAMP)
            for o in range(nwin):
                r = row + oi_off[o] - records[v, 6]
                if r >= 0 and r < records[v, 7]:
                    memcpy(rows + (g * nwin + o) * sbytes, table + r * sbytes, nbytes)
                else:
                    memset(rows + (g * nwin + o) * sbytes, 0, nbytes)


def run_scatter(uint8_t[::1] mem, const int64_t[:, ::1] records, int dt, int esz, int idx_dt, int idx_sz,
                const int64_t[::1] dim_size, const int64_t[::1] win, const int64_t[::1] row_step,
                const int64_t[::1] oi_off, int op, int mode):
    """table[row(g) + oi_off[o]] = op(table[...], rows[g, o]), index vectors in order.

    A vertex owns its table columns, so vertices run in parallel; within a vertex updates apply in index
    order, as XLA applies them (this decides which of several updates of one row wins a replacement).
    """
    cdef Py_ssize_t nv = records.shape[0], v, g, o
    cdef Py_ssize_t ndims = dim_size.shape[0], nwin = oi_off.shape[0]
    cdef uint8_t* base = &mem[0]
    cdef uint8_t* table
    cdef const uint8_t* rows
    cdef const uint8_t* idx
    cdef int64_t row, r, width, sbytes
    if nv == 0:
        return
    for v in prange(nv, nogil=True, schedule='dynamic'):
        table = base + records[v, 0]
        rows = base + records[v, 1]
        idx = base + records[v, 2]
        width = records[v, 4]
        sbytes = records[v, 5] * esz
        for g in range(records[v, 3]):
            row = first_row(idx + g * ndims * idx_sz, idx_dt, idx_sz, ndims, dim_size, win, row_step, mode)
            if row < 0:
                continue
            for o in range(nwin):
                r = row + oi_off[o] - records[v, 6]
                if r >= 0 and r < records[v, 7]:
                    combine_row(table + r * sbytes, rows + (g * nwin + o) * sbytes, width, dt, esz, op)
