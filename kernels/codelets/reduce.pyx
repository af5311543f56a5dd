"""Reduce codelet: each vertex reduces contiguous rows held on its tile.

records[v] = [in_addr, out_addr, rows, row_len]: out[r] = op over in[r, 0:row_len]. Floats accumulate in
double and are rounded to the output type once (the device accumulates f16 in f32 partials); integers in
int64 wrapped to their type. The reduction planner (xla_lowering/mapping/reduce_plan.py) arranges rows.
"""
from cython.parallel cimport prange
from libc.stdint cimport int64_t, uint8_t
from libc.math cimport isnan
from ._common cimport *

cdef enum:
    R_ADD = 0
    R_MUL = 1
    R_MAX = 2
    R_MIN = 3
    R_AND = 4
    R_OR = 5
    R_XOR = 6


cdef inline int elem_bytes(int dt) noexcept nogil:
    if dt == DT_PRED or dt == DT_S8 or dt == DT_U8:
        return 1
    if dt == DT_S16 or dt == DT_U16 or dt == DT_F16:
        return 2
    if dt == DT_S32 or dt == DT_U32 or dt == DT_F32:
        return 4
    return 8


cdef void reduce_rows(const uint8_t* src, uint8_t* dst, int64_t rows, int64_t row_len,
                      int op, int in_dt, int out_dt) noexcept nogil:
    cdef int64_t r, k
    cdef int isz = elem_bytes(in_dt), osz = elem_bytes(out_dt)
    cdef double facc, x
    cdef int64_t iacc, y
    cdef const float* f32
    for r in range(rows):
        if is_float(in_dt):
            facc = load_f(src + r * row_len * isz, in_dt)
            if in_dt == DT_F32 and op == R_ADD:
                f32 = <const float*>(src + r * row_len * 4)
                for k in range(1, row_len):
                    facc = facc + f32[k]
            else:
                for k in range(1, row_len):
                    x = load_f(src + (r * row_len + k) * isz, in_dt)
                    if op == R_ADD:
                        facc = facc + x
                    elif op == R_MUL:
                        facc = facc * x
                    elif op == R_MAX:
                        if isnan(x) or x > facc:
                            facc = x if not isnan(facc) else facc
                    elif op == R_MIN:
                        if isnan(x) or x < facc:
                            facc = x if not isnan(facc) else facc
            store_f(dst + r * osz, out_dt, facc)
        else:
            iacc = load_i(src + r * row_len * isz, in_dt)
            for k in range(1, row_len):
                y = load_i(src + (r * row_len + k) * isz, in_dt)
                if op == R_ADD:
                    iacc = iacc + y
                elif op == R_MUL:
                    iacc = <int64_t>(<unsigned long long>iacc * <unsigned long long>y)
                elif op == R_MAX:
                    iacc = y if y > iacc else iacc
                elif op == R_MIN:
                    iacc = y if y < iacc else iacc
                elif op == R_AND:
                    iacc = iacc & y
                elif op == R_OR:
                    iacc = iacc | y
                elif op == R_XOR:
                    iacc = iacc ^ y
            store_i(dst + r * osz, out_dt, wrap_i(iacc, out_dt))


def run_reduce(uint8_t[::1] mem, const int64_t[:, ::1] records, int op, int in_dt, int out_dt):
    cdef Py_ssize_t nv = records.shape[0], v
    cdef uint8_t* base = &mem[0]
    if nv == 0:
        return
    for v in prange(nv, nogil=True, schedule='dynamic'):
        reduce_rows(base + records[v, 0], base + records[v, 1], records[v, 2], records[v, 3], op, in_dt, out_dt)
