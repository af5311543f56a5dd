"""popops data movement: broadcast, transpose, slice, concatenate, pad, reverse; reshape; constants and iota.

Each movement op is defined by an index map computed with NumPy on the indices of its input (the op's meaning,
stated once); the device then moves the data with a fixed copy list (exchange between tiles, copies within a
tile). Reshape, bitcast and copy are views: row-major storage does not change.
"""
from __future__ import annotations

import numpy as np

from ..hlo.ir import Shape
from . import register_lowering


def _iota(shape_dims) -> np.ndarray:
    return np.arange(int(np.prod(shape_dims, dtype=np.int64)), dtype=np.int64).reshape(shape_dims)


def moved(ctx, sources, index, which=None):
    """A new linearly mapped tensor filled from ``sources`` by the index map (and source choice) given."""
    out = ctx.b.linear(ctx.shape, ctx.name, "activation", ctx.origin)
    return ctx.b.rearrange(out, list(sources), index, which, name=ctx.name, origin=ctx.origin)


@register_lowering("parameter")
def lower_parameter(ctx):  # pragma: no cover - parameters are bound by the compiler before lowering
    raise ctx.unsupported("parameters of the entry computation are bound by the compiler")


@register_lowering("constant")
def lower_constant(ctx):
    value = np.asarray(ctx.inst.attrs["value"])
    if ctx.shape.is_tuple:
        raise ctx.unsupported("tuple constants")
    return ctx.b.constant(value, ctx.shape, ctx.name, ctx.origin)


@register_lowering("iota")
def lower_iota(ctx):
    dims, d = ctx.shape.dims, ctx.inst.attrs["iota_dimension"]
    shape = [1] * len(dims)
    shape[d] = dims[d]
    value = np.broadcast_to(np.arange(dims[d]).reshape(shape), dims).astype(ctx.shape.np_dtype)
    return ctx.b.constant(value, ctx.shape, ctx.name, ctx.origin)


@register_lowering("reshape", "bitcast", "copy")
def lower_reshape(ctx, x):
    if ctx.inst.opcode == "bitcast" and ctx.shape.itemsize != x.itemsize:
        raise ctx.unsupported("bitcast between element types of different sizes")
    return x.view(ctx.shape, ctx.name)


def _fill_program(dtype: str):
    """An expression that writes its one-element input to every output element (popops' fill)."""
    from ..hlo.ir import Computation, Instruction
    from .expression import compile_computation
    p = Instruction("parameter", Shape(dtype), attrs={"number": 0})
    return compile_computation(Computation("fill", [p], p))


@register_lowering("broadcast")
def lower_broadcast(ctx, x):
    if x.size == 1 and ctx.shape.size > 1:
        # a scalar broadcast is a fill vertex on every tile of the output (after the scalar is sent to those
        # tiles), not a copy descriptor per element
        from .popops_elementwise import expression
        return expression(ctx.b, _fill_program(ctx.shape.dtype), [x], ctx.shape, ctx.name, ctx.origin)
    dims = ctx.inst.attrs["dimensions"]
    out_dims = ctx.shape.dims
    expand = [1] * len(out_dims)
    for i, d in enumerate(dims):
        expand[d] = x.shape.dims[i]
    index = np.broadcast_to(_iota(x.shape.dims).reshape(expand), out_dims)
    return moved(ctx, [x], index)


@register_lowering("transpose")
def lower_transpose(ctx, x):
    perm = ctx.inst.attrs["dimensions"]
    if list(perm) == list(range(len(perm))):
        return x.view(ctx.shape, ctx.name)
    return moved(ctx, [x], _iota(x.shape.dims).transpose(perm))


@register_lowering("slice")
def lower_slice(ctx, x):
    a = ctx.inst.attrs
    sl = tuple(slice(s, l, st) for s, l, st in zip(a["starts"], a["limits"], a["strides"]))
    return moved(ctx, [x], _iota(x.shape.dims)[sl])


@register_lowering("reverse")
def lower_reverse(ctx, x):
    return moved(ctx, [x], np.flip(_iota(x.shape.dims), axis=tuple(ctx.inst.attrs["dimensions"])))


@register_lowering("concatenate")
def lower_concatenate(ctx, *xs):
    d = ctx.inst.attrs["dimension"]
    index = np.concatenate([_iota(x.shape.dims) for x in xs], axis=d)
    which = np.concatenate([np.full(x.shape.dims, i, np.int64) for i, x in enumerate(xs)], axis=d)
    return moved(ctx, xs, index, which)


def pad_index(index: np.ndarray, d: int, interior: int, lo: int, hi: int) -> np.ndarray:
    """An index map padded along dimension d: ``interior`` holes between elements, then low/high padding
    (negative padding crops); new positions hold -1."""
    n = index.shape[d]
    if interior and n > 1:
        shape = list(index.shape)
        shape[d] = n + (n - 1) * interior
        spread = np.full(shape, -1, np.int64)
        take = [slice(None)] * index.ndim
        take[d] = slice(None, None, interior + 1)
        spread[tuple(take)] = index
        index = spread
    pads = [(0, 0)] * index.ndim
    pads[d] = (max(lo, 0), max(hi, 0))
    index = np.pad(index, pads, constant_values=-1)
    crop = [slice(None)] * index.ndim
    crop[d] = slice(max(-lo, 0), index.shape[d] - max(-hi, 0))
    return index[tuple(crop)]


@register_lowering("pad")
def lower_pad(ctx, x, value):
    # element -1 means "the padding value"; negative low/high padding crops
    index = _iota(x.shape.dims)
    for d, (lo, hi, interior) in enumerate(ctx.inst.attrs["padding"]):
        index = pad_index(index, d, interior, lo, hi)
    which = (index < 0).astype(np.int64)
    return moved(ctx, [x, value], np.where(index < 0, 0, index), which)


@register_lowering("tuple")
def lower_tuple(ctx, *xs):
    return tuple(xs)


@register_lowering("get-tuple-element")
def lower_gte(ctx, t):
    return t[ctx.inst.attrs["index"]]


def constant_like(b, value, shape: Shape, name: str, origin: str = ""):
    return b.constant(np.asarray(value), shape, name, origin)
