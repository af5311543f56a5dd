"""Algebraic simplification: a few identities that are exact for every input.

A "scalar constant" here is a rank-0 constant or a broadcast of one (what TensorFlow emits for
``x * 1.0``). A rule only fires when the value it forwards already has the result's shape and dtype,
so no rule ever needs to insert a broadcast or a convert.

Like XLA's simplifier, ``x + 0`` -> ``x`` treats +0 and -0 alike, so ``-0.0 + 0.0`` keeps its sign
(-0.0 instead of +0.0); nothing else changes a bit of any result (NaN and inf included).
"""
from __future__ import annotations

import numpy as np

from xla_lowering.hlo.ir import Instruction, Module

from .cleanup import RewriteRule, apply_rules


def scalar_constant(inst: Instruction):
    """The value of a rank-0 constant or of a broadcast of one, else None."""
    if inst.opcode == "broadcast" and inst.operands[0].shape.rank == 0:
        inst = inst.operands[0]
    if inst.opcode == "constant" and inst.shape.rank == 0:
        return np.asarray(inst.attrs["value"])[()]
    return None


def _is(inst: Instruction, value) -> bool:
    v = scalar_constant(inst)
    return v is not None and bool(v == value)


def _fits(x: Instruction, inst: Instruction) -> bool:
    return x.shape == inst.shape


def identity_operand(inst: Instruction) -> Instruction | None:
    """x+0, 0+x, x-0, x*1, 1*x, x/1, x**1, and(x, true), or(x, false) -> x."""
    if len(inst.operands) != 2:
        return None
    a, b = inst.operands
    pred = inst.shape.dtype == "pred"
    right = {"add": 0, "subtract": 0, "multiply": 1, "divide": 1, "power": 1,
             "and": True if pred else None, "or": False if pred else None}
    commutes = ("add", "multiply", "and", "or")
    unit = right.get(inst.opcode)
    if unit is None:
        return None
    if _is(b, unit) and _fits(a, inst):
        return a
    if inst.opcode in commutes and _is(a, unit) and _fits(b, inst):
        return b
    return None


def involution(inst: Instruction) -> Instruction | None:
    """negate(negate(x)) -> x, not(not(x)) -> x."""
    if inst.opcode in ("negate", "not") and inst.operands[0].opcode == inst.opcode:
        return inst.operands[0].operands[0]
    return None


def same_operands(inst: Instruction) -> Instruction | None:
    """maximum(x, x), minimum(x, x), select(p, x, x) -> x."""
    if inst.opcode in ("maximum", "minimum") and inst.operands[0] is inst.operands[1]:
        return inst.operands[0]
    if inst.opcode == "select" and inst.operands[1] is inst.operands[2] and _fits(inst.operands[1], inst):
        return inst.operands[1]
    return None


def constant_select(inst: Instruction) -> Instruction | None:
    """select(true, a, b) -> a, select(false, a, b) -> b (for a scalar constant predicate)."""
    if inst.opcode != "select":
        return None
    p = scalar_constant(inst.operands[0])
    if p is None:
        return None
    chosen = inst.operands[1] if bool(p) else inst.operands[2]
    return chosen if _fits(chosen, inst) else None


RULES: list[RewriteRule] = [identity_operand, involution, same_operands, constant_select]


def run(module: Module) -> Module:
    for comp in module.computations():
        apply_rules(comp, RULES)
    return module
