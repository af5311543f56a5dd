"""Simulator speed and simulated cycles for a 1024x1024x1024 matmul and a softmax-MLP training step.

For each workload it prints, from the same run on the same machine:
  - host wall time of one step on the simulated IPU vs TensorFlow-CPU with XLA (jit_compile=True), and the ratio;
  - compile time (HLO -> IPU executable) vs TensorFlow's XLA JIT compile of the same function;
  - simulated IPU cycles and time at the device clock, and the simulated throughput.

    python benchmarks/bench_ops.py [--device mk2] [--repeats 5]
"""
import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_ipu  # noqa: E402
from timing import best_of  # noqa: E402


def bench(name, fn, args, strategy, repeats, flops=None):
    # TensorFlow CPU with XLA: first call compiles, later calls run
    xla = tf.function(getattr(fn, "python_function", fn), jit_compile=True)
    t0 = time.perf_counter()
    xla(*args)
    tf_compile = time.perf_counter() - t0
    tf_run = best_of(lambda: [t.numpy() for t in tf.nest.flatten(xla(*args))], repeats)

    t0 = time.perf_counter()
    strategy.compile(fn, args)
    ipu_compile = time.perf_counter() - t0
    strategy.run(fn, args)
    ipu_run = best_of(lambda: strategy.run(fn, args), repeats)
    rep = strategy.last_report()
    print(f"\n== {name}")
    print(f"host time per step:  simulator {ipu_run * 1e3:9.2f} ms   TF-CPU XLA {tf_run * 1e3:9.2f} ms   "
          f"ratio {ipu_run / tf_run:6.2f}x")
    print(f"compile:             simulator {ipu_compile:9.2f} s    TF-CPU XLA {tf_compile:9.2f} s    "
          f"ratio {ipu_compile / tf_compile:6.2f}x   (simulator figure includes tracing to HLO)")
    print(f"simulated IPU:       {rep.cycles_total:,} cycles = {rep.seconds * 1e6:.1f} us "
          f"(compute {rep.cycles_compute:,}, exchange {rep.cycles_exchange:,}, sync {rep.cycles_sync:,}, "
          f"host I/O {rep.cycles_host_io:,}); tiles used {rep.tiles_used}")
    if flops:
        on_chip = (rep.cycles_total - rep.cycles_host_io) / rep.clock_hz
        print(f"simulated throughput: {flops / on_chip / 1e12:.2f} TFLOP/s on chip (excluding host I/O)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="mk2", choices=["mk1", "mk2"])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, "
          f"TensorFlow {tf.__version__}, device {args.device}")
    strategy = tf_ipu.IPUStrategy(tf_ipu.IPUConfig(device=args.device, compile_progress=False))
    rng = np.random.default_rng(0)

    a = rng.standard_normal((1024, 1024), dtype=np.float32)
    b = rng.standard_normal((1024, 1024), dtype=np.float32)
    bench("matmul 1024x1024x1024 f32", tf.function(lambda x, y: x @ y), (a, b), strategy, args.repeats,
          flops=2 * 1024 ** 3)

    batch, d_in, hidden, classes = 256, 784, 512, 10
    x = rng.standard_normal((batch, d_in), dtype=np.float32)
    labels = rng.integers(0, classes, batch).astype(np.int32)
    w1 = rng.standard_normal((d_in, hidden), dtype=np.float32) * 0.05
    b1 = np.zeros(hidden, np.float32)
    w2 = rng.standard_normal((hidden, classes), dtype=np.float32) * 0.05
    b2 = np.zeros(classes, np.float32)

    @tf.function
    def mlp_step(x, labels, w1, b1, w2, b2):
        params = [w1, b1, w2, b2]
        with tf.GradientTape() as tape:
            tape.watch(params)
            h = tf.nn.relu(x @ w1 + b1)
            logits = h @ w2 + b2
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        grads = tape.gradient(loss, params)
        return [loss] + [p - 0.1 * g for p, g in zip(params, grads)]

    flops = 2 * batch * (d_in * hidden + hidden * classes) * 3
    bench(f"softmax-MLP training step (batch {batch}, {d_in}-{hidden}-{classes})", mlp_step,
          (x, labels, w1, b1, w2, b2), strategy, args.repeats, flops=flops)


if __name__ == "__main__":
    main()
