"""Ops that Keras 3 training first needed: ``rng-bit-generator`` (the stateless RNG behind Dropout).

``rng-bit-generator(state)`` returns ``(new_state, bits)`` with XLA's exact bit stream, as XLA's
RngBitGeneratorExpander defines it for the CPU and GPU backends, so that ``tf.random.stateless_*``, Dropout and
``tf.random.Generator`` draw the same numbers here as TensorFlow with XLA on the CPU:

- ``philox`` (and ``default``, which XLA's CPU backend runs as Philox): Philox4x32-10. The key is ``state[0]``
  (low word first); the 128-bit counter is ``state[1:3]`` (low u64 first) for ``u64[k>=3]``, or ``(state[1],
  state[0])`` for ``u64[2]``. Block ``b`` encrypts ``counter + b`` into four u32 words; 32-bit elements take them
  in order (element ``i`` is word ``i % 4`` of block ``i // 4``), 8- and 16-bit elements are the low bits of
  those 32-bit words, 64-bit element ``i`` is words ``(0, 1)`` or ``(2, 3)`` of block ``i // 2`` (low word
  first). The new state keeps the key and advances the counter (with carry) by the number of blocks,
  ``ceil(n / 4)`` or ``ceil(n / 2)``; a ``u64[2]`` state returns ``[key, new counter low]``.
- ``three_fry``: ThreeFry2x32-20 with key ``state[0]`` and the 64-bit counter ``state[1]``. 64-bit element ``i``
  (row-major) encrypts ``counter + i`` (low word first). For 32 bits and narrower, XLA halves one dimension (the
  first even one, else the largest): the counter ``counter + j`` of element ``j`` of that half shape gives two
  words, placed at the halved dimension's indices ``2k`` and ``2k + 1`` (the last one dropped for an odd size);
  narrow types keep the low bits. The counter advances by the counters used.

The rule is a composition of existing pieces, no new codelet: a ``u32`` index constant laid out like the output
says, per element, which counter and which word of its block it is (the flat index for Philox, ``2 * half
index + word`` for ThreeFry's halved shapes: fixed at compile time); the state's words are broadcast scalars;
the cipher is one expression-codelet program of integer ops (u64 multiplies whose high word is a shift, xor,
rotations as shift pairs, wrapping adds) that every tile runs over its own elements. Each element computes its
whole block and keeps its word (Philox's four words are one dependent chain), so the work is 4x (2x for 64 bits)
that of a generator that stores whole blocks, traded for a plain elementwise layout.

Cycles. The IPU draws random bits from each tile's hardware PRNG (what Graphcore's TensorFlow used for Dropout),
not from a software cipher, so the bits vertices are charged what the tile's PRNG costs for as many words
(``kernels.cycles.rng_cycles``, as poprand's vertices), not the cost of evaluating Philox or ThreeFry: the bits
are XLA's, the time is the IPU's.
"""
from __future__ import annotations

import math

import numpy as np

from kernels import cycles as cyc

from ..hlo.ir import Computation, Instruction, Shape
from ..mapping.tensor import DTensor
from . import register_lowering
from .expression import compile_computation
from .popops_elementwise import expression

PHILOX_M = (0xD2511F53, 0xCD9E8D57)          # round multipliers
PHILOX_W = (0x9E3779B9, 0xBB67AE85)          # key increments (Weyl sequence)
THREEFRY_PARITY = 0x1BD11BDA
THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
BIT_TYPES = ("u8", "u16", "u32", "u64", "s8", "s16", "s32", "s64", "f16", "f32", "f64")


def _const(dtype: str, value: int) -> Instruction:
    # expression immediates are int64: a u64 constant is stored as its bits (the codelet computes u64 ops on them)
    v = np.array(value, np.uint64).view(np.int64) if dtype == "u64" else np.array(value, Shape(dtype).np_dtype)
    return Instruction("constant", Shape(dtype), attrs={"value": v})


