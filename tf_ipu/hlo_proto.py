"""``HloModuleProto`` -> the project's HLO IR (``xla_lowering.hlo``).

The attribute conventions are those of ``xla_lowering.hlo`` and match the text parser
(``xla_lowering.hlo.text``) exactly: importing a function's proto and parsing its HLO text give equivalent
modules. This is the only place besides TensorFlow itself that touches XLA protos; nothing in
``xla_lowering`` may import TensorFlow.
"""
from __future__ import annotations

import numpy as np
from tensorflow.compiler.xla import xla_data_pb2
from tensorflow.compiler.xla.service import hlo_pb2

from xla_lowering.hlo.ir import Alias, Computation, Instruction, Module, Shape, np_dtype
from xla_lowering.hlo.text import FUSION_KIND_FROM_XLA, DynamicShapeNotSupported, as_f32_float, normalize_attrs

__all__ = ["module_from_proto", "hlo_module_from_function"]

_DTYPE_NAMES = {v.number: v.name.lower() for v in xla_data_pb2.PrimitiveType.DESCRIPTOR.values}
_DISTRIBUTIONS = {xla_data_pb2.RNG_UNIFORM: "uniform", xla_data_pb2.RNG_NORMAL: "normal"}

# Roles of ``called_computation_ids`` in XLA's order. While is body *then* condition: that is what
# XLA (and TF 2.21) write, whatever the text order ``condition=..., body=...`` suggests.
_CALL_ROLES = {
    "while": ("body", "condition"),
    "select-and-scatter": ("select", "scatter"),
    "fusion": ("fused",),
}
_TO_APPLY_OPS = frozenset({"reduce", "map", "reduce-window", "scatter", "sort", "all-reduce", "call",
                           "reduce-scatter", "all-reduce-start"})
# Opcodes whose ``dimensions`` field means the IR's ``dimensions`` tuple.
# Other opcodes get ``dimensions`` only when the field is non-empty (the text printer omits '{}').
_DIMENSIONS_OPS = frozenset({"broadcast", "reduce", "transpose", "reverse", "map", "sort", "all-gather",
                             "reduce-scatter", "set-dimension-size", "get-dimension-size"})


def module_from_proto(proto_or_bytes) -> Module:
    """Convert an ``HloModuleProto`` (or its serialized bytes) into the IR."""
    proto = proto_or_bytes
    if isinstance(proto_or_bytes, (bytes, bytearray, memoryview)):
        proto = hlo_pb2.HloModuleProto.FromString(bytes(proto_or_bytes))
    frames = _StackFrames(proto)
    by_id: dict[int, Computation] = {}
    pending: list[tuple[Instruction, list[int]]] = []
    for comp_proto in proto.computations:
        by_id[comp_proto.id] = _computation(comp_proto, frames, pending)
    # computations may be called before they are listed: resolve roles once all exist
    for inst, callee_ids in pending:
        _assign_called(inst, [_lookup(by_id, i, inst) for i in callee_ids])
    entry = _entry(proto, by_id)
    aliases = [Alias(tuple(e.output_shape_index), e.parameter_number, tuple(e.parameter_shape_index))
               for e in proto.input_output_alias.entries]
    return Module(proto.name, entry, aliases)


def hlo_module_from_function(fn, *args) -> Module:
    """The unoptimized HLO module XLA builds for ``fn(*args)``.

    ``fn`` is a ``tf.function(jit_compile=True)``; a plain ``tf.function`` or Python callable is wrapped
    into one. ``args`` may be tensors, NumPy arrays or ``tf.TensorSpec``s.
    """
    import tensorflow as tf

    if not hasattr(fn, "experimental_get_compiler_ir"):
        fn = tf.function(fn, jit_compile=True)
    try:
        get_ir = fn.experimental_get_compiler_ir(*args)
    except ValueError as e:
        if "jit_compile" not in str(e):
            raise
        # a tf.function compiled without XLA: recompile the same Python function with it
        fn = tf.function(fn.python_function, jit_compile=True, input_signature=fn.input_signature)
        get_ir = fn.experimental_get_compiler_ir(*args)
    return module_from_proto(get_ir(stage="hlo_serialized"))


