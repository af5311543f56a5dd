"""HLO convolution on the simulated IPU: TF conv ops, their gradients, XLA's general convolution and Keras Conv2D.

TensorFlow on the CPU is the reference (``assert_matches_tf``, loose tolerance: a contraction's summation order
differs from TF's). Forms TF only reaches through XLA (NCHW, negative padding, lhs dilation, batch groups) use
``xla.conv`` with TF's own XLA on the CPU as the reference; window reversal, which no TF op emits, is checked as
HLO text against the NumPy reference evaluator. The index maps alone are checked against the reference on many
more cases, since that needs no compile.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import assert_matches_tf, dtype_id, get_strategy, random_array, seeds, tf
from kernels.device import DEVICES
from kernels.engine import Engine
from kernels.program import Copy, walk
from xla_lowering.compiler import CompileOptions, compile_module
from xla_lowering.hlo import reference
from xla_lowering.hlo.ir import Instruction, Shape
from xla_lowering.hlo.text import parse_module
from xla_lowering.lower.poplin_conv import Patches, _geometry, conv_index_maps

from tensorflow.compiler.tf2xla.python import xla  # noqa: E402
from tensorflow.compiler.xla import xla_data_pb2  # noqa: E402

F32, F16 = np.float32, np.float16


def _data(seed, shape, dtype=F32):
    """Normal data for f32; small values for f16 so that TF's and the device's f16 results stay comparable."""
    rng = np.random.default_rng(seed)
    if np.dtype(dtype) == F16:
        return random_array(rng, shape, dtype, -1.0, 1.0)
    return random_array(rng, shape, dtype)


def _grads(conv):
    """fn(x, w) -> (conv(x, w), d loss / dx, d loss / dw) for a loss that weights every output differently."""
    def fn(x, w):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            y = conv(x, w)
            loss = tf.reduce_sum(y * tf.cast(tf.reshape(tf.range(tf.size(y)) % 7 - 3, tf.shape(y)), y.dtype))
        dx, dw = tape.gradient(loss, [x, w])
        return y, dx, dw
    return fn


# --- tf.nn convolutions ----------------------------------------------------------------------------
EXPLICIT = [[0, 0], [1, 2], [0, 1], [0, 0]]


@pytest.mark.parametrize("strides,padding,dilations", [
    (1, "SAME", 1), (1, "VALID", 1), (2, "SAME", 1), (2, "VALID", 1), (2, EXPLICIT, 1), (1, "SAME", 2),
    (1, EXPLICIT, (2, 3)), ((1, 2), "SAME", 1)])
def test_conv2d(strides, padding, dilations):
    x, w = _data(1, (2, 9, 8, 5)), _data(2, (3, 3, 5, 6))
    assert_matches_tf(lambda x, w: tf.nn.conv2d(x, w, strides, padding, dilations=dilations), x, w, loose=True)


def test_conv2d_pointwise_and_large_kernel():
    x = _data(3, (3, 6, 6, 8))
    assert_matches_tf(lambda x, w: tf.nn.conv2d(x, w, 1, "VALID"), x, _data(4, (1, 1, 8, 16)), loose=True)
    assert_matches_tf(lambda x, w: tf.nn.conv2d(x, w, 1, "SAME"), x, _data(5, (6, 6, 8, 2)), loose=True)


@pytest.mark.parametrize("stride,padding", [(1, "SAME"), (2, "VALID"), (3, "SAME")])
def test_conv1d(stride, padding):
    assert_matches_tf(lambda x, w: tf.nn.conv1d(x, w, stride, padding), _data(6, (2, 13, 3)), _data(7, (4, 3, 5)),
                      loose=True)


@pytest.mark.parametrize("strides,padding", [(1, "SAME"), (2, "VALID")])
def test_conv3d(strides, padding):
    s = [1, strides, strides, strides, 1]
    assert_matches_tf(lambda x, w: tf.nn.conv3d(x, w, s, padding), _data(8, (2, 5, 6, 5, 3)),
                      _data(9, (3, 2, 3, 3, 4)), loose=True)


@pytest.mark.parametrize("multiplier,strides,padding", [(1, 1, "SAME"), (2, 2, "SAME"), (3, 1, "VALID")])
def test_depthwise_conv2d(multiplier, strides, padding):
    assert_matches_tf(lambda x, w: tf.nn.depthwise_conv2d(x, w, [1, strides, strides, 1], padding),
                      _data(10, (2, 7, 7, 4)), _data(11, (3, 3, 4, multiplier)), loose=True)


def test_depthwise_conv2d_dilated():
    assert_matches_tf(lambda x, w: tf.nn.depthwise_conv2d(x, w, [1, 1, 1, 1], "SAME", dilations=[2, 2]),
                      _data(12, (1, 8, 8, 3)), _data(13, (3, 3, 3, 2)), loose=True)


@pytest.mark.parametrize("dtype", [F32, F16], ids=dtype_id)
@pytest.mark.parametrize("groups", [2, 3])
def test_grouped_conv2d(groups, dtype):
    """in_channels a multiple of the filter's: feature_group_count = groups."""
    x, w = _data(14, (2, 6, 7, 3 * groups), dtype), _data(15, (3, 2, 3, 2 * groups), dtype)
    assert_matches_tf(lambda x, w: tf.nn.conv2d(x, w, (1, 2), "SAME"), x, w, loose=True)


