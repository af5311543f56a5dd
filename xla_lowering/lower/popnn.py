"""popnn: pooling (reduce-window), its gradient (select-and-scatter) and batch normalisation.

Everything here is composed from popops pieces, the IPU way: a window is an index map computed once with NumPy
(which operand element sits under each window position, -1 for padding and base-dilation holes), the exchange
stages the windows as rows, and the reduction vertices reduce them (padding reads the init value).

select-and-scatter runs in two reductions and no scatter at all:
  1. each window's rows carry (value, flat position); a variadic reduction with the ``select`` computation
     keeps the selected (value, position) of every window;
  2. each operand element gathers the windows that cover it, with their selected positions and source values,
     plus its own flat index, and a variadic reduction combines with ``scatter`` the source values of the
     windows that selected it, starting from the init value.
Both reducers are associative, so the planner may still cut long rows into parts.

Batch normalisation (XLA's batch-norm-training / -inference / -grad, which tf.nn.fused_batch_norm emits; Keras
layers emit plain reduces and elementwise ops) is reductions per feature plus elementwise expressions, with
per-feature vectors broadcast to the operand's tile mapping.
"""
from __future__ import annotations

import numpy as np

from kernels import dtypes

from ..hlo.ir import Computation, Instruction, Shape
from ..mapping.tensor import DTensor
from . import register_lowering
from .expression import compile_computation
from .popops_data import pad_index
from .popops_elementwise import expression
from .popops_reduce import reduce_dims, reduce_generic, reduce_rows, simple_reducer

MAX_WINDOW_ELEMENTS = 1 << 25      # staged window elements (outputs x window size) one reduce-window may use


# --- scalar computations built in place (reducers and expressions) ----------------------------------------
class Scalar:
    """Builds a scalar HLO computation instruction by instruction (a reducer or an elementwise expression)."""

    def __init__(self, name: str):
        self.name = name
        self.insts: list[Instruction] = []
        self.nparams = 0

    def _add(self, inst: Instruction) -> Instruction:
        self.insts.append(inst)
        return inst

    def param(self, dtype: str) -> Instruction:
        self.nparams += 1
        return self._add(Instruction("parameter", Shape(dtype), attrs={"number": self.nparams - 1}))

    def const(self, value, dtype: str) -> Instruction:
        return self._add(Instruction("constant", Shape(dtype), attrs={"value": np.array(value, dtypes.NUMPY[dtype])}))

    def op(self, opcode: str, *operands: Instruction, dtype: str | None = None, **attrs) -> Instruction:
        dtype = dtype or operands[-1].shape.dtype
        return self._add(Instruction(opcode, Shape(dtype), list(operands), attrs=attrs))

    def cmp(self, a: Instruction, b: Instruction, direction: str) -> Instruction:
        return self.op("compare", a, b, dtype="pred", direction=direction)

    def inline(self, comp: Computation, args: list[Instruction]) -> Instruction:
        """The root of ``comp`` applied to ``args`` (its instructions copied in)."""
        new: dict[Instruction, Instruction] = {}
        for p in comp.parameters:
            new[p] = args[p.attrs["number"]]
        for inst in comp.instructions:
            if inst in new:
                continue
            if inst.called:
                raise NotImplementedError(f"{comp.name}: calls inside a select/scatter computation")
            new[inst] = self._add(Instruction(inst.opcode, inst.shape, [new[o] for o in inst.operands],
                                              attrs=dict(inst.attrs)))
        return new[comp.root]

    def done(self, *outs: Instruction) -> Computation:
        root = outs[0]
        if len(outs) > 1:
            root = self._add(Instruction("tuple", Shape.tuple([o.shape for o in outs]), list(outs)))
        return Computation(self.name, list(self.insts), root)


def elementwise(b, build, operands: list[DTensor], shape: Shape, name: str, origin: str) -> DTensor:
    """``build(s, *params)`` returns the root of a scalar expression over the operands' elements."""
    s = Scalar(name)
    root = build(s, *[s.param(o.dtype) for o in operands])
    return expression(b, compile_computation(s.done(root)), operands, shape, name, origin)


