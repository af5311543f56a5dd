"""poplin convolution: any XLA convolution as a batched matmul over static im2col index maps.

Groups (feature groups or batch groups) are the matmul's batch B; M is the output positions (batch x output
spatial), K the input features of a group x the kernel window, N the output features of a group. The patches
map reads -1 (zero) where a window tap falls in padding or in a hole of the base (lhs) dilation, so padding,
negative padding, strides, both dilations and window reversal are all just index arithmetic done once with
NumPy. The matmul (``poplin.batched_matmul``) plans, exchanges, multiplies and reduces; its [B, M, N] result
is then seen in the output's dimension order (a view, or a copy when the view would be cut into tiny pieces).
"""
from __future__ import annotations

import numpy as np

from ..hlo.ir import Shape
from ..mapping.tensor import DTensor
from . import register_lowering
from .poplin import batched_matmul

MIN_VIEW_RUN = 16      # mean elements per contiguous piece below which the output is copied, not viewed


def _strides(dims) -> np.ndarray:
    """Row-major element strides of an array of ``dims``."""
    out = np.ones(len(dims), np.int64)
    for i in range(len(dims) - 2, -1, -1):
        out[i] = out[i + 1] * dims[i + 1]
    return out


def _window(window) -> list[dict]:
    """The window with XLA's defaults where a field is unset (0 stride or dilation means 1)."""
    return [dict(stride=w.get("stride") or 1, pad_low=w.get("pad_low", 0), window_dilation=w.get("window_dilation")
                 or 1, base_dilation=w.get("base_dilation") or 1, reversal=bool(w.get("reversal"))) for w in window]


def _taps(out_size: int, size: int, in_size: int, w: dict) -> tuple[np.ndarray, np.ndarray]:
    """Input index read by output position o and window tap k of one spatial dim ([out, size]) and its validity.

    Position in the padded, base-dilated input: o * stride + k * window_dilation; minus pad_low it is the
    position in the base-dilated input, which holds a real element only at multiples of base_dilation.
    """
    p = (np.arange(out_size, dtype=np.int64)[:, None] * w["stride"]
         + np.arange(size, dtype=np.int64)[None, :] * w["window_dilation"] - w["pad_low"])
    bd = w["base_dilation"]
    q = p // bd
    valid = (p >= 0) & (p % bd == 0) & (q < in_size)
    return np.where(valid, q, 0), valid


