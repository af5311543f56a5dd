"""Compile elementwise HLO (one instruction or a fused computation) into an expression-codelet program.

The program is rows of [op, dst, a, b, c, dst_dtype, src_dtype] (see kernels/expr_ops.py). Each HLO value gets a
slot; parameters load the vertex's inputs, rank-0 constants become immediates, broadcasts of rank-0 values
are free (a slot holds a block of equal values). A parameter that is the operand of a cyclic broadcast
(``passes.fusion.broadcast_cycle``: output element i reads operand element (i // inner) % C) is an input in
*broadcast mode* (``ExprProgram.in_bcast``): the broadcast loads it, and the lowering gives each vertex the part of
the vector its elements read.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kernels import dtypes
from kernels.expr_ops import BINARY, OPS, UNARY

from ..errors import UnsupportedOpError
from ..hlo.ir import Computation, Instruction
from ..passes.fusion import broadcast_cycle

ELEMENTWISE = (UNARY | BINARY | {"compare", "select", "clamp", "convert"}) - {"const", "load", "copy"}


@dataclass
class ExprProgram:
    code: np.ndarray            # int64 [rows, 7]
    nslots: int
    out_slot: int
    out_dtype: str
    out_slots: list[int]        # every output (a tuple root gives several: variadic reducers)
    out_dtypes: list[str]
    in_dtypes: list[str]
    fconst: np.ndarray
    iconst: np.ndarray
    ops: list[str]              # op names, for the cycle estimate
    in_bcast: list = field(default_factory=list)   # per input: (inner, C) in broadcast mode, else None


def compile_computation(comp: Computation) -> ExprProgram:
    """A fused expression: parameters are the vertex inputs in order."""
    params = comp.parameters
    return _compile(comp.instructions, comp.root, {p: p.attrs["number"] for p in params},
                    [p.shape.dtype for p in params])


def compile_instruction(inst: Instruction) -> ExprProgram:
    """A single elementwise instruction: its operands are the vertex inputs in order."""
    loads = {}
    for op in inst.operands:
        loads.setdefault(op, len(loads))
    ordered = sorted(loads, key=loads.get)
    return _compile(ordered + [inst], inst, loads, [o.shape.dtype for o in ordered])


def _compile(instructions, root, inputs: dict, in_dtypes: list[str]) -> ExprProgram:
    slot: dict[Instruction, int] = {}
    rows, ops = [], []
    fconst, iconst = [], []
    nslots = [0]
    bcast = _broadcast_inputs(instructions, inputs)

    def new_slot() -> int:
        nslots[0] += 1
        return nslots[0] - 1

    def emit(op, dst, a=0, b=0, c=0, dtd="f32", dts="f32"):
        rows.append([OPS[op], dst, a, b, c, dtypes.code(dtd), dtypes.code(dts)])
        ops.append(op)

    def int_const(value: int, dt: str) -> int:
        iconst.append(int(value))
        k = new_slot()
        emit("const", k, len(iconst) - 1, dtd=dt, dts=dt)
        return k

    def total_order_key(a: int, fdt: str) -> int:
        """Floats as signed integers that order like XLA's TOTALORDER (-NaN < -inf < ... < -0 < +0 < ... < +NaN):
        bits ^ ((bits >> (w - 1)) & INT_MAX) flips the magnitude bits of negative numbers."""
        sdt = {"f16": "s16", "f32": "s32", "f64": "s64"}[fdt]
        width = 8 * dtypes.itemsize(fdt)
        bits = new_slot()
        emit("bitcast-convert", bits, a, dtd=sdt, dts=fdt)
        sign = new_slot()
        emit("shift-right-arithmetic", sign, bits, int_const(width - 1, sdt), dtd=sdt, dts=sdt)
        mask = new_slot()
        emit("and", mask, sign, int_const((1 << (width - 1)) - 1, sdt), dtd=sdt, dts=sdt)
        key = new_slot()
        emit("xor", key, bits, mask, dtd=sdt, dts=sdt)
        return key

    for inst in instructions:
        if inst in inputs and inputs[inst] in bcast:
            continue                                   # loaded by its broadcast
        if (inst.opcode in ("broadcast", "reshape", "bitcast", "copy") and inst not in inputs
                and inst.operands[0].shape.size == 1) or (inst.opcode == "tuple" and inst is root):
            dst = -1                                   # no slot of its own (an alias, or the outputs' tuple)
        else:
            dst = new_slot()
        dt = inst.shape.dtype
        opc = inst.opcode
        if inst in inputs:
            emit("load", dst, inputs[inst], dtd=dt, dts=dt)
        elif opc == "broadcast" and inst.operands[0] in inputs and inputs[inst.operands[0]] in bcast:
            emit("load", dst, inputs[inst.operands[0]], dtd=dt, dts=dt)
        elif opc == "constant":
            if inst.shape.size != 1:
                raise UnsupportedOpError(inst, "only one-element constants can be part of an expression")
            v = np.asarray(inst.attrs["value"]).reshape(-1)[0]
            if dtypes.is_float(dt):
                fconst.append(float(v))
                emit("const", dst, len(fconst) - 1, dtd=dt, dts=dt)
            else:
                iconst.append(int(v))
                emit("const", dst, len(iconst) - 1, dtd=dt, dts=dt)
        elif opc in ("broadcast", "reshape", "bitcast", "copy") and inst.operands[0].shape.size == 1:
            slot[inst] = slot[inst.operands[0]]
            continue
        elif opc == "tuple" and inst is root:
            continue
        elif opc == "parameter":
            raise UnsupportedOpError(inst, "parameter is not an input of this expression")
        else:
            a = [slot[o] for o in inst.operands]
            src = inst.operands[0].shape.dtype if inst.operands else dt
            if opc == "compare" and dtypes.is_float(src) and \
                    str(inst.attrs.get("compare_type", "")).upper().endswith("TOTALORDER"):
                ka, kb = total_order_key(a[0], src), total_order_key(a[1], src)
                emit(inst.attrs["direction"], dst, ka, kb, dtd="pred", dts={"f16": "s16", "f32": "s32", "f64": "s64"}[src])
            elif opc == "compare":
                emit(inst.attrs["direction"], dst, a[0], a[1], dtd="pred", dts=src)
            elif opc == "select":
                emit("select", dst, a[0], a[1], a[2], dtd=dt, dts=inst.operands[1].shape.dtype)
            elif opc == "clamp":
                emit("clamp", dst, a[0], a[1], a[2], dtd=dt, dts=dt)
            elif opc in ("convert", "bitcast-convert"):
                if opc == "bitcast-convert" and dtypes.itemsize(src) != dtypes.itemsize(dt):
                    raise UnsupportedOpError(inst, "bitcast-convert between types of different sizes")
                emit(opc, dst, a[0], dtd=dt, dts=src)
            elif opc in UNARY:
                emit(opc, dst, a[0], dtd=dt, dts=src)
            elif opc in BINARY:
                emit(opc, dst, a[0], a[1], dtd=dt, dts=src)
            else:
                raise UnsupportedOpError(inst, "not an elementwise operation")
        slot[inst] = dst
    outs = list(root.operands) if root.opcode == "tuple" else [root]
    return ExprProgram(code=np.array(rows, np.int64).reshape(-1, 7), nslots=max(1, nslots[0]),
                       out_slot=slot[outs[0]], out_dtype=outs[0].shape.dtype, out_slots=[slot[o] for o in outs],
                       out_dtypes=[o.shape.dtype for o in outs], in_dtypes=in_dtypes,
                       fconst=np.array(fconst or [0.0], np.float64), iconst=np.array(iconst or [0], np.int64),
                       ops=ops, in_bcast=[bcast.get(k) for k in range(len(in_dtypes))])


def _broadcast_inputs(instructions, inputs: dict) -> dict[int, tuple[int, int]]:
    """Input number -> (inner, C) of the inputs read through a cyclic broadcast of a vector (broadcast mode).
    Such an input must be read by broadcasts only, all repeating it the same way."""
    out: dict[int, tuple[int, int]] = {}
    for inst in instructions:
        if inst.opcode == "broadcast" and inst not in inputs and inst.operands[0] in inputs \
                and inst.operands[0].shape.size > 1:
            cycle = broadcast_cycle(inst)
            k = inputs[inst.operands[0]]
            if cycle is None or out.get(k, cycle) != cycle:
                raise UnsupportedOpError(inst, "a broadcast inside an expression must repeat its operand "
                                               "cyclically along the output (per-channel vectors)")
            out[k] = cycle
    for inst in instructions:
        if inst.opcode != "broadcast" and any(o in inputs and inputs[o] in out for o in inst.operands):
            raise UnsupportedOpError(inst, "an expression input read through a broadcast is read directly too")
    return out