# --- structure ---------------------------------------------------------------------------------------
def _computation(comp_proto, frames: "_StackFrames", pending: list) -> Computation:
    insts: dict[int, Instruction] = {}
    ordered: list[Instruction] = []
    for ip in comp_proto.instructions:
        inst = Instruction(ip.opcode, _shape(ip.shape, ip), name=ip.name, metadata=frames.metadata(ip.metadata))
        for op_id in ip.operand_ids:
            if op_id not in insts:
                raise ValueError(f"HLO proto: operand id {op_id} of %{ip.name} is not defined before use "
                                 f"in computation '{comp_proto.name}'")
            inst.operands.append(insts[op_id])
        _read_attrs(inst, ip)
        normalize_attrs(inst)
        if ip.called_computation_ids:
            pending.append((inst, list(ip.called_computation_ids)))
        insts[ip.id] = inst
        ordered.append(inst)
    if comp_proto.root_id not in insts:
        raise ValueError(f"HLO proto: root id {comp_proto.root_id} of computation '{comp_proto.name}' is unknown")
    return Computation(comp_proto.name, ordered, insts[comp_proto.root_id])


def _lookup(by_id: dict[int, Computation], comp_id: int, inst: Instruction) -> Computation:
    if comp_id not in by_id:
        raise ValueError(f"HLO proto: {inst.describe()} calls unknown computation id {comp_id}")
    return by_id[comp_id]


def _assign_called(inst: Instruction, callees: list[Computation]) -> None:
    if inst.opcode == "conditional":
        roles = tuple(f"branch_{k}" for k in range(len(callees)))
    elif inst.opcode in _TO_APPLY_OPS:
        roles = ("to_apply",)
    else:
        roles = _CALL_ROLES.get(inst.opcode, ())
    if len(roles) != len(callees):
        raise NotImplementedError(f"{inst.describe()} calls {len(callees)} computation(s); "
                                  f"expected {len(roles) or 'none'}")
    inst.called.update(zip(roles, callees))


def _entry(proto, by_id: dict[int, Computation]) -> Computation:
    if proto.entry_computation_id in by_id:
        return by_id[proto.entry_computation_id]
    for comp in by_id.values():
        if comp.name == proto.entry_computation_name:
            return comp
    raise ValueError(f"HLO proto: entry computation '{proto.entry_computation_name}' not found")


# --- shapes and literals -----------------------------------------------------------------------------
def _shape(sp, ip) -> Shape:
    dtype = _DTYPE_NAMES.get(sp.element_type, str(sp.element_type))
    if dtype == "tuple":
        return Shape.tuple(_shape(s, ip) for s in sp.tuple_shapes)
    if any(sp.is_dynamic_dimension):
        dims = ",".join(("<=" if dyn else "") + str(d) for d, dyn in zip(sp.dimensions, sp.is_dynamic_dimension))
        raise DynamicShapeNotSupported(f"HLO '{ip.opcode}' %{ip.name} has a dynamic shape {dtype}[{dims}]; "
                                       "dynamic dimensions are not supported")
    return Shape(dtype, tuple(sp.dimensions))


# LiteralProto field holding each element type; bytes fields are little-endian packed arrays.
_LITERAL_FIELDS = {
    "pred": "preds", "s8": "s8s", "u8": "u8s", "s16": "s16s", "u16": "u16s", "s32": "s32s", "u32": "u32s",
    "s64": "s64s", "u64": "u64s", "f16": "f16s", "f32": "f32s", "f64": "f64s",
}


def _literal(lp, shape: Shape, ip):
    """A LiteralProto as a NumPy array of ``shape`` (a tuple of arrays for tuple shapes)."""
    if shape.is_tuple:
        return tuple(_literal(sub, s, ip) for sub, s in zip(lp.tuple_literals, shape.tuple_shapes))
    dtype = np_dtype(shape.dtype)  # NotImplementedError for bf16 etc.
    data = getattr(lp, _LITERAL_FIELDS[shape.dtype])
    if isinstance(data, bytes):
        flat = np.frombuffer(data, dtype=dtype.newbyteorder("<")).astype(dtype)
    else:
        flat = np.array(list(data), dtype=dtype)
    if flat.size != shape.size:
        raise ValueError(f"HLO proto: constant %{ip.name} has {flat.size} values for shape {shape}")
    return _from_physical_order(flat, shape.dims, list(lp.shape.layout.minor_to_major))


