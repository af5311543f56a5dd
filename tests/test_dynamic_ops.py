"""Differential tests of dynamic slicing on the simulated IPU: dynamic-slice, dynamic-update-slice, gather, scatter.

Each case runs one function on TensorFlow (eagerly, or through XLA on the CPU where only XLA defines the result:
out-of-range indices, which XLA clamps for slices and gathers and skips for scatters; TensorArray overwrites)
and through ``IPUStrategy(...).run`` on a 32-tile mk2, and compares bit for bit (NaN payloads and the sign of
zero included): these ops only move data, and the combining scatters use integer-valued data, so every order of
additions gives the same sum. Each case also checks that the multiSlice / multiUpdate vertices really ran.
Random XLA dimension numbers (batching dims, index vectors along any dim, partial windows), which TF ops do not
reach, are compiled straight from HLO and compared with the NumPy reference evaluator instead.

``x[i]`` and ``tf.slice(x, begin, ...)`` with a tensor ``i`` / ``begin`` become dynamic slices only inside loops:
elsewhere TF's XLA bridge wants them as compile-time constants and folds the argument into the HLO. Loops and
TensorArray reads and writes at tensor positions cover them here.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

tf = pytest.importorskip("tensorflow")
from tensorflow.compiler.tf2xla.python import xla  # noqa: E402
from tensorflow.compiler.xla import xla_data_pb2  # noqa: E402

from kernels.engine import Engine  # noqa: E402
from kernels.program import Execute, walk  # noqa: E402
from tf_ipu import IPUConfig, IPUStrategy  # noqa: E402
from xla_lowering.compiler import CompileOptions, compile_module  # noqa: E402
from xla_lowering.errors import UnsupportedOpError  # noqa: E402
from xla_lowering.hlo.ir import Computation, Instruction, Module, Shape  # noqa: E402
from xla_lowering.hlo.reference import evaluate_module  # noqa: E402

SOME = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
NO_TF = settings(SOME, max_examples=25)       # compiled straight from HLO: no TF tracing, much cheaper
STRATEGY = IPUStrategy(IPUConfig(device="mk2", tiles_per_ipu=32, compile_progress=False))
DATA_TYPES = [np.float32, np.float16, np.int32]
INDEX_TYPES = [np.int32, np.int64]
seeds = st.integers(0, 2**32 - 1).map(np.random.default_rng)   # each example's data from its own seed


def data(rng, shape, dtype):
    """Integer-valued data (exact under any order of additions), distinct enough to catch misplaced rows."""
    return rng.integers(-50, 50, size=shape).astype(dtype)


def check(fn, *args, xla_reference=False, expect=("multiSlice",)):
    """Run ``fn`` on TF and on the simulated IPU; outputs must be identical."""
    args = [np.asarray(a) for a in args]
    if xla_reference:
        want = tf.function(fn, jit_compile=True)(*args)
    else:
        want = fn(*[tf.constant(a) for a in args])
    got = STRATEGY.run(fn, args)
    want, got = tf.nest.flatten(want), tf.nest.flatten(got)
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        g, w = np.asarray(g), np.asarray(w)
        assert g.dtype == w.dtype and g.shape == w.shape, f"output {k}: {g.dtype}{g.shape} != {w.dtype}{w.shape}"
        if w.dtype.kind == "f":
            g, w = g.view(f"u{w.itemsize}"), w.view(f"u{w.itemsize}")
        np.testing.assert_array_equal(g, w, err_msg=f"output {k}")
    steps = " ".join(STRATEGY.last_report().steps)
    for kind in expect:
        assert kind in steps, f"no {kind} vertices ran: {steps}"


# --- gather -----------------------------------------------------------------------------------------
@st.composite
def gather_cases(draw):
    rank = draw(st.integers(1, 3))
    shape = draw(st.lists(st.integers(1, 6), min_size=rank, max_size=rank))
    axis = draw(st.integers(0, rank - 1))
    batch_dims = draw(st.integers(0, axis))
    extra = draw(st.lists(st.integers(1, 4), min_size=0, max_size=2))          # [] and no batch dims: a scalar
    return shape, axis, batch_dims, extra, draw(st.sampled_from(DATA_TYPES)), draw(st.sampled_from(INDEX_TYPES))


@SOME
@given(gather_cases(), seeds)
def test_gather_any_axis_and_batch_dims(case, rng):
    shape, axis, batch_dims, extra, dtype, itype = case
    idx = rng.integers(0, shape[axis], size=shape[:batch_dims] + extra).astype(itype)
    check(lambda x, i: tf.gather(x, i, axis=axis, batch_dims=batch_dims), data(rng, shape, dtype), idx)


@SOME
@given(n=st.integers(1, 9), d=st.integers(1, 5), m=st.integers(1, 7), axis=st.integers(0, 1),
       itype=st.sampled_from(INDEX_TYPES), rng=seeds)
def test_gather_out_of_range_indices_clamp(n, d, m, axis, itype, rng):
    dims = (n, d)
    idx = rng.integers(-3, dims[axis] + 3, size=m).astype(itype)
    check(lambda x, i: tf.gather(x, i, axis=axis), data(rng, dims, np.float32), idx, xla_reference=True)


@SOME
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3), depth=st.integers(1, 3),
       batch=st.lists(st.integers(1, 4), min_size=1, max_size=2), dtype=st.sampled_from(DATA_TYPES),
       itype=st.sampled_from(INDEX_TYPES), rng=seeds)
def test_gather_nd(shape, depth, batch, dtype, itype, rng):
    depth = min(depth, len(shape))
    idx = np.stack([rng.integers(0, shape[k], size=batch) for k in range(depth)], axis=-1).astype(itype)
    check(lambda x, i: tf.gather_nd(x, i), data(rng, shape, dtype), idx)


@SOME
@given(vocab=st.integers(1, 40), dim=st.integers(1, 20), ids=st.lists(st.integers(1, 6), min_size=1, max_size=2),
       itype=st.sampled_from(INDEX_TYPES), rng=seeds)
def test_embedding_lookup_and_its_gradient(vocab, dim, ids, itype, rng):
    """The lookup is a gather; its gradient (densified) is an unsorted segment sum: a scatter-add."""
    table, i = data(rng, (vocab, dim), np.float32), rng.integers(0, vocab, size=ids).astype(itype)
    weights = data(rng, tuple(ids) + (dim,), np.float32)

    def fn(table, i, weights):
        with tf.GradientTape() as tape:
            tape.watch(table)
            y = tf.nn.embedding_lookup(table, i)
            loss = tf.reduce_sum(y * weights)
        return y, tf.convert_to_tensor(tape.gradient(loss, table))
    check(fn, table, i, weights, expect=("multiSlice", "multiUpdate"))


@SOME
@given(shape=st.lists(st.integers(1, 5), min_size=2, max_size=3), axis=st.integers(0, 2), m=st.integers(1, 6),
       rng=seeds)
def test_gather_gradient_along_any_axis(shape, axis, m, rng):
    axis = min(axis, len(shape) - 1)
    x, i = data(rng, shape, np.float32), rng.integers(0, shape[axis], size=m).astype(np.int32)

    def fn(x, i):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.gather(x, i, axis=axis)
            loss = tf.reduce_sum(y * tf.cast(tf.reshape(tf.range(tf.size(y)), tf.shape(y)), tf.float32))
        return tf.convert_to_tensor(tape.gradient(loss, x))
    check(fn, x, i, expect=("multiUpdate",))


# --- scatter ----------------------------------------------------------------------------------------
@st.composite
def scatter_cases(draw):
    rank = draw(st.integers(1, 3))
    shape = draw(st.lists(st.integers(1, 5), min_size=rank, max_size=rank))
    depth = draw(st.integers(1, rank))
    rng, m = draw(seeds), draw(st.integers(1, 6))
    idx = np.stack([rng.integers(0, shape[k], size=m) for k in range(depth)], axis=-1)
    return shape, idx, draw(st.sampled_from(DATA_TYPES)), draw(st.sampled_from(INDEX_TYPES)), rng


@SOME
@given(scatter_cases(), st.sampled_from(["add", "max", "min", "sub"]))
def test_tensor_scatter_nd_combining(case, kind):
    shape, idx, dtype, itype, rng = case
    upd = data(rng, idx.shape[:1] + tuple(shape[idx.shape[1]:]), dtype)
    op = {"add": tf.tensor_scatter_nd_add, "max": tf.tensor_scatter_nd_max, "min": tf.tensor_scatter_nd_min,
          "sub": tf.tensor_scatter_nd_sub}[kind]
    check(lambda x, i, u: op(x, i, u), data(rng, shape, dtype), idx.astype(itype), upd, expect=("multiUpdate",))


@SOME
@given(scatter_cases())
def test_tensor_scatter_nd_update_unique_indices(case):
    shape, idx, dtype, itype, rng = case
    # one update per position: with duplicates TF does not define which update wins
    _, first = np.unique(idx, axis=0, return_index=True)
    idx = idx[np.sort(first)]
    upd = data(rng, idx.shape[:1] + tuple(shape[idx.shape[1]:]), dtype)
    check(lambda x, i, u: tf.tensor_scatter_nd_update(x, i, u), data(rng, shape, dtype), idx.astype(itype), upd,
          expect=("multiUpdate",))


@SOME
@given(n=st.integers(1, 8), d=st.integers(1, 4), m=st.integers(1, 8), itype=st.sampled_from(INDEX_TYPES),
       rng=seeds)
def test_scatter_out_of_range_updates_are_skipped(n, d, m, itype, rng):
    idx = rng.integers(-2, n + 2, size=(m, 1)).astype(itype)
    check(lambda x, i, u: (tf.tensor_scatter_nd_add(x, i, u), tf.tensor_scatter_nd_update(x, i[:1], u[:1])),
          data(rng, (n, d), np.float32), idx, data(rng, (m, d), np.float32), xla_reference=True,
          expect=("multiUpdate",))


@SOME
@given(rows=st.integers(1, 8), cols=st.lists(st.integers(1, 4), min_size=0, max_size=2), segments=st.integers(1, 6),
       dtype=st.sampled_from(DATA_TYPES), kind=st.sampled_from(["sum", "max", "min", "prod"]), rng=seeds)
def test_unsorted_segment_reductions(rows, cols, segments, dtype, kind, rng):
    x, seg = data(rng, [rows] + cols, dtype) % 5 + 1, rng.integers(0, segments, size=rows).astype(np.int32)
    op = {"sum": tf.math.unsorted_segment_sum, "max": tf.math.unsorted_segment_max,
          "min": tf.math.unsorted_segment_min, "prod": tf.math.unsorted_segment_prod}[kind]
    check(lambda x, s: op(x, s, segments), x, seg, expect=("multiUpdate",))


# --- dynamic-slice / dynamic-update-slice ------------------------------------------------------------
@st.composite
def slice_cases(draw):
    rank = draw(st.integers(1, 3))
    shape = draw(st.lists(st.integers(1, 7), min_size=rank, max_size=rank))
    sizes = [draw(st.integers(1, n)) for n in shape]
    starts = [draw(st.integers(-3, n + 3)) for n in shape]          # out of range on either side: clamped
    return shape, sizes, starts, draw(st.sampled_from(DATA_TYPES)), draw(st.sampled_from(INDEX_TYPES)), draw(seeds)


@SOME
@given(slice_cases())
def test_dynamic_slice_clamps_starts(case):
    shape, sizes, starts, dtype, itype, rng = case
    check(lambda x, s: xla.dynamic_slice(x, s, sizes), data(rng, shape, dtype), np.array(starts, itype),
          xla_reference=True)


@SOME
@given(slice_cases())
def test_dynamic_update_slice_clamps_starts(case):
    shape, sizes, starts, dtype, itype, rng = case
    check(lambda x, u, s: xla.dynamic_update_slice(x, u, s), data(rng, shape, dtype), data(rng, sizes, dtype),
          np.array(starts, itype), xla_reference=True, expect=("multiUpdate",))


@SOME
@given(n=st.integers(1, 6), row=st.lists(st.integers(1, 5), min_size=0, max_size=2), dtype=st.sampled_from(DATA_TYPES),
       rng=seeds)
def test_tensor_array_read_and_write_at_runtime_positions(n, row, dtype, rng):
    """TensorArray reads and writes at a tensor position: dynamic-slice and dynamic-update-slice of one row."""
    x, pos = data(rng, [n] + row, dtype), rng.integers(0, n, size=2).astype(np.int32)

    def fn(x, pos):
        ta = tf.TensorArray(x.dtype, size=n, clear_after_read=False).unstack(x)
        r = ta.read(pos[0])
        return r, ta.write(pos[1], -r).stack()
    # as a tf.function: an eager TensorArray refuses to overwrite an element
    check(fn, x, pos, xla_reference=True, expect=("multiSlice", "multiUpdate"))


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_x_of_i_and_tensor_array_writes_in_a_loop(dtype):
    """``x[k]`` with a loop counter ``k`` is a dynamic-slice; ``TensorArray.write(k, ...)`` a dynamic-update-slice."""
    x = data(np.random.default_rng(4), (5, 3, 2), dtype)

    def fn(x):
        out = tf.TensorArray(x.dtype, size=5)
        for k in tf.range(5):
            out = out.write(k, x[4 - k] * 2 + tf.cast(k, x.dtype))
        return out.stack()
    check(fn, x, expect=("multiSlice", "multiUpdate"))


# --- XLA's general forms ------------------------------------------------------------------------------
def test_xla_gather_and_scatter_with_batching_dims_and_windows_along_indexed_dims():
    rng = np.random.default_rng(1)
    operand, idx = data(rng, (3, 7, 4), np.float32), rng.integers(-2, 9, size=(3, 5, 1)).astype(np.int32)
    gdn = xla_data_pb2.GatherDimensionNumbers(offset_dims=[2], collapsed_slice_dims=[1], start_index_map=[1],
                                              index_vector_dim=2, operand_batching_dims=[0],
                                              start_indices_batching_dims=[0])
    check(lambda o, i: xla.gather(o, i, gdn, slice_sizes=[1, 1, 4]), operand, idx, xla_reference=True)
    # windows of 3 x 2 along both indexed dims, index vectors along dim 0 of the indices
    gdn2 = xla_data_pb2.GatherDimensionNumbers(offset_dims=[0, 2], collapsed_slice_dims=[0], start_index_map=[1, 2],
                                               index_vector_dim=0)
    idx2 = rng.integers(-1, 8, size=(2, 4)).astype(np.int64)
    check(lambda o, i: xla.gather(o, i, gdn2, slice_sizes=[1, 3, 2]), operand, idx2, xla_reference=True)

    @tf.function
    def add(a, b):
        return a + b
    sdn = xla_data_pb2.ScatterDimensionNumbers(update_window_dims=[2], inserted_window_dims=[1],
                                               scatter_dims_to_operand_dims=[1], index_vector_dim=2,
                                               input_batching_dims=[0], scatter_indices_batching_dims=[0])
    fn = add.get_concrete_function(tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.float32))
    check(lambda o, i, u: xla.scatter(o, i, u, fn, sdn), operand, idx, data(rng, (3, 5, 4), np.float32),
          xla_reference=True, expect=("multiUpdate",))
    # update windows of 2 rows x 3 columns (partial along the non-indexed dim), some do not fit: skipped
    sdn2 = xla_data_pb2.ScatterDimensionNumbers(update_window_dims=[1, 2], inserted_window_dims=[0],
                                                scatter_dims_to_operand_dims=[0, 1], index_vector_dim=1)
    idx3 = np.array([[0, 0], [2, 5], [1, 6], [2, -1]], np.int32)
    check(lambda o, i, u: xla.scatter(o, i, u, fn, sdn2), operand, idx3, data(rng, (4, 2, 3), np.float32),
          xla_reference=True, expect=("multiUpdate",))


# --- general dimension numbers, against the reference evaluator ---------------------------------------------
def _batch_positions(rng, op_dims, op_batch, idx_batch_shape):
    """Insert the batching dims (sizes of the operand's) among the index batch dims; their positions."""
    positions = []
    for od in op_batch:
        p = int(rng.integers(0, len(idx_batch_shape) + 1))
        idx_batch_shape.insert(p, op_dims[od])
        positions = [q + (q >= p) for q in positions] + [p]
    return positions


def _run_module(root, params, args):
    module = Module("m", Computation("main", params + [root], root))
    want = evaluate_module(module, args)
    exe = compile_module(module, STRATEGY.device_model, CompileOptions(run_passes=False, progress=False))
    got = Engine(exe).run(args)[0][0]
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got.reshape(-1).view(np.uint8), np.ascontiguousarray(want).reshape(-1).view(np.uint8))


