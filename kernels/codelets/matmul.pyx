"""Matrix-multiply codelet (the tile's accumulating matrix product unit).

Each vertex multiplies row-major blocks held in its own tile's memory: C[M,N] = A[M,K] @ B[K,N].
f32 and f64 go through SciPy's BLAS (one BLAS thread per host core, vertices in parallel); f16 operands are
widened to f32 and accumulated in f32, as the AMP does with FP32 partials; integers accumulate in int64.
"""
from cython.parallel cimport prange, parallel
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset
from libc.stdint cimport int64_t, uint8_t, int32_t
from scipy.linalg.cython_blas cimport sgemm, dgemm
from ._common cimport *


ctypedef fused floating:
    float
    double


cdef void gemm(const floating* A, const floating* B, floating* C, int M, int N, int K, bint ta,
               bint tb) noexcept nogil:
    """Row-major C[M,N] = A @ B with A stored [M,K] (or [K,M] when ta) and B [K,N] (or [N,K] when tb)."""
    cdef char opa = b'T' if ta else b'N'
    cdef char opb = b'T' if tb else b'N'
    cdef int lda = M if ta else K
    cdef int ldb = K if tb else N
    cdef floating one = 1.0, zero = 0.0
    if M == 0 or N == 0:
        return
    if K == 0:
        for i in range(M * N):
            C[i] = 0.0
        return
    # row-major C = A B  is column-major C^T = B^T A^T
    if floating is float:
        sgemm(&opb, &opa, &N, &M, &K, &one, <float*>B, &ldb, <float*>A, &lda, &zero, C, &N)
    else:
        dgemm(&opb, &opa, &N, &M, &K, &one, <double*>B, &ldb, <double*>A, &lda, &zero, C, &N)


cdef void gemm_generic(const uint8_t* A, const uint8_t* B, uint8_t* C, int M, int N, int K,
                       int in_dt, int out_dt, bint ta, bint tb) noexcept nogil:
    # widen any element type to float (f16) or int64 (integers), accumulate, store in out_dt
    cdef float* fa
    cdef float* fb
    cdef float* fc
    cdef Py_ssize_t i, j, k
    cdef int isz = elem_bytes(in_dt), osz = elem_bytes(out_dt)
    cdef int64_t acc
    if is_float(in_dt):
        fa = <float*>malloc(sizeof(float) * (M * K + K * N + M * N + 1))
        fb = fa + M * K
        fc = fb + K * N
        for i in range(M * K):
            fa[i] = <float>load_f(A + i * isz, in_dt)
        for i in range(K * N):
            fb[i] = <float>load_f(B + i * isz, in_dt)
        gemm(fa, fb, fc, M, N, K, ta, tb)
        for i in range(M * N):
            store_f(C + i * osz, out_dt, fc[i])
        free(fa)
    else:
        for i in range(M):
            for j in range(N):
                acc = 0
                for k in range(K):
                    acc = acc + (load_i(A + ((k * M + i) if ta else (i * K + k)) * isz, in_dt)
                                 * load_i(B + ((j * K + k) if tb else (k * N + j)) * isz, in_dt))
                store_i(C + (i * N + j) * osz, out_dt, wrap_i(acc, out_dt))


def run_matmul(uint8_t[::1] mem, const int64_t[:, ::1] records, int in_dt, int out_dt, bint ta=False,
               bint tb=False):
    """records[v] = [a_addr, b_addr, c_addr, M, N, K] (absolute byte addresses, row-major blocks).

    ``ta``: A blocks are stored [K, M]; ``tb``: B blocks are stored [N, K] (whichever keeps the exchange that
    fills them in long runs); the AMP reads either order.
    """
    cdef Py_ssize_t nv = records.shape[0], v
    cdef uint8_t* base = &mem[0]
    cdef int nt
    if nv == 0:
        return
    nt = _threads(records)
    for v in prange(nv, nogil=True, schedule='dynamic', num_threads=nt):
        gemm_any(base + records[v, 0], base + records[v, 1], base + records[v, 2], <int>records[v, 3],
                 <int>records[v, 4], <int>records[v, 5], in_dt, out_dt, ta, tb)


