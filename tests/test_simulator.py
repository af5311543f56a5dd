"""The simulated IPU below the compiler: codelets called directly on hand-built device memories and records,
the f16 conversions, the matmul planner, the memory plan (liveness, always-live constants, out-of-memory
errors), unsupported-op errors and the execution report.

Codelets take a flat ``uint8`` device memory and int64 records of absolute byte addresses; the expected values
are computed with NumPy.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

import tf_ipu
from conftest import get_strategy, tf
from kernels import dtypes
from kernels.codelets import copy as copy_codelets
from kernels.codelets import expr as expr_codelet
from kernels.codelets import matmul as matmul_codelet
from kernels.codelets import reduce as reduce_codelet
from kernels.codelets import rng as rng_codelet
from kernels.device import DEVICES
from kernels.program import plain_copy_rows
from kernels.expr_ops import OPS
from xla_lowering.compiler import CompileOptions, compile_module
from xla_lowering.hlo.ir import Computation, Instruction, Module, Shape
from xla_lowering.mapping.matmul_plan import MEMORY_FRACTION, Contiguity, plan_matmul
from xla_lowering.mapping.memory import plan_memory
from xla_lowering.mapping.tensor import OFFSET_BITS
from xla_lowering.program import ProgramBuilder

C = dtypes.code


# --- a tiny device memory ------------------------------------------------------------------------------
class Memory:
    """A flat device memory with a bump allocator: ``put`` places an array (8-byte aligned), ``get`` reads."""

    def __init__(self, nbytes: int = 1 << 20):
        self.mem = np.zeros(nbytes, np.uint8)
        self.top = 64          # keep address 0 unused: a wrong zero address shows up as wrong data

    def alloc(self, nbytes: int) -> int:
        addr = self.top
        self.top = -(-(self.top + max(nbytes, 1)) // 8) * 8
        assert self.top <= len(self.mem)
        return addr

    def put(self, a) -> int:
        a = np.ascontiguousarray(a)
        addr = self.alloc(a.nbytes)
        self.mem[addr:addr + a.nbytes] = a.reshape(-1).view(np.uint8)
        return addr

    def zeros(self, n: int, dtype) -> int:
        return self.put(np.zeros(n, dtype))

    def get(self, addr: int, n: int, dtype) -> np.ndarray:
        dt = np.dtype(dtype)
        return self.mem[addr:addr + n * dt.itemsize].view(dt).copy()


def _code(*rows) -> np.ndarray:
    """Expression program rows: (op, dst, a, b, c, dst_dtype, src_dtype) with op and dtypes by name."""
    out = [[OPS[op], dst, a, b, c_, C(dd), C(ds)] for op, dst, a, b, c_, dd, ds in rows]
    return np.array(out, np.int64).reshape(-1, 7)


def run_expr(m: Memory, records, code, in_dtypes, out_dtype, out_slot, nslots, in_scalar=None, fconst=(0.0,),
             iconst=(0,)):
    expr_codelet.run_expression(m.mem, np.asarray(records, np.int64).reshape(len(records), -1), code,
                                np.array([C(d) for d in in_dtypes], np.int32),
                                np.array(in_scalar or [0] * len(in_dtypes), np.int64), C(out_dtype), out_slot,
                                nslots, np.array(fconst, np.float64), np.array(iconst, np.int64))


# --- expression codelet ----------------------------------------------------------------------------
def test_expression_f32_program_over_vertices_blocks_and_a_scalar():
    """out = (a * b + s) - 1.5 over three vertices (one longer than a 256-element block, one of 1 element)."""
    rng = np.random.default_rng(0)
    m = Memory()
    counts = [1000, 7, 1]
    a = [rng.standard_normal(n).astype(np.float32) for n in counts]
    b = [rng.standard_normal(n).astype(np.float32) for n in counts]
    s = np.float32(0.25)
    s_addr = m.put(np.array([s]))
    records, outs = [], []
    for x, y in zip(a, b):
        out = m.zeros(len(x), np.float32)
        outs.append(out)
        records.append([len(x), out, m.put(x), m.put(y), s_addr])
    code = _code(("load", 0, 0, 0, 0, "f32", "f32"), ("load", 1, 1, 0, 0, "f32", "f32"),
                 ("load", 2, 2, 0, 0, "f32", "f32"), ("multiply", 3, 0, 1, 0, "f32", "f32"),
                 ("add", 4, 3, 2, 0, "f32", "f32"), ("const", 5, 0, 0, 0, "f32", "f32"),
                 ("subtract", 6, 4, 5, 0, "f32", "f32"))
    run_expr(m, records, code, ["f32", "f32", "f32"], "f32", 6, 7, in_scalar=[0, 0, 1], fconst=(1.5,))
    for x, y, out in zip(a, b, outs):
        want = (x * y + s) - np.float32(1.5)         # f32 arithmetic, rounded after every op
        np.testing.assert_array_equal(m.get(out, len(x), np.float32), want)


def test_expression_integer_semantics():
    """s32 wraps; division by zero and INT_MIN / -1 follow XLA; shifts by >= the bit width give 0 (or the sign)."""
    a = np.array([7, -7, 2**31 - 1, -2**31, -2**31, 5, -1, 12345], np.int32)
    b = np.array([2, 2, 1, -1, 0, 0, 40, 3], np.int32)
    m = Memory()
    pa, pb = m.put(a), m.put(b)
    ops = ["add", "multiply", "divide", "remainder", "shift-left", "shift-right-arithmetic", "shift-right-logical",
           "maximum", "and", "xor"]
    got = {}
    for op in ops:
        out = m.zeros(len(a), np.int32)
        code = _code(("load", 0, 0, 0, 0, "s32", "s32"), ("load", 1, 1, 0, 0, "s32", "s32"),
                     (op, 2, 0, 1, 0, "s32", "s32"))
        run_expr(m, [[len(a), out, pa, pb]], code, ["s32", "s32"], "s32", 2, 3)
        got[op] = m.get(out, len(a), np.int32)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(got["add"], (a.astype(np.int64) + b).astype(np.int32))
        np.testing.assert_array_equal(got["multiply"], (a.astype(np.int64) * b).astype(np.int32))
    a64, b64 = a.astype(np.int64), b.astype(np.int64)
    safe = np.where(b64 == 0, 1, b64)
    quot = np.trunc(a64 / safe).astype(np.int64)
    want_div = np.where(b64 == 0, -1, np.where((a64 == -2**31) & (b64 == -1), -2**31, quot)).astype(np.int32)
    want_rem = np.where(b64 == 0, a64, np.where(b64 == -1, 0, a64 - quot * safe)).astype(np.int32)
    np.testing.assert_array_equal(got["divide"], want_div)
    np.testing.assert_array_equal(got["remainder"], want_rem)
    in_range = (b >= 0) & (b < 32)
    bs = np.where(in_range, b, 0).astype(np.uint32)
    np.testing.assert_array_equal(got["shift-left"], np.where(in_range, (a.view(np.uint32) << bs).view(np.int32), 0))
    np.testing.assert_array_equal(got["shift-right-logical"],
                                  np.where(in_range, (a.view(np.uint32) >> bs).view(np.int32), 0))
    np.testing.assert_array_equal(got["shift-right-arithmetic"], np.where(in_range, a >> bs.astype(np.int32),
                                                                          np.where(a < 0, -1, 0)))
    np.testing.assert_array_equal(got["maximum"], np.maximum(a, b))
    np.testing.assert_array_equal(got["and"], a & b)
    np.testing.assert_array_equal(got["xor"], a ^ b)


def test_expression_compare_select_and_pred_output():
    x = np.array([1.0, np.nan, -2.0, 3.0, 0.0], np.float32)
    y = np.array([1.0, 1.0, 5.0, -3.0, -0.0], np.float32)
    m = Memory()
    px, py = m.put(x), m.put(y)
    pred_out, sel_out = m.zeros(len(x), np.bool_), m.zeros(len(x), np.float32)
    load = [("load", 0, 0, 0, 0, "f32", "f32"), ("load", 1, 1, 0, 0, "f32", "f32")]
    run_expr(m, [[len(x), pred_out, px, py]], _code(*load, ("LE", 2, 0, 1, 0, "pred", "f32")), ["f32", "f32"],
             "pred", 2, 3)
    run_expr(m, [[len(x), sel_out, px, py]],
             _code(*load, ("GT", 2, 0, 1, 0, "pred", "f32"), ("select", 3, 2, 0, 1, "f32", "f32")),
             ["f32", "f32"], "f32", 3, 4)
    np.testing.assert_array_equal(m.get(pred_out, len(x), np.uint8), (x <= y).astype(np.uint8))
    np.testing.assert_array_equal(m.get(sel_out, len(x), np.float32), np.where(x > y, x, y))


def test_expression_f16_arithmetic_rounds_every_op():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(999).astype(np.float16)
    y = rng.standard_normal(999).astype(np.float16)
    m = Memory()
    out = m.zeros(len(x), np.float16)
    code = _code(("load", 0, 0, 0, 0, "f16", "f16"), ("load", 1, 1, 0, 0, "f16", "f16"),
                 ("multiply", 2, 0, 1, 0, "f16", "f16"), ("add", 3, 2, 0, 0, "f16", "f16"))
    run_expr(m, [[len(x), out, m.put(x), m.put(y)]], code, ["f16", "f16"], "f16", 3, 4)
    want = (x * y) + x                    # NumPy rounds f16 products and sums to f16 exactly once each
    np.testing.assert_array_equal(m.get(out, len(x), np.float16).view(np.uint16), want.view(np.uint16))


# --- f16 conversions -------------------------------------------------------------------------------
ALL_HALF_BITS = np.arange(65536, dtype=np.uint32).astype(np.uint16)


def _convert_chain(values: np.ndarray, chain: list[str]) -> np.ndarray:
    """Run load(chain[0]) -> convert to chain[1] -> ... through the expression codelet on one vertex."""
    m = Memory(values.nbytes * 4 + 4096)
    out_dt = chain[-1]
    out = m.zeros(len(values), dtypes.NUMPY[out_dt])
    rows = [("load", 0, 0, 0, 0, chain[0], chain[0])]
    for k in range(1, len(chain)):
        rows.append(("convert", k, k - 1, 0, 0, chain[k], chain[k - 1]))
    run_expr(m, [[len(values), out, m.put(values)]], _code(*rows), [chain[0]], out_dt, len(chain) - 1, len(chain))
    return m.get(out, len(values), dtypes.NUMPY[out_dt])


def _quiet_half(bits: np.ndarray) -> np.ndarray:
    """NaN halves quieted (bit 9 set), as x86's F16C and XLA on the CPU convert them; other values unchanged."""
    nan = ((bits & 0x7C00) == 0x7C00) & ((bits & 0x3FF) != 0)
    return np.where(nan, bits | 0x200, bits).astype(np.uint16)


