"""rng-bit-generator: the simulated IPU draws XLA's exact bits (Philox4x32-10, ThreeFry2x32-20).

The reference is TensorFlow with XLA on the CPU (``tf.function(jit_compile=True)``), not eager TF: TF's non-XLA
CPU kernels draw the same Philox words (integer results agree) but turn them into floats differently (f32 and
f64 uniform, normal, dropout differ; f16 uniform agrees), and have no ThreeFry. Everything built from the bits
by exact arithmetic (uniform floats and integers, dropout masks, the new RNG state) must be bit-identical; normal
samples go through Box-Muller's log, sqrt, sin and cos, where XLA's CPU approximations and ours may differ by an
ulp or two.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from conftest import examples, seeds, shapes

tf = pytest.importorskip("tensorflow")
from tensorflow.compiler.tf2xla.python import xla  # noqa: E402

from xla_lowering.hlo.reference import philox_bits, threefry_bits  # noqa: E402

ALGS = {"philox": tf.random.Algorithm.PHILOX, "threefry": tf.random.Algorithm.THREEFRY}
u64s = st.integers(0, 2**64 - 1)
# counters that carry into the next word within a few blocks
counters = st.one_of(u64s, st.integers(2**64 - 40, 2**64 - 1), st.integers(2**32 - 40, 2**32 + 40))


def xla_cpu(fn, *args):
    return tf.nest.map_structure(lambda t: t.numpy(), tf.function(fn, jit_compile=True)(*args))


def run_both(strategy, fn, *args):
    args = tuple(tf.constant(a) if isinstance(a, np.ndarray) else a for a in args)
    want = xla_cpu(fn, *args)
    got = tf.nest.map_structure(np.asarray, strategy.run(fn, args))
    tf.nest.assert_same_structure(want, got)
    return tf.nest.flatten(got), tf.nest.flatten(want)


def assert_same_bits(got, want, what=""):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape, (what, got.dtype, got.shape, want.dtype, want.shape)
    np.testing.assert_array_equal(got.reshape(-1).view(f"u{got.itemsize}"), want.reshape(-1).view(f"u{want.itemsize}"),
                                  err_msg=what)


def rng_bits_fn(alg: str, shape, dtype):
    def fn(state):
        return xla.rng_bit_generator(ALGS[alg], state, shape, dtype=dtype)
    return fn


@examples(20)
@given(alg=st.sampled_from(["philox", "threefry"]), shape=shapes(max_size=3000),
       dtype=st.sampled_from([tf.uint8, tf.uint32, tf.uint64]), key=u64s, counter=counters, high=u64s,
       short_state=st.booleans())
def test_reference_evaluator_is_xla(alg, shape, dtype, key, counter, high, short_state):
    # the NumPy reference (xla_lowering/hlo/reference.py) against XLA's own RngBitGenerator: cheap, no compile
    state = np.array([key, counter] if alg == "threefry" or short_state else [key, counter, high], np.uint64)
    new_state, bits = xla_cpu(rng_bits_fn(alg, shape, dtype), tf.constant(state))
    ref = philox_bits if alg == "philox" else threefry_bits
    want_state, want_bits = ref(state, shape, dtype.size)
    np.testing.assert_array_equal(new_state, want_state)
    assert_same_bits(bits, want_bits.view(dtype.as_numpy_dtype))


@examples(12)
@given(alg=st.sampled_from(["philox", "threefry"]), shape=shapes(max_size=6000),
       dtype=st.sampled_from([tf.uint8, tf.uint32, tf.uint64]), key=u64s, counter=counters, high=u64s,
       short_state=st.booleans())
def test_rng_bit_generator_matches_xla(strategy, alg, shape, dtype, key, counter, high, short_state):
    # XLA's op itself: Philox with a u64[3] state (128-bit counter) or a u64[2] one (the key is the high word)
    state = np.array([key, counter] if alg == "threefry" or short_state else [key, counter, high], np.uint64)
    (got_state, got_bits), (want_state, want_bits) = run_both(strategy, rng_bits_fn(alg, shape, dtype), state)
    np.testing.assert_array_equal(got_state, want_state)
    assert_same_bits(got_bits, want_bits, f"{alg} {dtype.name}{list(shape)}")


UNIFORM_DTYPES = ["float16", "float32", "float64", "int32", "int64", "uint32", "uint64"]


@examples(20)
@given(shape=shapes(max_size=6000), dtype=st.sampled_from(UNIFORM_DTYPES),
       alg=st.sampled_from(["auto_select", "philox", "threefry"]), seed=st.tuples(seeds, seeds),
       full_range=st.booleans())
def test_stateless_uniform_matches_xla(strategy, shape, dtype, alg, seed, full_range):
    dtype = tf.as_dtype(dtype)
    if dtype.is_floating:
        bounds = dict(minval=-2.5, maxval=4.0) if full_range else {}
    elif full_range or dtype.is_unsigned:            # unsigned: only the full range (the raw bits)
        bounds = dict(minval=None, maxval=None)
    else:
        bounds = dict(minval=-7, maxval=10**6 + 3)

    def fn(s):
        return tf.random.stateless_uniform(shape, s, dtype=dtype, alg=alg, **bounds)
    (got,), (want,) = run_both(strategy, fn, np.array(seed, np.int32))
    if dtype.is_floating and bounds:
        # the [0, 1) draws are bit-exact (no bounds); scaling them to [-2.5, 4) is ordinary float arithmetic:
        # XLA's CPU backend fuses u * 6.5 - 2.5 into one rounding (an FMA; for f16, f32 arithmetic rounded once),
        # the IPU's codelet rounds after each op: an ulp apart
        atol = 4 * 6.5 * np.finfo(dtype.as_numpy_dtype).eps
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=0, atol=atol)
    else:
        assert_same_bits(got, want, f"{alg} {dtype.name}{list(shape)}")


@examples(12)
@given(shape=shapes(max_size=4000), dtype=st.sampled_from(["float16", "float32", "float64"]),
       alg=st.sampled_from(["philox", "threefry"]), seed=st.tuples(seeds, seeds))
def test_stateless_normal_matches_xla(strategy, shape, dtype, alg, seed):
    def fn(s):
        return tf.random.stateless_normal(shape, s, dtype=dtype, alg=alg)
    (got,), (want,) = run_both(strategy, fn, np.array(seed, np.int64))
    assert got.dtype == want.dtype and got.shape == want.shape
    # the uniforms are bit-exact; the transcendentals of Box-Muller may differ by an ulp or two
    tol = {"float16": 1e-3, "float32": 1e-6, "float64": 1e-14}[dtype]
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=tol, atol=tol)


@examples(12)
@given(shape=shapes(min_rank=1, max_size=6000), rate=st.sampled_from([0.1, 0.3, 0.5, 0.9]),
       seed=st.tuples(seeds, seeds), dtype=st.sampled_from(["float16", "float32"]))
def test_stateless_dropout_matches_xla(strategy, shape, rate, seed, dtype):
    x = (np.arange(np.prod(shape)) % 17 + 1).astype(dtype).reshape(shape)

    def fn(x, s):
        return tf.nn.experimental.stateless_dropout(x, rate, seed=s)
    (got,), (want,) = run_both(strategy, fn, x, np.array(seed, np.int32))
    assert_same_bits(got, want)


@examples(12)
@given(shape=shapes(max_size=5000), alg=st.sampled_from([1, 2]), seed=st.tuples(seeds, seeds),
       dtype=st.sampled_from(["int32", "int64", "uint32", "uint64"]))
def test_raw_stateless_ops_match_xla(strategy, shape, alg, seed, dtype):
    # the V2 ops with an explicit algorithm (1 = Philox, 2 = ThreeFry) and the key/counter they derive
    def fn(s):
        key, counter = tf.raw_ops.StatelessRandomGetKeyCounter(seed=s)
        u = tf.raw_ops.StatelessRandomUniformV2(shape=shape, key=key, counter=counter, alg=alg, dtype=tf.float32)
        bits = tf.raw_ops.StatelessRandomUniformFullIntV2(shape=shape, key=key, counter=counter, alg=alg,
                                                          dtype=dtype)
        ints = tf.raw_ops.StatelessRandomUniformIntV2(shape=shape, key=key, counter=counter, alg=alg,
                                                      minval=tf.constant(3, dtype), maxval=tf.constant(1000, dtype))
        return key, counter, u, bits, ints
    got, want = run_both(strategy, fn, np.array(seed, np.int64))
    for k, (g, w) in enumerate(zip(got, want)):
        assert_same_bits(g, w, f"output {k}")


def test_stateful_generator_matches_xla(strategy):
    # tf.random.Generator: the state lives in a variable, read on the device and written back
    draws = []
    for runner in ("cpu", "ipu"):
        gen = tf.random.Generator.from_seed(1234, alg="philox")

        def fn():
            return gen.uniform([3, 41]), gen.normal([7], dtype=tf.float64), gen.uniform_full_int([5], tf.uint64)
        if runner == "cpu":
            f = tf.function(fn, jit_compile=True)
            out = [f(), f()]
        else:
            out = [strategy.run(fn), strategy.run(fn)]
        draws.append(([tf.nest.map_structure(np.asarray, o) for o in out], gen.state.numpy()))
    (cpu, cpu_state), (ipu, ipu_state) = draws
    np.testing.assert_array_equal(ipu_state, cpu_state)
    for c, i in zip(cpu, ipu):
        for k, (g, w) in enumerate(zip(i, c)):
            assert_same_bits(g, w, f"output {k}")
    assert not np.array_equal(cpu[0][0], cpu[1][0])           # the state advanced between calls


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4)])
def test_eager_tf_draws_the_same_words(shape):
    # why eager TF is not the reference: its Philox words are XLA's (integers agree) but its f32 uniforms are
    # built differently (from the low 23 bits, XLA from the high ones)
    seed = tf.constant([3, 4])
    full = lambda s: tf.random.stateless_uniform(shape, s, minval=None, maxval=None, dtype=tf.uint32)  # noqa: E731
    np.testing.assert_array_equal(full(seed).numpy(), xla_cpu(full, seed))
    u = lambda s: tf.random.stateless_uniform(shape, s)  # noqa: E731
    assert not np.array_equal(u(seed).numpy(), xla_cpu(u, seed))


@pytest.mark.parametrize("alg", ["philox", "threefry"])
def test_random_bits_cost_what_the_tiles_prng_would(strategy, alg):
    # the simulator evaluates XLA's cipher; the cycles are those of the IPU's hardware PRNG for as many words
    from kernels import cycles as cyc
    from kernels.program import Execute, walk
    exe = strategy.compile(rng_bits_fn(alg, (64, 100), tf.uint32), (tf.constant(np.array([1, 2, 3], np.uint64)),))
    bits = [s for s in walk(exe.program) if isinstance(s, Execute) and s.cs.name.endswith("/bits")]
    assert len(bits) == 1
    (group,) = bits[0].cs.groups
    counts = group.records[:, 0]
    assert counts.sum() == 6400
    np.testing.assert_array_equal(group.cycles, cyc.rng_cycles(strategy.device_model, counts, "u32", normal=False))
