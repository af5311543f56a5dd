"""Keras 3 under an IPUStrategy: train, test and predict functions that run on the simulated IPU.

The hook. Keras 3's TensorFlow trainer (keras/src/backend/tensorflow/trainer.py) builds a model's
``train_function`` / ``test_function`` / ``predict_function`` in ``make_train_function`` etc. and calls it once per
execution of ``steps_per_execution`` steps. A strategy cannot do the work itself: Keras calls ``strategy.run``
*inside* the tf.function it traces, where nothing can be executed, and ``strategy.extended`` only sees variables and
data. So creating an IPUStrategy wraps the three ``TensorFlowTrainer.make_*_function`` methods once
(``install_keras_hook``; ``uninstall_keras_hook`` restores them). The wrapper only delegates: a model whose
``distribute_strategy`` is an IPUStrategy (created under its scope, or fitted inside it) gets an ``IPUStepFunction``;
every other model gets Keras's own function, untouched. Nothing of ``fit`` / ``evaluate`` / ``predict`` changes, so
callbacks, the progress bar, history, validation and ``stop_training`` behave as with any Keras model.

One executable per step signature. ``IPUStepFunction`` traces ``model.train_step(data)`` (in the strategy's replica
context, as Keras does) as a ``tf.function(jit_compile=True)``: forward pass, loss, gradients, optimizer update and
metric updates are one HLO module whose parameters are the batch and every model, optimizer, metric and seed variable
(the captured resources), the updated ones aliased to outputs. It is compiled once per input signature through the
strategy's executable cache as an *infeed loop* (``CompileOptions(loop=True)``): the device program runs the step
once per batch it is fed, each step's updated variables written in place for the next. Its outputs are the logs
Keras expects: ``train_step`` returns ``compute_metrics(...)``, the metric results computed on the device from the
updated metric variables, streamed out after the last step (predictions: an outfeed, one element per step).

steps_per_execution=N. One call takes up to N batches from the iterator and runs them as one device execution of
the infeed loop, like the IPU's on-device loop: one program run, its cycles and host I/O counted for N steps. The
loop's trip count is given at run time, so an epoch whose last execution has fewer batches runs the same
executable for fewer steps.

Static shapes. A dynamic batch dimension never reaches the IPU: every batch shape is its own executable. The last
partial batch of an epoch (1437 samples = 44 x 32 + 29) traces and compiles a second executable for its size (its
execution's other batches run first on the first executable), and the strategy's ``last_recompile_reason`` says
"the batch size changed from 32 to 29"; both executables stay cached, so later epochs, ``evaluate`` and ``predict``
with the same batch sizes compile nothing.

Variables stay on the device. The model's, optimizer's and metrics' variables are resident tensors of the
executables: written to the device when an executable first needs them, updated there step after step, and read
back only when the host reads them (``get_weights``, ``save``, checkpoints, ``numpy()``), or when another executable
is loaded over them (the validation program after the training program, as Poplar did). tf_ipu.resident keeps
track of where each value is; its hook on Keras variables makes any read see the latest value and any host
assignment (``set_weights``, ``reset_metrics``, a learning-rate callback) reach the device before the next step.
Other variables a step uses (none in a plain Keras model) are streamed in and out once per execution.

Weights are never lost. A step is never cut in half: Ctrl-C during an execution stops its loop after the current
step and then raises KeyboardInterrupt; an exception in a callback or in the input pipeline happens between
executions. Either way every completed step's updates are on the device, and reading the variables brings them to
the host, so ``get_weights``, ``save`` and checkpoints after the exception see the last completed step.

Not done: ``run_eagerly`` and ``jit_compile`` are ignored (steps always compile for the IPU); data must be tensors
(no ragged or sparse inputs); several replicas come later.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import signal
import threading
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from kernels.dtypes import NUMPY as _NUMPY_DTYPES
from xla_lowering.compiler import CompileOptions

from . import resident
from .report import Report

log = logging.getLogger("tf_ipu")

KINDS = ("train", "test", "predict")
_END = object()             # the iterator is exhausted


# --- the hook --------------------------------------------------------------------------------------------
def _trainer_class():
    try:
        from keras.src.backend.tensorflow.trainer import TensorFlowTrainer
    except Exception:  # pragma: no cover - Keras 3 (TensorFlow backend) is not installed
        return None
    return TensorFlowTrainer


def install_keras_hook() -> bool:
    """Make models whose strategy is an IPUStrategy get IPU step functions (idempotent)."""
    cls = _trainer_class()
    if cls is None:  # pragma: no cover
        return False
    for kind in KINDS:
        name = f"make_{kind}_function"
        keras_own = cls.__dict__[name]
        if getattr(keras_own, "_tf_ipu_keras_own", None) is None:
            setattr(cls, name, _delegating(kind, keras_own))
    resident.install_variable_hook()
    return True


def uninstall_keras_hook() -> None:
    resident.uninstall_variable_hook()         # reads every device-only value back first
    cls = _trainer_class()
    for kind in KINDS if cls is not None else ():
        name = f"make_{kind}_function"
        keras_own = getattr(cls.__dict__[name], "_tf_ipu_keras_own", None)
        if keras_own is not None:
            setattr(cls, name, keras_own)


def _delegating(kind: str, keras_own):
    attr = f"{kind}_function"

    @functools.wraps(keras_own)
    def make_function(model, force=False):
        from .strategy import IPUStrategy
        strategy = model.distribute_strategy
        if not isinstance(strategy, IPUStrategy):
            return keras_own(model, force)
        if getattr(model, attr) is not None and not force:
            return getattr(model, attr)
        setattr(model, attr, IPUStepFunction(model, strategy, kind))
        return getattr(model, attr)

    make_function._tf_ipu_keras_own = keras_own
    return make_function


# --- one compiled step --------------------------------------------------------------------------------------
@dataclass
class _Program:
    """The step compiled for one input signature as an infeed loop, and where each value comes from and goes."""
    compiled: object                 # strategy._Compiled
    params: list                     # per HLO parameter: ("data", leaf index) | ("var", tf.Variable) | ("const", array)
    inputs: list                     # per host input of the executable: its HLO parameter
    resident: list                   # per resident tensor of the executable: its tf.Variable
    updated: list                    # the resident variables the step updates
    carried: list                    # (host output, tf.Variable): streamed variables the step updates
    results: list                    # host outputs that are the step's own outputs, in order
    structure: object                # the step's structured outputs
    batch_size: int | None


def _leaves(data) -> list:
    return [a for a in tf.nest.flatten(data) if a is not None]


def _signature(data) -> str:
    return repr(tf.nest.map_structure(lambda a: None if a is None else (tuple(a.shape), a.dtype.name), data))


@contextlib.contextmanager
def _interrupts_held(on_interrupt=None):
    """Hold Ctrl-C back while the block runs (so that variables are never half assigned) and deliver it after;
    ``on_interrupt`` is called when it arrives (to stop a running infeed loop after its current step)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []

    def hold(signum, frame):
        caught.append(frame)
        if on_interrupt is not None:
            on_interrupt()
    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
        if caught and callable(previous):
            previous(signal.SIGINT, caught[0])
        elif caught:
            raise KeyboardInterrupt


