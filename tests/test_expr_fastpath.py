"""The expression codelet's f32 fast path against its generic path, bit for bit.

``run_expression`` runs a program whose float values are all f32 with float slots and tight per-op loops; any other
program (f16 or f64 values, constants that are not f32 numbers) runs on the generic interpreter, whose slots are
doubles rounded to their element type after every op. ``generic=True`` forces the generic interpreter, so the two
can be compared on random well-typed programs (the form the compiler emits: every slot written once) over random
and special values (NaN with payloads, signalling NaN, +-inf, -0, denormals), strided, scalar and broadcast-mode
inputs, vertex lengths across several blocks.
"""
from __future__ import annotations

import numpy as np
from hypothesis import given, strategies as st

from conftest import examples, seeds
from kernels import dtypes
from kernels.codelets import expr as expr_codelet
from kernels.expr_ops import OPS

C = dtypes.code
INTS = ["pred", "s8", "u8", "s16", "u16", "s32", "u32", "s64", "u64"]
NP = {"pred": np.uint8, "s8": np.int8, "u8": np.uint8, "s16": np.int16, "u16": np.uint16, "s32": np.int32,
      "u32": np.uint32, "s64": np.int64, "u64": np.uint64, "f16": np.float16, "f32": np.float32, "f64": np.float64}
SAME_SIZE = {"f16": ["s16", "u16"], "f32": ["s32", "u32"], "f64": ["s64", "u64"]}
F_UNARY = ["negate", "abs", "exponential", "exponential-minus-one", "log", "log-plus-one", "logistic", "tanh",
           "sqrt", "rsqrt", "cbrt", "sine", "cosine", "tan", "floor", "ceil", "round-nearest-afz",
           "round-nearest-even", "sign", "erf"]
I_UNARY = ["negate", "abs", "sign", "not", "popcnt", "count-leading-zeros", "floor", "round-nearest-even"]
F_BINARY = ["add", "subtract", "multiply", "divide", "remainder", "maximum", "minimum", "power", "atan2"]
I_BINARY = ["add", "subtract", "multiply", "divide", "remainder", "maximum", "minimum", "power", "and", "or", "xor",
            "shift-left", "shift-right-logical", "shift-right-arithmetic"]
HOT = ["add", "subtract", "multiply", "divide", "maximum", "minimum"]
COMPARE = ["EQ", "NE", "LT", "LE", "GT", "GE"]


def special_values(rng, n: int, dt: str) -> np.ndarray:
    """n values of type dt: random numbers of several scales mixed with the values arithmetic gets wrong."""
    if dt == "pred":
        return rng.integers(0, 2, n).astype(np.uint8)
    if dt in INTS:
        info = np.iinfo(NP[dt])
        edge = np.array([0, 1, info.max, info.min, info.max - 1, 2, 3, 7, 31, 63], np.float64)
        v = rng.integers(info.min, info.max, n, dtype=NP[dt], endpoint=True)
        small = rng.integers(-8, 64, n).astype(NP[dt]) if info.min < 0 else rng.integers(0, 64, n).astype(NP[dt])
        pick = rng.random(n)
        v = np.where(pick < 0.4, small, v)
        e = edge[rng.integers(0, len(edge), n)].astype(object)
        v = np.where(pick > 0.85, np.array([NP[dt](x) if info.min <= x <= info.max else NP[dt](0) for x in e]), v)
        return v.astype(NP[dt])
    t = NP[dt]
    v = (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4, n)).astype(t)
    bits = {"f16": np.uint16, "f32": np.uint32, "f64": np.uint64}[dt]
    info = np.finfo(t)
    if dt == "f32":
        nan_bits = [0x7FC00000, 0xFFC00000, 0x7FC12345, 0xFFF00001, 0x7F800001, 0x7FA00000]   # quiet and signalling
    elif dt == "f16":
        nan_bits = [0x7E00, 0xFE00, 0x7E55, 0x7C01, 0x7D00]
    else:
        nan_bits = [0x7FF8000000000000, 0xFFF8000000000000, 0x7FF8000012340000, 0x7FF0000100000000]
    special = np.concatenate([np.array([0.0, -0.0, np.inf, -np.inf, 1.0, -1.0, 0.5, 2.0, info.max, -info.max,
                                        info.tiny, info.tiny / 4, -info.tiny / 8, info.eps], t),
                              np.array(nan_bits, bits).view(t)])
    pick = rng.random(n)
    v = np.where(pick < 0.25, special[rng.integers(0, len(special), n)], v)
    with np.errstate(invalid="ignore"):
        v = np.where((pick > 0.9) & (pick < 0.95), np.round(v), v)
    return v.astype(t)