@NO_TF
@given(rng=seeds)
def test_random_gather_dimension_numbers(rng):
    """Any XLA gather: batching dims, index vectors along any dim, offset dims anywhere, partial windows."""
    r = int(rng.integers(1, 4))
    op_dims = [int(d) for d in rng.integers(1, 6, size=r)]
    op_batch = sorted(int(d) for d in rng.permutation(r)[:rng.integers(0, min(2, r - 1) + 1)])
    rest = [d for d in range(r) if d not in op_batch]
    start_map = [int(d) for d in rng.permutation(rest)[:rng.integers(0, len(rest) + 1)]]
    sizes = [1 if d in op_batch else int(rng.integers(0, op_dims[d] + 1)) for d in range(r)]
    collapsed = [d for d in rest if sizes[d] == 1 and rng.random() < 0.6]
    batch_shape = [int(d) for d in rng.integers(1, 4, size=rng.integers(0, 3))]
    positions = _batch_positions(rng, op_dims, op_batch, batch_shape)
    ivd = int(rng.integers(0, len(batch_shape) + 1))
    idx_dims = batch_shape[:ivd] + [len(start_map)] + batch_shape[ivd:]
    windows = [sizes[d] for d in range(r) if d not in collapsed and d not in op_batch]
    offset_dims = sorted(int(d) for d in rng.permutation(len(batch_shape) + len(windows))[:len(windows)])
    bs, ws = iter(batch_shape), iter(windows)
    out_dims = [next(ws) if p in offset_dims else next(bs) for p in range(len(batch_shape) + len(windows))]
    dt, it = str(rng.choice(["f32", "f16", "s32", "s8"])), str(rng.choice(["s32", "s64"]))
    x = Instruction("parameter", Shape(dt, tuple(op_dims)), attrs={"number": 0})
    i = Instruction("parameter", Shape(it, tuple(idx_dims)), attrs={"number": 1})
    g = Instruction("gather", Shape(dt, tuple(out_dims)), [x, i], attrs=dict(
        offset_dims=tuple(offset_dims), collapsed_slice_dims=tuple(collapsed), start_index_map=tuple(start_map),
        index_vector_dim=ivd, slice_sizes=tuple(sizes), operand_batching_dims=tuple(op_batch),
        start_indices_batching_dims=tuple(q if q < ivd else q + 1 for q in positions), indices_are_sorted=False))
    _run_module(g, [x, i], [data(rng, op_dims, x.shape.np_dtype),
                            rng.integers(-3, 8, size=idx_dims).astype(i.shape.np_dtype)])


