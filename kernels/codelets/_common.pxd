# Shared element-type codes and load/store helpers for every codelet family.
# A tile's memory is raw bytes; a codelet reads and writes elements of the types below at byte addresses.
from libc.stdint cimport int8_t, uint8_t, int16_t, uint16_t, int32_t, uint32_t, int64_t, uint64_t
from libc.string cimport memcpy

cdef extern from "half.h":
    float tfipu_half_to_float(uint16_t h) noexcept nogil
    uint16_t tfipu_float_to_half(float f) noexcept nogil

# element-type codes (kept in step with kernels/dtypes.py)
cdef enum:
    DT_PRED = 0
    DT_S8 = 1
    DT_U8 = 2
    DT_S16 = 3
    DT_U16 = 4
    DT_S32 = 5
    DT_U32 = 6
    DT_S64 = 7
    DT_U64 = 8
    DT_F16 = 9
    DT_F32 = 10
    DT_F64 = 11

cdef inline int elem_bytes(int dt) noexcept nogil:
    if dt == DT_PRED or dt == DT_S8 or dt == DT_U8:
        return 1
    if dt == DT_S16 or dt == DT_U16 or dt == DT_F16:
        return 2
    if dt == DT_S32 or dt == DT_U32 or dt == DT_F32:
        return 4
    return 8

cdef inline bint is_float(int dt) noexcept nogil:
    return dt >= DT_F16

cdef inline double load_f(const uint8_t* p, int dt) noexcept nogil:
    cdef float f
    cdef double d
    cdef uint16_t h
    if dt == DT_F32:
        memcpy(&f, p, 4)
        return f
    if dt == DT_F16:
        memcpy(&h, p, 2)
        return tfipu_half_to_float(h)
    if dt == DT_F64:
        memcpy(&d, p, 8)
        return d
    return <double>load_i(p, dt)

cdef inline int64_t load_i(const uint8_t* p, int dt) noexcept nogil:
    cdef int32_t i32
    cdef int64_t i64
    cdef uint32_t u32
    cdef int16_t i16
    cdef uint16_t u16
    if dt == DT_S32:
        memcpy(&i32, p, 4)
        return i32
    if dt == DT_PRED or dt == DT_U8:
        return p[0]
    if dt == DT_S64 or dt == DT_U64:
        memcpy(&i64, p, 8)
        return i64
    if dt == DT_U32:
        memcpy(&u32, p, 4)
        return u32
    if dt == DT_S8:
        return (<const int8_t*>p)[0]
    if dt == DT_S16:
        memcpy(&i16, p, 2)
        return i16
    if dt == DT_U16:
        memcpy(&u16, p, 2)
        return u16
    return <int64_t>load_f(p, dt)

cdef inline void store_f(uint8_t* p, int dt, double v) noexcept nogil:
    cdef float f
    cdef uint16_t h
    if dt == DT_F32:
        f = <float>v
        memcpy(p, &f, 4)
    elif dt == DT_F16:
        h = tfipu_float_to_half(<float>v)
        memcpy(p, &h, 2)
    elif dt == DT_F64:
        memcpy(p, &v, 8)

cdef inline void store_i(uint8_t* p, int dt, int64_t v) noexcept nogil:
    cdef int32_t i32
    cdef int16_t i16
    if dt == DT_S32 or dt == DT_U32:
        i32 = <int32_t>v
        memcpy(p, &i32, 4)
    elif dt == DT_PRED:
        p[0] = 1 if v != 0 else 0
    elif dt == DT_S64 or dt == DT_U64:
        memcpy(p, &v, 8)
    elif dt == DT_S8 or dt == DT_U8:
        p[0] = <uint8_t>v
    elif dt == DT_S16 or dt == DT_U16:
        i16 = <int16_t>v
        memcpy(p, &i16, 2)

cdef inline double round_f(double v, int dt) noexcept nogil:
    # round a float result to its element type, so f32/f16 arithmetic matches the device's precision
    if dt == DT_F32:
        return <double>(<float>v)
    if dt == DT_F16:
        return <double>tfipu_half_to_float(tfipu_float_to_half(<float>v))
    return v

cdef inline int64_t wrap_i(int64_t v, int dt) noexcept nogil:
    # wrap an integer result to its element type (two's complement), as the device's registers do
    if dt == DT_S32:
        return <int32_t>v
    if dt == DT_U32:
        return <uint32_t>v
    if dt == DT_PRED:
        return 1 if v != 0 else 0
    if dt == DT_S8:
        return <int8_t>v
    if dt == DT_U8:
        return <uint8_t>v
    if dt == DT_S16:
        return <int16_t>v
    if dt == DT_U16:
        return <uint16_t>v
    return v

cimport openmp

# Below this much work (elements, bytes or multiply-adds, as each codelet counts it) a compute set runs on one
# host thread: starting a thread team costs more than it saves, and far more when the host is busy.
DEF PARALLEL_WORK = 1048576

cdef inline int host_threads(int64_t work) noexcept nogil:
    if work < PARALLEL_WORK:
        return 1
    return openmp.omp_get_max_threads()