def test_f16_to_f32_to_f16_round_trip_all_bit_patterns():
    """Every half round-trips bit-exactly as NumPy's conversions do (incl. subnormals, -0, inf and quiet NaNs
    with their payloads); signalling NaNs come back quieted, as they do through XLA on the CPU."""
    halves = ALL_HALF_BITS.view(np.float16)
    got = _convert_chain(halves, ["f16", "f32", "f16"]).view(np.uint16)
    numpy_round_trip = halves.astype(np.float32).astype(np.float16).view(np.uint16)
    np.testing.assert_array_equal(got, _quiet_half(numpy_round_trip))
    quiet_or_number = ~np.isnan(halves) | ((ALL_HALF_BITS & 0x200) != 0)
    np.testing.assert_array_equal(got[quiet_or_number], ALL_HALF_BITS[quiet_or_number])


def test_f16_to_f32_all_bit_patterns():
    halves = ALL_HALF_BITS.view(np.float16)
    got = _convert_chain(halves, ["f16", "f32"]).view(np.uint32)
    want = halves.astype(np.float32).view(np.uint32)
    nan = np.isnan(halves)
    np.testing.assert_array_equal(got[~nan], want[~nan])          # incl. subnormals and -0
    np.testing.assert_array_equal(got[nan], want[nan] | 0x400000)  # NaNs: payload kept, quieted


