"""The pass pipeline: HLO IR in, simplified and fused HLO IR out.

Each pass is a function ``Module -> Module | None`` (None: changed in place) that rewrites the module
in place and returns it. ``PIPELINE`` names the stages in the order they run; ``run_pipeline`` runs
them and can report the module after each one, and ``print_stages`` shows the module text stage by
stage:

    from xla_lowering.passes import print_stages
    print(print_stages(module))

Passes keep the entry computation's parameters (numbers, shapes) and ``module.aliases`` unchanged.
"""
from __future__ import annotations

import copy
from typing import Callable, Optional

from xla_lowering.hlo.ir import Module

from . import algebraic, cleanup, constant_fold, dce, fusion, schedule, verify

Pass = Callable[[Module], Optional[Module]]

PIPELINE: list[tuple[str, Pass]] = [
    ("verify-input", verify.run),  # fail early, naming the importer's mistake rather than a pass's
    ("cleanup", cleanup.run),  # forward tuples, drop reshape/copy/convert no-ops
    ("constant-fold", constant_fold.run),  # after cleanup: gte(tuple(constant)) is a constant now
    ("algebraic", algebraic.run),  # after folding: x * convert(1) has become x * 1
    ("dce", dce.run),
    ("fusion", fusion.run),  # the other passes see plain instructions
    ("schedule", schedule.run),  # last: fills just before their users, in the order that fusion left
    ("verify", verify.run),
]


def run_pipeline(module: Module, passes: list[tuple[str, Pass]] | None = None,
                 trace: Callable[[str, Module], None] | None = None) -> Module:
    """Run ``passes`` (default ``PIPELINE``) on ``module`` in place; ``trace(name, module)`` after each."""
    for name, run in PIPELINE if passes is None else passes:
        result = run(module)
        if result is not None:
            module = result
        if trace is not None:
            trace(name, module)
    return module


def print_stages(module: Module, passes: list[tuple[str, Pass]] | None = None) -> str:
    """The module's text before the pipeline and after every stage (``module`` itself is not changed)."""
    parts = [f"=== input ===\n{module.to_text()}"]
    run_pipeline(copy.deepcopy(module), passes,
                 trace=lambda name, m: parts.append(f"=== after {name} ===\n{m.to_text()}"))
    return "\n".join(parts)


__all__ = ["PIPELINE", "Pass", "run_pipeline", "print_stages"]
