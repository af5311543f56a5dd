"""Quickstart: run a TensorFlow function on the simulated IPU and see where its cycles and memory go.

    python examples/quickstart.py
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")     # keep TensorFlow's start-up messages out of the way

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_ipu  # noqa: E402


@tf.function
def dense_softmax(x, w, b):
    return tf.nn.softmax(tf.nn.relu(x @ w + b))


def main():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 256), dtype=np.float32)
    w = rng.standard_normal((256, 64), dtype=np.float32) * 0.1
    b = rng.standard_normal(64, dtype=np.float32)

    strategy = tf_ipu.IPUStrategy(tf_ipu.IPUConfig(device="mk2"))      # 1472 tiles x 624 KiB
    out = strategy.run(dense_softmax, args=(x, w, b))
    reference = dense_softmax(x, w, b)                                 # TensorFlow on the CPU

    err = float(np.max(np.abs(out.numpy() - reference.numpy())))
    print(f"output {tuple(out.shape)}, max |IPU - CPU| = {err:.2e}")
    print(strategy.last_report())
    if err > 1e-5:
        raise SystemExit("the simulated IPU's result differs from TensorFlow's")


if __name__ == "__main__":
    main()