def test_f32_to_f16_rounding_matches_numpy():
    rng = np.random.default_rng(2)
    random_bits = rng.integers(0, 2**32, 1 << 18, dtype=np.uint64).astype(np.uint32)
    # values near f16's range, its subnormals and exact ties (f32 mantissas ending in 1 followed by zeros)
    near = (rng.standard_normal(1 << 16) * np.exp2(rng.integers(-26, 17, 1 << 16))).astype(np.float32)
    halves = (ALL_HALF_BITS.view(np.float16).astype(np.float32))
    ties = (halves.view(np.uint32) | np.uint32(1 << 12)).view(np.float32)     # exactly half-way to the next
    specials = np.array([65504, 65519.99, 65520, 1e9, 2**-24, 2**-25, 2**-25 * 1.0001, 3 * 2**-26, -0.0],
                        np.float32)
    x = np.concatenate([random_bits.view(np.float32), near, ties[np.isfinite(ties)], specials])
    with np.errstate(over="ignore", invalid="ignore"):
        want = x.astype(np.float16).view(np.uint16)
    got = _convert_chain(x, ["f32", "f16"]).view(np.uint16)
    nan = np.isnan(x)
    bad = np.flatnonzero(got[~nan] != want[~nan])
    xs, gs, ws = x[~nan][bad[:5]], got[~nan][bad[:5]], want[~nan][bad[:5]]
    assert len(bad) == 0, f"{len(bad)} mismatches, e.g. {xs} -> {gs} not {ws}"
    # NaNs keep the sign and the top 10 payload bits and are quieted (XLA on the CPU; NumPy does not quiet)
    xb = x.view(np.uint32)[nan]
    want_nan = ((xb >> 16) & 0x8000) | 0x7C00 | 0x200 | ((xb & 0x7FFFFF) >> 13)
    np.testing.assert_array_equal(got[nan], want_nan.astype(np.uint16))


# --- copy codelets ---------------------------------------------------------------------------------
@pytest.mark.parametrize("nrows", [5, 300])      # below and above the threshold for running rows in parallel
def test_run_copies(nrows):
    rng = np.random.default_rng(nrows)
    mem = rng.integers(0, 256, 1 << 16).astype(np.uint8)
    ref = mem.copy()
    # sources in the first half, disjoint destinations in the second half
    sizes = rng.integers(1, 50, nrows)
    dst = 32768 + np.concatenate([[0], np.cumsum(sizes + 3)[:-1]])
    src = rng.integers(0, 32768 - 50, nrows)
    rows = plain_copy_rows(np.stack([dst, src, sizes], 1).astype(np.int64))
    copy_codelets.run_copies(mem, rows)
    for d, s, n in rows[:, :3]:
        ref[d:d + n] = ref[s:s + n]
    np.testing.assert_array_equal(mem, ref)


def _reference_copies(mem: np.ndarray, rows: np.ndarray) -> None:
    """The meaning of strided copy rows, one run at a time in NumPy."""
    for d, s, n, count, ds, ss in rows:
        for i in range(count):
            mem[d + i * ds:d + i * ds + n] = mem[s + i * ss:s + i * ss + n]