class _Expr:
    """A tiny builder of elementwise HLO graphs over ``dims`` (scalars broadcast for free in the codelet)."""

    def __init__(self, dims):
        self.dims = tuple(dims)
        self.params: list[Instruction] = []

    def param(self, dtype: str, scalar: bool = False) -> Instruction:
        p = Instruction("parameter", Shape(dtype, () if scalar else self.dims), attrs={"number": len(self.params)})
        self.params.append(p)
        return p

    def op(self, opcode: str, *operands, dtype: str | None = None, **attrs) -> Instruction:
        dtype = dtype or operands[0].shape.dtype
        scalar = all(o.shape.rank == 0 for o in operands)
        return Instruction(opcode, Shape(dtype, () if scalar else self.dims), list(operands), attrs=attrs)

    def bin(self, opcode: str, x: Instruction, y) -> Instruction:
        """``x op y`` with ``y`` an instruction or an integer immediate of x's type."""
        if not isinstance(y, Instruction):
            y = _const(x.shape.dtype, y)
        return self.op(opcode, x, y)

    def convert(self, x: Instruction, dtype: str) -> Instruction:
        return x if x.shape.dtype == dtype else self.op("convert", x, dtype=dtype)

    def lo32(self, x: Instruction) -> Instruction:
        return self.convert(x, "u32")

    def hi32(self, x: Instruction) -> Instruction:
        return self.convert(self.bin("shift-right-logical", x, 32), "u32")

    def join64(self, lo: Instruction, hi: Instruction) -> Instruction:
        return self.op("or", self.convert(lo, "u64"), self.bin("shift-left", self.convert(hi, "u64"), 32))

    def add_carry(self, lo: Instruction, hi: Instruction, n: Instruction) -> tuple[Instruction, Instruction]:
        """(lo, hi) + n as a 128-bit sum of u64 words."""
        new_lo = self.op("add", lo, n)
        carry = self.convert(self.op("compare", new_lo, lo, dtype="pred", direction="LT"), "u64")
        return new_lo, self.op("add", hi, carry)

    def choose(self, which: Instruction, words: list[Instruction]) -> Instruction:
        """``words[which]``: a chain of selects."""
        out = words[-1]
        for k in range(len(words) - 2, -1, -1):
            out = self.op("select", self.op("compare", which, _const(which.shape.dtype, k), dtype="pred",
                                             direction="EQ"), words[k], out)
        return out

    def philox(self, x: list[Instruction], key: list[Instruction]) -> list[Instruction]:
        """Philox4x32, 10 rounds: the round's high product words xor the other lane and the round key."""
        k0, k1 = key
        for _ in range(10):
            p0 = self.bin("multiply", self.convert(x[0], "u64"), PHILOX_M[0])
            p1 = self.bin("multiply", self.convert(x[2], "u64"), PHILOX_M[1])
            x = [self.op("xor", self.op("xor", self.hi32(p1), x[1]), k0), self.lo32(p1),
                 self.op("xor", self.op("xor", self.hi32(p0), x[3]), k1), self.lo32(p0)]
            k0, k1 = self.bin("add", k0, PHILOX_W[0]), self.bin("add", k1, PHILOX_W[1])
        return x

    def threefry(self, x0: Instruction, x1: Instruction, key: list[Instruction]) -> tuple[Instruction, Instruction]:
        """ThreeFry2x32, 20 rounds in 5 groups of 4, a key injection after each group."""
        ks = [key[0], key[1], self.op("xor", self.op("xor", key[0], key[1]), _const("u32", THREEFRY_PARITY))]
        x0, x1 = self.op("add", x0, ks[0]), self.op("add", x1, ks[1])
        for g in range(5):
            for r in THREEFRY_ROTATIONS[g % 2]:
                x0 = self.op("add", x0, x1)
                x1 = self.op("or", self.bin("shift-left", x1, r), self.bin("shift-right-logical", x1, 32 - r))
                x1 = self.op("xor", x1, x0)
            x0 = self.op("add", x0, ks[(g + 1) % 3])
            x1 = self.op("add", x1, self.bin("add", ks[(g + 2) % 3], g + 1))
        return x0, x1

    def finish(self, bits: Instruction, out_dtype: str):
        """Unsigned words -> an integer output type (narrower types keep the low bits)."""
        bits = self.convert(bits, f"u{Shape(out_dtype).itemsize * 8}")
        if out_dtype != bits.shape.dtype:
            bits = self.op("bitcast-convert", bits, dtype=out_dtype)
        return self.program(bits)

    def program(self, root: Instruction):
        order, seen = [], set()

        def visit(i):                    # operands before users, parameters first
            if id(i) not in seen:
                seen.add(id(i))
                for o in i.operands:
                    visit(o)
                order.append(i)
        for p in self.params:
            visit(p)
        visit(root)
        return compile_computation(Computation("rng_bits", order, root))


