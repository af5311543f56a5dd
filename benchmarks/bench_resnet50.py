"""Compile time, host time per step and simulated cycles of a Keras ResNet-50 training step on the simulated IPU.

keras.applications.ResNet50(weights=None, input_shape=(S, S, 3), classes=10), SGD with momentum, sparse categorical
crossentropy, one ``train_on_batch`` step. From the same run on the same machine it prints:
  - compile time of the step (trace to HLO + HLO -> IPU executable) vs TensorFlow-CPU's XLA JIT (jit_compile=True);
  - host wall time of one step on the simulator vs TF-CPU XLA, and the ratio;
  - simulated IPU cycles, time and images/s at the device clock; peak memory of the busiest tile.

    python benchmarks/bench_resnet50.py [--image-size 32] [--batch 8] [--device mk2] [--tiles N] [--repeats 3]
                                        [--tile-memory-kib K] [--skip-tf]

If the step does not fit the device's tile memory, the TileMemoryError is printed (tile, bytes, tensors) and, with
--tile-memory-kib K, the step is compiled and run again on a what-if variant of the device with K KiB per tile
(same tiles, clock and cycle model; not a real IPU), so that compile and step times can still be measured.
"""
import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

import tf_ipu  # noqa: E402
from timing import best_of  # noqa: E402
from kernels import device as ipu_devices  # noqa: E402


def make_model(size, classes, jit_compile):
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(size, size, 3), classes=classes)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9),
                  loss="sparse_categorical_crossentropy", jit_compile=jit_compile)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--device", default="mk2", choices=["mk1", "mk2"])
    ap.add_argument("--tiles", type=int, default=None, help="tiles_per_ipu (default: all of the device)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-tf", action="store_true", help="do not run the TF-CPU XLA reference")
    ap.add_argument("--tile-memory-kib", type=int, default=None,
                    help="when the step does not fit, retry on a what-if device with this much memory per tile")
    args = ap.parse_args()
    size, batch = args.image_size, args.batch
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, "
          f"TensorFlow {tf.__version__}, Keras {keras.__version__}, device {args.device}")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, size, size, 3), dtype=np.float32)
    y = rng.integers(0, args.classes, batch).astype(np.int32)

    t_start = time.perf_counter()
    tf_compile = tf_run = None
    if not args.skip_tf:
        # TensorFlow CPU with XLA: the first call traces and compiles, later calls run
        ref = make_model(size, args.classes, jit_compile=True)
        t0 = time.perf_counter()
        ref.train_on_batch(x, y)
        tf_compile = time.perf_counter() - t0
        tf_run = best_of(lambda: ref.train_on_batch(x, y), args.repeats)
        tf_compile -= tf_run
        del ref
        print(f"TF-CPU XLA: compile (first step minus one step) {tf_compile:.1f} s, "
              f"step {tf_run * 1e3:.1f} ms")

    def simulate(device):
        strategy = tf_ipu.IPUStrategy(tf_ipu.IPUConfig(device=device, tiles_per_ipu=args.tiles,
                                                       compile_progress=False))
        with strategy.scope():
            model = make_model(size, args.classes, jit_compile=False)
        t0 = time.perf_counter()
        model.train_on_batch(x, y)       # trace + compile + first step
        first = time.perf_counter() - t0
        return model, first, best_of(lambda: model.train_on_batch(x, y), args.repeats)

    device = args.device
    try:
        model, first, ipu_run = simulate(device)
    except tf_ipu.TileMemoryError as e:
        print(f"\n{args.device}: the step does not fit ({time.perf_counter() - t_start:.1f} s after start):\n{e}")
        if not args.tile_memory_kib:
            return
        device = ipu_devices.what_if(args.device, args.tile_memory_kib)
        print(f"\nretrying on the what-if device {device} ({args.tile_memory_kib} KiB per tile, not a real IPU)")
        model, first, ipu_run = simulate(device)
    rep = model.train_function.last_report
    ipu_compile = first - ipu_run

    print(f"\n== ResNet-50 training step ({size}x{size}x3, batch {batch}, {args.classes} classes, SGD momentum) "
          f"on {device}")
    if tf_run is not None:
        print(f"host time per step:  simulator {ipu_run * 1e3:9.1f} ms   TF-CPU XLA {tf_run * 1e3:9.1f} ms   "
              f"ratio {ipu_run / tf_run:6.1f}x")
        print(f"compile:             simulator {ipu_compile:9.1f} s    TF-CPU XLA {tf_compile:9.1f} s    "
              f"ratio {ipu_compile / tf_compile:6.1f}x   (both include tracing; first step minus one step)")
    else:
        print(f"host time per step:  simulator {ipu_run * 1e3:9.1f} ms")
        print(f"compile:             simulator {ipu_compile:9.1f} s")
    print(f"  (of which HLO -> IPU executable {rep.compile_seconds:.1f} s)")
    print(f"simulated IPU:       {rep.cycles_total:,} cycles = {rep.seconds * 1e3:.3f} ms "
          f"(compute {rep.cycles_compute:,}, exchange {rep.cycles_exchange:,}, sync {rep.cycles_sync:,}, "
          f"host I/O {rep.cycles_host_io:,}); tiles used {rep.tiles_used} of {rep.num_tiles}")
    on_chip = (rep.cycles_total - rep.cycles_host_io) / rep.clock_hz
    print(f"simulated throughput: {batch / rep.seconds:,.1f} images/s "
          f"({batch / on_chip:,.1f} images/s on chip, excluding host I/O) at {rep.clock_hz / 1e9:.2f} GHz")
    peak_tile = int(np.argmax(rep.memory_peak))
    print(f"peak tile memory:    {int(rep.memory_peak[peak_tile]):,} bytes on tile {peak_tile} "
          f"({rep.memory_peak[peak_tile] / rep.tile_memory:.1%} of {rep.tile_memory // 1024} KiB); median tile "
          f"{int(np.median(rep.memory_peak)):,} bytes; by category (all tiles): "
          + ", ".join(f"{k} {int(v.sum()) / 2**20:.1f} MiB" for k, v in sorted(rep.memory_by_category.items())))
    print("most expensive steps:")
    for name, cyc in rep.top_steps(5):
        print(f"  {cyc:>12,}  {name}")


if __name__ == "__main__":
    main()
