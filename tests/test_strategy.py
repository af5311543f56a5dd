"""IPUStrategy and IPUConfig as a user meets them: variables, recompiles, reports, config errors, layering."""
import logging
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, strategies as st

from conftest import assert_matches_tf, get_strategy

tf = pytest.importorskip("tensorflow")
import tf_ipu  # noqa: E402


def test_config_validation():
    with pytest.raises(ValueError, match="unknown device"):
        tf_ipu.IPUConfig(device="mk3")
    with pytest.raises(ValueError, match="tiles_per_ipu"):
        tf_ipu.IPUConfig(device="mk1", tiles_per_ipu=2000)
    with pytest.raises(NotImplementedError, match="one IPU"):
        tf_ipu.IPUConfig(num_ipus=2)
    cfg = tf_ipu.IPUConfig(device="mk1", tiles_per_ipu=16)
    assert cfg.device_model.num_tiles == 16 and cfg.device_model.tile_memory == 256 * 1024


def test_variables_are_read_and_updated():
    strategy = get_strategy()
    v = tf.Variable(np.arange(6, dtype=np.float32).reshape(2, 3))
    scale = tf.Variable(3.0)

    @tf.function
    def step(x):
        v.assign_add(x * scale)
        return tf.reduce_sum(v)

    x = np.ones((2, 3), np.float32)
    total = strategy.run(step, args=(x,))
    np.testing.assert_allclose(v.numpy(), np.arange(6).reshape(2, 3) + 3.0)
    assert float(total) == pytest.approx(float(np.sum(np.arange(6) + 3.0)))
    strategy.run(step, args=(x,))
    np.testing.assert_allclose(v.numpy(), np.arange(6).reshape(2, 3) + 6.0)


def test_recompile_says_why(caplog):
    strategy = tf_ipu.IPUStrategy(tf_ipu.IPUConfig(tiles_per_ipu=8, compile_progress=False))

    @tf.function
    def f(x):
        return x * 2.0

    strategy.run(f, args=(np.ones((4, 3), np.float32),))
    strategy.run(f, args=(np.ones((4, 3), np.float32),))
    assert strategy.compile_count == 1                       # the cache hits for the same shapes
    with caplog.at_level(logging.WARNING, logger="tf_ipu"):
        strategy.run(f, args=(np.ones((5, 3), np.float32),))
    assert strategy.compile_count == 2
    assert "argument 0: float32[4, 3] -> float32[5, 3]" in strategy.last_recompile_reason
    assert any("recompiling 'f'" in r.message for r in caplog.records)


def test_report_adds_up():
    strategy = get_strategy()

    @tf.function
    def f(x, w):
        return tf.nn.softmax(x @ w)

    strategy.run(f, args=(np.ones((64, 96), np.float32), np.ones((96, 32), np.float32)))
    rep = strategy.last_report()
    assert rep.cycles_total == rep.cycles_compute + rep.cycles_exchange + rep.cycles_sync + rep.cycles_host_io
    assert rep.cycles_compute > 0 and rep.cycles_exchange > 0 and rep.cycles_sync > 0
    assert rep.tiles_used > 1
    assert (rep.memory_peak >= rep.memory_always_live).all()
    assert (rep.memory_peak <= rep.tile_memory).all()
    text = str(rep)
    assert "Cycles:" in text and "Memory:" in text


def test_run_inside_tf_function_is_refused():
    strategy = get_strategy()

    @tf.function
    def add_one(y):
        return y + 1

    @tf.function(autograph=False)
    def outer(x):
        return strategy.run(add_one, args=(x,))

    with pytest.raises(RuntimeError, match="eagerly"):
        outer(tf.constant(1.0))


@given(rows=st.integers(1, 40), cols=st.integers(1, 300), axis=st.integers(0, 1),
       dtype=st.sampled_from([np.float32, np.int32]))
def test_argmax_argmin_variadic_reduce(rows, cols, axis, dtype):
    rng = np.random.default_rng(rows * 1000 + cols)
    x = (rng.standard_normal((rows, cols)) * 100).astype(dtype)

    @tf.function
    def f(x):
        return tf.argmax(x, axis=axis, output_type=tf.int32), tf.argmin(x, axis=axis)

    assert_matches_tf(f, x)


def test_compiler_layers_do_not_import_tensorflow():
    code = ("import sys\n"
            "import xla_lowering.compiler, xla_lowering.hlo.text, xla_lowering.hlo.reference, kernels.engine\n"
            "import xla_lowering.passes\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_compile_time_constant_inputs_are_folded_and_explained():
    strategy = tf_ipu.IPUStrategy(tf_ipu.IPUConfig(tiles_per_ipu=8, compile_progress=False))

    @tf.function
    def row(x, i):
        return x[i] * 2.0

    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_array_equal(strategy.run(row, args=(x, np.int32(2))).numpy(), x[2] * 2)
    np.testing.assert_array_equal(strategy.run(row, args=(x, np.int32(1))).numpy(), x[1] * 2)
    assert "value of input(s) [1] changed" in strategy.last_recompile_reason