cdef int _threads(const int64_t[:, ::1] records):
    """Host threads for vertices whose records hold M, N, K in columns 3-5."""
    cdef int64_t work = 0
    cdef Py_ssize_t v
    for v in range(records.shape[0]):
        work += records[v, 3] * records[v, 4] * records[v, 5]
    return host_threads(work // 16)


cdef void gemm_any(uint8_t* A, uint8_t* B, uint8_t* C, int M, int N, int K, int in_dt, int out_dt, bint ta,
                   bint tb) noexcept nogil:
    """C = A @ B for any element types: BLAS for f32 and f64, widened otherwise."""
    if in_dt == DT_F32 and out_dt == DT_F32:
        gemm(<float*>A, <float*>B, <float*>C, M, N, K, ta, tb)
    elif in_dt == DT_F64 and out_dt == DT_F64:
        gemm(<double*>A, <double*>B, <double*>C, M, N, K, ta, tb)
    else:
        gemm_generic(A, B, C, M, N, K, in_dt, out_dt, ta, tb)


def run_conv(uint8_t[::1] mem, const int64_t[:, ::1] records, int in_dt, int out_dt, bint tb=False):
    """Convolution vertices: the AMP reading its patches straight from an input box on the tile.

    records[v] = [box_addr, b_addr, c_addr, M, N, K, worklist_addr, box_elems]: the worklist holds int32
    moff[M] then koff[K]; patch entry (m, k) is box element moff[m] + koff[k] (zero where either is -1), and
    C[M, N] = patches @ B (B stored [K, N], or [N, K] when ``tb``). A worklist that reads outside its box is
    refused.
    """
    cdef Py_ssize_t nv = records.shape[0], v
    cdef uint8_t* base = &mem[0]
    cdef int nt, bad = 0
    if nv == 0:
        return
    nt = _threads(records)
    for v in prange(nv, nogil=True, schedule='dynamic', num_threads=nt):
        if conv_vertex(base, records[v, 0], records[v, 1], records[v, 2], <int>records[v, 3], <int>records[v, 4],
                       <int>records[v, 5], records[v, 6], records[v, 7], in_dt, out_dt, tb) != 0:
            bad = bad + 1
    if bad:
        raise ValueError(f"{bad} convolution vertices have worklists that read outside their input box")


cdef int conv_vertex(uint8_t* base, int64_t box_addr, int64_t b_addr, int64_t c_addr, int M, int N, int K,
                     int64_t wl_addr, int64_t box_elems, int in_dt, int out_dt, bint tb) noexcept nogil:
    cdef const int32_t* moff = <const int32_t*>(base + wl_addr)
    cdef const int32_t* koff = moff + M
    cdef const uint8_t* box = base + box_addr
    cdef int isz = elem_bytes(in_dt)
    cdef int m, k, r, nruns = 0
    cdef int64_t mmax = -1, kmax = -1
    cdef int* run_k
    cdef int* run_len
    cdef uint8_t* A
    for m in range(M):
        if moff[m] > mmax:
            mmax = moff[m]
    for k in range(K):
        if koff[k] > kmax:
            kmax = koff[k]
    if mmax + kmax >= box_elems:
        return 1
    # the columns as runs of consecutive box offsets (a run of -1 columns reads zeros)
    run_k = <int*>malloc(sizeof(int) * 2 * (K + 1))
    run_len = run_k + K + 1
    k = 0
    while k < K:
        r = 1
        if koff[k] >= 0:
            while k + r < K and koff[k + r] == koff[k] + r:
                r = r + 1
        else:
            while k + r < K and koff[k + r] < 0:
                r = r + 1
        run_k[nruns] = k
        run_len[nruns] = r
        nruns = nruns + 1
        k = k + r
    A = <uint8_t*>malloc(<size_t>M * K * isz + 1)
    for m in range(M):
        if moff[m] < 0:
            memset(A + <size_t>m * K * isz, 0, <size_t>K * isz)
            continue
        for r in range(nruns):
            k = run_k[r]
            if koff[k] < 0:
                memset(A + (<size_t>m * K + k) * isz, 0, <size_t>run_len[r] * isz)
            else:
                memcpy(A + (<size_t>m * K + k) * isz, box + (<int64_t>moff[m] + koff[k]) * isz,
                       <size_t>run_len[r] * isz)
    gemm_any(A, base + b_addr, base + c_addr, M, N, K, in_dt, out_dt, False, tb)
    free(A)
    free(run_k)
    return 0
