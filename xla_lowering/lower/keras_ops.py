"""Ops that Keras 3 training first needed: ``rng-bit-generator`` (the stateless RNG behind Dropout).

``rng-bit-generator(state)`` returns ``(new_state, bits)``. XLA's state is ``u64[k]``: for Philox (what TF picks on
CPU, GPU and here) ``state[0]`` is the key and ``state[1:3]`` a 128-bit counter; for ThreeFry ``state[1]`` is a
64-bit counter. We keep that contract (same state in -> same bits out; the counter advances by what was used, so
consecutive calls never reuse a counter) but not Philox's bit stream: each element ``i`` takes

    bits[i] = mix64(mix64(key * GOLDEN + counter_hi') + counter_lo + i)        (64 bits; narrower types keep the top)

with ``mix64`` SplitMix64's finaliser (a bijection, so distinct counters give distinct, well-spread words) and
``counter_hi'`` the high word plus the carry out of ``counter_lo + i``. The bits therefore differ from TF's, while
their distribution (independent uniform words) is the one Dropout, ``stateless_uniform`` and friends rely on; the
new state is ``counter + number of elements``.

The rule is a composition of existing pieces, no new codelet: the element index is a ``u32`` iota constant laid
out like the output, the state's words are broadcast scalars, and the hash is one expression-codelet program of
integer ops (xor, shifts, wrapping multiplies) that every tile runs over its own elements.
"""
from __future__ import annotations

import numpy as np

from ..hlo.ir import Computation, Instruction, Shape
from . import register_lowering
from .expression import compile_computation
from .popops_elementwise import expression

GOLDEN = 0x9E3779B97F4A7C15
MIX1, MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _u64_const(value: int) -> Instruction:
    # expression immediates are int64: store the constant's bits (the codelet computes u64 ops on them)
    return Instruction("constant", Shape("u64"), attrs={"value": np.array(value, np.uint64).view(np.int64)})


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

    def u64(self, x: Instruction) -> Instruction:
        return x if x.shape.dtype == "u64" else self.op("convert", x, dtype="u64")

    def mix64(self, z: Instruction) -> Instruction:
        for shift, mult in ((30, MIX1), (27, MIX2)):
            z = self.op("multiply", self.op("xor", z, self.op("shift-right-logical", z, _u64_const(shift))),
                        _u64_const(mult))
        return self.op("xor", z, self.op("shift-right-logical", z, _u64_const(31)))

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


def _bits_program(dims, out_dtype: str, has_hi: bool):
    """Inputs: index (u32, elementwise), key, counter_lo[, counter_hi] (u64 scalars) -> bits of ``out_dtype``."""
    e = _Expr(dims)
    index, key, lo = e.param("u32"), e.param("u64", True), e.param("u64", True)
    counter = e.op("add", e.u64(index), lo)
    stream = e.op("multiply", key, _u64_const(GOLDEN))
    if has_hi:
        hi = e.param("u64", True)
        carry = e.u64(e.op("compare", counter, lo, dtype="pred", direction="LT"))
        stream = e.op("add", stream, e.op("add", hi, carry))
    z = e.mix64(e.op("add", e.mix64(stream), counter))
    width = Shape(out_dtype).itemsize * 8
    if width < 64:
        z = e.op("shift-right-logical", z, _u64_const(64 - width))
    unsigned = f"u{width}"
    bits = z if unsigned == "u64" else e.op("convert", z, dtype=unsigned)
    if out_dtype != unsigned:
        bits = e.op("bitcast-convert", bits, dtype=out_dtype)
    return e.program(bits)


def _advance_programs(n: int):
    """lo -> lo + n  and  (lo, hi) -> hi + carry out of lo + n."""
    e = _Expr(())
    lo = e.param("u64", True)
    lo_prog = e.program(e.op("add", lo, _u64_const(n)))
    e = _Expr(())
    lo, hi = e.param("u64", True), e.param("u64", True)
    carry = e.u64(e.op("compare", e.op("add", lo, _u64_const(n)), lo, dtype="pred", direction="LT"))
    return lo_prog, e.program(e.op("add", hi, carry))


def _word(b, state, k: int, name: str, origin: str):
    w = b.linear(Shape("u64"), f"{name}/state{k}", "temporary", origin)
    return b.rearrange(w, [state], np.array([k]), name=f"{name}/state{k}", origin=origin)


@register_lowering("rng-bit-generator")
def lower_rng_bit_generator(ctx, state):
    b, name, origin = ctx.b, ctx.name, ctx.origin
    state_shape, bits_shape = ctx.shape.tuple_shapes
    if state.dtype != "u64" or state.shape.rank != 1 or state.size < 2:
        raise ctx.unsupported(f"state of shape {state.shape}; a u64[k] state with k >= 2 (key, counter) is needed")
    if bits_shape.dtype not in ("u8", "u16", "u32", "u64", "s8", "s16", "s32", "s64"):
        raise ctx.unsupported(f"random bits of element type {bits_shape.dtype}")
    n = bits_shape.size
    if n >= 2**32:
        raise ctx.unsupported(f"{n} random words in one op (at most 2^32 - 1)")
    words = [_word(b, state, k, name, origin) for k in range(min(state.size, 3))]
    has_hi = len(words) == 3
    one = Shape("u64")

    # the bits: every tile hashes the counters of its own elements
    index = b.constant(np.arange(n, dtype=np.uint32).reshape(bits_shape.dims), Shape("u32", bits_shape.dims),
                       f"{name}/index", origin)
    bits = expression(b, _bits_program(bits_shape.dims, bits_shape.dtype, has_hi), [index] + words, bits_shape,
                      f"{name}/bits", origin)

    # the new state: the key (and any further words) unchanged, the counter advanced by n with carry
    lo_prog, hi_prog = _advance_programs(n)
    new_lo = expression(b, lo_prog, [words[1]], one, f"{name}/counter_lo", origin)
    sources, which, index_of = [state, new_lo], [0] * state.size, list(range(state.size))
    which[1], index_of[1] = 1, 0
    if has_hi:
        new_hi = expression(b, hi_prog, [words[1], words[2]], one, f"{name}/counter_hi", origin)
        sources.append(new_hi)
        which[2], index_of[2] = 2, 0
    new_state = b.linear(state_shape, f"{name}/state", "activation", origin)
    b.rearrange(new_state, sources, np.array(index_of), np.array(which), name=f"{name}/state", origin=origin)
    return new_state, bits
