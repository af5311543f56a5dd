"""A pure-NumPy reference evaluator of HLO: the living definition of what each opcode means.

``evaluate(computation, args)`` runs a computation on NumPy arrays (tuples for tuple shapes) and returns
an array or a tuple. ``RULES`` maps opcode -> ``rule(inst, operand_values, evaluator)``; each rule is the
plainest NumPy spelling of the XLA semantics, not a fast one. Conventions (XLA's, where they differ
from NumPy's):

- f16 elementwise math is computed in f32 and rounded back to f16 after every op; dot and convolution
  accumulate floats in f64 and round once.
- integer divide truncates toward zero, x / 0 is -1 (all ones for unsigned), INT_MIN / -1 is INT_MIN;
  remainder has the dividend's sign, x % 0 is x, INT_MIN % -1 is 0. Integer arithmetic wraps.
- integer power with a negative exponent is 1 when the base is 1, else 0.
- shifts by >= the bit width give 0 (shift-right-arithmetic: the sign fill, 0 or -1).
- convert float -> int truncates toward zero and saturates to the type's range; NaN becomes 0.
  Anything -> pred is ``x != 0`` (so NaN -> true); pred -> number is 0/1.
- maximum/minimum propagate NaN; compare with ``compare_type`` TOTALORDER orders floats by bits
  (-NaN < -inf < ... < -0 < +0 < ... < inf < NaN).
- dynamic-slice / dynamic-update-slice / gather clamp start indices so the slice stays in bounds;
  scatter skips an update window that would not fit.
- rng draws from ``evaluator.rng`` (a ``numpy.random.Generator``): the values are not XLA's, only their
  distribution. rng-bit-generator is XLA's exact bit stream (its RngBitGeneratorExpander, as the CPU and GPU
  backends run it): Philox4x32-10 for 'philox' and 'default', ThreeFry2x32-20 for 'three_fry'.
"""
from __future__ import annotations

import functools
import math
import string
from typing import Callable, Sequence, Union

import numpy as np

from .ir import Computation, Instruction, Module

Value = Union[np.ndarray, tuple]
Rule = Callable[[Instruction, list, "Evaluator"], Value]
RULES: dict[str, Rule] = {}

UNARY_OPS = frozenset({
    "abs", "negate", "exponential", "exponential-minus-one", "log", "log-plus-one", "logistic", "tanh",
    "sqrt", "rsqrt", "cbrt", "sine", "cosine", "tan", "floor", "ceil", "round-nearest-afz",
    "round-nearest-even", "sign", "not", "is-finite", "popcnt", "count-leading-zeros", "clz", "real", "imag",
    "erf"})  # 'clz' is accepted as a short name of XLA's count-leading-zeros
BINARY_OPS = frozenset({
    "add", "subtract", "multiply", "divide", "remainder", "maximum", "minimum", "power", "atan2", "and",
    "or", "xor", "shift-left", "shift-right-logical", "shift-right-arithmetic", "compare"})
# Ops that compute each output element from the same-index elements of their operands (select and
# clamp also accept rank-0 operands, which apply to every element).
ELEMENTWISE_OPS = UNARY_OPS | BINARY_OPS | {"select", "clamp", "convert"}


def rule(*opcodes: str):
    def register(fn: Rule) -> Rule:
        for op in opcodes:
            RULES[op] = fn
        return fn
    return register


# --- driver --------------------------------------------------------------------------------------
class Evaluator:
    """Evaluates computations; ``rng`` is the generator the rng ops draw from."""

    def __init__(self, rng: np.random.Generator | None = None):
        self.rng = rng if rng is not None else np.random.default_rng(0)

    def evaluate(self, comp: Computation, args: Sequence, vectorized: bool = False) -> Value:
        """Run ``comp`` on ``args`` (one per parameter, in parameter-number order).

        ``vectorized`` evaluates a scalar elementwise computation (a reducer, comparator...) on whole
        arrays at once: shapes are then not checked, NumPy broadcasting does the rest.
        """
        params = comp.parameters
        if len(args) != len(params):
            raise TypeError(f"computation {comp.name!r} takes {len(params)} arguments, got {len(args)}")
        env: dict[int, Value] = {}
        with np.errstate(all="ignore"):  # integer wrap-around, inf and NaN are the defined results
            for inst in comp.instructions:
                if inst.opcode == "parameter":
                    arg = args[inst.attrs["number"]]  # vectorized: rank-0 parameters receive arrays
                    env[inst.id] = (np.asarray(arg).astype(inst.shape.np_dtype, copy=False) if vectorized
                                    else _conform(inst, arg, "argument"))
                    continue
                fn = RULES.get(inst.opcode)
                if fn is None:
                    raise NotImplementedError(f"the reference evaluator has no rule for {inst.describe()}")
                try:
                    operands = [env[o.id] for o in inst.operands]
                except KeyError:
                    raise ValueError(f"{inst.describe()} in {comp.name!r} uses an operand that is not "
                                     "defined before it") from None
                try:
                    value = fn(inst, operands, self)
                except NotImplementedError:
                    raise
                except Exception as e:
                    e.add_note(f"while evaluating {inst.describe()} in computation {comp.name!r}")
                    raise
                env[inst.id] = value if vectorized else _conform(inst, value, "result")
        return env[comp.root.id]


def evaluate(computation: Computation, args: Sequence, rng: np.random.Generator | None = None) -> Value:
    return Evaluator(rng).evaluate(computation, list(args))


def evaluate_module(module: Module, args: Sequence, rng: np.random.Generator | None = None) -> Value:
    return evaluate(module.entry, args, rng)


def evaluate_instruction(inst: Instruction, operand_values: list, evaluator: Evaluator | None = None):
    """One instruction on given operand values (used by constant folding)."""
    if inst.opcode not in RULES:
        raise NotImplementedError(f"the reference evaluator has no rule for {inst.describe()}")
    with np.errstate(all="ignore"):
        return _conform(inst, RULES[inst.opcode](inst, operand_values, evaluator or Evaluator()), "result")


