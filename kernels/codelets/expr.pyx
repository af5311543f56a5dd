"""Expression codelet: the popops-style elementwise vertex.

Every elementwise HLO op (alone or fused into an expression) runs through this one codelet. An expression is
a small register program (see kernels/expr_ops.py for the opcode table, shared with the compiler). Each vertex
evaluates the program over ``n`` elements of its tile's memory in blocks of BLOCK elements: slots hold a block of
values as doubles (float types) or int64 (integer types and pred), rounded or wrapped to their element type
after every operation so that f16/f32/s32 results match the device's precision. That interpreter (run_program) is
the definition of every op. Programs whose float values are all f32 (most of a model's) run on a second one
(run_program_f32) with the same results bit for bit: float slots, per-op loops the C compiler vectorizes, and
blocks of FBLOCK elements gathered from many small vertices, so that the per-op work is not spent on a few
elements at a time (tests/test_expr_fastpath.py compares the two).
"""
from cython.parallel cimport prange, parallel
from libc.stdlib cimport malloc, free
from libc.math cimport (exp, expm1, log, log1p, tanh, sqrt, cbrt, sin, cos, tan, floor, ceil, round, nearbyint,
                        fabs, pow, atan2, fmod, isfinite, isnan, erf, fmax, fmin, copysign)
from libc.stdint cimport int64_t, uint64_t, uint8_t, int32_t, uint32_t
from libc.string cimport memcpy
from ._common cimport *

import numpy as np

DEF BLOCK = 256

cdef enum:
    OP_LOAD = 0
    OP_CONST = 1
    OP_COPY = 2
    OP_CONVERT = 3
    OP_NEG = 4
    OP_ABS = 5
    OP_EXP = 6
    OP_EXPM1 = 7
    OP_LOG = 8
    OP_LOG1P = 9
    OP_LOGISTIC = 10
    OP_TANH = 11
    OP_SQRT = 12
    OP_RSQRT = 13
    OP_CBRT = 14
    OP_SIN = 15
    OP_COS = 16
    OP_TAN = 17
    OP_FLOOR = 18
    OP_CEIL = 19
    OP_ROUND_AFZ = 20
    OP_ROUND_EVEN = 21
    OP_SIGN = 22
    OP_NOT = 23
    OP_ISFINITE = 24
    OP_ERF = 25
    OP_POPCNT = 26
    OP_CLZ = 27
    OP_ADD = 40
    OP_SUB = 41
    OP_MUL = 42
    OP_DIV = 43
    OP_REM = 44
    OP_MAX = 45
    OP_MIN = 46
    OP_POW = 47
    OP_ATAN2 = 48
    OP_AND = 49
    OP_OR = 50
    OP_XOR = 51
    OP_SHL = 52
    OP_SHR_L = 53
    OP_SHR_A = 54
    OP_EQ = 60
    OP_NE = 61
    OP_LT = 62
    OP_LE = 63
    OP_GT = 64
    OP_GE = 65
    OP_SELECT = 70
    OP_CLAMP = 71
    OP_BITCAST = 72


cdef inline int bits_of(int dt) noexcept nogil:
    return 8 * elem_bytes(dt)


cdef inline uint64_t low_mask(int sh) noexcept nogil:
    if sh >= 64:
        return ~(<uint64_t>0)
    return ((<uint64_t>1) << sh) - 1


cdef inline bint is_unsigned(int dt) noexcept nogil:
    return dt == DT_U8 or dt == DT_U16 or dt == DT_U32 or dt == DT_U64 or dt == DT_PRED


cdef inline int64_t float_to_int(double v, int dt) noexcept nogil:
    # XLA/TF: NaN -> 0, out-of-range saturates, truncation toward zero
    cdef double lo, hi
    if dt == DT_PRED:
        return 1 if v != 0.0 else 0      # NaN != 0: true, as XLA converts to pred
    if isnan(v):
        return 0
    if dt == DT_S32:
        lo = -2147483648.0
        hi = 2147483647.0
    elif dt == DT_U32:
        lo = 0.0
        hi = 4294967295.0
    elif dt == DT_S8:
        lo = -128.0
        hi = 127.0
    elif dt == DT_U8:
        lo = 0.0
        hi = 255.0
    elif dt == DT_S16:
        lo = -32768.0
        hi = 32767.0
    elif dt == DT_U16:
        lo = 0.0
        hi = 65535.0
    elif dt == DT_U64:
        if v <= 0.0:
            return 0
        if v >= 1.8446744073709552e19:
            return <int64_t>(~(<uint64_t>0))
        return <int64_t>(<uint64_t>v)
    else:
        if v >= 9.2233720368547758e18:
            return <int64_t>(low_mask(63))
        if v <= -9.2233720368547758e18:
            return <int64_t>(~low_mask(63))
        return <int64_t>v
    if v < lo:
        v = lo
    if v > hi:
        v = hi
    return <int64_t>v


cdef inline double bits_to_float(int64_t v, int dt) noexcept nogil:
    cdef uint32_t u32
    cdef float f
    cdef double d
    if dt == DT_F32:
        u32 = <uint32_t>v
        memcpy(&f, &u32, 4)
        return f
    if dt == DT_F16:
        return tfipu_half_to_float(<uint16_t>v)
    memcpy(&d, &v, 8)
    return d


cdef inline int64_t float_to_bits(double v, int dt) noexcept nogil:
    cdef float f
    cdef uint32_t u32
    cdef int64_t i64
    if dt == DT_F32:
        f = <float>v
        memcpy(&u32, &f, 4)
        return u32
    if dt == DT_F16:
        return tfipu_float_to_half(<float>v)
    memcpy(&i64, &v, 8)
    return i64


cdef inline int64_t idiv(int64_t a, int64_t b, int dt) noexcept nogil:
    # XLA: x / 0 = -1 (all bits set); INT_MIN / -1 = INT_MIN; otherwise truncation toward zero
    if b == 0:
        return wrap_i(-1, dt)
    if dt == DT_U64:
        return <int64_t>(<uint64_t>a / <uint64_t>b)
    if b == -1 and not is_unsigned(dt):
        return wrap_i(<int64_t>(0 - <uint64_t>a), dt)
    return a / b


cdef inline int64_t irem(int64_t a, int64_t b, int dt) noexcept nogil:
    # XLA: x % 0 = x; INT_MIN % -1 = 0; sign follows the dividend
    if b == 0:
        return a
    if b == -1 and not is_unsigned(dt):
        return 0
    if dt == DT_U64:
        return <int64_t>(<uint64_t>a % <uint64_t>b)
    return a % b


