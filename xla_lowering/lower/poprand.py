"""poprand: the rng op (uniform in [a, b) and normal(mu, sigma)).

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


@register_lowering("rng")
def lower_rng(ctx, lo, hi):
    dist = ctx.inst.attrs.get("distribution", "uniform")
    dtype = ctx.shape.dtype
    if not dtypes.is_float(dtype):
        raise ctx.unsupported(f"rng of element type {dtype}")
    b = ctx.b
    normal = dist == "normal"
    raw = b.linear(ctx.shape, f"{ctx.name}/samples", "temporary", ctx.origin)
    region, offset, count = vertex_chunks(raw)
    records = np.stack([raw.syms[region] + offset * raw.itemsize, count, raw.starts[region] + offset],
                       axis=1).astype(np.int64)
    group = VertexGroup("rng", records, addr_cols=(0,), tiles=raw.tiles[region],
                        cycles=cyc.rng_cycles(b.device, count, dtype, normal),
                        params=dict(distribution=1 if normal else 0, out_dt=dtypes.code(dtype),
                                    stream=zlib.crc32(ctx.name.encode())))
    b.execute(f"{ctx.name}/generate", [group], ctx.origin)
    return expression(b, _scale_program(ctx.shape, normal), [raw, lo, hi], ctx.shape, ctx.name, ctx.origin)
