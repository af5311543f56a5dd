"""Shared fixtures and helpers of the lowering and simulator tests.

Differential testing: TensorFlow run eagerly on the CPU is the reference; ``assert_matches_tf(fn, *args)`` runs
``fn`` both eagerly and through the session's ``IPUStrategy`` and compares every output (the output structure,
each output's dtype and shape, then its values).

The session strategy is a small mk2 (``IPUConfig(device="mk2", tiles_per_ipu=64)``): a tensor of a few
thousand elements really is spread over many tiles (the linear mapping puts at least 256 bytes on a tile), so
exchanges, per-tile vertices and scalar broadcasts are exercised, while compiles stay fast.

Tolerances (``TOLERANCES``; ``rtol``/``atol`` passed to ``assert_matches_tf`` override them):

    dtype          rtol    atol    used for
    f32            1e-5    1e-5    arithmetic, data movement, short reductions
    f32 (loose)    1e-4    1e-4    transcendental functions (exp, log, tanh, erf, pow...), long reductions and
                                   contractions (summation order differs from TF's)  -> ``loose=True``
    f16            1e-2    1e-2    everything in half precision (TF computes some f16 ops in f32 and rounds once;
                                   the simulator rounds after every op, as the device does)
    f64            1e-12   1e-12
    s8..u64, pred  exact

Where eager TF has no CPU kernel for an op (TruncateMod of f16) or leaves a case undefined (casting NaN or
out-of-range floats to integers), ``reference="xla"`` makes TF's XLA on the CPU the reference instead: that is
the semantics the simulator implements.

Hypothesis: the ``tf_ipu`` profile is loaded by default (deadline=None because a compile takes up to ~0.2 s,
max_examples=10, derandomize=True so that CI runs are reproducible, too_slow suppressed); ``examples(n)`` gives a
test its own count, scaled with the profile. Select another profile with ``HYPOTHESIS_PROFILE=thorough`` (10x the
examples, random seeds) for a longer local run, or ``debug`` (no shrinking: a failure is reported at once instead
of after many more compiles). Tests marked ``slow`` (the whole 1472-tile device) run with ``-m slow``.
"""
from __future__ import annotations

import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# TensorFlow's oneDNN kernels are the reference's weak spot: on CPUs with AVX512-FP16/AMX its batch matmul with
# broadcast batch dimensions returns garbage and corrupts the heap (seen with TF 2.21). Use TF's own kernels.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, Phase, settings, strategies as st  # noqa: E402

tf = pytest.importorskip("tensorflow")

import tf_ipu  # noqa: E402

# --- hypothesis ------------------------------------------------------------------------------------
settings.register_profile("tf_ipu", deadline=None, max_examples=10, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.filter_too_much])
settings.register_profile("thorough", deadline=None, max_examples=100, derandomize=False, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.filter_too_much])
settings.register_profile("debug", parent=settings.get_profile("tf_ipu"),
                          phases=[Phase.explicit, Phase.reuse, Phase.generate])   # no shrinking
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "tf_ipu"))
DEFAULT_EXAMPLES = 10


def examples(n: int) -> settings:
    """Per-test ``max_examples``: ``n`` under the default profile, scaled with the loaded profile's count (so that
    ``HYPOTHESIS_PROFILE=thorough`` runs every test longer)."""
    return settings(max_examples=max(1, round(n * settings.default.max_examples / DEFAULT_EXAMPLES)))


# --- tolerances ------------------------------------------------------------------------------------
TOLERANCES = {
    np.dtype(np.float32): dict(rtol=1e-5, atol=1e-5),
    np.dtype(np.float16): dict(rtol=1e-2, atol=1e-2),
    np.dtype(np.float64): dict(rtol=1e-12, atol=1e-12),
}
LOOSE = {
    np.dtype(np.float32): dict(rtol=1e-4, atol=1e-4),
    np.dtype(np.float16): dict(rtol=1e-2, atol=1e-2),
    np.dtype(np.float64): dict(rtol=1e-10, atol=1e-10),
}

# --- the session's simulated IPU ---------------------------------------------------------------------
TILES = 64
_STRATEGY: tf_ipu.IPUStrategy | None = None


def get_strategy() -> tf_ipu.IPUStrategy:
    global _STRATEGY
    if _STRATEGY is None:
        _STRATEGY = tf_ipu.IPUStrategy(tf_ipu.IPUConfig(device="mk2", tiles_per_ipu=TILES, compile_progress=False))
    return _STRATEGY


@pytest.fixture(scope="session")
def strategy() -> tf_ipu.IPUStrategy:
    """The session's IPUStrategy: a 64-tile mk2."""
    return get_strategy()


def _to_tf(a):
    if isinstance(a, np.ndarray | np.generic):
        return tf.constant(a)
    return a