def _conform(inst: Instruction, value, what: str, shape=None) -> Value:
    """Check ``value`` against the instruction's shape; arguments are cast to its dtype, results must match."""
    shape = shape or inst.shape
    if shape.is_tuple:
        if not isinstance(value, (tuple, list)) or len(value) != len(shape.tuple_shapes):
            raise ValueError(f"{what} of {inst.describe()} should be a tuple of {len(shape.tuple_shapes)}")
        return tuple(_conform(inst, v, what, s) for v, s in zip(value, shape.tuple_shapes))
    arr = np.asarray(value)
    if what == "argument":
        arr = arr.astype(shape.np_dtype, copy=False)
    if arr.shape != shape.dims or arr.dtype != shape.np_dtype:
        raise ValueError(f"{what} of {inst.describe()} is {arr.dtype}{list(arr.shape)}, expected {shape}")
    return arr


# --- scalar computations (reducers, comparators, scatter combiners) --------------------------------
REDUCER_UFUNCS = {"add": np.add, "multiply": np.multiply, "maximum": np.maximum, "minimum": np.minimum,
                  "and": np.bitwise_and, "or": np.bitwise_or}
_PRED_UFUNCS = {"add": np.logical_or, "maximum": np.logical_or, "or": np.logical_or,
                "multiply": np.logical_and, "minimum": np.logical_and, "and": np.logical_and}


def simple_reducer(comp: Computation, dtype) -> np.ufunc | None:
    """The NumPy ufunc when ``comp`` is just ``op(p0, p1)`` for add/multiply/maximum/minimum/and/or."""
    root, params = comp.root, comp.parameters
    if len(comp.instructions) != 3 or len(params) != 2 or root.opcode not in REDUCER_UFUNCS:
        return None
    if sorted(o.id for o in root.operands) != sorted(p.id for p in params):
        return None
    return (_PRED_UFUNCS if np.dtype(dtype) == np.bool_ else REDUCER_UFUNCS)[root.opcode]


def _is_vectorizable(comp: Computation) -> bool:
    """True when every instruction is elementwise on rank-0 values, so arrays can flow through."""
    for inst in comp.instructions:
        if inst.shape.is_tuple:
            if inst.opcode not in ("tuple",):
                return False
        elif inst.shape.rank != 0:
            return False
        elif inst.opcode not in ELEMENTWISE_OPS | {"parameter", "constant", "get-tuple-element"}:
            return False
    return True


