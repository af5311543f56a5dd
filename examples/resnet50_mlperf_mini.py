"""MLPerf-style ResNet-50 mini runs on the simulated IPU: time to accuracy, or throughput on synthetic data.

    # time to accuracy: ResNet-50 on scikit-learn's digits, upscaled to 32x32x3, until 90% validation accuracy
    python examples/resnet50_mlperf_mini.py --device mk2 --image-size 32 --batch-size 32 \
        --dataset digits --target-accuracy 0.90 --epochs 20
    # throughput: a few training steps on random images
    python examples/resnet50_mlperf_mini.py --synthetic --image-size 224 --batch-size 4 --steps 5
    # either, plus the same run with TensorFlow on the CPU
    python examples/resnet50_mlperf_mini.py ... --compare-cpu

The run logs MLPerf key/value lines through MLCommons' own logger (``mlperf_logging.mllog``, ``:::MLLOG {...}``:
submission info, init_start/stop around building and compiling, run_start, epoch_start/stop, eval_start/stop,
eval_accuracy, a throughput entry each epoch and run_stop with its status) and ends with a summary: host
wall-clock time to the target, host images/s, the simulated IPU's images/s (cycles of a training step at the
device's clock), the busiest tile's peak and always-live memory, the compile time; with ``--compare-cpu`` the same
run's figures for TensorFlow on the CPU.

As in MLPerf, compiling belongs to initialisation (init_start .. init_stop), not to the timed run: the training and
evaluation steps are compiled for their batch shapes before run_start. Training batches are whole (the remainder
of an epoch is dropped, as MLPerf's ResNet reference does), and the evaluation batch is the largest size up to
``--batch-size`` that divides the evaluation set, so each step shape is compiled once.

The digits run trains with Adam (learning rate 0.001) by default, and ResNet-50's batch-norm layers keep their
moving statistics with momentum 0.9 (``--bn-momentum``): from scratch on 1,437 small images, SGD with momentum
does not converge in 20 epochs and Keras' default momentum of 0.99 leaves the statistics that evaluation uses
hundreds of steps behind. ``--optimizer sgd`` (MLPerf's; the default for synthetic throughput) is there too.
On the simulated mk2, ResNet-50 training (32x32) fits at batch 32 with SGD and at batch 16 with Adam (two slots a
weight); Adam at batch 32 does not fit yet (~706 KB at the busiest tile: the report says where and why), so the
time-to-accuracy command above needs ``--batch-size 16`` (or ``--tile-memory-kib 720``, a what-if device) for now.

``--micro-batch-size M``: the device runs M images a step and the optimizer accumulates the gradients of
batch-size / M steps before it updates the weights (Keras' ``gradient_accumulation_steps``), so the global batch
stays ``--batch-size``; as Graphcore's own MLPerf ResNet-50 runs did (micro-batch x accumulation). Batch-norm
statistics are those of each micro-batch. The optimizer's conditional update writes every weight, slot and
accumulator into the variable's own storage, one after the other, so accumulation costs the accumulators and the
gradients kept for the update, not a second copy of every variable. ResNet-50 (32x32 images, SGD) fits the
simulated mk2 at 8 images a step (~603 KiB at the busiest tile of the 608 KiB usable); at 16 it needs ~640 KiB
(``--tile-memory-kib 656`` runs it on a what-if device).

``--model cnn`` swaps ResNet-50 for a small CNN (two convolutions): the same pipeline in seconds, to try options
out. ``--tile-memory-kib K`` runs on a what-if device with K KiB per tile when the model does not fit
the real one (the out-of-memory report is printed first); its figures are not a real IPU's.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from mlperf_logging import mllog  # noqa: E402

import tf_ipu  # noqa: E402
from kernels import device as ipu_devices  # noqa: E402

C = mllog.constants


# --- data ------------------------------------------------------------------------------------------------------
def digits(size: int, seed: int):
    """scikit-learn's 1797 8x8 digits, shuffled once and split 80/20, upscaled to size x size x 3 in [0, 1]."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    y = d.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    x = tf.image.resize(x, (size, size), method="bilinear").numpy()
    x = np.repeat(x, 3, axis=-1)
    n = int(0.8 * len(x))
    return (x[:n], y[:n]), (x[n:], y[n:])


def synthetic(size: int, n: int, seed: int):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, size, size, 3), dtype=np.float32), rng.integers(0, 10, n).astype(np.int32)


def train_batches(x, y, batch: int, seed: int) -> tf.data.Dataset:
    """Whole batches, reshuffled every epoch."""
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch, drop_remainder=True)


