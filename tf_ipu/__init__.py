"""tf-ipu: run TensorFlow and Keras on a simulated Graphcore IPU.

    strategy = tf_ipu.IPUStrategy(tf_ipu.IPUConfig(device="mk2"))
    out = strategy.run(f, args=(x, w, b))
    print(strategy.last_report())

    tf_ipu.export(strategy, f, (x, w, b), "f.ipuexe")      # later, even without TensorFlow:
    out = tf_ipu.load("f.ipuexe")(x, w, b)

The parts that need TensorFlow (IPUStrategy, export and the modules behind them) are imported when first used,
so that ``import tf_ipu; tf_ipu.load(...)`` and the ``tf-ipu`` command work in a process without TensorFlow.
"""
import importlib

__version__ = "0.1.0"

from kernels.serialize import ExecutableFormatError  # noqa: E402,F401
from xla_lowering.errors import (DynamicShapeError, LoweringError, TileMemoryError,  # noqa: E402,F401
                                 UnsupportedOpError)

from .config import IPUConfig  # noqa: E402,F401
from .report import Report  # noqa: E402,F401
from .runtime import LoadedExecutable, load  # noqa: E402,F401

# name -> module that defines it (imports TensorFlow): loaded on first use
_LAZY = {"IPUStrategy": "strategy", "export": "exporter", "export_keras": "exporter"}
_LAZY_MODULES = ("strategy", "exporter", "trainer", "hlo_proto")


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _LAZY_MODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'tf_ipu' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_LAZY_MODULES))
