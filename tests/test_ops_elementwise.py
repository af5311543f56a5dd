"""Elementwise ops through the simulated IPU against TensorFlow on the CPU.

Each test is one TF op (or small TF pattern) and one element type; Hypothesis picks the shapes (rank 0-4, odd
sizes and sizes spread over many of the session strategy's 64 tiles) and the data seed. Inputs are drawn from
ranges where the op is defined in TF and in XLA alike (positive for log/sqrt, in-range for casts, shift
amounts below the bit width, non-zero integer divisors...).
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import example, given, strategies as st

from conftest import assert_matches_tf, dtype_id, examples, get_strategy, random_array, seeds, shapes, tf

EXAMPLES = examples(6)         # per (op, dtype): shapes vary across the examples
F32, F16, S32, S64 = np.float32, np.float16, np.int32, np.int64


def _halves(rng, shape, dtype):
    """Values on a grid of 0.5 (ties for round, exact integers for floor/ceil) mixed with arbitrary ones."""
    grid = np.round(rng.standard_normal(shape) * 6) / 2
    free = rng.standard_normal(shape) * 3
    return np.where(rng.random(shape) < 0.5, grid, free).astype(dtype)


def _with_specials(rng, shape, dtype):
    x = random_array(rng, shape, dtype)
    if x.size:
        flat = x.reshape(-1)
        picks = rng.random(flat.size)
        flat[picks < 0.1] = np.inf
        flat[(picks >= 0.1) & (picks < 0.2)] = -np.inf
        flat[(picks >= 0.2) & (picks < 0.3)] = np.nan
        flat[(picks >= 0.3) & (picks < 0.35)] = 0
    return x


def _uniform(low, high):
    return lambda rng, shape, dtype: rng.uniform(low, high, shape).astype(dtype)


def _normal(rng, shape, dtype):
    return random_array(rng, shape, dtype)


def _with_zeros(rng, shape, dtype):
    x = random_array(rng, shape, dtype)
    return np.where(rng.random(shape) < 0.3, 0, x).astype(dtype)


# name -> (tf function, input generator, loose tolerance)
UNARY_FLOAT = {
    "abs": (tf.abs, _normal, False),
    "neg": (tf.negative, _normal, False),
    "exp": (tf.exp, _uniform(-8, 8), True),
    "expm1": (tf.math.expm1, _uniform(-5, 5), True),
    "log": (tf.math.log, _uniform(0.01, 100), True),
    "log1p": (tf.math.log1p, _uniform(-0.9, 50), True),
    "sigmoid": (tf.sigmoid, _normal, True),
    "tanh": (tf.tanh, _normal, True),
    "sqrt": (tf.sqrt, _uniform(0, 100), True),
    "rsqrt": (tf.math.rsqrt, _uniform(0.01, 100), True),
    "sin": (tf.sin, _normal, True),
    "cos": (tf.cos, _normal, True),
    "tan": (tf.tan, _uniform(-1.4, 1.4), True),
    "floor": (tf.floor, _halves, False),
    "ceil": (tf.math.ceil, _halves, False),
    "round": (tf.round, _halves, False),
    "sign": (tf.sign, _with_zeros, False),
    "erf": (tf.math.erf, _normal, True),
    "square": (tf.square, _normal, False),
    "reciprocal": (tf.math.reciprocal, _uniform(0.1, 10), False),
    "relu": (tf.nn.relu, _normal, False),
    "softplus": (tf.nn.softplus, _normal, True),
    "is_finite": (tf.math.is_finite, _with_specials, False),
    "is_nan": (tf.math.is_nan, _with_specials, False),
    "is_inf": (tf.math.is_inf, _with_specials, False),
}


@pytest.mark.parametrize("dtype", [F32, F16], ids=dtype_id)
@pytest.mark.parametrize("name", sorted(UNARY_FLOAT))
@EXAMPLES
@given(shape=shapes(), seed=seeds)
def test_unary_float(name, dtype, shape, seed):
    fn, gen, loose = UNARY_FLOAT[name]
    x = gen(np.random.default_rng(seed), shape, dtype)
    assert_matches_tf(lambda x: fn(x), x, loose=loose)


UNARY_INT = {
    "abs": tf.abs,
    "neg": tf.negative,
    "sign": tf.sign,
    "square": tf.square,
    "invert": tf.bitwise.invert,
    "popcount": lambda x: tf.raw_ops.PopulationCount(x=x),
}


@pytest.mark.parametrize("dtype", [S32, S64], ids=dtype_id)
@pytest.mark.parametrize("name", sorted(UNARY_INT))
@EXAMPLES
@given(shape=shapes(), seed=seeds)
def test_unary_int(name, dtype, shape, seed):
    x = random_array(np.random.default_rng(seed), shape, dtype, -40000, 40000)
    assert_matches_tf(lambda x: UNARY_INT[name](x), x)


@EXAMPLES
@given(shape=shapes(), seed=seeds)
def test_logical_not(shape, seed):
    x = random_array(np.random.default_rng(seed), shape, np.bool_)
    assert_matches_tf(lambda x: tf.logical_not(x), x)


# --- binary --------------------------------------------------------------------------------------
def _broadcast_variant(draw_shape, how, rng):
    """The second operand's shape: the same, rank 0, or the same rank with some dims 1."""
    if how == "same" or not draw_shape:
        return draw_shape
    if how == "scalar":
        return ()
    return tuple(1 if rng.random() < 0.5 else d for d in draw_shape)


