"""Keras variables that stay on the simulated IPU between executions, and are read back when the host reads them.

A Keras model's weights, optimizer slots, metric accumulators and seed state are *resident* parameters of the
executables tf_ipu.trainer compiles (``Executable.resident``): each sits at a fixed place in the memory of the
executable's tiles, the program updates it in place step after step, and no host stream moves it during a run.
The host copy (the ``tf.Variable`` inside the Keras variable) is refreshed only when someone reads it.

Every such variable has a state: where its latest value is. ``host_fresh``: the tf.Variable holds it;
``device_fresh``: resident tensor ``k`` of ``engine`` holds it (that executable is loaded on its device). At least
one of the two is true. The rules:
- before an executable runs, ``prepare`` loads it and writes every bound variable whose latest value is not
  already there (a first run, a value assigned on the host since, or another executable ran in between);
- after it ran, ``mark_updated``: the variables the step updates are fresh on the device only;
- reading a Keras variable (``numpy()``, ``get_weights``, ``save``, checkpoints, ``np.asarray``, any read of
  ``.value``) first reads its latest value back from the device into the tf.Variable (``pull``);
- assigning a Keras variable on the host (``set_weights``, ``reset_metrics``, a learning-rate schedule callback)
  makes the host value the latest: the device copy is written again before the next run;
- loading another executable on the device overwrites this one's memory, as on a real IPU: the engine's
  ``before_unload`` hook first reads back every value the host does not have yet (like Poplar's weight copies
  between the training and the validation programs).

So nothing a user can see changes, and a value exists on the host or on the device at every moment: an
exception or Ctrl-C between or during executions loses nothing (a device step is never left half done: the
infeed loop stops between steps, and updated variables are written at the end of each step).

The hook on reads and writes is installed with Keras's (tf_ipu.trainer.install_keras_hook): the TensorFlow
backend's ``Variable.value`` property and its ``_direct_assign``, the two places every Keras read and write goes.
Reading the tf.Variable itself (``keras_variable.value`` returns it) gives the value as of that read.
"""
from __future__ import annotations

import weakref

import tensorflow as tf


class _State:
    __slots__ = ("var", "engine", "k", "host_fresh", "device_fresh")

    def __init__(self, var):
        self.var = weakref.ref(var, _forget(id(var)))
        self.engine = None
        self.k = -1
        self.host_fresh = True
        self.device_fresh = False


_STATES: dict[int, _State] = {}                       # id(tf.Variable) -> its state
_BY_ENGINE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # engine -> {k: state}


def _forget(key: int):
    def gone(ref):
        st = _STATES.get(key)
        if st is not None and st.var is ref:
            del _STATES[key]
    return gone


def state(var) -> _State | None:
    """The state of a tf.Variable that has been resident on a device, else None."""
    st = _STATES.get(id(var))
    return st if st is not None and st.var() is var else None


def _state(var) -> _State:
    st = state(var)
    if st is None:
        st = _STATES[id(var)] = _State(var)
    return st


def prepare(engine, variables: list) -> None:
    """Load ``engine``'s executable and make resident tensor k hold the latest value of ``variables[k]``."""
    engine.load()                        # may unload another executable: its before_unload reads values back
    engine.before_unload = _unload
    bound = _BY_ENGINE.setdefault(engine, {})
    for k, var in enumerate(variables):
        st = _state(var)
        if st.engine is engine and st.k == k and st.device_fresh:
            continue
        if not st.host_fresh:            # fresh only on an executable that is still loaded: not possible here
            raise RuntimeError(f"variable '{var.name}' holds its latest value on an executable that is not "
                               f"loaded")
        engine.write_resident(k, var.numpy())
        st.engine, st.k, st.device_fresh = engine, k, True
        bound[k] = st


def mark_updated(variables) -> None:
    """The step updated these (resident) variables: their latest value is on the device only."""
    for var in variables:
        st = state(var)
        if st is not None and st.device_fresh:
            st.host_fresh = False


def pull(st: _State) -> None:
    """Read a variable's latest value back from the device into its tf.Variable."""
    var = st.var()
    if var is not None and not st.host_fresh:
        value = st.engine.read_resident(st.k)
        with tf.init_scope():
            var.assign(value)
    st.host_fresh = True


def sync() -> int:
    """Read every value the host does not have yet back from the devices; returns how many variables."""
    stale = [st for st in list(_STATES.values()) if not st.host_fresh]
    for st in stale:
        pull(st)
    return len(stale)


def _unload(engine) -> None:
    for st in _BY_ENGINE.get(engine, {}).values():
        if st.engine is engine and st.device_fresh:
            if not st.host_fresh:
                pull(st)
            st.device_fresh = False


# --- the Keras variable hook ---------------------------------------------------------------------------
_KERAS_OWN: dict = {}


def _variable_class():
    try:
        from keras.src.backend.tensorflow.core import Variable
    except Exception:  # pragma: no cover - Keras 3 with the TensorFlow backend is not installed
        return None
    return Variable


def install_variable_hook() -> None:
    cls = _variable_class()
    if cls is None or _KERAS_OWN:
        return
    value_prop = getattr(cls, "value")
    direct_assign = cls.__dict__.get("_direct_assign") or getattr(cls, "_direct_assign")
    _KERAS_OWN.update(value=cls.__dict__.get("value"), _direct_assign=cls.__dict__.get("_direct_assign"))
    read = value_prop.fget

    def value(self):
        if _STATES:
            v = self._value
            st = _STATES.get(id(v)) if v is not None else None
            if st is not None and not st.host_fresh and st.var() is v:
                pull(st)
        return read(self)

    def _direct_assign(self, new_value):
        direct_assign(self, new_value)
        if _STATES and tf.executing_eagerly():
            st = state(self._value)
            if st is not None:              # the host now has the latest value; the device copy is old
                st.host_fresh, st.device_fresh = True, False

    value.__doc__ = value_prop.__doc__
    cls.value = property(value)
    cls._direct_assign = _direct_assign


def uninstall_variable_hook() -> None:
    cls = _variable_class()
    if cls is None or not _KERAS_OWN:
        return
    sync()
    for name, own in _KERAS_OWN.items():
        if own is None:
            delattr(cls, name)
        else:
            setattr(cls, name, own)
    _KERAS_OWN.clear()