@given(st.data())
def test_strided_copy_rows_match_numpy(data):
    """Strided rows (count runs at destination and source strides, negative or zero source strides too) do what
    the NumPy reference does; the loader accepts them and refuses rows whose runs would overlap."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    mem = rng.integers(0, 256, 1 << 14).astype(np.uint8)
    ref = mem.copy()
    rows, dst = [], 8192
    for _ in range(data.draw(st.integers(1, 12))):
        n = data.draw(st.integers(1, 24))
        count = data.draw(st.integers(1, 9))
        ds = n + data.draw(st.integers(0, 8))
        ss = data.draw(st.sampled_from([0, n, -n, 3 * n, n + 5]))
        first = dst + (count - 1) * ds if data.draw(st.booleans()) else dst     # a negative destination stride
        ds = -ds if first != dst else ds
        src = 2048 + int(rng.integers(0, 2048)) - min(0, (count - 1) * ss)
        rows.append([first, src, n, count, ds, ss])
        dst += count * abs(ds) + 4
    rows = np.array(rows, np.int64)
    copy_codelets.run_copies(mem, rows)
    _reference_copies(ref, rows)
    np.testing.assert_array_equal(mem, ref)
    from kernels.serialize import ExecutableFormatError, _check_copy_rows
    _check_copy_rows(rows, len(mem), "test")
    bad = rows.copy()
    bad[:, 3], bad[:, 4] = 2, bad[:, 2] - 1
    with pytest.raises(ExecutableFormatError, match="overlap"):
        _check_copy_rows(bad, len(mem), "test")


@given(st.data())
def test_copy_runs_builds_rows_that_copy_every_element(data):
    """``copy_runs`` (runs, grouping by block, strided rows) moves exactly the element-wise copy it is given:
    transposes, gathers with repeats, padding from one scalar, elements already in place, several blocks."""
    from xla_lowering.mapping.tensor import copy_runs
    isz = data.draw(st.sampled_from([1, 2, 4, 8]))
    nsrc = data.draw(st.integers(1, 300))
    kind = data.draw(st.sampled_from(["transpose", "gather", "pad", "random"]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    if kind == "transpose":
        r = data.draw(st.integers(1, 20))
        c = max(1, nsrc // r)
        nsrc = r * c
        index = np.arange(nsrc).reshape(r, c).T.reshape(-1)
    elif kind == "gather":
        index = rng.integers(0, nsrc, data.draw(st.integers(1, 400)))
    elif kind == "pad":
        index = np.where(rng.random(nsrc * 2) < 0.4, -1, np.arange(nsrc * 2) % nsrc)
    else:
        index = rng.permutation(nsrc)
    ndst = len(index)
    # source: 3 blocks (block << 32 | offset) of the source tensor, a zero scalar in its own block; the destination
    # in 2 blocks; one destination element may already hold its value (same address as its source)
    src_block = np.minimum(np.arange(nsrc) * 3 // nsrc, 2)
    src_syms = (src_block << 32) + (np.arange(nsrc) - np.searchsorted(src_block, src_block)) * isz
    zero_sym = np.int64(3 << 32)
    dst_block = 4 + (np.arange(ndst) >= ndst // 2)
    dst_syms = (dst_block << 32) + (np.arange(ndst) - np.where(dst_block == 5, ndst // 2, 0)) * isz
    elem_src = np.where(index < 0, zero_sym, src_syms[np.maximum(index, 0)])
    if data.draw(st.booleans()):
        dst_syms[0] = elem_src[0]
    rows = copy_runs(dst_syms, elem_src, isz)
    assert rows.shape[1] == 6 and (rows[:, 3] >= 1).all()
    # lay the 6 blocks out in a flat memory (16 KiB each) and run the rows against the element-wise copy
    flat = lambda sym: (sym >> 32) * 16384 + (sym & 0xFFFFFFFF)
    mem = np.random.default_rng(0).integers(0, 256, 6 * 16384).astype(np.uint8)
    want = mem.copy()
    for d, s in zip(flat(dst_syms), flat(elem_src)):
        want[d:d + isz] = mem[s:s + isz]
    got = mem.copy()
    absolute = rows.copy()
    absolute[:, :2] = flat(rows[:, :2])
    # every run of a row stays in the block its first run is in
    for r, a in zip(rows, absolute):
        ends = [a[0], a[0] + (a[3] - 1) * a[4], a[1], a[1] + (a[3] - 1) * a[5]]
        assert [e // 16384 for e in ends] == [r[0] >> 32] * 2 + [r[1] >> 32] * 2
    copy_codelets.run_copies(got, absolute)
    np.testing.assert_array_equal(got, want)
    assert rows[:, 3].sum() <= len(dst_syms)


def test_host_to_device_and_back():
    rng = np.random.default_rng(3)
    host = rng.integers(0, 256, 4000).astype(np.uint8)
    mem = np.zeros(1 << 16, np.uint8)
    # the host buffer in 100 pieces scattered over "tiles" of 512 bytes, in a shuffled order
    pieces = np.array_split(np.arange(len(host)), 100)
    order = rng.permutation(100)
    rows = np.array([[1024 + 600 * k + 3, p[0], len(p)] for k, p in zip(order, pieces)], np.int64)
    copy_codelets.host_to_device(mem, host, rows)
    for d, h, n in rows:
        np.testing.assert_array_equal(mem[d:d + n], host[h:h + n])
    back = np.zeros_like(host)
    copy_codelets.device_to_host(mem, back, rows)
    np.testing.assert_array_equal(back, host)


# --- matmul codelet --------------------------------------------------------------------------------
@pytest.mark.parametrize("in_dt,out_dt", [("f32", "f32"), ("f16", "f32"), ("s32", "s32"), ("f64", "f64")])
def test_run_matmul(in_dt, out_dt):
    rng = np.random.default_rng(4)
    m = Memory()
    blocks = [(3, 5, 7), (16, 16, 16), (1, 9, 1), (33, 2, 40), (4, 3, 0)]     # (M, N, K); K=0 gives zeros
    records, cases = [], []
    for M, N, K in blocks:
        if in_dt in ("s32",):
            A = rng.integers(-1000, 1000, (M, K)).astype(np.int32)
            B = rng.integers(-1000, 1000, (K, N)).astype(np.int32)
        else:
            A = rng.standard_normal((M, K)).astype(dtypes.NUMPY[in_dt])
            B = rng.standard_normal((K, N)).astype(dtypes.NUMPY[in_dt])
        c = m.zeros(M * N, dtypes.NUMPY[out_dt])
        records.append([m.put(A), m.put(B), c, M, N, K])
        cases.append((A, B, c))
    matmul_codelet.run_matmul(m.mem, np.array(records, np.int64), C(in_dt), C(out_dt))
    for A, B, c in cases:
        M, N = A.shape[0], B.shape[1]
        got = m.get(c, M * N, dtypes.NUMPY[out_dt]).reshape(M, N)
        if in_dt == "s32":
            np.testing.assert_array_equal(got, (A.astype(np.int64) @ B).astype(np.int32))
        else:
            want = A.astype(np.float64) @ B.astype(np.float64)
            tol = 1e-12 if in_dt == "f64" else 1e-5
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1, A.shape[1]))


@pytest.mark.parametrize("in_dt,out_dt", [("f32", "f32"), ("f16", "f32"), ("s32", "s32"), ("f64", "f64")])
@pytest.mark.parametrize("tb", [False, True])
def test_run_conv(in_dt, out_dt, tb):
    """Conv vertices read patch (m, k) from box[moff[m] + koff[k]] (zero where either offset is -1) and multiply
    by B ([K, N], or [N, K] when tb): runs of consecutive koff, scattered ones, padded rows and columns."""
    rng = np.random.default_rng(6)
    m = Memory()
    records, cases = [], []
    for M, N, K, nbox in [(5, 3, 9, 40), (16, 8, 32, 200), (1, 1, 1, 1), (7, 4, 12, 60)]:
        make = (lambda shape: rng.integers(-50, 50, shape)) if in_dt == "s32" else rng.standard_normal
        box = np.asarray(make(nbox)).astype(dtypes.NUMPY[in_dt])
        B = np.asarray(make((K, N))).astype(dtypes.NUMPY[in_dt])
        moff = rng.integers(0, max(1, nbox // 2), M)
        koff = np.concatenate([np.arange(K // 2), rng.integers(0, max(1, nbox - nbox // 2), K - K // 2)])
        if M > 1:
            moff[rng.integers(0, M)] = -1
        if K > 1:
            koff[-1] = -1
        koff = np.minimum(koff, nbox - 1 - moff.max())
        A = np.where((moff[:, None] >= 0) & (koff[None, :] >= 0), box[(moff[:, None] + koff[None, :]).clip(0)], 0)
        wl = m.put(np.concatenate([moff, koff]).astype(np.int32))
        c = m.zeros(M * N, dtypes.NUMPY[out_dt])
        records.append([m.put(box), m.put(np.ascontiguousarray(B.T) if tb else B), c, M, N, K, wl, nbox])
        cases.append((A, B, c))
    matmul_codelet.run_conv(m.mem, np.array(records, np.int64), C(in_dt), C(out_dt), tb)
    for A, B, c in cases:
        M, N = A.shape[0], B.shape[1]
        got = m.get(c, M * N, dtypes.NUMPY[out_dt]).reshape(M, N)
        want = A.astype(np.float64) @ B.astype(np.float64)
        if in_dt == "s32":
            np.testing.assert_array_equal(got, want.astype(np.int32))
        else:
            tol = 1e-12 if in_dt == "f64" else 1e-5
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1, A.shape[1]))
    # a worklist reading past its box is refused, not followed
    bad = np.array(records, np.int64)
    bad[:, 7] = 1
    with pytest.raises(ValueError, match="outside their input box"):
        matmul_codelet.run_conv(m.mem, bad, C(in_dt), C(out_dt), tb)


# --- reduce codelet --------------------------------------------------------------------------------
REDUCE_OPS = {"add": (0, np.sum), "multiply": (1, np.prod), "maximum": (2, np.max), "minimum": (3, np.min),
              "and": (4, np.bitwise_and.reduce), "or": (5, np.bitwise_or.reduce), "xor": (6, np.bitwise_xor.reduce)}


@pytest.mark.parametrize("layout", ["rows", "columns"])
@pytest.mark.parametrize("op", sorted(REDUCE_OPS))
def test_run_reduce(op, layout):
    """records = [in, out, rows, row_len, row_stride, elem_stride, init (-1: none)]; row and column layouts."""
    code, npop = REDUCE_OPS[op]
    rng = np.random.default_rng(5)
    is_float = op not in ("and", "or", "xor")
    rows, row_len = 6, 37
    if is_float:
        data = rng.choice(np.array([0.5, 1.0, 2.0, -1.0, 3.0], np.float32), (rows, row_len))
        dt = "f32"
    else:
        data = rng.integers(-2**20, 2**20, (rows, row_len)).astype(np.int32)
        dt = "s32"
    stored = data if layout == "rows" else np.ascontiguousarray(data.T)    # column layout: element k of every row
    row_stride, elem_stride = (row_len, 1) if layout == "rows" else (1, rows)
    m = Memory()
    src = m.put(stored)
    init_value = np.array([1 if op == "multiply" else (-1 if op == "and" else 0)], dtypes.NUMPY[dt])
    init = m.put(init_value)
    out_init, out_plain = m.zeros(rows, dtypes.NUMPY[dt]), m.zeros(rows, dtypes.NUMPY[dt])
    recs = np.array([[src, out_init, rows, row_len, row_stride, elem_stride, init],
                     [src, out_plain, rows, row_len, row_stride, elem_stride, -1]], np.int64)
    reduce_codelet.run_reduce(m.mem, recs, code, C(dt), C(dt), C(dt))
    with np.errstate(over="ignore"):
        want = np.array([npop(np.concatenate([init_value, r])) for r in data]).astype(dtypes.NUMPY[dt])
        want_plain = np.array([npop(r) for r in data]).astype(dtypes.NUMPY[dt])
    np.testing.assert_array_equal(m.get(out_init, rows, dtypes.NUMPY[dt]), want)
    np.testing.assert_array_equal(m.get(out_plain, rows, dtypes.NUMPY[dt]), want_plain)


def test_run_reduce_f16_into_f32_partials_and_nan():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 5000)).astype(np.float16)
    x[2, 17] = np.nan
    m = Memory()
    src, out = m.put(x), m.zeros(3, np.float32)
    mx = m.zeros(3, np.float16)
    reduce_codelet.run_reduce(m.mem, np.array([[src, out, 3, 5000, 5000, 1, -1]], np.int64), 0, C("f16"), C("f32"),
                              C("f16"))
    reduce_codelet.run_reduce(m.mem, np.array([[src, mx, 3, 5000, 5000, 1, -1]], np.int64), 2, C("f16"), C("f16"),
                              C("f16"))
    got = m.get(out, 3, np.float32)
    np.testing.assert_allclose(got[:2], x[:2].astype(np.float64).sum(1), rtol=1e-6)
    assert np.isnan(got[2])
    got_max = m.get(mx, 3, np.float16)
    np.testing.assert_array_equal(got_max[:2], x[:2].max(1))
    assert np.isnan(got_max[2])                       # XLA's max propagates NaN


# --- rng codelet -----------------------------------------------------------------------------------
def _rng_run(n, dt, distribution, seed, split=1):
    """n samples in ``split`` vertices (element counters continue across vertices)."""
    npdt = dtypes.NUMPY[dt]
    m = Memory(n * 8 + 4096)
    out = m.zeros(n, npdt)
    bounds = np.linspace(0, n, split + 1).astype(np.int64)
    isz = np.dtype(npdt).itemsize
    recs = np.array([[out + lo * isz, hi - lo, lo] for lo, hi in zip(bounds[:-1], bounds[1:])], np.int64)
    rng_codelet.run_rng(m.mem, recs, distribution, C(dt), seed)
    return m.get(out, n, npdt)


@pytest.mark.parametrize("dt", ["f32", "f16", "f64"])
def test_rng_uniform(dt):
    n = 200_000
    u = _rng_run(n, dt, 0, seed=12345).astype(np.float64)
    assert u.min() >= 0 and u.max() < 1, (u.min(), u.max())
    assert abs(u.mean() - 0.5) < 5 * math.sqrt(1 / 12 / n)
    assert abs(u.std() - math.sqrt(1 / 12)) < 5e-3
    # the top of the range is reached (values right below 1 are drawn, never rounded up to 1.0)
    assert u.max() > 1 - 1e-3
    counts = np.histogram(u, bins=20, range=(0, 1))[0]
    assert np.all(np.abs(counts - n / 20) < 5 * math.sqrt(n / 20)), counts


@pytest.mark.parametrize("dt", ["f32", "f16"])
def test_rng_normal(dt):
    n = 200_000
    z = _rng_run(n, dt, 1, seed=99).astype(np.float64)
    assert np.isfinite(z).all()
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.std() - 1) < 5 / math.sqrt(2 * n) + 1e-3
    assert abs(np.mean(np.abs(z) < 1) - 0.6827) < 5e-3


def test_rng_is_counter_based_and_seeded():
    one = _rng_run(10_000, "f32", 0, seed=7, split=1)
    many = _rng_run(10_000, "f32", 0, seed=7, split=13)
    np.testing.assert_array_equal(one, many)            # independent of the split over vertices/tiles
    other = _rng_run(10_000, "f32", 0, seed=8)
    assert np.mean(one == other) < 0.01


# --- matmul planner --------------------------------------------------------------------------------
MK2_64 = DEVICES["mk2"].with_tiles(64)
MK1_16 = DEVICES["mk1"].with_tiles(16)


def _check_plan(device, p, B, M, N, K, itemsize):
    assert 1 <= p.tiles <= device.num_tiles
    assert p.pb * p.Bb >= B and p.pm * p.Mb >= M and p.pn * p.Nb >= N and p.pk * p.Kb >= K
    # no part is empty: one fewer part would not cover the dimension
    assert (p.pb - 1) * p.Bb < B and (p.pm - 1) * p.Mb < M and (p.pn - 1) * p.Nb < N and (p.pk - 1) * p.Kb < K
    pisz = 4 if itemsize <= 4 else itemsize
    mem = p.Bb * (p.Mb * p.Kb + p.Kb * p.Nb) * itemsize + p.Bb * p.Mb * p.Nb * pisz
    assert p.bytes_per_tile == mem
    assert p.cycles > 0


@functools.lru_cache(maxsize=None)
def _all_splits(T: int) -> np.ndarray:
    """Every (pb, pm, pn, pk) with pb * pm * pn * pk <= T."""
    out = [(a, b, c, d) for a in range(1, T + 1) for b in range(1, T // a + 1) for c in range(1, T // (a * b) + 1)
           for d in range(1, T // (a * b * c) + 1)]
    return np.array(out, np.int64)


def _smallest_bytes_per_tile(device, B, M, N, K, itemsize) -> int:
    """Brute force over every split: the least memory a tile needs for its blocks in any plan."""
    pb, pm, pn, pk = _all_splits(device.num_tiles).T
    Bb, Mb, Nb, Kb = -(-B // pb), -(-M // pm), -(-N // pn), -(-K // pk)
    pisz = 4 if itemsize <= 4 else itemsize
    return int((Bb * (Mb * Kb + Kb * Nb) * itemsize + Bb * Mb * Nb * pisz).min())


@given(B=st.integers(1, 8), M=st.integers(1, 3000), N=st.integers(1, 3000), K=st.integers(1, 3000),
       dtype=st.sampled_from(["f32", "f16"]), device=st.sampled_from([MK2_64, MK1_16]))
def test_matmul_plans_fit_tiles_and_memory(B, M, N, K, dtype, device):
    """A plan uses at most the device's tiles, covers the matmul, and fits the budget whenever any split does
    (otherwise it is the split that needs the least memory, so that the memory plan reports the overflow)."""
    itemsize = 2 if dtype == "f16" else 4
    p = plan_matmul(device, B, M, N, K, itemsize, dtype)
    _check_plan(device, p, B, M, N, K, itemsize)
    budget = device.usable_tile_memory * MEMORY_FRACTION
    smallest = _smallest_bytes_per_tile(device, B, M, N, K, itemsize)
    if smallest <= budget:
        assert p.bytes_per_tile <= budget, (p, smallest, budget)
    else:
        assert p.bytes_per_tile == smallest, (p, smallest)


def test_matmul_planner_prefers_splitting_big_dims():
    p = plan_matmul(MK2_64, 1, 8192, 8, 8, 4, "f32")
    assert p.pm > 1 and p.pm >= max(p.pn, p.pk, p.pb), p
    p = plan_matmul(MK2_64, 1, 8, 8192, 8, 4, "f32")
    assert p.pn > 1 and p.pn >= max(p.pm, p.pk, p.pb), p
    p = plan_matmul(MK2_64, 512, 8, 8, 8, 4, "f32")
    assert p.pb > 1 and p.pb >= max(p.pm, p.pn, p.pk), p
    p = plan_matmul(MK2_64, 1, 4, 4, 200_000, 4, "f32")
    assert p.pk > 1, p                                       # a long K is split and the partials reduced
    p = plan_matmul(MK2_64, 1, 1024, 1024, 1024, 4, "f32")
    assert p.tiles >= MK2_64.num_tiles // 2, p               # a big matmul uses most tiles


@pytest.mark.parametrize("M,N,K", [(2048, 64, 576), (512, 512, 4608), (576, 64, 2048)])
def test_matmul_planner_counts_exchange_messages(M, N, K):
    """The cost of a plan includes a message per contiguous run its tiles receive: operands whose elements are
    all apart in memory (every element a message) cost more to stage, and the planner then gives each tile fewer
    elements to receive than for row-major operands, whose blocks arrive in a few long runs."""
    scattered = Contiguity(0, 0, 0, 0, 0, 0, 0, 0)
    dense = plan_matmul(DEVICES["mk2"], 1, M, N, K, 4, "f32")
    apart = plan_matmul(DEVICES["mk2"], 1, M, N, K, 4, "f32", scattered)
    assert apart.cycles > dense.cycles
    received = lambda p: p.Mb * p.Kb + p.Kb * p.Nb
    assert received(apart) < received(dense), (apart, dense)


def test_matmul_plan_of_ones():
    p = plan_matmul(MK2_64, 1, 1, 1, 1, 4, "f32")
    assert (p.pb, p.pm, p.pn, p.pk, p.Bb, p.Mb, p.Nb, p.Kb) == (1, 1, 1, 1, 1, 1, 1, 1)
    assert p.tiles == 1


def test_matmul_with_unit_dims_runs():
    """B, M, N, K = 1 through the whole stack."""
    from conftest import assert_matches_tf
    a, b = np.array([[2.5]], np.float32), np.array([[-3.0]], np.float32)
    assert_matches_tf(lambda a, b: tf.matmul(a, b), a, b)
    assert_matches_tf(lambda a, b: tf.einsum("bmk,bkn->bmn", a, b), a[None], b[None])


# --- memory plan -----------------------------------------------------------------------------------
def _blocks(t):
    return np.unique(t.syms >> OFFSET_BITS)


def _addresses(base, t):
    """tile -> (start, end) byte range of tensor t's block on that tile."""
    return {int(tile): (int(base[s >> OFFSET_BITS]), int(base[s >> OFFSET_BITS]) + int(n) * t.itemsize)
            for tile, s, n in zip(t.tiles, t.syms, t.counts)}