@pytest.mark.parametrize("out_hw,strides,padding", [((13, 13), 2, "VALID"), ((12, 12), 2, "SAME"),
                                                    ((11, 12), 2, "SAME"), ((6, 6), 1, "SAME")])
def test_conv2d_transpose(out_hw, strides, padding):
    x, w = _data(16, (2, 6, 6, 4)), _data(17, (3, 3, 5, 4))
    assert_matches_tf(lambda x, w: tf.nn.conv2d_transpose(x, w, [2, *out_hw, 5], strides, padding), x, w,
                      loose=True)


@pytest.mark.parametrize("dtype", [F32, F16], ids=dtype_id)
def test_nchw_conv2d(dtype):
    """TF has no NCHW conv on the CPU: its XLA is the reference; the output is viewed from [N, M] order."""
    x, w = _data(18, (2, 4, 7, 6), dtype), _data(19, (3, 3, 4, 5), dtype)
    assert_matches_tf(lambda x, w: tf.nn.conv2d(x, w, 2, "SAME", data_format="NCHW"), x, w, loose=True,
                      reference="xla")


# --- gradients: the backward convolutions XLA emits ------------------------------------------------
@pytest.mark.parametrize("dtype", [F32, F16], ids=dtype_id)
@pytest.mark.parametrize("strides,padding", [(1, "SAME"), (2, "SAME"), (2, "VALID"), (3, EXPLICIT)])
def test_conv2d_gradients(strides, padding, dtype):
    """Input gradient: lhs-dilated (strided) conv of the output gradient; filter gradient: a conv over batch."""
    x, w = _data(20, (2, 8, 7, 3), dtype), _data(21, (3, 2, 3, 4), dtype)
    assert_matches_tf(_grads(lambda x, w: tf.nn.conv2d(x, w, strides, padding)), x, w, loose=True)


@pytest.mark.parametrize("dtype", [F32, F16], ids=dtype_id)
def test_dilated_conv2d_gradients(dtype):
    x, w = _data(22, (1, 9, 9, 2), dtype), _data(23, (3, 3, 2, 3), dtype)
    # eager TF has no CPU kernel for dilated conv gradients without oneDNN: the reference is TF's XLA on the CPU
    assert_matches_tf(_grads(lambda x, w: tf.nn.conv2d(x, w, 1, "SAME", dilations=2)), x, w, loose=True,
                      reference="xla")


@pytest.mark.parametrize("dtype", [F32, F16], ids=dtype_id)
def test_grouped_conv2d_gradients(dtype):
    """The filter gradient of a grouped conv is a conv with batch_group_count = groups."""
    x, w = _data(24, (2, 7, 6, 6), dtype), _data(25, (3, 3, 2, 6), dtype)
    # eager TF has no CPU kernel for grouped conv gradients without oneDNN: the reference is TF's XLA on the CPU
    assert_matches_tf(_grads(lambda x, w: tf.nn.conv2d(x, w, 2, "SAME")), x, w, loose=True, reference="xla")