def random_program(rng, floats=("f32",), ints=("pred", "s32"), n_ops=None):
    """A well-typed expression program over random inputs: (code, in_types, out_type, out_slot, nslots, fconst,
    iconst). Each slot is written once; slot types are tracked so every op reads operands of its types."""
    types = list(floats) + list(ints)
    n_in = int(rng.integers(1, 5))
    in_types = [types[int(rng.integers(0, len(types)))] for _ in range(n_in)]
    rows, fconst, iconst, slot_type = [], [], [], []

    def emit(op, a=0, b=0, c=0, dtd="f32", dts=None):
        slot_type.append(dtd)
        rows.append([OPS[op], len(slot_type) - 1, a, b, c, C(dtd), C(dts or dtd)])
        return len(slot_type) - 1

    def const(dt):
        if dt in floats:
            fconst.append(float(special_values(rng, 1, dt)[0]))
            return emit("const", len(fconst) - 1, dtd=dt)
        iconst.append(int(special_values(rng, 1, dt).astype(np.int64)[0]))   # u64 wraps, as in the compiler's table
        return emit("const", len(iconst) - 1, dtd=dt)

    def operand(dt):
        have = [k for k, t in enumerate(slot_type) if t == dt]
        r = rng.random()
        if have and r < 0.75:
            return have[int(rng.integers(0, len(have)))]
        if r < 0.88 or not slot_type:
            return const(dt)
        src = int(rng.integers(0, len(slot_type)))
        return emit("convert", src, dtd=dt, dts=slot_type[src])

    for i, t in enumerate(in_types):
        emit("load", i, dtd=t)
    for _ in range(int(rng.integers(1, 12)) if n_ops is None else n_ops):
        dt = types[int(rng.integers(0, len(types)))]
        flt = dt in floats
        kind = rng.random()
        if kind < 0.35:
            op = HOT[int(rng.integers(0, len(HOT)))] if (flt and rng.random() < 0.6) else \
                (F_BINARY if flt else I_BINARY)[int(rng.integers(0, len(F_BINARY if flt else I_BINARY)))]
            if op in ("and", "or", "xor") or dt != "pred":
                emit(op, operand(dt), operand(dt), dtd=dt)
        elif kind < 0.55:
            op = (F_UNARY if flt else I_UNARY)[int(rng.integers(0, len(F_UNARY if flt else I_UNARY)))]
            if dt != "pred" or op == "not":
                emit(op, operand(dt), dtd=dt)
        elif kind < 0.68:
            emit(COMPARE[int(rng.integers(0, 6))], operand(dt), operand(dt), dtd="pred", dts=dt)
        elif kind < 0.8:
            emit("select", operand("pred"), operand(dt), operand(dt), dtd=dt)
        elif kind < 0.85:
            emit("clamp", operand(dt), operand(dt), operand(dt), dtd=dt)
        elif kind < 0.9 and flt:
            emit("is-finite", operand(dt), dtd="pred", dts=dt)
        elif kind < 0.95 and (flt or dt in ("s16", "u16", "s32", "u32", "s64", "u64")):
            if flt:
                other = SAME_SIZE[dt][int(rng.integers(0, 2))]
            else:
                other = {"s16": "f16", "u16": "f16", "s32": "f32", "u32": "f32", "s64": "f64", "u64": "f64"}[dt]
            if other in types:
                emit("bitcast-convert", operand(other), dtd=dt, dts=other)
        else:
            src = int(rng.integers(0, len(slot_type)))
            emit("convert", src, dtd=dt, dts=slot_type[src])
    out = len(slot_type) - 1 if rng.random() < 0.8 else int(rng.integers(0, len(slot_type)))
    return (np.array(rows, np.int64), in_types, slot_type[out], out, len(slot_type),
            np.array(fconst or [0.0], np.float64), np.array(iconst or [0], np.int64))