def _liveness_program(with_constant: bool):
    dev = DEVICES["mk2"].with_tiles(4)
    b = ProgramBuilder(dev)
    shape = Shape("f32", (4096,))
    x = b.linear(shape, "x", "input")
    t1 = b.like(x, shape, "t1", "temporary")
    t2 = b.like(x, shape, "t2", "temporary")
    y1 = b.like(x, shape, "y1", "activation")
    y2 = b.like(x, shape, "y2", "activation")
    rev = np.arange(4096)[::-1]
    b.rearrange(t1, [x], rev, name="x->t1")        # step 0: t1 born
    b.rearrange(y1, [t1], rev, name="t1->y1")      # step 1: t1 dies
    b.rearrange(t2, [x], rev, name="x->t2")        # step 2: t2 born (t1 is dead: its memory is free)
    c = None
    if with_constant:
        c = b.constant(np.arange(4096, dtype=np.float32), shape, "c")
        b.rearrange(y2, [t2, c], np.concatenate([rev[:2048], np.arange(2048)]),
                    np.concatenate([np.zeros(2048, np.int64), np.ones(2048, np.int64)]), name="t2,c->y2")
    else:
        b.rearrange(y2, [t2], rev, name="t2->y2")  # step 3
    return b, dict(x=x, t1=t1, t2=t2, y1=y1, y2=y2, c=c)