@NO_TF
@given(rng=seeds, kind=st.sampled_from(["add", "maximum", "minimum", "multiply", "subtract", "replace"]))
def test_random_scatter_dimension_numbers(rng, kind):
    """Any XLA scatter: batching dims, inserted dims, partial windows, out-of-range windows skipped; updates
    apply in index order, so even a replacement by several updates has the reference's result."""
    r = int(rng.integers(1, 4))
    op_dims = [int(d) for d in rng.integers(1, 6, size=r)]
    op_batch = sorted(int(d) for d in rng.permutation(r)[:rng.integers(0, min(2, r - 1) + 1)])
    rest = [d for d in range(r) if d not in op_batch]
    sdod = [int(d) for d in rng.permutation(rest)[:rng.integers(0, len(rest) + 1)]]
    inserted = [d for d in rest if rng.random() < 0.4]
    windows = [int(rng.integers(0, op_dims[d] + 1)) for d in range(r) if d not in inserted and d not in op_batch]
    batch_shape = [int(d) for d in rng.integers(1, 4, size=rng.integers(0, 3))]
    positions = _batch_positions(rng, op_dims, op_batch, batch_shape)
    ivd = int(rng.integers(0, len(batch_shape) + 1))
    idx_dims = batch_shape[:ivd] + [len(sdod)] + batch_shape[ivd:]
    uwd = sorted(int(d) for d in rng.permutation(len(batch_shape) + len(windows))[:len(windows)])
    bs, ws = iter(batch_shape), iter(windows)
    upd_dims = [next(ws) if p in uwd else next(bs) for p in range(len(batch_shape) + len(windows))]
    dt, it = str(rng.choice(["f32", "f16", "s32"])), str(rng.choice(["s32", "s64"]))
    p0, p1 = (Instruction("parameter", Shape(dt, ()), attrs={"number": n}) for n in (0, 1))
    root = p1 if kind == "replace" else Instruction(kind, Shape(dt, ()), [p0, p1])
    combine = Computation("combine", [p0, p1] + ([] if kind == "replace" else [root]), root)
    x = Instruction("parameter", Shape(dt, tuple(op_dims)), attrs={"number": 0})
    i = Instruction("parameter", Shape(it, tuple(idx_dims)), attrs={"number": 1})
    u = Instruction("parameter", Shape(dt, tuple(upd_dims)), attrs={"number": 2})
    sc = Instruction("scatter", x.shape, [x, i, u], called={"to_apply": combine}, attrs=dict(
        update_window_dims=tuple(uwd), inserted_window_dims=tuple(inserted), scatter_dims_to_operand_dims=tuple(sdod),
        index_vector_dim=ivd, input_batching_dims=tuple(op_batch), indices_are_sorted=False, unique_indices=False,
        scatter_indices_batching_dims=tuple(q if q < ivd else q + 1 for q in positions)))
    _run_module(sc, [x, i, u], [rng.integers(-5, 5, size=op_dims).astype(x.shape.np_dtype),
                                rng.integers(-2, 7, size=idx_dims).astype(i.shape.np_dtype),
                                rng.integers(-5, 5, size=upd_dims).astype(u.shape.np_dtype)])


