"""Differential tests: the NumPy reference evaluator against TensorFlow's XLA on the CPU.

Each case traces a ``tf.function(jit_compile=True)`` to unoptimized HLO (``stage="hlo_serialized"``),
imports it with ``tf_ipu.hlo_proto.module_from_proto``, evaluates it with ``reference.evaluate_module``
and compares with what XLA computes for the same inputs. Every traced module also goes through
``passes.run_pipeline``, which must not change a single output value (a broad corpus for the passes).

Tolerances (``TOLERANCES``): f32 rtol 1e-5 / atol 1e-6, f16 rtol 1e-2 / atol 1e-3, f64 rtol 1e-12,
integers and pred exactly. Contractions and reductions use small integer-valued floats, which every
summation order adds exactly, so the f32 tolerance never has to absorb reordering error.

The ``xla.*`` wrappers (``tensorflow.compiler.tf2xla.python.xla``) reach HLO features TF ops never emit
(negative and interior padding, batching dims in gather/scatter, general reducers and comparators,
batch_group_count, integer division by zero...), so XLA itself is the oracle for those too.
"""
import copy
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

tf = pytest.importorskip("tensorflow")
from tensorflow.compiler.tf2xla.python import xla  # noqa: E402
from tensorflow.compiler.xla import xla_data_pb2  # noqa: E402

from tf_ipu.hlo_proto import module_from_proto  # noqa: E402
from xla_lowering.hlo.reference import evaluate_module  # noqa: E402
from xla_lowering.hlo.text import parse_module  # noqa: E402
from xla_lowering.passes import run_pipeline  # noqa: E402

TOLERANCES = {np.dtype(np.float32): dict(rtol=1e-5, atol=1e-6), np.dtype(np.float16): dict(rtol=1e-2, atol=1e-3),
              np.dtype(np.float64): dict(rtol=1e-12, atol=1e-12)}
FEW = settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
rng = np.random.default_rng(1234)


