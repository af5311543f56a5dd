"""IPUStrategy: run TensorFlow functions on the simulated IPU.

``strategy.run(fn, args)`` traces ``fn`` with XLA (``jit_compile=True``), takes its HLO
(``experimental_get_compiler_ir(...)(stage="hlo_serialized")``), converts it to the project's IR, compiles it
through the executable cache and runs it on the simulated IPU. Variables the function reads are inputs; the
variables it updates come back as aliased outputs and are assigned on the host.

Keras 3 models created (or fitted) under ``strategy.scope()`` train, evaluate and predict on the simulated IPU:
creating an IPUStrategy installs tf_ipu.trainer's hook (see there), which compiles each model's whole
``train_step`` / ``test_step`` / ``predict_step`` through this strategy's ``_trace`` and ``_compile``.
"""
from __future__ import annotations

import logging
import time
import weakref
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from collections import OrderedDict

from kernels.engine import Device, Engine
from kernels.executable import Executable
from xla_lowering.compiler import CompileOptions, compile_module

from .config import IPUConfig
from .disk_cache import CacheStats, DiskCache
from .hlo_proto import module_from_proto
from .report import Report

log = logging.getLogger("tf_ipu")


@dataclass
class _Compiled:
    exe: Executable
    engine: Engine
    key: tuple


@dataclass
class _Trace:
    """What one call of a function traced to: its HLO, the values to feed, how to rebuild its outputs."""
    module: object
    inputs: list
    variables: list           # per HLO parameter: the tf.Variable it reads, or None
    structure: object         # structured outputs of the concrete function
    n_outputs: int            # flat outputs of the structure (updated variables follow them)
    signature: tuple
    folded: list              # inputs XLA folded into the program as compile-time constants


def _signature(values) -> tuple:
    return tuple((tuple(v.shape), str(v.dtype)) for v in values)


def _describe_change(old: tuple, new: tuple) -> str:
    if len(old) != len(new):
        return f"it was called with {len(new)} tensor arguments instead of {len(old)}"
    diffs = [f"argument {i}: {o[1]}{list(o[0])} -> {n[1]}{list(n[0])}" for i, (o, n) in enumerate(zip(old, new))
             if o != n]
    if diffs:
        detail = "; ".join(diffs)
        changed = [(o, n) for o, n in zip(old, new) if o != n]
        if all(o[1] == n[1] and len(o[0]) == len(n[0]) >= 1 and o[0][1:] == n[0][1:] for o, n in changed) and \
                len({(o[0][0], n[0][0]) for o, n in changed}) == 1:
            # only the leading dimension changed, the same way everywhere: e.g. Keras's last partial batch
            return f"the batch size changed from {changed[0][0][0][0]} to {changed[0][1][0][0]} ({detail})"
        return f"input shapes or types changed ({detail})"
    return "its HLO changed with the same input shapes (a Python value, a captured tensor or the code changed)"


def _fits(param, value) -> bool:
    return tuple(param.shape.dims) == tuple(np.shape(value)) and param.shape.np_dtype == np.asarray(value).dtype


def _match_parameters(params, values, variables):
    """Pair the HLO's parameters with the function's tensor inputs.

    XLA folds inputs that must be compile-time constants (a slice's begin, a reshape's shape) into the HLO, so it
    can have fewer parameters than the function has inputs; the others keep their order. They are matched by
    shape and type; when a folded input could be confused with a kept one, we refuse rather than guess.
    """
    if len(params) == len(values):
        return values, variables, []
    kept, j = [], 0
    for p in params:
        while j < len(values) and not _fits(p, values[j]):
            j += 1
        if j == len(values):
            raise RuntimeError(f"the function's HLO takes {len(params)} parameters that do not match its "
                               f"{len(values)} inputs (arguments and captured variables)")
        kept.append(j)
        j += 1
    folded = [i for i in range(len(values)) if i not in kept]
    for i in folded:
        if any(_fits(params[k], values[i]) for k in range(len(params))):
            raise RuntimeError(f"input {i} (shape {list(np.shape(values[i]))}) is folded into the program as a "
                               f"compile-time constant (XLA needs its value, e.g. a slice's start), but another "
                               f"input has the same shape and type, so the inputs cannot be matched to the "
                               f"program's parameters; pass that value as a Python number instead of a tensor")
    log.info("inputs %s are compile-time constants folded into the program: a new value recompiles it", folded)
    return [values[i] for i in kept], [variables[i] for i in kept], folded