class IPUStepFunction:
    """A model's train/test/predict function on the simulated IPU (what ``model.train_function`` becomes).

    ``last_report`` is the report of the latest execution (``last_batch_size`` its batch; ``last_report.steps``
    how many steps it ran), ``reports`` the latest report for each batch size (a partial last batch has its own
    executable); ``steps_run`` counts steps, ``executions`` device executions.
    """

    def __init__(self, model, strategy, kind: str):
        if kind == "train" and getattr(model, "_distribute_strategy", None) is not strategy:
            raise ValueError(f"model '{model.name}' was created outside the scope of the IPUStrategy it is fitted "
                             f"under: as with any tf.distribute strategy, create and compile the model inside "
                             f"`with strategy.scope():` (its optimizer's variables must belong to that strategy)")
        if getattr(model, "run_eagerly", False):
            log.warning("model '%s': run_eagerly is ignored under an IPUStrategy (its steps are compiled for the "
                        "IPU)", model.name)
        self.model, self.strategy, self.kind = model, strategy, kind
        step_name = f"{kind}_step"

        def step(data):
            # the replica context Keras's own functions give the step (optimizers and metrics look for it)
            return tf.distribute.OneDeviceStrategy.run(strategy, getattr(model, step_name), args=(data,))

        step.__name__ = step_name
        self.jit = tf.function(step, jit_compile=True, autograph=False)
        self._programs: dict[str, _Program] = {}
        self._built = False
        self.last_report: Report | None = None
        self.last_batch_size: int | None = None
        self.reports: dict[int | None, Report] = {}
        self.steps_run = 0
        self.executions = 0

    def compile(self, data):
        """Compile the step for batches like ``data`` (e.g. ``(x, y)`` of one batch) without running it, as a
        benchmark's initialisation does; returns the executable. Later calls with that shape compile nothing."""
        return self._program(_as_tensors(data)).compiled.exe

    def __call__(self, data):
        if self.kind == "predict":
            return self._predict(data)
        return self._steps(data)

    # --- train / test: up to steps_per_execution batches from the iterator ------------------------------
    def _steps(self, iterator):
        batches = []
        for _ in range(max(1, int(self.model.steps_per_execution or 1))):
            data = _next(iterator)
            if data is _END:
                break
            batches.append(data)
        if not batches:
            raise StopIteration
        logs = None
        for group in _by_signature(batches):
            outs = self._execute(group)
            logs = outs
        return tf.nest.map_structure(tf.constant, logs)

    # --- predict: Keras hands over the execution's batches as a list ---------------------------------------
    def _predict(self, batches):
        # each execution's outputs hold one element per step (an outfeed): steps' batches joined, as Keras does
        outputs = [self._execute(group) for group in _by_signature(list(batches))]
        flat = [np.concatenate([a.reshape((-1,) + a.shape[2:]) if a.ndim > 1 else a for a in parts])
                for parts in zip(*(tf.nest.flatten(o) for o in outputs))]
        return tf.nest.pack_sequence_as(outputs[0], [tf.constant(a) for a in flat])

    # --- one execution: an infeed loop over batches of one signature -------------------------------------------
    def _execute(self, batches: list):
        """Run the step once per batch (tensors, of one signature) in one device execution; the outputs of the last
        step (for predict: of every step, stacked)."""
        prog = self._program(batches[0])
        engine = prog.compiled.engine
        exe = prog.compiled.exe
        leaves = [_leaves(d) for d in batches]
        inputs = []
        for p, spec in zip(prog.inputs, exe.inputs):
            kind, what = prog.params[p]
            dtype = _NUMPY_DTYPES[spec.dtype]
            if kind == "data":
                value = np.stack([np.asarray(ls[what].numpy()).astype(dtype, copy=False).reshape(spec.dims)
                                  for ls in leaves])
            elif kind == "var":
                value = np.asarray(what.numpy()).astype(dtype, copy=False).reshape(spec.dims)
            else:
                value = np.asarray(what).astype(dtype, copy=False).reshape(spec.dims)
            inputs.append(value)
        resident.prepare(engine, prog.resident)
        prof = None
        try:
            # Ctrl-C ends the infeed loop after the current step (a step is never cut in half), then is raised
            with _interrupts_held(lambda: setattr(engine, "stop", True)):
                try:
                    outs, prof = engine.run(inputs, iterations=len(batches))
                finally:
                    # the device holds the updated values of every step it completed
                    resident.mark_updated(prog.updated)
                    if prof is not None:
                        with _interrupts_held():
                            for host_index, var in prog.carried:
                                var.assign(outs[host_index])
        finally:
            if prof is not None:
                self._account(prog, prof)
        if prof.iterations < len(batches):  # pragma: no cover - the loop stops early only on Ctrl-C (raised above)
            raise KeyboardInterrupt
        results = [outs[i] for i in prog.results]
        return tf.nest.pack_sequence_as(prog.structure, results) if prog.structure is not None else None

    def _account(self, prog: _Program, prof) -> None:
        self.steps_run += prof.iterations
        self.executions += 1
        self.last_report = Report.build(prog.compiled.exe, prof)
        self.last_batch_size = prog.batch_size
        self.reports[prog.batch_size] = self.last_report
        self.strategy._last_report = self.last_report
        if self.strategy.config.auto_report and prog.compiled.engine.runs == 1:   # a new executable's first run
            self.strategy._auto_report(self.jit)

    # --- tracing and compiling, once per input signature ------------------------------------------------------
    def _program(self, data) -> _Program:
        key = _signature(data)
        prog = self._programs.get(key)
        if prog is None:
            prog = self._programs[key] = self._build(data)
        self._last_data = data
        return prog

    def _change(self, data) -> str | None:
        """Why this step compiles again: how ``data`` differs from the batch of the latest step run."""
        old = getattr(self, "_last_data", None)
        if old is None:
            return None
        try:
            tf.nest.assert_same_structure(old, data)
        except (ValueError, TypeError):
            return f"the structure of its batch changed from {_structure(old)} to {_structure(data)}"
        from .strategy import _describe_change
        olds, news = _with_paths(old), _with_paths(data)
        added = [_leaf_name(p) for (p, a), (_, b) in zip(olds, news) if a is None and b is not None]
        dropped = [_leaf_name(p) for (p, a), (_, b) in zip(olds, news) if a is not None and b is None]
        parts = ([f"its batch now has {', '.join(added)}"] if added else []) + \
            ([f"its batch no longer has {', '.join(dropped)}"] if dropped else [])
        pairs = [(p, a, b) for (p, a), (_, b) in zip(olds, news) if a is not None and b is not None]
        old_sig = tuple((tuple(a.shape), a.dtype.name) for _, a, _ in pairs)
        new_sig = tuple((tuple(b.shape), b.dtype.name) for _, _, b in pairs)
        if old_sig != new_sig or not parts:
            reason = _describe_change(old_sig, new_sig)
            for k, (p, _, _) in enumerate(pairs):          # name the batch's elements as Keras does
                reason = reason.replace(f"argument {k}:", f"{_leaf_name(p)}:")
            parts.append(reason)
        return "; ".join(parts)

    def _build(self, data) -> _Program:
        if not self._built:
            # every variable must exist before the XLA trace: what fit and evaluate do first (predict does not)
            with self.strategy.scope():
                if getattr(self.model, "compiled", False):
                    self.model._symbolic_build(data_batch=data)
                elif not self.model.built:
                    from keras.utils import unpack_x_y_sample_weight
                    self.model(unpack_x_y_sample_weight(data)[0], training=False)   # one eager call builds it
            self._built = True
        leaves = _leaves(data)
        trace = self.strategy._trace(self.jit, (data,), {}, jit=self.jit)
        folded = set(trace.folded)
        if any(i < len(leaves) for i in folded):
            raise RuntimeError(f"the {self.kind} step's program depends on the values of its input batch (XLA "
                               f"folded inputs {sorted(folded)} into it as constants); it cannot be compiled once "
                               f"for every batch")
        kept = [i for i in range(len(trace.inputs) + len(folded)) if i not in folded]
        params = []
        for k, i in enumerate(kept):
            if i < len(leaves):
                params.append(("data", i))
            elif trace.variables[k] is not None:
                params.append(("var", trace.variables[k]))
            else:
                params.append(("const", trace.inputs[k]))
        # Keras's variables stay on the device (their reads and writes are hooked); any other variable is
        # streamed in and out once per execution
        keras_vars = _keras_variables(self.model)
        resident_params = frozenset(p for p, (kind, what) in enumerate(params)
                                    if kind == "var" and id(what) in keras_vars)
        options = CompileOptions(loop=True, feeds=frozenset(p for p, (kind, _) in enumerate(params) if kind == "data"),
                                 resident=resident_params, outfeed=self.kind == "predict")
        compiled = self.strategy._compile(self.jit, trace, options, reason=self._change(data))
        exe = compiled.exe
        aliased = {(out[0] if out else 0): param for out, param in exe.meta.get("aliases", [])}
        host_outputs = exe.meta["outputs"]
        results = sorted((k, h) for h, k in enumerate(host_outputs) if k < trace.n_outputs)
        return _Program(
            compiled=compiled, params=params,
            inputs=[p for p in range(len(params)) if p not in resident_params],
            resident=[params[t.param][1] for t in exe.resident],
            updated=[params[p][1] for p in aliased.values() if p in resident_params],
            carried=[(h, params[aliased[k]][1]) for h, k in enumerate(host_outputs)
                     if k in aliased and params[aliased[k]][0] == "var"],
            results=[h for _, h in results], structure=trace.structure,
            batch_size=int(leaves[0].shape[0]) if leaves and leaves[0].shape.rank else None)


