"""Scheduling: a fill (a broadcast of a constant, an iota) moves to just before its first user.

The lowering runs a computation's instructions in their order and a fill is a whole tensor in memory from the step
that writes it. XLA lists fills early (a conditional branch that resets an optimizer's accumulators to zero starts
with a zeros tensor for each of them), so each would be live from the start of the computation to its use, all at
once; written just before its user, a fill lives only as long as that user needs it (when the user is the root, as
for those accumulators, each zeros tensor is written into its variable as soon as it is filled: see
``xla_lowering/lower/control.py``). Only the order changes: fills have no operands but constants, so any place
before their first user computes the same values.
"""
from __future__ import annotations

from xla_lowering.hlo.ir import Computation, Module

FILLS = ("broadcast", "iota")


def sink_fills(comp: Computation) -> None:
    order = comp.instructions
    first_user: dict[int, int] = {}
    for pos, inst in enumerate(order):
        for op in inst.operands:
            first_user.setdefault(op.id, pos)
    moved = {inst.id for inst in order
             if inst.opcode in FILLS and inst.id in first_user and all(op.opcode == "constant" for op in inst.operands)}
    if not moved:
        return
    before: dict[int, list] = {}
    for inst in order:
        if inst.id in moved:
            before.setdefault(first_user[inst.id], []).append(inst)
    out = []
    for pos, inst in enumerate(order):
        out.extend(before.get(pos, ()))
        if inst.id not in moved:
            out.append(inst)
    comp.instructions = out


def run(module: Module) -> Module:
    for comp in module.computations():
        sink_fills(comp)
    return module
