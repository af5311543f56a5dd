"""Random-number codelet: counter-based generator per element (the tile PRNG seen from outside).

Each element's bits come from a SplitMix64-style mix of (seed, element counter), so results do not depend on
how elements are split over tiles or host threads. records[v] = [out_addr, n, counter_base].
"""
from cython.parallel cimport prange
from libc.stdint cimport int64_t, uint64_t, uint8_t
from libc.math cimport log, sqrt, cos, M_PI
from ._common cimport *


cdef inline uint64_t mix64(uint64_t z) noexcept nogil:
    z = (z ^ (z >> 30)) * <uint64_t>0xbf58476d1ce4e5b9
    z = (z ^ (z >> 27)) * <uint64_t>0x94d049bb133111eb
    return z ^ (z >> 31)


cdef inline double uniform01(uint64_t seed, uint64_t counter) noexcept nogil:
    # 53 random bits -> [0, 1)
    return (mix64(seed * <uint64_t>0x9e3779b97f4a7c15 + counter) >> 11) * (1.0 / 9007199254740992.0)


cdef inline double uniform01_of(uint64_t seed, uint64_t counter, int out_dt) noexcept nogil:
    # [0, 1) on the grid of the output type's precision (f16: k / 2^11, f32: k / 2^24, f64: k / 2^53): every
    # sample is exactly representable, so storing it can never round up to 1.0
    cdef uint64_t bits = mix64(seed * <uint64_t>0x9e3779b97f4a7c15 + counter)
    if out_dt == DT_F16:
        return (bits >> 53) * (1.0 / 2048.0)
    if out_dt == DT_F32:
        return (bits >> 40) * (1.0 / 16777216.0)
    return (bits >> 11) * (1.0 / 9007199254740992.0)


def run_rng(uint8_t[::1] mem, const int64_t[:, ::1] records, int distribution, int out_dt, uint64_t seed):
    """distribution 0: uniform [0, 1); 1: standard normal (Box-Muller)."""
    cdef Py_ssize_t nv = records.shape[0], v, j
    cdef uint8_t* base = &mem[0]
    cdef int osz = 2 if out_dt == DT_F16 else (4 if out_dt == DT_F32 else 8)
    cdef uint64_t c
    cdef double u1, u2, x
    cdef int64_t work = 0
    cdef int nt
    if nv == 0:
        return
    for v in range(nv):
        work += records[v, 1]
    nt = host_threads(work)
    for v in prange(nv, nogil=True, schedule='dynamic', num_threads=nt):
        for j in range(records[v, 1]):
            c = <uint64_t>(records[v, 2] + j)
            if distribution == 0:
                x = uniform01_of(seed, 2 * c, out_dt)
            else:
                u1 = uniform01(seed, 2 * c)
                u2 = uniform01(seed, 2 * c + 1)
                x = sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * M_PI * u2)
            store_f(base + records[v, 0] + j * osz, out_dt, x)