# --- windows ----------------------------------------------------------------------------------------
def normalized_window(inst) -> list[dict]:
    """The window with defaults filled in (0 in a proto field means 'unset' for strides and dilations)."""
    return [{"size": w["size"], "stride": w.get("stride") or 1, "pad_low": w.get("pad_low", 0),
             "pad_high": w.get("pad_high", 0), "window_dilation": w.get("window_dilation") or 1,
             "base_dilation": w.get("base_dilation") or 1, "reversal": bool(w.get("reversal"))}
            for w in inst.attrs.get("window", ())]




def window_index(dims, window: list[dict]) -> tuple[np.ndarray, tuple[int, ...]]:
    """([O, R] map, output dims): row o lists the operand elements of window o in window order (-1: padding)."""
    rank = len(dims)
    index = np.arange(int(np.prod(dims, dtype=np.int64)), dtype=np.int64).reshape(dims)
    for d, w in enumerate(window):
        index = pad_index(index, d, w["base_dilation"] - 1, w["pad_low"], w["pad_high"])
    grids, out_dims = [], []
    for d, w in enumerate(window):
        span = (w["size"] - 1) * w["window_dilation"] + 1
        n = index.shape[d]
        o = (n - span) // w["stride"] + 1 if n >= span else 0
        out_dims.append(o)
        pos = np.arange(o)[:, None] * w["stride"] + np.arange(w["size"])[None, :] * w["window_dilation"]
        if w["reversal"]:
            pos = pos[:, ::-1]
        shape = [1] * (2 * rank)
        shape[d], shape[rank + d] = o, w["size"]
        grids.append(pos.reshape(shape))
    rows = index[tuple(grids)] if rank else index.reshape(1)
    out = int(np.prod(out_dims, dtype=np.int64))
    return rows.reshape(out, -1), tuple(out_dims)


def _window_elements(out_dims, window) -> int:
    return int(np.prod(out_dims, dtype=np.int64)) * int(np.prod([w["size"] for w in window], dtype=np.int64))


def _checked_index(ctx, dims, out_dims):
    window = normalized_window(ctx.inst)
    if len(window) != len(dims):
        raise ctx.unsupported(f"window of rank {len(window)} for an operand of rank {len(dims)}")
    sizes = [w["size"] for w in window]
    count = _window_elements(out_dims, window)
    if count > MAX_WINDOW_ELEMENTS:
        raise ctx.unsupported(f"{count} window elements to stage (more than {MAX_WINDOW_ELEMENTS}): window "
                              f"{'x'.join(map(str, sizes))} over {'x'.join(map(str, out_dims))} outputs")
    if 0 in sizes:
        raise ctx.unsupported("empty windows")
    index, got = window_index(dims, window)
    if got != tuple(out_dims):
        raise ctx.unsupported(f"window gives output dims {got}, the instruction has {tuple(out_dims)}")
    return index


# --- reduce-window: pooling, cumulative sums ------------------------------------------------------------
def _is_zero_constant(inst) -> bool:
    value = inst.attrs.get("value") if inst.opcode == "constant" else None
    return value is not None and np.size(value) == 1 and not np.any(np.asarray(value))


def _separable_passes(ctx, dims, op: str):
    """One window per dimension whose window is not trivial, when a max/min (or add from a zero init) window
    would stage more than MAX_WINDOW_ELEMENTS at once and the passes each stage fewer; else None.

    max and min are idempotent, so padding and holes reading the init value once per pass changes nothing; a sum
    needs a zero init (that pass order changes the rounding is accepted only past the limit)."""
    window = normalized_window(ctx.inst)
    if len(window) != len(dims) or op not in ("maximum", "minimum", "add"):
        return None
    if op == "add" and not _is_zero_constant(ctx.inst.operands[1]):
        return None
    if _window_elements(ctx.shape.dims, window) <= MAX_WINDOW_ELEMENTS or any(w["size"] == 0 for w in window):
        return None
    unit = {"size": 1, "stride": 1, "pad_low": 0, "pad_high": 0, "window_dilation": 1, "base_dilation": 1,
            "reversal": False}
    active = [d for d, w in enumerate(window) if w != unit]
    if len(active) < 2:
        return None
    # shrink first along the dims that shrink the most, so later passes stage less
    def shrink(d):
        w = window[d]
        n = (dims[d] - 1) * w["base_dilation"] + 1 + w["pad_low"] + w["pad_high"]
        return n / max(dims[d], 1) / w["stride"]
    passes, cur = [], list(dims)
    for d in sorted(active, key=shrink):
        win = [dict(unit) for _ in dims]
        win[d] = window[d]
        index, out_dims = window_index(tuple(cur), win)
        if index.size > MAX_WINDOW_ELEMENTS:
            return None
        passes.append((index, out_dims))
        cur = list(out_dims)
    return passes if tuple(cur) == tuple(ctx.shape.dims) else None


