"""poplin: dot (matmul with batch and contracting dimensions) through the matmul planner.

The operands are copied into per-tile blocks in the planner's layout (the exchange), each tile multiplies its
blocks with one AMP vertex per batch element, and the partials are either the result (K not split) or
reduced over the K parts by the reduction planner.
"""
from __future__ import annotations

import numpy as np

from kernels import cycles as cyc
from kernels import dtypes
from kernels.program import Copy, VertexGroup

from ..hlo.ir import Shape
from ..mapping.matmul_plan import MEMORY_FRACTION, Contiguity, plan_matmul
from ..mapping.tensor import DTensor, plain_copy_rows
from . import register_lowering
from .popops_reduce import REDUCE_OPS, reduce_rows


def _canonical(dims, batch, contract, lhs: bool) -> np.ndarray:
    """Index map of an operand as [B, M, K] (lhs) or [B, K, N] (rhs)."""
    free = [d for d in range(len(dims)) if d not in batch and d not in contract]
    order = list(batch) + (free + list(contract) if lhs else list(contract) + free)
    iota = np.arange(int(np.prod(dims, dtype=np.int64)), dtype=np.int64).reshape(dims).transpose(order)
    size = lambda ds: int(np.prod([dims[d] for d in ds], dtype=np.int64))
    B, F, C = size(batch), size(free), size(contract)
    return iota.reshape((B, F, C) if lhs else (B, C, F))


def _runs_along(index: np.ndarray, axis: int) -> int:
    """How many neighbours along ``axis`` are also neighbours in memory (a sample is enough to decide)."""
    sample = index[:, :64, :64]
    return int(np.count_nonzero(np.diff(sample, axis=axis) == 1))


def _contiguity(lhs: DTensor, A, rhs: DTensor, Bm: np.ndarray) -> Contiguity:
    """How the operands' blocks would break into runs: the fraction of neighbours along each axis of a sample of
    each index map whose elements are neighbours in the tiles' memory (same block, next address), and of rows
    (columns) whose first element follows the previous one's last. ``A``: an index map or a conv's Patches."""
    def addresses(t: DTensor, index: np.ndarray) -> np.ndarray:
        addr = t.element_syms()[index]
        addr[index < 0] = -(1 << 62)            # a padding zero is nobody's neighbour
        return addr

    def along(t: DTensor, index: np.ndarray, axis: int) -> float:
        sample = index[:, :64, :64]
        if sample.shape[axis] < 2:
            return 1.0
        return float(np.mean(np.diff(addresses(t, sample), axis=axis) == t.itemsize))

    def wrap(t: DTensor, first: np.ndarray, last: np.ndarray) -> float:
        """Fraction of lines whose first element follows the previous line's last (first/last: [B, lines])."""
        if first.shape[1] < 2:
            return 1.0
        return float(np.mean(addresses(t, first[:, 1:]) - addresses(t, last[:, :-1]) == t.itemsize))

    patches = not isinstance(A, np.ndarray)
    a = A.sample() if patches else A
    a_wrap = (0.0, 0.0) if patches else (wrap(lhs, A[:, :, 0], A[:, :, -1]), wrap(lhs, A[:, 0, :], A[:, -1, :]))
    return Contiguity(along(lhs, a, 2), along(lhs, a, 1), along(rhs, Bm, 1), along(rhs, Bm, 2), *a_wrap,
                      wrap(rhs, Bm[:, 0, :], Bm[:, -1, :]), wrap(rhs, Bm[:, :, 0], Bm[:, :, -1]))


def _pad(index: np.ndarray, shape) -> np.ndarray:
    out = np.full(shape, -1, np.int64)
    out[tuple(slice(0, s) for s in index.shape)] = index
    return out


def _stage(b, operand: DTensor, blocks: np.ndarray, tiles, per_tile: int, name: str, origin: str) -> DTensor:
    """Copy ``operand`` into per-tile blocks (block index -1: zero padding)."""
    T = len(tiles)
    staged = b.add_tensor(Shape(operand.dtype, (T * per_tile,)), tiles, np.arange(T) * per_tile,
                          np.full(T, per_tile), name, "temporary", origin)
    flat = blocks.reshape(-1)
    pad = flat < 0
    if pad.any():
        zero = b.constant(np.zeros((), operand.shape.np_dtype), Shape(operand.dtype, ()), f"{name}/zero", origin)
        b.rearrange(staged, [operand, zero], np.where(pad, 0, flat), pad, name=name, origin=origin)
    else:
        b.rearrange(staged, [operand], flat, name=name, origin=origin)
    return staged