def eval_batch_size(n: int, batch: int) -> int:
    return max(d for d in range(1, min(batch, n) + 1) if n % d == 0)


# --- the model ---------------------------------------------------------------------------------------------------
def make_model(args, classes: int = 10) -> keras.Model:
    keras.utils.set_random_seed(args.seed)       # the same initial weights for the IPU and the CPU runs
    if args.model == "cnn":
        size = args.image_size
        model = keras.Sequential([
            keras.Input((size, size, 3)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(classes, activation="softmax"),
        ])
    else:
        model = keras.applications.ResNet50(weights=None, input_shape=(args.image_size, args.image_size, 3),
                                            classes=classes)
        # batch-norm moving statistics that follow the weights within an epoch of a small dataset (Keras' 0.99
        # lags by hundreds of steps, and evaluation uses them)
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = args.bn_momentum
    accumulate = args.batch_size // args.micro_batch_size
    steps = dict(gradient_accumulation_steps=accumulate if accumulate > 1 else None)
    if args.optimizer == "adam":
        optimizer = keras.optimizers.Adam(args.learning_rate, **steps)
    else:
        optimizer = keras.optimizers.SGD(args.learning_rate, momentum=0.9, **steps)
    model.compile(optimizer=optimizer,
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=args.steps_per_execution)
    return model


# --- one run -----------------------------------------------------------------------------------------------------
class Run:
    """One MLPerf-style run on the IPU (``strategy`` given) or on the CPU; its figures for the summary."""

    def __init__(self, args, strategy, log):
        self.args, self.strategy, self.log = args, strategy, log
        self.compile_seconds = 0.0
        self.train_seconds = 0.0
        self.images = 0
        self.time_to_target = None
        self.accuracy = None
        self.status = C.ABORTED

    def scope(self):
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def initialise(self, train, evaluation):
        args = self.args
        with self.scope():
            self.model = make_model(args)
        x, y = train
        self.batch = args.micro_batch_size          # images a device step takes
        self.eval_batch = eval_batch_size(len(evaluation[0]), args.micro_batch_size) if evaluation else None
        t0 = time.perf_counter()
        if self.strategy is not None:
            # compile the steps now, for the shapes the run uses (MLPerf counts compiling as initialisation)
            self.model.make_train_function()
            self.model.train_function.compile((x[:self.batch], y[:self.batch]))
            if evaluation:
                xv, yv = evaluation
                self.model.make_test_function()
                self.model.test_function.compile((xv[:self.eval_batch], yv[:self.eval_batch]))
        self.compile_seconds = time.perf_counter() - t0

    def train_epoch(self, dataset, epoch: int, steps: int | None = None):
        args = self.args
        t0 = time.perf_counter()
        with self.scope():
            history = self.model.fit(dataset, epochs=epoch + 1, initial_epoch=epoch, steps_per_epoch=steps,
                                     shuffle=False, verbose=args.verbose)     # the dataset reshuffles itself
        seconds = time.perf_counter() - t0
        self.train_seconds += seconds
        n = (steps or len(dataset)) * self.batch
        self.images += n
        return history, n / seconds

    def evaluate(self, evaluation) -> float:
        xv, yv = evaluation
        with self.scope():
            _, accuracy = self.model.evaluate(xv, yv, batch_size=self.eval_batch, verbose=0)
        return float(accuracy)

    def ipu_figures(self) -> dict:
        """Simulated figures of the latest full training execution."""
        fn = self.model.train_function
        rep = fn.reports[self.batch]
        step_seconds = rep.cycles_per_step / rep.clock_hz
        busiest = int(np.argmax(rep.memory_peak))
        return {"ipu_images_per_s": self.batch / step_seconds, "cycles_per_step": rep.cycles_per_step,
                "peak_tile": busiest, "peak_bytes": int(rep.memory_peak[busiest]),
                "always_live_bytes": int(rep.memory_always_live.max()), "tile_memory": rep.tile_memory,
                "device": rep.device, "tiles": rep.num_tiles, "clock_hz": rep.clock_hz}


def time_to_accuracy(run: Run, train, evaluation, log) -> None:
    args = run.args
    x, y = train
    dataset = train_batches(x, y, args.micro_batch_size, args.seed)
    log.end(key=C.INIT_STOP)
    log.start(key=C.RUN_START)
    t_run = time.perf_counter()
    for epoch in range(args.epochs):
        log.start(key=C.EPOCH_START, metadata={C.EPOCH_NUM: epoch + 1})
        _, rate = run.train_epoch(dataset, epoch)
        log.event(key="tracked_stats", value={"throughput": rate}, metadata={"step": epoch + 1})
        log.start(key=C.EVAL_START, metadata={C.EPOCH_NUM: epoch + 1})
        run.accuracy = run.evaluate(evaluation)
        log.event(key=C.EVAL_ACCURACY, value=run.accuracy, metadata={C.EPOCH_NUM: epoch + 1})
        log.end(key=C.EVAL_STOP, metadata={C.EPOCH_NUM: epoch + 1})
        log.end(key=C.EPOCH_STOP, metadata={C.EPOCH_NUM: epoch + 1})
        if run.accuracy >= args.target_accuracy:
            run.time_to_target = time.perf_counter() - t_run
            run.status = C.SUCCESS
            break
    log.end(key=C.RUN_STOP, metadata={C.STATUS: run.status})


def throughput(run: Run, train, log) -> None:
    args = run.args
    x, y = train
    dataset = train_batches(x, y, args.micro_batch_size, args.seed).repeat()
    # warm-up: one execution before the timed steps, so that TensorFlow's XLA compile on its first step (the IPU
    # run compiled during initialisation) and first-call costs are not counted as throughput
    run.train_epoch(dataset, 0, steps=args.steps_per_execution)
    run.images, run.train_seconds = 0, 0.0
    log.end(key=C.INIT_STOP)
    log.start(key=C.RUN_START)
    log.start(key=C.EPOCH_START, metadata={C.EPOCH_NUM: 1})
    _, rate = run.train_epoch(dataset, 1, steps=args.steps)
    log.event(key="tracked_stats", value={"throughput": rate}, metadata={"step": args.steps})
    log.end(key=C.EPOCH_STOP, metadata={C.EPOCH_NUM: 1})
    run.status = C.SUCCESS
    log.end(key=C.RUN_STOP, metadata={C.STATUS: run.status})


def run_once(args, strategy, train, evaluation, log) -> Run:
    run = Run(args, strategy, log)
    log.event(key=C.SUBMISSION_BENCHMARK, value=C.RESNET)
    log.event(key=C.SUBMISSION_ORG, value="tf-ipu")
    log.event(key=C.SUBMISSION_DIVISION, value="open")
    log.event(key=C.SUBMISSION_STATUS, value="research")
    log.event(key=C.SUBMISSION_PLATFORM, value=f"simulated {args.device} IPU" if strategy else "TensorFlow CPU")
    log.event(key=C.CACHE_CLEAR, value=True)
    log.start(key=C.INIT_START)
    log.event(key=C.SEED, value=args.seed)
    log.event(key=C.GLOBAL_BATCH_SIZE, value=args.batch_size)
    if args.micro_batch_size != args.batch_size:
        log.event(key=C.MICRO_BATCH_SIZE, value=args.micro_batch_size)
        log.event(key=C.GRADIENT_ACCUMULATION_STEPS, value=args.batch_size // args.micro_batch_size)
    log.event(key=C.OPT_NAME, value=args.optimizer)
    log.event(key=C.OPT_BASE_LR, value=args.learning_rate)
    log.event(key=C.TRAIN_SAMPLES, value=len(train[0]))
    if evaluation:
        log.event(key=C.EVAL_SAMPLES, value=len(evaluation[0]))
    run.initialise(train, evaluation)
    if args.synthetic:
        throughput(run, train, log)
    else:
        time_to_accuracy(run, train, evaluation, log)
    return run


def summary(title: str, run: Run, ipu: bool) -> None:
    args = run.args
    print(f"\n== {title}")
    if not args.synthetic:
        reached = (f"{run.time_to_target:.1f} s" if run.time_to_target is not None
                   else f"not reached in {args.epochs} epochs")
        print(f"  time to {args.target_accuracy:.0%} validation accuracy (host wall clock): {reached}; "
              f"last accuracy {run.accuracy:.4f}")
    print(f"  host throughput              {run.images / run.train_seconds:>12,.1f} images/s "
          f"({run.images} images in {run.train_seconds:.1f} s of training)")
    if ipu:
        f = run.ipu_figures()
        print(f"  IPU throughput (simulated)   {f['ipu_images_per_s']:>12,.1f} images/s "
              f"({f['cycles_per_step']:,.0f} cycles a step of {run.batch} at {f['clock_hz'] / 1e9:.2f} GHz, "
              f"{f['device']} with {f['tiles']} tiles)")
        print(f"  busiest tile                 {f['peak_bytes']:>12,} bytes at the peak (tile {f['peak_tile']}), "
              f"{f['always_live_bytes']:,} always live, of {f['tile_memory']:,}")
        print(f"  compile (initialisation)     {run.compile_seconds:>12,.1f} s "
              f"({run.strategy.compile_count} executable{'s' if run.strategy.compile_count != 1 else ''} compiled)")
    else:
        print(f"  initialisation               {run.compile_seconds:>12,.1f} s (TF compiles on its first step"
              + (", done as a warm-up before the timed steps)" if args.synthetic else ", which the run includes)"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="mk2", choices=sorted(ipu_devices.DEVICES))
    ap.add_argument("--tiles", type=int, default=None, help="tiles_per_ipu (default: all of the device's)")
    ap.add_argument("--tile-memory-kib", type=int, default=None,
                    help="if the model does not fit, run on a what-if device with this much memory per tile")
    ap.add_argument("--model", default="resnet50", choices=["resnet50", "cnn"])
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32, help="global batch: images per weight update")
    ap.add_argument("--micro-batch-size", type=int, default=None,
                    help="images per device step (default: the batch size); the optimizer accumulates the "
                         "gradients of batch-size / micro-batch-size steps")
    ap.add_argument("--dataset", default="digits", choices=["digits", "synthetic"])
    ap.add_argument("--synthetic", action="store_true", help="the same as --dataset synthetic")
    ap.add_argument("--target-accuracy", type=float, default=0.90)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--steps", type=int, default=5, help="training steps of a --synthetic run")
    ap.add_argument("--steps-per-execution", type=int, default=4)
    ap.add_argument("--optimizer", default=None, choices=["adam", "sgd"],
                    help="default: adam for the digits (it converges from scratch in a few epochs), sgd with "
                         "momentum 0.9 (MLPerf's) for synthetic throughput")
    ap.add_argument("--learning-rate", type=float, default=None, help="default: 0.001 for Adam, 0.05 for SGD")
    ap.add_argument("--bn-momentum", type=float, default=0.9, help="ResNet-50's batch-norm moving-average momentum")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verbose", type=int, default=0)
    ap.add_argument("--log-file", default=None, help="also write the MLPerf log lines to this file")
    ap.add_argument("--compare-cpu", action="store_true", help="also run the same thing with TensorFlow on the CPU")
    args = ap.parse_args(argv)
    args.synthetic = args.synthetic or args.dataset == "synthetic"
    args.micro_batch_size = args.micro_batch_size or args.batch_size
    if args.optimizer is None:
        args.optimizer = "sgd" if args.synthetic else "adam"
    if args.learning_rate is None:
        args.learning_rate = 0.001 if args.optimizer == "adam" else 0.05
    if args.micro_batch_size < 1 or args.batch_size % args.micro_batch_size:
        ap.error(f"--micro-batch-size ({args.micro_batch_size}) must divide --batch-size ({args.batch_size})")

    if args.log_file:
        mllog.config(filename=args.log_file)
    log = mllog.get_mllogger()
    if args.synthetic:
        train, evaluation = synthetic(args.image_size, args.micro_batch_size * args.steps, args.seed), None
    else:
        train, evaluation = digits(args.image_size, args.seed)

    def strategy_for(device):
        return tf_ipu.IPUStrategy(tf_ipu.IPUConfig(device=device, tiles_per_ipu=args.tiles))

    try:
        run = run_once(args, strategy_for(args.device), train, evaluation, log)
    except tf_ipu.TileMemoryError as e:
        print(f"\n{args.model} does not fit the simulated {args.device} at {args.micro_batch_size} images a step:\n{e}",
              file=sys.stderr)
        if not args.tile_memory_kib:
            print("(--tile-memory-kib K measures it on a what-if device with K KiB per tile)", file=sys.stderr)
            return 2
        args.device = ipu_devices.what_if(args.device, args.tile_memory_kib)
        print(f"\nrunning on the what-if device {args.device} (not a real IPU)", file=sys.stderr)
        run = run_once(args, strategy_for(args.device), train, evaluation, log)
    micro = f" ({args.micro_batch_size} a step)" if args.micro_batch_size != args.batch_size else ""
    what = (f"{args.model} {args.image_size}x{args.image_size}, batch {args.batch_size}{micro}, "
            + ("synthetic data" if args.synthetic else f"digits to {args.target_accuracy:.0%}"))
    summary(f"simulated {args.device} IPU: {what}", run, ipu=True)
    if args.compare_cpu:
        cpu = run_once(args, None, train, evaluation, log)
        summary(f"TensorFlow on the CPU: {what}", cpu, ipu=False)
        print(f"\n  host time ratio (simulator / TF-CPU): {run.train_seconds / run.images * cpu.images / cpu.train_seconds:.1f}x")
    return 0 if run.status == C.SUCCESS else 1


if __name__ == "__main__":
    sys.exit(main())