def test_memory_plan_reuses_memory_of_dead_temporaries():
    b, t = _liveness_program(with_constant=False)
    base, report, steps = plan_memory(b)
    a1, a2 = _addresses(base, t["t1"]), _addresses(base, t["t2"])
    assert a1.keys() == a2.keys() and len(a1) == 4
    assert any(a1[k][0] < a2[k][1] and a2[k][0] < a1[k][1] for k in a1), "t1 and t2 should share memory"
    per_tile_sum = sum(np.bincount(tt.tiles, weights=tt.counts * tt.itemsize, minlength=4) for tt in t.values()
                       if tt is not None)
    blocks_peak = report.peak - report.by_category["vertex_state"]
    assert np.all(blocks_peak < per_tile_sum), (blocks_peak, per_tile_sum)
    # tensors live at the same time never overlap: x with t1, t1 with y1, x with t2
    for u, v in (("x", "t1"), ("t1", "y1"), ("x", "t2"), ("t2", "y2")):
        au, av = _addresses(base, t[u]), _addresses(base, t[v])
        for k in au:
            assert au[k][1] <= av[k][0] or av[k][1] <= au[k][0], f"{u} and {v} overlap on tile {k}"


def test_block_tiles_grow_without_changing_earlier_blocks():
    # the tile of every block is kept in a buffer grown as tensors are added (not concatenated per call): views
    # taken earlier keep their entries, and the table always agrees with each tensor's regions
    b = ProgramBuilder(DEVICES["mk2"].with_tiles(64))
    early, tensors = None, []
    for k in range(120):      # ~3000 blocks: several doublings
        tensors.append(b.linear(Shape("f32", (64 * 16 + k,)), f"t{k}"))
        if k == 3:
            early = b.block_tiles().copy(), b.block_tiles()
    assert np.array_equal(early[0], early[1]) and len(b.block_tiles()) == b.nblocks
    for t in tensors:
        assert np.array_equal(b.block_tiles()[t.syms >> OFFSET_BITS], t.tiles)
    tiles, nbytes, owner = b.block_arrays()
    assert len(tiles) == len(nbytes) == len(owner) == b.nblocks


