"""Train a small CNN on scikit-learn's 8x8 digits on the simulated IPU: only the strategy scope is new.

    python examples/train_digits.py                    # a 1472-tile mk2 (GC200)
    python examples/train_digits.py --tiles 64         # fewer tiles: faster to compile and to simulate
    python examples/train_digits.py --compare-cpu      # also train the same model with TensorFlow on the CPU
                                                       # (same initial weights, batches and dropout bits)

Prints the validation accuracy, the simulated IPU's throughput (images/s from the cycles of the latest training
step at the device's clock) and the host's own images/s (wall time of the last epoch, which compiles nothing).
The data ship with scikit-learn (``sklearn.datasets.load_digits``): nothing is downloaded.
"""
import argparse
import contextlib
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")     # keep TensorFlow's start-up messages out of the way

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import tf_ipu  # noqa: E402


def load(seed: int = 0):
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]          # 1797 x 8 x 8 x 1 in [0, 1]
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_train = int(0.8 * len(x))                                        # 1437 / 360
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def make_model() -> keras.Model:
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.BatchNormalization(),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Dropout(0.25),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch's training steps (validation excluded)."""

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()
        self.seconds = getattr(self, "seconds", [])

    def on_train_batch_end(self, batch, logs=None):
        self._last = time.perf_counter()
        self.losses = getattr(self, "losses", [])
        self.losses.append(float(logs["loss"]))          # one entry per execution of steps_per_execution steps

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(self._last - self._t0)


def train(scope, data, args):
    (x, y), (xv, yv) = data
    timer = EpochTimer()
    with scope:
        keras.utils.set_random_seed(args.seed)
        model = make_model()                      # the same initial weights on the IPU and the CPU
        # On the CPU, compile with XLA as the IPU run does: Dropout then draws the same random bits on both (TF's
        # non-XLA CPU kernels turn the same Philox words into different floats).
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"], steps_per_execution=args.steps_per_execution, jit_compile=True)
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, validation_data=(xv, yv),
                  callbacks=[timer], verbose=args.verbose)
        total = time.perf_counter() - t0
        loss, accuracy = model.evaluate(xv, yv, batch_size=args.batch_size, verbose=0)
    return model, accuracy, total, len(x) / timer.seconds[-1], timer.losses


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="mk2", choices=["mk1", "mk2"])
    parser.add_argument("--tiles", type=int, default=None, help="tiles_per_ipu (default: all of the device's)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps-per-execution", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=2)
    parser.add_argument("--compare-cpu", action="store_true", help="also train the same model on the CPU")
    args = parser.parse_args()
    data = load(args.seed)

    strategy = tf_ipu.IPUStrategy(tf_ipu.IPUConfig(device=args.device, tiles_per_ipu=args.tiles,
                                                   compile_progress=False))
    model, accuracy, seconds, host_rate, losses = train(strategy.scope(), data, args)
    batch = args.batch_size
    report = model.train_function.reports[batch]         # the latest full execution's cycles and memory
    ipu_rate = batch * report.iterations / report.seconds
    print(f"\nSimulated {report.device} IPU ({report.num_tiles} tiles at {report.clock_hz / 1e9:.2f} GHz), "
          f"{args.epochs} epochs in {seconds:.1f} s of host time ({strategy.compile_count} compiles)")
    print(f"  validation accuracy        {accuracy:.4f}")
    print(f"  IPU throughput (simulated) {ipu_rate:>12,.0f} images/s   ({report.cycles_per_step:,.0f} cycles a "
          f"training step of {batch} images, {report.iterations} steps an execution)")
    print(f"  host throughput            {host_rate:>12,.0f} images/s   (simulator, last epoch's wall time)")
    print(f"  busiest tile's memory peak {int(report.memory_peak.max()):,} of {report.tile_memory:,} bytes")

    if args.compare_cpu:
        _, cpu_accuracy, cpu_seconds, cpu_rate, cpu_losses = train(contextlib.nullcontext(), data, args)
        print(f"TensorFlow on the CPU (XLA), same initial weights, batches and dropout bits: {args.epochs} epochs in "
              f"{cpu_seconds:.1f} s")
        print(f"  validation accuracy        {cpu_accuracy:.4f}")
        print(f"  host throughput            {cpu_rate:>12,.0f} images/s")
        diff = np.abs(np.array(losses) - np.array(cpu_losses))
        apart = np.flatnonzero(diff > 1e-4)
        agree = int(apart[0]) if len(apart) else len(diff)
        per_epoch = len(diff) // args.epochs
        print(f"  training losses agree within 1e-4 for the first {agree} of {len(diff)} executions "
              f"({agree / per_epoch:.1f} epochs; then float rounding differences of ~1e-7 tip a max-pool or ReLU "
              f"near-tie and the two runs drift apart)" if agree < len(diff) else
              f"  training losses agree within 1e-4 for all {len(diff)} executions (largest difference "
              f"{diff.max():.1e})")


if __name__ == "__main__":
    main()
