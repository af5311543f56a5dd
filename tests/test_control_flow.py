"""Control flow on the simulated IPU: while loops, conditionals (pred and indexed) and calls.

TensorFlow on the CPU is the reference (``assert_matches_tf``). Loops with a data-dependent trip count run as a
device ``While`` (condition sequence, predicate, body); loops whose count XLA's counter pattern fixes at compile
time become a ``Repeat``. The same executable is run on inputs that take different trip counts and different
branches. A few hand-written HLO modules cover what TensorFlow does not emit (``call`` of a user computation,
a while whose state is not a tuple), against the project's reference evaluator.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_matches_tf, get_strategy, tf
from kernels.device import DEVICES
from kernels.engine import Engine
from kernels.program import If, Repeat, Switch, While, walk
from xla_lowering.compiler import CompileOptions, compile_module
from xla_lowering.hlo.reference import evaluate_module
from xla_lowering.hlo.text import parse_module

F32 = np.float32


def _kinds(fn, *args):
    """Counts of the control-flow steps in ``fn``'s executable."""
    exe = get_strategy().compile(fn, tuple(tf.constant(a) for a in args))
    out = {}
    for step in walk(exe.program):
        if isinstance(step, (While, Repeat, If, Switch)):
            out[type(step).__name__] = out.get(type(step).__name__, 0) + 1
    return out


