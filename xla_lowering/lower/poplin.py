"""poplin: dot (matmul with batch and contracting dimensions) through the matmul planner.

The operands are copied into per-tile blocks in the planner's layout (the exchange), each tile multiplies its
blocks with one AMP vertex per batch element, and the partials are either the result (K not split) or
reduced over the K parts by the reduction planner.
"""
from __future__ import annotations

import numpy as np

from kernels import cycles as cyc
from kernels import dtypes
from kernels.program import VertexGroup

from ..hlo.ir import Shape
from ..mapping.matmul_plan import plan_matmul
from ..mapping.tensor import DTensor
from . import register_lowering
from .popops_reduce import reduce_rows


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


def batched_matmul(b, lhs: DTensor, A: np.ndarray, rhs: DTensor, Bm: np.ndarray, out_shape: Shape, name: str,
                   origin: str = "") -> DTensor:
    """out[b, m, n] = sum_k lhs[A[b, m, k]] * rhs[Bm[b, k, n]], as a tensor of ``out_shape`` (row-major B*M*N).

    ``A`` ([B, M, K]) and ``Bm`` ([B, K, N]) are index maps into the operands' elements; -1 reads zero. Any
    contraction whose operands are static gathers of its inputs (dot, convolution via its patches) is this.
    """
    B, M, K = A.shape
    N = Bm.shape[2]
    in_dtype = lhs.dtype
    if out_shape.size == 0:
        return b.linear(out_shape, name, "activation", origin)
    if K == 0:                   # an empty contraction: every output is zero
        return b.constant(np.zeros(out_shape.dims, out_shape.np_dtype), out_shape, name, origin)
    pdt = "f32" if in_dtype in ("f16", "f32") else ("f64" if in_dtype == "f64" else out_shape.dtype)
    # each block is stored in whichever order keeps the operand's contiguous runs (the AMP reads both)
    ta = _runs_along(A, 1) > _runs_along(A, 2)
    tb = _runs_along(Bm, 1) > _runs_along(Bm, 2)
    p = plan_matmul(b.device, B, M, N, K, lhs.itemsize, in_dtype)
    T = p.tiles
    # a matmul on fewer tiles than the device has starts at a different tile each time, so that the tiles that
    # hold blocks (and their copy descriptors) are not always the same ones
    first = (next(b._rotate) * 97) % b.num_tiles if T < b.num_tiles else 0
    tiles = (first + (np.arange(T, dtype=np.int64) * b.num_tiles) // T) % b.num_tiles
    A = _pad(A, (p.pb * p.Bb, p.pm * p.Mb, p.pk * p.Kb)).reshape(p.pb, p.Bb, p.pm, p.Mb, p.pk, p.Kb)
    A = A.transpose(0, 2, 4, 1, 5, 3) if ta else A.transpose(0, 2, 4, 1, 3, 5)
    A = np.broadcast_to(A[:, :, None], (p.pb, p.pm, p.pn, p.pk) + A.shape[3:])
    Bm = _pad(Bm, (p.pb * p.Bb, p.pk * p.Kb, p.pn * p.Nb)).reshape(p.pb, p.Bb, p.pk, p.Kb, p.pn, p.Nb)
    Bm = Bm.transpose(0, 4, 2, 1, 5, 3) if tb else Bm.transpose(0, 4, 2, 1, 3, 5)
    Bm = np.broadcast_to(Bm[:, None], (p.pb, p.pm, p.pn, p.pk) + Bm.shape[3:])
    a_st = _stage(b, lhs, A, tiles, p.Bb * p.Mb * p.Kb, f"{name}/lhs_blocks", origin)
    b_st = _stage(b, rhs, Bm, tiles, p.Bb * p.Kb * p.Nb, f"{name}/rhs_blocks", origin)
    per_out = p.Bb * p.Mb * p.Nb
    partials = b.add_tensor(Shape(pdt, (T * per_out,)), tiles, np.arange(T) * per_out, np.full(T, per_out),
                            f"{name}/partials", "activation", origin)

    t = np.repeat(np.arange(T), p.Bb)
    bi = np.tile(np.arange(p.Bb), T)
    isz, psz = lhs.itemsize, dtypes.itemsize(pdt)
    records = np.stack([a_st.syms[t] + bi * p.Mb * p.Kb * isz, b_st.syms[t] + bi * p.Kb * p.Nb * isz,
                        partials.syms[t] + bi * p.Mb * p.Nb * psz, np.full(len(t), p.Mb), np.full(len(t), p.Nb),
                        np.full(len(t), p.Kb)], axis=1).astype(np.int64)
    group = VertexGroup("matmul", records, addr_cols=(0, 1, 2), tiles=tiles[t],
                        cycles=cyc.matmul_cycles(b.device, np.full(len(t), p.Mb), np.full(len(t), p.Nb),
                                                 np.full(len(t), p.Kb), in_dtype),
                        params=dict(in_dt=dtypes.code(in_dtype), out_dt=dtypes.code(pdt), ta=bool(ta), tb=bool(tb)))
    b.execute(name, [group], origin)

    # where output element (kk, b, m, n) sits in the partials
    where = np.arange(partials.size, dtype=np.int64).reshape(p.pb, p.pm, p.pn, p.pk, p.Bb, p.Mb, p.Nb)
    where = where.transpose(3, 0, 4, 1, 5, 2, 6).reshape(p.pk, p.pb * p.Bb, p.pm * p.Mb, p.pn * p.Nb)
    where = where[:, :B, :M, :N].reshape(p.pk, -1)
    if p.pk == 1 and pdt == out_shape.dtype:
        return DTensor.from_element_syms(out_shape, partials.element_syms()[where[0]], b.block_tiles(), name,
                                         "activation", origin)
    zero = b.constant(np.zeros((), dtypes.NUMPY[pdt]), Shape(pdt, ()), f"{name}/zero_acc", origin)
    return reduce_rows(b, partials, np.ascontiguousarray(where.T), zero, "add", out_shape, f"{name}/reduce", origin)


@register_lowering("dot")
def lower_dot(ctx, lhs: DTensor, rhs: DTensor):
    a = ctx.inst.attrs
    if rhs.dtype != lhs.dtype:
        raise ctx.unsupported(f"dot of {lhs.dtype} and {rhs.dtype} operands")
    A = _canonical(lhs.shape.dims, a.get("lhs_batch_dims", ()), a.get("lhs_contracting_dims", ()), True)
    Bm = _canonical(rhs.shape.dims, a.get("rhs_batch_dims", ()), a.get("rhs_contracting_dims", ()), False)
    return batched_matmul(ctx.b, lhs, A, rhs, Bm, ctx.shape, ctx.name, ctx.origin)
