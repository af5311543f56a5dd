"""The lowering registry: one rule per HLO opcode, grouped by PopLibs-style family.

A rule takes a small frozen context (the builder, the instruction) and its operands' lowered values
(``DTensor`` or tuples of them) and returns the instruction's value, adding tensors, compute sets and copies
to the program on the way. ``register_lowering("dot", rule)`` fills the registry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import UnsupportedOpError
from ..hlo.ir import Instruction, Shape

RULES: dict[str, Callable] = {}


def register_lowering(*opcodes: str):
    def deco(fn):
        for op in opcodes:
            RULES[op] = fn
        return fn
    return deco


@dataclass(frozen=True)
class LowerCtx:
    b: "object"                 # xla_lowering.program.ProgramBuilder
    inst: Instruction
    dests: dict | None = None   # output leaf -> storage to write it into, in place (``control.lower_computation``)

    @property
    def device(self):
        return self.b.device

    @property
    def shape(self) -> Shape:
        return self.inst.shape

    @property
    def name(self) -> str:
        return self.inst.name

    @property
    def origin(self) -> str:
        return self.inst.op_name

    def unsupported(self, detail: str = "") -> UnsupportedOpError:
        return UnsupportedOpError(self.inst, detail)


def lower_instruction(b, inst: Instruction, operands: list, dests: dict | None = None):
    rule = RULES.get(inst.opcode)
    if rule is None:
        raise UnsupportedOpError(inst)
    return rule(LowerCtx(b, inst, dests), *operands)


def _load_families() -> None:
    # importing a family module registers its rules
    from . import (popops_elementwise, popops_data, popops_reduce, popops_dynamic, poplin, poplin_conv,  # noqa: F401
                   poprand, control, popnn, keras_ops)


_load_families()
