"""IR verifier: structural invariants every pass must keep. Raises ``VerificationError`` listing problems.

Checked in every computation of the module:

- the root is one of the computation's instructions; no instruction appears twice;
- parameters are numbered 0..n-1, once each;
- every operand is defined earlier in the same computation (topological order);
- elementwise ops: operands have the output's dims (select's predicate and clamp's bounds may be
  rank-0) and consistent element types;
- tuple / get-tuple-element shapes agree with their operands;
- fusion, call and while: the called computations take the operands' shapes and return the
  instruction's shape;
- input/output aliases name existing entry parameters.
"""
from __future__ import annotations

from xla_lowering.hlo.ir import Computation, Instruction, Module, Shape
from xla_lowering.hlo.reference import BINARY_OPS, ELEMENTWISE_OPS

# elementwise ops whose result type differs from their (first) operand's
_PRED_RESULT = ("compare", "is-finite")
_SCALAR_OK = {"select": (0,), "clamp": (0, 2)}  # operand positions that may be rank-0


class VerificationError(ValueError):
    pass


def _elementwise_problems(inst: Instruction) -> list[str]:
    out, dims = [], inst.shape.dims
    for k, op in enumerate(inst.operands):
        if op.shape.is_tuple:
            out.append(f"operand {k} is a tuple")
        elif op.shape.dims != dims and not (op.shape.rank == 0 and k in _SCALAR_OK.get(inst.opcode, ())):
            out.append(f"operand {k} has dims {list(op.shape.dims)}, the result {list(dims)}")
    if out:
        return out
    types = [op.shape.dtype for op in inst.operands]
    if inst.opcode == "select":
        if types[0] != "pred" or types[1] != inst.shape.dtype or types[2] != inst.shape.dtype:
            out.append(f"select operand types {types} do not fit result {inst.shape.dtype}")
    elif inst.opcode in _PRED_RESULT:
        if inst.shape.dtype != "pred" or len(set(types)) != 1:
            out.append(f"{inst.opcode} of {types} must give pred from operands of one type")
    elif inst.opcode != "convert" and any(t != inst.shape.dtype for t in types):
        out.append(f"operand types {types} differ from the result type {inst.shape.dtype}")
    if inst.opcode in BINARY_OPS and len(inst.operands) != 2:
        out.append(f"takes 2 operands, has {len(inst.operands)}")
    return out


def _called_problems(inst: Instruction) -> list[str]:
    def check(role: str, args: list[Shape], result: Shape | None) -> list[str]:
        comp = inst.called.get(role)
        if comp is None:
            return [f"has no '{role}' computation"]
        got = [p.shape for p in comp.parameters]
        out = [] if got == args else [f"'{role}' takes {list(map(str, got))}, given {list(map(str, args))}"]
        if result is not None and comp.root.shape != result:
            out.append(f"'{role}' returns {comp.root.shape}, expected {result}")
        return out

    operand_shapes = [op.shape for op in inst.operands]
    if inst.opcode == "fusion":
        return check("fused", operand_shapes, inst.shape)
    if inst.opcode == "call":
        return check("to_apply", operand_shapes, inst.shape)
    if inst.opcode == "while":
        return (check("condition", operand_shapes, Shape("pred")) + check("body", operand_shapes, inst.shape)
                + ([] if operand_shapes == [inst.shape] else ["state shape differs from the result"]))
    return []


def _instruction_problems(inst: Instruction) -> list[str]:
    if inst.opcode in ELEMENTWISE_OPS:
        return _elementwise_problems(inst)
    if inst.opcode == "tuple":
        expected = Shape.tuple(op.shape for op in inst.operands)
        return [] if inst.shape == expected else [f"shape should be {expected}"]
    if inst.opcode == "get-tuple-element":
        source, index = inst.operands[0].shape, inst.attrs.get("index", -1)
        if not source.is_tuple or not 0 <= index < len(source.tuple_shapes):
            return [f"index {index} is not an element of {source}"]
        return [] if source.tuple_shapes[index] == inst.shape else [f"shape should be {source.tuple_shapes[index]}"]
    return _called_problems(inst)


def computation_problems(comp: Computation) -> list[str]:
    problems: list[str] = []
    seen: set[int] = set()
    numbers = sorted(p.attrs.get("number", -1) for p in comp.instructions if p.opcode == "parameter")
    if numbers != list(range(len(numbers))):
        problems.append(f"parameters are numbered {numbers}, expected 0..{len(numbers) - 1}")
    for inst in comp.instructions:
        if inst.id in seen:
            problems.append(f"{inst.describe()} appears twice")
            continue
        for op in inst.operands:
            if op.id not in seen:
                problems.append(f"{inst.describe()} uses %{op.name}, which is not defined before it")
        problems += [f"{inst.describe()}: {p}" for p in _instruction_problems(inst)]
        seen.add(inst.id)
    if comp.root.id not in seen:
        problems.append(f"root %{comp.root.name} is not one of the computation's instructions")
    return [f"in computation '{comp.name}': {p}" for p in problems]


def verify_module(module: Module) -> None:
    problems: list[str] = []
    for comp in module.computations():
        problems += computation_problems(comp)
    n_params = len(module.entry.parameters)
    for alias in module.aliases:
        if not 0 <= alias.parameter_number < n_params:
            problems.append(f"alias {alias} names parameter {alias.parameter_number} of {n_params}")
    if problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise VerificationError(f"module '{module.name}' is not valid HLO IR:\n  {shown}")


def run(module: Module) -> Module:
    verify_module(module)
    return module