@pytest.mark.parametrize("dtype", [F32, F16], ids=dtype_id)
@pytest.mark.parametrize("multiplier,strides", [(1, 1), (2, 2)])
def test_depthwise_conv2d_gradients(multiplier, strides, dtype):
    x, w = _data(26, (2, 7, 7, 3), dtype), _data(27, (3, 3, 3, multiplier), dtype)
    assert_matches_tf(_grads(lambda x, w: tf.nn.depthwise_conv2d(x, w, [1, strides, strides, 1], "SAME")), x, w,
                      loose=True)


def test_conv1d_and_conv3d_gradients():
    assert_matches_tf(_grads(lambda x, w: tf.nn.conv1d(x, w, 2, "SAME")), _data(28, (2, 11, 3)),
                      _data(29, (3, 3, 4)), loose=True)
    assert_matches_tf(_grads(lambda x, w: tf.nn.conv3d(x, w, [1, 2, 1, 2, 1], "VALID")),
                      _data(30, (1, 5, 4, 5, 2)), _data(31, (2, 2, 3, 2, 3)), loose=True)


# --- hypothesis over shapes, strides and padding ------------------------------------------------------
@st.composite
def conv2d_case(draw):
    n, c, o = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    h, w = draw(st.integers(kh, 10)), draw(st.integers(kw, 10))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = draw(st.sampled_from(["SAME", "VALID", "EXPLICIT"]))
    if padding == "EXPLICIT":
        padding = [[0, 0], [draw(st.integers(0, 3)), draw(st.integers(0, 3))],
                   [draw(st.integers(0, 3)), draw(st.integers(0, 3))], [0, 0]]
    return (n, h, w, c), (kh, kw, c, o), strides, padding


@given(case=conv2d_case(), seed=seeds)
def test_conv2d_hypothesis(case, seed):
    xs, ws, strides, padding = case
    assert_matches_tf(lambda x, w: tf.nn.conv2d(x, w, strides, padding), _data(seed, xs), _data(seed + 1, ws),
                      loose=True)


@given(case=conv2d_case(), seed=seeds)
def test_conv2d_gradients_hypothesis(case, seed):
    xs, ws, strides, padding = case
    assert_matches_tf(_grads(lambda x, w: tf.nn.conv2d(x, w, strides, padding)), _data(seed, xs),
                      _data(seed + 1, ws), loose=True)


# --- XLA's general convolution (xla.conv; TF's XLA on the CPU is the reference) ------------------------
@st.composite
def general_case(draw):
    """Any dims order, 1-3 spatial dims, strides, padding (may be negative), both dilations and groups."""
    d = draw(st.integers(1, 3))
    kind = draw(st.sampled_from(["plain", "feature", "batch"]))
    groups = 1 if kind == "plain" else draw(st.integers(2, 3))
    fg, bg = (groups, 1) if kind == "feature" else (1, groups)
    n, i, og = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    spatial, kernel, win = [], [], []
    for _ in range(d):
        k, s = draw(st.integers(1, 3)), draw(st.integers(1, 6 if d < 3 else 4))
        stride, lhs_dil, rhs_dil = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
        lo, hi = draw(st.integers(-2, 3)), draw(st.integers(-2, 3))
        span, padded = (k - 1) * rhs_dil + 1, (s - 1) * lhs_dil + 1 + lo + hi
        if padded < span:
            hi += span - padded            # keep at least one output position
        spatial.append(s)
        kernel.append(k)
        win.append((stride, (lo, hi), lhs_dil, rhs_dil))
    perms = [draw(st.permutations(range(d + 2))) for _ in range(3)]
    return d, fg, bg, (n * bg, i * fg, spatial), (og * fg * bg, i, kernel), win, perms


def _dnums(d, perms):
    x, w, o = perms      # position of (batch/out feature, feature/in feature, spatial...) in each operand
    return xla_data_pb2.ConvolutionDimensionNumbers(
        input_batch_dimension=x[0], input_feature_dimension=x[1], input_spatial_dimensions=x[2:],
        kernel_output_feature_dimension=w[0], kernel_input_feature_dimension=w[1], kernel_spatial_dimensions=w[2:],
        output_batch_dimension=o[0], output_feature_dimension=o[1], output_spatial_dimensions=o[2:])