def normal(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def small_ints(*shape, dtype=np.float32, low=-3, high=4):
    """Integer-valued data: sums and products of these are exact in any order."""
    return rng.integers(low, high, size=shape).astype(dtype)


def assert_matches(got, want, what=""):
    want = np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    if want.dtype in TOLERANCES:
        np.testing.assert_allclose(got, want, err_msg=what, equal_nan=True, **TOLERANCES[want.dtype])
    else:
        np.testing.assert_array_equal(got, want, err_msg=what)


def check(fn, *args):
    """Trace ``fn`` for ``args``, evaluate its HLO with the reference, compare with XLA's result."""
    compiled = tf.function(lambda *a: fn(*a), jit_compile=True)  # TF API functions have extra kwargs
    module = module_from_proto(compiled.experimental_get_compiler_ir(*args)(stage="hlo_serialized"))
    assert len(module.entry.parameters) == len(args), "TF turned an argument into a compile-time constant"
    want = [w.numpy() for w in tf.nest.flatten(compiled(*args))]
    got = evaluate_module(module, [np.asarray(a) for a in args])
    got = list(got) if isinstance(got, tuple) else [got]
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        assert_matches(g, w, f"output {k}")
    # the same module after the pass pipeline must evaluate to exactly the same values
    optimized = evaluate_module(run_pipeline(copy.deepcopy(module)), [np.asarray(a) for a in args])
    for k, (g, o) in enumerate(zip(got, list(optimized) if isinstance(optimized, tuple) else [optimized])):
        np.testing.assert_array_equal(o, g, err_msg=f"the pass pipeline changed output {k}")
    return module


# --- elementwise ---------------------------------------------------------------------------------
UNARY_FLOAT = {
    "abs": tf.abs, "negate": tf.negative, "exp": tf.exp, "expm1": tf.math.expm1,
    "log": lambda x: tf.math.log(tf.abs(x) + 0.1), "log1p": lambda x: tf.math.log1p(tf.abs(x)),
    "sigmoid": tf.sigmoid, "tanh": tf.tanh, "sqrt": lambda x: tf.sqrt(tf.abs(x)),
    "rsqrt": lambda x: tf.math.rsqrt(tf.abs(x) + 0.5), "sin": tf.sin, "cos": tf.cos, "tan": tf.tan,
    "floor": lambda x: tf.floor(x * 3), "ceil": lambda x: tf.math.ceil(x * 3),
    "round_half_even": lambda x: tf.round(x * 4), "sign": tf.sign, "erf": tf.math.erf,
    "softplus": tf.nn.softplus, "gelu": tf.nn.gelu, "is_finite": lambda x: tf.math.is_finite(tf.math.log(x)),
    "clip": lambda x: tf.clip_by_value(x, -0.5, 0.5), "leaky": lambda x: tf.where(x > 0, x, 0.1 * x),
    "square": tf.square, "reciprocal": lambda x: 1.0 / (x + 3.0),
}


@pytest.mark.parametrize("name", sorted(UNARY_FLOAT))
def test_unary_float(name):
    check(UNARY_FLOAT[name], normal(3, 7))


BINARY_FLOAT = {
    "add": tf.add, "sub": tf.subtract, "mul": tf.multiply, "div": tf.divide, "max": tf.maximum,
    "min": tf.minimum, "atan2": tf.atan2, "pow": lambda x, y: tf.pow(tf.abs(x) + 0.1, y),
    "floormod": tf.math.floormod, "truncatemod": tf.truncatemod, "squared_difference": tf.math.squared_difference,
    "compare": lambda x, y: (x < y, x >= y, tf.equal(x, y), tf.not_equal(x, x * 0 + y)),
    "broadcasting": lambda x, y: x[:, :1] * y + x[0],
}


@pytest.mark.parametrize("name", sorted(BINARY_FLOAT))
def test_binary_float(name):
    check(BINARY_FLOAT[name], normal(4, 5), normal(4, 5))


INT_OPS = {
    "add": tf.add, "sub": tf.subtract, "mul": tf.multiply, "max": tf.maximum, "min": tf.minimum,
    "truncatediv": tf.truncatediv, "floordiv": tf.math.floordiv, "floormod": tf.math.floormod,
    "truncatemod": tf.truncatemod, "and": tf.bitwise.bitwise_and, "or": tf.bitwise.bitwise_or,
    "xor": tf.bitwise.bitwise_xor, "invert": lambda x, y: tf.bitwise.invert(x),
    "shifts": lambda x, y: (tf.bitwise.left_shift(x, y % 31), tf.bitwise.right_shift(x, y % 31)),
    "popcount": lambda x, y: tf.raw_ops.PopulationCount(x=x),
    "abs_neg_sign": lambda x, y: (tf.abs(x), -x, tf.sign(y)),
    "compare": lambda x, y: (x < y, x == y), "to_float": lambda x, y: tf.cast(x, tf.float32) / 3.0,
    "pow": lambda x, y: tf.pow(x, tf.abs(y) % 5),
}


@pytest.mark.parametrize("name", sorted(INT_OPS))
def test_int_ops(name):
    x = rng.integers(-1000, 1000, size=(3, 6)).astype(np.int32)
    y = rng.integers(1, 40, size=(3, 6)).astype(np.int32) * rng.choice([-1, 1], size=(3, 6)).astype(np.int32)
    check(INT_OPS[name], x, y)


def test_unsigned_and_int64():
    check(lambda a, b: (a // b, a % b, a * b, tf.bitwise.right_shift(a, b)),
          rng.integers(0, 9999, 8).astype(np.uint32), rng.integers(1, 99, 8).astype(np.uint32))
    check(lambda a, b: (a * b, a // b, tf.cast(a, tf.float64) * 0.5), rng.integers(-2**40, 2**40, 8),
          rng.integers(1, 2**20, 8))


def test_float_to_int_conversion_saturates():
    x = np.array([1.9, -1.9, 3e9, -3e9, np.nan, np.inf, -np.inf, 0.5, 255.9, 300.0], np.float32)
    check(lambda x: (tf.cast(x, tf.int32), tf.cast(x, tf.uint8), tf.cast(x, tf.int64), tf.cast(x, tf.bool)), x)


def test_float16():
    x, y = normal(4, 8, dtype=np.float16), normal(4, 8, dtype=np.float16)
    check(lambda x, y: (x + y, x * y, tf.exp(x), tf.tanh(x), tf.sigmoid(y), x / (tf.abs(y) + 1)), x, y)
    check(lambda x: (tf.reduce_sum(x, axis=1), tf.cast(x, tf.float32) * 3, tf.nn.relu(x)), x)


def test_bitcast_and_select():
    x = normal(3, 4)
    check(lambda x: (tf.bitcast(x, tf.int32), tf.bitcast(x, tf.uint16), tf.where(x > 0, x, -x)), x)


# --- reductions ----------------------------------------------------------------------------------
@FEW
@given(axes=st.lists(st.integers(0, 2), min_size=1, max_size=3, unique=True), keepdims=st.booleans())
def test_reductions(axes, keepdims):
    x = small_ints(3, 4, 5)
    check(lambda x: (tf.reduce_sum(x, axes, keepdims), tf.reduce_max(x, axes, keepdims),
                     tf.reduce_min(x, axes, keepdims), tf.reduce_mean(x, axes, keepdims),
                     tf.reduce_prod(x / 2, axes, keepdims)), x)


def test_logical_and_arg_reductions():
    x = small_ints(4, 6)
    check(lambda x: (tf.reduce_all(x > -2, axis=1), tf.reduce_any(x > 2, axis=0), tf.argmax(x, axis=1),
                     tf.argmin(x, axis=0), tf.reduce_logsumexp(x, axis=1), tf.nn.softmax(x)), x)


# --- contractions --------------------------------------------------------------------------------
@pytest.mark.parametrize("equation,lhs,rhs", [
    ("ij,jk->ik", (4, 5), (5, 3)), ("bij,bjk->bik", (2, 4, 5), (2, 5, 3)),
    ("bhqd,bhkd->bhqk", (2, 3, 4, 5), (2, 3, 6, 5)), ("abc,cd->abd", (2, 3, 4), (4, 5)), ("i,i->", (7,), (7,)),
    ("ij,j->i", (3, 4), (4,)), ("bij,jk->bki", (2, 3, 4), (4, 5)),
])
def test_einsum(equation, lhs, rhs):
    check(lambda a, b: tf.einsum(equation, a, b), small_ints(*lhs), small_ints(*rhs))


def test_matmul_variants():
    a, b = small_ints(2, 3, 4), small_ints(2, 5, 4)
    check(lambda a, b: (tf.matmul(a, b, transpose_b=True), tf.matmul(a, a, transpose_a=True)), a, b)
    check(lambda a, b: a @ b, small_ints(3, 4, dtype=np.int32), small_ints(4, 2, dtype=np.int32))


def test_dot_general_preferred_type():
    dn = xla_data_pb2.DotDimensionNumbers(lhs_contracting_dimensions=[2], rhs_contracting_dimensions=[1],
                                          lhs_batch_dimensions=[0], rhs_batch_dimensions=[0])
    a, b = small_ints(2, 3, 4, dtype=np.int8), small_ints(2, 4, 5, dtype=np.int8)
    check(lambda a, b: xla.dot_general(a, b, dn, preferred_element_type=tf.int32), a, b)


# --- data movement -------------------------------------------------------------------------------
@FEW
@given(perm=st.permutations([0, 1, 2, 3]))
def test_transpose(perm):
    check(lambda x: tf.transpose(x, perm) * 2.0, normal(2, 3, 4, 5))


def test_slices_and_shapes():
    x = normal(5, 6, 4)
    check(lambda x: (x[1:4, ::2], x[::-1, 1:, ::-2], x[:, None, 2], x[..., -1], tf.reshape(x, [6, 20]),
                     tf.concat([x, x * 2], axis=1), tf.reverse(x, [0, 2]), tf.tile(x[:2], [2, 1, 3]),
                     tf.broadcast_to(x[:1, :1], [3, 6, 4]), tf.expand_dims(x, 1)), x)


@pytest.mark.parametrize("mode", ["CONSTANT", "REFLECT", "SYMMETRIC"])
def test_tf_pad(mode):
    check(lambda x: tf.pad(x, [[1, 2], [2, 1]], mode=mode), normal(4, 5))


@FEW
@given(config=st.lists(st.tuples(st.integers(-2, 3), st.integers(-2, 3), st.integers(0, 2)), min_size=2, max_size=2))
def test_xla_pad_negative_and_interior(config):
    low, high, interior = (list(c) for c in zip(*config))
    check(lambda x: xla.pad(x, tf.constant(-1.0), low, high, interior), normal(3, 4))


def test_gathers():
    x, idx = normal(6, 5), np.array([[4, 0], [1, 1], [5, 2]], np.int32)
    check(lambda x, i: (tf.gather(x, i[:, 0]), tf.gather(x, i[:, 1], axis=1), tf.gather_nd(x, i),
                        tf.gather(tf.stack([x, -x]), i[:2], batch_dims=1)), x, idx)
    check(lambda x, i: tf.one_hot(i, 6, on_value=2.0, off_value=-1.0), x, idx)


def test_scatters():
    x, idx, upd = normal(6, 3), np.array([[4], [0], [4], [2]], np.int32), normal(4, 3)
    check(lambda x, i, u: (tf.tensor_scatter_nd_update(x, i[:3:2] + [[0], [1]], u[:2]),
                           tf.tensor_scatter_nd_add(x, i, u), tf.tensor_scatter_nd_max(x, i, u),
                           tf.math.unsorted_segment_sum(u, i[:, 0], 6)), x, idx, upd)


def test_xla_gather_with_batching_dims():
    dn = xla_data_pb2.GatherDimensionNumbers(offset_dims=[2], collapsed_slice_dims=[1], start_index_map=[1],
                                             index_vector_dim=2, operand_batching_dims=[0],
                                             start_indices_batching_dims=[0])
    operand, indices = normal(3, 7, 4), rng.integers(-2, 9, size=(3, 5, 1)).astype(np.int32)  # some clamp
    check(lambda o, i: xla.gather(o, i, dn, slice_sizes=[1, 1, 4]), operand, indices)


def test_xla_scatter_with_batching_dims_and_general_combiner():
    @tf.function
    def combine(a, b):
        return tf.maximum(a, b) * 2.0 - a

    dn = xla_data_pb2.ScatterDimensionNumbers(update_window_dims=[2], inserted_window_dims=[1],
                                              scatter_dims_to_operand_dims=[1], index_vector_dim=2,
                                              input_batching_dims=[0], scatter_indices_batching_dims=[0])
    operand, indices, updates = normal(3, 7, 4), rng.integers(0, 7, size=(3, 5, 1)).astype(np.int32), normal(3, 5, 4)
    fn = combine.get_concrete_function(tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.float32))
    check(lambda o, i, u: xla.scatter(o, i, u, fn, dn), operand, indices, updates)


def test_dynamic_slicing():
    x, start = normal(6, 5), np.array([4, -1], np.int32)  # clamped into range by XLA
    check(lambda x, s: (xla.dynamic_slice(x, s, [3, 2]), xla.dynamic_slice(x, s, [2, 5]),
                        xla.dynamic_update_slice(x, -x[:3, :2], s)), x, start)


# --- windows and convolutions ----------------------------------------------------------------------
@pytest.mark.parametrize("strides,padding,dilations",
                         [(1, "VALID", 1), (2, "SAME", 1), (1, "SAME", 2), (2, "VALID", 1)])
def test_conv2d(strides, padding, dilations):
    check(lambda x, w: tf.nn.conv2d(x, w, strides, padding, dilations=dilations), small_ints(2, 7, 8, 4),
          small_ints(3, 3, 4, 6))


def test_grouped_depthwise_transposed_convs():
    x = small_ints(2, 6, 6, 4)
    check(lambda x, w: tf.nn.conv2d(x, w, 1, "SAME"), x, small_ints(3, 3, 2, 6))  # 2 feature groups
    check(lambda x, w: tf.nn.depthwise_conv2d(x, w, [1, 2, 2, 1], "SAME"), x, small_ints(3, 3, 4, 2))
    check(lambda x, w: tf.nn.conv2d_transpose(x, w, [2, 13, 13, 3], 2, "VALID"), x, small_ints(3, 3, 3, 4))
    check(lambda x, w: tf.nn.conv1d(x, w, 2, "SAME"), small_ints(2, 9, 3), small_ints(3, 3, 5))


def test_conv_filter_gradients_use_batch_groups():
    x, w = small_ints(2, 6, 6, 4), small_ints(3, 3, 4, 2)

    def grads(x, w):
        with tf.GradientTape() as tape:
            tape.watch(w)
            y = tf.nn.depthwise_conv2d(x, w, [1, 1, 1, 1], "SAME")
        return tape.gradient(y, w)
    module = check(grads, x, w)
    assert any(i.attrs.get("batch_group_count", 1) > 1 for c in module.computations() for i in c.instructions)


def test_xla_conv_general():
    dn = xla_data_pb2.ConvolutionDimensionNumbers(
        input_batch_dimension=2, input_feature_dimension=0, input_spatial_dimensions=[1, 3],
        kernel_input_feature_dimension=3, kernel_output_feature_dimension=0, kernel_spatial_dimensions=[2, 1],
        output_batch_dimension=1, output_feature_dimension=3, output_spatial_dimensions=[2, 0])
    x, w = small_ints(4, 7, 2, 6), small_ints(6, 2, 3, 2)  # 2 feature groups of 2 input features
    check(lambda x, w: xla.conv(x, w, window_strides=[2, 1], padding=[(1, -1), (2, 0)], lhs_dilation=[1, 2],
                                rhs_dilation=[2, 1], dimension_numbers=dn, feature_group_count=2), x, w)


@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_pooling_and_gradients(padding):
    x = normal(2, 7, 6, 3)

    def pools(x):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            mx = tf.nn.max_pool2d(x, 3, 2, padding)
            av = tf.nn.avg_pool2d(x, 2, 2, padding)
        return mx, av, tape.gradient(mx, x), tape.gradient(av, x)
    module = check(pools, x)
    assert any(i.opcode == "select-and-scatter" for c in module.computations() for i in c.instructions)


def test_xla_reduce_window_and_select_and_scatter():
    @tf.function
    def add(a, b):
        return a + b

    @tf.function
    def ge(a, b):
        return a >= b
    scalar = tf.TensorSpec([], tf.float32)
    add_fn, ge_fn = add.get_concrete_function(scalar, scalar), ge.get_concrete_function(scalar, scalar)
    x, src = small_ints(5, 7), small_ints(3, 4)
    check(lambda x: xla.reduce_window(x, 0.0, add_fn, [2, 3], [2, 1], base_dilations=[2, 1], window_dilations=[1, 2],
                                      padding=[(1, 0), (2, -1)]), x)
    check(lambda x, s: xla.select_and_scatter(x, [2, 3], [2, 2], [(1, 0), (1, 1)], s, 0.0, ge_fn, add_fn), x, src)


def test_cumulative_ops():
    x = small_ints(3, 6)
    check(lambda x: (tf.cumsum(x, axis=1), tf.cumsum(x, axis=0, reverse=True, exclusive=True),
                     tf.math.cumprod(x / 2, axis=1)), x)


# --- control flow, sorting, batch norm -----------------------------------------------------------
def test_while_loop():
    def f(x):
        i, acc = tf.while_loop(lambda i, a: i < 5, lambda i, a: (i + 1, a * 0.5 + tf.cast(i, tf.float32)), (0, x))
        return i, acc
    check(f, normal(3))


def test_tensor_array_loop():
    def f(x):
        ta = tf.TensorArray(tf.float32, size=4)
        for i in tf.range(4):
            ta = ta.write(i, x[i] * tf.cast(i, tf.float32))
        return ta.stack()
    check(f, normal(4, 3))


def test_cond_and_switch_case():
    x = normal(4)
    for p in (True, False):
        check(lambda x, p: tf.cond(p, lambda: x * 2.0, lambda: x - 1.0), x, np.array(p))
    for k in (0, 2, 7):  # 7 is out of range: the last branch
        check(lambda x, k: tf.switch_case(k, [lambda: x, lambda: -x, lambda: x * x]), x, np.int32(k))


def test_sorts():
    x = normal(3, 8)
    x[0, 3] = x[0, 5]  # a tie: stable order matters for argsort
    check(lambda x: (tf.sort(x, axis=1), tf.sort(x, axis=0, direction="DESCENDING"),
                     tf.argsort(x, axis=1, stable=True)), x)
    check(lambda x: tf.math.top_k(x, k=3), x)


def test_xla_variadic_sort_with_comparator():
    @tf.function
    def by_abs_then_value(a, b, ia, ib):
        return tf.logical_or(tf.abs(a) < tf.abs(b), tf.logical_and(tf.abs(a) == tf.abs(b), ia > ib))
    s, i = tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.int32)
    cmp = by_abs_then_value.get_concrete_function(s, s, i, i)
    x = small_ints(2, 9)
    check(lambda x: xla.variadic_sort([x, tf.broadcast_to(tf.range(9), [2, 9])], 1, cmp, True), x)


def test_batch_norm():
    x, scale, offset, weights = normal(4, 3, 3, 5), normal(5) + 2, normal(5), normal(4, 3, 3, 5)

    def train(x, scale, offset):
        with tf.GradientTape() as tape:
            tape.watch([x, scale])
            y, mean, var = tf.compat.v1.nn.fused_batch_norm(x, scale, offset, epsilon=1e-3)[:3]
            loss = tf.reduce_sum(y * weights)  # y * y would cancel to noise in dL/dx
        return (y, mean, *tape.gradient(loss, [x, scale]),
                tf.compat.v1.nn.fused_batch_norm(x, scale, offset, mean, var, is_training=False)[0])
    module = check(train, x, scale, offset)
    opcodes = {i.opcode for c in module.computations() for i in c.instructions}
    assert {"batch-norm-training", "batch-norm-grad"} <= opcodes


# --- XLA-only semantics ----------------------------------------------------------------------------
def test_integer_division_edge_cases():
    x = np.array([7, -7, -2**31, -2**31, 5, 0, -9], np.int32)
    y = np.array([0, 0, -1, 2, -2, 0, 4], np.int32)
    check(lambda x, y: (xla.div(x, y), xla.rem(x, y)), x, y)
    ux, uy = np.array([7, 0, 9], np.uint32), np.array([0, 0, 4], np.uint32)
    check(lambda x, y: (x // y, x % y), ux, uy)  # unsigned floordiv/floormod are plain divide/remainder


def test_shifts_out_of_range():
    x = np.array([1, -8, 12345, -1, 7, -2**31], np.int32)
    s = np.array([0, 1, 31, 32, 40, -1], np.int32)
    check(lambda x, s: (xla.shift_left(x, s), xla.shift_right_logical(x, s), xla.shift_right_arithmetic(x, s)), x, s)


def test_reduce_precision_and_rounding():
    special = [1e-6, 7e4, 1e6, np.nan, -np.inf, 2.5, -0.5, 0.49999997]
    x = np.concatenate([normal(20) * 1e3, special]).astype(np.float32)
    check(lambda x: (xla.reduce_precision(x, 5, 10), xla.reduce_precision(x, 8, 7), xla.reduce_precision(x, 3, 1),
                     xla.round(x), tf.round(x)), x)


def test_xla_misc_elementwise():
    x, y = normal(6), normal(6)
    check(lambda x, y: (xla.clamp(-0.5, x, y), xla.sign(x), xla.pow(tf.abs(x), y), xla.rem(x, y),
                        xla.bitcast_convert_type(x, tf.int32)), x, y)


# --- semantics TF cannot reach, on hand-written HLO --------------------------------------------------
def run_text(text, *args, rng_seed=None):
    module = parse_module(text)
    return evaluate_module(module, list(args), rng=None if rng_seed is None else np.random.default_rng(rng_seed))


def test_bit_ops_and_total_order_compare():
    out = run_text("""
HloModule m
ENTRY e {
  x = s32[5] parameter(0)
  f = f32[5] parameter(1)
  g = f32[5] parameter(2)
  c = s32[5] count-leading-zeros(x)
  p = s32[5] popcnt(x)
  lt = pred[5] compare(f, g), direction=LT, type=TOTALORDER
  ROOT t = (s32[5], s32[5], pred[5]) tuple(c, p, lt)
}
""", np.array([0, 1, -1, 256, 2**30], np.int32), np.float32([-0.0, np.nan, -np.inf, -np.nan, 1]),
        np.float32([0.0, np.inf, -np.nan, np.nan, 1]))
    np.testing.assert_array_equal(out[0], [32, 31, 0, 23, 1])
    np.testing.assert_array_equal(out[1], [0, 1, 32, 1, 1])
    np.testing.assert_array_equal(out[2], [True, False, False, True, False])


def test_f16_rounds_after_every_op():
    a, b = np.float16(2048), np.float16(1)
    out = run_text("""
HloModule m
ENTRY e {
  a = f16[] parameter(0)
  b = f16[] parameter(1)
  s = f16[] add(a, b)
  ROOT d = f16[] subtract(s, a)
}
""", a, b)
    assert out == 0  # 2049 is not an f16: the sum rounds to 2048 before the subtraction


def test_rng_distributions():
    out = run_text("""
HloModule m
ENTRY e {
  lo = f32[] constant(2)
  hi = f32[] constant(5)
  u = f32[20000] rng(lo, hi), distribution=rng_uniform
  n = f32[20000] rng(lo, hi), distribution=rng_normal
  a = s32[] constant(-3)
  b = s32[] constant(4)
  i = s32[20000] rng(a, b), distribution=rng_uniform
  ROOT t = (f32[20000], f32[20000], s32[20000]) tuple(u, n, i)
}
""", rng_seed=7)
    u, n, i = out
    assert 2 <= u.min() and u.max() < 5 and abs(u.mean() - 3.5) < 0.05
    assert abs(n.mean() - 2) < 0.1 and abs(n.std() - 5) < 0.1
    assert set(np.unique(i)) == set(range(-3, 4))


GENERAL_REDUCER_AND_COMPARATOR = """
HloModule m

add_impl {
  a = f32[] parameter(0)
  b = f32[] parameter(1)
  ROOT s = f32[] add(a, b)
}

add_via_call {
  a = f32[] parameter(0)
  b = f32[] parameter(1)
  ROOT c = f32[] call(a, b), to_apply=add_impl
}

greater_via_call {
  a = f32[] parameter(0)
  b = f32[] parameter(1)
  d = f32[] call(a, b), to_apply=add_impl
  z = f32[] constant(0)
  ROOT gt = pred[] compare(a, b), direction=GT
}

ENTRY e {
  x = f32[3,5] parameter(0)
  zero = f32[] constant(0)
  r = f32[3] reduce(x, zero), dimensions={1}, to_apply=add_via_call
  s = f32[3,5] sort(x), dimensions={1}, to_apply=greater_via_call
  i = s32[2] constant({1, 2})
  u = f32[2,2] constant({{10, 20}, {30, 40}})
  dus = f32[3,5] dynamic-update-slice(x, u, i, i)
  ROOT t = (f32[3], f32[3,5], f32[3,5]) tuple(r, s, dus)
}
"""


def test_general_computations_take_the_scalar_path():
    x = small_ints(3, 5)
    before = x.copy()
    r, s, dus = run_text(GENERAL_REDUCER_AND_COMPARATOR.replace("u, i, i)", "u, c1, c1)").replace(
        "  dus =", "  c1 = s32[] constant(4)\n  dus ="), x)
    np.testing.assert_array_equal(r, x.sum(axis=1))
    np.testing.assert_array_equal(s, -np.sort(-x, axis=1))
    expected = x.copy()
    expected[1:3, 3:5] = [[10, 20], [30, 40]]  # start 4 is clamped to 1 (rows) and 3 (columns)
    np.testing.assert_array_equal(dus, expected)
    np.testing.assert_array_equal(x, before)  # inputs are never written


def test_errors_name_the_instruction():
    with pytest.raises(NotImplementedError, match="custom-call target 'MyKernel'.*%k"):
        run_text("""
HloModule m
ENTRY e {
  x = f32[2] parameter(0)
  ROOT k = f32[2] custom-call(x), custom_call_target="MyKernel"
}
""", np.zeros(2, np.float32))
    with pytest.raises(ValueError, match=r"argument of HLO 'parameter' %x .* expected f32\[2\]"):
        run_text("HloModule m\nENTRY e {\n  ROOT x = f32[2] parameter(0)\n}\n", np.zeros(3, np.float32))
    module = parse_module("HloModule m\nENTRY e {\n  x = f32[2] parameter(0)\n  ROOT n = f32[2] negate(x)\n}\n")
    module.entry.root.opcode = "frobnicate"
    with pytest.raises(NotImplementedError, match="no rule for HLO 'frobnicate' %n"):
        evaluate_module(module, [np.zeros(2, np.float32)])


def test_stateless_random_ops_draw_xlas_numbers():
    """rng-bit-generator is XLA's bit stream: the reference draws TF-with-XLA's numbers (the float arithmetic
    after the bits, Box-Muller's transcendentals, may differ by an ulp)."""
    compiled = tf.function(lambda s: (tf.random.stateless_uniform([4000], s, minval=2.0, maxval=3.0),
                                      tf.random.stateless_normal([4001], s),
                                      tf.random.stateless_uniform([7, 3], s, alg="threefry", dtype=tf.float16)),
                           jit_compile=True)
    seed = np.array([1, 2], np.int32)
    module = module_from_proto(compiled.experimental_get_compiler_ir(seed)(stage="hlo_serialized"))
    assert any(i.opcode == "rng-bit-generator" for i in module.entry.instructions)
    uniform, normal_, half = evaluate_module(module, [seed])
    want = [t.numpy() for t in compiled(seed)]
    assert 2 <= uniform.min() and uniform.max() < 3 and abs(uniform.mean() - 2.5) < 0.02
    np.testing.assert_allclose(uniform, want[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(normal_, want[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(half, want[2])
