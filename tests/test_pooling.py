"""popnn on the simulated IPU: pooling (reduce-window), its gradient (select-and-scatter), cumulative ops and
batch normalisation.

TensorFlow on the CPU is the reference (``assert_matches_tf``). Max-pool gradients use data without ties (TF's
CPU kernel and XLA agree then); ties are checked against TF's own XLA, which defines the first maximal element
in window order as the selected one. Forms no TF op emits (variadic reduce-window, base and window dilation,
negative padding, other select/scatter computations) are HLO text checked against the NumPy reference evaluator,
and the window index maps alone against the reference on many more cases (no compile needed).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import assert_matches_tf, dtype_id, random_array, seeds, tf
from kernels.device import DEVICES
from kernels.engine import Engine
from xla_lowering.compiler import CompileOptions, compile_module
from xla_lowering.hlo import reference
from xla_lowering.hlo.ir import Instruction, Shape
from xla_lowering.hlo.text import parse_module
from xla_lowering.lower.popnn import covering_windows, window_index

import keras  # noqa: E402

F32, F16 = np.float32, np.float16
MK2_16 = DEVICES["mk2"].with_tiles(16)


def distinct(rng, shape, dtype) -> np.ndarray:
    """Values without ties (a permutation; exact in f16 up to 2048 elements), so that max-pool picks one."""
    n = int(np.prod(shape))
    values = rng.permutation(n) - n // 2
    if n > 2048 or dtype != F16:
        values = values * 0.37
    return values.reshape(shape).astype(dtype)


def _pool_pair(ksize, strides, padding):
    return lambda x: (tf.nn.max_pool2d(x, ksize, strides, padding), tf.nn.avg_pool2d(x, ksize, strides, padding))


# --- forward pooling ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [F32, F16], ids=dtype_id)
@pytest.mark.parametrize("padding", ["VALID", "SAME"])
@pytest.mark.parametrize("ksize,strides", [(2, 2), (3, 2), (3, 1), ((2, 3), (1, 2))])
def test_pool2d(ksize, strides, padding, dtype):
    x = random_array(np.random.default_rng(1), (2, 9, 8, 5), dtype)
    assert_matches_tf(_pool_pair(ksize, strides, padding), x)


@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_pool1d_and_3d(padding):
    rng = np.random.default_rng(2)
    x1, x3 = random_array(rng, (3, 11, 4), F32), random_array(rng, (2, 5, 6, 4, 3), F32)

    def f(a, b):
        return (tf.nn.max_pool1d(a, 3, 2, padding), tf.nn.avg_pool1d(a, 2, 1, padding),
                tf.nn.max_pool3d(b, 2, 2, padding), tf.nn.avg_pool3d(b, (3, 2, 2), (2, 1, 2), padding))
    assert_matches_tf(f, x1, x3)


def test_large_window_splits_rows():
    # few windows of many elements: the reduction planner cuts rows into parts (padding included), also for
    # the window selection of the max-pool gradient
    rng = np.random.default_rng(3)
    x, dy = distinct(rng, (1, 40, 40, 2), F32), random_array(rng, (1, 2, 2, 2), F32)

    def f(x, dy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.nn.max_pool2d(x, 39, 1, "VALID")
        return y, tf.nn.avg_pool2d(x, 23, 20, "SAME"), tape.gradient(y, x, output_gradients=dy)
    assert_matches_tf(f, x, dy, loose=True)


@st.composite
def pool_case(draw):
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padding = draw(st.sampled_from(["VALID", "SAME"]))
    if padding == "VALID":
        kh, kw = min(kh, h), min(kw, w)
    return (n, h, w, c), (kh, kw), (sh, sw), padding


@given(case=pool_case(), seed=seeds)
def test_pool2d_random_shapes(case, seed):
    shape, ksize, strides, padding = case
    assert_matches_tf(_pool_pair(ksize, strides, padding), random_array(np.random.default_rng(seed), shape, F32))


# --- gradients --------------------------------------------------------------------------------------
def _pool_grads(ksize, strides, padding, rank=2):
    max_pool = {1: tf.nn.max_pool1d, 2: tf.nn.max_pool2d, 3: tf.nn.max_pool3d}[rank]
    avg_pool = {1: tf.nn.avg_pool1d, 2: tf.nn.avg_pool2d, 3: tf.nn.avg_pool3d}[rank]

    def f(x, dy):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            ym, ya = max_pool(x, ksize, strides, padding), avg_pool(x, ksize, strides, padding)
        return tape.gradient(ym, x, output_gradients=dy), tape.gradient(ya, x, output_gradients=dy)
    return f


def _out_shape(shape, ksize, strides, padding):
    k = [ksize] * (len(shape) - 2) if isinstance(ksize, int) else list(ksize)
    s = [strides] * (len(shape) - 2) if isinstance(strides, int) else list(strides)
    spatial = [(-(-n // st_) if padding == "SAME" else (n - kk) // st_ + 1) for n, kk, st_ in zip(shape[1:-1], k, s)]
    return (shape[0], *spatial, shape[-1])


@pytest.mark.parametrize("dtype", [F32, F16], ids=dtype_id)
@pytest.mark.parametrize("padding", ["VALID", "SAME"])
@pytest.mark.parametrize("ksize,strides", [(3, 2), (2, 2), ((3, 2), 1)])
def test_pool2d_gradients(ksize, strides, padding, dtype):
    rng = np.random.default_rng(4)
    shape = (2, 7, 6, 3)
    x = distinct(rng, shape, dtype)
    dy = random_array(rng, _out_shape(shape, ksize, strides, padding), dtype)
    assert_matches_tf(_pool_grads(ksize, strides, padding), x, dy)


def test_pool1d_and_3d_gradients():
    rng = np.random.default_rng(5)
    x1, x3 = distinct(rng, (2, 9, 3), F32), distinct(rng, (1, 5, 4, 6, 2), F32)
    dy1 = random_array(rng, _out_shape(x1.shape, 3, 2, "SAME"), F32)
    dy3 = random_array(rng, _out_shape(x3.shape, 2, 2, "VALID"), F32)

    def f(a, da, b, db):
        return _pool_grads(3, 2, "SAME", 1)(a, da) + _pool_grads(2, 2, "VALID", 3)(b, db)
    assert_matches_tf(f, x1, dy1, x3, dy3)


def _first_max_grad(x, dy, k, stride, pad_low):
    """Max-pool gradient with XLA's select-and-scatter semantics: each window's first maximal element in
    row-major window order (padding never selected) receives that window's gradient."""
    out = np.zeros_like(x)
    for n, i, j, c in np.ndindex(*dy.shape):
        rows = range(max(i * stride - pad_low, 0), min(i * stride - pad_low + k, x.shape[1]))
        cols = range(max(j * stride - pad_low, 0), min(j * stride - pad_low + k, x.shape[2]))
        cells = [(r, q) for r in rows for q in cols]
        r, q = max(cells, key=lambda rq: (x[n, rq[0], rq[1], c], -cells.index(rq)))
        out[n, r, q, c] += dy[n, i, j, c]
    return out


