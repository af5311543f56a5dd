"""Find the instruction whose lowering is wrong: probe a module's values on the simulator, check each locally.

Comparing the outputs of a whole computation with another implementation cannot always tell a wrong lowering
from rounding. A training step through ReLUs and batch norms is discontinuous at float32 rounding level: in
ResNet-50's step (64x64, batch 2) a relative change of 1e-7 to its inputs, computed in float64, flips one of
its ~1.5 million ReLU mask elements and changes weight updates by up to ~5%, so two correct float32
implementations (TF eager and TF's XLA on the CPU) differ by that much too.

This module checks instructions *locally* instead, so that every comparison is one operation's rounding,
whatever the conditioning of the whole:

- ``with_probes(module, select)`` copies the module and makes its root also return the selected instructions
  (by default the contractions, reductions and windowed ops: ``HEAVY``), so the simulator computes them in the
  program it would run anyway (the elementwise code between them is still fused as usual);
- ``local_errors(module, inputs, values)`` evaluates the module with the reference evaluator
  (``xla_lowering.hlo.reference``), but every probed instruction's value is replaced by the simulator's as soon
  as it has been compared: each probed instruction (and each output of the module) is recomputed from the
  simulator's own values of the probed instructions before it, the unprobed ones in between recomputed too;
- ``check_module(module, inputs, device)`` does both, compiling and running the probed module.

A wrong rule shows up as an O(1) error at the first instruction it affects, and only there. The error of a
contraction (dot, convolution) or a sum is measured against the magnitude of the terms it adds (the same
instruction evaluated on the operands' absolute values), the bound of any float summation order's rounding,
so that a result that is zero up to rounding (the bias gradient of a convolution followed by a batch norm) does
not read as a large relative error; any other instruction against its largest value. The reference value is
computed in f64 from the simulator's values; the same in the module's own types tells how much rounding alone
moves it (the elementwise code since the last probe can cancel: a batch norm's gradient over two values is
rounding noise only), and ``NOISE_FACTOR`` times that is allowed on top of the tolerance. Non-float results
must match wherever the two reference evaluations agree.

Random number ops (rng, rng-bit-generator) are always probed and never compared: the reference draws other
numbers, so the simulator's values are used from there on.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .hlo import reference
from .hlo.ir import Instruction, Module, Shape

# what with_probes selects by default: the ops that are not elementwise code the fusion pass would merge
HEAVY = frozenset({"convolution", "dot", "reduce", "reduce-window", "select-and-scatter", "batch-norm-training",
                   "batch-norm-inference", "batch-norm-grad", "scatter", "gather", "sort"})
RANDOM = frozenset({"rng", "rng-bit-generator"})
# per float type: the local error allowed (observed: 2.4e-7 at most in ResNet-50's f32 training step, 64x64)
TOLERANCES = {"f16": 1e-2, "bf16": 1e-2, "f32": 1e-5, "f64": 1e-12}
# and beyond it, this many times the rounding noise of the elementwise code recomputed since the last probe
NOISE_FACTOR = 10
_SUMS = frozenset({"convolution", "dot"})


@dataclass
class Probed:
    """A module whose root also returns ``probes`` (after the original outputs, flattened)."""
    module: Module
    probes: list[Instruction]     # instructions of the *original* module, in program order
    n_outputs: int                # flattened outputs of the original root


def _leaves(shape: Shape) -> int:
    return sum(_leaves(s) for s in shape.tuple_shapes) if shape.is_tuple else 1


def with_probes(module: Module, select: Callable[[Instruction], bool] | None = None) -> Probed:
    """A copy of ``module`` (``module`` is not changed) whose root is a tuple of the original outputs and the
    values of the entry instructions ``select`` accepts (default: opcodes in ``HEAVY``) and of random ops."""
    select = select or (lambda i: i.opcode in HEAVY)
    entry = module.entry
    probes = [i for i in entry.instructions if i is not entry.root and i.opcode not in ("parameter", "constant")
              and (select(i) or i.opcode in RANDOM)]
    for p in probes:
        if p.shape.is_tuple and any(s.is_tuple for s in p.shape.tuple_shapes):
            raise ValueError(f"cannot probe a nested tuple: {p.describe()}")
    mod = copy.deepcopy(module)
    by_id = {i.id: i for i in mod.entry.instructions}
    root = mod.entry.root
    # the compiler streams out the leaves of the root's value in order: the original outputs come first
    outs = (list(root.operands) if root.opcode == "tuple" else [root]) + [by_id[p.id] for p in probes]
    new_root = Instruction("tuple", Shape.tuple([o.shape for o in outs]), outs, name="probed_root")
    mod.entry.instructions.append(new_root)
    mod.entry.root = new_root
    return Probed(mod, probes, _leaves(entry.root.shape))


@dataclass
class LocalError:
    """How far the simulator's value of ``inst`` is from the reference, in units of ``scale``.

    Floats: ``error`` = max |simulated - reference in f64| / scale; ``noise`` = max |reference in f32 - reference
    in f64| / scale, how much rounding alone moves this value (large where the elementwise code recomputed since
    the last probe cancels, e.g. a batch norm over two values). Other types: ``error`` = the fraction of elements
    that differ from the reference where its f32 and f64 evaluations agree; ``noise`` = the fraction where they
    do not (a comparison of values within rounding of each other).
    """
    inst: Instruction
    error: float
    scale: float
    tolerance: float
    noise: float = 0.0

    @property
    def allowed(self) -> float:
        return self.tolerance + NOISE_FACTOR * self.noise

    @property
    def ok(self) -> bool:
        return self.error <= self.allowed

    @property
    def relative(self) -> float:
        """The error in units of what is allowed (inf for a mismatch where none is allowed)."""
        if self.allowed:
            return self.error / self.allowed
        return float("inf") if self.error else 0.0

    def __str__(self) -> str:
        noise = f", rounding noise {self.noise:.1e}" if self.noise else ""
        return f"{self.error:.2e} (tolerance {self.tolerance:.0e}{noise}) {self.inst.describe()}"


@dataclass
class Check:
    """The local errors of the probed instructions and outputs, in program order; the simulator's outputs."""
    errors: list[LocalError]
    outputs: list = field(default_factory=list)

    @property
    def failures(self) -> list[LocalError]:
        return [e for e in self.errors if not e.ok]

    @property
    def first_failure(self) -> LocalError | None:
        bad = self.failures
        return bad[0] if bad else None

    def worst(self, n: int = 5) -> list[LocalError]:
        return sorted(self.errors, key=lambda e: -e.relative)[:n]

    def summary(self, n: int = 5) -> str:
        bad = self.failures
        head = (f"{len(bad)} of {len(self.errors)} instructions differ from the reference evaluator beyond "
                f"rounding; the first: {bad[0]}" if bad else f"{len(self.errors)} instructions match")
        return head + "\nlargest errors (relative to what is allowed):\n" + "\n".join(f"  {e}" for e in self.worst(n))


