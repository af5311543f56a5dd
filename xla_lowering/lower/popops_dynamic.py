"""popops dynamic slicing: dynamic-slice, dynamic-update-slice, gather and scatter (PopLibs multiSlice/multiUpdate).

Every form is stated once as NumPy index maps onto one canonical shape:

  table  [B, K, W]     the operand: B batching positions x K positions of the *indexed* dimensions (the ones a
                       runtime start moves along) x W window elements (the others, row-major)
  rows   [B, G, O, W]  G index vectors per batching position, each naming O rows of the table (the window
                       positions along the indexed dimensions): the gather's result or the scatter's updates
  index  [B, G, N]     each index vector's starts along the N indexed dimensions

Layout, as PopLibs lays out a sliceable tensor: the B x W columns are cut into contiguous ranges, one range a
tile; a tile holds every table row of its columns (the indexed dimensions are whole on it), the rows of its
columns, and a copy of the index vectors it serves (a broadcast exchange of the small index tensor). One vertex
per (tile, batching position) reads its local index vectors and copies or combines whole rows of its own
columns; the only exchanges are static copy lists made here, and the rows' tile mapping follows from the
table's. The planner (``xla_lowering.mapping.slice_plan``) may also give spare tiles a share of the index
vectors with their own copy of the table (lookup split, gathers), or a part of the table's rows (row split, when
a tile cannot hold all of them): a scatter's part applies the updates that land in its rows; a gather's parts
write zeros for rows they do not hold and are merged by OR-ing their bits, which keeps every value exact.
Dimensions whose window is the whole dimension are never indexed for dynamic-slice, dynamic-update-slice and
gather: their clamped start is always 0. Scatter keeps them indexed: a window that does not fit is skipped.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from kernels import cycles as cyc
from kernels import dtypes
from kernels.program import VertexGroup

from ..hlo.ir import Shape
from ..mapping.slice_plan import plan_slice
from ..mapping.tensor import DTensor
from . import register_lowering
from .popops_reduce import reduce_rows

CHUNK = 16384            # elements a vertex moves at most (keeps the host's cores busy on big slices)
CLAMP, SKIP = 0, 1       # out-of-range starts: clamped (dynamic slices, gather) or the update skipped (scatter)
COMBINERS = {"replace": 0, "add": 1, "multiply": 2, "maximum": 3, "minimum": 4, "subtract": 5}


def _prod(xs) -> int:
    return int(np.prod(list(xs), dtype=np.int64))


def _iota(dims) -> np.ndarray:
    return np.arange(_prod(dims), dtype=np.int64).reshape(tuple(dims))


def _reorder(arr: np.ndarray, have: list, want: list) -> np.ndarray:
    """``arr`` (axes named ``have``) with axes in the order ``want``; names only in ``have`` must be axes of
    length 1 (dropped), names only in ``want`` become axes of length 1."""
    drop = tuple(0 if name not in want else slice(None) for name in have)
    assert all(arr.shape[i] == 1 for i, name in enumerate(have) if name not in want), (have, want, arr.shape)
    arr, have = arr[drop], [name for name in have if name in want]
    for name in want:
        if name not in have:
            arr, have = arr[..., None], have + [name]
    return arr.transpose([have.index(name) for name in want])


# --- the canonical form ----------------------------------------------------------------------------
@dataclass
class Canon:
    """One dynamic-slicing op in table/rows/index form (see the module docstring)."""
    nb: int
    ng: int
    nw: int
    dim_size: tuple          # per indexed dimension: its length
    win: tuple               # per indexed dimension: the window along it
    table_index: np.ndarray  # [B*K*W] flat operand element of every table element
    index_src: np.ndarray    # [B, G, N] flat element of the index source(s)
    index_which: np.ndarray | None = None   # [B, G, N] which index source (dynamic-slice starts are scalars)
    rows_map: np.ndarray | None = None      # gather: result element -> rows element; scatter: rows -> updates

    @property
    def k(self) -> int:
        return _prod(self.dim_size)

    @property
    def o(self) -> int:
        return _prod(self.win)


def _index_vectors(idx_dims, ivd, batch_pairs):
    """Index iota as [B..., G..., vector] plus the axis names of the batch positions (in the indices' order)."""
    idx = _iota(idx_dims)
    if ivd == len(idx_dims):
        idx = idx[..., None]
    idx = np.moveaxis(idx, ivd, -1)
    positions = [d for d in range(len(idx_dims)) if d != ivd]
    names = [("b", batch_pairs.index(d)) if d in batch_pairs else ("g", d) for d in positions]
    want = [("b", j) for j in range(len(batch_pairs))] + [n for n in names if n[0] == "g"]
    return _reorder(idx, names + ["vec"], want + ["vec"]), names, want


def _table(op_dims, batch, indexed, window, box) -> np.ndarray:
    """Flat operand element of every table element: [batching..., indexed..., window box...]."""
    op = _iota(op_dims)[tuple(slice(0, box[d]) if d in window else slice(None) for d in range(len(op_dims)))]
    return op.transpose(list(batch) + indexed + window).reshape(-1)


def gather_canon(op_dims, idx_dims, out_dims, a) -> Canon:
    sizes, start_map, collapsed = a["slice_sizes"], list(a["start_index_map"]), a["collapsed_slice_dims"]
    op_batch = list(a.get("operand_batching_dims", ()))
    idx, names, gnames = _index_vectors(idx_dims, a["index_vector_dim"], list(a.get("start_indices_batching_dims", ())))
    r = len(op_dims)
    indexed = [d for d in range(r) if d in start_map and sizes[d] < op_dims[d]]
    window = [d for d in range(r) if d not in indexed and d not in op_batch]
    nb = _prod(op_dims[d] for d in op_batch)
    ng = _prod(idx.shape[len(op_batch):-1])
    index_src = idx[..., [start_map.index(d) for d in indexed]].reshape(nb, ng, len(indexed))
    # rows [B, G, O, W] with named axes -> the result's axis order (collapsed dims have length 1 and go)
    rows_names = gnames + [("op", d) for d in indexed + window]
    rows = _iota([idx.shape[i] for i in range(len(gnames))] + [sizes[d] for d in indexed + window])
    offset = [("op", d) for d in range(r) if d not in collapsed and d not in op_batch]
    out_names, it_b, it_o = [], iter(names), iter(offset)
    for pos in range(len(out_dims)):
        out_names.append(next(it_o) if pos in a["offset_dims"] else next(it_b))
    rows_map = _reorder(rows, rows_names, out_names).reshape(-1)
    return Canon(nb, ng, _prod(sizes[d] for d in window), tuple(op_dims[d] for d in indexed),
                 tuple(sizes[d] for d in indexed), _table(op_dims, op_batch, indexed, window, sizes), index_src,
                 rows_map=rows_map)


def scatter_canon(op_dims, idx_dims, upd_dims, a) -> Canon:
    uwd, inserted = list(a["update_window_dims"]), a["inserted_window_dims"]
    sdod, in_batch = list(a["scatter_dims_to_operand_dims"]), list(a.get("input_batching_dims", ()))
    idx, names, gnames = _index_vectors(idx_dims, a["index_vector_dim"],
                                        list(a.get("scatter_indices_batching_dims", ())))
    r = len(op_dims)
    win_dims = [d for d in range(r) if d not in inserted and d not in in_batch]
    box = [1] * r
    for d, u in zip(win_dims, uwd):
        box[d] = upd_dims[u]
    indexed = [d for d in range(r) if d in sdod]          # every index matters: a window that does not fit is skipped
    window = [d for d in range(r) if d not in indexed and d not in in_batch]
    nb = _prod(op_dims[d] for d in in_batch)
    ng = _prod(idx.shape[len(in_batch):-1])
    index_src = idx[..., [sdod.index(d) for d in indexed]].reshape(nb, ng, len(indexed))
    # the updates' axes: scatter dims follow the index vectors' batch positions, window dims the operand's
    upd_names, it_b = [], iter(names)
    for u in range(len(upd_dims)):
        upd_names.append(("op", win_dims[uwd.index(u)]) if u in uwd else next(it_b))
    rows_names = gnames + [("op", d) for d in indexed + window]
    rows_map = _reorder(_iota(upd_dims), upd_names, rows_names).reshape(-1)
    return Canon(nb, ng, _prod(box[d] for d in window), tuple(op_dims[d] for d in indexed),
                 tuple(box[d] for d in indexed), _table(op_dims, in_batch, indexed, window, box), index_src,
                 rows_map=rows_map)


def _start_sources(starts, rank):
    """(flat element, which source) of each dimension's start: scalar starts, or the old single vector form."""
    if len(starts) == 1 and starts[0].shape.rank == 1:
        return np.arange(rank, dtype=np.int64), np.zeros(rank, np.int64)
    return np.zeros(rank, np.int64), np.arange(rank, dtype=np.int64)


def dynamic_canon(op_dims, win_dims, starts) -> Canon:
    """dynamic-slice (window = slice sizes) and dynamic-update-slice (window = the update's dims); ``rows_map``
    in the scatter sense (rows element <- window element)."""
    r = len(op_dims)
    indexed = [d for d in range(r) if win_dims[d] < op_dims[d]]
    window = [d for d in range(r) if d not in indexed]
    elem, which = _start_sources(starts, r)
    names = [("op", d) for d in range(r)]
    rows_names = [("op", d) for d in indexed + window]
    rows = _reorder(_iota(win_dims), names, rows_names).reshape(-1)       # rows element <- window element
    canon = Canon(1, 1, _prod(win_dims[d] for d in window), tuple(op_dims[d] for d in indexed),
                  tuple(win_dims[d] for d in indexed), _table(op_dims, [], indexed, window, win_dims),
                  elem[indexed].reshape(1, 1, -1), which[indexed].reshape(1, 1, -1), rows_map=rows)
    return canon


# --- layout ---------------------------------------------------------------------------------------
@dataclass
class Segments:
    """The plan: each tile's share of the work, one segment per (tile, batching position).

    A tile takes a range of columns (``w0``, ``width`` within batching position ``b``), a range of index vectors
    (``g0``, ``gn``: the lookup split, gathers only) and a range of table rows (``k0``, ``kn``: the row split, when
    one tile cannot hold every row of its columns). ``rep`` is the lookup split's copy of the table the tile
    holds, ``part`` the row split's part.
    """
    tile: np.ndarray
    b: np.ndarray
    w0: np.ndarray
    width: np.ndarray
    g0: np.ndarray
    gn: np.ndarray
    k0: np.ndarray
    kn: np.ndarray
    rep: np.ndarray
    part: np.ndarray
    reps: int
    parts: int


def _run_length(index: np.ndarray, nw: int) -> float:
    """Mean length of the runs of consecutive elements along the last axis of an [..., W] index map."""
    rows = index.reshape(-1, nw)
    return rows.size / max(1, rows.shape[0] + int(np.count_nonzero(np.diff(rows, axis=1) != 1)))


def plan(device, c: Canon, dtype: str, idx_dtype: str, name: str, gather: bool, combine: bool) -> Segments:
    """Segments of the planner's partition (``xla_lowering.mapping.slice_plan``): one unit (column piece, table
    copy, row part) a tile, spread over the device; a piece spanning batching positions makes one segment each."""
    T = device.num_tiles
    cols = c.nb * c.nw
    sp = plan_slice(device, cols, c.k, c.ng, c.o, c.index_src.shape[2], dtype, dtypes.itemsize(dtype),
                    dtypes.itemsize(idx_dtype), _run_length(c.table_index, c.nw),
                    1.0 if gather else _run_length(c.rows_map, c.nw), gather, combine)
    per_tile, ksize, gsize = sp.width, sp.k_rows, sp.lookups
    used, parts, reps = -(-cols // per_tile), -(-c.k // ksize), -(-c.ng // gsize)
    units = used * reps * parts
    first = zlib.crc32(name.encode()) % T
    unit_tile = (first + np.arange(units, dtype=np.int64) * T // units) % T
    cuts = np.union1d(np.arange(used, dtype=np.int64) * per_tile, np.arange(c.nb, dtype=np.int64) * c.nw)
    ends = np.append(cuts[1:], cols)
    n = reps * parts
    piece, start, width = np.repeat(cuts // per_tile, n), np.repeat(cuts, n), np.repeat(ends - cuts, n)
    rep = np.tile(np.repeat(np.arange(reps, dtype=np.int64), parts), len(cuts))
    part = np.tile(np.arange(parts, dtype=np.int64), len(cuts) * reps)
    g0, k0 = rep * gsize, part * ksize
    return Segments(unit_tile[(piece * reps + rep) * parts + part], start // c.nw, start % c.nw, width,
                    g0, np.minimum(gsize, c.ng - g0), k0, np.minimum(ksize, c.k - k0), rep, part, reps, parts)


def segment_tensor(b, seg: Segments, copy: np.ndarray, nb: int, n_rows: int, first: np.ndarray, count: np.ndarray,
                   nw: int, dtype: str, name: str, category: str, origin: str) -> tuple[DTensor, np.ndarray]:
    """A [copies, B, n_rows, W] tensor laid out by segments: segment s holds rows first[s] .. first[s] + count[s]
    of its columns of copy ``copy[s]``. Returns it and each segment's base address. A segment's rows are
    consecutive in its tile's block, ``width`` elements apart (checked)."""
    owner = np.repeat(np.arange(len(count)), count)
    head = np.cumsum(count) - count
    r = np.arange(len(owner), dtype=np.int64) - head[owner]
    starts = ((copy[owner] * nb + seg.b[owner]) * n_rows + first[owner] + r) * nw + seg.w0[owner]
    # one region per row, except that rows of whole width follow each other: one region for all of them
    whole = seg.width[owner] == nw
    region = np.ones(len(owner), bool)
    region[1:] = ~(whole[1:] & (owner[1:] == owner[:-1]))
    at = np.flatnonzero(region)
    counts = np.add.reduceat(seg.width[owner], at) if len(at) else at
    copies = int(copy.max()) + 1
    t = b.add_tensor(Shape(dtype, (copies * nb * n_rows * nw,)), seg.tile[owner[at]], starts[at], counts, name,
                     category, origin)
    syms = t.element_syms()[starts]
    base = syms[head]
    assert np.array_equal(syms, base[owner] + r * seg.width[owner] * t.itemsize), "segment rows not contiguous"
    return t, base


def local_indices(b, seg: Segments, c: Canon, sources: list[DTensor], name: str, origin: str):
    """Each segment's index vectors copied to its tile (a broadcast of the small index tensor); base addresses."""
    n_idx = c.index_src.shape[2]
    owner = np.repeat(np.arange(len(seg.gn)), seg.gn)
    g = seg.g0[owner] + np.arange(len(owner)) - np.repeat(np.cumsum(seg.gn) - seg.gn, seg.gn)
    counts = seg.gn * n_idx
    starts = np.cumsum(counts) - counts
    t = b.add_tensor(Shape(sources[0].dtype, (int(counts.sum()),)), seg.tile, starts, counts, f"{name}/indices",
                     "temporary", origin)
    which = None if c.index_which is None else c.index_which[seg.b[owner], g].reshape(-1)
    b.rearrange(t, sources, c.index_src[seg.b[owner], g].reshape(-1), which, name=f"{name}/broadcast_indices",
                origin=origin)
    return t, t.element_syms()[starts]


def _split(lengths: np.ndarray, chunk: np.ndarray):
    """(owner, offset, count) of pieces of at most ``chunk`` cutting each of ``lengths``."""
    n = np.maximum(1, -(-lengths // chunk))
    owner = np.repeat(np.arange(len(lengths)), n)
    k = np.arange(len(owner)) - np.repeat(np.cumsum(n) - n, n)
    offset = k * chunk[owner]
    return owner, offset, np.minimum(chunk[owner], lengths[owner] - offset)


def _codelet_params(c: Canon, idx_dtype: str, itemsize: int) -> dict:
    step = np.array([_prod(c.dim_size[j + 1:]) for j in range(len(c.dim_size))], np.int64)
    offsets = (np.indices(c.win).reshape(len(c.win), -1).T @ step) if c.win else np.zeros(1, np.int64)
    return dict(esz=itemsize, idx_dt=dtypes.code(idx_dtype), idx_sz=dtypes.itemsize(idx_dtype),
                dim_size=np.array(c.dim_size, np.int64), win=np.array(c.win, np.int64), row_step=step,
                oi_off=np.ascontiguousarray(offsets, dtype=np.int64))


def _merge_parts(b, partials: DTensor, parts: int, name: str, origin: str) -> DTensor:
    """Row parts of a gather: each part wrote the rows it holds and zeros elsewhere, so OR-ing the parts' bits
    gives every row exactly (a popops reduce of the bit patterns)."""
    n = partials.size // parts
    bits = {1: "u8", 2: "u16", 4: "u32", 8: "u64"}[partials.itemsize]
    zero = b.constant(np.zeros((), dtypes.NUMPY[bits]), Shape(bits, ()), f"{name}/zero", origin)
    index = np.arange(parts * n, dtype=np.int64).reshape(parts, n).T
    merged = reduce_rows(b, partials.view(Shape(bits, (partials.size,))), index, zero, "or", Shape(bits, (n,)),
                         f"{name}/merge_parts", origin)
    return merged.view(Shape(partials.dtype, (n,)))


def dynamic_rows(b, c: Canon, table_src: DTensor, index_sources: list[DTensor], name: str, origin: str,
                 updates: DTensor | None = None, op: str = "replace", mode: int = CLAMP) -> DTensor:
    """Gather (``updates`` None): a new rows tensor [B, G, O, W]. Scatter: a new table [B, K, W] (a copy of
    ``table_src``) with the updates applied by ``op``."""
    gather = updates is None
    isz, dtype = table_src.itemsize, table_src.dtype
    idx_dtype = index_sources[0].dtype if index_sources else "s32"
    seg = plan(b.device, c, dtype, idx_dtype, name, gather, combine=not gather and op != "replace")
    table, table_base = segment_tensor(b, seg, seg.rep, c.nb, c.k, seg.k0, seg.kn, c.nw, dtype, f"{name}/table",
                                       "temporary" if gather else "activation", origin)
    b.rearrange(table, [table_src], np.tile(c.table_index, seg.reps), name=f"{name}/layout", origin=origin)
    # gathers: each row part writes its own partial rows; scatters: each row part needs every update of its columns
    rows, rows_base = segment_tensor(b, seg, seg.part, c.nb, c.ng * c.o, seg.g0 * c.o, seg.gn * c.o, c.nw, dtype,
                                     f"{name}/rows", "activation" if gather else "temporary", origin)
    if not gather:
        b.rearrange(rows, [updates], np.tile(c.rows_map, seg.parts), name=f"{name}/updates", origin=origin)
    n_idx = c.index_src.shape[2]
    if n_idx:
        _, idx_base = local_indices(b, seg, c, index_sources, name, origin)
    else:                                   # nothing is indexed: the vertices never read an index
        idx_base = table_base
    params = _codelet_params(c, idx_dtype, isz)
    # vertices: cut a segment's columns (and, for a gather, its index vectors) into pieces of <= CHUNK elements
    col_chunk = np.maximum(1, CHUNK // np.maximum(1, seg.gn * c.o))
    s, w_off, w_cnt = _split(seg.width, col_chunk)
    g_chunk = np.maximum(1, CHUNK // np.maximum(1, c.o * w_cnt)) if gather else seg.gn[s]
    p, g_off, g_cnt = _split(seg.gn[s], g_chunk)
    s, w_off, w_cnt = s[p], w_off[p], w_cnt[p]
    stride = seg.width[s]
    records = np.stack([table_base[s] + w_off * isz,
                        rows_base[s] + (g_off * c.o * stride + w_off) * isz,
                        idx_base[s] + g_off * n_idx * params["idx_sz"],
                        g_cnt, w_cnt, stride, seg.k0[s], seg.kn[s]], axis=1).astype(np.int64)
    cycles = cyc.dynamic_slice_cycles(b.device, g_cnt, n_idx, c.o, w_cnt, dtype, not gather and op != "replace")
    if gather:
        group = VertexGroup("dyn_gather", records, (0, 1, 2), seg.tile[s], cycles, params)
    else:
        group = VertexGroup("dyn_scatter", records, (0, 1, 2), seg.tile[s], cycles,
                            dict(params, dt=dtypes.code(dtype), op=COMBINERS[op], mode=mode))
    b.execute(f"{name}/{'multiSlice' if gather else 'multiUpdate'}", [group], origin)
    if not gather:
        return table
    return _merge_parts(b, rows, seg.parts, name, origin) if seg.parts > 1 else rows


def _finish_gather(ctx, rows: DTensor, rows_map: np.ndarray) -> DTensor:
    """The result in the op's element order: the rows themselves when the orders agree, else a copy."""
    if np.array_equal(rows_map, np.arange(len(rows_map))):
        return rows.view(ctx.shape, ctx.name)
    out = ctx.b.linear(ctx.shape, ctx.name, "activation", ctx.origin)
    return ctx.b.rearrange(out, [rows], rows_map, name=f"{ctx.name}/order", origin=ctx.origin)


def _finish_update(ctx, operand: DTensor, table: DTensor, table_index: np.ndarray) -> DTensor:
    """The updated operand: the table where it covers the operand, the operand's own elements elsewhere."""
    if np.array_equal(table_index, np.arange(operand.size)):
        return table.view(ctx.shape, ctx.name)
    index = np.arange(operand.size, dtype=np.int64)
    which = np.zeros(operand.size, np.int64)
    index[table_index] = np.arange(len(table_index))
    which[table_index] = 1
    out = ctx.b.linear(ctx.shape, ctx.name, "activation", ctx.origin)
    return ctx.b.rearrange(out, [operand, table], index, which, name=f"{ctx.name}/order", origin=ctx.origin)


def _empty(ctx) -> DTensor:
    return ctx.b.linear(ctx.shape, ctx.name, "activation", ctx.origin)


def _check_index_types(ctx, indices):
    for t in indices:
        if t.dtype not in ("s8", "u8", "s16", "u16", "s32", "u32", "s64", "u64"):
            raise ctx.unsupported(f"indices of element type {t.dtype}")
    if len({t.dtype for t in indices}) > 1:
        raise ctx.unsupported("start indices of different element types")


# --- rules ----------------------------------------------------------------------------------------
@register_lowering("dynamic-slice")
def lower_dynamic_slice(ctx, x, *starts):
    _check_index_types(ctx, starts)
    if ctx.shape.size == 0:
        return _empty(ctx)
    c = dynamic_canon(x.shape.dims, tuple(ctx.inst.attrs["slice_sizes"]), starts)
    rows = dynamic_rows(ctx.b, c, x, list(starts), ctx.name, ctx.origin)
    return _finish_gather(ctx, rows, np.argsort(c.rows_map))


@register_lowering("dynamic-update-slice")
def lower_dynamic_update_slice(ctx, x, update, *starts):
    _check_index_types(ctx, starts)
    if update.size == 0 or x.size == 0:
        return x.view(ctx.shape, ctx.name)
    c = dynamic_canon(x.shape.dims, update.shape.dims, starts)
    table = dynamic_rows(ctx.b, c, x, list(starts), ctx.name, ctx.origin, updates=update, mode=CLAMP)
    return _finish_update(ctx, x, table, c.table_index)


@register_lowering("gather")
def lower_gather(ctx, x, indices):
    _check_index_types(ctx, [indices])
    if ctx.shape.size == 0:
        return _empty(ctx)
    if x.size == 0:
        raise ctx.unsupported("gather from an empty operand")
    c = gather_canon(x.shape.dims, indices.shape.dims, ctx.shape.dims, ctx.inst.attrs)
    rows = dynamic_rows(ctx.b, c, x, [indices], ctx.name, ctx.origin)
    return _finish_gather(ctx, rows, c.rows_map)


def scatter_combiner(comp) -> str | None:
    """'replace' when ``comp`` returns its second parameter ('keep': its first), the op for op(p0, p1) of
    add/multiply/maximum/minimum (either order), and/or (pred), subtract (p0 - p1: tensor_scatter_nd_sub)."""
    params, root = comp.parameters, comp.root
    if len(params) != 2:
        return None
    if root is params[1]:
        return "replace"
    if root is params[0]:
        return "keep"
    if root.opcode in ("add", "multiply", "maximum", "minimum", "and", "or") and len(root.operands) == 2 \
            and set(root.operands) == set(params):
        return root.opcode
    if root.opcode == "subtract" and list(root.operands) == list(params):
        return "subtract"
    return None


@register_lowering("scatter")
def lower_scatter(ctx, *operands):
    if len(operands) != 3:
        raise ctx.unsupported("scatter of several operands at once (variadic scatter)")
    x, indices, updates = operands
    _check_index_types(ctx, [indices])
    op = scatter_combiner(ctx.inst.called["to_apply"])
    if op in ("and", "or"):
        if x.dtype != "pred":
            raise ctx.unsupported(f"scatter combining by bitwise '{op}' of {x.dtype}")
        op = "minimum" if op == "and" else "maximum"    # on pred (0 or 1) and/or are min/max
    if op is None:
        raise ctx.unsupported("scatter combiners other than add/multiply/maximum/minimum/subtract or replacement "
                              "(a to_apply returning its second parameter)")
    if op == "keep" or updates.size == 0 or x.size == 0:
        return x.view(ctx.shape, ctx.name)      # keeps the operand: nothing to do
    c = scatter_canon(x.shape.dims, indices.shape.dims, updates.shape.dims, ctx.inst.attrs)
    table = dynamic_rows(ctx.b, c, x, [indices], ctx.name, ctx.origin, updates=updates, op=op, mode=SKIP)
    return _finish_update(ctx, x, table, c.table_index)
