"""tf-ipu: run TensorFlow and Keras on a simulated Graphcore IPU.

    strategy = tf_ipu.IPUStrategy(tf_ipu.IPUConfig(device="mk2"))
    out = strategy.run(f, args=(x, w, b))
    print(strategy.last_report())
"""
from xla_lowering.errors import (DynamicShapeError, LoweringError, TileMemoryError,  # noqa: F401
                                 UnsupportedOpError)

from .config import IPUConfig  # noqa: F401
from .report import Report  # noqa: F401
from .strategy import IPUStrategy  # noqa: F401

__version__ = "0.1.0"
