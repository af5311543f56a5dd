"""Constant folding with the reference evaluator.

An instruction whose operands are all constants is replaced by a constant holding its value, except:

- ops that must run every time (rng, rng-bit-generator, custom-call, while) and leaves (iota,
  parameter, constant);
- broadcast: a broadcast of a constant stays a broadcast, so a big splat never becomes a big literal
  and later passes (algebraic, fusion) still see "a scalar, broadcast";
- results with more than ``MAX_FOLDED_ELEMENTS`` elements (the op is cheaper than the literal);
- tuple-shaped results (constants hold arrays only).

Elementwise ops whose operands are all scalar constants or broadcasts of them are folded into a
broadcast of a new scalar constant: ``add(broadcast(1), broadcast(2))`` -> ``broadcast(3)``.
"""
from __future__ import annotations

from xla_lowering.hlo.ir import Computation, Instruction, Module, Shape
from xla_lowering.hlo.reference import ELEMENTWISE_OPS, Evaluator, evaluate_instruction

from .dce import remove_dead

MAX_FOLDED_ELEMENTS = 64 * 1024
NEVER_FOLD = frozenset({"parameter", "constant", "iota", "broadcast", "rng", "rng-bit-generator",
                        "rng-get-and-update-state", "custom-call", "while", "infeed", "outfeed", "send",
                        "recv", "after-all"})


def _constant(shape: Shape, value, metadata: dict) -> Instruction:
    return Instruction("constant", shape, attrs={"value": value}, metadata=dict(metadata))


def _scalar_source(inst: Instruction) -> Instruction | None:
    """The rank-0 constant ``inst`` is or broadcasts, else None."""
    if inst.opcode == "broadcast" and inst.operands[0].shape.rank == 0:
        inst = inst.operands[0]
    return inst if inst.opcode == "constant" and inst.shape.rank == 0 else None


def _fold(inst: Instruction, evaluator: Evaluator) -> list[Instruction] | None:
    """The instructions that replace ``inst`` (the last one is its new value), or None to keep it."""
    if inst.opcode in NEVER_FOLD or not inst.operands or inst.shape.is_tuple:
        return None
    try:
        if all(op.opcode == "constant" for op in inst.operands):
            if inst.shape.size > MAX_FOLDED_ELEMENTS:
                return None
            value = evaluate_instruction(inst, [op.attrs["value"] for op in inst.operands], evaluator)
            return [_constant(inst.shape, value, inst.metadata)]
        scalars = [_scalar_source(op) for op in inst.operands]
        if inst.opcode in ELEMENTWISE_OPS and all(scalars):
            # evaluate on the scalars (a rank-0 twin of inst), then broadcast the result
            twin = Instruction(inst.opcode, inst.shape.with_dims(()), list(scalars), dict(inst.attrs))
            value = evaluate_instruction(twin, [s.attrs["value"] for s in scalars], evaluator)
            scalar = _constant(twin.shape, value, inst.metadata)
            splat = Instruction("broadcast", inst.shape, [scalar], {"dimensions": ()},
                                metadata=dict(inst.metadata))
            return [scalar, splat]
    except NotImplementedError:
        return None
    return None


def fold_computation(comp: Computation, evaluator: Evaluator) -> bool:
    changed = False
    # in order, so chains fold in one sweep; a folded instruction's users (all after it) are pointed at its
    # replacement when the sweep reaches them (one pass, not a scan of the computation per folded instruction)
    replaced: dict[int, Instruction] = {}
    out: list[Instruction] = []
    for inst in comp.instructions:
        if replaced and any(id(op) in replaced for op in inst.operands):
            inst.operands = [replaced.get(id(op), op) for op in inst.operands]
        new = _fold(inst, evaluator)
        if new:
            out.extend(new)
            replaced[id(inst)] = new[-1]
            changed = True
        out.append(inst)
    if changed:
        comp.instructions = out
        comp.root = replaced.get(id(comp.root), comp.root)
        remove_dead(comp)
    return changed


def run(module: Module) -> Module:
    evaluator = Evaluator()
    for comp in module.computations():
        fold_computation(comp, evaluator)
    return module
