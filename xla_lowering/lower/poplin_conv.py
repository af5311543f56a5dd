"""poplin convolution: any XLA convolution as a batched matmul over its patches.

Groups (feature groups or batch groups) are the matmul's batch B; M is the output positions (batch x output
spatial), K the input features of a group x the kernel window, N the output features of a group. The patches
map reads -1 (zero) where a window tap falls in padding or in a hole of the base (lhs) dilation, so padding,
negative padding, strides, both dilations and window reversal are all just index arithmetic done once with
NumPy. The matmul (``poplin.batched_matmul``) plans, exchanges, multiplies and reduces; its [B, M, N] result
is then seen in the output's dimension order (a view, or a copy when the view would be cut into tiny pieces).

The patches are not copied out (im2col) when that can be avoided: each tile receives the box of the input its
block of patches reads, and a conv vertex reads the patches from the box through two short worklists
(``Patches``), as PopLibs' convolution vertices read their input windows in place.
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


def _geometry(x_dims, w_dims, out_dims, dn: dict, window, feature_groups: int, batch_groups: int) -> dict:
    """Sizes, strides and the orders in which a convolution's patches flatten their rows and columns.

    Output positions (n, o_1..o_d) and the contraction (c, k_1..k_d) are each ordered by the input's memory
    strides, innermost last, so that a patch row is made of long runs of the input (channels for NHWC, taps
    along W for NCHW); likewise the positions (a weight gradient's "batch" is the input's channels).
    """
    window = _window(window)
    xs = _strides(x_dims)
    isp = dn["input_spatial_dimensions"]
    G = feature_groups * batch_groups
    ws = [xs[dn["input_feature_dimension"]]] + [xs[a] for a in isp]
    OS = [out_dims[a] for a in dn["output_spatial_dimensions"]]
    KS = [w_dims[a] for a in dn["kernel_spatial_dimensions"]]
    tap0 = _trim_taps(window, OS, KS, [x_dims[a] for a in isp])
    return dict(
        window=window, d=len(window), xs=xs, ws=_strides(w_dims), G=G, fg=feature_groups, bg=batch_groups,
        n_out=out_dims[dn["output_batch_dimension"]], I=w_dims[dn["kernel_input_feature_dimension"]],
        O=w_dims[dn["kernel_output_feature_dimension"]], OS=OS, KS=KS, tap0=tap0,
        KS_full=[w_dims[a] for a in dn["kernel_spatial_dimensions"]],
        k_order=list(np.argsort([-s for s in ws], kind="stable")),
        m_order=list(np.argsort([-xs[dn["input_batch_dimension"]]] + [-xs[a] for a in isp], kind="stable")))


def _trim_taps(window: list[dict], OS: list, KS: list, in_sizes: list) -> list[int]:
    """Drop the window taps that read padding for every output position (a 3x3 kernel over a 1x1 image reads
    data with its centre tap only), as PopLibs truncates the kernel when it canonicalises a convolution: they
    only add zeros. Along each spatial dim the taps kept are the range from the first to the last one that
    ever reads the input; ``window`` (pad_low) and ``KS`` are changed in place to describe the kept taps as a
    window of their own. Returns each dim's first kept tap (of the kernel as given).

    A dropped tap multiplies only padding zeros, so the result is the same unless a dropped weight is inf or
    NaN (then TensorFlow's 0 * inf would give NaN where this gives the sum of the kept taps)."""
    first = []
    for i, w in enumerate(window):
        _, ok = _taps(OS[i], KS[i], in_sizes[i], w)
        used = np.flatnonzero(ok.any(axis=0)) if OS[i] else np.zeros(0, np.int64)
        lo = int(used[0]) if len(used) else 0
        if len(used):
            KS[i] = int(used[-1]) - lo + 1
            w["pad_low"] -= lo * w["window_dilation"]
        first.append(lo)
    return first


def conv_index_maps(x_dims, w_dims, out_dims, dn: dict, window, feature_groups: int, batch_groups: int):
    """The patches map A [G, M, K] into the input and the kernel map Bm [G, K, N], and the output permutation.

    Axes of A before flattening: (g, n, o_1..o_d, c, k_1..k_d); of Bm: (g, c, k_1..k_d, j). ``perm[i]`` is the
    element of the [G, M, N] product that output element i (row-major, output dims order) is.
    """
    geo = _geometry(x_dims, w_dims, out_dims, dn, window, feature_groups, batch_groups)
    Bm, perm = kernel_map(geo, dn)
    return patches_map(geo, x_dims, dn), Bm, perm


def patches_map(geo: dict, x_dims, dn: dict) -> np.ndarray:
    """A [G, M, K]: the input element each patch entry reads (-1: padding or a hole of the base dilation)."""
    window, d, xs = geo["window"], geo["d"], geo["xs"]
    ib, if_, isp = dn["input_batch_dimension"], dn["input_feature_dimension"], dn["input_spatial_dimensions"]
    G, n_out, I, OS, KS = geo["G"], geo["n_out"], geo["I"], geo["OS"], geo["KS"]
    g = np.arange(G, dtype=np.int64)
    # patches: every term broadcast over (g, n, o_1..o_d, c, k_1..k_d)
    nd = 3 + 2 * d
    n_in = np.arange(n_out, dtype=np.int64)[None, :] + (g[:, None] * n_out if geo["bg"] > 1 else 0)
    c_in = np.arange(I, dtype=np.int64)[None, :] + (g[:, None] * I if geo["fg"] > 1 else 0)
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
    A = A.transpose(0, *[1 + m for m in geo["m_order"]], *[2 + d + k for k in geo["k_order"]])
    return np.ascontiguousarray(A).reshape(G, M, K)


def kernel_map(geo: dict, dn: dict) -> tuple[np.ndarray, np.ndarray]:
    """Bm [G, K, N] (the kernel element of each contraction entry and output feature) and the output permutation."""
    window, d, ws = geo["window"], geo["d"], geo["ws"]
    G, n_out, I, O, OS, KS = geo["G"], geo["n_out"], geo["I"], geo["O"], geo["OS"], geo["KS"]
    k_order, m_order = geo["k_order"], geo["m_order"]
    ko, ki, ksp = (dn["kernel_output_feature_dimension"], dn["kernel_input_feature_dimension"],
                   dn["kernel_spatial_dimensions"])
    ob, of, osp = dn["output_batch_dimension"], dn["output_feature_dimension"], dn["output_spatial_dimensions"]
    Og = O // G
    g = np.arange(G, dtype=np.int64)
    M = n_out * int(np.prod(OS, dtype=np.int64))
    # kernel: (g, c, k_1..k_d, j) -> element (o = g*Og + j, c, taps, reversed where the window says so)
    nd = 3 + d
    Bm = _along(g * Og * ws[ko], 0, nd) + _along(np.arange(Og, dtype=np.int64) * ws[ko], nd - 1, nd) \
        + _along(np.arange(I, dtype=np.int64) * ws[ki], 1, nd)
    for i, w in enumerate(window):
        k = geo["tap0"][i] + np.arange(KS[i], dtype=np.int64)      # taps kept (see _trim_taps)
        Bm = Bm + _along((geo["KS_full"][i] - 1 - k if w["reversal"] else k) * ws[ksp[i]], 2 + i, nd)
    Bm = np.broadcast_to(Bm, (G, I, *KS, Og)).transpose(0, *[1 + k for k in k_order], 1 + len(k_order))
    Bm = np.ascontiguousarray(Bm).reshape(G, -1, Og)

    # product (g, n, o.., j) -> canonical (n, g*Og + j, o..) -> the output's dims order
    m_dims = [n_out, *OS]
    prod = np.arange(G * M * Og, dtype=np.int64).reshape(G, *[m_dims[m] for m in m_order], Og)
    prod = prod.transpose(0, *[1 + m_order.index(i) for i in range(1 + d)], 2 + d)
    canon = prod.transpose(1, 0, d + 2, *range(2, 2 + d)).reshape(n_out, O, *OS)
    perm = canon.transpose(np.argsort([ob, of, *osp])).reshape(-1)
    return Bm, perm


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
    geo = _geometry(xd, wd, shape.dims, dn, a["window"], fg, bg)
    Bm, perm = kernel_map(geo, dn)
    patches = Patches(geo, xd, dn)
    G, M, N = patches.G, patches.M, Bm.shape[2]
    flat = Shape(shape.dtype, (shape.size,))

    # [G, N, M] (kernel x patches) instead of [G, M, N] when that order is closer to the output's (e.g. NCHW)
    gi, m, n = perm // (M * N), (perm // N) % M, perm % N
    perm_t = (gi * N + n) * M + m
    if _breaks(perm_t) < _breaks(perm):
        A = patches.full_map()
        res = batched_matmul(b, w, Bm.transpose(0, 2, 1), x, A.transpose(0, 2, 1), flat, ctx.name, ctx.origin)
        perm = perm_t
    else:
        res = batched_matmul(b, x, patches, w, Bm, flat, ctx.name, ctx.origin)

    if np.array_equal(perm, np.arange(len(perm))):
        return res.view(shape, ctx.name)
    syms = res.element_syms()[perm]
    runs = 1 + int(np.count_nonzero(np.diff(syms) != res.itemsize))
    if len(syms) >= MIN_VIEW_RUN * runs:
        return DTensor.from_element_syms(shape, syms, b.block_tiles(), ctx.name, "activation", ctx.origin)
    out = b.linear(shape, ctx.name, "activation", ctx.origin)
    return b.rearrange(out, [res], perm, name=f"{ctx.name}/layout", origin=ctx.origin)


class Patches:
    """A convolution's patches, read on each tile from a box of the input (not an im2col copy of it).

    The matmul planner cuts the patches [G, M, K] into blocks. For the block (g, rows m0.., columns k0..) a
    tile receives the box of the input that the block's windows cover -- in virtual (padded, base-dilated)
    coordinates, with zeros where padding or dilation holes are -- and the conv vertex reads patch entry (m, k)
    at box offset moff[m] + koff[k]: a position is o * stride + k * window_dilation along every spatial dim, so
    the offset splits into a row part and a column part. The exchange then copies long runs of the input once
    per tile, and the vertex's worklists (moff, koff) are two short int32 arrays in the tile's memory.
    """

    def __init__(self, geo: dict, x_dims, dn: dict):
        self.geo, self.x_dims, self.dn = geo, tuple(x_dims), dn
        d = geo["d"]
        self.G = geo["G"]
        self.M = geo["n_out"] * int(np.prod(geo["OS"], dtype=np.int64))
        self.K = geo["I"] * int(np.prod(geo["KS"], dtype=np.int64))
        # coordinates (n, o_1..o_d) of every patch row and (c, k_1..k_d) of every column, in flattened order
        self.mc = self._coords([geo["n_out"], *geo["OS"]], geo["m_order"])
        self.kc = self._coords([geo["I"], *geo["KS"]], geo["k_order"])
        xs = geo["xs"]
        strides = [xs[dn["input_batch_dimension"]], xs[dn["input_feature_dimension"]]] + \
            [xs[a] for a in dn["input_spatial_dimensions"]]
        # box axes (n, c, v_1..v_d), outermost first in the input's memory order: long runs in the exchange
        self.box_order = list(np.argsort([-s for s in strides], kind="stable"))
        assert len(self.box_order) == 2 + d

    @staticmethod
    def _coords(dims, order) -> np.ndarray:
        idx = np.indices([dims[a] for a in order], dtype=np.int64).reshape(len(dims), -1)
        return idx[[order.index(a) for a in range(len(dims))]]

    def full_map(self) -> np.ndarray:
        return patches_map(self.geo, self.x_dims, self.dn)

    def sample(self, rows: int = 64, cols: int = 64) -> np.ndarray:
        """The first rows x cols of group 0's patches (as ``full_map()[:1, :rows, :cols]``, without the rest)."""
        geo, dn = self.geo, self.dn
        xs = geo["xs"]
        m, k = self.mc[:, :rows], self.kc[:, :cols]
        index = (m[0] * xs[dn["input_batch_dimension"]])[:, None] + (k[0] * xs[dn["input_feature_dimension"]])[None]
        valid = np.ones(index.shape, bool)
        for i, w in enumerate(geo["window"]):
            axis = dn["input_spatial_dimensions"][i]
            q, ok = _taps(geo["OS"][i], geo["KS"][i], self.x_dims[axis], w)
            valid &= ok[np.ix_(m[1 + i], k[1 + i])]
            index += q[np.ix_(m[1 + i], k[1 + i])] * xs[axis]
        return np.where(valid, index, -1)[None]

    def blocks(self, g: np.ndarray, im: np.ndarray, ik: np.ndarray, Mb: int, Kb: int, limit: int | None = None,
               box_limit: int | None = None):
        """Boxes and worklists of the blocks (g[v], rows im[v]*Mb.., columns ik[v]*Kb..), one per vertex v.

        Returns (index, start, size, moff, koff): ``index`` the input element of every box entry of every vertex
        laid end to end (-1: zero), vertex v's box at index[start[v]:start[v] + size[v]]; moff [V, Mb] and
        koff [V, Kb] box offsets (-1 where a block is padded past M or K). None when the boxes would hold
        ``limit`` elements or more (then im2col blocks are no bigger), or when a box would hold more than
        ``box_limit`` elements (what the tile's memory budget leaves for it: a box can be larger than the block
        it replaces, e.g. a base-dilated input's boxes are mostly holes). Vertices of the same block (tiles that
        differ only in their N part) get copies of one box, worked out once.
        """
        geo, dn = self.geo, self.dn
        d, window = geo["d"], geo["window"]
        stride = np.array([w["stride"] for w in window], np.int64)
        wdil = np.array([w["window_dilation"] for w in window], np.int64)
        M, K = self.M, self.K
        mlo, mhi = self._extents(self.mc, Mb, M)          # [1+d, blocks]
        klo, khi = self._extents(self.kc, Kb, K)
        # the distinct blocks: their extents along (n, c, v_1..v_d), where v = o * stride + k * dilation
        blk, inv = np.unique(np.stack([g, im, ik], axis=1), axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        ug, um, uk = blk.T
        U = len(ug)
        lo = np.empty((2 + d, U), np.int64)
        hi = np.empty((2 + d, U), np.int64)
        lo[0], hi[0] = mlo[0, um], mhi[0, um]
        lo[1], hi[1] = klo[0, uk], khi[0, uk]
        lo[2:] = mlo[1:, um] * stride[:, None] + klo[1:, uk] * wdil[:, None]
        hi[2:] = mhi[1:, um] * stride[:, None] + khi[1:, uk] * wdil[:, None]
        ext = hi - lo + 1
        bs = np.ones((2 + d, U), np.int64)                 # box strides in elements
        for a_in, a_out in zip(self.box_order[::-1][:-1], self.box_order[::-1][1:]):
            bs[a_out] = bs[a_in] * ext[a_in]
        usize = bs[self.box_order[0]] * ext[self.box_order[0]]
        size = usize[inv]
        if (limit is not None and int(size.sum()) >= limit) or (box_limit is not None and int(usize.max()) > box_limit):
            return None

        # worklists: offsets of each row's and each column's part of a box position
        rows = um[:, None] * Mb + np.arange(Mb, dtype=np.int64)[None, :]
        cols = uk[:, None] * Kb + np.arange(Kb, dtype=np.int64)[None, :]
        mr, kr = np.minimum(rows, M - 1), np.minimum(cols, K - 1)
        moff = (self.mc[0][mr] - lo[0][:, None]) * bs[0][:, None]
        koff = (self.kc[0][kr] - lo[1][:, None]) * bs[1][:, None]
        for i in range(d):
            moff += (self.mc[1 + i][mr] - mlo[1 + i, um][:, None]) * stride[i] * bs[2 + i][:, None]
            koff += (self.kc[1 + i][kr] - klo[1 + i, uk][:, None]) * wdil[i] * bs[2 + i][:, None]
        moff[rows >= M] = -1
        koff[cols >= K] = -1

        # every entry of every distinct box: its coordinates, then the input element there (or -1)
        ustart = np.cumsum(usize) - usize
        total = int(usize.sum())
        rel = np.arange(total, dtype=np.int64) - np.repeat(ustart, usize)
        coord = [None] * (2 + d)
        for a in self.box_order[::-1]:
            e = np.repeat(ext[a], usize)
            coord[a] = rel % e + np.repeat(lo[a], usize)
            rel //= e
        xs = geo["xs"]
        vg = np.repeat(ug, usize)
        n = coord[0] + (vg * geo["n_out"] if geo["bg"] > 1 else 0)
        c = coord[1] + (vg * geo["I"] if geo["fg"] > 1 else 0)
        index = n * xs[dn["input_batch_dimension"]] + c * xs[dn["input_feature_dimension"]]
        valid = np.ones(total, bool)
        for i, w in enumerate(window):
            p = coord[2 + i] - w["pad_low"]
            bd = w["base_dilation"]
            q = p // bd
            valid &= (p >= 0) & (p % bd == 0) & (q < self.x_dims[dn["input_spatial_dimensions"][i]])
            index += q * xs[dn["input_spatial_dimensions"][i]]
        index[~valid] = -1
        # each vertex's copy of its block's box
        start = np.cumsum(size) - size
        index = index[np.repeat(ustart[inv] - start, size) + np.arange(int(size.sum()), dtype=np.int64)]
        return index, start, size, moff[inv], koff[inv]

    @staticmethod
    def _extents(coords: np.ndarray, block: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        first = np.arange(0, n, block)
        return np.minimum.reduceat(coords, first, axis=1), np.maximum.reduceat(coords, first, axis=1)
