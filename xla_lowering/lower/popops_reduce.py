"""popops reduce, with a reduction planner.

A reduction of R elements into each of O outputs is laid out as rows: the copy into rows is the exchange, and
each tile reduces its whole rows with one vertex. When there are fewer outputs than tiles, rows are first
cut into P parts (P divides R) that are reduced in parallel into partials, then the partials are reduced.
The last stage puts the init value at the head of every row, so it is applied exactly once.

An index map may hold -1 for "the init value" (the padding of a reduce-window): those row elements are filled
from the init tensor when the rows are staged, so the vertices never see a hole.
"""
from __future__ import annotations

import numpy as np

from kernels import cycles as cyc
from kernels import dtypes
from kernels.program import VertexGroup

from ..hlo.ir import Computation, Shape
from ..mapping.linear import rows_pieces
from ..mapping.tensor import DTensor
from . import register_lowering
from .expression import compile_instruction

REDUCE_OPS = {"add": 0, "multiply": 1, "maximum": 2, "minimum": 3, "and": 4, "or": 5, "xor": 6}
MIN_ROW = 32           # do not split rows below this many elements per part


def simple_reducer(comp: Computation) -> str | None:
    """The op name when ``comp`` is op(p0, p1) of its two scalar parameters, else None."""
    root = comp.root
    params = comp.parameters
    if len(params) != 2 or root.opcode not in REDUCE_OPS or len(root.operands) != 2:
        return None
    if set(root.operands) != set(params):
        return None
    return root.opcode


def partial_dtype(dtype: str) -> str:
    """f16 reductions accumulate in f32 partials, as PopLibs does by default."""
    return "f32" if dtype == "f16" else dtype