broadcasts = st.sampled_from(["same", "same", "scalar", "dims"])

# name -> (tf function, lhs generator, rhs generator, loose)
BINARY_FLOAT = {
    "add": (tf.add, _normal, _normal, False),
    "sub": (tf.subtract, _normal, _normal, False),
    "mul": (tf.multiply, _normal, _normal, False),
    "div": (tf.divide, _normal, _uniform(0.5, 4), False),
    "max": (tf.maximum, _halves, _halves, False),
    "min": (tf.minimum, _halves, _halves, False),
    "pow": (tf.pow, _uniform(0.1, 3), _uniform(-3, 3), True),
    "atan2": (tf.atan2, _normal, _normal, True),
    "floordiv": (tf.math.floordiv, _normal, _uniform(0.5, 3), False),
    "floormod": (tf.math.floormod, _normal, _uniform(0.5, 3), True),
    "truncatemod": (tf.truncatemod, _normal, _uniform(0.5, 3), True),
    "squared_difference": (tf.math.squared_difference, _normal, _normal, False),
}


@pytest.mark.parametrize("dtype", [F32, F16], ids=dtype_id)
@pytest.mark.parametrize("name", sorted(BINARY_FLOAT))
@EXAMPLES
@given(shape=shapes(), how=broadcasts, seed=seeds)
def test_binary_float(name, dtype, shape, how, seed):
    fn, gen_x, gen_y, loose = BINARY_FLOAT[name]
    rng = np.random.default_rng(seed)
    x = gen_x(rng, shape, dtype)
    y = gen_y(rng, _broadcast_variant(shape, how, rng), dtype)
    # TF has no CPU kernel for TruncateMod of f16: XLA on the CPU is the reference there
    reference = "xla" if (name == "truncatemod" and dtype == F16) else "eager"
    assert_matches_tf(lambda x, y: fn(x, y), x, y, loose=loose, reference=reference)


def _nonzero_ints(rng, shape, dtype):
    y = random_array(rng, shape, dtype, 1, 50)
    return np.where(rng.random(shape) < 0.5, -y, y).astype(dtype)


def _ints(rng, shape, dtype):
    return random_array(rng, shape, dtype, -3000, 3000)


def _shift_amounts(rng, shape, dtype):
    return random_array(rng, shape, dtype, 0, np.iinfo(dtype).bits)