def _step_names(exe):
    return " ".join(step.name for step in walk(exe.program) if hasattr(step, "name"))


def test_planner_splits_lookups_and_rows_over_tiles():
    """A small table read by many index vectors is copied to several tiles, each reading a share of the vectors;
    a table too big for its tiles' share of memory is cut into row parts, whose partial results (zeros where a
    part does not hold the row) are merged by OR-ing their bits: NaN payloads and -0.0 must survive."""
    rng = np.random.default_rng(2)
    table, i = data(rng, (300, 4), np.float32), rng.integers(0, 300, size=6000).astype(np.int32)
    check(lambda x, i: tf.gather(x, i), table, i)
    exe = STRATEGY.compile(lambda x, i: tf.gather(x, i), (table, i))
    groups = [g for s in walk(exe.program) if isinstance(s, Execute) for g in s.cs.groups if g.codelet == "dyn_gather"]
    assert len(np.unique(groups[0].tiles)) > 4                 # more tiles than the 4 columns

    big = rng.standard_normal(120_000).astype(np.float32)
    big[[3, 5]] = [-0.0, np.nan]
    big[7] = np.array(0x7FC12345, np.uint32).view(np.float32)   # a NaN with a payload
    i = rng.integers(-5, 120_005, size=500).astype(np.int64)
    i[:4] = [3, 5, 7, 119_999]

    def fn(x, i):
        return tf.gather(x, i), tf.tensor_scatter_nd_add(x, i[:, None], tf.ones_like(i, tf.float32))
    check(fn, big, i, xla_reference=True, expect=("multiSlice", "multiUpdate"))
    assert "merge_parts" in _step_names(STRATEGY.compile(fn, (big, i)))