def choose_parts(rows: int, row_len: int, num_tiles: int) -> int:
    """P: how many parts to cut each row into so that rows x P keeps the tiles busy."""
    if rows >= num_tiles or row_len < 2 * MIN_ROW:
        return 1
    target = min(num_tiles // max(rows, 1), row_len // MIN_ROW)
    for p in range(max(target, 1), 0, -1):
        if row_len % p == 0:
            return p
    return 1


def _stage_rows(b, x: DTensor, index: np.ndarray, name: str, origin: str, fill: DTensor | None = None,
                column: bool | None = None):
    """Copy x[index] ([rows, width]) into a row tensor with whole rows per tile; returns (tensor, column?).

    Within a tile the rows are stored row after row (row layout) or interleaved (column layout: element k of
    every row together), whichever keeps the runs of the copy longer, e.g. reducing the last dimension reads
    rows that are contiguous in x, reducing the first reads columns that are (``column`` forces one, so that
    the operands of a variadic reduction share a layout). Index -1 takes the one-element ``fill`` instead.
    """
    rows, width = index.shape
    # fewer rows than tiles: start at a different tile each time, so that the same tiles do not always receive
    first = (next(b._rotate) * 97) % b.num_tiles if rows < b.num_tiles else 0
    tiles, starts, counts = rows_pieces(rows, width, b.num_tiles, first_tile=first)
    t = b.add_tensor(Shape(x.dtype, (rows * width,)), tiles, starts, counts, f"{name}/rows", "temporary", origin)
    if column is None:
        row_breaks = np.count_nonzero(np.diff(index, axis=1) != 1) if width > 1 else 0
        col_breaks = np.count_nonzero(np.diff(index, axis=0) != 1) if rows > 1 else rows * width
        column = width > 1 and col_breaks < row_breaks
    if column:
        region_rows = t.counts // width
        first_row = t.starts // width
        region = np.repeat(np.arange(len(t.counts)), region_rows)
        j = np.arange(rows) - first_row[region]
        pos = t.starts[region][:, None] + np.arange(width)[None, :] * region_rows[region][:, None] + j[:, None]
        staged = np.empty(rows * width, np.int64)
        staged[pos.reshape(-1)] = index.reshape(-1)
    else:
        staged = index.reshape(-1)
    hole = staged < 0
    if hole.any():
        if fill is None:
            raise AssertionError(f"{name}: index map has -1 entries but no init value to fill them")
        b.rearrange(t, [x, fill], np.where(hole, 0, staged), hole.astype(np.int64), name=f"{name}/gather",
                    origin=origin)
    else:
        b.rearrange(t, [x], staged, name=f"{name}/gather", origin=origin)
    return t, column


def _reduce_stage(b, src: DTensor, column: bool, op: str, out_shape: Shape, init: DTensor | None, name: str,
                  origin: str) -> DTensor:
    """Reduce the rows of a staged row tensor into one value per row (starting from ``init`` if given)."""
    rows = out_shape.size
    width = src.size // max(rows, 1)
    region_rows = src.counts // max(width, 1) if width else src.counts
    out = b.add_tensor(out_shape, src.tiles, src.starts // max(width, 1), region_rows, name, "activation", origin)
    n = len(region_rows)
    row_stride = np.ones(n, np.int64) if column else np.full(n, width)
    elem_stride = region_rows if column else np.ones(n, np.int64)
    cols = [src.syms, out.syms, region_rows, np.full(n, width), row_stride, elem_stride]
    addr_cols = (0, 1)
    if init is not None:
        used = np.unique(src.tiles)
        local = b.scalar_per_tile(init, used, origin)
        cols.append(local.syms[np.searchsorted(used, src.tiles)])
        addr_cols = (0, 1, 6)
    else:
        cols.append(np.full(n, -1))
    records = np.stack(cols, axis=1).astype(np.int64)
    group = VertexGroup("reduce", records, addr_cols=addr_cols, tiles=src.tiles,
                        cycles=cyc.reduce_cycles(b.device, region_rows, np.full(n, width), src.dtype),
                        params=dict(op=REDUCE_OPS[op], in_dt=dtypes.code(src.dtype), out_dt=dtypes.code(out_shape.dtype),
                                    init_dt=dtypes.code(init.dtype if init is not None else src.dtype)))
    b.execute(name, [group], origin)
    return out


def _fill(b, init: DTensor, out_shape: Shape, name: str, origin: str) -> DTensor:
    """Every output an empty reduction: the init value."""
    out = b.linear(out_shape, name, "activation", origin)
    return b.rearrange(out, [init], np.zeros(out_shape.size, np.int64), name=name, origin=origin)


def reduce_rows(b, x: DTensor, index: np.ndarray, init: DTensor, op: str, out_shape: Shape, name: str,
                origin: str = "") -> DTensor:
    """out[o] = op(init, x[index[o, 0]], ..., x[index[o, R-1]]) for a [O, R] index map into ``x``.

    An index of -1 reads the init value (reduce-window padding).
    """
    rows, row_len = index.shape
    if row_len == 0 or rows == 0:
        return _fill(b, init, out_shape, name, origin)
    parts = choose_parts(rows, row_len, b.num_tiles)
    src, src_index = x, index
    if parts > 1:
        staged, column = _stage_rows(b, x, index.reshape(rows * parts, row_len // parts), f"{name}/parts", origin,
                                     fill=init)
        src = _reduce_stage(b, staged, column, op, Shape(partial_dtype(x.dtype), (rows * parts,)), None,
                            f"{name}/partials", origin)
        src_index = np.arange(rows * parts, dtype=np.int64).reshape(rows, parts)
    staged, column = _stage_rows(b, src, src_index, name, origin, fill=init)
    return _reduce_stage(b, staged, column, op, out_shape, init, name, origin)


def _convert(b, t: DTensor, dtype: str, name: str, origin: str) -> DTensor:
    from ..hlo.ir import Instruction
    from .popops_elementwise import expression
    p = Instruction("parameter", t.shape, attrs={"number": 0})
    conv = Instruction("convert", t.shape.with_dtype(dtype), [p])
    return expression(b, compile_instruction(conv), [t], conv.shape, name, origin)


def reduce_index(dims, reduced) -> np.ndarray:
    """[O, R] map: row o lists the input elements reduced into output o (kept dims in order)."""
    kept = [d for d in range(len(dims)) if d not in reduced]
    iota = np.arange(int(np.prod(dims, dtype=np.int64)), dtype=np.int64).reshape(dims)
    o = int(np.prod([dims[d] for d in kept], dtype=np.int64))
    return iota.transpose(kept + sorted(reduced)).reshape(o, -1)


def _generic_stage(b, staged: list[DTensor], column: bool, prog, out_shapes: list[Shape], inits, name: str,
                   origin: str) -> list[DTensor]:
    """One reduction stage with a compiled reducer computation (any reducer, several operands)."""
    src = staged[0]
    rows = out_shapes[0].size
    width = src.size // max(rows, 1)
    region_rows = src.counts // max(width, 1)
    outs = [b.add_tensor(s, src.tiles, src.starts // max(width, 1), region_rows, f"{name}/out{i}", "activation",
                         origin) for i, s in enumerate(out_shapes)]
    n = len(region_rows)
    cols = [region_rows, np.full(n, width), np.ones(n, np.int64) if column else np.full(n, width),
            region_rows if column else np.ones(n, np.int64)]
    cols += [o.syms for o in outs] + [t.syms for t in staged]
    k = len(outs)
    addr_cols = tuple(range(4, 4 + 2 * k))
    if inits is not None:
        used = np.unique(src.tiles)
        for init in inits:
            local = b.scalar_per_tile(init, used, origin)
            cols.append(local.syms[np.searchsorted(used, src.tiles)])
        addr_cols += tuple(range(4 + 2 * k, 4 + 3 * k))
    else:
        cols += [np.full(n, -1)] * k
    records = np.stack(cols, axis=1).astype(np.int64)
    group = VertexGroup("reduce_expr", records, addr_cols=addr_cols, tiles=src.tiles,
                        cycles=cyc.expr_cycles(b.device, region_rows * width, prog.ops, src.dtype),
                        params=dict(code=prog.code, in_dt=np.array([dtypes.code(d) for d in prog.in_dtypes], np.int32),
                                    out_slots=np.array(prog.out_slots, np.int64), nacc=k, nslots=prog.nslots,
                                    fconst=prog.fconst, iconst=prog.iconst))
    b.execute(name, [group], origin)
    return outs


def reduce_generic(b, xs: list[DTensor], index, inits: list[DTensor], reducer: Computation,
                   out_shapes: list[Shape], name: str, origin: str = "") -> list[DTensor]:
    """Reduce with any reducer computation: (acc..., x...) -> acc..., over the rows of ``index``.

    ``index`` is one [O, R] map for every operand or a list of maps, one per operand (same shape); -1 reads
    that operand's init value. Without a split into parts the reducer only ever sees (acc, element) pairs in row
    order; a split also combines partial accumulators, so the reducer must be associative (XLA's contract).
    """
    from .expression import compile_computation
    if np.shape(index if not isinstance(index, list) else index[0])[1] == 0 or out_shapes[0].size == 0:
        return [_fill(b, init, shape, f"{name}/out{i}", origin) for i, (init, shape) in enumerate(zip(inits, out_shapes))]
    prog = compile_computation(reducer)
    maps = list(index) if isinstance(index, (list, tuple)) else [index] * len(xs)
    rows, row_len = maps[0].shape
    parts = choose_parts(rows, row_len, b.num_tiles)
    srcs, src_maps = xs, maps
    if parts > 1:
        staged = _stage_all(b, xs, [m.reshape(rows * parts, row_len // parts) for m in maps], inits,
                            f"{name}/parts", origin)
        srcs = _generic_stage(b, [t for t, _ in staged], staged[0][1], prog,
                              [Shape(x.dtype, (rows * parts,)) for x in xs], None, f"{name}/partials", origin)
        src_maps = [np.arange(rows * parts, dtype=np.int64).reshape(rows, parts)] * len(xs)
    staged = _stage_all(b, srcs, src_maps, inits, f"{name}/in", origin)
    return _generic_stage(b, [t for t, _ in staged], staged[0][1], prog, out_shapes, inits, name, origin)


def _stage_all(b, xs, maps, inits, name, origin):
    """Stage every operand of a variadic reduction with the first one's layout."""
    first = _stage_rows(b, xs[0], maps[0], f"{name}0", origin, fill=inits[0])
    rest = [_stage_rows(b, x, m, f"{name}{i}", origin, fill=init, column=first[1])
            for i, (x, m, init) in enumerate(zip(xs[1:], maps[1:], inits[1:]), 1)]
    return [first] + rest


@register_lowering("reduce")
def lower_reduce(ctx, *operands):
    n = len(operands) // 2
    xs, inits = list(operands[:n]), list(operands[n:])
    reducer = ctx.inst.called["to_apply"]
    op = simple_reducer(reducer)
    index = reduce_index(xs[0].shape.dims, list(ctx.inst.attrs["dimensions"]))
    if n == 1 and op is not None and not (op in ("and", "or", "xor") and dtypes.is_float(xs[0].dtype)):
        return reduce_rows(ctx.b, xs[0], index, inits[0], op, ctx.shape, ctx.name, ctx.origin)
    out_shapes = list(ctx.shape.tuple_shapes) if ctx.shape.is_tuple else [ctx.shape]
    outs = reduce_generic(ctx.b, xs, index, inits, reducer, out_shapes, ctx.name, ctx.origin)
    return tuple(outs) if ctx.shape.is_tuple else outs[0]