def _first_fit_reference(sizes, first, last):
    """Plain first-fit with lifetimes, every placed block checked (what the planner must reproduce)."""
    placed, offsets = [], np.zeros(len(sizes), np.int64)
    for i in np.lexsort((-sizes, first)):
        s, f, l = int(sizes[i]), int(first[i]), int(last[i])
        off = 0
        for b_off, b_end in sorted((o, e) for o, e, pf, pl in placed if pf <= l and f <= pl):
            if off + s <= b_off:
                break
            off = max(off, b_end)
        offsets[i] = off
        placed.append((off, off + s, f, l))
    return offsets, int((offsets + sizes).max()) if len(sizes) else 0


@pytest.mark.parametrize("seed", range(6))
def test_memory_placement_matches_plain_first_fit(seed):
    # the planner keeps only the blocks still alive (vectorised): same offsets as checking every placed block,
    # including zero-size blocks, ties of first use and of size, and blocks live at every step
    from xla_lowering.mapping.memory import _place, _place_numpy
    rng = np.random.default_rng(seed)
    for _ in range(150):
        n = int(rng.integers(0, 50))
        sizes = rng.integers(0, 4, n) * 8 if seed % 2 else rng.integers(1, 300, n)
        first = rng.integers(0, 25, n)
        last = first + rng.integers(0, 12, n)
        if seed == 5:
            first[: n // 3], last[: n // 3] = 0, 40
        want = _first_fit_reference(sizes, first, last)
        for got in (_place(sizes, first, last), _place_numpy(sizes, first, last)):
            np.testing.assert_array_equal(got[0], want[0])
            assert got[1] == want[1]


@pytest.mark.parametrize("seed", range(4))
def test_all_tiles_placed_at_once_match_tile_by_tile(seed, monkeypatch):
    """The planner places every tile's blocks in one parallel call: the same bases and extents as placing each
    tile on its own (the fallback), with tiles of one block, empty tiles, zero-size and always-live blocks."""
    from xla_lowering.mapping import memory
    rng = np.random.default_rng(seed)
    ntiles, tile_memory = 9, 1 << 20
    for _ in range(40):
        n = int(rng.integers(1, 120))
        tiles = rng.integers(0, ntiles, n)
        sizes = rng.integers(0, 40, n) * 8
        first = rng.integers(0, 30, n)
        last = first + rng.integers(0, 15, n)
        first[rng.random(n) < 0.1] = 0
        live = np.flatnonzero(rng.random(n) < 0.9)
        got_base, got_extent = np.full(n, -1, np.int64), np.zeros(ntiles, np.int64)
        memory._place_tiles(live, tiles, sizes, first, last, tile_memory, got_base, got_extent)
        want_base, want_extent = np.full(n, -1, np.int64), np.zeros(ntiles, np.int64)
        with monkeypatch.context() as m:
            m.setattr(memory, "_firstfit", None)
            memory._place_tiles(live, tiles, sizes, first, last, tile_memory, want_base, want_extent)
        np.testing.assert_array_equal(got_base, want_base)
        np.testing.assert_array_equal(got_extent, want_extent)


def test_memory_plan_constants_are_always_live():
    b, t = _liveness_program(with_constant=True)
    base, report, steps = plan_memory(b)
    c = _addresses(base, t["c"])
    # the constant is used only at the last step, but its contents must survive from load time: nothing shares it
    for name in ("x", "t1", "t2", "y1", "y2"):
        other = _addresses(base, t[name])
        for k in c:
            if k in other:
                assert c[k][1] <= other[k][0] or other[k][1] <= c[k][0], f"constant overlaps {name} on tile {k}"
    const_bytes = np.bincount(t["c"].tiles, weights=t["c"].counts * 4, minlength=4)
    assert np.all(report.always_live >= const_bytes)
    assert np.array_equal(report.by_category["constant"], const_bytes.astype(np.int64))
    assert np.all(report.peak >= report.always_live)


def test_memory_report_through_the_compiler():
    x = tf.constant(np.random.default_rng(8).standard_normal((64, 300)).astype(np.float32))
    bias = np.linspace(-1, 1, 300, dtype=np.float32)
    exe = get_strategy().compile(lambda x: tf.exp(x) * 2.0 + tf.constant(bias), (x,))
    mem = exe.memory
    assert mem.tiles_used > 1
    assert np.all(mem.peak >= mem.always_live)
    assert mem.by_category["constant"].sum() >= 300 * 4
    assert mem.by_category["input"].sum() >= 64 * 300 * 4


def test_scalar_broadcast_is_a_fill_not_a_copy_per_element(strategy):
    """broadcast(scalar) feeding an op: the scalar goes to each tile once and a vertex fills the tile's region,
    instead of a copy descriptor per element (8 bytes of descriptors per 4-byte element)."""
    from kernels.program import Copy, Execute, walk
    x = tf.zeros((256, 1024), tf.float32)
    exe = strategy.compile(lambda x, s: tf.maximum(x, s), (x, tf.constant(0.5)))
    copies = [st for st in walk(exe.program) if isinstance(st, Copy)]
    assert all(len(c.rows) <= 4 * strategy.device_model.num_tiles for c in copies), [len(c.rows) for c in copies]
    assert any(isinstance(st, Execute) and any(g.codelet == "expr" and len(g.params["in_dt"]) == 1
                                               and g.params["in_scalar"][0] for g in st.cs.groups)
               for st in walk(exe.program)), "a fill vertex"
    assert exe.memory.by_category["vertex_state"].max() < 4096


# --- out of memory ---------------------------------------------------------------------------------
def test_out_of_memory_names_tile_bytes_and_tensors():
    s = tf_ipu.IPUStrategy(tf_ipu.IPUConfig(device="mk1", tiles_per_ipu=4, compile_progress=False))
    x = tf.zeros((512, 512), tf.float32)
    w = tf.zeros((512, 512), tf.float32)

    def big_matmul(x, w):
        return tf.matmul(x, w, name="big_matmul")
    with pytest.raises(tf_ipu.TileMemoryError) as info:
        s.compile(big_matmul, (x, w))
    err = info.value
    msg = str(err)
    dev = DEVICES["mk1"]
    assert isinstance(err, MemoryError)
    assert 0 <= err.tile < 4 and f"tile {err.tile}" in msg
    assert err.needed > err.available == dev.tile_memory - dev.reserved_bytes
    assert f"{err.needed:,} bytes" in msg and f"{err.available:,} bytes" in msg
    assert err.largest, "the largest tensors must be listed"
    sizes = [nbytes for _, nbytes, _, _ in err.largest]
    assert sizes == sorted(sizes, reverse=True)
    for name, nbytes, category, origin in err.largest:
        assert name in msg and f"{nbytes:,}" in msg
    # what is on the tile: tensors by category at the busiest point, and the always-live program state
    assert sum(err.tensors.values()) >= sum(sizes) and set(err.program) == {"vertex state", "copy descriptors"}
    assert sum(err.tensors.values()) + sum(err.program.values()) <= err.needed
    assert f"tensors {sum(err.tensors.values()):,} bytes" in msg and "program state" in msg
    assert all(nbytes > 0 for _, nbytes, _ in err.descriptors)
    assert "smaller batch size" in msg            # tensors dominate here: the usual advice
    origins = {origin for *_, origin in err.largest}
    assert any("big_matmul" in o for o in origins), origins
    assert "big_matmul" in msg


# --- unsupported ops -------------------------------------------------------------------------------
def test_unsupported_hlo_op_in_a_hand_built_module():
    p = Instruction("parameter", Shape("f32", (4, 4)), attrs={"number": 0}, name="a",
                    metadata={"op_name": "XLA_Args"})
    chol = Instruction("cholesky", Shape("f32", (4, 4)), [p], attrs={"lower": True}, name="chol",
                       metadata={"op_name": "model/Cholesky", "op_type": "Cholesky"})
    module = Module("m", Computation("main", [p, chol], chol))
    with pytest.raises(tf_ipu.UnsupportedOpError) as info:
        compile_module(module, MK2_64, CompileOptions(run_passes=False, progress=False))
    msg = str(info.value)
    assert "cholesky" in msg and "f32[4,4]" in msg and "model/Cholesky" in msg
    assert isinstance(info.value, NotImplementedError)


def test_unsupported_tf_op_names_opcode_shape_and_tf_op():
    a = np.eye(5, dtype=np.float32) * 4 + 1

    def f(a):
        return tf.linalg.cholesky(a, name="my_cholesky")
    with pytest.raises(tf_ipu.UnsupportedOpError) as info:
        get_strategy().run(f, (tf.constant(a),))
    msg = str(info.value)
    assert "cholesky" in msg.lower() and "f32[5,5]" in msg and "my_cholesky" in msg, msg


# --- report --------------------------------------------------------------------------------------
def test_report_sanity(strategy):
    s = strategy
    x = np.random.default_rng(9).standard_normal((128, 512)).astype(np.float32)
    w = np.random.default_rng(10).standard_normal((512, 64)).astype(np.float32)
    s.run(lambda x, w: tf.nn.softmax(tf.tanh(x) @ w), (tf.constant(x), tf.constant(w)))
    r = s.last_report()
    assert r.cycles_total > 0 and r.cycles_compute > 0 and r.cycles_exchange > 0 and r.cycles_sync > 0
    assert r.cycles_host_io > 0
    assert r.cycles_compute + r.cycles_exchange + r.cycles_sync + r.cycles_host_io == r.cycles_total
    assert r.tiles_used > 1
    assert r.num_tiles == 64 and len(r.memory_peak) == 64
    assert np.all(r.memory_peak <= r.tile_memory)
    assert r.exchange_bytes > 0
    assert r.seconds == pytest.approx(r.cycles_total / r.clock_hz)
    assert sum(r.steps.values()) <= r.cycles_total
    text = str(r)
    assert "Cycles:" in text and f"{r.cycles_total:,}" in text


def test_report_cycles_grow_with_work(strategy):
    s = strategy
    f = lambda x: tf.sin(x) * tf.cos(x)  # noqa: E731
    s.run(f, (tf.zeros((8, 8)),))
    small = s.last_report().cycles_compute
    s.run(f, (tf.zeros((256, 512)),))
    big = s.last_report()
    assert big.cycles_compute > small
    assert big.tiles_used > 1


def test_exchange_cycles_of_a_device_with_more_than_2_gib():
    # a what-if device with 4 MiB tiles has addresses above 2^32: the multicast key (source, bytes) must not
    # overflow; the same copy on tiles low and high in memory costs the same
    import dataclasses
    from kernels.program import Copy
    from xla_lowering.mapping.memory import estimate_cycles
    dev = dataclasses.replace(DEVICES["mk2"], name="mk2-4MiB", tile_memory=4 << 20)   # addresses past 2^32
    tm = dev.tile_memory
    costs = []
    for src_tile, dst_tile in ((1, 0), (1400, 1300)):
        # 3 rows from one tile, two of them the same run (multicast: sent once)
        rows = np.array([[dst_tile * tm, src_tile * tm, 64], [(dst_tile + 2) * tm, src_tile * tm, 64],
                         [dst_tile * tm + 64, src_tile * tm + 64, 32]], np.int64)
        step = Copy("c", rows)
        estimate_cycles(dev, [step])
        assert step.exchange_bytes == 160
        costs.append(step.exchange_cycles)
    assert costs[0] == costs[1] > 0