def batched_matmul(b, lhs: DTensor, A, rhs: DTensor, Bm: np.ndarray, out_shape: Shape, name: str,
                   origin: str = "") -> DTensor:
    """out[b, m, n] = sum_k lhs[A[b, m, k]] * rhs[Bm[b, k, n]], as a tensor of ``out_shape`` (row-major B*M*N).

    ``A`` ([B, M, K]) and ``Bm`` ([B, K, N]) are index maps into the operands' elements; -1 reads zero. Any
    contraction whose operands are static gathers of its inputs (dot, convolution via its patches) is this.
    ``A`` may instead be a convolution's ``Patches``: each tile then receives the input box its block of patches
    reads and a conv vertex reads the patches from it (when those boxes are smaller than the blocks would be).
    """
    patches = None if isinstance(A, np.ndarray) else A
    B, M, K = (patches.G, patches.M, patches.K) if patches is not None else A.shape
    N = Bm.shape[2]
    in_dtype = lhs.dtype
    if out_shape.size == 0:
        return b.linear(out_shape, name, "activation", origin)
    if K == 0:                   # an empty contraction: every output is zero
        return b.constant(np.zeros(out_shape.dims, out_shape.np_dtype), out_shape, name, origin)
    pdt = "f32" if in_dtype in ("f16", "f32") else ("f64" if in_dtype == "f64" else out_shape.dtype)
    p = plan_matmul(b.device, B, M, N, K, lhs.itemsize, in_dtype, _contiguity(lhs, A, rhs, Bm))
    T = p.tiles
    # a matmul on fewer tiles than the device has starts at a different tile each time, so that the tiles that
    # hold blocks (and their copy descriptors) are not always the same ones
    first = (next(b._rotate) * 97) % b.num_tiles if T < b.num_tiles else 0
    tiles = (first + (np.arange(T, dtype=np.int64) * b.num_tiles) // T) % b.num_tiles
    # each block is stored in whichever order keeps the operand's contiguous runs (the AMP reads both)
    tb = _runs_along(Bm, 1) > _runs_along(Bm, 2)
    # one vertex per (tile, batch element of its block); tiles in plan order (pb, pm, pn, pk)
    t = np.repeat(np.arange(T), p.Bb)
    bi = np.tile(np.arange(p.Bb), T)
    tb_, tm, _, tk = np.unravel_index(t, (p.pb, p.pm, p.pn, p.pk))
    conv = None if patches is None else _stage_patches(b, lhs, patches, p, tiles, t, tb_ * p.Bb + bi, tm, tk, name,
                                                       origin)
    if patches is not None and conv is None:
        A = patches.full_map()
    Bm = _pad(Bm, (p.pb * p.Bb, p.pk * p.Kb, p.pn * p.Nb)).reshape(p.pb, p.Bb, p.pk, p.Kb, p.pn, p.Nb)
    Bm = Bm.transpose(0, 4, 2, 1, 5, 3) if tb else Bm.transpose(0, 4, 2, 1, 3, 5)
    Bm = np.broadcast_to(Bm[:, None], (p.pb, p.pm, p.pn, p.pk) + Bm.shape[3:])
    b_st = _stage(b, rhs, Bm, tiles, p.Bb * p.Kb * p.Nb, f"{name}/rhs_blocks", origin)
    per_out = p.Bb * p.Mb * p.Nb
    partials = b.add_tensor(Shape(pdt, (T * per_out,)), tiles, np.arange(T) * per_out, np.full(T, per_out),
                            f"{name}/partials", "activation", origin)
    isz, psz = lhs.itemsize, dtypes.itemsize(pdt)
    b_addr = b_st.syms[t] + bi * p.Kb * p.Nb * isz
    c_addr = partials.syms[t] + bi * p.Mb * p.Nb * psz
    shape_cols = [np.full(len(t), p.Mb), np.full(len(t), p.Nb), np.full(len(t), p.Kb)]
    params = dict(in_dt=dtypes.code(in_dtype), out_dt=dtypes.code(pdt), tb=bool(tb))
    if conv is not None:
        keep, box_addr, wl_addr, box_elems = conv
        records = np.stack([box_addr, b_addr[keep], c_addr[keep], *(c[keep] for c in shape_cols), wl_addr,
                            box_elems], axis=1).astype(np.int64)
        group = VertexGroup("conv", records, addr_cols=(0, 1, 2, 6), tiles=tiles[t[keep]],
                            cycles=cyc.matmul_cycles(b.device, shape_cols[0][keep], shape_cols[1][keep],
                                                     shape_cols[2][keep], in_dtype), params=params)
    else:
        ta = _runs_along(A, 1) > _runs_along(A, 2)
        A = _pad(A, (p.pb * p.Bb, p.pm * p.Mb, p.pk * p.Kb)).reshape(p.pb, p.Bb, p.pm, p.Mb, p.pk, p.Kb)
        A = A.transpose(0, 2, 4, 1, 5, 3) if ta else A.transpose(0, 2, 4, 1, 3, 5)
        A = np.broadcast_to(A[:, :, None], (p.pb, p.pm, p.pn, p.pk) + A.shape[3:])
        a_st = _stage(b, lhs, A, tiles, p.Bb * p.Mb * p.Kb, f"{name}/lhs_blocks", origin)
        records = np.stack([a_st.syms[t] + bi * p.Mb * p.Kb * isz, b_addr, c_addr, *shape_cols],
                           axis=1).astype(np.int64)
        group = VertexGroup("matmul", records, addr_cols=(0, 1, 2), tiles=tiles[t],
                            cycles=cyc.matmul_cycles(b.device, *shape_cols, in_dtype), params=dict(params, ta=bool(ta)))
    b.execute(name, [group], origin)

    # where output element (kk, b, m, n) sits in the partials
    where = np.arange(partials.size, dtype=np.int64).reshape(p.pb, p.pm, p.pn, p.pk, p.Bb, p.Mb, p.Nb)
    where = where.transpose(3, 0, 4, 1, 5, 2, 6).reshape(p.pk, p.pb * p.Bb, p.pm * p.Mb, p.pn * p.Nb)
    where = where[:, :B, :M, :N].reshape(p.pk, -1)
    if p.pk == 1 and pdt == out_shape.dtype:
        return DTensor.from_element_syms(out_shape, partials.element_syms()[where[0]], b.block_tiles(), name,
                                         "activation", origin)
    if p.pk == 1:
        zero = b.constant(np.zeros((), dtypes.NUMPY[pdt]), Shape(pdt, ()), f"{name}/zero_acc", origin)
        return reduce_rows(b, partials, np.ascontiguousarray(where.T), zero, "add", out_shape, f"{name}/reduce",
                           origin)
    return _reduce_k_parts(b, partials, p, tiles, where[0], out_shape, name, origin)


def _reduce_k_parts(b, partials: DTensor, p, tiles, where0: np.ndarray, out_shape: Shape, name: str,
                    origin: str) -> DTensor:
    """Sum the pk partial blocks of each output block where they are: the pk tiles of a block each take one
    chunk of the block (chunk j to the tile of K part j), receive that chunk of the other parts' partials in one
    run from each tile, and add them in K-part order. The result stays spread over the same tiles, in chunks.

    ``where0``: the partials element of K part 0 of every output element (row-major output order)."""
    per_out = p.Bb * p.Mb * p.Nb
    pk, T = p.pk, p.tiles
    cs = -(-per_out // pk)                            # chunk length (the last may be shorter)
    lens = np.minimum(cs, per_out - np.arange(pk) * cs).clip(0)
    lens_t = np.tile(lens, T // pk)                   # chunk reduced on each tile (tile order: K part innermost)
    psz = partials.itemsize
    staged = b.add_tensor(Shape(partials.dtype, (T * pk * cs,)), tiles, np.arange(T) * pk * cs, np.full(T, pk * cs),
                          f"{name}/k_parts", "temporary", origin)
    # staged[tile (grp, j)][i, :lens[j]] = partials[tile (grp, i)][j * cs:(j * cs + lens[j])]
    grp, j, i = (a.reshape(-1) for a in np.meshgrid(np.arange(T // pk), np.arange(pk), np.arange(pk),
                                                      indexing="ij"))
    n = lens[j]
    dst = staged.syms[grp * pk + j] + i * cs * psz
    src = partials.syms[grp * pk + i] + j * cs * psz
    keep = n > 0
    rows = np.stack([dst[keep], src[keep], n[keep] * psz], axis=1).astype(np.int64)
    b.add(Copy(f"{name}/k_parts", plain_copy_rows(rows), origin))
    osz = out_shape.itemsize
    used = np.flatnonzero(lens_t > 0)                 # tiles with a chunk to reduce
    nu = len(used)
    lu = lens_t[used]
    sums = b.add_tensor(Shape(out_shape.dtype, (int(lu.sum()),)), tiles[used], np.cumsum(lu) - lu, lu,
                        f"{name}/sums", "activation", origin)
    # column layout: row r of the chunk is element r of every K part's partials (cs apart), added in part order
    records = np.stack([staged.syms[used], sums.syms, lu, np.full(nu, pk), np.ones(nu, np.int64), np.full(nu, cs),
                        np.full(nu, -1)], axis=1).astype(np.int64)
    b.execute(f"{name}/reduce", [VertexGroup(
        "reduce", records, addr_cols=(0, 1), tiles=tiles[used],
        cycles=cyc.reduce_cycles(b.device, lu, np.full(nu, pk), partials.dtype),
        params=dict(op=REDUCE_OPS["add"], in_dt=dtypes.code(partials.dtype), out_dt=dtypes.code(out_shape.dtype),
                    init_dt=dtypes.code(partials.dtype)))], origin)
    # output element e: offset o in its block on the block's K-part-0 tile t0 -> element o % cs of tile t0 + o // cs
    t0, o = where0 // per_out, where0 % per_out
    region = np.full(T, -1, np.int64)
    region[used] = np.arange(nu)
    syms = sums.syms[region[t0 + o // cs]] + (o % cs) * osz
    return DTensor.from_element_syms(out_shape, syms, b.block_tiles(), name, "activation", origin)


def _stage_patches(b, x: DTensor, patches, p, tiles, t, g, tm, tk, name: str, origin: str):
    """Give every conv vertex its input box and worklists; None when the boxes would not be smaller than the
    blocks of patches they replace (e.g. a window much larger than its stride), so im2col blocks are used.

    Returns (vertices kept: those of real batch elements, box address, worklist address, box elements)."""
    keep = g < patches.G
    # a tile's boxes may take what the planner's budget for its blocks leaves over, besides their own blocks' share
    spare = max(0, int(b.device.usable_tile_memory * MEMORY_FRACTION) - p.bytes_per_tile) // (x.itemsize * p.Bb)
    got = patches.blocks(g[keep], tm[keep], tk[keep], p.Mb, p.Kb, limit=int(keep.sum()) * p.Mb * p.Kb,
                         box_limit=p.Mb * p.Kb + spare)
    if got is None:
        return None
    index, start, size, moff, koff = got
    vt = tiles[t[keep]]
    boxes = b.add_tensor(Shape(x.dtype, (len(index),)), vt, start, size, f"{name}/patch_boxes", "temporary", origin)
    pad = index < 0
    if pad.any():
        zero = b.constant(np.zeros((), x.shape.np_dtype), Shape(x.dtype, ()), f"{name}/patch_boxes/zero", origin)
        b.rearrange(boxes, [x, zero], np.where(pad, 0, index), pad, name=f"{name}/patch_boxes", origin=origin)
    else:
        b.rearrange(boxes, [x], index, name=f"{name}/patch_boxes", origin=origin)
    # the worklists are constants in each vertex's tile memory: moff [Mb] then koff [Kb], int32
    n = p.Mb + p.Kb
    V = len(vt)
    wl = b.add_tensor(Shape("s32", (V * n,)), vt, np.arange(V) * n, np.full(V, n), f"{name}/worklists", "constant",
                      origin)
    b.constant_inits.append((wl, np.concatenate([moff, koff], axis=1).astype(np.int32).reshape(-1)))
    return keep, boxes.syms, wl.syms, size


@register_lowering("dot")
def lower_dot(ctx, lhs: DTensor, rhs: DTensor):
    a = ctx.inst.attrs
    if rhs.dtype != lhs.dtype:
        raise ctx.unsupported(f"dot of {lhs.dtype} and {rhs.dtype} operands")
    A = _canonical(lhs.shape.dims, a.get("lhs_batch_dims", ()), a.get("lhs_contracting_dims", ()), True)
    Bm = _canonical(rhs.shape.dims, a.get("rhs_batch_dims", ()), a.get("rhs_contracting_dims", ()), False)
    return batched_matmul(ctx.b, lhs, A, rhs, Bm, ctx.shape, ctx.name, ctx.origin)