BINARY_INT = {
    "add": (tf.add, _ints, _ints),
    "sub": (tf.subtract, _ints, _ints),
    "mul": (tf.multiply, _ints, _ints),
    "max": (tf.maximum, _ints, _ints),
    "min": (tf.minimum, _ints, _ints),
    "floordiv": (tf.math.floordiv, _ints, _nonzero_ints),
    "floormod": (tf.math.floormod, _ints, _nonzero_ints),
    "truncatediv": (tf.truncatediv, _ints, _nonzero_ints),
    "truncatemod": (tf.truncatemod, _ints, _nonzero_ints),
    "pow": (tf.pow, lambda r, s, d: random_array(r, s, d, -6, 7), lambda r, s, d: random_array(r, s, d, 0, 8)),
    "bitwise_and": (tf.bitwise.bitwise_and, _ints, _ints),
    "bitwise_or": (tf.bitwise.bitwise_or, _ints, _ints),
    "bitwise_xor": (tf.bitwise.bitwise_xor, _ints, _ints),
    "left_shift": (tf.bitwise.left_shift, _ints, _shift_amounts),
    "right_shift": (tf.bitwise.right_shift, _ints, _shift_amounts),
}


@pytest.mark.parametrize("dtype", [S32, S64], ids=dtype_id)
@pytest.mark.parametrize("name", sorted(BINARY_INT))
@EXAMPLES
@given(shape=shapes(), how=broadcasts, seed=seeds)
def test_binary_int(name, dtype, shape, how, seed):
    fn, gen_x, gen_y = BINARY_INT[name]
    rng = np.random.default_rng(seed)
    x = gen_x(rng, shape, dtype)
    y = gen_y(rng, _broadcast_variant(shape, how, rng), dtype)
    assert_matches_tf(lambda x, y: fn(x, y), x, y)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint32], ids=dtype_id)
