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


def _row_tensor(b, rows, row_len, dtype, name, category, origin):
    tiles, starts, counts = rows_pieces(rows, row_len, b.num_tiles)
    return b.add_tensor(Shape(dtype, (rows * row_len,)), tiles, starts, counts, name, category, origin)


def _reduce_stage(b, src: DTensor, op: str, out_shape: Shape, name: str, origin: str) -> DTensor:
    """Reduce the rows of ``src`` (a row tensor from ``_row_tensor``) into one value per row."""
    rows = out_shape.size
    row_len = src.size // max(rows, 1)
    out = b.add_tensor(out_shape, src.tiles, src.starts // row_len, src.counts // row_len, name, "activation", origin)
    region_rows = src.counts // row_len
    records = np.stack([src.syms, out.syms, region_rows, np.full(len(region_rows), row_len)], axis=1).astype(np.int64)
    group = VertexGroup("reduce", records, addr_cols=(0, 1), tiles=src.tiles,
                        cycles=cyc.reduce_cycles(b.device, region_rows, np.full(len(region_rows), row_len), src.dtype),
                        params=dict(op=REDUCE_OPS[op], in_dt=dtypes.code(src.dtype), out_dt=dtypes.code(out_shape.dtype)))
    b.execute(name, [group], origin)
    return out


def reduce_rows(b, x: DTensor, index: np.ndarray, init: DTensor, op: str, out_shape: Shape, name: str,
                origin: str = "") -> DTensor:
    """out[o] = op(init, x[index[o, 0]], ..., x[index[o, R-1]]) for a [O, R] index map into ``x``."""
    rows, row_len = index.shape
    parts = choose_parts(rows, row_len, b.num_tiles)
    src, src_index = x, index
    if parts > 1:
        part_len = row_len // parts
        staged = _row_tensor(b, rows * parts, part_len, x.dtype, f"{name}/rows", "temporary", origin)
        b.rearrange(staged, [x], index.reshape(-1), name=f"{name}/gather", origin=origin)
        src = _reduce_stage(b, staged, op, Shape(partial_dtype(x.dtype), (rows * parts,)), f"{name}/partials", origin)
        src_index = np.arange(rows * parts, dtype=np.int64).reshape(rows, parts)
        if init.dtype != src.dtype:
            init = _convert(b, init, src.dtype, f"{name}/init", origin)
    # last stage: [init, values...] per row
    width = src_index.shape[1] + 1
    staged = _row_tensor(b, rows, width, src.dtype, f"{name}/final_rows", "temporary", origin)
    full_index = np.concatenate([np.zeros((rows, 1), np.int64), src_index], axis=1)
    which = np.concatenate([np.ones((rows, 1), np.int64), np.zeros_like(src_index)], axis=1)
    b.rearrange(staged, [src, init], full_index.reshape(-1), which.reshape(-1), name=f"{name}/gather_final",
                origin=origin)
    return _reduce_stage(b, staged, op, out_shape, name, origin)


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
