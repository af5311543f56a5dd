"""``tf_ipu.export``: compile a TensorFlow function for the simulated IPU and write it to one executable file.

The file (kernels/serialize.py) holds the compiled program and, in its extra metadata, how the function's
arguments map to the program's inputs (``tf_ipu.runtime`` reads it):

    export.function    the function's name
    export.inputs      per tensor argument (tf.nest order): name, dtype, dims, and ``param``, the program input it
                       feeds, or None with ``value`` when XLA folded it into the program as a compile-time constant
    export.bound       [[param, value], ...]: the captured variables and tensors, as they were when exported
    export.structure   the output structure with output indices as leaves; export.n_outputs the number of outputs
    export.output_names  a name per output, from the structure's dict keys where it has them
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from kernels import dtypes
from kernels.serialize import save_executable
from xla_lowering import COMPILER_VERSION

from . import __version__

_HLO_DTYPE = {np.dtype(t): name for name, t in dtypes.NUMPY.items()}


def _example(a):
    """An example value for a tf.TensorSpec (zeros); any other argument is used as it is."""
    if not isinstance(a, tf.TensorSpec):
        return a
    if not a.shape.is_fully_defined():
        raise ValueError(f"tf_ipu.export: {a} has a dimension of unknown size; an IPU program is compiled for fixed "
                         f"shapes, so give every dimension (e.g. the batch size you will run with)")
    try:
        return np.zeros(a.shape.as_list(), a.dtype.as_numpy_dtype)
    except TypeError:
        raise ValueError(f"tf_ipu.export: {a} has a dtype the simulated IPU does not support") from None


def _plain(structure, n: int):
    """The output structure with output indices as leaves, as plain data (tuples, lists, str-keyed dicts)."""
    if structure is None:
        return None

    def plain(s):
        if isinstance(s, int):
            return s
        if isinstance(s, dict) and all(isinstance(k, str) and not k.startswith("$") for k in s):
            return {k: plain(v) for k, v in s.items()}
        if isinstance(s, list):
            return [plain(v) for v in s]
        if isinstance(s, tuple):
            return tuple(plain(v) for v in s)
        return tuple(tf.nest.flatten(s))          # another kind of nest: its outputs, flat

    return plain(tf.nest.pack_sequence_as(structure, list(range(n))))


def _output_names(structure, n: int) -> list[str]:
    """A name per output: its path of dict keys and indices ("logits", "0/probs") when the structure has dict
    keys, else output_<k>."""
    names = [f"output_{k}" for k in range(n)]

    def visit(s, path: list, keyed: bool) -> None:
        if isinstance(s, int):
            if keyed:
                names[s] = "/".join(map(str, path))
        elif isinstance(s, dict):
            for k, v in s.items():
                visit(v, path + [k], True)
        elif isinstance(s, (list, tuple)):
            for i, v in enumerate(s):
                visit(v, path + [i], keyed)

    visit(structure, [], False)
    return names


def export(strategy, fn, args_or_input_signature, path: str | os.PathLike) -> Path:
    """Compile ``fn`` (any tf.function or Python function) with ``strategy`` and write it to ``path``.

    ``args_or_input_signature``: the arguments, as example arrays/tensors or ``tf.TensorSpec``s of fixed shape
    (a tuple, or one value for a function of one argument). The compile goes through the strategy's executable
    caches. ``tf_ipu.load(path)`` runs the file later, without TensorFlow. Returns the path.
    """
    args = args_or_input_signature
    args = tuple(args) if isinstance(args, (tuple, list)) else (args,)
    given = tf.nest.flatten(args)
    example = tf.nest.map_structure(_example, args)
    trace = strategy._trace(fn, example, {})
    exe = strategy._compile(fn, trace).exe

    # which program input each tensor argument feeds (XLA may fold some into the program as constants)
    flat = tf.nest.flatten(example)
    tensor_args = [j for j, a in enumerate(flat) if isinstance(a, (tf.Tensor, tf.Variable, np.ndarray, np.generic))]
    folded = set(trace.folded)
    kept = [i for i in range(len(trace.inputs) + len(folded)) if i not in folded]
    param_of = {value: param for param, value in enumerate(kept)}
    concrete = strategy._jit(fn).get_concrete_function(*example)
    inputs = []
    for i, j in enumerate(tensor_args):
        spec = given[j]
        name = spec.name if isinstance(spec, tf.TensorSpec) and spec.name else concrete.inputs[i].name.split(":")[0]
        value = np.asarray(flat[j].numpy() if hasattr(flat[j], "numpy") else flat[j])
        entry = {"name": name, "dtype": _HLO_DTYPE.get(value.dtype, str(value.dtype)),
                 "dims": list(value.shape), "param": param_of.get(i)}
        if entry["param"] is None:
            if isinstance(spec, tf.TensorSpec):
                raise ValueError(f"tf_ipu.export: argument '{name}' is a compile-time constant of the program "
                                 f"(XLA needs its value, e.g. a slice's start): pass an example value for it "
                                 f"instead of a tf.TensorSpec")
            entry["value"] = value
        else:
            host = exe.inputs[entry["param"]]
            entry["dtype"], entry["dims"] = host.dtype, list(host.dims)
        inputs.append(entry)
    bound = [[param, trace.inputs[param]] for param, value in enumerate(kept) if value >= len(tensor_args)]
    name = getattr(fn, "__name__", getattr(getattr(fn, "python_function", None), "__name__", "function"))
    structure = _plain(trace.structure, trace.n_outputs)
    extra = {"export": {"function": name, "inputs": inputs, "bound": bound, "structure": structure,
                        "n_outputs": trace.n_outputs, "output_names": _output_names(structure, trace.n_outputs)},
             "compiler_version": COMPILER_VERSION, "tensorflow_version": tf.__version__,
             "config": {"device": strategy.config.device, "tiles_per_ipu": exe.device.num_tiles}}
    save_executable(exe, path, extra, producer=f"tf-ipu {__version__}")
    return Path(path)


def export_keras(model, path: str | os.PathLike, batch_size: int, strategy=None) -> Path:
    """Write a Keras model's inference graph, with its current weights, for ``batch_size`` examples.

    The model's inputs get a fixed batch dimension (the IPU needs static shapes); the weights are stored in the
    file, so ``tf_ipu.load(path)(x)`` gives what ``model.predict(x)`` gives for a batch of that size. The model
    compiles with its own IPUStrategy when it was built in one's scope, else with a default mk2.
    """
    from .strategy import IPUStrategy
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"tf_ipu.export_keras: batch_size must be a positive integer, got {batch_size!r}")
    if not model.built:
        raise ValueError("tf_ipu.export_keras: the model has no weights yet; build it (call it on data, or "
                         "model.build(input_shape)) before exporting")
    if strategy is None:
        own = getattr(model, "distribute_strategy", None)
        strategy = own if isinstance(own, IPUStrategy) else IPUStrategy()
    specs = []
    for inp in tf.nest.flatten(model.inputs):
        shape = tuple(inp.shape)
        if any(d is None for d in shape[1:]):
            raise ValueError(f"tf_ipu.export_keras: input '{inp.name}' has a dynamic dimension {shape}; the IPU "
                             f"needs every dimension but the batch fixed")
        specs.append(tf.TensorSpec((batch_size,) + shape[1:], inp.dtype, name=inp.name.split(":")[0]))

    @tf.function
    def predict(*inputs):
        x = inputs[0] if len(inputs) == 1 else list(inputs)
        return model(x, training=False)

    predict.__name__ = f"{model.name}_predict"
    return export(strategy, predict, tuple(specs), path)
