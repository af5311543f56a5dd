"""poprand: the rng op (uniform in [a, b) for floats and integers, and normal(mu, sigma)).

Tiles generate standard uniform or normal samples for their own elements (counter-based, so results do not
depend on the tile mapping); an expression then scales them with the op's runtime operands.
"""
from __future__ import annotations

import zlib

import numpy as np

from kernels import cycles as cyc
from kernels import dtypes
from kernels.program import VertexGroup

from ..hlo.ir import Computation, Instruction, Shape
from . import register_lowering
from .expression import compile_computation
from .popops_elementwise import expression, vertex_chunks

def _scale_program(shape: Shape, normal: bool):
    """out = a + (b - a) * u   (uniform)   or   out = a + b * z   (normal)."""
    u = Instruction("parameter", shape, attrs={"number": 0})
    a = Instruction("parameter", Shape(shape.dtype), attrs={"number": 1})
    b = Instruction("parameter", Shape(shape.dtype), attrs={"number": 2})
    if normal:
        scaled = Instruction("multiply", shape, [b, u])
    else:
        width = Instruction("subtract", Shape(shape.dtype), [b, a])
        scaled = Instruction("multiply", shape, [width, u])
    out = Instruction("add", shape, [a, scaled])
    insts = [u, a, b] + ([] if normal else [scaled.operands[0]]) + [scaled, out]
    return compile_computation(Computation("rng_scale", insts, out))


def _int_scale_program(shape: Shape):
    """Integers uniform in [a, b) from f64 samples u in [0, 1):
    out = a + min(floor((b - a) * u), b - a - 1), with the width taken in f64 and the sum in s64 (no overflow for
    any range of a 32-bit type; 64-bit ranges beyond 2^53 lose low bits of uniformity)."""
    f64, s64 = Shape("f64", shape.dims), Shape("s64", shape.dims)
    u = Instruction("parameter", f64, attrs={"number": 0})
    a = Instruction("parameter", Shape(shape.dtype), attrs={"number": 1})
    b = Instruction("parameter", Shape(shape.dtype), attrs={"number": 2})
    a64 = Instruction("convert", Shape("s64"), [a])
    width = Instruction("subtract", Shape("s64"), [Instruction("convert", Shape("s64"), [b]), a64])
    last = Instruction("subtract", Shape("s64"), [width, Instruction("constant", Shape("s64"), attrs={"value": 1})])
    k = Instruction("convert", s64, [Instruction("floor", f64, [Instruction("multiply", f64, [
        Instruction("convert", Shape("f64"), [width]), u])])])
    k = Instruction("minimum", s64, [k, last])
    out = Instruction("convert", shape, [Instruction("add", s64, [a64, k])])
    order, seen = [], set()

    def visit(i):                    # operands before users
        if id(i) not in seen:
            seen.add(id(i))
            for o in i.operands:
                visit(o)
            order.append(i)
    for p in (u, a, b):
        visit(p)
    visit(out)
    return compile_computation(Computation("rng_int_scale", order, out))


@register_lowering("rng")
def lower_rng(ctx, lo, hi):
    dist = ctx.inst.attrs.get("distribution", "uniform")
    dtype = ctx.shape.dtype
    b = ctx.b
    normal = dist == "normal"
    if not dtypes.is_float(dtype):
        if normal or dtype == "pred":
            raise ctx.unsupported(f"rng of element type {dtype} with distribution {dist}")
        return _rng_int(ctx, lo, hi)
    raw = b.linear(ctx.shape, f"{ctx.name}/samples", "temporary", ctx.origin)
    _generate(b, raw, normal, ctx.name, ctx.origin)
    return expression(b, _scale_program(ctx.shape, normal), [raw, lo, hi], ctx.shape, ctx.name, ctx.origin)


def _generate(b, raw, normal: bool, name: str, origin: str) -> None:
    region, offset, count = vertex_chunks(raw)
    records = np.stack([raw.syms[region] + offset * raw.itemsize, count, raw.starts[region] + offset],
                       axis=1).astype(np.int64)
    group = VertexGroup("rng", records, addr_cols=(0,), tiles=raw.tiles[region],
                        cycles=cyc.rng_cycles(b.device, count, raw.dtype, normal),
                        params=dict(distribution=1 if normal else 0, out_dt=dtypes.code(raw.dtype),
                                    stream=zlib.crc32(name.encode())))
    b.execute(f"{name}/generate", [group], origin)


def _rng_int(ctx, lo, hi):
    """Uniform integers in [lo, hi) (TF's RandomUniformInt): f64 samples on the output's tile mapping, scaled."""
    b = ctx.b
    out = b.linear(ctx.shape, ctx.name, "activation", ctx.origin)
    raw = b.like(out, Shape("f64", ctx.shape.dims), f"{ctx.name}/samples", "temporary", ctx.origin)
    _generate(b, raw, False, ctx.name, ctx.origin)
    return expression(b, _int_scale_program(ctx.shape), [raw, lo, hi], ctx.shape, ctx.name, ctx.origin, out=out)
