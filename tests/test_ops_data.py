"""Data movement, contractions, reductions, softmax, rng and the quickstart function on the simulated IPU.

TensorFlow on the CPU is the reference (``assert_matches_tf``); random-number ops cannot match TF's values, so
their shape, type, range and moments are checked instead. Contractions and sums use integer-valued floats
where summation order would otherwise matter (every order adds them exactly), plus random data with the loose
tolerance. Gather, scatter and dynamic slices are tested elsewhere.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

import tf_ipu
from conftest import assert_matches_tf, dtype_id, examples, get_strategy, random_array, seeds, shapes, tf

F32, F16, S32, S64 = np.float32, np.float16, np.int32, np.int64
DATA_DTYPES = [F32, F16, S32, S64, np.bool_]


def _rng(seed):
    return np.random.default_rng(seed)


def _int_valued(rng, shape, dtype, low=-3, high=4):
    return rng.integers(low, high, size=shape).astype(dtype)


# --- broadcast -----------------------------------------------------------------------------------
@st.composite
def broadcast_case(draw, max_rank=4):
    """(input shape, target shape): the input is a suffix of the target with some dims set to 1."""
    target = draw(shapes(max_rank=max_rank, max_size=20_000))
    keep = draw(st.integers(0, len(target)))
    src = tuple(d if draw(st.booleans()) else 1 for d in target[len(target) - keep:])
    return src, target


@pytest.mark.parametrize("dtype", DATA_DTYPES, ids=dtype_id)
@given(case=broadcast_case(), seed=seeds)
def test_broadcast_to(dtype, case, seed):
    src, target = case
    x = random_array(_rng(seed), src, dtype)
    assert_matches_tf(lambda x: tf.broadcast_to(x, target), x)


@given(case=broadcast_case(), seed=seeds)
def test_implicit_broadcasting(case, seed):
    """Binary ops whose operands broadcast against each other (both sides have 1s, ranks differ)."""
    src, target = case
    rng = _rng(seed)
    other = tuple(1 if (d != 1 and rng.random() < 0.5) else d for d in target)
    x, y = random_array(rng, src, F32), random_array(rng, other, F32)
    assert_matches_tf(lambda x, y: (x + y, x * y - 1.0, tf.maximum(x, y)), x, y)


# --- reshape, transpose, reverse -----------------------------------------------------------------
def _factorize(n: int, rng) -> tuple[int, ...]:
    """A random shape with ``n`` elements."""
    dims, rest = [], n
    for p in (2, 3, 5, 7, 11, 13, 17, 31, 97, 127, 257):
        while rest % p == 0 and rng.random() < 0.7:
            dims.append(p)
            rest //= p
    dims.append(rest)
    rng.shuffle(dims)
    # merge some neighbours so ranks vary
    out = []
    for d in dims:
        if out and rng.random() < 0.4:
            out[-1] *= d
        else:
            out.append(d)
    return tuple(out)


@pytest.mark.parametrize("dtype", [F32, F16, S64], ids=dtype_id)
@given(shape=shapes(), seed=seeds)
def test_reshape(dtype, shape, seed):
    rng = _rng(seed)
    x = random_array(rng, shape, dtype)
    new = _factorize(math.prod(shape), rng)
    assert_matches_tf(lambda x: (tf.reshape(x, new), tf.reshape(x * 2, new), tf.reshape(x, [-1])), x)


@st.composite
def shape_and_perm(draw):
    shape = draw(shapes(min_rank=1, max_rank=4))
    perm = draw(st.permutations(range(len(shape))))
    return shape, tuple(perm)


@pytest.mark.parametrize("dtype", [F32, F16, S32, np.bool_], ids=dtype_id)
@given(case=shape_and_perm(), seed=seeds)
def test_transpose(dtype, case, seed):
    shape, perm = case
    x = random_array(_rng(seed), shape, dtype)
    assert_matches_tf(lambda x: tf.transpose(x, perm), x)


@given(case=shape_and_perm(), seed=seeds)
def test_transpose_reshape_chain(case, seed):
    shape, perm = case
    x = random_array(_rng(seed), shape, F32)
    assert_matches_tf(lambda x: tf.reshape(tf.transpose(tf.reshape(x, shape), perm), [-1]) + 1.0, x)


@st.composite
def shape_and_axes(draw, min_rank=1, max_rank=4, max_size=40_000):
    shape = draw(shapes(min_rank=min_rank, max_rank=max_rank, max_size=max_size))
    axes = draw(st.lists(st.integers(0, len(shape) - 1), unique=True)) if shape else []
    return shape, sorted(axes)


@pytest.mark.parametrize("dtype", [F32, S32], ids=dtype_id)
@given(case=shape_and_axes(), seed=seeds)
def test_reverse(dtype, case, seed):
    shape, axes = case
    x = random_array(_rng(seed), shape, dtype)
    assert_matches_tf(lambda x: tf.reverse(x, axes), x)


# --- slices --------------------------------------------------------------------------------------
@st.composite
def strided_slice_case(draw):
    shape = draw(shapes(min_rank=1, max_rank=4))
    index = []
    for d in shape:
        step = draw(st.sampled_from([1, 1, 2, 3, -1, -2]))
        start = draw(st.one_of(st.none(), st.integers(-d, d)))
        stop = draw(st.one_of(st.none(), st.integers(-d - 1, d)))
        index.append(slice(start, stop, step))
    return shape, tuple(index)


@pytest.mark.parametrize("dtype", [F32, F16, S64], ids=dtype_id)
@examples(15)
@given(case=strided_slice_case(), seed=seeds)
def test_strided_slice(dtype, case, seed):
    """Python slicing of tensors (StridedSlice), including negative strides (XLA: reverse + slice)."""
    shape, index = case
    x = random_array(_rng(seed), shape, dtype)
    if np.asarray(x)[index].size == 0:
        index = tuple(slice(None, None, s.step) for s in index)
    assert_matches_tf(lambda x: x[index], x)


@given(shape=shapes(min_rank=2, max_rank=4, min_size=4), seed=seeds)
def test_slice_begin_size(shape, seed):
    rng = _rng(seed)
    x = random_array(rng, shape, F32)
    begin = [int(rng.integers(0, d)) for d in shape]
    size = [int(rng.integers(1, d - b + 1)) if rng.random() < 0.7 else -1 for b, d in zip(begin, shape)]
    assert_matches_tf(lambda x: (tf.slice(x, begin, size), x[..., :1], x[1:] if shape[0] > 1 else x), x)


# --- concatenate, pad ----------------------------------------------------------------------------
@st.composite
def concat_case(draw):
    shape = draw(shapes(min_rank=1, max_rank=4, max_size=10_000))
    axis = draw(st.integers(0, len(shape) - 1))
    n = draw(st.integers(1, 4))
    sizes = [draw(st.sampled_from([1, 2, 3, 7, 16, 33])) for _ in range(n)]
    return [shape[:axis] + (s,) + shape[axis + 1:] for s in sizes], axis


@pytest.mark.parametrize("dtype", [F32, F16, S32, np.bool_], ids=dtype_id)
@given(case=concat_case(), seed=seeds)
def test_concat(dtype, case, seed):
    shapes_, axis = case
    rng = _rng(seed)
    xs = [random_array(rng, s, dtype) for s in shapes_]
    assert_matches_tf(lambda *xs: tf.concat(list(xs), axis), *xs)
    if len(shapes_) > 1:
        assert_matches_tf(lambda *xs: tf.concat([xs[0], xs[-1], xs[0]], axis=axis - len(shapes_[0])), *xs)


@st.composite
def pad_case(draw, mode):
    shape = draw(shapes(min_rank=1, max_rank=4, max_size=10_000))
    pads = []
    for d in shape:
        limit = {"CONSTANT": 5, "REFLECT": d - 1, "SYMMETRIC": d}[mode]
        pads.append([draw(st.integers(0, max(0, min(limit, 5)))), draw(st.integers(0, max(0, min(limit, 5))))])
    return shape, pads


@pytest.mark.parametrize("dtype", [F32, F16, S32], ids=dtype_id)
@pytest.mark.parametrize("mode", ["CONSTANT", "REFLECT", "SYMMETRIC"])
@given(data=st.data(), seed=seeds)
def test_pad(mode, dtype, data, seed):
    shape, pads = data.draw(pad_case(mode))
    x = random_array(_rng(seed), shape, dtype)
    if mode == "CONSTANT":
        value = np.asarray(7, dtype).item()
        assert_matches_tf(lambda x: (tf.pad(x, pads), tf.pad(x, pads, constant_values=value)), x)
    else:
        assert_matches_tf(lambda x: tf.pad(x, pads, mode=mode), x)


def test_pad_negative_and_interior():
    """HLO pad with negative (cropping) and interior padding (XLA's own Pad op; XLA on the CPU is the reference)."""
    from tensorflow.compiler.tf2xla.python import xla
    x = np.arange(5 * 7 * 3, dtype=np.float32).reshape(5, 7, 3)

    def f(x):
        return xla.pad(x, tf.constant(-1.0), [1, -2, 0], [-1, 3, 2], [2, 0, 1])
    want = tf.function(f, jit_compile=True)(tf.constant(x)).numpy()
    got = get_strategy().run(f, (tf.constant(x),)).numpy()
    np.testing.assert_array_equal(got, want)


# --- iota, constants, structure ------------------------------------------------------------------
@given(n=st.integers(1, 3000), start=st.integers(-50, 50), delta=st.sampled_from([1, 2, 3, -1, -7]))
def test_range(n, start, delta):
    limit = start + n * delta

    def f(x):
        return (tf.range(n), tf.range(start, limit, delta), tf.range(float(start), float(limit), delta / 4.0),
                x + tf.cast(tf.range(n), tf.float32), tf.range(n, dtype=tf.int64))
    assert_matches_tf(f, np.ones(n, np.float32))


def test_iota_2d_and_band_part():
    """2-D iotas (matrix_band_part compares row and column iotas) and tf.eye."""
    x = np.random.default_rng(0).standard_normal((37, 70)).astype(np.float32)
    assert_matches_tf(lambda x: (tf.linalg.band_part(x, 3, 5), tf.linalg.band_part(x, -1, 0),
                                 tf.eye(37, 70), tf.eye(5, dtype=tf.int32)), x)


def test_constants_of_every_dtype():
    rng = np.random.default_rng(3)
    consts = {
        "f32": rng.standard_normal((33, 17)).astype(np.float32),
        "f16": rng.standard_normal((4, 9)).astype(np.float16),
        "s32": rng.integers(-2**31, 2**31 - 1, (300,)).astype(np.int32),
        "s64": rng.integers(-2**62, 2**62, (5, 5)).astype(np.int64),
        "u8": rng.integers(0, 256, (70,)).astype(np.uint8),
        "bool": rng.random((3, 3, 3)) < 0.5,
        "scalar": np.float32(2.5),
    }

    def f(x):
        out = {k: tf.constant(v) for k, v in consts.items()}
        out["sum"] = x + tf.constant(consts["f32"])
        return out
    assert_matches_tf(f, rng.standard_normal((33, 17)).astype(np.float32))


def test_nested_outputs():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    y = np.arange(5, dtype=np.int32)

    def f(x, y):
        return {"a": (x, x * 2.0, [y, y + 1]), "b": {"c": tf.reduce_sum(x), "d": (y > 2,)}, "e": [x[0]]}
    got = assert_matches_tf(f, x, y)
    assert isinstance(got["a"][2], list) and isinstance(got["b"]["d"], tuple)


def test_output_is_an_input_and_duplicate_outputs():
    x = np.arange(6, dtype=np.float32)
    assert_matches_tf(lambda x: (x, x, x + 1.0, x + 1.0), x)


@pytest.mark.parametrize("dtype", [F32, S32], ids=dtype_id)
@given(shape=shapes(min_rank=0, max_rank=3, max_size=5_000), depth=st.integers(1, 40),
       axis=st.sampled_from([-1, 0]), seed=seeds)
def test_one_hot(dtype, shape, depth, axis, seed):
    idx = _rng(seed).integers(-1, depth + 1, size=shape).astype(np.int32)     # out of range: all off
    on, off = np.asarray(5, dtype).item(), np.asarray(-2, dtype).item()
    tdt = tf.as_dtype(dtype)
    assert_matches_tf(lambda i: (tf.one_hot(i, depth, dtype=tdt, axis=axis),
                                 tf.one_hot(i, depth, on_value=on, off_value=off, dtype=tdt)), idx)


# --- dot, matmul, einsum -------------------------------------------------------------------------
dims_mnk = st.sampled_from([1, 2, 3, 5, 8, 17, 31, 64, 100])


def _matmul_data(rng, shape, dtype):
    if dtype == F32:
        return rng.standard_normal(shape).astype(F32)
    return _int_valued(rng, shape, dtype)          # f16 and s32: sums exact in any order


@pytest.mark.parametrize("dtype", [F32, F16, S32], ids=dtype_id)
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
@examples(8)
@given(m=dims_mnk, n=dims_mnk, k=dims_mnk, seed=seeds)
def test_matmul(ta, tb, dtype, m, n, k, seed):
    rng = _rng(seed)
    a = _matmul_data(rng, (k, m) if ta else (m, k), dtype)
    b = _matmul_data(rng, (n, k) if tb else (k, n), dtype)
    assert_matches_tf(lambda a, b: tf.matmul(a, b, transpose_a=ta, transpose_b=tb), a, b, loose=True)


@pytest.mark.parametrize("dtype", [F32, F16], ids=dtype_id)
@examples(8)
@given(batch=st.lists(st.sampled_from([1, 2, 3, 5]), min_size=1, max_size=2), m=dims_mnk, n=dims_mnk,
       k=dims_mnk, bcast=st.booleans(), seed=seeds)
def test_batch_matmul(dtype, batch, m, n, k, bcast, seed):
    rng = _rng(seed)
    a = _matmul_data(rng, (*batch, m, k), dtype)
    b_batch = [1] * len(batch) if bcast else batch
    b = _matmul_data(rng, (*b_batch, k, n), dtype)
    # TF's eager f16 BatchMatMul (oneDNN) is wrong, and can crash, on CPUs with AVX512-FP16/AMX: for f16 the
    # reference is TF's XLA on the CPU
    assert_matches_tf(lambda a, b: (a @ b, tf.matmul(a, b, adjoint_b=False)), a, b, loose=True,
                      reference="xla" if dtype == F16 else "eager")


EINSUMS = {
    "bij,bjk->bik": [(3, 17, 8), (3, 8, 5)],
    "bhqd,bhkd->bhqk": [(2, 3, 9, 16), (2, 3, 7, 16)],          # two batch dims (attention scores)
    "ijk,jkl->il": [(5, 6, 7), (6, 7, 4)],                       # two contracting dims
    "abcd,dbe->ace": [(4, 3, 5, 6), (6, 3, 2)],                  # contracting dims out of order
    "bij,bkj->bik": [(2, 33, 10), (2, 20, 10)],
    "i,i->": [(100,), (100,)],                                   # dot product
    "i,j->ij": [(17,), (9,)],                                    # outer product
    "bi,bi->b": [(64, 31), (64, 31)],                            # batched dot
    "abc,cd->abd": [(2, 70, 33), (33, 12)],
}


@pytest.mark.parametrize("dtype", [F32, F16, S32], ids=dtype_id)
@pytest.mark.parametrize("eq", sorted(EINSUMS))
def test_einsum(eq, dtype):
    rng = _rng(hash(eq) & 0xFFFF)
    a, b = (_matmul_data(rng, s, dtype) for s in EINSUMS[eq])
    assert_matches_tf(lambda a, b: tf.einsum(eq, a, b), a, b, loose=True)


def test_matmul_large_f32():
    """A matmul big enough to be split over the tiles in M, N and K (partials reduced over K)."""
    rng = _rng(7)
    a, b = rng.standard_normal((200, 300)).astype(F32), rng.standard_normal((300, 150)).astype(F32)
    assert_matches_tf(lambda a, b: tf.matmul(a, b), a, b, loose=True)


@pytest.mark.parametrize("dtype", [F32, F16, S32], ids=dtype_id)
@examples(6)
@given(m=st.integers(1, 12), n=st.integers(1, 12), k=st.integers(2000, 9000), batch=st.integers(1, 3), seed=seeds)
def test_matmul_long_k_partials_reduced_where_they_are(dtype, m, n, k, batch, seed):
    """A long contraction is split over tiles (K parts); each output block's partials are summed by the K-part
    tiles themselves, one chunk each, from one run per tile (``k_parts`` copy), not gathered element by element."""
    rng = _rng(seed)
    a, b = _matmul_data(rng, (batch, m, k), dtype), _matmul_data(rng, (batch, k, n), dtype)
    fn = lambda a, b: tf.matmul(a, b)
    assert_matches_tf(fn, a, b, loose=True, reference="xla" if dtype == F16 else "eager")
    from kernels.program import Copy, walk
    exe = get_strategy().compile(fn, (tf.constant(a), tf.constant(b)))
    parts = [s for s in walk(exe.program) if isinstance(s, Copy) and s.name.endswith("/k_parts")]
    assert parts, [s.name for s in walk(exe.program) if isinstance(s, Copy)]
    mem = exe.device.tile_memory
    for step in parts:              # every tile receives at most one run from each tile of its output block
        dst, src = step.rows[:, 0] // mem, step.rows[:, 1] // mem
        pairs = dst * exe.device.num_tiles + src
        assert len(np.unique(pairs)) == len(pairs) and (step.rows[:, 3] == 1).all()


# --- reductions ----------------------------------------------------------------------------------
REDUCTIONS = {"sum": tf.reduce_sum, "mean": tf.reduce_mean, "max": tf.reduce_max, "min": tf.reduce_min,
              "prod": tf.reduce_prod}


def _axes_arg(axes, rank, all_axes):
    if all_axes:
        return None
    return [a - rank if k % 2 else a for k, a in enumerate(axes)]      # mix positive and negative axes


@pytest.mark.parametrize("dtype", [F32, S32, S64], ids=dtype_id)
@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@given(case=shape_and_axes(max_rank=4, max_size=20_000), all_axes=st.booleans(), keepdims=st.booleans(),
       seed=seeds)
def test_reduce(name, dtype, case, all_axes, keepdims, seed):
    shape, axes = case
    rng = _rng(seed)
    if name == "prod":
        # factors of magnitude 1 and a few 2s: no overflow in f32, ints wrap identically in any order
        x = rng.choice(np.array([1, -1, 1, 2], dtype), size=shape).astype(dtype)
        if dtype == F32:
            x = np.where(rng.random(shape) < 0.1, 2, x * rng.uniform(0.99, 1.01, shape)).astype(F32)
            x = np.where(rng.random(shape) < 0.02, 0.5, x).astype(F32)
    else:
        x = _int_valued(rng, shape, dtype, -50, 50)
    axis = _axes_arg(axes, len(shape), all_axes)
    assert_matches_tf(lambda x: REDUCTIONS[name](x, axis=axis, keepdims=keepdims), x, loose=True)


@given(case=shape_and_axes(max_size=40_000), seed=seeds)
def test_reduce_sum_random_f32(case, seed):
    """Random (not integer-valued) data: summation order differs from TF's, within the loose tolerance."""
    shape, axes = case
    x = _rng(seed).uniform(0, 1, shape).astype(F32)
    assert_matches_tf(lambda x: (tf.reduce_sum(x, axis=axes), tf.reduce_mean(x), tf.reduce_max(x, axis=axes)),
                      x, loose=True)


@pytest.mark.parametrize("name", ["sum", "mean", "max", "min"])
@given(case=shape_and_axes(max_rank=3, max_size=2_000), keepdims=st.booleans(), seed=seeds)
def test_reduce_f16(name, case, keepdims, seed):
    """f16 reductions (f32 partials on the device); integer-valued data keeps every partial sum exact in f16."""
    shape, axes = case
    x = _int_valued(_rng(seed), shape, F16, -1, 2)
    assert_matches_tf(lambda x: REDUCTIONS[name](x, axis=axes, keepdims=keepdims), x)


@pytest.mark.parametrize("name", ["any", "all"])
@given(case=shape_and_axes(max_size=20_000), all_axes=st.booleans(), keepdims=st.booleans(), seed=seeds)
def test_reduce_bool(name, case, all_axes, keepdims, seed):
    shape, axes = case
    rng = _rng(seed)
    x = rng.random(shape) < (0.05 if name == "any" else 0.95)
    fn = tf.reduce_any if name == "any" else tf.reduce_all
    axis = _axes_arg(axes, len(shape), all_axes)
    assert_matches_tf(lambda x: fn(x, axis=axis, keepdims=keepdims), x)


@pytest.mark.parametrize("dtype", [F32, S32], ids=dtype_id)
@given(case=shape_and_axes(min_rank=1, max_rank=3, max_size=10_000), seed=seeds)
def test_argmax_argmin(dtype, case, seed):
    """Variadic (value, index) reductions; a small value range makes ties common (the first index wins)."""
    shape, axes = case
    axis = axes[0] if axes else 0
    x = _int_valued(_rng(seed), shape, dtype, -5, 5)
    assert_matches_tf(lambda x: (tf.argmax(x, axis), tf.argmin(x, axis, output_type=tf.int32)), x)


def test_reduce_max_min_with_infinities():
    x = np.array([[-np.inf, -np.inf], [np.inf, 1.0], [-3.0, -np.inf]], np.float32)
    assert_matches_tf(lambda x: (tf.reduce_max(x, 1), tf.reduce_min(x, 1), tf.reduce_max(x), tf.reduce_min(x, 0),
                                 tf.argmax(x, 0), tf.argmin(x, 1)), x)


# --- softmax -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [F32, F16], ids=dtype_id)
@given(shape=shapes(min_rank=1, max_rank=4, max_size=20_000), axis_pick=st.integers(0, 3), seed=seeds)
def test_softmax(dtype, shape, axis_pick, seed):
    axis = axis_pick % len(shape) - len(shape)
    x = (_rng(seed).standard_normal(shape) * 4).astype(dtype)
    assert_matches_tf(lambda x: (tf.nn.softmax(x, axis=axis), tf.nn.log_softmax(x, axis=axis)), x, loose=True)


# --- random numbers ------------------------------------------------------------------------------
def _moments_ok(x, mean, std, what):
    x = np.asarray(x, np.float64).reshape(-1)
    n = x.size
    se_mean = std / math.sqrt(n)
    assert abs(x.mean() - mean) < 5 * se_mean, f"{what}: mean {x.mean()} vs {mean} (standard error {se_mean})"
    # the sample std's standard error is about std / sqrt(2n) (normal) and smaller for the uniform
    assert abs(x.std() - std) < 5 * std / math.sqrt(2 * n) + 1e-3 * std, f"{what}: std {x.std()} vs {std}"


@pytest.mark.parametrize("dtype", [F32, F16], ids=dtype_id)
def test_random_uniform(dtype):
    tdt = tf.as_dtype(dtype)
    shape = (64, 250)

    def f():
        return tf.random.uniform(shape, dtype=tdt), tf.random.uniform(shape, -3.0, 5.0, dtype=tdt)
    s = get_strategy()
    u01, uab = (np.asarray(t) for t in s.run(f))
    for u, (lo, hi) in ((u01, (0, 1)), (uab, (-3, 5))):
        assert u.shape == shape and u.dtype == dtype
        assert u.min() >= lo and u.max() < hi
        _moments_ok(u, (lo + hi) / 2, (hi - lo) / math.sqrt(12), f"uniform[{lo}, {hi})")
    assert not np.array_equal(u01, (uab - -3) / 8), "the two rng ops must draw different samples"
    # a histogram in 10 bins: each bin within 5 standard errors of n/10
    counts = np.histogram(u01, bins=10, range=(0, 1))[0]
    expected = u01.size / 10
    assert np.all(np.abs(counts - expected) < 5 * math.sqrt(expected)), counts
    again = np.asarray(s.run(f)[0])
    assert not np.array_equal(again, u01), "a second run must draw new numbers"


@pytest.mark.parametrize("dtype", [F32, F16], ids=dtype_id)
def test_random_normal(dtype):
    tdt = tf.as_dtype(dtype)
    shape = (100, 3, 57)

    def f(x):
        return tf.random.normal(shape, dtype=tdt), tf.random.normal(shape, mean=2.0, stddev=0.5, dtype=tdt) + x
    z, w = (np.asarray(t) for t in get_strategy().run(f, (tf.zeros(shape, tdt),)))
    assert z.shape == shape and z.dtype == dtype and w.dtype == dtype
    assert np.all(np.isfinite(z)) and np.all(np.isfinite(w))
    _moments_ok(z, 0.0, 1.0, "normal(0, 1)")
    _moments_ok(w, 2.0, 0.5, "normal(2, 0.5)")
    # tails: about 4.55% of standard normal samples are beyond 2 sigma
    frac = np.mean(np.abs(z) > 2)
    assert abs(frac - 0.0455) < 5 * math.sqrt(0.0455 * 0.9545 / z.size), frac


@pytest.mark.parametrize("dtype", [S32, S64], ids=dtype_id)
def test_random_uniform_int(dtype):
    """RandomUniformInt (HLO rng of an integer type): every value of [minval, maxval) about equally often."""
    tdt = tf.as_dtype(dtype)
    lo, hi = (-2**31, 2**31 - 1) if dtype == S32 else (-2**40, 2**40)

    def f():
        return (tf.random.uniform((100, 70), 0, 10, dtype=tdt), tf.random.uniform((2000,), -5, -2, dtype=tdt),
                tf.random.uniform((5000,), lo, hi, dtype=tdt))
    small, neg, wide = (np.asarray(t) for t in get_strategy().run(f))
    assert small.dtype == dtype and small.shape == (100, 70) and neg.shape == (2000,)
    counts = np.bincount(small.reshape(-1), minlength=10)
    assert len(counts) == 10 and np.all(np.abs(counts - 700) < 5 * math.sqrt(700 * 0.9)), counts
    assert set(np.unique(neg).tolist()) == {-5, -4, -3}
    assert wide.min() >= lo and wide.max() < hi
    _moments_ok(wide.astype(np.float64), (lo + hi) / 2, (hi - lo) / math.sqrt(12), "wide integer range")


def test_random_in_a_computation():
    """Dropout-like use: rng feeding a compare and a select."""
    x = np.ones((128, 64), np.float32)

    def f(x):
        keep = tf.random.uniform(x.shape) < 0.75
        return tf.where(keep, x / 0.75, 0.0)
    y = np.asarray(get_strategy().run(f, (tf.constant(x),)))
    assert set(np.unique(y).tolist()) <= {0.0, np.float32(1 / 0.75)}
    kept = np.mean(y > 0)
    assert abs(kept - 0.75) < 5 * math.sqrt(0.75 * 0.25 / y.size), kept


# --- the quickstart --------------------------------------------------------------------------------
def quickstart(x, w, b):
    return tf.nn.softmax(tf.nn.relu(x @ w + b))


@pytest.mark.parametrize("batch,features,classes", [(32, 100, 10), (1, 7, 3), (257, 64, 33)])
def test_quickstart(batch, features, classes):
    rng = _rng(batch)
    x = rng.standard_normal((batch, features)).astype(F32)
    w = (rng.standard_normal((features, classes)) * 0.1).astype(F32)
    b = rng.standard_normal(classes).astype(F32)
    got = assert_matches_tf(quickstart, x, w, b, loose=True)
    np.testing.assert_allclose(got.sum(axis=-1), 1.0, rtol=1e-5)
    report = get_strategy().last_report()
    assert report.cycles_total > 0


# --- zero-size tensors -----------------------------------------------------------------------------
def test_zero_size_intermediates():
    """Empty slices flowing through elementwise ops, concatenate, pad, transpose, reverse and broadcast."""
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert_matches_tf(lambda x: (x[1:1] * 2.0, tf.concat([x[:0], x], 0), tf.pad(x[:, :0], [[0, 0], [1, 2]],
                                                                                constant_values=3.0),
                                 tf.transpose(x[:0]), tf.reverse(x[:, :0], [0]), tf.broadcast_to(x[:0, :1], (4, 0, 5))),
                      x)


def test_reduce_over_empty_dimension():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert_matches_tf(lambda x: (tf.reduce_sum(x[:, 2:2], 1), tf.reduce_max(x[:, :0], 1), tf.reduce_sum(x[:0])), x)


@pytest.mark.parametrize("case", ["K=0", "M=0"])
def test_matmul_with_a_zero_dimension(case):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    if case == "K=0":
        assert_matches_tf(lambda x: tf.matmul(x[:, :0], tf.transpose(x[:, :0])), x)
    else:
        assert_matches_tf(lambda x: tf.matmul(x[:0], tf.transpose(x)), x)


def test_zero_element_arguments():
    e = np.zeros((0, 3), np.float32)
    x = np.arange(2, dtype=np.float32)
    assert_matches_tf(lambda e, x: (tf.exp(e) + 1.0, x * 2.0), e, x)


# --- the whole device (slow) -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def full_mk2():
    return tf_ipu.IPUStrategy(tf_ipu.IPUConfig(device="mk2", compile_progress=False))


@pytest.mark.slow
def test_quickstart_on_all_1472_tiles(full_mk2):
    rng = _rng(1472)
    x = rng.standard_normal((256, 784)).astype(F32)
    w = (rng.standard_normal((784, 10)) * 0.05).astype(F32)
    b = rng.standard_normal(10).astype(F32)
    assert_matches_tf(quickstart, x, w, b, loose=True, strategy=full_mk2)
    assert full_mk2.last_report().tiles_used > 1000


@pytest.mark.slow
def test_big_matmul_reduce_transpose_on_all_tiles(full_mk2):
    a = _rng(1024).standard_normal((1024, 1024)).astype(F32)
    assert_matches_tf(lambda a, b: a @ b, a, a.T.copy(), loose=True, atol=1e-3, strategy=full_mk2)
    assert_matches_tf(lambda a: (tf.reduce_sum(a, 0), tf.transpose(a) * 2.0, tf.nn.softmax(a)), a, loose=True,
                      atol=1e-3, strategy=full_mk2)