@EXAMPLES
@given(shape=shapes(min_rank=1), seed=seeds)
def test_unsigned_shifts_and_division(dtype, shape, seed):
    """Right shifts of unsigned types are logical (shift-right-logical); unsigned division and remainder."""
    rng = np.random.default_rng(seed)
    hi = np.iinfo(dtype).max
    x = rng.integers(0, hi, size=shape, endpoint=True).astype(dtype)
    s = rng.integers(0, np.iinfo(dtype).bits, size=shape).astype(dtype)
    d = rng.integers(1, 200, size=shape).astype(dtype)
    assert_matches_tf(lambda x, s, d: (tf.bitwise.right_shift(x, s), tf.bitwise.left_shift(x, s), x // d, x % d),
                      x, s, d)


@pytest.mark.parametrize("name", ["and", "or", "xor"])
@EXAMPLES
@given(shape=shapes(), how=broadcasts, seed=seeds)
def test_logical_binary(name, shape, how, seed):
    fn = {"and": tf.logical_and, "or": tf.logical_or, "xor": tf.math.logical_xor}[name]
    rng = np.random.default_rng(seed)
    x = random_array(rng, shape, np.bool_)
    y = random_array(rng, _broadcast_variant(shape, how, rng), np.bool_)
    assert_matches_tf(lambda x, y: fn(x, y), x, y)


# --- compare, select, clamp ------------------------------------------------------------------------
COMPARE = {"EQ": tf.equal, "NE": tf.not_equal, "LT": tf.less, "LE": tf.less_equal, "GT": tf.greater,
           "GE": tf.greater_equal}


@pytest.mark.parametrize("dtype", [F32, F16, S32, S64], ids=dtype_id)
@pytest.mark.parametrize("direction", sorted(COMPARE))
@EXAMPLES
@given(shape=shapes(), how=broadcasts, seed=seeds)
def test_compare(direction, dtype, shape, how, seed):
    rng = np.random.default_rng(seed)
    # a small value range so that ties are common
    x = random_array(rng, shape, dtype, -3, 4)
    y = random_array(rng, _broadcast_variant(shape, how, rng), dtype, -3, 4)
    if np.dtype(dtype).kind == "f":
        x, y = np.round(x).astype(dtype), np.round(y).astype(dtype)
    assert_matches_tf(lambda x, y: COMPARE[direction](x, y), x, y)


def test_compare_nan_and_bool():
    x = np.array([np.nan, 1.0, -np.inf, np.inf, 0.0, -0.0, np.nan], np.float32)
    y = np.array([np.nan, np.nan, -np.inf, 1.0, -0.0, 0.0, 2.0], np.float32)
    assert_matches_tf(lambda x, y: tuple(f(x, y) for _, f in sorted(COMPARE.items())), x, y)
    a = np.array([True, True, False, False])
    b = np.array([True, False, True, False])
    assert_matches_tf(lambda a, b: (tf.equal(a, b), tf.not_equal(a, b)), a, b)


@pytest.mark.parametrize("dtype", [F32, F16, S32, S64, np.bool_], ids=dtype_id)
@EXAMPLES
@given(shape=shapes(), seed=seeds)
def test_select(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    c = random_array(rng, shape, np.bool_)
    x = random_array(rng, shape, dtype)
    y = random_array(rng, shape, dtype)
    assert_matches_tf(lambda c, x, y: tf.where(c, x, y), c, x, y)


@EXAMPLES
@given(shape=shapes(min_rank=1), seed=seeds)
def test_select_with_scalars(shape, seed):
    """tf.where(x > 0, x, 0.1 * x) and selects between a tensor and a broadcast scalar."""
    x = random_array(np.random.default_rng(seed), shape, F32)
    assert_matches_tf(lambda x: (tf.where(x > 0, x, 0.1 * x), tf.where(x > 1, 1.0, x), tf.nn.leaky_relu(x)), x)


@pytest.mark.parametrize("dtype", [F32, F16, S32, S64], ids=dtype_id)
@EXAMPLES
@given(shape=shapes(), seed=seeds)
def test_clamp(dtype, shape, seed):
    """tf.clip_by_value (minimum/maximum) and the ClipByValue op (HLO clamp), with scalar and tensor bounds."""
    rng = np.random.default_rng(seed)
    x = random_array(rng, shape, dtype)
    lo = random_array(rng, shape, dtype, -5, 0)
    hi = random_array(rng, shape, dtype, 0, 5)
    two = np.asarray(2, dtype)

    def f(x, lo, hi):
        return (tf.clip_by_value(x, -two, two), tf.raw_ops.ClipByValue(t=x, clip_value_min=-two, clip_value_max=two),
                tf.raw_ops.ClipByValue(t=x, clip_value_min=lo, clip_value_max=hi))
    assert_matches_tf(f, x, lo, hi)


# --- casts ---------------------------------------------------------------------------------------
CAST_TYPES = {"f32": F32, "f16": F16, "s32": S32, "s64": S64, "bool": np.bool_}


def _cast_source(rng, shape, src):
    src = np.dtype(src)
    if src == np.bool_:
        return random_array(rng, shape, src)
    if src.kind == "f":
        # within every target's range; fractional parts (truncation toward zero), zeros (bool), halves
        x = rng.uniform(-30000, 30000, shape) * np.where(rng.random(shape) < 0.5, 1e-3, 1)
        x = np.where(rng.random(shape) < 0.1, 0, x)
        return x.astype(src)
    x = rng.integers(-70000, 70000, shape)
    if src == np.int64:
        x = x * rng.integers(1, 2**33, shape)       # beyond f32's integer precision: rounding to nearest
    x = np.where(rng.random(shape) < 0.1, 0, x)
    return x.astype(src)


@pytest.mark.parametrize("src,dst", list(itertools.permutations(sorted(CAST_TYPES), 2)))
@EXAMPLES
@given(shape=shapes(), seed=seeds)
def test_cast(src, dst, shape, seed):
    x = _cast_source(np.random.default_rng(seed), shape, CAST_TYPES[src])
    tdst = tf.as_dtype(CAST_TYPES[dst])
    assert_matches_tf(lambda x: tf.cast(x, tdst), x, rtol=0, atol=0)


SPECIALS = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1.5, -2.5, 0.7, -0.7, 3e9, -3e9, 2e19, -2e19,
                     255.9, 256.0, 65535.5, -129.0], np.float32)