# --- the reference in f64 beside it: how much rounding alone moves each value -------------------------------------
_WIDE = {"f16": "f64", "bf16": "f64", "f32": "f64"}
_BITWISE = frozenset({"bitcast-convert"})       # reinterpret bits: the f64 shadow takes the f32 value


def _wide_shape(shape: Shape) -> Shape:
    if shape.is_tuple:
        return Shape.tuple([_wide_shape(s) for s in shape.tuple_shapes])
    return shape.with_dtype(_WIDE[shape.dtype]) if shape.dtype in _WIDE else shape


def _widened(module: Module) -> Module:
    """A copy of ``module`` computing in f64 (same instructions, in the same order)."""
    mod = copy.deepcopy(module)
    for comp in mod.computations():
        for inst in comp.instructions:
            inst.shape = _wide_shape(inst.shape)
            value = inst.attrs.get("value") if inst.opcode == "constant" else None
            if value is not None:
                inst.attrs["value"] = _cast(value, inst.shape)
    return mod


def _cast(value, shape: Shape):
    if shape.is_tuple:
        return tuple(_cast(v, s) for v, s in zip(value, shape.tuple_shapes))
    return np.asarray(value).reshape(shape.dims).astype(shape.np_dtype)


def _scale(inst: Instruction, ops: list, ref: np.ndarray, ev) -> float:
    is_sum = inst.opcode in _SUMS or (
        inst.opcode == "reduce" and len(ops) == 2 and
        reference.simple_reducer(inst.called["to_apply"], ops[0].dtype) is np.add)
    if is_sum:
        ref = reference.RULES[inst.opcode](inst, [np.abs(o) if o.dtype.kind == "f" else o for o in ops], ev)
    finite = np.abs(np.asarray(ref, np.float64))
    finite = finite[np.isfinite(finite)]
    return float(finite.max()) if finite.size else 0.0


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))             # equal infinities and NaNs agree
    return float(np.where(same, 0.0, np.abs(a - b)).max())


def _error(inst: Instruction, ops: list, ref: np.ndarray, wide: np.ndarray, got: np.ndarray, tolerance: float,
           ev) -> LocalError:
    if ref.size == 0:
        return LocalError(inst, 0.0, 0.0, tolerance)
    if ref.dtype.kind not in "fc":
        rounding = ref != wide.astype(ref.dtype)
        return LocalError(inst, float(np.mean((got != ref) & ~rounding)), 0.0, 0.0, float(np.mean(rounding)))
    worst, noise = _max_diff(got, wide), _max_diff(ref, wide)
    scale = _scale(inst, ops, ref, ev)
    if worst == 0.0:
        return LocalError(inst, 0.0, scale, tolerance)
    if scale == 0.0 or not np.isfinite(worst):
        return LocalError(inst, float("inf"), scale, tolerance, 0.0 if np.isfinite(noise) else float("inf"))
    return LocalError(inst, worst / scale, scale, tolerance, noise / scale)