# --- while: data-dependent trip counts -------------------------------------------------------------
def _collatz(n):
    """Steps until every element of n reaches 1 (Collatz), with the per-element step counts."""
    def cond(n, steps, total):
        return tf.reduce_any(n > 1)

    def body(n, steps, total):
        active = n > 1
        nxt = tf.where(n % 2 == 0, n // 2, 3 * n + 1)
        return tf.where(active, nxt, n), steps + tf.cast(active, tf.int32), total + 1
    return tf.while_loop(cond, body, (n, tf.zeros_like(n), tf.constant(0)))


@pytest.mark.parametrize("start", [[1, 1, 1], [6, 7, 1], [27, 97, 3]], ids=["none", "short", "long"])
def test_while_collatz_data_dependent_trip_count(start):
    n = np.array(start, np.int32)
    got = assert_matches_tf(_collatz, n)
    assert got[2] == {1: 0, 6: 16, 27: 118}[start[0]]
    assert _kinds(_collatz, n) == {"While": 1}


def _grow_until(x, threshold):
    """Scale and shift x until its sum exceeds the threshold (a runtime value)."""
    def cond(i, x):
        return tf.reduce_sum(x) < threshold
    return tf.while_loop(cond, lambda i, x: (i + 1, x * 1.5 + 0.25), (tf.constant(0), x))


@pytest.mark.parametrize("threshold", [-1.0, 10.0, 1e4])
def test_while_until_sum_exceeds_runtime_threshold(threshold):
    x = np.linspace(0.1, 1.0, 300).astype(F32)
    got = assert_matches_tf(_grow_until, x, F32(threshold), loose=True)
    trips, y = 0, x.astype(np.float64)
    while y.sum() < threshold:
        trips, y = trips + 1, y * 1.5 + 0.25
    assert got[0] == trips and (trips > 5 or threshold < 1e4)


def test_while_cycles_grow_with_iterations():
    s = get_strategy()
    x = tf.constant(np.ones(64, F32))
    s.run(_grow_until, (x, tf.constant(F32(100.0))))
    few = s.last_report().cycles_total
    s.run(_grow_until, (x, tf.constant(F32(1e6))))
    many = s.last_report()
    assert many.cycles_total > few > 0
    assert any(name.startswith("while") and cyc > 0 for name, cyc in many.steps.items())


def test_python_while_under_autograph():
    def f(x):
        while tf.reduce_max(x) < 100.0:
            x = x * 2.0 + 1.0
        return x
    for scale in (0.5, 30.0, 200.0):
        assert_matches_tf(f, np.linspace(0.0, scale, 33).astype(F32))


# --- while: fixed trip counts --------------------------------------------------------------------
def _mixed_dtypes(a, b, c, h):
    """Several loop-carried tensors of different dtypes, and a swap (a, b) -> (b, a + 1)."""
    flag = tf.constant(True)
    for i in tf.range(7):
        a, b = b, a + 1.0
        c = c * 3 + tf.cast(i, tf.int64)
        h = h * tf.constant(1.25, tf.float16) - tf.cast(flag, tf.float16)
        flag = tf.logical_not(flag)
    return a, b, c, h, flag


def test_fixed_count_loop_several_dtypes_and_swap():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(50).astype(F32), rng.standard_normal(50).astype(F32)
    c = rng.integers(-5, 5, (4, 3)).astype(np.int64)
    h = rng.standard_normal(17).astype(np.float16)
    assert_matches_tf(_mixed_dtypes, a, b, c, h)
    assert _kinds(_mixed_dtypes, a, b, c, h) == {"Repeat": 1}      # XLA's counter: a compile-time trip count


def test_while_loop_maximum_iterations():
    def f(x):
        return tf.while_loop(lambda x: tf.reduce_sum(x) > -1.0, lambda x: (x + 1.0,), (x,), maximum_iterations=4)
    assert_matches_tf(f, np.zeros(10, F32))


def test_loop_body_with_matmul_and_reduction():
    def f(x, w):
        def body(i, x, norms):
            y = tf.tanh(x @ w)
            x = y - tf.reduce_mean(y, axis=1, keepdims=True)
            return i + 1, x, norms + tf.reduce_sum(x * x)
        return tf.while_loop(lambda i, x, n: i < 4, body, (tf.constant(0), x, tf.constant(0.0)))
    rng = np.random.default_rng(2)
    x = rng.standard_normal((24, 40)).astype(F32)
    w = (rng.standard_normal((40, 40)) / 6).astype(F32)
    assert_matches_tf(f, x, w, loose=True)


def test_nested_loops():
    def f(x, limit):
        def outer_body(j, x, log):
            # an inner counted loop whose state depends on the outer loop's
            def inner_body(k, y):
                return k + 1, y * 0.5 + tf.cast(k + j, tf.float32)
            _, y = tf.while_loop(lambda k, y: k < 3, inner_body, (tf.constant(0), x))
            return j + 1, y, log + tf.reduce_max(y)
        return tf.while_loop(lambda j, x, log: log < limit, outer_body, (tf.constant(0), x, tf.constant(0.0)))
    x = np.linspace(-1.0, 1.0, 90).astype(F32).reshape(9, 10)
    for limit in (0.0, 40.0):
        assert_matches_tf(f, x, F32(limit))
    assert _kinds(f, x, F32(1.0)) == {"While": 1, "Repeat": 1}


# --- conditionals --------------------------------------------------------------------------------
def _cond_fn(x, p):
    # the false branch passes x through: its result is a view of the operand
    y, n = tf.cond(p > 0, lambda: (tf.sin(x) * 2.0, tf.reduce_sum(x)), lambda: (x, tf.constant(-1.0)))
    return y + 1.0, n


@pytest.mark.parametrize("p", [1.0, -1.0], ids=["true", "false"])
def test_cond_on_runtime_predicate(p):
    x = np.linspace(-3, 3, 200).astype(F32)
    assert_matches_tf(_cond_fn, x, F32(p), loose=True)
    assert _kinds(_cond_fn, x, F32(p)) == {"If": 1}


def _switch_fn(x, k):
    return tf.switch_case(k, [lambda: x * 2.0, lambda: tf.reverse(x, [0]) - 1.0, lambda: x + 7.0])


@pytest.mark.parametrize("k", [0, 1, 2, 3, 100, -1])
def test_switch_case_including_out_of_range(k):
    x = np.arange(12, dtype=F32)
    assert_matches_tf(_switch_fn, x, np.int32(k))


def test_cond_inside_loop():
    def f(n):
        # scalar Collatz with tf.cond in the body: a conditional nested in a while
        def body(n, steps):
            return tf.cond(n % 2 == 0, lambda: n // 2, lambda: 3 * n + 1), steps + 1
        return tf.while_loop(lambda n, s: n > 1, body, (n, tf.constant(0)))
    for n in (1, 27):
        got = assert_matches_tf(f, np.int32(n))
        assert got[1] == {1: 0, 27: 111}[n]


def test_function_calling_nested_tf_function():
    @tf.function
    def layer(x, w):
        return tf.nn.relu(x @ w) + tf.cond(tf.reduce_sum(x) > 0, lambda: 1.0, lambda: -1.0)

    def f(x, w):
        return layer(layer(x, w), w)
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((8, 16)).astype(F32), rng.standard_normal((16, 16)).astype(F32)
    assert_matches_tf(f, x, w, loose=True)
    assert_matches_tf(f, -np.abs(x), w, loose=True)


# --- memory --------------------------------------------------------------------------------------
def test_memory_plan_reuses_memory_around_loops():
    def f(x):
        y = tf.exp(x) * 2.0                               # temporaries before the loop...
        y = tf.while_loop(lambda y: tf.reduce_sum(y) < 1e5, lambda y: (tf.sqrt(y + 1.0) * 3.0,), (y,))[0]
        z = tf.sin(y) + tf.cos(y) * y                      # ...and after it
        return tf.reduce_sum(z * z)
    x = np.linspace(0, 1, 64 * 256).astype(F32)
    assert_matches_tf(f, x, rtol=1e-3)
    mem = get_strategy().compile(f, (tf.constant(x),)).memory
    allocated = sum(v for k, v in mem.by_category.items() if k != "vertex_state") + mem.by_category["vertex_state"]
    assert np.all(mem.peak <= allocated)
    assert mem.peak.sum() < 0.8 * allocated.sum()          # blocks with disjoint lifetimes share memory
    assert np.all(mem.peak <= mem.tile_memory)


# --- hand-written HLO: call, non-tuple while state, indexed conditional ---------------------------
HLO = """
HloModule control

add_one {
  p = f32[6] parameter(0)
  one = f32[] constant(1)
  ones = f32[6] broadcast(one), dimensions={}
  ROOT r = f32[6] add(p, ones)
}

twice {
  q = f32[6] parameter(0)
  a = f32[6] call(q), to_apply=add_one
  ROOT b = f32[6] call(a), to_apply=add_one
}

small {
  s = f32[6] parameter(0)
  z = f32[] constant(0)
  sum = f32[] reduce(s, z), dimensions={0}, to_apply=sum_f32
  lim = f32[] constant(100)
  ROOT lt = pred[] compare(sum, lim), direction=LT
}

sum_f32 {
  l = f32[] parameter(0)
  r = f32[] parameter(1)
  ROOT s = f32[] add(l, r)
}

grow {
  g = f32[6] parameter(0)
  two = f32[] constant(2)
  twos = f32[6] broadcast(two), dimensions={}
  m = f32[6] multiply(g, twos)
  ROOT c = f32[6] call(m), to_apply=twice
}

neg {
  t = (f32[6]) parameter(0)
  e = f32[6] get-tuple-element(t), index=0
  n = f32[6] negate(e)
  ROOT nt = (f32[6]) tuple(n)
}

keep {
  t = (f32[6]) parameter(0)
  e = f32[6] get-tuple-element(t), index=0
  ROOT same = (f32[6]) tuple(e)
}

ENTRY main {
  x = f32[6] parameter(0)
  k = s32[] parameter(1)
  w = f32[6] while(x), condition=small, body=grow
  tw = (f32[6]) tuple(w)
  c = (f32[6]) conditional(k, tw, tw), branch_computations={neg, keep}
  ROOT out = f32[6] get-tuple-element(c), index=0
}
"""


@pytest.mark.parametrize("k", [0, 1, 5])
def test_hlo_call_non_tuple_while_and_index_conditional(k):
    module = parse_module(HLO)
    x = np.array([0.5, -1, 2, 0, 1, 3], F32)
    want = evaluate_module(parse_module(HLO), [x, np.int32(k)])
    exe = compile_module(module, DEVICES["mk2"].with_tiles(16), CompileOptions(progress=False))
    (got,), _ = Engine(exe).run([x, np.int32(k)])
    np.testing.assert_allclose(got, want, rtol=1e-6)
