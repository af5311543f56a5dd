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

One executable per step. ``IPUStepFunction`` traces ``model.train_step(data)`` (in the strategy's replica context,
as Keras does) as a ``tf.function(jit_compile=True)``: forward pass, loss, gradients, optimizer update and metric
updates are one HLO module whose parameters are the batch and every model, optimizer, metric and seed variable (the
captured resources), the updated ones aliased to outputs. It is compiled once per input signature through the
strategy's executable cache and run for each batch. Its outputs are the logs Keras expects: ``train_step`` returns
``compute_metrics(...)``, the metric results computed on the device from the updated metric variables.

steps_per_execution=N. One call takes up to N batches from the iterator and runs the compiled step for each in a
host loop, feeding every step's updated variables to the next step without touching the host variables. (Next step:
an on-device ``Repeat`` over the step fed by an infeed, so that one call is one device program, as on the IPU.)

Static shapes. A dynamic batch dimension never reaches the IPU: every batch shape is its own executable. The last
partial batch of an epoch (1437 samples = 44 x 32 + 29) traces and compiles a second executable for its size, and
the strategy's ``last_recompile_reason`` says "the batch size changed from 32 to 29"; both executables stay cached,
so later epochs, ``evaluate`` and ``predict`` with the same batch sizes compile nothing.

Variables are copied in at the start of each call and out at its end (they do not stay on the device between calls
yet). Weights are never lost: the host variables are assigned in a ``finally`` with the values of the last
*completed* step, Ctrl-C is held back while they are assigned, and callbacks run only between calls. So after an
exception or a KeyboardInterrupt in a callback, in the input pipeline or inside a step, the host variables hold the
last completed step's values, which ``get_weights``, ``save`` and checkpoints see.

Not in this slice: ``run_eagerly`` and ``jit_compile`` are ignored (steps always compile for the IPU); data must be
tensors (no ragged or sparse inputs); several replicas, on-device loops and device-resident variables come later.
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
    return True


def uninstall_keras_hook() -> None:
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
    """The step compiled for one input signature, and where each HLO parameter's value comes from."""
    compiled: object                 # strategy._Compiled
    sources: list                    # per parameter: ("data", leaf index) | ("var", tf.Variable) | ("const", array)
    layout: list                     # per parameter: (numpy dtype, dims)
    aliases: list                    # (output index, parameter) of the variables the step updates
    structure: object                # the step's structured outputs
    n_outputs: int
    batch_size: int | None


def _leaves(data) -> list:
    return [a for a in tf.nest.flatten(data) if a is not None]


def _signature(data) -> str:
    return repr(tf.nest.map_structure(lambda a: None if a is None else (tuple(a.shape), a.dtype.name), data))


@contextlib.contextmanager
def _interrupts_held():
    """Hold Ctrl-C back while the block runs (so that variables are never half assigned); deliver it after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(frame))
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

    ``last_report`` is the report of the latest step run (``last_batch_size`` its batch), ``reports`` the latest
    report for each batch size (a partial last batch has its own executable); ``steps_run`` counts steps.
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

    def __call__(self, data):
        if self.kind == "predict":
            return self._predict(data)
        return self._steps(data)

    # --- train / test: up to steps_per_execution batches from the iterator ------------------------------
    def _steps(self, iterator):
        logs, state, last = None, {}, None
        try:
            for _ in range(max(1, int(self.model.steps_per_execution or 1))):
                data = _next(iterator)
                if data is _END:
                    break
                logs, last = self._step(data, state)
        finally:
            self._finish(state, last)
        if logs is None:
            raise StopIteration
        return tf.nest.map_structure(tf.constant, logs)

    # --- predict: Keras hands over the execution's batches as a list ---------------------------------------
    def _predict(self, batches):
        outputs, state, last = [], {}, None
        try:
            for data in batches:
                out, last = self._step(data, state)
                outputs.append(out)
        finally:
            self._finish(state, last)
        flat = [np.stack(parts) if np.ndim(parts[0]) == 0 else np.concatenate(parts)
                for parts in zip(*(tf.nest.flatten(o) for o in outputs))]
        return tf.nest.pack_sequence_as(outputs[0], [tf.constant(a) for a in flat])

    # --- one step ------------------------------------------------------------------------------------------
    def _step(self, data, state: dict):
        """Run the step on one batch. ``state`` holds this call's variable values (id -> [var, value, updated])."""
        data = tf.nest.map_structure(lambda a: None if a is None else tf.convert_to_tensor(a), data)
        prog = self._program(data)
        leaves = _leaves(data)
        inputs = []
        for (kind, what), (dtype, dims) in zip(prog.sources, prog.layout):
            if kind == "data":
                value = leaves[what].numpy()
            elif kind == "var":
                entry = state.get(id(what))
                if entry is None:
                    entry = state[id(what)] = [what, what.numpy(), False]
                value = entry[1]
            else:
                value = what
            inputs.append(np.asarray(value).astype(dtype, copy=False).reshape(dims))
        outs, prof = prog.compiled.engine.run(inputs)
        for out_index, param in prog.aliases:
            var = prog.sources[param][1]
            state[id(var)] = [var, outs[out_index], True]
        self.steps_run += 1
        flat = outs[:prog.n_outputs]
        result = tf.nest.pack_sequence_as(prog.structure, flat) if prog.structure is not None else None
        return result, (prog, prof)

    def _finish(self, state: dict, last) -> None:
        """Give the host variables the last completed step's values; report on that step."""
        with _interrupts_held():
            for var, value, updated in state.values():
                if updated:
                    var.assign(value)
        if last is not None:
            prog, prof = last
            self.last_report = Report.build(prog.compiled.exe, prof)
            self.last_batch_size = prog.batch_size
            self.reports[prog.batch_size] = self.last_report
            self.strategy._last_report = self.last_report

    # --- tracing and compiling, once per input signature ------------------------------------------------------
    def _program(self, data) -> _Program:
        key = _signature(data)
        prog = self._programs.get(key)
        if prog is None:
            prog = self._programs[key] = self._build(data)
        return prog

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
        sources = []
        for k, i in enumerate(kept):
            if i < len(leaves):
                sources.append(("data", i))
            elif trace.variables[k] is not None:
                sources.append(("var", trace.variables[k]))
            else:
                sources.append(("const", trace.inputs[k]))
        compiled = self.strategy._compile(self.jit, trace)
        params = trace.module.entry.parameters
        layout = [(p.shape.np_dtype, tuple(p.shape.dims)) for p in params]
        aliases = [(out[0] if out else 0, param) for out, param in compiled.exe.meta.get("aliases", [])
                   if sources[param][0] == "var"]
        batch = int(leaves[0].shape[0]) if leaves and leaves[0].shape.rank else None
        return _Program(compiled, sources, layout, aliases, trace.structure, trace.n_outputs, batch)


def _next(iterator):
    try:
        return next(iterator)
    except (StopIteration, tf.errors.OutOfRangeError):
        return _END