def _philox_program(dims, out_dtype: str):
    """Inputs: index (u32, the flat element index), key, counter_lo, counter_hi (u64 scalars) -> bits."""
    e = _Expr(dims)
    index, key, lo, hi = e.param("u32"), e.param("u64", True), e.param("u64", True), e.param("u64", True)
    wide = Shape(out_dtype).itemsize == 8
    block = e.convert(e.bin("shift-right-logical", index, 1 if wide else 2), "u64")
    word = e.bin("and", index, 1 if wide else 3)
    c_lo, c_hi = e.add_carry(lo, hi, block)
    x = e.philox([e.lo32(c_lo), e.hi32(c_lo), e.lo32(c_hi), e.hi32(c_hi)], [e.lo32(key), e.hi32(key)])
    bits = e.choose(word, [e.join64(x[0], x[1]), e.join64(x[2], x[3])] if wide else x)
    return e.finish(bits, out_dtype)


def _threefry_program(dims, out_dtype: str):
    """Inputs: index (u32: the counter offset, or 2 * offset + word below 64 bits), key, counter (u64 scalars)."""
    e = _Expr(dims)
    index, key, counter = e.param("u32"), e.param("u64", True), e.param("u64", True)
    wide = Shape(out_dtype).itemsize == 8
    c = e.op("add", counter, e.convert(index if wide else e.bin("shift-right-logical", index, 1), "u64"))
    x0, x1 = e.threefry(e.lo32(c), e.hi32(c), [e.lo32(key), e.hi32(key)])
    bits = e.join64(x0, x1) if wide else e.op("select", e.op("compare", e.bin("and", index, 1), _const("u32", 0),
                                                               dtype="pred", direction="EQ"), x0, x1)
    return e.finish(bits, out_dtype)