def _place(canonical, perm):
    dims = [0] * len(perm)
    for k, p in enumerate(perm):
        dims[p] = canonical[k]
    return tuple(dims)


@given(case=general_case(), seed=seeds)
@settings(max_examples=12)
def test_xla_general_convolution(case, seed):
    d, fg, bg, (n, c, spatial), (o, i, kernel), win, perms = case
    x = _data(seed, _place((n, c, *spatial), perms[0]))
    w = _data(seed + 1, _place((o, i, *kernel), perms[1]))

    def fn(x, w):
        return xla.conv(x, w, window_strides=[s for s, _, _, _ in win], padding=[p for _, p, _, _ in win],
                        lhs_dilation=[ld for _, _, ld, _ in win], rhs_dilation=[rd for _, _, _, rd in win],
                        dimension_numbers=_dnums(d, perms), feature_group_count=fg, batch_group_count=bg,
                        use_v2=True)
    assert_matches_tf(fn, x, w, loose=True, reference="xla")


# --- HLO text: window reversal and an empty contraction (reference evaluator) ---------------------------
CONV_HLO = """
HloModule conv

ENTRY main {{
  x = f32[{x}] parameter(0)
  w = f32[{w}] parameter(1)
  ROOT y = f32[{y}] convolution(x, w), window={{{window}}}, dim_labels={labels}{groups}
}}
"""
MK2_16 = DEVICES["mk2"].with_tiles(16)


@pytest.mark.parametrize("x,w,y,window,labels,groups", [
    ("2,7,3", "3,3,4", "2,5,4", "size=3 rhs_reversal=1", "b0f_0io->b0f", ""),
    ("1,4,6,5", "4,2,2,3", "1,4,5,10", "size=2x3 stride=1x1 pad=1_-1x2_1 lhs_dilate=1x2 rhs_reversal=0x1",
     "bf01_oi01->bf01", ", feature_group_count=2"),
    ("2,5,4", "2,2,4", "2,2,4", "size=2 stride=2 pad=1_0 rhs_dilate=2 rhs_reversal=1", "f0b_i0o->b0f",
     ", batch_group_count=2"),
    ("2,5,0", "3,0,4", "2,3,4", "size=3", "b0f_0io->b0f", ""),
    ("0,5,2", "3,2,4", "0,3,4", "size=3", "b0f_0io->b0f", ""),
])
def test_hlo_convolution_against_reference(x, w, y, window, labels, groups):
    text = CONV_HLO.format(x=x, w=w, y=y, window=window, labels=labels, groups=groups)
    module = parse_module(text)
    params = module.entry.parameters
    rng = np.random.default_rng(0)
    args = [rng.integers(-3, 4, p.shape.dims).astype(F32) for p in params]   # integer values: exact sums
    want = reference.evaluate_module(parse_module(text), args)
    exe = compile_module(module, MK2_16, CompileOptions(progress=False))
    (got,), _ = Engine(exe).run(args)
    np.testing.assert_array_equal(got, want)