@register_lowering("reduce-window")
def lower_reduce_window(ctx, *operands):
    n = len(operands) // 2
    xs, inits = list(operands[:n]), list(operands[n:])
    out_shapes = list(ctx.shape.tuple_shapes) if ctx.shape.is_tuple else [ctx.shape]
    reducer = ctx.inst.called["to_apply"]
    op = simple_reducer(reducer)
    passes = _separable_passes(ctx, xs[0].shape.dims, op) if n == 1 and op is not None else None
    if passes is not None:      # a box window too big to stage at once: one pass per dimension
        x = xs[0]
        for k, (index, out_dims) in enumerate(passes):
            last = k == len(passes) - 1
            shape = ctx.shape if last else ctx.shape.with_dims(out_dims)
            x = reduce_rows(ctx.b, x, index, inits[0], op, shape, ctx.name if last else f"{ctx.name}/pass{k}",
                            ctx.origin)
        return x
    index = _checked_index(ctx, xs[0].shape.dims, out_shapes[0].dims)
    if n == 1 and op is not None and not (op in ("and", "or", "xor") and dtypes.is_float(xs[0].dtype)):
        return reduce_rows(ctx.b, xs[0], index, inits[0], op, ctx.shape, ctx.name, ctx.origin)
    outs = reduce_generic(ctx.b, xs, index, inits, reducer, out_shapes, ctx.name, ctx.origin)
    return tuple(outs) if ctx.shape.is_tuple else outs[0]


# --- select-and-scatter: the gradient of max-pooling ----------------------------------------------------
def _select_reducer(select: Computation, dtype: str) -> Computation:
    """(value, position) accumulators: a valid element (position >= 0) replaces the accumulator when there is
    none yet or ``select(acc, element)`` is false; this is XLA's scan of a window, and it is associative."""
    s = Scalar(f"{select.name}/window_select")
    acc_v, acc_p, x_v, x_p = s.param(dtype), s.param("s32"), s.param(dtype), s.param("s32")
    zero = s.const(0, "s32")
    keep = s.inline(select, [acc_v, x_v])
    take = s.op("and", s.cmp(x_p, zero, "GE"), s.op("or", s.cmp(acc_p, zero, "LT"), s.op("not", keep)))
    return s.done(s.op("select", take, x_v, acc_v), s.op("select", take, x_p, acc_p))


def _scatter_reducer(scatter: Computation, dtype: str) -> Computation:
    """(value, selected position, own index) triples; an element counts when position == index. Combining two:
    both count -> scatter(a, b); one counts -> that one; the result counts when either did (p = 0, i = 0 or 1).
    Associative, with (init, -1, -1) as the counting start."""
    s = Scalar(f"{scatter.name}/window_scatter")
    acc_s, acc_p, acc_i = s.param(dtype), s.param("s32"), s.param("s32")
    x_s, x_p, x_i = s.param(dtype), s.param("s32"), s.param("s32")
    m1, m2 = s.cmp(acc_p, acc_i, "EQ"), s.cmp(x_p, x_i, "EQ")
    combined = s.inline(scatter, [acc_s, x_s])
    value = s.op("select", s.op("and", m1, m2), combined, s.op("select", m1, acc_s, x_s))
    counted = s.op("convert", s.op("not", s.op("or", m1, m2)), dtype="s32")
    return s.done(value, s.const(0, "s32"), counted)


