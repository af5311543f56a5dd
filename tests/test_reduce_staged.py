"""Reductions that run where their input lives (xla_lowering/mapping/reduce_plan.py): the first stage over each
tile's own regions, then a tree of partials. Differential against TensorFlow over shapes, reduced dimensions,
element types, ops and input tile mappings cut at odd places; the plan alone against NumPy; the codelet's
column fast paths against a sequential double-precision reference; and the program of a batch-norm statistic
(no element-wise gather)."""
from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tf_ipu
from conftest import assert_matches_tf, examples, get_strategy, seeds
from hypothesis import given
from hypothesis import strategies as st

from kernels import dtypes
from kernels.codelets import reduce as reduce_codelet
from kernels.program import Copy, Execute, walk
from xla_lowering.lower import popops_reduce
from xla_lowering.mapping import reduce_plan as plan

F32, F16, S32 = np.float32, np.float16, np.int32

_SMALL: dict[str, tf_ipu.IPUStrategy] = {}


def _strategy(variant: str):
    """'session': the 64-tile session device; 'tiles5': 5 tiles (huge regions, several vertices a tile);
    'tiny_plan': 64 tiles with tiny first-stage vertices and a tree fan-in of 3 (several tree levels)."""
    if variant == "session":
        return get_strategy()
    if variant not in _SMALL:
        tiles = 5 if variant == "tiles5" else 64
        _SMALL[variant] = tf_ipu.IPUStrategy(tf_ipu.IPUConfig(device="mk2", tiles_per_ipu=tiles,
                                                             compile_progress=False))
    return _SMALL[variant]


def _patched(variant: str):
    if variant == "tiny_plan":
        return mock.patch.multiple(plan, MAX_WORK=48, FANIN=3)
    return mock.patch.multiple(plan, MAX_WORK=plan.MAX_WORK)          # nothing changed


@st.composite
def reduce_cases(draw):
    rank = draw(st.integers(1, 4))
    dims = [draw(st.integers(1, 13)) for _ in range(rank)]
    while int(np.prod(dims)) > 6000:
        dims[int(np.argmax(dims))] //= 2
    reduced = sorted(draw(st.sets(st.integers(0, rank - 1), min_size=1)))
    pre = draw(st.sampled_from(["none", "transpose", "concat", "reverse"]))
    perm = draw(st.permutations(range(rank)))
    axis = draw(st.integers(0, rank - 1))
    variant = draw(st.sampled_from(["session", "tiles5", "tiny_plan"]))
    return tuple(dims), reduced, pre, list(perm), axis, variant


def _pre(pre, perm, axis):
    """An op in front of the reduction, so that its input has another tile mapping than a parameter's."""
    if pre == "transpose":
        return lambda x: tf.transpose(x, perm)
    if pre == "concat":
        return lambda x: tf.concat([x, tf.reverse(x, [axis])], axis)
    if pre == "reverse":
        return lambda x: tf.reverse(x, [axis])
    return lambda x: x


def _data(rng, shape, dtype):
    if dtype == F32:
        return rng.uniform(-1, 1, shape).astype(F32), rng.choice(np.array([1, -1, 2, 0.5, 1, -1], F32), shape)
    if dtype == F16:
        return rng.integers(-1, 2, shape).astype(F16), rng.choice(np.array([1, -1], F16), shape)
    if dtype == S32:
        return (rng.integers(-50, 50, shape).astype(S32),
                np.where(rng.random(shape) < 0.05, 2, rng.choice(np.array([1, -1], S32), shape)).astype(S32))
    return rng.random(shape) < 0.5, rng.random(shape) < 0.9


@pytest.mark.parametrize("dtype", [F32, F16, S32, bool], ids=["f32", "f16", "s32", "pred"])
@examples(8)
@given(case=reduce_cases(), seed=seeds)
def test_reduce_matches_tf(dtype, case, seed):
    """sum, max, min, prod (any, all for pred) over any set of dimensions, and an argmax (a variadic reduce)."""
    dims, reduced, pre, perm, axis, variant = case
    x, y = _data(np.random.default_rng(seed), dims, dtype)
    p = _pre(pre, perm, axis)

    def fn(x, y):
        x, y = p(x), p(y)
        if dtype is bool:
            return tf.reduce_any(x, reduced), tf.reduce_all(y, reduced), tf.reduce_any(y)
        outs = (tf.reduce_sum(x, reduced), tf.reduce_max(x, reduced), tf.reduce_min(x, reduced),
                tf.reduce_prod(y, reduced))
        return outs + ((tf.argmax(x, reduced[-1]),) if dtype != F16 else ())

    with _patched(variant):
        assert_matches_tf(fn, x, y, loose=True, strategy=_strategy(variant))


@examples(5)
@given(case=reduce_cases(), seed=seeds)
def test_reduce_of_nans_and_infinities(case, seed):
    """max/min propagate NaN whichever partial holds it (column fast path included)."""
    dims, reduced, pre, perm, axis, variant = case
    rng = np.random.default_rng(seed)
    x = rng.choice(np.array([np.nan, np.inf, -np.inf, 1.0, -2.0, 3.0], F32), dims, p=[.02, .05, .05, .3, .3, .28])
    p = _pre(pre, perm, axis)
    with _patched(variant):
        assert_matches_tf(lambda x: (tf.reduce_max(p(x), reduced), tf.reduce_min(p(x), reduced),
                                     tf.reduce_sum(p(x), reduced)), x, strategy=_strategy(variant))