# --- the index maps alone (no compile): many more cases against the reference -------------------------
@given(case=general_case(), reversal=st.lists(st.booleans(), min_size=3, max_size=3), seed=seeds)
@settings(max_examples=150)
def test_index_maps_match_reference(case, reversal, seed):
    d, fg, bg, (n, c, spatial), (o, i, kernel), win, perms = case
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, _place((n, c, *spatial), perms[0])).astype(np.float64)
    w = rng.integers(-3, 4, _place((o, i, *kernel), perms[1])).astype(np.float64)
    window = tuple(dict(size=kernel[k], stride=s, pad_low=lo, pad_high=hi, window_dilation=rd, base_dilation=ld,
                        reversal=reversal[k]) for k, (s, (lo, hi), ld, rd) in enumerate(win))
    out_spatial = [((spatial[k] - 1) * ld + 1 + lo + hi - (kernel[k] - 1) * rd - 1) // s + 1
                   for k, (s, (lo, hi), ld, rd) in enumerate(win)]
    out = _place((n // bg, o, *out_spatial), perms[2])
    dn = {f: getattr(_dnums(d, perms), f) for f in (
        "input_batch_dimension", "input_feature_dimension", "kernel_input_feature_dimension",
        "kernel_output_feature_dimension", "output_batch_dimension", "output_feature_dimension")}
    dn.update({f: tuple(getattr(_dnums(d, perms), f)) for f in (
        "input_spatial_dimensions", "kernel_spatial_dimensions", "output_spatial_dimensions")})
    inst = Instruction("convolution", Shape("f64", out), attrs=dict(window=window, dnums=dn,
                                                                     feature_group_count=fg, batch_group_count=bg))
    want = reference.evaluate_instruction(inst, [x, w])
    A, Bm, perm = conv_index_maps(x.shape, w.shape, out, dn, window, fg, bg)
    xz, wz = np.append(x.reshape(-1), 0), np.append(w.reshape(-1), 0)     # index -1 reads the appended zero
    got = np.einsum("gmk,gkn->gmn", xz[A], wz[Bm]).reshape(-1)[perm].reshape(out)
    np.testing.assert_array_equal(got, want)


@given(case=general_case(), reversal=st.lists(st.booleans(), min_size=3, max_size=3),
       blocks=st.tuples(st.integers(1, 7), st.integers(1, 9)))
@settings(max_examples=150)
def test_patch_boxes_read_the_patches_map(case, reversal, blocks):
    """Every block of the patches, read from its tile's input box at moff[m] + koff[k] (the conv vertex's
    worklists), is the block of the im2col map: padding, holes of the base dilation and blocks padded past M or
    K read zero. ``Patches.sample`` is the map's first rows and columns."""
    d, fg, bg, (n, c, spatial), (o, i, kernel), win, perms = case
    window = tuple(dict(size=kernel[k], stride=s, pad_low=lo, pad_high=hi, window_dilation=rd, base_dilation=ld,
                        reversal=reversal[k]) for k, (s, (lo, hi), ld, rd) in enumerate(win))
    x_dims = _place((n, c, *spatial), perms[0])
    out_spatial = [((spatial[k] - 1) * ld + 1 + lo + hi - (kernel[k] - 1) * rd - 1) // s + 1
                   for k, (s, (lo, hi), ld, rd) in enumerate(win)]
    dn = {f: getattr(_dnums(d, perms), f) for f in (
        "input_batch_dimension", "input_feature_dimension", "kernel_input_feature_dimension",
        "kernel_output_feature_dimension", "output_batch_dimension", "output_feature_dimension")}
    dn.update({f: tuple(getattr(_dnums(d, perms), f)) for f in (
        "input_spatial_dimensions", "kernel_spatial_dimensions", "output_spatial_dimensions")})
    w_dims = _place((o, i, *kernel), perms[1])
    out = _place((n // bg, o, *out_spatial), perms[2])
    geo = _geometry(x_dims, w_dims, out, dn, window, fg, bg)
    patches = Patches(geo, x_dims, dn)
    A = patches.full_map()
    G, M, K = A.shape
    Mb, Kb = min(blocks[0], M), min(blocks[1], K)
    g, im, ik = (a.reshape(-1) for a in np.meshgrid(np.arange(G), np.arange(-(-M // Mb)), np.arange(-(-K // Kb)),
                                                     indexing="ij"))
    np.testing.assert_array_equal(patches.sample(blocks[0], blocks[1]), A[:1, :blocks[0], :blocks[1]])
    index, start, size, moff, koff = patches.blocks(g, im, ik, Mb, Kb)
    # boxes are refused when any would be larger than the memory the tile has for it
    assert (patches.blocks(g, im, ik, Mb, Kb, box_limit=Mb * Kb) is None) == bool((size > Mb * Kb).any())
    for v in range(len(g)):
        box = index[start[v]:start[v] + size[v]]
        pos = moff[v][:, None] + koff[v][None, :]
        got = np.where((moff[v][:, None] >= 0) & (koff[v][None, :] >= 0), box[np.clip(pos, 0, size[v] - 1)], -1)
        want = np.full((Mb, Kb), -1, np.int64)
        blk = A[g[v], im[v] * Mb:(im[v] + 1) * Mb, ik[v] * Kb:(ik[v] + 1) * Kb]
        want[:blk.shape[0], :blk.shape[1]] = blk
        np.testing.assert_array_equal(got, want)
        assert ((pos < size[v]) | (moff[v][:, None] < 0) | (koff[v][None, :] < 0)).all()


# --- layout of the result ----------------------------------------------------------------------------
def _copy_names(fn, *args):
    exe = get_strategy().compile(fn, tuple(tf.constant(a) for a in args))
    return [s.name for s in walk(exe.program) if isinstance(s, Copy)]


@pytest.mark.parametrize("fmt,x_shape", [("NHWC", (2, 6, 6, 4)), ("NCHW", (1, 4, 6, 6))])
def test_result_is_a_view_of_the_matmul(fmt, x_shape):
    """NHWC output is the product's [M, N] order; NCHW of one image is [N, M] (kernel x patches): no copy after
    the multiply."""
    names = _copy_names(lambda x, w: tf.nn.conv2d(x, w, 1, "SAME", data_format=fmt), _data(0, x_shape),
                        _data(1, (3, 3, 4, 8)))
    assert not any(n.endswith("/layout") for n in names), names


def test_conv_reads_input_boxes_not_im2col():
    """A 3x3 NHWC convolution: conv vertices read their patches from input boxes (in the tiles' memory, with the
    worklists as constants), and the boxes hold fewer elements than the im2col blocks they replace."""
    from kernels.program import Execute
    x, w = _data(0, (2, 12, 12, 16)), _data(1, (3, 3, 16, 8))
    fn = lambda x, w: tf.nn.conv2d(x, w, 1, "SAME")
    assert_matches_tf(fn, x, w, loose=True)
    exe = get_strategy().compile(fn, (tf.constant(x), tf.constant(w)))
    groups = [g for s in walk(exe.program) if isinstance(s, Execute) for g in s.cs.groups if g.codelet == "conv"]
    assert groups
    rec = np.concatenate([g.records for g in groups])
    box_elems, im2col_elems = rec[:, 7].sum(), (rec[:, 3] * rec[:, 5]).sum()
    assert box_elems < im2col_elems, (box_elems, im2col_elems)
    names = [s.name for s in walk(exe.program) if isinstance(s, Copy)]
    assert any("patch_boxes" in n for n in names) and not any("lhs_blocks" in n for n in names), names


def test_taps_that_only_read_padding_are_dropped():
    """A 3x3 SAME convolution of a 1x1 image (ResNet-50's last stage at 32x32) reads data with its centre tap
    only: the contraction is over the input channels alone (K = 16, not 9 x 16), for the convolution and both
    gradients, and the results still match TensorFlow's. A 2x2 image keeps every tap."""
    from kernels.program import Execute
    x, w = _data(0, (2, 1, 1, 16)), _data(1, (3, 3, 16, 8))
    fn = _grads(lambda x, w: tf.nn.conv2d(x, w, 1, "SAME"))
    assert_matches_tf(fn, x, w, loose=True)

    def contractions(x, w):
        exe = get_strategy().compile(fn, (tf.constant(x), tf.constant(w)))
        return {int(k) for s in walk(exe.program) if isinstance(s, Execute) for g in s.cs.groups
                if g.codelet in ("matmul", "conv") for k in g.records[:, 5]}
    assert max(contractions(x, w)) <= 16
    assert max(contractions(_data(0, (2, 2, 2, 16)), w)) > 16


# --- Keras -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("strides,padding,activation", [(1, "same", None), (2, "valid", "relu")])
def test_keras_conv2d_layer(strides, padding, activation):
    import keras
    layer = keras.layers.Conv2D(6, 3, strides=strides, padding=padding, activation=activation,
                                bias_initializer="random_normal")
    x = _data(40, (2, 9, 9, 3))
    layer.build(x.shape)
    assert_matches_tf(lambda x: layer(x), x, loose=True)