def _along(v: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """``v`` (1-D) shaped to broadcast along ``axis`` of an ``ndim`` array."""
    shape = [1] * ndim
    shape[axis] = len(v)
    return v.reshape(shape)


def conv_index_maps(x_dims, w_dims, out_dims, dn: dict, window, feature_groups: int, batch_groups: int):
    """The patches map A [G, M, K] into the input and the kernel map Bm [G, K, N], and the output permutation.

    Axes of A before flattening: (g, n, o_1..o_d, c, k_1..k_d); of Bm: (g, c, k_1..k_d, j). ``perm[i]`` is the
    element of the [G, M, N] product that output element i (row-major, output dims order) is.
    """
    window = _window(window)
    d = len(window)
    xs, ws = _strides(x_dims), _strides(w_dims)
    ib, if_, isp = dn["input_batch_dimension"], dn["input_feature_dimension"], dn["input_spatial_dimensions"]
    ko, ki, ksp = (dn["kernel_output_feature_dimension"], dn["kernel_input_feature_dimension"],
                   dn["kernel_spatial_dimensions"])
    ob, of, osp = dn["output_batch_dimension"], dn["output_feature_dimension"], dn["output_spatial_dimensions"]
    G = feature_groups * batch_groups
    n_out, I, O = out_dims[ob], w_dims[ki], w_dims[ko]
    Og = O // G
    OS = [out_dims[a] for a in osp]
    KS = [w_dims[a] for a in ksp]
    g = np.arange(G, dtype=np.int64)

    # patches: every term broadcast over (g, n, o_1..o_d, c, k_1..k_d)
    nd = 3 + 2 * d
    n_in = np.arange(n_out, dtype=np.int64)[None, :] + (g[:, None] * n_out if batch_groups > 1 else 0)
    c_in = np.arange(I, dtype=np.int64)[None, :] + (g[:, None] * I if feature_groups > 1 else 0)
    shp = [1] * nd
    shp[0], shp[1] = n_in.shape
    A = (n_in * xs[ib]).reshape(shp)
    shp = [1] * nd
    shp[0], shp[2 + d] = c_in.shape
    A = A + (c_in * xs[if_]).reshape(shp)
    valid = None
    for i, w in enumerate(window):
        q, ok = _taps(OS[i], KS[i], x_dims[isp[i]], w)
        shp = [1] * nd
        shp[2 + i], shp[3 + d + i] = OS[i], KS[i]
        A = A + (q * xs[isp[i]]).reshape(shp)
        valid = ok.reshape(shp) if valid is None else valid & ok.reshape(shp)
    full = (G, n_out, *OS, I, *KS)
    A = np.broadcast_to(A, full)
    if valid is not None and not valid.all():
        A = np.where(valid, A, -1)
    M, K = n_out * int(np.prod(OS, dtype=np.int64)), I * int(np.prod(KS, dtype=np.int64))
    # order the contraction (c, k_1..k_d) by the input's memory strides, innermost last, so that a patch row
    # is made of long runs of the input (channels for NHWC, taps along W for NCHW): fewer, longer copies
    k_order = list(np.argsort([-xs[if_]] + [-xs[a] for a in isp], kind="stable"))
    # likewise the output positions (n, o_1..o_d): a weight gradient's "batch" is the input's channels
    m_order = list(np.argsort([-xs[ib]] + [-xs[a] for a in isp], kind="stable"))
    A = A.transpose(0, *[1 + m for m in m_order], *[2 + d + k for k in k_order])
    A = np.ascontiguousarray(A).reshape(G, M, K)

    # kernel: (g, c, k_1..k_d, j) -> element (o = g*Og + j, c, taps, reversed where the window says so)
    nd = 3 + d
    Bm = _along(g * Og * ws[ko], 0, nd) + _along(np.arange(Og, dtype=np.int64) * ws[ko], nd - 1, nd) \
        + _along(np.arange(I, dtype=np.int64) * ws[ki], 1, nd)
    for i, w in enumerate(window):
        k = np.arange(KS[i], dtype=np.int64)
        Bm = Bm + _along((KS[i] - 1 - k if w["reversal"] else k) * ws[ksp[i]], 2 + i, nd)
    Bm = np.broadcast_to(Bm, (G, I, *KS, Og)).transpose(0, *[1 + k for k in k_order], 1 + len(k_order))
    Bm = np.ascontiguousarray(Bm).reshape(G, K, Og)

    # product (g, n, o.., j) -> canonical (n, g*Og + j, o..) -> the output's dims order
    m_dims = [n_out, *OS]
    prod = np.arange(G * M * Og, dtype=np.int64).reshape(G, *[m_dims[m] for m in m_order], Og)
    prod = prod.transpose(0, *[1 + m_order.index(i) for i in range(1 + d)], 2 + d)
    canon = prod.transpose(1, 0, d + 2, *range(2, 2 + d)).reshape(n_out, O, *OS)
    perm = canon.transpose(np.argsort([ob, of, *osp])).reshape(-1)
    return A, Bm, perm


def _breaks(index: np.ndarray) -> int:
    return int(np.count_nonzero(np.diff(index) != 1))


@register_lowering("convolution")
def lower_convolution(ctx, x: DTensor, w: DTensor):
    a, b, shape = ctx.inst.attrs, ctx.b, ctx.shape
    fg, bg = a.get("feature_group_count") or 1, a.get("batch_group_count") or 1
    if w.dtype != x.dtype:
        raise ctx.unsupported(f"convolution of {x.dtype} and {w.dtype} operands")
    if fg > 1 and bg > 1:
        raise ctx.unsupported("both feature_group_count and batch_group_count greater than 1")
    dn, xd, wd = a["dnums"], x.shape.dims, w.shape.dims
    if (xd[dn["input_feature_dimension"]] != wd[dn["kernel_input_feature_dimension"]] * fg
            or xd[dn["input_batch_dimension"]] != shape.dims[dn["output_batch_dimension"]] * bg
            or wd[dn["kernel_output_feature_dimension"]] % (fg * bg)):
        raise ctx.unsupported("operand shapes that do not agree with the dimension numbers and group counts")
    if shape.size == 0:
        return b.linear(shape, ctx.name, "activation", ctx.origin)
    if x.size == 0 or w.size == 0:       # nothing to contract: every output is an empty sum
        return b.constant(np.zeros(shape.dims, shape.np_dtype), shape, ctx.name, ctx.origin)
    A, Bm, perm = conv_index_maps(xd, wd, shape.dims, dn, a["window"], fg, bg)
    G, M, _ = A.shape
    N = Bm.shape[2]
    flat = Shape(shape.dtype, (shape.size,))

    # [G, N, M] (kernel x patches) instead of [G, M, N] when that order is closer to the output's (e.g. NCHW)
    gi, m, n = perm // (M * N), (perm // N) % M, perm % N
    perm_t = (gi * N + n) * M + m
    if _breaks(perm_t) < _breaks(perm):
        res = batched_matmul(b, w, Bm.transpose(0, 2, 1), x, A.transpose(0, 2, 1), flat, ctx.name, ctx.origin)
        perm = perm_t
    else:
        res = batched_matmul(b, x, A, w, Bm, flat, ctx.name, ctx.origin)

    if np.array_equal(perm, np.arange(len(perm))):
        return res.view(shape, ctx.name)
    syms = res.element_syms()[perm]
    runs = 1 + int(np.count_nonzero(np.diff(syms) != res.itemsize))
    if len(syms) >= MIN_VIEW_RUN * runs:
        return DTensor.from_element_syms(shape, syms, b.block_tiles(), ctx.name, "activation", ctx.origin)
    out = b.linear(shape, ctx.name, "activation", ctx.origin)
    return b.rearrange(out, [res], perm, name=f"{ctx.name}/layout", origin=ctx.origin)
