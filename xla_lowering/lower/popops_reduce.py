"""popops reduce, with a reduction planner.

When the index map is a partition of the input (plain ``reduce``, non-overlapping windows, matmul partials), the
reduction runs in stages as PopLibs does (``mapping/reduce_plan.py``): the tiles that hold the input reduce their
own elements into per-output partials with strided vertices, and only the partials are exchanged and reduced
again (in a tree when they come from many tiles). The init value is applied once, by the last stage.

Otherwise (overlapping or padded windows) the reduction is laid out as rows: the copy into rows is the exchange,
and each tile reduces its whole rows with one vertex. When there are fewer outputs than tiles, rows are first
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
from ..mapping import reduce_plan as plan
from ..mapping.arrays import distinct
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
        used = distinct(src.tiles)
        local = b.scalar_per_tile(init, used, origin)
        cols.append(local.syms[np.searchsorted(used, src.tiles)])
        addr_cols = (0, 1, 6)
    else:
        cols.append(np.full(n, -1))
    records = np.stack(cols, axis=1).astype(np.int64)
    group = VertexGroup("reduce", records, addr_cols=addr_cols, tiles=src.tiles,
                        cycles=cyc.reduce_cycles(b.device, region_rows, np.full(n, width), src.dtype,
                                                 column=column and width > 1),
                        params=dict(op=REDUCE_OPS[op], in_dt=dtypes.code(src.dtype), out_dt=dtypes.code(out_shape.dtype),
                                    init_dt=dtypes.code(init.dtype if init is not None else src.dtype)))
    b.execute(name, [group], origin)
    return out


def _fill(b, init: DTensor, out_shape: Shape, name: str, origin: str) -> DTensor:
    """Every output an empty reduction: the init value."""
    out = b.linear(out_shape, name, "activation", origin)
    return b.rearrange(out, [init], np.zeros(out_shape.size, np.int64), name=name, origin=origin)


# --- partition maps: reduce where the input lives, then a tree of partials ---------------------------------
class _How:
    """What a stage's vertices compute: a simple op with the reduce codelet, or a compiled reducer (any number of
    operands) with reduce_expr."""

    def __init__(self, op: str | None = None, prog=None):
        self.op, self.prog = op, prog


def _group(b, how: _How, srcs: list[DTensor], dsts: list[DTensor], rec: dict, tiles: np.ndarray,
           inits: list[DTensor] | None, origin: str) -> VertexGroup:
    """One vertex a record: rows ``rec['out'] + j`` of ``dsts`` from element ``rec['in']`` of ``srcs`` on."""
    n = len(tiles)
    rows, row_len = rec["rows"], rec["row_len"]
    ins = [s.element_syms()[rec["in"]] for s in srcs]
    outs = [d.element_syms()[rec["out"]] for d in dsts]
    if inits is not None:
        used = distinct(tiles)
        where = np.searchsorted(used, tiles)
        init_syms = [b.scalar_per_tile(i, used, origin).syms[where] for i in inits]
    else:
        init_syms = [np.full(n, -1, np.int64)] * len(srcs)
    column = (rec["elem_stride"] > 1) & (rows > 1)
    if how.prog is None:
        records = np.stack([ins[0], outs[0], rows, row_len, rec["row_stride"], rec["elem_stride"], init_syms[0]],
                           axis=1).astype(np.int64)
        init_dt = inits[0].dtype if inits is not None else srcs[0].dtype
        return VertexGroup("reduce", records, addr_cols=(0, 1, 6) if inits is not None else (0, 1), tiles=tiles,
                           cycles=cyc.reduce_cycles(b.device, rows, row_len, srcs[0].dtype, column=column),
                           params=dict(op=REDUCE_OPS[how.op], in_dt=dtypes.code(srcs[0].dtype),
                                       out_dt=dtypes.code(dsts[0].dtype), init_dt=dtypes.code(init_dt)))
    prog, k = how.prog, len(srcs)
    records = np.stack([rows, row_len, rec["row_stride"], rec["elem_stride"]] + outs + ins + init_syms,
                       axis=1).astype(np.int64)
    addr_cols = tuple(range(4, 4 + 2 * k)) + (tuple(range(4 + 2 * k, 4 + 3 * k)) if inits is not None else ())
    in_dt = [dtypes.code(d.dtype) for d in dsts] + [dtypes.code(s.dtype) for s in srcs]
    return VertexGroup("reduce_expr", records, addr_cols=addr_cols, tiles=tiles,
                       cycles=cyc.expr_cycles(b.device, rows * row_len, prog.ops, srcs[0].dtype),
                       params=dict(code=prog.code, in_dt=np.array(in_dt, np.int32),
                                   out_slots=np.array(prog.out_slots, np.int64), nacc=k, nslots=prog.nslots,
                                   fconst=prog.fconst, iconst=prog.iconst))


def _new(b, shapes: list[Shape], tiles: np.ndarray, name: str, category: str, origin: str) -> list[DTensor]:
    """Tensors whose element e lives on ``tiles[e]`` (consecutive elements of a tile next to each other); several
    tensors (a variadic reduction) are named name/out0, name/out1..."""
    t, s, c = plan.runs(tiles)
    names = [name] if len(shapes) == 1 else [f"{name}/out{i}" for i in range(len(shapes))]
    return [b.add_tensor(shape, t, s, c, nm, category, origin) for shape, nm in zip(shapes, names)]


def _first_stage(b, how, xs, rec, dtypes_, name, origin):
    """Stage 1 into per-tile partials tensors; returns (partials, owner of every partial)."""
    tiles = xs[0].tiles[rec["region"]]
    order = np.argsort(tiles, kind="stable")
    rec = {k: v[order] for k, v in rec.items()}
    tiles = tiles[order]
    rows = rec["rows"]
    n = int(rows.sum())
    parts = _new(b, [Shape(d, (n,)) for d in dtypes_], np.repeat(tiles, rows), f"{name}/partials", "temporary",
                 origin)
    pos = np.cumsum(rows) - rows
    b.execute(f"{name}/partials", [_group(b, how, xs, parts, dict(rec, **{"in": rec["elem"], "out": pos}), tiles,
                                          None, origin)], origin)
    owner = np.repeat(rec["out"] - pos, rows) + np.arange(n, dtype=np.int64)
    return parts, owner


def _level(b, how, srcs, used, row_of, row_tiles, dsts, inits, name, origin):
    """Reduce the partials ``used`` (elements of ``srcs``) into row ``row_of[p]`` of ``dsts`` (on row_tiles).

    A row whose only partial is already on its tile is read in place; the others are copied, row after row, into
    a staging tensor on the row's tile (the exchange) and reduced there."""
    nrows = len(row_tiles)
    order = np.argsort(row_of, kind="stable")
    p_sorted = used[order]
    cnt = np.bincount(row_of, minlength=nrows)
    first = np.cumsum(cnt) - cnt
    src_tiles = srcs[0].element_tiles()
    single_p = p_sorted[np.minimum(first, len(p_sorted) - 1)]
    in_place = (cnt == 1) & (src_tiles[single_p] == row_tiles)
    dst_syms = dsts[0].element_syms()
    groups = []

    def records(sources, rows_sel, in_elem, row_len):
        """Records of runs of consecutive rows (same tile and length, adjacent in the output and input memory)."""
        if len(rows_sel) == 0:
            return None
        t = row_tiles[rows_sel]
        brk = np.ones(len(rows_sel), bool)
        brk[1:] = ((t[1:] != t[:-1]) | (row_len[1:] != row_len[:-1]) | (rows_sel[1:] != rows_sel[:-1] + 1)
                   | (np.diff(dst_syms[rows_sel]) != dsts[0].itemsize))
        for s in sources:
            brk[1:] |= np.diff(s.element_syms()[in_elem]) != row_len[:-1] * s.itemsize
        head = np.flatnonzero(brk)
        nrun = np.diff(np.concatenate([head, [len(rows_sel)]]))
        return dict(**{"in": in_elem[head], "out": rows_sel[head]}, rows=nrun, row_len=row_len[head],
                    row_stride=row_len[head], elem_stride=np.ones(len(head), np.int64)), t[head]

    sel = np.flatnonzero(in_place)
    got = records(srcs, sel, single_p[sel], np.ones(len(sel), np.int64))
    if got is not None:
        groups.append(_group(b, how, srcs, dsts, got[0], got[1], inits, origin))
    staged_rows = np.flatnonzero(~in_place)
    if len(staged_rows):
        staged_rows = staged_rows[np.argsort(row_tiles[staged_rows], kind="stable")]
        n = cnt[staged_rows]
        take = np.repeat(first[staged_rows], n) + (np.arange(int(n.sum()), dtype=np.int64)
                                                   - np.repeat(np.cumsum(n) - n, n))
        index = p_sorted[take]
        staged = _new(b, [Shape(s.dtype, (len(index),)) for s in srcs], np.repeat(row_tiles[staged_rows], n),
                      f"{name}/in", "temporary", origin)
        for i, (st, s) in enumerate(zip(staged, srcs)):
            b.rearrange(st, [s], index, name=f"{name}/exchange{i if len(srcs) > 1 else ''}", origin=origin)
        got = records(staged, staged_rows, np.cumsum(n) - n, n)
        groups.append(_group(b, how, staged, dsts, got[0], got[1], inits, origin))
    b.execute(name, groups, origin)