def _keras_variables(model) -> dict:
    """id(tf.Variable) -> Keras variable, for every variable of the model, its optimizer and its metrics."""
    found = {}
    groups = [model.variables, getattr(model, "metrics_variables", [])]
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        groups.append(optimizer.variables)
    for group in groups:
        for v in group:
            tf_var = getattr(v, "_value", None)
            if isinstance(tf_var, tf.Variable):
                found[id(tf_var)] = v
    return found


_KERAS_BATCH = ("x", "y", "sample_weight")


def _with_paths(data, path: str = "") -> list:
    """(path, leaf) pairs of a batch in tf.nest's order, paths like "0" or "0/pixels"."""
    if isinstance(data, dict):
        items = sorted(data.items())
    elif isinstance(data, (tuple, list)):
        items = list(enumerate(data))
    else:
        return [(path, data)]
    return [pair for k, v in items for pair in _with_paths(v, f"{path}/{k}" if path else str(k))]


def _leaf_name(path: str) -> str:
    """A batch element's name: Keras's (x, y, sample_weight) at the top, the path below it."""
    head, _, rest = path.partition("/")
    name = _KERAS_BATCH[int(head)] if head.isdigit() and int(head) < 3 else head
    return f"{name}[{rest}]" if rest else (name or "the batch")


def _structure(data) -> str:
    """A batch's structure for messages: ``(float32[32, 8], int32[32], None)``."""
    def show(x):
        if isinstance(x, (tuple, list)):
            inner = ", ".join(show(v) for v in x)
            return f"({inner})" if isinstance(x, tuple) else f"[{inner}]"
        if isinstance(x, dict):
            return "{" + ", ".join(f"{k!r}: {show(v)}" for k, v in x.items()) + "}"
        return "None" if x is None else f"{x.dtype.name}{list(x.shape)}"
    return show(data)


def _as_tensors(data):
    return tf.nest.map_structure(lambda a: None if a is None else tf.convert_to_tensor(a), data)


def _by_signature(batches: list) -> list[list]:
    """The batches as tensors, in runs of consecutive batches of the same shapes (a partial last batch is a run of
    its own)."""
    groups, last = [], None
    for d in map(_as_tensors, batches):
        sig = _signature(d)
        if sig != last:
            groups.append([])
            last = sig
        groups[-1].append(d)
    return groups


def _next(iterator):
    try:
        return next(iterator)
    except (StopIteration, tf.errors.OutOfRangeError):
        return _END