def local_errors(module: Module, inputs: Sequence, values: dict, tolerances: dict | None = None,
                 rng: np.random.Generator | None = None) -> list[LocalError]:
    """Check the simulator's ``values`` (instruction id -> array, or tuple for tuple-shaped instructions) of
    ``module``'s entry instructions, each against the reference evaluator applied to the simulator's values of
    the checked instructions before it (in f64, and in the module's types to measure the rounding noise).
    ``inputs``: the entry's arguments."""
    tolerances = {**TOLERANCES, **(tolerances or {})}
    ev, ev_wide = reference.Evaluator(rng), reference.Evaluator(rng)
    entry, wide_entry = module.entry, _widened(module).entry
    last_use = {}
    for k, inst in enumerate(entry.instructions):
        for o in inst.operands:
            last_use[o.id] = k
    env: dict[int, object] = {}
    env_wide: dict[int, object] = {}
    out: list[LocalError] = []

    def compare(inst, ops, ref, wide, got, shape):
        got = np.asarray(got).reshape(shape.dims).astype(shape.np_dtype, copy=False)
        tol = tolerances.get(shape.dtype, 0.0) if shape.np_dtype.kind in "fc" else 0.0
        out.append(_error(inst, ops, np.asarray(ref), np.asarray(wide), got, tol, ev))
        return got

    with np.errstate(all="ignore"):
        for k, (inst, wide_inst) in enumerate(zip(entry.instructions, wide_entry.instructions)):
            if inst.opcode == "parameter":
                arg = inputs[inst.attrs["number"]]
                env[inst.id] = np.asarray(arg).astype(inst.shape.np_dtype, copy=False)
                env_wide[inst.id] = _cast(arg, wide_inst.shape)
                continue
            ops = [env[o.id] for o in inst.operands]
            if inst.id in values and inst.opcode in RANDOM:
                got = values[inst.id]
            else:
                ref = reference.evaluate_instruction(inst, ops, ev)
                wide = None
                if inst.opcode not in _BITWISE:
                    try:
                        wide = reference.evaluate_instruction(wide_inst, [env_wide[o.id] for o in inst.operands],
                                                              ev_wide)
                    except Exception:          # an op the reference cannot evaluate in f64: no noise estimate
                        wide = None
                if wide is None:
                    wide = _cast(ref, wide_inst.shape)
                if inst.id not in values:
                    env[inst.id], env_wide[inst.id] = ref, wide
                    got = None
                elif inst.shape.is_tuple:
                    got = tuple(compare(inst, ops, r, w, g, s) for r, w, g, s in
                                zip(ref, wide, values[inst.id], inst.shape.tuple_shapes))
                else:
                    got = compare(inst, ops, ref, wide, values[inst.id], inst.shape)
            if got is not None:                # from here on, the simulator's value
                env[inst.id] = _cast(got, inst.shape)
                env_wide[inst.id] = _cast(got, wide_inst.shape)
            for o in inst.operands:
                if last_use.get(o.id) == k and o is not entry.root:
                    env.pop(o.id, None)
                    env_wide.pop(o.id, None)
    return out


def check_module(module: Module, inputs: Sequence, device, select: Callable[[Instruction], bool] | None = None,
                 options=None, tolerances: dict | None = None, seed: int = 0) -> Check:
    """Compile ``module`` with probes (``with_probes``) for ``device``, run it on ``inputs`` on the simulator and
    check every probed instruction and every output locally (``local_errors``)."""
    from kernels.engine import Engine
    from .compiler import CompileOptions, compile_module
    probed = with_probes(module, select)
    exe = compile_module(probed.module, device, options or CompileOptions(progress=False))
    outs, _ = Engine(exe, seed=seed).run([np.asarray(a) for a in inputs])
    outs = [np.asarray(o) for o in outs]
    values: dict[int, object] = {}
    k = probed.n_outputs
    for p in probed.probes:
        n = _leaves(p.shape)
        values[p.id] = tuple(outs[k:k + n]) if p.shape.is_tuple else outs[k]
        k += n
    root = module.entry.root
    results = list(root.operands) if root.opcode == "tuple" else [root]
    k = 0
    for r in results:                       # the module's own outputs are checked too
        n = _leaves(r.shape)
        if r.opcode not in ("parameter", "constant") and r.id not in values and not (
                r.shape.is_tuple and any(s.is_tuple for s in r.shape.tuple_shapes)):
            values[r.id] = tuple(outs[k:k + n]) if r.shape.is_tuple else outs[k]
        k += n
    return Check(local_errors(module, inputs, values, tolerances, np.random.default_rng(seed)),
                 outs[:probed.n_outputs])