def test_one_hot_runs():
    """tf.one_hot lowers to compare/select (no gather) in TF 2.21; it must still run."""
    check(lambda i: tf.one_hot(i, 7, on_value=3.0, off_value=-1.0), np.array([[0, 6], [3, 9]], np.int32), expect=())


def test_vertices_touch_only_their_own_tile():
    rng = np.random.default_rng(3)
    x, i = data(rng, (50, 64), np.float32), rng.integers(0, 50, size=(20,)).astype(np.int32)

    def fn(x, i):
        return tf.gather(x, i), tf.tensor_scatter_nd_add(x, i[:, None], tf.gather(x, i))
    exe = STRATEGY.compile(fn, (x, i))
    tile_mem = exe.device.tile_memory
    seen = set()
    for step in walk(exe.program):
        if not isinstance(step, Execute):
            continue
        for g in step.cs.groups:
            if g.codelet not in ("dyn_gather", "dyn_scatter"):
                continue
            seen.add(g.codelet)
            p = g.params
            table_rows, n_rows = int(np.prod(p["dim_size"])), g.records[:, 3] * len(p["oi_off"])
            esz, stride = p["esz"], g.records[:, 5]
            spans = [(g.records[:, 0], table_rows * stride * esz), (g.records[:, 1], n_rows * stride * esz),
                     (g.records[:, 2], g.records[:, 3] * len(p["dim_size"]) * p["idx_sz"])]
            for start, nbytes in spans:
                assert np.all(start // tile_mem == g.tiles)
                assert np.all((start + np.maximum(nbytes, 1) - 1) // tile_mem == g.tiles)
            assert len(np.unique(g.tiles)) > 1          # the 64 columns are spread over tiles
    assert seen == {"dyn_gather", "dyn_scatter"}


def test_unsupported_scatter_combiner_is_a_clear_error():
    @tf.function
    def combine(a, b):
        return tf.maximum(a, b) * 2.0 - a
    sdn = xla_data_pb2.ScatterDimensionNumbers(update_window_dims=[1], inserted_window_dims=[0],
                                               scatter_dims_to_operand_dims=[0], index_vector_dim=1)
    fn = combine.get_concrete_function(tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.float32))
    with pytest.raises(UnsupportedOpError, match="scatter combiners other than"):
        STRATEGY.run(lambda o, i, u: xla.scatter(o, i, u, fn, sdn),
                     (np.zeros((4, 3), np.float32), np.array([[1]], np.int32), np.ones((1, 3), np.float32)))