# --- the plan alone -----------------------------------------------------------------------------------------
@st.composite
def layouts(draw):
    k1, r, k2 = draw(st.integers(1, 9)), draw(st.integers(1, 40)), draw(st.integers(1, 17))
    size = k1 * r * k2
    cuts = sorted(set(draw(st.lists(st.integers(1, max(size - 1, 1)), max_size=12))) - {size})
    bounds = np.array([0] + [c for c in cuts if 0 < c < size] + [size])
    work = draw(st.integers(1, 80))
    return k1, r, k2, bounds[:-1], np.diff(bounds), work


@examples(300)
@given(case=layouts())
def test_stage_one_reads_every_element_once_into_its_output(case):
    k1, r, k2, starts, counts, work = case
    rec = plan.stage_one(k1, r, k2, starts, counts, work)
    owner = np.broadcast_to(np.arange(k1)[:, None, None] * k2 + np.arange(k2)[None, None, :], (k1, r, k2)).reshape(-1)
    seen = np.zeros(k1 * r * k2, np.int64)
    for v in range(len(rec["rows"])):
        reg = rec["region"][v]
        for j in range(rec["rows"][v]):
            for k in range(rec["row_len"][v]):
                e = rec["elem"][v] + j * rec["row_stride"][v] + k * rec["elem_stride"][v]
                assert starts[reg] <= e < starts[reg] + counts[reg]        # the region's own memory
                assert owner[e] == rec["out"][v] + j
                seen[e] += 1
        assert rec["rows"][v] * rec["row_len"][v] <= work or rec["rows"][v] == 1         # vertices stay small
    np.testing.assert_array_equal(seen, 1)


def test_partition_shapes():
    idx = popops_reduce.reduce_index((3, 4, 5), [1])
    assert plan.partition_shape(idx, 60) == (3, 4, 5)
    assert plan.partition_shape(popops_reduce.reduce_index((3, 4, 5), [0, 1]), 60) == (1, 12, 5)
    assert plan.partition_shape(popops_reduce.reduce_index((3, 4, 5), [0, 2]), 60) is None
    assert plan.partition_owner(popops_reduce.reduce_index((3, 4, 5), [0, 2]), 60) is not None
    assert plan.partition_owner(np.array([[0, 1], [1, 2]]), 3) is None             # overlapping windows
    assert plan.partition_owner(np.array([[0, -1], [1, 2]]), 3) is None            # padding


# --- the codelet's column layout ------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["add", "maximum", "minimum", "multiply"])
@examples(30)
@given(rows=st.integers(1, 9), row_len=st.integers(1, 12), extra=st.integers(0, 3), init=st.booleans(),
       seed=seeds)
def test_column_records_match_a_sequential_double_reference(op, rows, row_len, extra, init, seed):
    rng = np.random.default_rng(seed)
    stride = rows + extra
    scale = np.array([1e-4, 1.0, 1e4])[rng.integers(0, 3, stride * row_len)]      # sums that round
    data = (rng.standard_normal(stride * row_len) * scale).astype(F32)
    data[rng.random(len(data)) < 0.05] = np.nan if op in ("maximum", "minimum") else 1.0
    init_v = np.float32(0.25)
    mem = np.zeros(len(data) * 4 + rows * 4 + 8, np.uint8)
    mem[:len(data) * 4] = data.view(np.uint8)
    out_addr, init_addr = len(data) * 4, len(data) * 4 + rows * 4
    mem[init_addr:init_addr + 4] = np.array([init_v], F32).view(np.uint8)
    rec = np.array([[0, out_addr, rows, row_len, 1, stride, init_addr if init else -1]], np.int64)
    reduce_codelet.run_reduce(mem, rec, popops_reduce.REDUCE_OPS[op], dtypes.code("f32"), dtypes.code("f32"),
                              dtypes.code("f32"))
    got = mem[out_addr:out_addr + rows * 4].view(F32)
    cols = data.reshape(row_len, stride)[:, :rows].astype(np.float64)
    want = []
    for c in range(rows):
        seq = ([float(init_v)] if init else []) + list(cols[:, c])
        acc = seq[0]
        for v in seq[1:]:
            if op == "add":
                acc = acc + v
            elif op == "multiply":
                acc = acc * v
            elif not np.isnan(acc) and (np.isnan(v) or (v > acc if op == "maximum" else v < acc)):
                acc = v
        want.append(acc)
    np.testing.assert_array_equal(got, np.array(want).astype(F32))


# --- the program of a batch-norm statistic -------------------------------------------------------------------
def _bn_program(strategy, shape):
    x = tf.constant(np.random.default_rng(3).standard_normal(shape).astype(F32))
    fn = lambda x: tf.nn.moments(x * 2.0, [0, 1, 2])        # noqa: E731
    assert_matches_tf(fn, x, loose=True, strategy=strategy)
    return strategy.compile(fn, (x,))


def _check_no_elementwise_gather(exe, size):
    copies = [s for s in walk(exe.program) if isinstance(s, Copy)]
    assert not [c.name for c in copies if c.name.endswith("gather")]        # the old staging into rows
    rows = sum(len(c.rows) for c in copies)
    assert rows < size // 8, (rows, [(c.name, len(c.rows)) for c in copies])
    groups = [g for s in walk(exe.program) if isinstance(s, Execute) for g in s.cs.groups if g.codelet == "reduce"]
    assert any((g.records[:, 5] > 1).any() for g in groups)          # strided (column) first-stage records


def test_batch_norm_statistics_reduce_in_place():
    exe = _bn_program(get_strategy(), (8, 16, 16, 64))
    _check_no_elementwise_gather(exe, 8 * 16 * 16 * 64)


@pytest.mark.slow
def test_batch_norm_statistics_reduce_in_place_on_all_tiles():
    full = tf_ipu.IPUStrategy(tf_ipu.IPUConfig(device="mk2", compile_progress=False))
    exe = _bn_program(full, (8, 32, 32, 64))
    _check_no_elementwise_gather(exe, 8 * 32 * 32 * 64)
