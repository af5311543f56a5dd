"""popops reduce, with a reduction planner.

A reduction of R elements into each of O outputs is laid out as rows: the copy into rows is the exchange, and
each tile reduces its whole rows with one vertex. When there are fewer outputs than tiles, rows are first
cut into P parts (P divides R) that are reduced in parallel into partials, then the partials are reduced.
The last stage puts the init value at the head of every row, so it is applied exactly once.
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


def _stage_rows(b, x: DTensor, index: np.ndarray, name: str, origin: str):
    """Copy x[index] ([rows, width]) into a row tensor with whole rows per tile; returns (tensor, column?).

    Within a tile the rows are stored row after row (row layout) or interleaved (column layout: element k of
    every row together), whichever keeps the runs of the copy longer, e.g. reducing the last dimension reads
    rows that are contiguous in x, reducing the first reads columns that are.
    """
    rows, width = index.shape
    tiles, starts, counts = rows_pieces(rows, width, b.num_tiles)
    t = b.add_tensor(Shape(x.dtype, (rows * width,)), tiles, starts, counts, f"{name}/rows", "temporary", origin)
    row_breaks = np.count_nonzero(np.diff(index, axis=1) != 1) if width > 1 else 0
    col_breaks = np.count_nonzero(np.diff(index, axis=0) != 1) * width if rows > 1 else rows * width
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


def reduce_rows(b, x: DTensor, index: np.ndarray, init: DTensor, op: str, out_shape: Shape, name: str,
                origin: str = "") -> DTensor:
    """out[o] = op(init, x[index[o, 0]], ..., x[index[o, R-1]]) for a [O, R] index map into ``x``."""
    rows, row_len = index.shape
    parts = choose_parts(rows, row_len, b.num_tiles)
    src, src_index = x, index
    if parts > 1:
        staged, column = _stage_rows(b, x, index.reshape(rows * parts, row_len // parts), f"{name}/parts", origin)
        src = _reduce_stage(b, staged, column, op, Shape(partial_dtype(x.dtype), (rows * parts,)), None,
                            f"{name}/partials", origin)
        src_index = np.arange(rows * parts, dtype=np.int64).reshape(rows, parts)
    staged, column = _stage_rows(b, src, src_index, name, origin)
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


@register_lowering("reduce")
def lower_reduce(ctx, *operands):
    n = len(operands) // 2
    op = simple_reducer(ctx.inst.called["to_apply"])
    if n != 1 or op is None:
        raise ctx.unsupported("only reductions by add/multiply/maximum/minimum/and/or/xor of one operand are "
                              "supported so far")
    x, init = operands
    if op in ("and", "or", "xor") and dtypes.is_float(x.dtype):
        raise ctx.unsupported(f"bitwise reduction '{op}' of floats")
    index = reduce_index(x.shape.dims, list(ctx.inst.attrs["dimensions"]))
    return reduce_rows(ctx.b, x, index, init, op, ctx.shape, ctx.name, ctx.origin)