cdef inline int64_t popcount64(uint64_t x) noexcept nogil:
    cdef int64_t c = 0
    while x:
        x &= x - 1
        c += 1
    return c


cdef void load_broadcast(double* fd, int64_t* id_, const uint8_t* p, int n, int dt, int64_t inner, int64_t pos,
                         int64_t m) noexcept nogil:
    """Element j of the block is element ((pos + j) // inner) % m of the vector at p (a broadcast-mode input): runs
    of ``inner`` equal values, or (inner 1) the vector itself, wrapping after m elements."""
    cdef int64_t g = (pos // inner) % m
    cdef int64_t r = pos % inner
    cdef int64_t j = 0, run, t
    cdef int isz = elem_bytes(dt)
    cdef bint flt = is_float(dt)
    cdef double fv
    cdef int64_t iv
    while j < n:
        if inner == 1:
            run = m - g
        else:
            run = inner - r
        if run > n - j:
            run = n - j
        if inner == 1:
            if dt == DT_F32:
                for t in range(run):
                    fd[j + t] = (<const float*>p)[g + t]
            elif flt:
                for t in range(run):
                    fd[j + t] = load_f(p + (g + t) * isz, dt)
            else:
                for t in range(run):
                    id_[j + t] = load_i(p + (g + t) * isz, dt)
            g = 0
        else:
            if flt:
                fv = load_f(p + g * isz, dt)
                for t in range(run):
                    fd[j + t] = fv
            else:
                iv = load_i(p + g * isz, dt)
                for t in range(run):
                    id_[j + t] = iv
            r = 0
            g = g + 1
            if g == m:
                g = 0
        j = j + run


# ---- integer ops, shared by the generic and the f32 interpreters: slots of int64, wrapped to the element type
cdef void int_unary(int op, int dtd, int64_t* id_, const int64_t* ia, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    cdef int sh
    cdef int64_t step
    if op == OP_NEG:
        for j in range(n):
            id_[j] = wrap_i(-ia[j], dtd)
    elif op == OP_ABS:
        if is_unsigned(dtd):
            for j in range(n):
                id_[j] = ia[j]          # |x| = x for unsigned types (u64 >= 2^63 is not negative)
        else:
            for j in range(n):
                id_[j] = wrap_i(ia[j] if ia[j] >= 0 else -ia[j], dtd)
    elif op == OP_SIGN:
        if is_unsigned(dtd):
            for j in range(n):
                id_[j] = ia[j] != 0
        else:
            for j in range(n):
                id_[j] = (ia[j] > 0) - (ia[j] < 0)
    elif op == OP_NOT:
        if dtd == DT_PRED:
            for j in range(n):
                id_[j] = 0 if ia[j] else 1
        else:
            for j in range(n):
                id_[j] = wrap_i(~ia[j], dtd)
    elif op == OP_POPCNT:
        sh = bits_of(dtd)
        for j in range(n):
            id_[j] = popcount64(<uint64_t>ia[j] & low_mask(sh))
    elif op == OP_CLZ:
        sh = bits_of(dtd)
        for j in range(n):
            step = 0
            while step < sh and not ((<uint64_t>ia[j] >> (sh - 1 - step)) & 1):
                step = step + 1
            id_[j] = step
    elif op == OP_FLOOR or op == OP_CEIL or op == OP_ROUND_AFZ or op == OP_ROUND_EVEN:
        for j in range(n):
            id_[j] = ia[j]


cdef void int_binary(int op, int dtd, int64_t* id_, const int64_t* ia, const int64_t* ib, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    cdef int sh
    if op == OP_ADD:
        for j in range(n):
            id_[j] = wrap_i(ia[j] + ib[j], dtd)
    elif op == OP_SUB:
        for j in range(n):
            id_[j] = wrap_i(ia[j] - ib[j], dtd)
    elif op == OP_MUL:
        for j in range(n):
            id_[j] = wrap_i(<int64_t>(<uint64_t>ia[j] * <uint64_t>ib[j]), dtd)
    elif op == OP_DIV:
        for j in range(n):
            id_[j] = wrap_i(idiv(ia[j], ib[j], dtd), dtd)
    elif op == OP_REM:
        for j in range(n):
            id_[j] = wrap_i(irem(ia[j], ib[j], dtd), dtd)
    elif op == OP_MAX:
        if dtd == DT_U64:
            for j in range(n):
                id_[j] = ia[j] if <uint64_t>ia[j] > <uint64_t>ib[j] else ib[j]
        else:
            for j in range(n):
                id_[j] = ia[j] if ia[j] > ib[j] else ib[j]
    elif op == OP_MIN:
        if dtd == DT_U64:
            for j in range(n):
                id_[j] = ia[j] if <uint64_t>ia[j] < <uint64_t>ib[j] else ib[j]
        else:
            for j in range(n):
                id_[j] = ia[j] if ia[j] < ib[j] else ib[j]
    elif op == OP_POW:
        for j in range(n):
            id_[j] = ipow(ia[j], ib[j], dtd)
    elif op == OP_AND:
        for j in range(n):
            id_[j] = ia[j] & ib[j]
    elif op == OP_OR:
        for j in range(n):
            id_[j] = ia[j] | ib[j]
    elif op == OP_XOR:
        for j in range(n):
            id_[j] = ia[j] ^ ib[j]
    elif op == OP_SHL:
        sh = bits_of(dtd)
        for j in range(n):
            id_[j] = 0 if (ib[j] < 0 or ib[j] >= sh) else wrap_i(<int64_t>(<uint64_t>ia[j] << ib[j]), dtd)
    elif op == OP_SHR_L:
        sh = bits_of(dtd)
        for j in range(n):
            id_[j] = 0 if (ib[j] < 0 or ib[j] >= sh) else wrap_i(<int64_t>((<uint64_t>ia[j] & low_mask(sh)) >> ib[j]), dtd)
    elif op == OP_SHR_A:
        sh = bits_of(dtd)
        for j in range(n):
            id_[j] = wrap_i(ia[j] >> (sh - 1 if (ib[j] < 0 or ib[j] >= sh) else ib[j]), dtd)


ctypedef fused real:
    float
    double


cdef void float_compare(int op, int64_t* id_, const real* a, const real* b, Py_ssize_t n) noexcept nogil:
    """A float comparison (NaN compares unequal and unordered) into pred slots, for either slot precision."""
    cdef Py_ssize_t j
    if op == OP_EQ:
        for j in range(n):
            id_[j] = a[j] == b[j]
    elif op == OP_NE:
        for j in range(n):
            id_[j] = a[j] != b[j]
    elif op == OP_LT:
        for j in range(n):
            id_[j] = a[j] < b[j]
    elif op == OP_LE:
        for j in range(n):
            id_[j] = a[j] <= b[j]
    elif op == OP_GT:
        for j in range(n):
            id_[j] = a[j] > b[j]
    elif op == OP_GE:
        for j in range(n):
            id_[j] = a[j] >= b[j]


cdef void float_clamp(real* d, const real* lo, const real* x, const real* hi, Py_ssize_t n) noexcept nogil:
    """clamp(lo, x, hi) of floats (no rounding: the result is one of its operands), for either slot precision."""
    cdef Py_ssize_t j
    cdef real v
    for j in range(n):
        v = x[j]
        if v < lo[j]:
            v = lo[j]
        if v > hi[j]:
            v = hi[j]
        d[j] = v


cdef void int_compare(int op, int dts, int64_t* id_, const int64_t* ia, const int64_t* ib, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    if is_unsigned(dts) and dts == DT_U64:
        for j in range(n):
            id_[j] = ucompare(<uint64_t>ia[j], <uint64_t>ib[j], op)
    else:
        for j in range(n):
            id_[j] = icompare(ia[j], ib[j], op)


cdef void int_clamp(int dtd, int64_t* id_, const int64_t* ia, const int64_t* ib, const int64_t* ic,
                    Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    cdef int64_t step
    if dtd == DT_U64:
        for j in range(n):
            step = ib[j]
            if <uint64_t>step < <uint64_t>ia[j]:
                step = ia[j]
            if <uint64_t>step > <uint64_t>ic[j]:
                step = ic[j]
            id_[j] = step
    else:
        for j in range(n):
            step = ib[j]
            if step < ia[j]:
                step = ia[j]
            if step > ic[j]:
                step = ic[j]
            id_[j] = step


cdef void run_program(const int64_t[:, ::1] code, double* F, int64_t* I, int n,
                      const uint8_t* const* in_ptrs, const int64_t* in_step, const int32_t* in_dt,
                      const double[::1] fconst, const int64_t[::1] iconst,
                      const int64_t* b_inner=NULL, const int64_t* b_pos=NULL, const int64_t* b_mod=NULL) noexcept nogil:
    """Evaluate the program over n (<= BLOCK) elements; results stay in the slots. Input i is in broadcast mode
    when b_inner is given and b_inner[i] > 0: element j is element ((b_pos[i] + j) // b_inner[i]) % b_mod[i] of
    the vector at in_ptrs[i]."""
    cdef Py_ssize_t pc, j
    cdef int op, dst, a, b, c, dtd, dts, sh
    cdef double* fd
    cdef double* fa
    cdef double* fb
    cdef double* fc
    cdef int64_t* id_
    cdef int64_t* ia
    cdef int64_t* ib
    cdef int64_t* ic
    cdef const uint8_t* p
    cdef int64_t step
    cdef bint flt, sflt
    cdef double x
    for pc in range(code.shape[0]):
        op = <int>code[pc, 0]
        dst = <int>code[pc, 1]
        a = <int>code[pc, 2]
        b = <int>code[pc, 3]
        c = <int>code[pc, 4]
        dtd = <int>code[pc, 5]
        dts = <int>code[pc, 6]
        flt = is_float(dtd)
        sflt = is_float(dts)
        fd = F + dst * BLOCK
        id_ = I + dst * BLOCK
        fa = F + a * BLOCK
        ia = I + a * BLOCK
        fb = F + b * BLOCK
        ib = I + b * BLOCK
        fc = F + c * BLOCK
        ic = I + c * BLOCK
        if op == OP_LOAD:
            p = in_ptrs[a]
            step = in_step[a]
            if b_inner != NULL and b_inner[a] > 0:
                load_broadcast(fd, id_, p, n, dtd, b_inner[a], b_pos[a], b_mod[a])
            elif flt:
                if dtd == DT_F32 and step == 4:
                    for j in range(n):
                        fd[j] = (<const float*>p)[j]
                else:
                    for j in range(n):
                        fd[j] = load_f(p + j * step, dtd)
            else:
                for j in range(n):
                    id_[j] = load_i(p + j * step, dtd)
        elif op == OP_CONST:
            if flt:
                for j in range(n):
                    fd[j] = fconst[a]
            else:
                for j in range(n):
                    id_[j] = iconst[a]
        elif op == OP_COPY:
            for j in range(n):
                fd[j] = fa[j]
                id_[j] = ia[j]
        elif op == OP_CONVERT:
            if flt and sflt:
                for j in range(n):
                    fd[j] = round_f(fa[j], dtd)
            elif flt:
                if is_unsigned(dts) and dts == DT_U64:
                    for j in range(n):
                        fd[j] = round_f(<double>(<uint64_t>ia[j]), dtd)
                else:
                    for j in range(n):
                        fd[j] = round_f(<double>ia[j], dtd)
            elif sflt:
                for j in range(n):
                    id_[j] = float_to_int(fa[j], dtd)
            else:
                for j in range(n):
                    id_[j] = wrap_i(ia[j], dtd) if dtd != DT_PRED else (1 if ia[j] != 0 else 0)
        elif op == OP_BITCAST:
            if flt and not sflt:
                for j in range(n):
                    fd[j] = bits_to_float(ia[j], dtd)
            elif sflt and not flt:
                for j in range(n):
                    id_[j] = wrap_i(float_to_bits(fa[j], dts), dtd)
            else:
                for j in range(n):
                    fd[j] = fa[j]
                    id_[j] = ia[j]
        elif op < OP_ADD:
            # ---- unary
            if flt:
                if op == OP_NEG:
                    for j in range(n):
                        fd[j] = -fa[j]
                elif op == OP_ABS:
                    for j in range(n):
                        fd[j] = fabs(fa[j])
                elif op == OP_EXP:
                    for j in range(n):
                        fd[j] = round_f(exp(fa[j]), dtd)
                elif op == OP_EXPM1:
                    for j in range(n):
                        fd[j] = round_f(expm1(fa[j]), dtd)
                elif op == OP_LOG:
                    for j in range(n):
                        fd[j] = round_f(log(fa[j]), dtd)
                elif op == OP_LOG1P:
                    for j in range(n):
                        fd[j] = round_f(log1p(fa[j]), dtd)
                elif op == OP_LOGISTIC:
                    for j in range(n):
                        fd[j] = round_f(1.0 / (1.0 + exp(-fa[j])), dtd)
                elif op == OP_TANH:
                    for j in range(n):
                        fd[j] = round_f(tanh(fa[j]), dtd)
                elif op == OP_SQRT:
                    for j in range(n):
                        fd[j] = round_f(sqrt(fa[j]), dtd)
                elif op == OP_RSQRT:
                    for j in range(n):
                        fd[j] = round_f(1.0 / sqrt(fa[j]), dtd)
                elif op == OP_CBRT:
                    for j in range(n):
                        fd[j] = round_f(cbrt(fa[j]), dtd)
                elif op == OP_SIN:
                    for j in range(n):
                        fd[j] = round_f(sin(fa[j]), dtd)
                elif op == OP_COS:
                    for j in range(n):
                        fd[j] = round_f(cos(fa[j]), dtd)
                elif op == OP_TAN:
                    for j in range(n):
                        fd[j] = round_f(tan(fa[j]), dtd)
                elif op == OP_FLOOR:
                    for j in range(n):
                        fd[j] = floor(fa[j])
                elif op == OP_CEIL:
                    for j in range(n):
                        fd[j] = ceil(fa[j])
                elif op == OP_ROUND_AFZ:
                    for j in range(n):
                        fd[j] = round(fa[j])
                elif op == OP_ROUND_EVEN:
                    for j in range(n):
                        fd[j] = nearbyint(fa[j])
                elif op == OP_SIGN:
                    for j in range(n):
                        x = fa[j]
                        fd[j] = x if (isnan(x) or x == 0.0) else copysign(1.0, x)
                elif op == OP_ERF:
                    for j in range(n):
                        fd[j] = round_f(erf(fa[j]), dtd)
            elif op == OP_ISFINITE:
                for j in range(n):
                    id_[j] = 1 if isfinite(fa[j]) else 0
            else:
                int_unary(op, dtd, id_, ia, n)
        elif op < OP_EQ:
            # ---- binary
            if flt:
                if op == OP_ADD:
                    for j in range(n):
                        fd[j] = round_f(fa[j] + fb[j], dtd)
                elif op == OP_SUB:
                    for j in range(n):
                        fd[j] = round_f(fa[j] - fb[j], dtd)
                elif op == OP_MUL:
                    for j in range(n):
                        fd[j] = round_f(fa[j] * fb[j], dtd)
                elif op == OP_DIV:
                    for j in range(n):
                        fd[j] = round_f(fa[j] / fb[j], dtd)
                elif op == OP_REM:
                    for j in range(n):
                        fd[j] = round_f(fmod(fa[j], fb[j]), dtd)
                elif op == OP_MAX:
                    # XLA propagates NaN through max/min
                    for j in range(n):
                        fd[j] = fa[j] if (isnan(fa[j]) or fa[j] > fb[j]) else fb[j]
                elif op == OP_MIN:
                    for j in range(n):
                        fd[j] = fa[j] if (isnan(fa[j]) or fa[j] < fb[j]) else fb[j]
                elif op == OP_POW:
                    for j in range(n):
                        fd[j] = round_f(pow(fa[j], fb[j]), dtd)
                elif op == OP_ATAN2:
                    for j in range(n):
                        fd[j] = round_f(atan2(fa[j], fb[j]), dtd)
            else:
                int_binary(op, dtd, id_, ia, ib, n)
        elif op < OP_SELECT:
            # ---- compare: operands of type dts, result pred
            if sflt:
                float_compare(op, id_, fa, fb, n)
            else:
                int_compare(op, dts, id_, ia, ib, n)
        elif op == OP_SELECT:
            if flt:
                for j in range(n):
                    fd[j] = fb[j] if ia[j] else fc[j]
            else:
                for j in range(n):
                    id_[j] = ib[j] if ia[j] else ic[j]
        elif op == OP_CLAMP:
            # clamp(lo=a, x=b, hi=c)
            if flt:
                float_clamp(fd, fa, fb, fc, n)
            else:
                int_clamp(dtd, id_, ia, ib, ic, n)

# ---- the f32 interpreter: programs whose float values are all f32 (see f32_program) keep them as floats.
# It computes what run_program computes, bit for bit: a sum, difference, product or quotient of two f32 values
# rounded once to f32 equals the double result rounded to f32 (double has more than 2 * 24 + 2 bits), other
# functions (exp, rsqrt, pow, ...) are evaluated in double and rounded as there, and a load quiets a signalling
# NaN as run_program's widening to double does.
DEF FBLOCK = 1024

cdef inline uint32_t quiet_bits(uint32_t u) noexcept nogil:
    # float -> double -> float of the bits u: a NaN gets its quiet bit, every other value is unchanged
    return u | ((<uint32_t>(<int32_t>(u & 0x7fffffff) > <int32_t>0x7f800000)) << 22)


cdef inline float quiet_f(float x) noexcept nogil:
    cdef uint32_t u
    memcpy(&u, &x, 4)
    u = quiet_bits(u)
    memcpy(&x, &u, 4)
    return x


cdef inline void load_f32(float* gd, const uint8_t* p, Py_ssize_t n, int64_t step) noexcept nogil:
    cdef Py_ssize_t j
    cdef uint32_t* ud = <uint32_t*>gd
    cdef const uint32_t* up = <const uint32_t*>p
    cdef float v
    if step == 4:
        for j in range(n):
            ud[j] = quiet_bits(up[j])
    elif step == 0:
        v = quiet_f((<const float*>p)[0])
        for j in range(n):
            gd[j] = v
    else:
        for j in range(n):
            gd[j] = quiet_f((<const float*>(p + j * step))[0])


cdef inline void load_int(int64_t* id_, const uint8_t* p, Py_ssize_t n, int64_t step, int dt) noexcept nogil:
    cdef Py_ssize_t j
    cdef int64_t v
    if step == 0:
        v = load_i(p, dt)
        for j in range(n):
            id_[j] = v
    elif dt == DT_S32 and step == 4:
        for j in range(n):
            id_[j] = (<const int32_t*>p)[j]
    elif (dt == DT_PRED or dt == DT_U8) and step == 1:
        for j in range(n):
            id_[j] = p[j]
    else:
        for j in range(n):
            id_[j] = load_i(p + j * step, dt)


cdef void load_broadcast_f32(float* gd, const uint8_t* p, Py_ssize_t n, int64_t inner, int64_t pos,
                             int64_t m) noexcept nogil:
    """load_broadcast for an f32 vector into a float slot."""
    cdef int64_t g = (pos // inner) % m
    cdef int64_t r = pos % inner
    cdef int64_t j = 0, run, t
    cdef const float* fp = <const float*>p
    cdef float fv
    while j < n:
        run = (m - g) if inner == 1 else (inner - r)
        if run > n - j:
            run = n - j
        if inner == 1:
            load_f32(gd + j, <const uint8_t*>(fp + g), run, 4)
            g = 0
        else:
            fv = quiet_f(fp[g])
            for t in range(run):
                gd[j + t] = fv
            r = 0
            g = g + 1
            if g == m:
                g = 0
        j = j + run


cdef bint f32_program(const int64_t[:, ::1] code, const double[::1] fconst, int out_dt):
    """Whether the f32 interpreter runs this program: no f16 or f64 values, and every float constant an f32 number
    (run_program keeps a constant as the double it is given)."""
    cdef Py_ssize_t pc
    cdef double c
    cdef float f
    cdef uint64_t u, w
    if out_dt == DT_F16 or out_dt == DT_F64:
        return False
    for pc in range(code.shape[0]):
        if code[pc, 5] == DT_F16 or code[pc, 5] == DT_F64 or code[pc, 6] == DT_F16 or code[pc, 6] == DT_F64:
            return False
        if code[pc, 0] == OP_CONST and code[pc, 5] == DT_F32:
            if code[pc, 2] < 0 or code[pc, 2] >= fconst.shape[0]:
                return False
            c = fconst[code[pc, 2]]
            f = <float>c
            u = 0
            memcpy(&u, &c, 8)
            c = f
            memcpy(&w, &c, 8)
            if u != w:
                return False
    return True


cdef struct Segments:
    # the pieces of vertices one block of the f32 interpreter evaluates, one after another: piece k is elements
    # start[k] .. start[k] + cnt[k] of vertex vtx[k], for k in first .. last - 1
    const int64_t* vtx
    const int64_t* start
    const int64_t* cnt
    Py_ssize_t first, last
    # run_expression's arguments, as pointers: records (ncol columns), per input its element size, scalar flag,
    # broadcast inner length (> 0: broadcast mode) and record column
    const int64_t* rec
    Py_ssize_t ncol
    const int64_t* isz
    const int64_t* scalar
    const int64_t* b_inner
    const int64_t* b_col
    const uint8_t* base


cdef void load_segments(const Segments* sg, int a, int dtd, float* gd, int64_t* id_) noexcept nogil:
    """LOAD of input a for every piece of the block, into consecutive elements of the slot."""
    cdef Py_ssize_t k, off = 0
    cdef const int64_t* r
    cdef const uint8_t* p
    cdef int64_t s, c, step
    for k in range(sg.first, sg.last):
        r = sg.rec + sg.vtx[k] * sg.ncol
        s = sg.start[k]
        c = sg.cnt[k]
        p = sg.base + r[2 + a]
        if sg.b_inner[a] > 0:
            if dtd == DT_F32:
                load_broadcast_f32(gd + off, p, c, sg.b_inner[a], r[sg.b_col[a]] + s, r[sg.b_col[a] + 1])
            else:
                load_broadcast(NULL, id_ + off, p, <int>c, dtd, sg.b_inner[a], r[sg.b_col[a]] + s, r[sg.b_col[a] + 1])
        else:
            step = 0 if sg.scalar[a] else sg.isz[a]
            if dtd == DT_F32:
                load_f32(gd + off, p + s * step, c, step)
            else:
                load_int(id_ + off, p + s * step, c, step, dtd)
        off = off + c


cdef void run_program_f32(const int64_t[:, ::1] code, float* G, int64_t* I, Py_ssize_t n, const Segments* sg,
                          const double[::1] fconst, const int64_t[::1] iconst) noexcept nogil:
    """run_program for an f32 program over the n (<= FBLOCK) elements of the pieces sg: float slots G, integer
    slots I. Small vertices share a block, so the per-op work is not repeated for every few elements."""
    cdef Py_ssize_t pc, j
    cdef int op, dst, a, b, c, dtd, dts
    cdef float* gd
    cdef float* ga
    cdef float* gb
    cdef float* gc
    cdef int64_t* id_
    cdef int64_t* ia
    cdef int64_t* ib
    cdef int64_t* ic
    cdef int64_t step
    cdef bint flt, sflt
    cdef float x, y, fv
    cdef uint32_t u32
    cdef int64_t iv
    for pc in range(code.shape[0]):
        op = <int>code[pc, 0]
        dst = <int>code[pc, 1]
        a = <int>code[pc, 2]
        b = <int>code[pc, 3]
        c = <int>code[pc, 4]
        dtd = <int>code[pc, 5]
        dts = <int>code[pc, 6]
        flt = dtd == DT_F32
        sflt = dts == DT_F32
        gd = G + dst * FBLOCK
        id_ = I + dst * FBLOCK
        ga = G + a * FBLOCK
        ia = I + a * FBLOCK
        gb = G + b * FBLOCK
        ib = I + b * FBLOCK
        gc = G + c * FBLOCK
        ic = I + c * FBLOCK
        if op == OP_LOAD:
            load_segments(sg, a, dtd, gd, id_)
        elif op == OP_CONST:
            if flt:
                fv = <float>fconst[a]
                for j in range(n):
                    gd[j] = fv
            else:
                iv = iconst[a]
                for j in range(n):
                    id_[j] = iv
        elif op == OP_COPY:
            memcpy(gd, ga, n * sizeof(float))
            memcpy(id_, ia, n * sizeof(int64_t))
        elif op == OP_CONVERT:
            if flt and sflt:
                memcpy(gd, ga, n * sizeof(float))
            elif flt:
                if dts == DT_U64:
                    for j in range(n):
                        gd[j] = <float>(<double>(<uint64_t>ia[j]))
                else:
                    for j in range(n):
                        gd[j] = <float>(<double>ia[j])
            elif sflt:
                for j in range(n):
                    id_[j] = float_to_int(<double>ga[j], dtd)
            else:
                for j in range(n):
                    id_[j] = wrap_i(ia[j], dtd) if dtd != DT_PRED else (1 if ia[j] != 0 else 0)
        elif op == OP_BITCAST:
            if flt and not sflt:
                for j in range(n):
                    (<uint32_t*>gd)[j] = quiet_bits(<uint32_t>ia[j])
            elif sflt and not flt:
                for j in range(n):
                    id_[j] = wrap_i(<int64_t>(<const uint32_t*>ga)[j], dtd)
            else:
                memcpy(gd, ga, n * sizeof(float))
                memcpy(id_, ia, n * sizeof(int64_t))
        elif op < OP_ADD:
            # ---- unary
            if flt:
                if op == OP_NEG:
                    for j in range(n):
                        gd[j] = -ga[j]
                elif op == OP_ABS:
                    for j in range(n):
                        (<uint32_t*>gd)[j] = (<const uint32_t*>ga)[j] & 0x7fffffff
                elif op == OP_EXP:
                    for j in range(n):
                        gd[j] = <float>exp(<double>ga[j])
                elif op == OP_EXPM1:
                    for j in range(n):
                        gd[j] = <float>expm1(<double>ga[j])
                elif op == OP_LOG:
                    for j in range(n):
                        gd[j] = <float>log(<double>ga[j])
                elif op == OP_LOG1P:
                    for j in range(n):
                        gd[j] = <float>log1p(<double>ga[j])
                elif op == OP_LOGISTIC:
                    for j in range(n):
                        gd[j] = <float>(1.0 / (1.0 + exp(-(<double>ga[j]))))
                elif op == OP_TANH:
                    for j in range(n):
                        gd[j] = <float>tanh(<double>ga[j])
                elif op == OP_SQRT:
                    for j in range(n):
                        gd[j] = <float>sqrt(<double>ga[j])
                elif op == OP_RSQRT:
                    for j in range(n):
                        gd[j] = <float>(1.0 / sqrt(<double>ga[j]))
                elif op == OP_CBRT:
                    for j in range(n):
                        gd[j] = <float>cbrt(<double>ga[j])
                elif op == OP_SIN:
                    for j in range(n):
                        gd[j] = <float>sin(<double>ga[j])
                elif op == OP_COS:
                    for j in range(n):
                        gd[j] = <float>cos(<double>ga[j])
                elif op == OP_TAN:
                    for j in range(n):
                        gd[j] = <float>tan(<double>ga[j])
                elif op == OP_FLOOR:
                    for j in range(n):
                        gd[j] = <float>floor(<double>ga[j])
                elif op == OP_CEIL:
                    for j in range(n):
                        gd[j] = <float>ceil(<double>ga[j])
                elif op == OP_ROUND_AFZ:
                    for j in range(n):
                        gd[j] = <float>round(<double>ga[j])
                elif op == OP_ROUND_EVEN:
                    for j in range(n):
                        gd[j] = <float>nearbyint(<double>ga[j])
                elif op == OP_SIGN:
                    for j in range(n):
                        x = ga[j]
                        gd[j] = x if (isnan(x) or x == 0.0) else <float>copysign(1.0, <double>x)
                elif op == OP_ERF:
                    for j in range(n):
                        gd[j] = <float>erf(<double>ga[j])
            elif op == OP_ISFINITE:
                for j in range(n):
                    id_[j] = 1 if isfinite(ga[j]) else 0
            else:
                int_unary(op, dtd, id_, ia, n)
        elif op < OP_EQ:
            # ---- binary
            if flt:
                if op == OP_ADD:
                    for j in range(n):
                        gd[j] = ga[j] + gb[j]
                elif op == OP_SUB:
                    for j in range(n):
                        gd[j] = ga[j] - gb[j]
                elif op == OP_MUL:
                    for j in range(n):
                        gd[j] = ga[j] * gb[j]
                elif op == OP_DIV:
                    for j in range(n):
                        gd[j] = ga[j] / gb[j]
                elif op == OP_REM:
                    for j in range(n):
                        gd[j] = <float>fmod(<double>ga[j], <double>gb[j])
                elif op == OP_MAX:
                    # XLA propagates NaN through max/min
                    for j in range(n):
                        x = ga[j]
                        y = gb[j]
                        gd[j] = x if ((x != x) | (x > y)) else y
                elif op == OP_MIN:
                    for j in range(n):
                        x = ga[j]
                        y = gb[j]
                        gd[j] = x if ((x != x) | (x < y)) else y
                elif op == OP_POW:
                    for j in range(n):
                        gd[j] = <float>pow(<double>ga[j], <double>gb[j])
                elif op == OP_ATAN2:
                    for j in range(n):
                        gd[j] = <float>atan2(<double>ga[j], <double>gb[j])
            else:
                int_binary(op, dtd, id_, ia, ib, n)
        elif op < OP_SELECT:
            # ---- compare: operands of type dts, result pred
            if sflt:
                float_compare(op, id_, ga, gb, n)
            else:
                int_compare(op, dts, id_, ia, ib, n)
        elif op == OP_SELECT:
            if flt:
                # a bit mask from the 64-bit condition, so the loop vectorizes without 64-bit compares
                for j in range(n):
                    u32 = <uint32_t>0 - <uint32_t>((<uint32_t>ia[j] | <uint32_t>(<uint64_t>ia[j] >> 32)) != 0)
                    (<uint32_t*>gd)[j] = ((<const uint32_t*>gb)[j] & u32) | ((<const uint32_t*>gc)[j] & ~u32)
            else:
                for j in range(n):
                    iv = ib[j]
                    step = ic[j]
                    id_[j] = iv if ia[j] else step
        elif op == OP_CLAMP:
            # clamp(lo=a, x=b, hi=c)
            if flt:
                float_clamp(gd, ga, gb, gc, n)
            else:
                int_clamp(dtd, id_, ia, ib, ic, n)

cdef inline int64_t icompare(int64_t x, int64_t y, int op) noexcept nogil:
    if op == OP_EQ:
        return x == y
    if op == OP_NE:
        return x != y
    if op == OP_LT:
        return x < y
    if op == OP_LE:
        return x <= y
    if op == OP_GT:
        return x > y
    return x >= y


cdef inline int64_t ucompare(uint64_t x, uint64_t y, int op) noexcept nogil:
    if op == OP_EQ:
        return x == y
    if op == OP_NE:
        return x != y
    if op == OP_LT:
        return x < y
    if op == OP_LE:
        return x <= y
    if op == OP_GT:
        return x > y
    return x >= y


cdef inline int64_t ipow(int64_t base, int64_t e, int dt) noexcept nogil:
    # XLA integer power: negative exponents give 0 (or 1 for base 1, +-1 for base -1)
    cdef int64_t r = 1
    if e < 0:
        if base == 1:
            return 1
        if base == -1:
            return 1 if (e % 2 == 0) else -1
        return 0
    while e > 0:
        if e & 1:
            r = <int64_t>(<uint64_t>r * <uint64_t>base)
        base = <int64_t>(<uint64_t>base * <uint64_t>base)
        e >>= 1
    return wrap_i(r, dt)


def run_expression(uint8_t[::1] mem, const int64_t[:, ::1] records, const int64_t[:, ::1] code,
                   const int32_t[::1] in_dt, const int64_t[::1] in_scalar, int out_dt, int out_slot,
                   int nslots, const double[::1] fconst, const int64_t[::1] iconst, in_bcast=None, bint generic=False):
    """Run one compute set of expression vertices.

    records[v] = [n, out_addr, in_addr_0, ..., in_addr_k, ...]: vertex v evaluates ``n`` elements; addresses are
    absolute byte addresses in ``mem`` (tile base + offset). ``in_scalar[i]`` is 1 when input i is a single
    element used for every output element. ``in_bcast`` (int64 [inputs, 2], optional): row i = (inner, col) puts
    input i in broadcast mode when inner > 0: the vertex's element k is element ((q + k) // inner) % M of the
    vector at in_addr_i, with q = records[v, col] and M = records[v, col + 1]. Vertices write disjoint outputs, so
    they run in parallel. A program whose float values are all f32 runs on the f32 interpreter (run_program_f32,
    same results); ``generic`` forces the generic one, for tests.
    """
    cdef Py_ssize_t nv = records.shape[0], nin = in_dt.shape[0]
    cdef Py_ssize_t v, i, start, cnt
    cdef double* F
    cdef int64_t* I
    cdef const uint8_t** ptrs
    cdef int64_t* steps
    cdef int64_t* bpos
    cdef int64_t* bmod
    cdef int64_t[::1] binner = np.zeros(nin + 1, np.int64)
    cdef int64_t[::1] bcol = np.zeros(nin + 1, np.int64)
    cdef bint any_bcast = False
    cdef uint8_t* base = &mem[0]
    cdef uint8_t* out
    cdef int osz = elem_bytes(out_dt)
    cdef Py_ssize_t j
    cdef int64_t isz
    cdef int64_t work = 0
    cdef int nt
    if nv == 0:
        return
    if in_bcast is not None:
        bc = np.asarray(in_bcast, np.int64).reshape(-1, 2)
        if bc.shape[0] != nin:
            raise ValueError(f"in_bcast has {bc.shape[0]} rows for {nin} inputs")
        for i in range(nin):
            if bc[i, 0] > 0:
                if bc[i, 1] < 2 + nin or bc[i, 1] + 1 >= records.shape[1] or in_scalar[i]:
                    raise ValueError(f"broadcast input {i}: bad record columns {bc[i, 1]}")
                binner[i] = bc[i, 0]
                bcol[i] = bc[i, 1]
                any_bcast = True
    for v in range(nv):
        work += records[v, 0] * (code.shape[0] + 1)
    nt = host_threads(work)
    if not generic and f32_program(code, fconst, out_dt):
        run_f32(mem, records, code, in_dt, in_scalar, out_dt, out_slot, nslots, fconst, iconst, binner, bcol, nt)
        return
    with nogil, parallel(num_threads=nt):
        F = <double*>malloc(sizeof(double) * BLOCK * nslots)
        I = <int64_t*>malloc(sizeof(int64_t) * BLOCK * nslots)
        ptrs = <const uint8_t**>malloc(sizeof(uint8_t*) * (nin + 1))
        steps = <int64_t*>malloc(sizeof(int64_t) * (nin + 1))
        bpos = <int64_t*>malloc(sizeof(int64_t) * (nin + 1))
        bmod = <int64_t*>malloc(sizeof(int64_t) * (nin + 1))
        for v in prange(nv, schedule='dynamic'):
            start = 0
            while start < records[v, 0]:
                cnt = records[v, 0] - start
                if cnt > BLOCK:
                    cnt = BLOCK
                for i in range(nin):
                    isz = elem_bytes(in_dt[i])
                    if binner[i] > 0:
                        steps[i] = 0
                        ptrs[i] = base + records[v, 2 + i]
                        bpos[i] = records[v, bcol[i]] + start
                        bmod[i] = records[v, bcol[i] + 1]
                    else:
                        steps[i] = 0 if in_scalar[i] else isz
                        ptrs[i] = base + records[v, 2 + i] + (0 if in_scalar[i] else start * isz)
                if any_bcast:
                    run_program(code, F, I, <int>cnt, ptrs, steps, &in_dt[0], fconst, iconst, &binner[0], bpos, bmod)
                else:
                    run_program(code, F, I, <int>cnt, ptrs, steps, &in_dt[0], fconst, iconst)
                out = base + records[v, 1] + start * osz
                if is_float(out_dt):
                    if out_dt == DT_F32:
                        for j in range(cnt):
                            (<float*>out)[j] = <float>F[out_slot * BLOCK + j]
                    else:
                        for j in range(cnt):
                            store_f(out + j * osz, out_dt, F[out_slot * BLOCK + j])
                else:
                    store_ints(out, out_dt, I + out_slot * BLOCK, cnt)
                start = start + cnt
        free(F)
        free(I)
        free(ptrs)
        free(steps)
        free(bpos)
        free(bmod)


cdef void run_f32(uint8_t[::1] mem, const int64_t[:, ::1] records, const int64_t[:, ::1] code,
                  const int32_t[::1] in_dt, const int64_t[::1] in_scalar, int out_dt, int out_slot, int nslots,
                  const double[::1] fconst, const int64_t[::1] iconst, int64_t[::1] binner, int64_t[::1] bcol,
                  int nt):
    """run_expression of an f32 program: the vertices' elements are cut into blocks of FBLOCK (a block holds pieces
    of consecutive vertices, or part of a long one), and the blocks run in parallel."""
    cdef Py_ssize_t nv = records.shape[0], nin = in_dt.shape[0]
    cdef Py_ssize_t v, i, b, nb = 0, nseg = 0, fill = 0, total = 0
    cdef int64_t s, n, take
    for v in range(nv):
        total += records[v, 0]
    # at most one piece per vertex plus one per block boundary
    cdef int64_t[::1] seg = np.empty(3 * (nv + total // FBLOCK + 2), np.int64)
    cdef int64_t[::1] first = np.empty(nv + total // FBLOCK + 3, np.int64)
    cdef int64_t[::1] isz = np.empty(nin + 1, np.int64)
    cdef int64_t[::1] scalar = np.zeros(nin + 1, np.int64)
    cdef Py_ssize_t npieces = nv + total // FBLOCK + 2
    cdef Segments sg
    cdef float* G
    cdef int64_t* I
    for i in range(nin):
        isz[i] = elem_bytes(in_dt[i])
        scalar[i] = in_scalar[i]
    first[0] = 0
    for v in range(nv):
        n = records[v, 0]
        s = 0
        while s < n:
            take = min(n - s, FBLOCK - fill)
            seg[nseg] = v
            seg[npieces + nseg] = s
            seg[2 * npieces + nseg] = take
            nseg += 1
            fill += take
            s += take
            if fill == FBLOCK:
                nb += 1
                first[nb] = nseg
                fill = 0
    if fill > 0:
        nb += 1
        first[nb] = nseg
    if nb == 0:
        return
    sg.vtx = &seg[0]
    sg.start = &seg[npieces]
    sg.cnt = &seg[2 * npieces]
    sg.rec = &records[0, 0]
    sg.ncol = records.shape[1]
    sg.isz = &isz[0]
    sg.scalar = &scalar[0]
    sg.b_inner = &binner[0]
    sg.b_col = &bcol[0]
    sg.base = &mem[0]
    with nogil, parallel(num_threads=nt):
        G = <float*>malloc(sizeof(float) * FBLOCK * nslots)
        I = <int64_t*>malloc(sizeof(int64_t) * FBLOCK * nslots)
        for b in prange(nb, schedule='dynamic'):
            run_f32_block(&sg, first[b], first[b + 1], code, G, I, fconst, iconst, out_dt, out_slot)
        free(G)
        free(I)


cdef void run_f32_block(const Segments* shared, Py_ssize_t first, Py_ssize_t last, const int64_t[:, ::1] code,
                        float* G, int64_t* I, const double[::1] fconst, const int64_t[::1] iconst, int out_dt,
                        int out_slot) noexcept nogil:
    """One block of run_f32: pieces first .. last - 1, evaluated and stored."""
    cdef Segments sg = shared[0]
    cdef Py_ssize_t k, n = 0, off = 0
    cdef uint8_t* out
    cdef int osz = elem_bytes(out_dt)
    sg.first = first
    sg.last = last
    for k in range(first, last):
        n = n + sg.cnt[k]
    run_program_f32(code, G, I, n, &sg, fconst, iconst)
    for k in range(first, last):
        out = <uint8_t*>sg.base + sg.rec[sg.vtx[k] * sg.ncol + 1] + sg.start[k] * osz
        if out_dt == DT_F32:
            memcpy(out, G + out_slot * FBLOCK + off, sg.cnt[k] * 4)
        else:
            store_ints(out, out_dt, I + out_slot * FBLOCK + off, sg.cnt[k])
        off = off + sg.cnt[k]


cdef void store_ints(uint8_t* out, int dt, const int64_t* src, Py_ssize_t n) noexcept nogil:
    """store_i of n elements, with the common types as plain loops."""
    cdef Py_ssize_t j
    cdef int osz = elem_bytes(dt)
    if dt == DT_S32 or dt == DT_U32:
        for j in range(n):
            (<int32_t*>out)[j] = <int32_t>src[j]
    elif dt == DT_PRED:
        for j in range(n):
            out[j] = 1 if src[j] != 0 else 0
    else:
        for j in range(n):
            store_i(out + j * osz, dt, src[j])


def run_reduce_expression(uint8_t[::1] mem, const int64_t[:, ::1] records, const int64_t[:, ::1] code,
                          const int32_t[::1] in_dt, const int64_t[::1] out_slots, int nacc, int nslots,
                          const double[::1] fconst, const int64_t[::1] iconst):
    """Reduce rows with any reducer computation (variadic: ``nacc`` accumulators and as many inputs).

    The reducer program's inputs are (acc_0..acc_{n-1}, x_0..x_{n-1}) and its outputs the new accumulators,
    as XLA defines reduce. Rows are evaluated BLOCK at a time, one element position after another.
    records[v] = [rows, row_len, row_stride, elem_stride, out_addr * n, in_addr * n, init_addr * n]
    (init_addr -1: start from each row's first element). Element types: in_dt[0:n] accumulators (= outputs),
    in_dt[n:2n] inputs.
    """
    cdef Py_ssize_t nv = records.shape[0], v, i, j, k, r0, cnt, k0
    cdef int n = nacc
    cdef double* F
    cdef int64_t* I
    cdef const uint8_t** ptrs
    cdef int64_t* steps
    cdef uint8_t* acc
    cdef uint8_t* base = &mem[0]
    cdef int64_t rows, row_len, rstride, estride, init_addr
    cdef int dt, isz, total_acc_bytes, slot
    cdef int64_t work = 0
    cdef int nt
    if nv == 0:
        return
    for v in range(nv):
        work += records[v, 0] * records[v, 1] * (code.shape[0] + 1)
    nt = host_threads(work)
    with nogil, parallel(num_threads=nt):
        F = <double*>malloc(sizeof(double) * BLOCK * nslots)
        I = <int64_t*>malloc(sizeof(int64_t) * BLOCK * nslots)
        ptrs = <const uint8_t**>malloc(sizeof(uint8_t*) * (2 * n + 1))
        steps = <int64_t*>malloc(sizeof(int64_t) * (2 * n + 1))
        acc = <uint8_t*>malloc(8 * BLOCK * n)
        for v in prange(nv, schedule='dynamic'):
            rows = records[v, 0]
            row_len = records[v, 1]
            rstride = records[v, 2]
            estride = records[v, 3]
            r0 = 0
            while r0 < rows:
                cnt = rows - r0
                if cnt > BLOCK:
                    cnt = BLOCK
                # accumulators start from the init values or from each row's first element
                k0 = 0 if records[v, 4 + 2 * n] >= 0 else 1
                for i in range(n):
                    dt = in_dt[i]
                    isz = elem_bytes(dt)
                    init_addr = records[v, 4 + 2 * n + i]
                    for j in range(cnt):
                        if init_addr >= 0:
                            memcpy(acc + (i * BLOCK + j) * 8, base + init_addr, isz)
                        else:
                            memcpy(acc + (i * BLOCK + j) * 8,
                                   base + records[v, 4 + n + i] + ((r0 + j) * rstride) * elem_bytes(in_dt[n + i]), isz)
                for k in range(k0, row_len):
                    for i in range(n):
                        ptrs[i] = acc + i * BLOCK * 8
                        steps[i] = 8
                        isz = elem_bytes(in_dt[n + i])
                        ptrs[n + i] = base + records[v, 4 + n + i] + (r0 * rstride + k * estride) * isz
                        steps[n + i] = rstride * isz
                    run_program(code, F, I, <int>cnt, ptrs, steps, &in_dt[0], fconst, iconst)
                    for i in range(n):
                        slot = <int>out_slots[i]
                        dt = in_dt[i]
                        for j in range(cnt):
                            if is_float(dt):
                                store_f(acc + (i * BLOCK + j) * 8, dt, F[slot * BLOCK + j])
                            else:
                                store_i(acc + (i * BLOCK + j) * 8, dt, I[slot * BLOCK + j])
                for i in range(n):
                    isz = elem_bytes(in_dt[i])
                    for j in range(cnt):
                        memcpy(base + records[v, 4 + i] + (r0 + j) * isz, acc + (i * BLOCK + j) * 8, isz)
                r0 = r0 + cnt
        free(F)
        free(I)
        free(ptrs)
        free(steps)
        free(acc)