def apply_elementwise(ev: Evaluator, comp: Computation, args: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Apply the scalar computation ``comp`` element by element to (broadcastable) arrays.

    Returns the outputs as a list (one array per tuple element of the root, or one array).
    """
    args = np.broadcast_arrays(*[np.asarray(a) for a in args])
    shape = args[0].shape
    root_shapes = comp.root.shape.tuple_shapes if comp.root.shape.is_tuple else (comp.root.shape,)
    if _is_vectorizable(comp):
        out = ev.evaluate(comp, args, vectorized=True)
        out = list(out) if isinstance(out, tuple) else [out]
        return [np.broadcast_to(o, shape).astype(s.np_dtype) for o, s in zip(out, root_shapes)]
    outs = [np.empty(shape, s.np_dtype) for s in root_shapes]
    for i in np.ndindex(*shape):  # general computations: one scalar evaluation per element
        r = ev.evaluate(comp, [a[i] for a in args])
        for o, v in zip(outs, r if isinstance(r, tuple) else (r,)):
            o[i] = v
    return outs


# --- elementwise ---------------------------------------------------------------------------------
def _compute(x: np.ndarray) -> np.ndarray:
    """f16 math is done in f32 (and rounded back by the caller's astype)."""
    return x.astype(np.float32) if x.dtype == np.float16 else x


def _round_afz(x):
    t = np.trunc(x)
    return np.where(np.abs(x - t) >= 0.5, t + np.sign(x), t)


def _sign(x):
    if x.dtype.kind != "f":
        return np.sign(x)
    return np.where(np.isnan(x), x, np.copysign((x != 0).astype(x.dtype), x))  # keeps -0.0


def _unsigned(x):
    return x.view(np.dtype(f"u{x.dtype.itemsize}"))


def _clz(x):
    u, width = _unsigned(x), x.dtype.itemsize * 8
    bit_length = np.zeros(x.shape, np.int64)
    for b in range(width):
        bit_length = np.where((u >> np.uint8(b)) & 1, b + 1, bit_length)
    return width - bit_length


_UNARY = {
    "abs": np.abs, "negate": np.negative, "exponential": np.exp, "exponential-minus-one": np.expm1,
    "log": np.log, "log-plus-one": np.log1p, "logistic": lambda x: 1 / (1 + np.exp(-x)), "tanh": np.tanh,
    "sqrt": np.sqrt, "rsqrt": lambda x: 1 / np.sqrt(x), "cbrt": np.cbrt, "sine": np.sin,
    "cosine": np.cos, "tan": np.tan, "floor": np.floor, "ceil": np.ceil,
    "round-nearest-afz": _round_afz, "round-nearest-even": np.rint, "sign": _sign,
    "not": lambda x: np.logical_not(x) if x.dtype == np.bool_ else np.invert(x),
    "is-finite": np.isfinite, "popcnt": lambda x: np.bitwise_count(_unsigned(x)), "count-leading-zeros": _clz,
    "clz": _clz,
    "real": lambda x: x, "imag": np.zeros_like,
    "erf": lambda x: np.vectorize(math.erf, otypes=[np.float64])(x.astype(np.float64)),
}


@rule(*_UNARY)
def _unary(inst, ops, ev):
    return np.asarray(_UNARY[inst.opcode](_compute(ops[0]))).astype(inst.shape.np_dtype)


def _int_div_masks(x, y):
    zero = y == 0
    overflow = (x == np.iinfo(x.dtype).min) & (y == -1) if x.dtype.kind == "i" else np.zeros_like(zero)
    return zero, overflow, np.where(zero | overflow, np.ones_like(y), y)


def _int_divide(x, y):
    zero, overflow, safe = _int_div_masks(x, y)
    q = np.floor_divide(x, safe)
    q = q + ((np.remainder(x, safe) != 0) & ((x < 0) != (safe < 0)))  # floor -> toward zero
    all_ones = np.invert(np.zeros((), x.dtype))  # -1 for signed, the maximum for unsigned
    return np.where(zero, all_ones, np.where(overflow, x, q.astype(x.dtype)))


def _int_remainder(x, y):
    zero, overflow, safe = _int_div_masks(x, y)
    return np.where(zero, x, np.where(overflow, np.zeros_like(x), np.fmod(x, safe)))


def _int_power(x, y):
    acc, base, e = np.ones_like(x), x.copy(), _unsigned(np.asarray(y, x.dtype)).copy()
    for _ in range(x.dtype.itemsize * 8):  # square-and-multiply; products wrap like the hardware's
        acc = np.where(e & 1, acc * base, acc)
        base, e = base * base, e >> np.uint8(1)
    if x.dtype.kind == "i":
        acc = np.where(y < 0, (x == 1).astype(x.dtype), acc)
    return acc


def _shift(x, y, op):
    width = x.dtype.itemsize * 8
    big = _unsigned(np.asarray(y, x.dtype)) >= width  # negative amounts are huge unsigned ones too
    amount = np.where(big, 0, y).astype(x.dtype)
    if op == "shift-left":
        return np.where(big, 0, np.left_shift(x, amount)).astype(x.dtype)
    if op == "shift-right-logical":
        return np.where(big, 0, np.right_shift(_unsigned(x), _unsigned(amount)).view(x.dtype)).astype(x.dtype)
    return np.where(big, np.where(x < 0, -1, 0), np.right_shift(x, amount)).astype(x.dtype)


def _total_order_key(x):
    """Map floats to signed ints whose order is IEEE totalOrder."""
    bits = x.view(np.dtype(f"i{x.dtype.itemsize}"))
    return np.where(bits < 0, bits ^ np.iinfo(bits.dtype).max, bits)


_COMPARE = {"EQ": np.equal, "NE": np.not_equal, "LT": np.less, "LE": np.less_equal, "GT": np.greater,
            "GE": np.greater_equal}
_FLOAT_BINARY = {"add": np.add, "subtract": np.subtract, "multiply": np.multiply, "divide": np.divide,
                 "remainder": np.fmod, "maximum": np.maximum, "minimum": np.minimum, "power": np.power,
                 "atan2": np.arctan2}
_INT_BINARY = {"add": np.add, "subtract": np.subtract, "multiply": np.multiply, "divide": _int_divide,
               "remainder": _int_remainder, "maximum": np.maximum, "minimum": np.minimum,
               "power": _int_power, "and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor}


@rule(*(BINARY_OPS - {"compare"}))
def _binary(inst, ops, ev):
    x, y = ops
    op = inst.opcode
    if op.startswith("shift"):
        return _shift(x, y, op)
    if x.dtype == np.bool_:
        fn = {**_PRED_UFUNCS, "xor": np.logical_xor}[op]
    elif x.dtype.kind == "f":
        fn = _FLOAT_BINARY[op]
        x, y = _compute(x), _compute(y)
    else:
        fn = _INT_BINARY[op]
    return np.asarray(fn(x, y)).astype(inst.shape.np_dtype)


@rule("compare")
def _compare(inst, ops, ev):
    x, y = ops
    if str(inst.attrs.get("compare_type", "")).upper().endswith("TOTALORDER") and x.dtype.kind == "f":
        x, y = _total_order_key(x), _total_order_key(y)
    return _COMPARE[inst.attrs["direction"].upper()](x, y)


def convert(x: np.ndarray, to) -> np.ndarray:
    to = np.dtype(to)
    if to == np.bool_:
        return x != 0
    if x.dtype.kind == "f" and to.kind in "iu":
        info, t = np.iinfo(to), np.trunc(x.astype(np.float64))
        high, low = t >= float(info.max), t <= float(info.min)
        mid = np.where(high | low | np.isnan(t), 0, t).astype(to)
        return np.where(high, info.max, np.where(low, info.min, mid)).astype(to)
    return x.astype(to)  # int -> int wraps, numbers -> float round to nearest


RULES.update({
    "select": lambda inst, ops, ev: np.where(ops[0], ops[1], ops[2]).astype(inst.shape.np_dtype),
    "clamp": lambda inst, ops, ev: np.minimum(np.maximum(ops[1], ops[0]), ops[2]).astype(inst.shape.np_dtype),
    "convert": lambda inst, ops, ev: convert(ops[0], inst.shape.np_dtype),
    "bitcast-convert": lambda inst, ops, ev: np.ascontiguousarray(ops[0]).view(inst.shape.np_dtype).reshape(
        inst.shape.dims),
})


# --- leaves --------------------------------------------------------------------------------------
@rule("constant")
def _constant(inst, ops, ev):
    def literal(value, shape):  # a tuple-shaped constant holds a tuple of arrays
        if shape.is_tuple:
            return tuple(literal(v, s) for v, s in zip(value, shape.tuple_shapes))
        return np.asarray(value).astype(shape.np_dtype).reshape(shape.dims)
    return literal(inst.attrs["value"], inst.shape)


@rule("iota")
def _iota(inst, ops, ev):
    dims, d = inst.shape.dims, inst.attrs["iota_dimension"]
    line = np.arange(dims[d]).reshape([-1 if i == d else 1 for i in range(len(dims))])
    return np.broadcast_to(line, dims).astype(inst.shape.np_dtype)


@rule("rng")
def _rng(inst, ops, ev):
    a, b = ops
    dtype, dims = inst.shape.np_dtype, inst.shape.dims
    if "normal" in str(inst.attrs["distribution"]).lower():  # a = mean, b = standard deviation
        return (a.astype(np.float64) + b * ev.rng.standard_normal(dims)).astype(dtype)
    if dtype.kind in "iu":
        return ev.rng.integers(int(a), int(b), size=dims).astype(dtype)
    x = (a + (b.astype(np.float64) - a) * ev.rng.random(dims)).astype(dtype)
    return np.where(x >= b, np.nextafter(b, a), x).astype(dtype)  # rounding must not reach b


_U32 = np.uint64(0xFFFFFFFF)


def _split_u64(x):
    """u64 -> (low word, high word) as u32."""
    x = np.asarray(x, np.uint64)
    return (x & _U32).astype(np.uint32), (x >> np.uint64(32)).astype(np.uint32)


def _join_u32(lo, hi):
    return lo.astype(np.uint64) | (hi.astype(np.uint64) << np.uint64(32))


def philox4x32(words, key):
    """Philox4x32 with 10 rounds: ``words`` four u32 arrays (least significant first), ``key`` two u32 scalars."""
    x = [np.asarray(w, np.uint32) for w in words]
    k0, k1 = np.uint32(key[0]), np.uint32(key[1])
    for _ in range(10):
        p0 = x[0].astype(np.uint64) * np.uint64(0xD2511F53)
        p1 = x[2].astype(np.uint64) * np.uint64(0xCD9E8D57)
        lo0, hi0 = _split_u64(p0)
        lo1, hi1 = _split_u64(p1)
        x = [hi1 ^ x[1] ^ k0, lo1, hi0 ^ x[3] ^ k1, lo0]
        k0, k1 = k0 + np.uint32(0x9E3779B9), k1 + np.uint32(0xBB67AE85)
    return x


def threefry2x32(x0, x1, key):
    """ThreeFry2x32 with 20 rounds on u32 arrays ``x0``, ``x1``; ``key`` two u32 scalars."""
    ks = [np.uint32(key[0]), np.uint32(key[1])]
    ks.append(np.uint32(0x1BD11BDA) ^ ks[0] ^ ks[1])
    x0, x1 = np.asarray(x0, np.uint32) + ks[0], np.asarray(x1, np.uint32) + ks[1]
    rotations = ((13, 15, 26, 6), (17, 29, 16, 24))
    for i in range(5):
        for r in rotations[i % 2]:
            x0 = x0 + x1
            x1 = (x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))
            x1 = x1 ^ x0
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


def _u128_add(lo, hi, n):
    new_lo = lo + np.asarray(n, np.uint64)
    return new_lo, hi + (new_lo < lo).astype(np.uint64)


@np.errstate(over="ignore")
def philox_bits(state: np.ndarray, dims, itemsize: int):
    """XLA's Philox RngBitGenerator: (new state, unsigned words of ``itemsize`` bytes shaped ``dims``)."""
    state = np.asarray(state, np.uint64)
    key = state[0]
    lo, hi = (state[1], state[2]) if state.size >= 3 else (state[1], state[0])
    n = math.prod(dims)
    nblocks = -(-(2 * n if itemsize == 8 else n) // 4)            # 128 bits a block
    c_lo, c_hi = _u128_add(lo, hi, np.arange(nblocks, dtype=np.uint64))
    x = philox4x32([*_split_u64(c_lo), *_split_u64(c_hi)], _split_u64(key))
    if itemsize == 8:
        x = [_join_u32(x[0], x[1]), _join_u32(x[2], x[3])]
    words = np.stack(x, axis=1).reshape(-1)[:n]                 # block b gives elements 4b..4b+3 (2b, 2b+1)
    words = words.astype(np.dtype(f"u{itemsize}")).reshape(dims)  # narrow types keep the low bits
    new_lo, new_hi = _u128_add(lo, hi, nblocks)
    new_state = state.copy()
    new_state[1] = new_lo
    if state.size >= 3:
        new_state[2] = new_hi
    return new_state, words


@np.errstate(over="ignore")
def threefry_bits(state: np.ndarray, dims, itemsize: int):
    """XLA's ThreeFry RngBitGenerator: (new state, unsigned words of ``itemsize`` bytes shaped ``dims``)."""
    state = np.asarray(state, np.uint64)
    key, counter = _split_u64(state[0]), state[1]
    dims = tuple(dims)
    new_state = state.copy()
    if itemsize == 8:
        n = math.prod(dims)
        x0, x1 = threefry2x32(*_split_u64(counter + np.arange(n, dtype=np.uint64)), key)
        new_state[1] = counter + np.uint64(n)
        return new_state, _join_u32(x0, x1).reshape(dims)
    # 32 bits and narrower: the counters cover half the shape (one dimension halved), each gives two words
    if not dims:
        x0, _ = threefry2x32(*_split_u64(counter), key)
        new_state[1] = counter + np.uint64(1)
        return new_state, x0.astype(np.dtype(f"u{itemsize}")).reshape(())
    even = [i for i, d in enumerate(dims) if d % 2 == 0]
    split = even[0] if even else int(np.argmax(dims))
    half = list(dims)
    half[split] = -(-dims[split] // 2)
    m = math.prod(half)
    x0, x1 = threefry2x32(*_split_u64(counter + np.arange(m, dtype=np.uint64)), key)
    pairs = np.stack([x0.reshape(half), x1.reshape(half)], axis=split + 1)
    full = list(dims)
    full[split] = 2 * half[split]
    words = pairs.reshape(full)[tuple(slice(0, d) for d in dims)]
    new_state[1] = counter + np.uint64(m)
    return new_state, words.astype(np.dtype(f"u{itemsize}"))


@rule("rng-bit-generator")
def _rng_bit_generator(inst, ops, ev):
    bits = inst.shape.tuple_shapes[1]
    algorithm = inst.attrs.get("algorithm", "default")
    generate = threefry_bits if algorithm == "three_fry" else philox_bits   # XLA's CPU/GPU default: Philox
    new_state, words = generate(ops[0], bits.dims, bits.itemsize)
    return new_state, np.ascontiguousarray(words).view(bits.np_dtype).reshape(bits.dims)


# --- data movement -------------------------------------------------------------------------------
def broadcast(x: np.ndarray, dimensions, dims) -> np.ndarray:
    """Operand dimension i becomes output dimension ``dimensions[i]``."""
    order = sorted(range(len(dimensions)), key=lambda i: dimensions[i])
    x = np.transpose(x, order)
    shape = [1] * len(dims)
    for i, d in enumerate(sorted(dimensions)):
        shape[d] = x.shape[i]
    return np.broadcast_to(x.reshape(shape), dims).copy()


@rule("slice")
def _slice(inst, ops, ev):
    a, ones = inst.attrs, [1] * len(inst.attrs["starts"])
    return ops[0][tuple(slice(*bes) for bes in zip(a["starts"], a["limits"], a.get("strides") or ones))]


def pad(x: np.ndarray, value, config) -> np.ndarray:
    """``config`` is (low, high, interior) per dimension; negative low/high remove elements."""
    value = np.asarray(value, x.dtype)[()]
    for axis, (low, high, interior) in enumerate(config):
        if interior and x.shape[axis] > 1:
            n = x.shape[axis]
            spread = list(x.shape)
            spread[axis] = n + (n - 1) * interior
            holes = np.full(spread, value, x.dtype)
            holes[(slice(None),) * axis + (slice(None, None, interior + 1),)] = x
            x = holes
        if low > 0 or high > 0:
            widths = [(0, 0)] * x.ndim
            widths[axis] = (max(low, 0), max(high, 0))
            x = np.pad(x, widths, constant_values=value)
        stop = x.shape[axis] + min(high, 0)
        x = x[(slice(None),) * axis + (slice(-min(low, 0), max(stop, -min(low, 0))),)]
    return x


RULES.update({
    "broadcast": lambda inst, ops, ev: broadcast(ops[0], inst.attrs["dimensions"], inst.shape.dims),
    "reshape": lambda inst, ops, ev: ops[0].reshape(inst.shape.dims),
    "bitcast": lambda inst, ops, ev: ops[0].reshape(inst.shape.dims),  # layouts are not modelled
    "copy": lambda inst, ops, ev: ops[0],  # values are immutable here: no rule mutates an operand
    "optimization-barrier": lambda inst, ops, ev: ops[0],
    "set-dimension-size": lambda inst, ops, ev: ops[0],  # with static shapes the data is unchanged
    "get-dimension-size": lambda inst, ops, ev: np.asarray(ops[0].shape[inst.attrs["dimensions"][0]],
                                                           inst.shape.np_dtype),
    "transpose": lambda inst, ops, ev: np.transpose(ops[0], inst.attrs["dimensions"]),  # out dim i = in dims[i]
    "concatenate": lambda inst, ops, ev: np.concatenate(ops, axis=inst.attrs["dimension"]),
    "pad": lambda inst, ops, ev: pad(ops[0], ops[1], inst.attrs["padding"]),
    "reverse": lambda inst, ops, ev: np.flip(ops[0], axis=tuple(inst.attrs["dimensions"])),
    "tuple": lambda inst, ops, ev: tuple(ops),
    "get-tuple-element": lambda inst, ops, ev: ops[0][inst.attrs["index"]],
})


def _starts(starts, shape, sizes) -> list[int]:
    if len(starts) == 1 and np.ndim(starts[0]) == 1:  # the old form: one vector of start indices
        starts = list(starts[0])
    return [min(max(int(s), 0), d - n) for s, d, n in zip(starts, shape, sizes)]


@rule("dynamic-slice")
def _dynamic_slice(inst, ops, ev):
    x, sizes = ops[0], inst.attrs["slice_sizes"]
    begin = _starts(ops[1:], x.shape, sizes)
    return x[tuple(slice(b, b + n) for b, n in zip(begin, sizes))].copy()


@rule("dynamic-update-slice")
def _dynamic_update_slice(inst, ops, ev):
    x, update = ops[0].copy(), ops[1]
    begin = _starts(ops[2:], x.shape, update.shape)
    x[tuple(slice(b, b + n) for b, n in zip(begin, update.shape))] = update
    return x


def _index_vectors(indices, index_vector_dim):
    """Indices with the index vector moved last (a trailing 1 is implied when ivd == rank)."""
    if index_vector_dim == indices.ndim:
        indices = indices[..., None]
    return np.moveaxis(indices, index_vector_dim, -1).astype(np.int64)


@rule("gather")
def _gather(inst, ops, ev):
    operand, a = ops[0], inst.attrs
    ivd, sizes = a["index_vector_dim"], tuple(a["slice_sizes"])
    collapsed = tuple(a.get("collapsed_slice_dims", ()))
    op_batch, idx_batch = tuple(a.get("operand_batching_dims", ())), a.get("start_indices_batching_dims", ())
    idx = _index_vectors(ops[1], ivd)
    batch_shape = idx.shape[:-1]
    nb = len(batch_shape)
    starts = np.zeros(batch_shape + (operand.ndim,), np.int64)
    for k, d in enumerate(a["start_index_map"]):
        starts[..., d] = idx[..., k]
    for od, idim in zip(op_batch, idx_batch):  # batching dims pair operand and index batch positions
        pos = idim if idim < ivd else idim - 1
        starts[..., od] = np.arange(batch_shape[pos]).reshape([-1 if i == pos else 1 for i in range(nb)])
    starts = np.clip(starts, 0, np.array(operand.shape) - np.array(sizes))
    window = [d for d in range(operand.ndim) if d not in collapsed and d not in op_batch]
    nw = len(window)
    index = []
    for d in range(operand.ndim):
        s = starts[..., d].reshape(batch_shape + (1,) * nw)
        if d in window:
            j = window.index(d)
            s = s + np.arange(sizes[d]).reshape((1,) * nb + tuple(-1 if i == j else 1 for i in range(nw)))
        index.append(s)
    result = operand[tuple(index)]  # batch dims..., window dims...
    offset_dims = tuple(a["offset_dims"])
    batch_pos = [i for i in range(nb + nw) if i not in offset_dims]
    perm = [0] * (nb + nw)
    for i, p in enumerate(batch_pos):
        perm[p] = i
    for j, p in enumerate(offset_dims):
        perm[p] = nb + j
    return np.transpose(result, perm)


@rule("scatter")
def _scatter(inst, ops, ev):
    n, a = (len(ops) - 1) // 2, inst.attrs
    outs, updates, ivd = [o.copy() for o in ops[:n]], ops[n + 1:], a["index_vector_dim"]
    idx = _index_vectors(ops[n], ivd)
    inserted, in_batch = tuple(a.get("inserted_window_dims", ())), tuple(a.get("input_batching_dims", ()))
    window = [d for d in range(outs[0].ndim) if d not in inserted and d not in in_batch]
    window_sizes = [updates[0].shape[d] for d in a["update_window_dims"]]
    scatter_dims = [d for d in range(updates[0].ndim) if d not in a["update_window_dims"]]
    comp = inst.called["to_apply"]
    ufunc = simple_reducer(comp, outs[0].dtype) if n == 1 else None
    for g in np.ndindex(*idx.shape[:-1]):  # one update window per scatter index, in order
        start = [0] * outs[0].ndim
        for k, d in enumerate(a["scatter_dims_to_operand_dims"]):
            start[d] = int(idx[g + (k,)])
        for od, sdim in zip(in_batch, a.get("scatter_indices_batching_dims", ())):
            start[od] = g[sdim if sdim < ivd else sdim - 1]
        region, fits = [], True
        for d, size in enumerate(outs[0].shape):
            w = window_sizes[window.index(d)] if d in window else 1
            fits &= 0 <= start[d] and start[d] + w <= size
            region.append(slice(start[d], start[d] + w) if d in window else start[d])
        if not fits:
            continue
        upd_index = [slice(None)] * updates[0].ndim
        for pos, d in zip(g, scatter_dims):
            upd_index[d] = pos
        region, upd_index = tuple(region), tuple(upd_index)
        if ufunc is not None:
            outs[0][region] = ufunc(outs[0][region], updates[0][upd_index])
            continue
        new = apply_elementwise(ev, comp, [o[region] for o in outs] + [u[upd_index] for u in updates])
        for o, v in zip(outs, new):
            o[region] = v
    return tuple(outs) if inst.shape.is_tuple else outs[0]


# --- reductions ----------------------------------------------------------------------------------
@rule("reduce")
def _reduce(inst, ops, ev):
    n = len(ops) // 2
    inputs, inits, dims = ops[:n], ops[n:], tuple(inst.attrs["dimensions"])
    comp = inst.called["to_apply"]
    ufunc = simple_reducer(comp, inputs[0].dtype) if n == 1 else None
    # ufunc.reduce sums pairwise (and f16 in f32): the fold below rounds f16 after every op instead
    if ufunc is not None and all(inputs[0].shape[d] for d in dims) and inputs[0].dtype != np.float16:
        x = inputs[0]
        return ufunc(inits[0], ufunc.reduce(x, axis=dims, dtype=x.dtype)).astype(x.dtype)
    kept = [d for d in range(inputs[0].ndim) if d not in dims]
    kept_shape = [inputs[0].shape[d] for d in kept]
    count = int(np.prod([inputs[0].shape[d] for d in dims], dtype=np.int64))
    rows = [np.transpose(x, kept + list(dims)).reshape(kept_shape + [count]) for x in inputs]
    acc = [np.broadcast_to(init, kept_shape) for init in inits]
    for r in range(rows[0].shape[-1]):  # fold the reduced elements in row-major order
        acc = apply_elementwise(ev, comp, acc + [x[..., r] for x in rows])
    acc = [np.array(v, dtype=i.dtype) for v, i in zip(acc, inits)]
    return tuple(acc) if inst.shape.is_tuple else acc[0]


def _window(inst) -> list[dict]:
    """The window with defaults filled in (0 in a proto field means 'unset' for strides/dilations)."""
    out = []
    for w in inst.attrs.get("window", ()):
        out.append({"size": w["size"], "stride": w.get("stride") or 1, "pad_low": w.get("pad_low", 0),
                    "pad_high": w.get("pad_high", 0), "window_dilation": w.get("window_dilation") or 1,
                    "base_dilation": w.get("base_dilation") or 1, "reversal": bool(w.get("reversal"))})
    return out


def _window_slices(padded_shape, win, k):
    """For window offset k: a strided slice whose element o is the window element at output o."""
    out, sl = [], []
    for size, w, kd in zip(padded_shape, win, k):
        span = (w["size"] - 1) * w["window_dilation"] + 1
        o = (size - span) // w["stride"] + 1 if size >= span else 0
        out.append(o)
        start = kd * w["window_dilation"]
        sl.append(slice(start, start + (o - 1) * w["stride"] + 1, w["stride"]) if o else slice(0, 0))
    return out, tuple(sl)


@rule("reduce-window")
def _reduce_window(inst, ops, ev):
    n, win, comp = len(ops) // 2, _window(inst), inst.called["to_apply"]
    inputs, inits = ops[:n], ops[n:]
    config = [(w["pad_low"], w["pad_high"], w["base_dilation"] - 1) for w in win]
    padded = [pad(x, init, config) for x, init in zip(inputs, inits)]  # holes hold the init value
    out_shape, _ = _window_slices(padded[0].shape, win, [0] * len(win))
    acc = [np.broadcast_to(init, out_shape).copy() for init in inits]
    ufunc = simple_reducer(comp, inputs[0].dtype) if n == 1 else None
    for k in np.ndindex(*[w["size"] for w in win]):
        _, sl = _window_slices(padded[0].shape, win, k)
        vals = [p[sl] for p in padded]
        acc = [ufunc(acc[0], vals[0])] if ufunc else apply_elementwise(ev, comp, acc + vals)
    acc = [np.asarray(v).astype(i.dtype) for v, i in zip(acc, inits)]
    return tuple(acc) if inst.shape.is_tuple else acc[0]


@rule("select-and-scatter")
def _select_and_scatter(inst, ops, ev):
    operand, source, init = ops
    win, rank = _window(inst), operand.ndim
    have = np.zeros(source.shape, bool)
    best_val = np.zeros(source.shape, operand.dtype)
    best_pos = np.zeros((rank,) + source.shape, np.int64)
    grid = np.indices(source.shape)
    for k in np.ndindex(*[w["size"] for w in win]):  # scan each window in order, keep the selected
        coords = [grid[d] * win[d]["stride"] + k[d] - win[d]["pad_low"] for d in range(rank)]
        valid = np.logical_and.reduce([(c >= 0) & (c < s) for c, s in zip(coords, operand.shape)])
        coords = [np.clip(c, 0, s - 1) for c, s in zip(coords, operand.shape)]
        cand = operand[tuple(coords)]
        keep = apply_elementwise(ev, inst.called["select"], [best_val, cand])[0]
        take = valid & (~have | ~keep)  # padding is never selected
        best_val = np.where(take, cand, best_val)
        best_pos = np.where(take, np.stack(coords), best_pos)
        have |= valid
    out = np.broadcast_to(init, operand.shape).copy().reshape(-1)
    targets = np.ravel_multi_index(best_pos.reshape(rank, -1), operand.shape)[have.reshape(-1)]
    values = source.reshape(-1)[have.reshape(-1)]
    ufunc = simple_reducer(inst.called["scatter"], operand.dtype)
    if ufunc is not None:
        ufunc.at(out, targets, values)
    else:
        for t, v in zip(targets, values):
            out[t] = apply_elementwise(ev, inst.called["scatter"], [out[t], v])[0]
    return out.reshape(operand.shape)


# --- contractions --------------------------------------------------------------------------------
def _accumulator(dtype) -> np.dtype:
    return np.dtype(np.float64) if np.dtype(dtype).kind == "f" else np.dtype(dtype)


@rule("dot")
def _dot(inst, ops, ev):
    lhs, rhs = ops
    a, letters = inst.attrs, iter(string.ascii_letters)
    lb, rb = a.get("lhs_batch_dims", ()), a.get("rhs_batch_dims", ())
    lc, rc = a.get("lhs_contracting_dims", ()), a.get("rhs_contracting_dims", ())
    ls, rs = [""] * lhs.ndim, [""] * rhs.ndim
    for i, j in list(zip(lb, rb)) + list(zip(lc, rc)):
        ls[i] = rs[j] = next(letters)
    lfree = [i for i in range(lhs.ndim) if not ls[i]]
    rfree = [j for j in range(rhs.ndim) if not rs[j]]
    for i in lfree:
        ls[i] = next(letters)
    for j in rfree:
        rs[j] = next(letters)
    out = "".join([ls[i] for i in lb] + [ls[i] for i in lfree] + [rs[j] for j in rfree])
    acc = _accumulator(inst.shape.np_dtype)
    return np.einsum(f"{''.join(ls)},{''.join(rs)}->{out}", lhs.astype(acc), rhs.astype(acc)).astype(
        inst.shape.np_dtype)


def _conv(x, w, win):
    """x: (N, C, *spatial), w: (O, C, *kernel) -> (N, O, *out); no groups."""
    x = pad(x, 0, [(0, 0, 0)] * 2 + [(d["pad_low"], d["pad_high"], d["base_dilation"] - 1) for d in win])
    for i, d in enumerate(win):
        if d["reversal"]:
            w = np.flip(w, axis=2 + i)
    out_shape, _ = _window_slices(x.shape[2:], win, [0] * len(win))
    y = np.zeros((x.shape[0], w.shape[0], *out_shape), x.dtype)
    if 0 in out_shape:
        return y
    for k in np.ndindex(*w.shape[2:]):  # one kernel tap at a time: y += x[window tap] . w[tap]
        _, sl = _window_slices(x.shape[2:], win, k)
        y += np.einsum("nc...,oc->no...", x[(slice(None), slice(None)) + sl], w[(slice(None),) * 2 + k])
    return y


def _grouped_conv(x, w, win, feature_groups, batch_groups):
    # feature groups split input features and kernel output features; batch groups split the batch
    # and the kernel output features; the group results are concatenated along output features.
    if feature_groups > 1:
        parts = zip(np.split(x, feature_groups, axis=1), np.split(w, feature_groups, axis=0))
    elif batch_groups > 1:
        parts = zip(np.split(x, batch_groups, axis=0), np.split(w, batch_groups, axis=0))
    else:
        return _conv(x, w, win)
    return np.concatenate([_conv(xi, wi, win) for xi, wi in parts], axis=1)


@rule("convolution")
def _convolution(inst, ops, ev):
    dn, acc = inst.attrs["dnums"], _accumulator(inst.shape.np_dtype)
    x = np.transpose(ops[0], [dn["input_batch_dimension"], dn["input_feature_dimension"],
                              *dn["input_spatial_dimensions"]]).astype(acc)
    w = np.transpose(ops[1], [dn["kernel_output_feature_dimension"], dn["kernel_input_feature_dimension"],
                              *dn["kernel_spatial_dimensions"]]).astype(acc)
    y = _grouped_conv(x, w, _window(inst), inst.attrs.get("feature_group_count") or 1,
                      inst.attrs.get("batch_group_count") or 1)
    order = [dn["output_batch_dimension"], dn["output_feature_dimension"], *dn["output_spatial_dimensions"]]
    return np.transpose(y, np.argsort(order)).astype(inst.shape.np_dtype)


# --- control flow and called computations ---------------------------------------------------------
RULES.update({
    "map": lambda inst, ops, ev: apply_elementwise(ev, inst.called["to_apply"], ops)[0],
    "call": lambda inst, ops, ev: ev.evaluate(inst.called["to_apply"], ops),
    "fusion": lambda inst, ops, ev: ev.evaluate(inst.called["fused"], ops),
})


@rule("while")
def _while(inst, ops, ev):
    state = ops[0]
    while bool(ev.evaluate(inst.called["condition"], [state])):
        state = ev.evaluate(inst.called["body"], [state])
    return state


@rule("conditional")
def _conditional(inst, ops, ev):
    selector, n = ops[0], sum(1 for k in inst.called if k.startswith("branch_"))
    if selector.dtype == np.bool_:
        index = 0 if selector else 1  # branch_0 is the true branch
    else:
        index = int(selector) if 0 <= int(selector) < n else n - 1  # out of range -> last branch
    return ev.evaluate(inst.called[f"branch_{index}"], [ops[1 + index]])


def _sort_order(ev, comp, columns) -> np.ndarray:
    """A stable order of positions 0..n-1 under the comparator (a strict weak 'less than')."""
    n = len(columns[0])
    if n * n <= 1 << 22 and _is_vectorizable(comp):
        args = [a for c in columns for a in (c[:, None], c[None, :])]
        less = apply_elementwise(ev, comp, args)[0]  # less[i, j]: element i sorts before j
        # the number of elements sorting before j is a key that orders j exactly as the comparator
        return np.argsort(less.sum(axis=0), kind="stable")

    def cmp(i, j):
        before = lambda p, q: bool(ev.evaluate(comp, [a for c in columns for a in (c[p], c[q])]))
        return -1 if before(i, j) else (1 if before(j, i) else 0)
    return np.array(sorted(range(n), key=functools.cmp_to_key(cmp)), np.int64)


@rule("sort")
def _sort(inst, ops, ev):
    dims = inst.attrs["dimensions"]
    dim = dims[0] if isinstance(dims, (tuple, list)) else dims
    moved = [np.moveaxis(x, dim, -1) for x in ops]
    order = np.zeros(moved[0].shape, np.int64)
    for r in np.ndindex(*moved[0].shape[:-1]):
        order[r] = _sort_order(ev, inst.called["to_apply"], [m[r] for m in moved])
    outs = [np.moveaxis(np.take_along_axis(m, order, axis=-1), -1, dim) for m in moved]
    return tuple(outs) if inst.shape.is_tuple else outs[0]


# --- numerics ------------------------------------------------------------------------------------
@rule("reduce-precision")
def _reduce_precision(inst, ops, ev):
    # Round to nearest even into `mantissa_bits`, flush out-of-range exponents to 0/inf (XLA's algorithm).
    x, eb, mb = ops[0], inst.attrs["exponent_bits"], inst.attrs["mantissa_bits"]
    info, nbits = np.finfo(x.dtype), x.dtype.itemsize * 8
    u = np.dtype(f"u{x.dtype.itemsize}").type
    src_m, src_e = info.nmant, info.nexp
    bits = _unsigned(x).copy()
    sign_mask, exp_mask = u(1 << (nbits - 1)), u(((1 << src_e) - 1) << src_m)
    is_nan = (bits & ~sign_mask) > exp_mask
    if mb < src_m:
        last = 1 << (src_m - mb)
        bias = ((bits & u(last)) >> u(src_m - mb)) + u((last >> 1) - 1)
        bits = (bits + bias) & ~u(last - 1)
    if eb < src_e:
        bias, reduced = (1 << (src_e - 1)) - 1, (1 << (eb - 1)) - 1
        exponent = bits & exp_mask
        signed_zero = bits & sign_mask
        bits = np.where(exponent > u((bias + reduced) << src_m), signed_zero | exp_mask, bits)
        bits = np.where(exponent <= u((bias - reduced) << src_m), signed_zero, bits)
    result = bits.astype(u).view(x.dtype)
    return np.where(is_nan, x if mb > 0 else np.inf, result).astype(x.dtype)


def _batch_norm_args(inst, ops):
    """Operands in f64, the axes reduced per feature, and a reshape of per-feature vectors to broadcast."""
    x, f = ops[0].astype(np.float64), inst.attrs["feature_index"]
    per_feature = lambda v: v.reshape([-1 if d == f else 1 for d in range(x.ndim)])  # noqa: E731
    return [x] + [o.astype(np.float64) for o in ops[1:]], tuple(d for d in range(x.ndim) if d != f), per_feature


@rule("batch-norm-inference")
def _batch_norm_inference(inst, ops, ev):
    (x, scale, offset, mean, var), _, c = _batch_norm_args(inst, ops)
    eps = inst.attrs["epsilon"]
    return ((x - c(mean)) / np.sqrt(c(var) + eps) * c(scale) + c(offset)).astype(inst.shape.np_dtype)


@rule("batch-norm-training")
def _batch_norm_training(inst, ops, ev):
    (x, scale, offset), axes, c = _batch_norm_args(inst, ops)
    eps, dtype = inst.attrs["epsilon"], ops[0].dtype
    mean, var = x.mean(axis=axes), x.var(axis=axes)  # biased variance, as XLA
    y = (x - c(mean)) / np.sqrt(c(var) + eps) * c(scale) + c(offset)
    return y.astype(dtype), mean.astype(dtype), var.astype(dtype)


@rule("batch-norm-grad")
def _batch_norm_grad(inst, ops, ev):
    (x, scale, mean, var, dy), axes, c = _batch_norm_args(inst, ops)
    eps, dtype = inst.attrs["epsilon"], ops[0].dtype
    count = x.size // x.shape[inst.attrs["feature_index"]]
    centered, inv_std = x - c(mean), 1 / np.sqrt(var + eps)
    d_offset = dy.sum(axis=axes)
    d_scale = (dy * centered).sum(axis=axes) * inv_std
    dx = c(scale * inv_std) * (dy - c(d_offset) / count
                               - centered * c((dy * centered).sum(axis=axes) / (var + eps)) / count)
    return dx.astype(dtype), d_scale.astype(dtype), d_offset.astype(dtype)


@rule("custom-call")
def _custom_call(inst, ops, ev):
    raise NotImplementedError(f"custom-call target {inst.attrs.get('target')!r} has no reference "
                              f"semantics: {inst.describe()}")