def random_case(rng, floats=("f32",), ints=("pred", "s32"), max_n=1300):
    """A random program and a compute set of vertices running it: (args of run_expression, mem)."""
    code, in_types, out_type, out_slot, nslots, fconst, iconst = random_program(rng, floats, ints)
    n_in = len(in_types)
    mode = [("scalar" if r < 0.2 else "bcast" if r < 0.4 else "vec") for r in rng.random(n_in)]
    inner = [int(rng.choice([1, 2, 3, 16, 300])) for _ in range(n_in)]
    nv = int(rng.integers(1, 5))
    chunks, records, addr = [], [], [64]

    def put(arr):
        a = -(-addr[0] // 8) * 8
        chunks.append((a, arr.view(np.uint8).reshape(-1)))
        addr[0] = a + arr.nbytes + 8
        return a

    ncols = 2 + n_in + 2 * n_in
    for _ in range(nv):
        n = int(rng.integers(0, max_n)) if rng.random() < 0.8 else int(rng.choice([1, 255, 256, 257, 1024, 1025]))
        rec = [n, 0] + [0] * n_in + [0] * (2 * n_in)
        for i, t in enumerate(in_types):
            if mode[i] == "scalar":
                rec[2 + i] = put(special_values(rng, 1, t))
            elif mode[i] == "bcast":
                m = int(rng.integers(1, 40))
                rec[2 + i] = put(special_values(rng, m, t))
                rec[2 + n_in + 2 * i] = int(rng.integers(0, 3000))
                rec[2 + n_in + 2 * i + 1] = m
            else:
                rec[2 + i] = put(special_values(rng, n, t))
        rec[1] = put(np.zeros(max(n, 1), NP[out_type]))
        records.append(rec)
    mem = np.zeros(addr[0] + 64, np.uint8)
    for a, b in chunks:
        mem[a:a + len(b)] = b
    in_bcast = np.array([[inner[i], 2 + n_in + 2 * i] if mode[i] == "bcast" else [0, 0] for i in range(n_in)],
                        np.int64)
    args = (np.array(records, np.int64).reshape(nv, ncols), code, np.array([C(t) for t in in_types], np.int32),
            np.array([mode[i] == "scalar" for i in range(n_in)], np.int64), C(out_type), out_slot, nslots,
            fconst, iconst, in_bcast if "bcast" in mode else None)
    return args, mem


@examples(150)
@given(seed=seeds)
def test_f32_fast_path_matches_generic_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    args, mem = random_case(rng)
    fast, generic = mem.copy(), mem.copy()
    expr_codelet.run_expression(fast, *args)
    expr_codelet.run_expression(generic, *args, generic=True)
    assert np.array_equal(fast, generic), args[1]


@examples(40)
@given(seed=seeds)
def test_other_types_take_the_generic_path_unchanged(seed):
    """Programs with f16, f64 or other integer types (generic path, or f32 parts of them) agree too."""
    rng = np.random.default_rng(seed)
    args, mem = random_case(rng, floats=("f32", "f16", "f64"), ints=tuple(INTS))
    fast, generic = mem.copy(), mem.copy()
    expr_codelet.run_expression(fast, *args)
    expr_codelet.run_expression(generic, *args, generic=True)
    assert np.array_equal(fast, generic), args[1]