def covering_windows(index: np.ndarray, size: int) -> np.ndarray:
    """[size, M]: the windows (rows of ``index``) that hold each operand element, in window order; -1 pads."""
    windows, width = index.shape
    elem = index.reshape(-1)
    win = np.repeat(np.arange(windows, dtype=np.int64), width)
    ok = elem >= 0
    elem, win = elem[ok], win[ok]
    order = np.lexsort((win, elem))
    elem, win = elem[order], win[order]
    counts = np.bincount(elem, minlength=size)
    m = max(int(counts.max(initial=0)), 1)
    slot = np.arange(len(elem)) - (np.cumsum(counts) - counts)[elem]
    cover = np.full((size, m), -1, np.int64)
    cover[elem, slot] = win
    return cover


@register_lowering("select-and-scatter")
def lower_select_and_scatter(ctx, operand: DTensor, source: DTensor, init: DTensor):
    b, name, origin = ctx.b, ctx.name, ctx.origin
    index = _checked_index(ctx, operand.shape.dims, source.shape.dims)
    size, windows = operand.size, source.size
    if size >= 2**31:
        raise ctx.unsupported("operands of 2^31 elements or more")
    none = b.constant(np.array(-1, np.int32), Shape("s32", ()), f"{name}/no_position", origin)
    positions = b.constant(np.arange(size, dtype=np.int32), Shape("s32", (size,)), f"{name}/positions", origin)
    any_value = b.constant(np.zeros((), operand.shape.np_dtype), operand.shape.with_dims(()), f"{name}/zero",
                           origin)
    # 1. the position each window selects
    _, selected = reduce_generic(
        b, [operand, positions], index, [any_value, none], _select_reducer(ctx.inst.called["select"], operand.dtype),
        [Shape(operand.dtype, (windows,)), Shape("s32", (windows,))], f"{name}/select", origin)
    # 2. every element combines the source values of the windows that selected it
    cover = covering_windows(index, size)
    own = np.repeat(np.arange(size, dtype=np.int64)[:, None], cover.shape[1], axis=1)
    flat = ctx.shape.with_dims((size,))
    out, _, _ = reduce_generic(
        b, [source.view(source.shape.with_dims((windows,))), selected, positions], [cover, cover, own],
        [init, none, none], _scatter_reducer(ctx.inst.called["scatter"], source.dtype),
        [flat, Shape("s32", (size,)), Shape("s32", (size,))], f"{name}/scatter", origin)
    return out.view(ctx.shape, name)


# --- batch normalisation ---------------------------------------------------------------------------------
def _feature_sum(b, t: DTensor, f: int, name: str, origin: str) -> DTensor:
    dims = t.shape.dims
    zero = b.constant(np.zeros((), t.shape.np_dtype), t.shape.with_dims(()), f"{name}/zero", origin)
    return reduce_dims(b, t, [d for d in range(len(dims)) if d != f], zero, "add", t.shape.with_dims((dims[f],)),
                       name, origin)


