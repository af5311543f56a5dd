"""Elementwise fusion: chains of elementwise ops become one 'expression' fusion instruction.

A group is a connected set of elementwise instructions (``reference.ELEMENTWISE_OPS``) with the same
output dims, grown from a root towards its operands. The fusion replaces the group root with

    fusion(operands...), kind='expression', called={'fused': computation}

whose parameters are the fusion's operands in order of first use; every operand is rank-0, has the
fusion's full dims, or is the operand of a cyclic broadcast (below). Rules:

- one output per fusion: an instruction joins a group only if all of its users are in the group, so
  only the root is used outside it;
- broadcasts of one-element values and rank-0 constants that feed the group are copied into it (the
  scalar becomes the operand, a constant is inlined); they are cheap, so the originals stay for other users;
- so are *cyclic* broadcasts (``broadcast_cycle``): a per-channel vector broadcast along the inner dims
  (bias add, batch-norm scale and shift). The vector becomes the operand and the vertex reads it in
  broadcast mode, as PopLibs' broadcast-operand vertices do, instead of a materialized activation-sized copy.
  Each fusion gets its own copy of the broadcast (it costs nothing in the vertex); the original stays for
  users that are not elementwise;
- an elementwise op joins only if each of its operands is rank-0 or has its output dims;
- a group with fewer than two elementwise instructions is left alone (the lowering runs a single
  elementwise op directly, and a scalar broadcast feeding it stays a broadcast), unless one of its operands
  is a cyclic broadcast of a vector: then it is a fusion of one op, so that the broadcast is not materialized;
- the fusion instruction keeps the root's metadata (the TF op users will see in errors).

Groups are formed in the entry and in computations reached through control flow (while, conditional,
call), not inside reducers, comparators or scatter combiners, which the lowering reads as scalar
functions.
"""
from __future__ import annotations

from xla_lowering.hlo.ir import Computation, Instruction, Module
from xla_lowering.hlo.reference import ELEMENTWISE_OPS

from .dce import remove_dead

CONTROL_FLOW = ("while", "conditional", "call")


def _is_fusible(inst: Instruction) -> bool:
    if inst.opcode not in ELEMENTWISE_OPS or inst.shape.is_tuple:
        return False
    return all(op.shape.rank == 0 or op.shape.dims == inst.shape.dims for op in inst.operands)


def _is_scalar_broadcast(inst: Instruction, dims) -> bool:
    return inst.opcode == "broadcast" and inst.operands[0].shape.rank == 0 and inst.shape.dims == dims


def broadcast_cycle(inst: Instruction) -> tuple[int, int] | None:
    """(inner, C) when the broadcast ``inst`` repeats its operand cyclically along the output's flat index:
    output element i is operand element (i // inner) % C, with C the operand's size. That holds when the
    operand's dims of size > 1 map, in order, onto a run of output dims that is contiguous once the output's
    size-1 dims are left out; inner is the product of the output dims after that run. None otherwise."""
    if inst.opcode != "broadcast" or inst.shape.is_tuple:
        return None
    operand, out = inst.operands[0].shape.dims, inst.shape.dims
    mapped = [d for d, n in zip(inst.attrs.get("dimensions", ()), operand) if n != 1]
    size = inst.operands[0].shape.size
    if not mapped:
        return (max(1, inst.shape.size), size)            # a one-element operand: a scalar
    if mapped != sorted(mapped) or any(out[d] != 1 for d in range(mapped[0], mapped[-1] + 1) if d not in mapped):
        return None
    inner = 1
    for n in out[mapped[-1] + 1:]:
        inner *= n
    return inner, size


def _is_cyclic_broadcast(inst: Instruction, dims) -> bool:
    """A broadcast that an expression reads in place (a one-element or cyclically repeated operand)."""
    return (inst.opcode == "broadcast" and inst.shape.dims == dims and inst.operands[0].shape.rank > 0
            and broadcast_cycle(inst) is not None)


def _is_vector_broadcast(inst: Instruction, dims) -> bool:
    return _is_cyclic_broadcast(inst, dims) and inst.operands[0].shape.size > 1


def _is_scalar_constant(inst: Instruction) -> bool:
    return inst.opcode == "constant" and inst.shape.rank == 0


