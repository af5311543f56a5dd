"""popops elementwise: every unary/binary/compare/select/clamp/convert op, and fused expressions.

The output takes the tile mapping of its first full-size operand; other operands are copied to that mapping
when theirs differs, and one-element operands are broadcast to every tile that needs them, so each vertex
reads only its own tile's memory. One vertex per region (split into chunks for the host's threads).
"""
from __future__ import annotations

import numpy as np

from kernels import cycles as cyc
from kernels import dtypes
from kernels.program import VertexGroup

from ..mapping.tensor import DTensor
from . import register_lowering
from .expression import ELEMENTWISE, ExprProgram, compile_computation, compile_instruction

CHUNK = 16384          # elements per vertex at most: keeps both host cores busy on large tensors


def vertex_chunks(t: DTensor, chunk: int = CHUNK):
    """(region index, element offset within the region, element count) of each vertex over tensor ``t``."""
    n_chunks = np.maximum(1, -(-t.counts // chunk))
    region = np.repeat(np.arange(len(t.counts)), n_chunks)
    first_chunk = np.cumsum(n_chunks) - n_chunks
    k = np.arange(len(region)) - np.repeat(first_chunk, n_chunks)
    offset = k * chunk
    count = np.minimum(chunk, t.counts[region] - offset)
    keep = count > 0
    return region[keep], offset[keep], count[keep]


def expression(b, prog: ExprProgram, operands: list[DTensor], out_shape, name: str, origin: str = "",
               out: DTensor | None = None, cycles=None) -> DTensor:
    """Evaluate ``prog`` elementwise over ``operands`` into a new tensor of ``out_shape``. ``cycles``: a function
    of the vertices' element counts giving their cycles, where the IPU would do the work another way than by
    running ``prog`` (by default, the expression's own cost)."""
    n = out_shape.size
    scalar = [o.size == 1 and n != 1 for o in operands]
    full = [o for o, s in zip(operands, scalar) if not s]
    if out is None:
        if full:
            anchor = max(full, key=lambda o: len(np.unique(o.tiles)))
            out = b.like(anchor, out_shape, name, "activation", origin)
        else:
            out = b.linear(out_shape, name, "activation", origin)
    region, offset, count = vertex_chunks(out)
    vtiles = out.tiles[region]
    out_isz = out.itemsize
    cols = [count, out.syms[region] + offset * out_isz]
    for i, (o, s) in enumerate(zip(operands, scalar)):
        if s:
            used = np.unique(vtiles)
            per_tile = b.scalar_per_tile(o, used, origin)
            cols.append(per_tile.syms[np.searchsorted(used, vtiles)])
        else:
            local = b.aligned(o, out, f"{name}/in{i}", origin)
            cols.append(local.syms[region] + offset * local.itemsize)
    records = np.stack(cols, axis=1).astype(np.int64)
    work_dtype = max([o.dtype for o in operands] + [out.dtype], key=lambda d: dtypes.itemsize(d))
    group = VertexGroup(
        "expr", records, addr_cols=tuple(range(1, records.shape[1])), tiles=vtiles,
        cycles=cycles(count) if cycles is not None else cyc.expr_cycles(b.device, count, prog.ops, work_dtype),
        params=dict(code=prog.code, in_dt=np.array([dtypes.code(d) for d in prog.in_dtypes], np.int32),
                    in_scalar=np.array(scalar, np.int64), out_dt=dtypes.code(prog.out_dtype),
                    out_slot=prog.out_slot, nslots=prog.nslots, fconst=prog.fconst, iconst=prog.iconst))
    b.execute(name, [group], origin)
    return out


def bitcast_resize(ctx, x: DTensor) -> DTensor:
    """bitcast-convert between element types of different sizes: the same bytes seen as more, smaller elements
    (a new minor dimension of in/out size) or fewer, larger ones (the minor dimension disappears). Row-major
    storage does not change, so this is a view; only when a region boundary would split a wide element is the
    operand first copied to a linear mapping (whose pieces are whole 8-byte grains)."""
    out_isz, in_isz = ctx.shape.itemsize, x.itemsize
    if in_isz > out_isz:
        r = in_isz // out_isz
        return DTensor(ctx.shape, x.tiles, x.starts * r, x.counts * r, x.syms, ctx.name, x.category, x.origin)
    r = out_isz // in_isz
    if np.any(x.starts % r) or np.any(x.counts % r):
        t = ctx.b.linear(x.shape, f"{ctx.name}/regrain", "temporary", ctx.origin)
        x = ctx.b.rearrange(t, [x], np.arange(x.size), name=f"{ctx.name}/regrain", origin=ctx.origin)
    return DTensor(ctx.shape, x.tiles, x.starts // r, x.counts // r, x.syms, ctx.name, x.category, x.origin)


@register_lowering(*sorted(ELEMENTWISE))
def lower_elementwise(ctx, *operands):
    if ctx.inst.opcode == "bitcast-convert" and ctx.shape.itemsize != operands[0].itemsize:
        return bitcast_resize(ctx, operands[0])
    # an operand used twice (multiply(x, x)) is one input of the vertex
    unique = dict(zip(ctx.inst.operands, operands))
    return expression(ctx.b, compile_instruction(ctx.inst), list(unique.values()), ctx.shape, ctx.name, ctx.origin)


@register_lowering("fusion")
def lower_fusion(ctx, *operands):
    if ctx.inst.attrs.get("kind") != "expression":
        raise ctx.unsupported(f"fusion kind {ctx.inst.attrs.get('kind')!r}")
    prog = compile_computation(ctx.inst.called["fused"])
    return expression(ctx.b, prog, list(operands), ctx.shape, ctx.name, ctx.origin)
