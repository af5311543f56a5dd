"""popops elementwise: every unary/binary/compare/select/clamp/convert op, and fused expressions.

The output takes the tile mapping of its first full-size operand; other operands are copied to that mapping
when theirs differs, and one-element operands are broadcast to every tile that needs them, so each vertex
reads only its own tile's memory. One vertex per region (split into chunks for the host's threads).

An input in broadcast mode (a per-channel vector that the expression repeats cyclically: output element i reads
vector element (i // inner) % C) is never materialized at the output's size: each tile receives only the part of
the vector its vertices read (``broadcast_windows``), and the vertex indexes that part (the codelet's broadcast
load), as PopLibs' broadcast-operand vertices do.
"""
from __future__ import annotations

import numpy as np

from kernels import cycles as cyc
from kernels import dtypes
from kernels.program import VertexGroup

from ..mapping.arrays import distinct
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


def broadcast_windows(b, vec: DTensor, inner: int, first: np.ndarray, count: np.ndarray, vtiles: np.ndarray,
                      origin: str = ""):
    """Per-tile parts of ``vec`` (C elements) for vertices reading output elements [first, first + count), output
    element i being vector element (i // inner) % C. Returns per vertex (base address, q, M): the vertex's element
    k is element ((q + k) // inner) % M of the part at the base address.

    A vertex needs the L = min(C, groups it touches) elements from w0 = (first // inner) % C on, circularly: an arc
    of the circle of C elements. The circle is cut into blocks of ``block`` elements (a power of two near the
    vertices' typical L); a tile gets the union of the blocks its vertices' arcs touch, as runs of blocks that are
    contiguous on the circle (so duplicates and overlaps cost one copy), or the whole vector once when it needs
    every block. Whole blocks are what make the exchange a broadcast: every tile receives the same few
    (source, length) runs, which the source tile sends once. A vertex reads its arc at an offset o into its tile's
    part: q = o * inner + first % inner."""
    c = vec.size
    w0 = (first // inner) % c
    length = np.minimum(c, (first + count - 1) // inner - first // inner + 1)
    block = max(-(-32 // vec.itemsize), 1 << int(np.ceil(np.log2(max(1.0, float(np.median(length)))))))
    block = min(block, c)
    n = -(-c // block)                                   # blocks on the circle (the last may be shorter)
    # the arcs as pieces of [0, c) in block units: a wrapping arc is two pieces; tile t's pieces are shifted to
    # t * 2n, so that pieces of different tiles never touch
    span = 2 * n
    wrap = w0 + length > c
    lo = np.concatenate([w0, np.zeros(int(wrap.sum()), np.int64)]) // block
    hi = -(-np.concatenate([np.minimum(w0 + length, c), (w0 + length - c)[wrap]]) // block)
    shift = np.concatenate([vtiles, vtiles[wrap]]) * span
    order = np.argsort(lo + shift, kind="stable")
    lo, hi = (lo + shift)[order], (hi + shift)[order]
    # merge overlapping or adjacent pieces (sorted by start: a piece starts a new arc past the running end)
    reach = np.maximum.accumulate(hi)
    new = np.concatenate([[True], lo[1:] > reach[:-1]])
    arc_lo = lo[new]
    arc_hi = np.maximum.reduceat(hi, np.flatnonzero(new))
    arc_tile = arc_lo // span
    a_lo, a_hi = arc_lo - arc_tile * span, arc_hi - arc_tile * span
    # close the circle: a tile's arc ending at block n continues with its arc starting at block 0
    first_of_tile = np.concatenate([[True], arc_tile[1:] != arc_tile[:-1]])
    last_of_tile = np.concatenate([arc_tile[1:] != arc_tile[:-1], [True]])
    head = np.flatnonzero(first_of_tile)                 # per tile: its first arc, and its last
    tail = np.flatnonzero(last_of_tile)
    join = (a_lo[head] == 0) & (a_hi[tail] == n) & (head != tail)
    target = np.arange(len(arc_lo))
    target[head[join]] = tail[join]
    nblocks = a_hi - a_lo
    nblocks[tail[join]] += nblocks[head[join]]
    keep = np.ones(len(arc_lo), bool)
    keep[head[join]] = False
    renumber = np.cumsum(keep) - 1
    # each vertex's arc: the one holding its first element w0
    which = renumber[target[np.searchsorted(arc_lo, vtiles * span + w0 // block, side="right") - 1]]
    sb, nb, tiles = a_lo[keep], nblocks[keep], arc_tile[keep]
    start = sb * block
    end = sb + nb                                        # in blocks, past n when the arc wraps
    size = np.where(end <= n, np.minimum(c, end * block), c + np.minimum(c, (end - n) * block)) - start
    offset = (w0 - start[which]) % c
    assert np.all((offset + length <= size[which]) | (size[which] == c)), "a vertex's window left its tile's arc"
    windows = b.windows_per_tile(vec, tiles, start, size, block, origin)
    return windows.syms[which], offset * inner + first % inner, size[which]


def expression(b, prog: ExprProgram, operands: list[DTensor], out_shape, name: str, origin: str = "",
               out: DTensor | None = None, cycles=None) -> DTensor:
    """Evaluate ``prog`` elementwise over ``operands`` into a new tensor of ``out_shape``. ``cycles``: a function
    of the vertices' element counts giving their cycles, where the IPU would do the work another way than by
    running ``prog`` (by default, the expression's own cost)."""
    n = out_shape.size
    scalar = [o.size == 1 and n != 1 for o in operands]
    bcast = [(prog.in_bcast[i] if i < len(prog.in_bcast) else None) if not s else None
             for i, s in enumerate(scalar)]
    full = [o for o, s, bc in zip(operands, scalar, bcast) if not s and bc is None]
    if out is None:
        if full:
            anchor = max(full, key=lambda o: len(distinct(o.tiles)))
            out = b.like(anchor, out_shape, name, "activation", origin)
        else:
            out = b.linear(out_shape, name, "activation", origin)
    region, offset, count = vertex_chunks(out)
    vtiles = out.tiles[region]
    out_isz = out.itemsize
    cols = [count, out.syms[region] + offset * out_isz]
    extra = []                             # per broadcast-mode input: its (q, M) record columns
    in_bcast = np.zeros((len(operands), 2), np.int64)
    for i, (o, s) in enumerate(zip(operands, scalar)):
        if s:
            used = distinct(vtiles)
            per_tile = b.scalar_per_tile(o, used, origin)
            cols.append(per_tile.syms[np.searchsorted(used, vtiles)])
        elif bcast[i] is not None:
            inner = bcast[i][0]
            addr, q, m = broadcast_windows(b, o, inner, out.starts[region] + offset, count, vtiles, origin)
            cols.append(addr)
            in_bcast[i] = (inner, 2 + len(operands) + len(extra))
            extra += [q, m]
        else:
            local = b.aligned(o, out, f"{name}/in{i}", origin)
            cols.append(local.syms[region] + offset * local.itemsize)
    naddr = len(cols)
    records = np.stack(cols + extra, axis=1).astype(np.int64)
    params = {}
    if extra:   # absent: no input in broadcast mode (as in executables written before it existed)
        params["in_bcast"] = in_bcast
    work_dtype = max([o.dtype for o in operands] + [out.dtype], key=lambda d: dtypes.itemsize(d))
    group = VertexGroup(
        "expr", records, addr_cols=tuple(range(1, naddr)), tiles=vtiles,
        cycles=cycles(count) if cycles is not None else cyc.expr_cycles(b.device, count, prog.ops, work_dtype),
        params=dict(code=prog.code, in_dt=np.array([dtypes.code(d) for d in prog.in_dtypes], np.int32),
                    in_scalar=np.array(scalar, np.int64), out_dt=dtypes.code(prog.out_dtype),
                    out_slot=prog.out_slot, nslots=prog.nslots, fconst=prog.fconst, iconst=prog.iconst, **params))
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