def test_max_pool_gradient_ties_pick_the_first_maximum(strategy):
    # all-equal windows and repeated maxima. The HLO reference (XLA's definition, and its evaluator) selects the
    # first maximal element in window order; XLA's CPU backend rewrites select-and-scatter and may pick another
    # of the tied elements, so the expected values are computed here
    x = np.tile(np.array([[1, 3, 3], [3, 0, 3], [2, 3, 1]], F32), (2, 2))[None, :, :, None]
    x = np.concatenate([x, np.zeros_like(x)], axis=-1)
    dy = random_array(np.random.default_rng(6), _out_shape(x.shape, 3, 2, "SAME"), F32)

    def f(x, dy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.nn.max_pool2d(x, 3, 2, "SAME")
        return tape.gradient(y, x, output_gradients=dy)
    got = strategy.run(f, (tf.constant(x), tf.constant(dy)))
    np.testing.assert_allclose(np.asarray(got), _first_max_grad(x, dy, 3, 2, 0), rtol=1e-6)


@given(case=pool_case(), seed=seeds)
@settings(max_examples=4)
def test_max_pool_gradient_random_shapes(case, seed):
    shape, ksize, strides, padding = case
    rng = np.random.default_rng(seed)
    x, dy = distinct(rng, shape, F32), random_array(rng, _out_shape(shape, ksize, strides, padding), F32)
    assert_matches_tf(_pool_grads(ksize, strides, padding), x, dy)


# --- cumulative ops (reduce-window over one dimension, padded with the init value) -------------------------
@pytest.mark.parametrize("dtype", [F32, np.int32], ids=dtype_id)
@pytest.mark.parametrize("exclusive,reverse", [(False, False), (True, False), (False, True), (True, True)])
def test_cumsum(exclusive, reverse, dtype):
    x = random_array(np.random.default_rng(7), (5, 37, 3), dtype)

    def f(x):
        return (tf.cumsum(x, axis=1, exclusive=exclusive, reverse=reverse),
                tf.cumsum(x, axis=0, exclusive=exclusive, reverse=reverse))
    assert_matches_tf(f, x, loose=True)


def test_cumprod_and_cumulative_logsumexp():
    # cumprod is a simple multiply reducer; logsumexp a reducer computation with -inf padding (generic path)
    rng = np.random.default_rng(8)
    x = random_array(rng, (4, 70), F32, 0.5, 1.5)
    assert_matches_tf(lambda x: (tf.math.cumprod(x, axis=1), tf.math.cumprod(x, axis=0, exclusive=True),
                                 tf.math.cumulative_logsumexp(x, axis=1),
                                 tf.math.cumulative_logsumexp(x, axis=0, reverse=True)), x, loose=True)


# --- Keras layers ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [F32, F16], ids=dtype_id)
def test_keras_pooling_layers(dtype):
    layers = [keras.layers.MaxPooling2D(2), keras.layers.MaxPooling2D(3, 2, padding="same"),
              keras.layers.AveragePooling2D(2), keras.layers.AveragePooling2D(3, 2, padding="same"),
              keras.layers.GlobalAveragePooling2D(), keras.layers.GlobalMaxPooling2D()]
    for layer in layers:
        layer.build((2, 9, 10, 4))
    x = random_array(np.random.default_rng(9), (2, 9, 10, 4), dtype)
    assert_matches_tf(lambda x: tuple(layer(x) for layer in layers), x)


def _keras_bn(dtype, seed=10):
    bn = keras.layers.BatchNormalization(dtype="float16" if dtype == F16 else "float32")
    bn.build((4, 5, 6, 3))
    rng = np.random.default_rng(seed)
    bn.set_weights([rng.uniform(0.5, 1.5, 3).astype(F32), rng.standard_normal(3).astype(F32),
                    rng.standard_normal(3).astype(F32), rng.uniform(0.5, 2, 3).astype(F32)])
    return bn


@pytest.mark.parametrize("dtype", [F32, F16], ids=dtype_id)
@pytest.mark.parametrize("training", [True, False])
def test_keras_batch_normalization(training, dtype):
    bn = _keras_bn(dtype)
    rng = np.random.default_rng(11)
    x = (random_array(rng, (4, 5, 6, 3), F32) + 1).astype(dtype)
    dy = random_array(rng, (4, 5, 6, 3), dtype)

    def f(x, dy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = bn(x, training=training)
        dx, dgamma, dbeta = tape.gradient(y, [x, bn.gamma.value, bn.beta.value], output_gradients=dy)
        return y, dx, dgamma, dbeta
    assert_matches_tf(f, x, dy, loose=True)


# --- tf.nn.fused_batch_norm: XLA's batch-norm-training / -inference / -grad instructions -----------------
@pytest.mark.parametrize("dtype", [F32, F16], ids=dtype_id)
@pytest.mark.parametrize("training", [True, False])
def test_fused_batch_norm(training, dtype):
    rng = np.random.default_rng(12)
    x = (random_array(rng, (3, 4, 5, 6), F32) + 2).astype(dtype)
    dy = random_array(rng, (3, 4, 5, 6), dtype)
    scale, offset = rng.uniform(0.5, 1.5, 6).astype(F32), rng.standard_normal(6).astype(F32)
    mean, var = rng.standard_normal(6).astype(F32), rng.uniform(0.5, 2, 6).astype(F32)

    def f(x, dy, scale, offset, mean, var):
        with tf.GradientTape() as tape:
            tape.watch([x, scale, offset])
            if training:
                y, m, v = tf.compat.v1.nn.fused_batch_norm(x, scale, offset, epsilon=1e-3, is_training=True)
            else:
                y, m, v = tf.compat.v1.nn.fused_batch_norm(x, scale, offset, mean, var, epsilon=1e-3,
                                                           is_training=False)
        return (y, m, v) + tuple(tape.gradient(y, [x, scale, offset], output_gradients=dy))
    assert_matches_tf(f, x, dy, scale, offset, mean, var, loose=True)


def test_fused_batch_norm_nchw():
    rng = np.random.default_rng(13)
    x, scale, offset = random_array(rng, (2, 3, 4, 5), F32), rng.uniform(0.5, 1.5, 3).astype(F32), \
        rng.standard_normal(3).astype(F32)
    assert_matches_tf(lambda x, s, o: tf.compat.v1.nn.fused_batch_norm(x, s, o, data_format="NCHW",
                                                                        is_training=True)[0], x, scale, offset,
                      loose=True)


# --- HLO forms no TF op emits, against the NumPy reference evaluator -------------------------------------
VARIADIC_ARGMAX = """
HloModule argmax

argmax {{
  av = f32[] parameter(0)
  ai = s32[] parameter(1)
  bv = f32[] parameter(2)
  bi = s32[] parameter(3)
  gt = pred[] compare(bv, av), direction=GT
  eq = pred[] compare(bv, av), direction=EQ
  lt = pred[] compare(bi, ai), direction=LT
  tie = pred[] and(eq, lt)
  take = pred[] or(gt, tie)
  v = f32[] select(take, bv, av)
  i = s32[] select(take, bi, ai)
  ROOT r = (f32[], s32[]) tuple(v, i)
}}

ENTRY main {{
  x = f32[{x}] parameter(0)
  i = s32[{x}] iota(), iota_dimension=1
  ninf = f32[] constant(-inf)
  big = s32[] constant(1000)
  ROOT r = (f32[{out}], s32[{out}]) reduce-window(x, i, ninf, big), window={{{window}}}, to_apply=argmax
}}
"""

DILATED_MAX = """
HloModule dilated

max {{
  a = f32[] parameter(0)
  b = f32[] parameter(1)
  ROOT m = f32[] maximum(a, b)
}}

ENTRY main {{
  x = f32[5,7] parameter(0)
  init = f32[] constant(-2)
  ROOT r = f32[{out}] reduce-window(x, init), window={{{window}}}, to_apply=max
}}
"""

SELECT_SCATTER = """
HloModule sas

{select_name} {{
  a = f32[] parameter(0)
  b = f32[] parameter(1)
  ROOT c = pred[] compare(a, b), direction={direction}
}}

{scatter_name} {{
  a = f32[] parameter(0)
  b = f32[] parameter(1)
  ROOT c = f32[] {scatter}(a, b)
}}

ENTRY main {{
  x = f32[7,6] parameter(0)
  s = f32[{out}] parameter(1)
  init = f32[] constant({init})
  ROOT r = f32[7,6] select-and-scatter(x, s, init), window={{{window}}}, select={select_name}, scatter={scatter_name}
}}
"""


def _run_against_reference(text, args, exact=True):
    want = reference.evaluate_module(parse_module(text), args)
    exe = compile_module(parse_module(text), MK2_16, CompileOptions(progress=False))
    got, _ = Engine(exe).run(args)
    want = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, want):
        if exact:
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("x,window,out", [
    ("6,50", "size=3x4 stride=2x2 pad=1_0x1_1", "3,25"),
    ("2,70", "size=1x64 stride=1x8 pad=0_0x10_10", "2,4"),        # long rows: split into parts, padding in both
])
def test_hlo_variadic_reduce_window_argmax(x, window, out):
    text = VARIADIC_ARGMAX.format(x=x, window=window, out=out)
    data = np.random.default_rng(14).integers(-3, 4, tuple(int(d) for d in x.split(","))).astype(F32)  # ties
    _run_against_reference(text, [data])


@pytest.mark.parametrize("window,out", [
    ("size=2x3 stride=2x1 pad=1_-1x0_2 lhs_dilate=2x1 rhs_dilate=1x2", "4,5"),
    ("size=3x2 stride=1x3 pad=-1_2x1_1 lhs_dilate=1x3 rhs_dilate=2x1 rhs_reversal=1x0", "2,7"),
])
def test_hlo_reduce_window_dilation_and_negative_padding(window, out):
    text = DILATED_MAX.format(window=window, out=out)
    _run_against_reference(text, [np.random.default_rng(15).standard_normal((5, 7)).astype(F32)])


@pytest.mark.parametrize("direction,scatter,init,window,out,operand", [
    ("GT", "add", "0", "size=3x2 stride=2x2 pad=1_1x0_0", "4,3", "7,6"),       # GT: the last maximum is selected
    ("LE", "maximum", "-5", "size=2x3 stride=1x2 pad=0_0x1_2", "6,4", "7,6"),  # LE: the first minimum, combined by max
    ("GE", "multiply", "1", "size=4x4 stride=1x1 pad=2_1x3_0", "7,6", "7,6"),  # heavily overlapping windows
    ("GE", "add", "0.5", "size=1x80 stride=1x1 pad=0_0x79_79", "2,83", "2,4"),  # 80 windows an element: parts
])
def test_hlo_select_and_scatter(direction, scatter, init, window, out, operand):
    text = SELECT_SCATTER.format(select_name="sel", scatter_name="sct", direction=direction, scatter=scatter,
                                 init=init, window=window, out=out).replace("f32[7,6]", f"f32[{operand}]")
    rng = np.random.default_rng(16)
    x = rng.integers(-2, 3, tuple(int(d) for d in operand.split(","))).astype(F32)   # ties on purpose
    s = rng.integers(-3, 4, tuple(int(d) for d in out.split(","))).astype(F32)
    _run_against_reference(text, [x, s])


# --- the window index maps alone (no compile) ------------------------------------------------------------
@st.composite
def window_case(draw):
    rank = draw(st.integers(1, 3))
    dims = tuple(draw(st.integers(1, 6)) for _ in range(rank))
    window = []
    for n in dims:
        base = draw(st.integers(1, 3))
        lo, hi = draw(st.integers(-1, 3)), draw(st.integers(-1, 3))
        padded = (n - 1) * base + 1 + lo + hi
        size = draw(st.integers(1, 4))
        wdil = draw(st.integers(1, 2))
        if padded < (size - 1) * wdil + 1:
            lo, hi, size, wdil = max(lo, 0), max(hi, 0), 1, 1
        window.append(dict(size=size, stride=draw(st.integers(1, 3)), pad_low=lo, pad_high=hi,
                           window_dilation=wdil, base_dilation=base, reversal=draw(st.booleans())))
    return dims, tuple(window)


def _add_computation():
    from xla_lowering.hlo.ir import Computation
    a = Instruction("parameter", Shape("f64"), attrs={"number": 0})
    b = Instruction("parameter", Shape("f64"), attrs={"number": 1})
    root = Instruction("add", Shape("f64"), [a, b])
    return Computation("add", [a, b, root], root)


@given(case=window_case(), seed=seeds)
@settings(max_examples=150)
def test_window_index_matches_reference(case, seed):
    dims, window = case
    index, out_dims = window_index(dims, list(window))
    x = np.random.default_rng(seed).integers(-50, 50, dims).astype(np.float64)
    inst = Instruction("reduce-window", Shape("f64", out_dims), attrs={"window": window},
                       called={"to_apply": _add_computation()})
    want = reference.evaluate_instruction(inst, [x, np.float64(0.5)])
    vals = np.where(index < 0, 0.5, x.reshape(-1)[np.maximum(index, 0)])
    np.testing.assert_array_equal(vals.sum(axis=1).reshape(out_dims) + 0.5, want)
    # every operand element lists exactly the windows that hold it, in window order
    cover = covering_windows(index, x.size)
    for e in range(x.size):
        np.testing.assert_array_equal(cover[e][cover[e] >= 0], np.flatnonzero((index == e).any(axis=1)))


BOX_REDUCE = """
HloModule box

red {{
  a = f32[] parameter(0)
  b = f32[] parameter(1)
  ROOT m = f32[] {op}(a, b)
}}

ENTRY main {{
  x = f32[2,9,8,3] parameter(0)
  init = f32[] constant({init})
  ROOT r = f32[{out}] reduce-window(x, init), window={{{window}}}, to_apply=red
}}
"""


@pytest.mark.parametrize("op,init,window,out", [
    ("maximum", "-inf", "size=1x3x3x1 stride=1x2x2x1 pad=0_0x1_1x1_1x0_0", "2,5,4,3"),    # ResNet's max-pool
    ("maximum", "-2", "size=1x3x2x1 stride=1x2x1x1 pad=0_0x1_1x0_1x0_0 lhs_dilate=1x1x2x1", "2,5,15,3"),
    ("minimum", "0.5", "size=1x2x3x1 stride=1x1x3x1 pad=0_0x0_1x2_2x0_0", "2,9,4,3"),
    ("add", "0", "size=1x3x3x1 stride=1x2x2x1 pad=0_0x1_1x1_1x0_0", "2,5,4,3"),
])
def test_box_window_over_the_limit_runs_one_pass_per_dim(monkeypatch, op, init, window, out):
    # a window that would stage more than MAX_WINDOW_ELEMENTS at once is reduced one dimension at a time
    from xla_lowering.lower import popnn
    text = BOX_REDUCE.format(op=op, init=init, window=window, out=out)
    x = np.random.default_rng(16).standard_normal((2, 9, 8, 3)).astype(F32)
    sizes = window.split()[0][len("size="):].split("x")
    full = int(np.prod([int(d) for d in out.split(",")])) * int(np.prod([int(k) for k in sizes]))
    monkeypatch.setattr(popnn, "MAX_WINDOW_ELEMENTS", full - 1)
    exe = compile_module(parse_module(text), MK2_16, CompileOptions(progress=False))
    from kernels.program import Execute, walk
    names = [s.cs.name for s in walk(exe.program) if isinstance(s, Execute)]
    assert any("/pass0" in n for n in names)        # the first pass; the last one is the instruction itself
    _run_against_reference(text, [x], exact=op != "add")


def test_box_window_over_the_limit_refused_when_passes_would_change_results(monkeypatch):
    # a sum from a non-zero init would count the init once per pass: still refused, naming the limit
    from xla_lowering.errors import UnsupportedOpError
    from xla_lowering.lower import popnn
    text = BOX_REDUCE.format(op="add", init="1", window="size=1x3x3x1 stride=1x2x2x1 pad=0_0x1_1x1_1x0_0",
                             out="2,5,4,3")
    monkeypatch.setattr(popnn, "MAX_WINDOW_ELEMENTS", 100)
    with pytest.raises(UnsupportedOpError, match="window elements to stage"):
        compile_module(parse_module(text), MK2_16, CompileOptions(progress=False))