def _from_physical_order(flat: np.ndarray, dims: tuple[int, ...], minor_to_major: list[int]) -> np.ndarray:
    """Literal data is stored in its layout's order; NumPy wants row-major (XLA's default layout)."""
    if not minor_to_major or minor_to_major == list(range(len(dims)))[::-1]:
        return flat.reshape(dims)
    major_to_minor = minor_to_major[::-1]
    physical = flat.reshape([dims[d] for d in major_to_minor])
    return np.ascontiguousarray(physical.transpose(np.argsort(major_to_minor)))


# --- attributes --------------------------------------------------------------------------------------
def _read_attrs(inst: Instruction, ip) -> None:
    reader = _ATTR_READERS.get(inst.opcode)
    if reader is not None:
        reader(inst.attrs, ip, inst)
    if inst.opcode in _DIMENSIONS_OPS or (ip.dimensions and inst.opcode not in ("iota", "concatenate")):
        inst.attrs["dimensions"] = tuple(ip.dimensions)
    if inst.opcode in ("reduce-window", "select-and-scatter", "convolution"):
        inst.attrs["window"] = _window(ip.window)


def _window(wp) -> tuple[dict, ...]:
    return tuple({"size": d.size, "stride": d.stride, "pad_low": d.padding_low, "pad_high": d.padding_high,
                  "window_dilation": d.window_dilation, "base_dilation": d.base_dilation,
                  "reversal": bool(d.window_reversal)} for d in wp.dimensions)


def _parameter(attrs, ip, inst):
    attrs["number"] = ip.parameter_number


def _constant(attrs, ip, inst):
    attrs["value"] = _literal(ip.literal, inst.shape, ip)


def _iota(attrs, ip, inst):
    attrs["iota_dimension"] = ip.dimensions[0]


def _concatenate(attrs, ip, inst):
    attrs["dimension"] = ip.dimensions[0]


def _slice(attrs, ip, inst):
    sd = ip.slice_dimensions
    attrs["starts"] = tuple(d.start for d in sd)
    attrs["limits"] = tuple(d.limit for d in sd)
    attrs["strides"] = tuple(d.stride for d in sd)


def _pad(attrs, ip, inst):
    attrs["padding"] = tuple((d.edge_padding_low, d.edge_padding_high, d.interior_padding)
                             for d in ip.padding_config.dimensions)


def _dot(attrs, ip, inst):
    dn = ip.dot_dimension_numbers
    attrs.update(lhs_batch_dims=tuple(dn.lhs_batch_dimensions), rhs_batch_dims=tuple(dn.rhs_batch_dimensions),
                 lhs_contracting_dims=tuple(dn.lhs_contracting_dimensions),
                 rhs_contracting_dims=tuple(dn.rhs_contracting_dimensions))


def _compare(attrs, ip, inst):
    attrs["direction"] = ip.comparison_direction
    if ip.comparison_type:
        attrs["compare_type"] = ip.comparison_type  # normalize_attrs drops it when it is the default


def _gather(attrs, ip, inst):
    gd = ip.gather_dimension_numbers
    attrs.update(offset_dims=tuple(gd.offset_dims), collapsed_slice_dims=tuple(gd.collapsed_slice_dims),
                 start_index_map=tuple(gd.start_index_map), index_vector_dim=gd.index_vector_dim,
                 operand_batching_dims=tuple(gd.operand_batching_dims),
                 start_indices_batching_dims=tuple(gd.start_indices_batching_dims),
                 slice_sizes=tuple(ip.gather_slice_sizes), indices_are_sorted=ip.indices_are_sorted)


def _scatter(attrs, ip, inst):
    sd = ip.scatter_dimension_numbers
    attrs.update(update_window_dims=tuple(sd.update_window_dims),
                 inserted_window_dims=tuple(sd.inserted_window_dims),
                 scatter_dims_to_operand_dims=tuple(sd.scatter_dims_to_operand_dims),
                 index_vector_dim=sd.index_vector_dim, input_batching_dims=tuple(sd.input_batching_dims),
                 scatter_indices_batching_dims=tuple(sd.scatter_indices_batching_dims),
                 indices_are_sorted=ip.indices_are_sorted, unique_indices=ip.unique_indices)