def _threefry_index(dims) -> tuple[np.ndarray, int]:
    """Below 64 bits: per element ``2 * (flat index in the half shape) + word``, and the half shape's size."""
    dims = tuple(dims)
    if not dims:
        return np.zeros((), np.uint32), 1
    even = [i for i, d in enumerate(dims) if d % 2 == 0]
    split = even[0] if even else int(np.argmax(dims))
    outer, d, inner = math.prod(dims[:split]), dims[split], math.prod(dims[split + 1:])
    hd = -(-d // 2)
    o = np.arange(outer, dtype=np.uint64).reshape(-1, 1, 1)
    k = np.arange(d, dtype=np.uint64).reshape(1, -1, 1)
    i = np.arange(inner, dtype=np.uint64).reshape(1, 1, -1)
    half_index = (o * hd + k // 2) * inner + i
    return (2 * half_index + k % 2).astype(np.uint32).reshape(dims), outer * hd * inner


def _advance_programs(n: int):
    """lo -> lo + n  and  (lo, hi) -> hi + carry out of lo + n."""
    e = _Expr(())
    lo = e.param("u64", True)
    lo_prog = e.program(e.bin("add", lo, n))
    e = _Expr(())
    lo, hi = e.param("u64", True), e.param("u64", True)
    return lo_prog, e.program(e.add_carry(lo, hi, _const("u64", n))[1])


def _word(b, state, k: int, name: str, origin: str):
    w = b.linear(Shape("u64"), f"{name}/state{k}", "temporary", origin)
    return b.rearrange(w, [state], np.array([k]), name=f"{name}/state{k}", origin=origin)


@register_lowering("rng-bit-generator")
def lower_rng_bit_generator(ctx, state):
    b, name, origin = ctx.b, ctx.name, ctx.origin
    state_shape, bits_shape = ctx.shape.tuple_shapes
    algorithm = str(ctx.inst.attrs.get("algorithm", "default"))
    if algorithm not in ("default", "philox", "three_fry"):
        raise ctx.unsupported(f"random algorithm {algorithm!r}")
    if state.dtype != "u64" or state.shape.rank != 1 or state.size < 2:
        raise ctx.unsupported(f"state of shape {state.shape}; a u64[k] state with k >= 2 (key, counter) is needed")
    if bits_shape.dtype not in BIT_TYPES:
        raise ctx.unsupported(f"random bits of element type {bits_shape.dtype}")
    n = bits_shape.size
    if 2 * n >= 2**32:
        raise ctx.unsupported(f"{n} random words in one op (fewer than 2^31 are supported)")
    wide = bits_shape.itemsize == 8
    one = Shape("u64")
    # float bits are computed as unsigned words and then viewed as floats: the codelet holds floats as doubles,
    # which would quiet signalling-NaN patterns
    float_bits = bits_shape.dtype.startswith("f")
    word_shape = Shape(f"u{bits_shape.itemsize * 8}", bits_shape.dims) if float_bits else bits_shape
    three_fry = algorithm == "three_fry"
    if three_fry:
        words = [_word(b, state, k, name, origin) for k in (0, 1)]
        inputs = words
        if wide:
            index, used = np.arange(n, dtype=np.uint32).reshape(bits_shape.dims), n
        else:
            index, used = _threefry_index(bits_shape.dims)
        prog = _threefry_program(bits_shape.dims, word_shape.dtype)
    else:
        words = [_word(b, state, k, name, origin) for k in range(min(state.size, 3))]
        key = words[0]
        lo, hi = (words[1], words[2]) if len(words) == 3 else (words[1], words[0])
        inputs = [key, lo, hi]
        index, used = np.arange(n, dtype=np.uint32).reshape(bits_shape.dims), -(-n // (2 if wide else 4))
        prog = _philox_program(bits_shape.dims, word_shape.dtype)

    # the bits: every tile runs the cipher over its own elements
    index = b.constant(index, Shape("u32", bits_shape.dims), f"{name}/index", origin)
    # cycles: what the tile's hardware PRNG spends on as many random bits (see the module's docstring)
    bits = expression(b, prog, [index] + inputs, word_shape, f"{name}/bits", origin,
                      cycles=lambda count: cyc.rng_cycles(b.device, count, word_shape.dtype, normal=False))
    if float_bits:
        bits = DTensor(bits_shape, bits.tiles, bits.starts, bits.counts, bits.syms, bits.name, bits.category,
                       bits.origin)

    # the new state: the key (and any further words) unchanged, the counter advanced by the counters used
    lo_prog, hi_prog = _advance_programs(used)
    counter_lo = words[1]
    new_lo = expression(b, lo_prog, [counter_lo], one, f"{name}/counter_lo", origin)
    sources, which, index_of = [state, new_lo], [0] * state.size, list(range(state.size))
    which[1], index_of[1] = 1, 0
    if not three_fry and state.size >= 3:
        new_hi = expression(b, hi_prog, [words[1], words[2]], one, f"{name}/counter_hi", origin)
        sources.append(new_hi)
        which[2], index_of[2] = 2, 0
    new_state = b.linear(state_shape, f"{name}/state", "activation", origin)
    b.rearrange(new_state, sources, np.array(index_of), np.array(which), name=f"{name}/state", origin=origin)
    return new_state, bits