def _per_feature(b, v: DTensor, like: DTensor, f: int, name: str, origin: str) -> DTensor:
    """Per-feature vector ``v`` broadcast to the shape and tile mapping of ``like``."""
    if v.size == 1:
        return v                       # expressions broadcast one-element operands themselves
    dims = like.shape.dims
    inner = int(np.prod(dims[f + 1:], dtype=np.int64))
    out = b.like(like, Shape(v.dtype, dims), name, "temporary", origin)
    return b.rearrange(out, [v], (np.arange(like.size, dtype=np.int64) // inner) % dims[f], name=name,
                       origin=origin)


def _bn_args(ctx, x: DTensor):
    f, eps = ctx.inst.attrs["feature_index"], float(ctx.inst.attrs["epsilon"])
    return f, eps, x.dtype, Shape(x.dtype, (x.shape.dims[f],)), x.size // max(x.shape.dims[f], 1)


@register_lowering("batch-norm-training")
def lower_batch_norm_training(ctx, x: DTensor, scale: DTensor, offset: DTensor):
    b, name, origin = ctx.b, ctx.name, ctx.origin
    f, eps, dt, vec, count = _bn_args(ctx, x)
    per = lambda v, tag: _per_feature(b, v, x, f, f"{name}/{tag}", origin)  # noqa: E731
    mean = elementwise(b, lambda s, t: s.op("divide", t, s.const(count, dt)),
                       [_feature_sum(b, x, f, f"{name}/sum", origin)], vec, f"{name}/mean", origin)
    centered = elementwise(b, lambda s, v, m: s.op("subtract", v, m), [x, per(mean, "mean_b")], x.shape,
                           f"{name}/centered", origin)
    squares = elementwise(b, lambda s, c: s.op("multiply", c, c), [centered], x.shape, f"{name}/squares", origin)
    var = elementwise(b, lambda s, t: s.op("divide", t, s.const(count, dt)),
                      [_feature_sum(b, squares, f, f"{name}/sum_squares", origin)], vec, f"{name}/var", origin)
    factor = elementwise(b, lambda s, g, v: s.op("multiply", g, s.op("rsqrt", s.op("add", v, s.const(eps, dt)))),
                         [scale, var], vec, f"{name}/factor", origin)
    y = elementwise(b, lambda s, c, a, o: s.op("add", s.op("multiply", c, a), o),
                    [centered, per(factor, "factor_b"), per(offset, "offset_b")], x.shape, f"{name}/y", origin)
    return y, mean, var


@register_lowering("batch-norm-inference")
def lower_batch_norm_inference(ctx, x: DTensor, scale: DTensor, offset: DTensor, mean: DTensor, var: DTensor):
    b, name, origin = ctx.b, ctx.name, ctx.origin
    f, eps, dt, vec, _ = _bn_args(ctx, x)
    per = lambda v, tag: _per_feature(b, v, x, f, f"{name}/{tag}", origin)  # noqa: E731
    factor = elementwise(b, lambda s, g, v: s.op("multiply", g, s.op("rsqrt", s.op("add", v, s.const(eps, dt)))),
                         [scale, var], vec, f"{name}/factor", origin)
    return elementwise(b, lambda s, v, m, a, o: s.op("add", s.op("multiply", s.op("subtract", v, m), a), o),
                       [x, per(mean, "mean_b"), per(factor, "factor_b"), per(offset, "offset_b")], x.shape, name,
                       origin)


@register_lowering("batch-norm-grad")
def lower_batch_norm_grad(ctx, x: DTensor, scale: DTensor, mean: DTensor, var: DTensor, dy: DTensor):
    """dx = scale / sqrt(var + eps) * (dy - sum(dy) / N - (x - mean) * sum(dy * (x - mean)) / (var + eps) / N)."""
    b, name, origin = ctx.b, ctx.name, ctx.origin
    f, eps, dt, vec, count = _bn_args(ctx, x)
    per = lambda v, tag: _per_feature(b, v, x, f, f"{name}/{tag}", origin)  # noqa: E731
    centered = elementwise(b, lambda s, v, m: s.op("subtract", v, m), [x, per(mean, "mean_b")], x.shape,
                           f"{name}/centered", origin)
    d_offset = _feature_sum(b, dy, f, f"{name}/d_offset", origin)
    dot = _feature_sum(b, elementwise(b, lambda s, g, c: s.op("multiply", g, c), [dy, centered], x.shape,
                                      f"{name}/dy_centered", origin), f, f"{name}/sum_dy_centered", origin)

    def var_eps(s, v):
        return s.op("add", v, s.const(eps, dt))

    d_scale = elementwise(b, lambda s, t, v: s.op("multiply", t, s.op("rsqrt", var_eps(s, v))), [dot, var], vec,
                          f"{name}/d_scale", origin)
    c1 = elementwise(b, lambda s, g, v: s.op("multiply", g, s.op("rsqrt", var_eps(s, v))), [scale, var], vec,
                     f"{name}/c1", origin)
    c2 = elementwise(b, lambda s, t: s.op("divide", t, s.const(count, dt)), [d_offset], vec, f"{name}/c2", origin)
    c3 = elementwise(b, lambda s, t, v: s.op("divide", s.op("divide", t, var_eps(s, v)), s.const(count, dt)),
                     [dot, var], vec, f"{name}/c3", origin)
    dx = elementwise(b, lambda s, g, c, k1, k2, k3: s.op("multiply", k1, s.op("subtract", s.op("subtract", g, k2),
                                                                               s.op("multiply", c, k3))),
                     [dy, centered, per(c1, "c1_b"), per(c2, "c2_b"), per(c3, "c3_b")], x.shape, f"{name}/dx",
                     origin)
    return dx, d_scale, d_offset
