"""Dead-code elimination, plus the few graph edits every pass shares.

An instruction is live when the computation's root reaches it through operands. Parameters always
stay (they are the computation's signature), everything else that is not live is dropped, in every
computation of the module. Unlike ``Computation.resort`` the surviving instructions keep their order,
so that the text printed stage by stage only changes where a pass changed something.

Side-effecting ops are not special-cased: programs that TensorFlow hands us do not rely on dead
instructions running.
"""
from __future__ import annotations

from xla_lowering.hlo.ir import Computation, Instruction, Module


def live_instructions(comp: Computation) -> set[int]:
    """Ids of the instructions the root reaches (parameters included)."""
    live: set[int] = set()
    stack = [comp.root]
    while stack:
        inst = stack.pop()
        if inst.id not in live:
            live.add(inst.id)
            stack.extend(inst.operands)
    return live


def remove_dead(comp: Computation) -> bool:
    """Drop unreachable instructions, keeping order. Returns whether anything was removed."""
    live = live_instructions(comp)
    kept = [i for i in comp.instructions if i.id in live or i.opcode == "parameter"]
    changed = len(kept) != len(comp.instructions)
    comp.instructions = kept
    return changed


def replace_uses(comp: Computation, old: Instruction, new: Instruction) -> None:
    """Make every user of ``old`` (and the root, if it is ``old``) use ``new`` instead."""
    for inst in comp.instructions:
        if any(op is old for op in inst.operands):
            inst.operands = [new if op is old else op for op in inst.operands]
    if comp.root is old:
        comp.root = new


def insert_before(comp: Computation, anchor: Instruction, new: list[Instruction]) -> None:
    """Insert ``new`` (already in dependency order) just before ``anchor``.

    Valid when every operand of ``new`` is defined before ``anchor``, which holds when ``new``
    replaces ``anchor`` and only uses values ``anchor`` could use.
    """
    index = next(k for k, inst in enumerate(comp.instructions) if inst is anchor)
    comp.instructions[index:index] = new


def run(module: Module) -> Module:
    for comp in module.computations():
        remove_dead(comp)
    return module