def _convolution(attrs, ip, inst):
    cd = ip.convolution_dimension_numbers
    attrs["dnums"] = {
        "input_batch_dimension": cd.input_batch_dimension, "input_feature_dimension": cd.input_feature_dimension,
        "input_spatial_dimensions": tuple(cd.input_spatial_dimensions),
        "kernel_input_feature_dimension": cd.kernel_input_feature_dimension,
        "kernel_output_feature_dimension": cd.kernel_output_feature_dimension,
        "kernel_spatial_dimensions": tuple(cd.kernel_spatial_dimensions),
        "output_batch_dimension": cd.output_batch_dimension,
        "output_feature_dimension": cd.output_feature_dimension,
        "output_spatial_dimensions": tuple(cd.output_spatial_dimensions),
    }
    # like XLA's CreateFromProto: an unset (0) group count means 1
    attrs["feature_group_count"] = max(ip.feature_group_count, 1)
    attrs["batch_group_count"] = max(ip.batch_group_count, 1)


def _rng(attrs, ip, inst):
    if ip.distribution not in _DISTRIBUTIONS:
        raise NotImplementedError(f"{inst.describe()}: unknown RNG distribution {ip.distribution}")
    attrs["distribution"] = _DISTRIBUTIONS[ip.distribution]


def _rng_bit_generator(attrs, ip, inst):
    # RNG_THREE_FRY -> 'three_fry', as the text parser reads algorithm=rng_three_fry
    attrs["algorithm"] = xla_data_pb2.RandomAlgorithm.Name(ip.rng_algorithm)[len("RNG_"):].lower()


def _custom_call(attrs, ip, inst):
    attrs["target"] = ip.custom_call_target
    config = ip.backend_config
    attrs["backend_config"] = config.decode("utf-8") if isinstance(config, bytes) else config


def _batch_norm(attrs, ip, inst):
    attrs["epsilon"] = as_f32_float(ip.epsilon)
    attrs["feature_index"] = ip.feature_index


def _reduce_precision(attrs, ip, inst):
    attrs["exponent_bits"] = ip.exponent_bits
    attrs["mantissa_bits"] = ip.mantissa_bits


def _sort(attrs, ip, inst):
    attrs["is_stable"] = ip.is_stable


def _fusion(attrs, ip, inst):
    attrs["kind"] = FUSION_KIND_FROM_XLA.get(ip.fusion_kind, ip.fusion_kind)


_ATTR_READERS = {
    "parameter": _parameter, "constant": _constant, "iota": _iota, "concatenate": _concatenate,
    "slice": _slice, "pad": _pad, "dot": _dot, "compare": _compare,
    "get-tuple-element": lambda attrs, ip, inst: attrs.__setitem__("index", ip.tuple_index),
    "dynamic-slice": lambda attrs, ip, inst: attrs.__setitem__("slice_sizes", tuple(ip.dynamic_slice_sizes)),
    "gather": _gather, "scatter": _scatter, "convolution": _convolution, "rng": _rng,
    "rng-bit-generator": _rng_bit_generator, "custom-call": _custom_call,
    "batch-norm-training": _batch_norm, "batch-norm-inference": _batch_norm, "batch-norm-grad": _batch_norm,
    "reduce-precision": _reduce_precision, "sort": _sort, "fusion": _fusion,
}


# --- metadata ----------------------------------------------------------------------------------------
class _StackFrames:
    """Source positions: newer XLA moves them from OpMetadata into the module's stack-frame index."""

    def __init__(self, proto):
        self.index = proto.stack_frame_index if proto.HasField("stack_frame_index") else None

    def metadata(self, mp) -> dict:
        out = {k: getattr(mp, k) for k in ("op_type", "op_name", "source_file") if getattr(mp, k)}
        if mp.source_line:
            out["source_line"] = mp.source_line
        if "source_file" not in out and mp.stack_frame_id and self.index is not None:
            out.update(self._frame(mp.stack_frame_id))
        return out

    def _frame(self, frame_id: int) -> dict:
        idx = self.index
        try:  # ids are 1-based
            loc = idx.file_locations[idx.stack_frames[frame_id - 1].file_location_id - 1]
            return {"source_file": idx.file_names[loc.file_name_id - 1], "source_line": loc.line}
        except IndexError:
            return {}
