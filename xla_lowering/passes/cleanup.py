"""Cleanup: remove instructions that only move a value around without changing it.

Each rule looks at one instruction and returns the instruction that should replace it (an existing one,
or a new one that ``apply_rules`` inserts in its place), or None. ``apply_rules`` is the small rewrite
driver that ``algebraic`` reuses.

Rules never replace a ``tuple`` instruction, so an entry root that is a tuple stays a tuple (the
lowering and the input/output aliases index into it).
"""
from __future__ import annotations

from typing import Callable, Optional

from xla_lowering.hlo.ir import Computation, Instruction, Module

from .dce import remove_dead

RewriteRule = Callable[[Instruction], Optional[Instruction]]

_RESHAPES = ("reshape", "bitcast")


def forward_tuple_element(inst: Instruction) -> Instruction | None:
    """get-tuple-element(tuple(a, b), 1) -> b."""
    if inst.opcode == "get-tuple-element" and inst.operands[0].opcode == "tuple":
        return inst.operands[0].operands[inst.attrs["index"]]
    return None


def remove_noop(inst: Instruction) -> Instruction | None:
    """reshape / bitcast / copy / identity transpose / identity broadcast / convert to the same type."""
    if not inst.operands:
        return None
    x = inst.operands[0]
    if x.shape != inst.shape:
        return None
    if inst.opcode in _RESHAPES + ("copy", "convert"):
        return x
    if inst.opcode in ("transpose", "broadcast") and tuple(inst.attrs["dimensions"]) == tuple(range(x.shape.rank)):
        return x
    return None


def fold_reshape_chain(inst: Instruction) -> Instruction | None:
    """reshape(reshape(x)) -> reshape(x): only the final dims matter in row-major order."""
    if inst.opcode in _RESHAPES and inst.operands[0].opcode in _RESHAPES:
        source = inst.operands[0].operands[0]
        return Instruction(inst.opcode, inst.shape, [source], metadata=dict(inst.metadata))
    return None


RULES: list[RewriteRule] = [forward_tuple_element, remove_noop, fold_reshape_chain]


def apply_rules(comp: Computation, rules: list[RewriteRule]) -> bool:
    """Rewrite ``comp`` with ``rules`` until none applies. Returns whether anything changed.

    Sweeps the instructions in order; a replacement that is not yet in the computation is inserted
    just before the instruction it replaces. Dead instructions are dropped after every sweep, which
    also keeps a rule from firing again on the instruction it already replaced.

    Within a sweep, replacements are recorded and an instruction's operands are brought up to date just
    before the rules look at it (its operands come earlier, so they are final by then); insertions and the
    remaining uses are applied once at the end of the sweep. The result is that of replacing every use at
    once, without a pass over the whole computation per replacement.
    """
    changed_any = False
    while True:
        changed = False
        members = {i.id for i in comp.instructions}
        replaced: dict[int, Instruction] = {}          # id of a replaced instruction -> its replacement
        inserted: dict[int, list[Instruction]] = {}    # id of an instruction -> new ones to insert before it

        def current(op: Instruction) -> Instruction:
            while op.id in replaced:
                op = replaced[op.id]
            return op

        for inst in list(comp.instructions):
            if replaced and any(op.id in replaced for op in inst.operands):
                inst.operands = [current(op) for op in inst.operands]
            for rewrite in rules:
                new = rewrite(inst)
                if new is None or new is inst:
                    continue
                if new.id not in members:
                    inserted.setdefault(inst.id, []).append(new)
                    members.add(new.id)
                replaced[inst.id] = new
                changed = True
                break
        if not changed:
            return changed_any
        if inserted:
            order = []
            for inst in comp.instructions:
                order.extend(inserted.get(inst.id, ()))
                order.append(inst)
            comp.instructions = order
        for inst in comp.instructions:
            if any(op.id in replaced for op in inst.operands):
                inst.operands = [current(op) for op in inst.operands]
        comp.root = current(comp.root)
        remove_dead(comp)
        changed_any = True


def run(module: Module) -> Module:
    for comp in module.computations():
        apply_rules(comp, RULES)
    return module