@pytest.mark.parametrize("dst", [tf.bool, tf.int8, tf.uint8, tf.int16, tf.uint16, tf.int32, tf.uint32, tf.int64,
                                 tf.uint64], ids=lambda d: d.name)
def test_cast_float_specials_to_integers(dst):
    """NaN, infinities and out-of-range values: XLA saturates (NaN -> 0; to bool NaN is true). TF's CPU kernels
    leave these undefined, so XLA on the CPU is the reference."""
    assert_matches_tf(lambda x: (tf.cast(x, dst), tf.cast(tf.cast(x, tf.float16), dst)), SPECIALS, reference="xla")
    assert_matches_tf(lambda x: tf.raw_ops.Cast(x=x, DstT=dst), SPECIALS, reference="xla")


def test_uint64_ops_above_2_63():
    """u64 values with the top bit set are large, not negative: max/min/clamp/compare/divide/shift/cast."""
    a = np.array([2**63 + 5, 1, 2**64 - 1, 0, 2**63, 12345], np.uint64)
    b = np.array([3, 2**63, 7, 2**64 - 2, 2**63 - 1, 2**62], np.uint64)

    def f(a, b):
        return (tf.maximum(a, b), tf.minimum(a, b), a < b, a >= b, a // (b | 1), a % (b | 1),
                tf.bitwise.right_shift(a, tf.constant(3, tf.uint64)),
                tf.raw_ops.ClipByValue(t=a, clip_value_min=b // 2, clip_value_max=b),
                tf.cast(a, tf.float32), tf.cast(a, tf.int32))
    assert_matches_tf(f, a, b, reference="xla")


def test_cast_f32_to_f16_rounding_and_overflow():
    x = np.array([70000.0, -70000.0, 65504.0, 65520.0, 1e-8, -1e-8, 6e-8, 3e-5, np.inf, np.nan, 1 + 2**-11,
                  1 + 3 * 2**-11, 0.1], np.float32)
    assert_matches_tf(lambda x: tf.cast(x, tf.float16), x, rtol=0, atol=0)


# --- fused expressions -----------------------------------------------------------------------------
@EXAMPLES
@given(shape=shapes(min_rank=1), seed=seeds)
@example(shape=(97, 255), seed=1)      # > 16384 elements: several vertices per tile, several blocks per vertex
def test_fused_expression(shape, seed):
    rng = np.random.default_rng(seed)
    x, y = random_array(rng, shape, F32), random_array(rng, shape, F32)

    def f(x, y):
        a = tf.sigmoid(x * y + 1.0) - tf.exp(-tf.abs(x)) * 0.5
        b = tf.where(x > y, tf.sqrt(tf.abs(x) + 1.0), tf.cast(tf.cast(y, tf.int32), tf.float32))
        c = tf.cast(tf.logical_or(x > 0, y > 0), tf.float32) + tf.square(x - y) / (1.0 + y * y)
        return a, b, c, a * b + c
    assert_matches_tf(f, x, y, loose=True)


@EXAMPLES
@given(shape=shapes(min_rank=1, max_rank=3), seed=seeds)
def test_fused_f16_and_int_expressions(shape, seed):
    rng = np.random.default_rng(seed)
    h = random_array(rng, shape, F16)
    i = random_array(rng, shape, S32)

    def f(h, i):
        return (tf.tanh(h) * h + tf.cast(i, tf.float16) * 0.25,
                tf.bitwise.bitwise_xor(i * 3 + 7, i // 5) - tf.abs(i),
                tf.cast(tf.nn.relu(h) * 2, tf.int32) + i)
    assert_matches_tf(f, h, i)


def test_large_tensor_several_vertices_per_tile():
    """2M elements on 64 tiles: 32K elements a tile, more than one vertex's chunk (16K) and many 256-element
    blocks per vertex."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2048, 1024)).astype(F32)
    y = rng.standard_normal((2048, 1024)).astype(F32)
    assert_matches_tf(lambda x, y: (x * y + 1.0, tf.maximum(x, 0.0)), x, y)
    assert get_strategy().last_report().tiles_used == 64


@EXAMPLES
@given(shape=shapes(min_rank=2, max_rank=3, max_size=20_000), seed=seeds)
def test_operands_with_different_tile_mappings(shape, seed):
    """x + transpose(y): the transposed operand is mapped differently and is copied to x's mapping first."""
    rng = np.random.default_rng(seed)
    x = random_array(rng, shape, F32)
    y = random_array(rng, shape[::-1], F32)
    perm = list(range(len(shape)))[::-1]
    assert_matches_tf(lambda x, y: (x + tf.transpose(y, perm), tf.transpose(y, perm) * x - x), x, y)


def test_same_operand_twice_and_rank0():
    x = np.float32(1.5)
    assert_matches_tf(lambda x: (x * x, x + x, tf.exp(x), x > x), x)
    v = np.arange(-7, 8, dtype=np.float32)
    assert_matches_tf(lambda v: (v * v, v - v, tf.maximum(v, v)), v)


# --- bitcast-convert -------------------------------------------------------------------------------
@given(shape=shapes(max_size=10_000), seed=seeds)
def test_bitcast_same_and_different_sizes(shape, seed):
    """tf.bitcast: same size (an expression op) and between sizes (a view of the bytes: a new minor dimension
    appears or disappears). XLA on the CPU is the reference (TF's eager Bitcast is the same bytes)."""
    x = random_array(np.random.default_rng(seed), shape, F32)

    def f(x):
        u8 = tf.bitcast(x, tf.uint8)
        return (tf.bitcast(x, tf.int32), u8, tf.bitcast(x, tf.float16), tf.bitcast(tf.reverse(u8, [-1]), tf.int32),
                tf.bitcast(tf.reshape(tf.bitcast(x, tf.int16), (-1, 4)), tf.int64) if math.prod(shape) % 2 == 0
                else tf.bitcast(tf.cast(x, tf.float64), tf.int32))
    assert_matches_tf(f, x)


def test_bitcast_resize_copies_misaligned_regions():
    """Narrow -> wide bitcast of a tensor whose regions split wide elements: copied to a linear mapping first."""
    from kernels.device import DEVICES
    from xla_lowering.hlo.ir import Instruction, Shape
    from xla_lowering.lower import LowerCtx
    from xla_lowering.lower.popops_elementwise import bitcast_resize
    from xla_lowering.program import ProgramBuilder

    b = ProgramBuilder(DEVICES["mk2"].with_tiles(4))
    x = b.add_tensor(Shape("u8", (3, 4)), tiles=[0, 1, 2], starts=[0, 3, 8], counts=[3, 5, 4], name="x")
    param = Instruction("parameter", x.shape, attrs={"number": 0})
    inst = Instruction("bitcast-convert", Shape("s32", (3,)), [param])
    y = bitcast_resize(LowerCtx(b, inst), x)
    assert y.shape == Shape("s32", (3,)) and int(y.counts.sum()) == 3
    copies = list(b.steps())
    assert len(copies) == 1, "one copy into an aligned mapping"
    regrained = b.tensors[-1]
    assert regrained.name.endswith("/regrain") and np.all(regrained.starts % 4 == 0)
    # every s32 element is the 4 consecutive bytes of u8 elements 4i..4i+3 of the copy
    np.testing.assert_array_equal(y.element_syms(), regrained.element_syms()[::4])
    wide = b.add_tensor(Shape("u8", (3, 4)), tiles=[0, 1], starts=[0, 4], counts=[4, 8], name="aligned")
    z = bitcast_resize(LowerCtx(b, inst), wide)
    assert len(list(b.steps())) == 1, "aligned regions are viewed without a copy"
    np.testing.assert_array_equal(z.syms, wide.syms)
    np.testing.assert_array_equal(z.counts, [1, 2])


# --- HLO the TF ops above do not emit ----------------------------------------------------------------
def _run_hlo_text(text: str, *args):
    """Compile HLO text for the session's device model and run it on a fresh simulated IPU."""
    from kernels.engine import Engine
    from xla_lowering.compiler import CompileOptions, compile_module
    from xla_lowering.hlo.text import parse_module
    exe = compile_module(parse_module(text), get_strategy().device_model, CompileOptions(progress=False))
    outs, _ = Engine(exe).run(list(args))
    return outs


def _total_order_key(x: np.ndarray) -> np.ndarray:
    sint = {2: np.int16, 4: np.int32, 8: np.int64}[x.itemsize]
    bits = x.view(sint)
    return bits ^ ((bits >> (8 * x.itemsize - 1)) & np.iinfo(sint).max)


@pytest.mark.parametrize("dtype", ["f16", "f32", "f64"])
def test_compare_totalorder(dtype):
    """compare with type=TOTALORDER (JAX's sort, NaN-aware max): -NaN < -inf < ... < -0 < +0 < ... < inf < NaN."""
    npdt = {"f16": np.float16, "f32": np.float32, "f64": np.float64}[dtype]
    vals = np.array([np.nan, -np.nan, -np.inf, np.inf, -0.0, 0.0, 1.0, -1.0, 2.5, 1e-3], npdt)
    x = np.repeat(vals, len(vals))
    y = np.tile(vals, len(vals))
    n = len(x)
    text = f"""HloModule m
ENTRY e {{
  x = {dtype}[{n}] parameter(0)
  y = {dtype}[{n}] parameter(1)
  lt = pred[{n}] compare(x, y), direction=LT, type=TOTALORDER
  eq = pred[{n}] compare(x, y), direction=EQ, type=TOTALORDER
  ge = pred[{n}] compare(x, y), direction=GE, type=TOTALORDER
  plain = pred[{n}] compare(x, y), direction=LT
  ROOT t = (pred[{n}], pred[{n}], pred[{n}], pred[{n}]) tuple(lt, eq, ge, plain)
}}"""
    lt, eq, ge, plain = _run_hlo_text(text, x, y)
    kx, ky = _total_order_key(x), _total_order_key(y)
    np.testing.assert_array_equal(lt, kx < ky)
    np.testing.assert_array_equal(eq, kx == ky)
    np.testing.assert_array_equal(ge, kx >= ky)
    np.testing.assert_array_equal(plain, x < y)           # the default (partial order) is unchanged


def test_integer_power_matches_xla():
    """Integer pow with negative exponents as XLA on the CPU computes it: 1 for base 1, +-1 for base -1, else 0."""
    x = np.array([2, -2, 1, -1, -1, 0, 3, 7, 5, -3], np.int32)
    y = np.array([10, 3, -5, -5, -4, 0, 19, -1, -2, 0], np.int32)
    assert_matches_tf(lambda x, y: tf.pow(x, y), x, y, reference="xla")
    assert_matches_tf(lambda x, y: tf.pow(x, y), x.astype(np.int64), y.astype(np.int64), reference="xla")


def test_round_afz_cbrt_clz_from_hlo_text():
    """Elementwise opcodes TF does not emit: round-nearest-afz (ties away from zero), cbrt, count-leading-zeros."""
    x = np.array([0.5, -0.5, 1.5, 2.5, -2.5, 0.49, 3.0, -7.1], np.float32)
    u = np.array([0, 1, 2**31, 2**31 - 1, 12345, 2**16, 7, 2**32 - 1], np.uint32)
    text = """HloModule m
ENTRY e {
  x = f32[8] parameter(0)
  u = u32[8] parameter(1)
  r = f32[8] round-nearest-afz(x)
  c = f32[8] cbrt(x)
  z = u32[8] count-leading-zeros(u)
  ROOT t = (f32[8], f32[8], u32[8]) tuple(r, c, z)
}"""
    r, c, z = _run_hlo_text(text, x, u)
    np.testing.assert_array_equal(r, np.sign(x) * np.floor(np.abs(x) + 0.5))
    np.testing.assert_allclose(c, np.cbrt(x), rtol=1e-6)
    np.testing.assert_array_equal(z, [32 - int(v).bit_length() for v in u])