def assert_close(got, want, what: str = "", rtol=None, atol=None, loose: bool = False) -> None:
    """Compare one output: same dtype and shape, values within the dtype's tolerance (NaNs must match)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != TF's {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape} != TF's {want.shape}"
    table = LOOSE if loose else TOLERANCES
    if want.dtype in table:
        tol = dict(table[want.dtype])
        if rtol is not None:
            tol["rtol"] = rtol
        if atol is not None:
            tol["atol"] = atol
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), equal_nan=True,
                                   err_msg=what, **tol)
    else:
        np.testing.assert_array_equal(got, want, err_msg=what)


def _paths(structure, prefix: str = "") -> list[str]:
    """Readable paths of the leaves of a nest, in tf.nest.flatten order (dict keys sorted)."""
    if isinstance(structure, dict):
        return [p for k in sorted(structure) for p in _paths(structure[k], f"{prefix}[{k!r}]")]
    if isinstance(structure, (list, tuple)):
        return [p for k, v in enumerate(structure) for p in _paths(v, f"{prefix}[{k}]")]
    return [prefix]


def assert_matches_tf(fn, *args, rtol=None, atol=None, loose: bool = False, strategy=None,
                      reference: str = "eager"):
    """Run ``fn(*args)`` eagerly in TF and on the simulated IPU; compare every output (structure-aware).

    NumPy arguments become tensors (Python numbers stay Python numbers: tf.function bakes them into the
    trace). ``reference="xla"`` uses TF's XLA on the CPU instead of eager TF, for ops TF has no CPU kernel for
    (e.g. TruncateMod of f16) or XLA-only ops. Returns the IPU's outputs (NumPy, in ``fn``'s output structure).
    """
    strategy = strategy or get_strategy()
    targs = tuple(_to_tf(a) for a in args)
    if reference == "eager":
        want = fn(*targs)
    elif reference == "xla":
        want = tf.function(fn, jit_compile=True)(*targs)
    else:
        raise ValueError(f"reference must be 'eager' or 'xla', not {reference!r}")
    got = strategy.run(fn, targs)
    tf.nest.assert_same_structure(want, got)
    flat_want, flat_got = tf.nest.flatten(want), tf.nest.flatten(got)
    paths = _paths(want)
    for k, (g, w) in enumerate(zip(flat_got, flat_want)):
        what = f"output {k}" + (f" ({paths[k]})" if k < len(paths) and paths[k] else "")
        assert_close(np.asarray(g), np.asarray(w), what, rtol=rtol, atol=atol, loose=loose)
    return tf.nest.map_structure(np.asarray, got)


# --- data and shape generators ---------------------------------------------------------------------
# dimension sizes: 1 (broadcast-like), small odd sizes, grain multiples and sizes that are neither
DIMS = (1, 2, 3, 5, 7, 8, 16, 17, 31, 64, 97, 128, 255)


def shapes(min_rank: int = 0, max_rank: int = 4, max_size: int = 40_000, min_size: int = 0):
    """Hypothesis strategy of array shapes: rank ``min_rank..max_rank``, odd and round sizes, bounded size."""
    return (st.lists(st.sampled_from(DIMS), min_size=min_rank, max_size=max_rank).map(tuple)
            .filter(lambda s: min_size <= math.prod(s) <= max_size))


seeds = st.integers(0, 2**31 - 1)

FLOAT_DTYPES = (np.float32, np.float16)
INT_DTYPES = (np.int32, np.int64)


def random_array(rng: np.random.Generator, shape, dtype, low=None, high=None) -> np.ndarray:
    """Random data of ``dtype``: floats standard-normal times 3 (or uniform in [low, high)), integers uniform in
    [low, high) (default -100..100), bools fair coins."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if dtype.kind == "f":
        if low is None:
            return (rng.standard_normal(shape) * 3).astype(dtype)
        return rng.uniform(low, high, shape).astype(dtype)
    lo = -100 if low is None else low
    hi = 100 if high is None else high
    if dtype.kind == "u":
        lo = max(lo, 0)
    return rng.integers(lo, hi, size=shape, endpoint=False).astype(dtype)


def dtype_id(dtype) -> str:
    return np.dtype(dtype).name


# --- processes without TensorFlow ------------------------------------------------------------------------
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Prepended to the code of a subprocess: TensorFlow (and Keras) cannot be imported there.
NO_TF = """
import importlib.abc, sys
class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_keras", "tensorboard"):
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, _NoTensorFlow())
"""


def run_python(code: str, *args: str, timeout: float = 120):
    """``python -c code args`` from the repository root, with the repository importable."""
    import subprocess
    import sys
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
               TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=timeout)


def run_cli(*args: str):
    """``tf-ipu ARGS`` in a process without TensorFlow; fails if TensorFlow got imported."""
    code = NO_TF + ("import runpy\nsys.argv = ['tf-ipu', *sys.argv[1:]]\n"
                    "try:\n    runpy.run_module('tf_ipu.cli', run_name='__main__')\n"
                    "finally:\n    assert 'tensorflow' not in sys.modules\n")
    return run_python(code, *args)


def program_node(doc: dict, match):
    """The first node of an executable file's program (its JSON document, as tests that forge files edit it) for
    which ``match(node)`` is true, depth first; None when there is none."""
    def find(node):
        if isinstance(node, dict):
            if match(node):
                return node
            node = list(node.values())
        if isinstance(node, list):
            for x in node:
                hit = find(x)
                if hit is not None:
                    return hit
        return None
    return find(doc["program"])
