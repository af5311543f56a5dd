"""Reduce codelet: each vertex reduces contiguous rows held on its tile.

records[v] = [in_addr, out_addr, rows, row_len, row_stride, elem_stride, init_addr]: out[r] = op over k of
in[r * row_stride + k * elem_stride]; rows are either contiguous (row layout) or interleaved (column layout:
the first stage over channels-last data, whose channels are adjacent and a channel's elements K2 apart).
Floats accumulate in double and are rounded to the output type once (the device accumulates f16 in f32
partials); integers in int64 wrapped to their type. The reduction planner (xla_lowering/mapping/reduce_plan.py) arranges rows.
"""
from cython.parallel cimport prange
from libc.stdint cimport int64_t, uint8_t
from libc.math cimport isnan
from libc.stdlib cimport malloc, free
from ._common cimport *

cdef enum:
    R_ADD = 0
    R_MUL = 1
    R_MAX = 2
    R_MIN = 3
    R_AND = 4
    R_OR = 5
    R_XOR = 6


cdef inline double fcombine(double acc, double x, int op) noexcept nogil:
    if op == R_ADD:
        return acc + x
    if op == R_MUL:
        return acc * x
    if isnan(acc):
        return acc                       # XLA max/min propagate NaN
    if op == R_MAX:
        return x if (isnan(x) or x > acc) else acc
    return x if (isnan(x) or x < acc) else acc


cdef inline int64_t icombine(int64_t acc, int64_t y, int op) noexcept nogil:
    if op == R_ADD:
        return acc + y
    if op == R_MUL:
        return <int64_t>(<unsigned long long>acc * <unsigned long long>y)
    if op == R_MAX:
        return y if y > acc else acc
    if op == R_MIN:
        return y if y < acc else acc
    if op == R_AND:
        return acc & y
    if op == R_OR:
        return acc | y
    return acc ^ y


cdef void reduce_rows(const uint8_t* src, uint8_t* dst, int64_t rows, int64_t row_len, int64_t row_stride,
                      int64_t elem_stride, const uint8_t* init, int init_dt, int op, int in_dt,
                      int out_dt) noexcept nogil:
    """out[r] = op(init, src[r * row_stride + k * elem_stride] for every k) (strides in elements).

    Without an init (NULL), the first element of each row starts the accumulation.
    """
    cdef int64_t r, k, k0 = 0 if init != NULL else 1
    cdef int isz = elem_bytes(in_dt), osz = elem_bytes(out_dt)
    cdef double* facc
    cdef int64_t* iacc
    cdef const float* f32
    cdef double acc, x
    if is_float(in_dt):
        facc = <double*>malloc(sizeof(double) * (rows + 1))
        for r in range(rows):
            facc[r] = load_f(init, init_dt) if init != NULL else load_f(src + r * row_stride * isz, in_dt)
        if elem_stride == 1 and in_dt == DT_F32 and op == R_ADD:
            for r in range(rows):
                f32 = <const float*>(src + r * row_stride * 4)
                acc = facc[r]
                for k in range(k0, row_len):
                    acc = acc + f32[k]
                facc[r] = acc
        elif elem_stride == 1:
            for r in range(rows):
                for k in range(k0, row_len):
                    facc[r] = fcombine(facc[r], load_f(src + (r * row_stride + k) * isz, in_dt), op)
        elif in_dt == DT_F32 and op == R_ADD:
            # column layout, f32 sum: element k of every row, then k + 1 (each row still in k order)
            for k in range(k0, row_len):
                f32 = <const float*>(src + k * elem_stride * 4)
                for r in range(rows):
                    facc[r] = facc[r] + f32[r * row_stride]
        elif in_dt == DT_F32 and op == R_MAX:
            # as fcombine: a NaN accumulator stays, a NaN element is taken
            for k in range(k0, row_len):
                f32 = <const float*>(src + k * elem_stride * 4)
                for r in range(rows):
                    x = f32[r * row_stride]
                    if not isnan(facc[r]) and (isnan(x) or x > facc[r]):
                        facc[r] = x
        else:
            # column layout: consecutive rows are adjacent, so the inner loop runs along memory
            for k in range(k0, row_len):
                for r in range(rows):
                    facc[r] = fcombine(facc[r], load_f(src + (r * row_stride + k * elem_stride) * isz, in_dt), op)
        for r in range(rows):
            store_f(dst + r * osz, out_dt, facc[r])
        free(facc)
    else:
        iacc = <int64_t*>malloc(sizeof(int64_t) * (rows + 1))
        for r in range(rows):
            iacc[r] = load_i(init, init_dt) if init != NULL else load_i(src + r * row_stride * isz, in_dt)
        for k in range(k0, row_len):
            for r in range(rows):
                iacc[r] = icombine(iacc[r], load_i(src + (r * row_stride + k * elem_stride) * isz, in_dt), op)
        for r in range(rows):
            store_i(dst + r * osz, out_dt, wrap_i(iacc[r], out_dt))
        free(iacc)


def run_reduce(uint8_t[::1] mem, const int64_t[:, ::1] records, int op, int in_dt, int out_dt, int init_dt):
    """records[v] = [in_addr, out_addr, rows, row_len, row_stride, elem_stride, init_addr (-1: none)]."""
    cdef Py_ssize_t nv = records.shape[0], v
    cdef uint8_t* base = &mem[0]
    cdef int64_t work = 0
    cdef int nt
    if nv == 0:
        return
    for v in range(nv):
        work += records[v, 2] * records[v, 3]
    nt = host_threads(work)
    for v in prange(nv, nogil=True, schedule='dynamic', num_threads=nt):
        reduce_rows(base + records[v, 0], base + records[v, 1], records[v, 2], records[v, 3], records[v, 4],
                    records[v, 5], (base + records[v, 6]) if records[v, 6] >= 0 else NULL, init_dt, op, in_dt,
                    out_dt)