class IPUStrategy(tf.distribute.OneDeviceStrategy):
    """A distribution strategy whose device is one simulated IPU.

    ``scope()`` works as with any strategy; ``run(fn, args)`` executes ``fn`` on the simulated IPU and returns
    its outputs as tensors; ``last_report()`` tells where the cycles and memory of the latest run went.
    """

    MAX_CACHED_EXECUTABLES = 64

    def __init__(self, config: IPUConfig | None = None):
        super().__init__("/cpu:0")
        self.config = config or IPUConfig()
        self.device_model = self.config.device_model
        self.ipu_device = Device(self.device_model)       # one simulated IPU, shared by all executables
        self._executables: OrderedDict[tuple, _Compiled] = OrderedDict()
        # per user function (held weakly, so that a collected function's id is never mistaken for another's):
        # its XLA-compiled tf.function, and the cache key and signature of its latest compile
        self._functions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._last_report: Report | None = None
        self.compile_count = 0
        self._disk_cache = None           # IPUConfig(executable_cache_dir=...): executables shared by processes
        if self.config.executable_cache_dir:
            from . import __version__
            self._disk_cache = DiskCache(self.config.executable_cache_dir, f"tf-ipu {__version__}")
        self.last_recompile_reason: str | None = None
        self._auto_report_counts: dict[str, int] = {}     # IPUConfig(auto_report=...): reports written per function
        from .trainer import install_keras_hook
        install_keras_hook()           # Keras models under this strategy's scope train on the IPU

    # --- public API ------------------------------------------------------------------------------
    def run(self, fn, args=(), kwargs=None, options=None):
        if tf.inside_function():
            raise RuntimeError("IPUStrategy.run() executes on the simulated IPU and must be called eagerly, not "
                               "inside a tf.function: call strategy.run(fn, args) from Python, with fn a "
                               "tf.function or a plain Python function")
        kwargs = kwargs or {}
        trace = self._trace(fn, args, kwargs)
        compiled = self._compile(fn, trace)
        outs, prof = compiled.engine.run(trace.inputs)
        self._last_report = Report.build(compiled.exe, prof)
        if self.config.auto_report and compiled.engine.runs == 1:      # the first run of a new compile
            self._auto_report(fn)
        self._write_back(trace, compiled.exe, outs)
        flat = [tf.constant(o) for o in outs[:trace.n_outputs]]
        return tf.nest.pack_sequence_as(trace.structure, flat) if trace.structure is not None else None

    def _auto_report(self, fn) -> None:
        """IPUConfig(auto_report=dir): write ``<dir>/<function>-<n>.html`` and ``.txt`` of the latest run."""
        import os
        import re
        name = getattr(fn, "__name__", getattr(getattr(fn, "python_function", None), "__name__", "function"))
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "function"
        counts = self._auto_report_counts
        counts[name] = n = counts.get(name, 0) + 1
        os.makedirs(self.config.auto_report, exist_ok=True)
        self._last_report.program.name = name
        paths = self._last_report.write(os.path.join(self.config.auto_report, f"{name}-{n}"))
        log.info("wrote the reports %s", ", ".join(paths))

    def last_report(self) -> Report:
        if self._last_report is None:
            raise RuntimeError("no program has run on this IPUStrategy yet")
        return self._last_report

    @property
    def cache_stats(self) -> CacheStats:
        """Hits, misses and refused entries of the executable cache on disk (zeros without a cache directory)."""
        return self._disk_cache.stats if self._disk_cache else CacheStats()

    def compile(self, fn, args=(), kwargs=None) -> Executable:
        """Compile ``fn`` for these arguments without running it (through the same cache)."""
        trace = self._trace(fn, args, kwargs or {})
        return self._compile(fn, trace).exe

    # --- tracing ---------------------------------------------------------------------------------
    def _record(self, fn) -> dict:
        rec = self._functions.get(fn)
        if rec is None:
            rec = {}
            self._functions[fn] = rec
        return rec

    def _jit(self, fn):
        rec = self._record(fn)
        if "jit" not in rec:
            python_fn = getattr(fn, "python_function", fn)
            rec["jit"] = tf.function(python_fn, jit_compile=True, autograph=True)
        return rec["jit"]

    def _trace(self, fn, args, kwargs, jit=None) -> _Trace:
        """Trace ``fn`` for these arguments (with ``jit``, an XLA tf.function of it, when the caller made one)."""
        if not isinstance(args, (tuple, list)):
            args = (args,)
        jit = jit or self._jit(fn)
        cf = jit.get_concrete_function(*args, **kwargs)
        hlo = jit.experimental_get_compiler_ir(*args, **kwargs)(stage="hlo_serialized")
        module = module_from_proto(hlo)
        # HLO parameters: the tensor arguments in flattened order, then the captured tensors and variables.
        # Python numbers are not parameters: tf.function bakes them into the trace.
        explicit = [a for a in tf.nest.flatten((args, kwargs))
                    if isinstance(a, (tf.Tensor, tf.Variable, np.ndarray, np.generic))]
        n_explicit = len(cf.inputs) - len(cf.captured_inputs)
        if len(explicit) != n_explicit:
            raise RuntimeError(f"found {len(explicit)} tensor arguments but the traced function takes {n_explicit}")
        values, variables = [], []
        for a in explicit:
            values.append(a.numpy() if hasattr(a, "numpy") else np.asarray(a))
            variables.append(a if isinstance(a, tf.Variable) else None)
        by_handle = {id(v.handle): v for v in cf.variables}
        for cap in cf.captured_inputs:
            if cap.dtype == tf.resource:
                var = by_handle.get(id(cap))
                if var is None:
                    raise RuntimeError("a captured resource of the function is not one of its variables")
                values.append(var.numpy())
                variables.append(var)
            else:
                values.append(cap.numpy())
                variables.append(None)
        params = module.entry.parameters
        values, variables, folded = _match_parameters(params, values, variables)
        values = [v.astype(p.shape.np_dtype, copy=False).reshape(p.shape.dims) for v, p in zip(values, params)]
        structure = cf.structured_outputs
        n_outputs = len(tf.nest.flatten(structure)) if structure is not None else 0
        return _Trace(module, values, variables, structure, n_outputs, _signature(values), folded)

    # --- compiling through the cache -----------------------------------------------------------------
    def _compile(self, fn, trace: _Trace, options: CompileOptions | None = None,
                 reason: str | None = None) -> _Compiled:
        """The executable of ``trace`` (from the in-memory cache, the disk cache, or compiled now). ``options``:
        how to compile it besides the config (e.g. an infeed loop with resident variables, for Keras);
        ``reason``: why a function compiled before is compiled again, in the caller's words."""
        options = options or CompileOptions()
        options = CompileOptions(progress=self.config.compile_progress, loop=options.loop, feeds=options.feeds,
                                 resident=options.resident, outfeed=options.outfeed)
        config_key = self.config.cache_key() + options.key()
        key = (trace.module.fingerprint(), config_key)
        hit = self._executables.get(key)
        rec = self._record(fn)
        if hit is not None:
            self._executables.move_to_end(key)
            rec["last"] = (key, trace.signature)
            return hit
        previous = rec.get("last")
        name = getattr(fn, "__name__", getattr(getattr(fn, "python_function", None), "__name__", "function"))
        if previous is not None or reason is not None:
            reason = reason or _describe_change(previous[1], trace.signature)
            if previous is not None and previous[1] == trace.signature and trace.folded:
                reason = (f"the value of input(s) {trace.folded} changed, and XLA needs their values when it "
                          f"compiles (e.g. a slice's start): pass them as part of a tensor the program indexes, "
                          f"or expect a compile per value")
            self.last_recompile_reason = f"recompiling '{name}' for the IPU because {reason}"
            log.warning(self.last_recompile_reason)
        disk_key = self._disk_cache.key(trace.module, config_key) if self._disk_cache else None
        exe = self._disk_cache.get(disk_key, name) if self._disk_cache else None
        if exe is None:
            t0 = time.perf_counter()
            exe = compile_module(trace.module, self.device_model, options)
            log.info("compiled '%s' for the simulated %s in %.2f s", name, self.device_model.name,
                     time.perf_counter() - t0)
            self.compile_count += 1
            if self._disk_cache:
                self._disk_cache.put(disk_key, exe, name)
        compiled = _Compiled(exe, Engine(exe, seed=self.config.seed, device=self.ipu_device), key)
        self._executables[key] = compiled
        while len(self._executables) > self.MAX_CACHED_EXECUTABLES:
            old_key, old = self._executables.popitem(last=False)
            log.info("dropping the least recently used executable %s from the in-memory cache", old.exe.meta["module"])
        rec["last"] = (key, trace.signature)
        return compiled

    def _write_back(self, trace: _Trace, exe: Executable, outs) -> None:
        """Assign the new values of the variables the function updated (aliased outputs)."""
        for out_index, param in exe.meta.get("aliases", []):
            var = trace.variables[param]
            k = out_index[0] if out_index else 0
            if var is not None:
                var.assign(outs[k])