def find_groups(comp: Computation) -> list[list[Instruction]]:
    """Groups of elementwise instructions in topological order; each group's root comes last."""
    users = comp.users()
    position = {inst.id: k for k, inst in enumerate(comp.instructions)}
    assigned: set[int] = set()
    groups = []
    for root in reversed(comp.instructions):  # users before operands: roots are found first
        if root.id in assigned or not _is_fusible(root):
            continue
        members, ids, dims = [root], {root.id}, root.shape.dims
        grew = True
        while grew:  # an operand may qualify only once its other users have joined: repeat
            grew = False
            for inst in list(members):
                for op in inst.operands:
                    if (op.id not in ids and op.id not in assigned and op is not comp.root
                            and _is_fusible(op) and op.shape.dims == dims
                            and all(u.id in ids for u in users[op])):
                        members.append(op)
                        ids.add(op.id)
                        grew = True
        assigned |= ids
        if len(members) >= 2 or any(_is_vector_broadcast(op, dims) for op in root.operands):
            groups.append(sorted(members, key=lambda i: position[i.id]))
    return groups


def make_fusion(group: list[Instruction], index: int) -> Instruction:
    """The fusion instruction computing ``group`` (topological order, root last); the graph is not edited."""
    root, dims = group[-1], group[-1].shape.dims
    operands: list[Instruction] = []
    params: dict[int, Instruction] = {}
    body: list[Instruction] = []
    clones: dict[int, Instruction] = {}

    def value_of(op: Instruction) -> Instruction:
        """The fused computation's value for the outside value ``op``."""
        if op.id in clones:
            return clones[op.id]
        if _is_scalar_constant(op):
            new = Instruction("constant", op.shape, attrs=dict(op.attrs))
        elif _is_scalar_broadcast(op, dims):
            new = Instruction("broadcast", op.shape, [value_of(op.operands[0])], dict(op.attrs))
        elif _is_cyclic_broadcast(op, dims):
            # a parameter of the operand's shape for this broadcast alone (another broadcast of the same
            # operand may repeat it another way)
            param = Instruction("parameter", op.operands[0].shape, attrs={"number": len(operands)})
            operands.append(op.operands[0])
            body.append(param)
            new = Instruction("broadcast", op.shape, [param], dict(op.attrs))
        else:
            if op.id not in params:
                params[op.id] = Instruction("parameter", op.shape, attrs={"number": len(operands)})
                operands.append(op)
                body.append(params[op.id])
            return params[op.id]
        clones[op.id] = new
        body.append(new)
        return new

    for inst in group:  # topological order: a member's operands inside the group are cloned already
        args = [value_of(op) for op in inst.operands]
        clones[inst.id] = Instruction(inst.opcode, inst.shape, args, dict(inst.attrs), name=inst.name,
                                      metadata=dict(inst.metadata))
        body.append(clones[inst.id])
    # parameters first, in number order, then the body in dependency order
    ordered = sorted((i for i in body if i.opcode == "parameter"), key=lambda p: p.attrs["number"])
    ordered += [i for i in body if i.opcode != "parameter"]
    fused = Computation(f"fused_computation.{index}", ordered, clones[root.id])
    return Instruction("fusion", root.shape, operands, {"kind": "expression"}, {"fused": fused},
                       metadata=dict(root.metadata))


def fuse_computation(comp: Computation, counter: list[int]) -> int:
    """Fuse every group of ``comp``; returns the number of fusions made."""
    groups = find_groups(comp)
    if not groups:
        return 0
    by_root: dict[int, Instruction] = {}
    for group in groups:
        counter[0] += 1
        by_root[group[-1].id] = make_fusion(group, counter[0])
    # one sweep: each fusion goes where its root was, and every use of a root (including a use by
    # another fusion) now uses the fusion; the fused members become dead
    order = []
    for inst in comp.instructions + list(by_root.values()):
        inst.operands = [by_root.get(op.id, op) for op in inst.operands]
    for inst in comp.instructions:
        order.append(by_root.get(inst.id, inst))
    comp.instructions = order
    comp.root = by_root.get(comp.root.id, comp.root)
    remove_dead(comp)
    return len(groups)


def fusible_computations(module: Module) -> list[Computation]:
    """The entry and what it reaches through control flow, each once."""
    out, stack, seen = [], [module.entry], set()
    while stack:
        comp = stack.pop()
        if id(comp) in seen:
            continue
        seen.add(id(comp))
        out.append(comp)
        for inst in comp.instructions:
            if inst.opcode in CONTROL_FLOW:
                stack.extend(inst.called.values())
    return out


def run(module: Module) -> Module:
    counter = [sum(1 for c in module.computations() if c.name.startswith("fused_computation"))]
    for comp in fusible_computations(module):
        fuse_computation(comp, counter)
    return module