def _tree(b, how, srcs, owner, num_out, out_shapes, part_dtypes, inits, name, origin):
    """Reduce the partials (elements of ``srcs`` with owner >= 0) into the outputs, level by level."""
    level = 0
    while True:
        used = np.flatnonzero(owner >= 0)
        own = owner[used]
        tiles = srcs[0].element_tiles()[used]
        if plan.is_last_level(own, tiles):
            dest = plan.final_tiles(own, tiles, num_out, rotate=next(b._rotate))
            outs = _new(b, out_shapes, dest, name, "activation", origin)
            _level(b, how, srcs, used, own, dest, outs, inits, name, origin)
            return outs
        row_of, row_tiles, row_out = plan.group_level(own, tiles, rotate=next(b._rotate))
        parts = _new(b, [Shape(d, (len(row_tiles),)) for d in part_dtypes], row_tiles,
                     f"{name}/level{level}", "temporary", origin)
        _level(b, how, srcs, used, row_of, row_tiles, parts, None, f"{name}/level{level}", origin)
        srcs, owner, level = parts, row_out, level + 1


def _reduce_partition(b, how: _How, xs: list[DTensor], index: np.ndarray, inits: list[DTensor],
                      out_shapes: list[Shape], part_dtypes: list[str], name: str, origin: str):
    """Staged reduction for a partition map (every input element in at most one row, no -1): None otherwise."""
    x = xs[0]
    num_out = index.shape[0]
    k1r2 = plan.partition_shape(index, x.size)
    owner = None
    if k1r2 is None:
        owner = plan.partition_owner(index, x.size)
        if owner is None:
            return None
    xs = [x] + [b.aligned(t, x, f"{name}/aligned{i}", origin) for i, t in enumerate(xs[1:], 1)]
    if k1r2 is not None:
        k1, r, k2 = k1r2
        rec = plan.stage_one(k1, r, k2, x.starts, x.counts, plan.max_work(x.size))
        nparts = int(rec["rows"].sum())
        if nparts == num_out:
            # every output is reduced by one record on one tile: the first stage is the whole reduction
            tiles = x.tiles[rec["region"]]
            dest = np.empty(num_out, np.int64)
            dest[np.repeat(rec["out"], rec["rows"]) + np.arange(nparts) - np.repeat(np.cumsum(rec["rows"])
                                                                                    - rec["rows"], rec["rows"])] \
                = np.repeat(tiles, rec["rows"])
            outs = _new(b, out_shapes, dest, name, "activation", origin)
            b.execute(name, [_group(b, how, xs, outs, dict(rec, **{"in": rec["elem"]}), tiles, inits, origin)],
                      origin)
            return outs
        if nparts < x.size:
            # even a small reduction on the tiles pays: a tile's partials are one per output it touches, in
            # output order, which keeps the copies of the tree few and long
            xs, owner = _first_stage(b, how, xs, rec, part_dtypes, name, origin)
        else:           # no reduction at all on the tiles: exchange the elements themselves
            i = np.arange(x.size, dtype=np.int64)
            owner = (i // (r * k2)) * k2 + i % k2
    return _tree(b, how, xs, owner, num_out, out_shapes, part_dtypes, inits, name, origin)


def reduce_rows(b, x: DTensor, index: np.ndarray, init: DTensor | None, op: str, out_shape: Shape, name: str,
                origin: str = "") -> DTensor:
    """out[o] = op(init, x[index[o, 0]], ..., x[index[o, R-1]]) for a [O, R] index map into ``x``.

    An index of -1 reads the init value (reduce-window padding). Without an init (a partial reduction, only for
    partition maps) each output starts from its first element.
    """
    rows, row_len = index.shape
    if row_len == 0 or rows == 0:
        return _fill(b, init, out_shape, name, origin)
    outs = _reduce_partition(b, _How(op=op), [x], index, None if init is None else [init], [out_shape],
                             [partial_dtype(x.dtype)], name, origin)
    if outs is not None:
        return outs[0]
    if init is None:
        raise AssertionError(f"{name}: a reduction without init value needs a partition index map")
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


def dim_groups(dims, reduced) -> list[tuple[int, bool]]:
    """Dimensions as alternating (size, reduced?) groups: adjacent kept or reduced dims merged, size-1 dims gone."""
    groups: list[list] = []
    for d, n in enumerate(dims):
        if n == 1:
            continue
        r = d in reduced
        if groups and groups[-1][1] == r:
            groups[-1][0] *= n
        else:
            groups.append([n, r])
    return [(int(n), r) for n, r in groups]


def reduce_dims(b, x: DTensor, reduced, init: DTensor, op: str, out_shape: Shape, name: str,
                origin: str = "") -> DTensor:
    """Reduce ``x`` over the dimensions ``reduced``. Several separate groups of reduced dimensions (e.g. N and HW
    of NCHW) are reduced one group at a time, innermost first, into partials; the init value is applied last."""
    groups = dim_groups(x.shape.dims, reduced)
    if x.size == 0 or out_shape.size == 0 or sum(r for _, r in groups) <= 1:
        return reduce_rows(b, x, reduce_index(x.shape.dims, reduced), init, op, out_shape, name, origin)
    sizes = [n for n, _ in groups]
    pdt = partial_dtype(x.dtype)
    step = 0
    while True:
        g = max(i for i, (_, r) in enumerate(groups) if r)
        last = sum(r for _, r in groups) == 1
        index = reduce_index(sizes, [g])
        rest = sizes[:g] + sizes[g + 1:]
        shape = out_shape if last else Shape(pdt, tuple(rest))
        x = reduce_rows(b, x.view(Shape(x.dtype, tuple(sizes))), index, init if last else None, op, shape,
                        name if last else f"{name}/dims{step}", origin)
        if last:
            return x
        groups = groups[:g] + groups[g + 1:]
        sizes, step = rest, step + 1


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
        used = distinct(src.tiles)
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
    if all(m is maps[0] or np.array_equal(m, maps[0]) for m in maps[1:]):
        outs = _reduce_partition(b, _How(prog=prog), xs, maps[0], inits, out_shapes, [s.dtype for s in out_shapes],
                                 name, origin)
        if outs is not None:
            return outs
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
    dims, reduced = xs[0].shape.dims, list(ctx.inst.attrs["dimensions"])
    if n == 1 and op is not None and not (op in ("and", "or", "xor") and dtypes.is_float(xs[0].dtype)):
        return reduce_dims(ctx.b, xs[0], reduced, inits[0], op, ctx.shape, ctx.name, ctx.origin)
    index = reduce_index(dims, reduced)
    out_shapes = list(ctx.shape.tuple_shapes) if ctx.shape.is_tuple else [ctx.shape]
    outs = reduce_generic(ctx.b, xs, index, inits, reducer, out_shapes, ctx.name, ctx.origin)
    return tuple(outs) if ctx.shape.is_tuple else outs[0]
