"""Control flow: lowering a computation with bound parameters, and the ``while``, ``conditional`` and ``call`` ops.

``lower_computation(b, comp, args)`` lowers every instruction of ``comp`` into the builder's current sequence with
its parameters bound to ``args`` (a tuple-shaped parameter binds to a Python tuple of ``DTensor``), and returns the
root's value. The compiler lowers the entry computation with it; the rules below lower called computations.

- ``call``: the called computation, inline.
- ``while``: the loop-carried state lives in dedicated tensors, filled from the init value before the loop. The
  condition is lowered into its own ``Sequence`` (it leaves a pred byte), the body into another whose results
  are copied back into the state tensors at its end; the device step is ``While(cond, pred address, body)``.
  A state element the body passes through unchanged keeps the init tensor itself (it is only read: no copy, no
  second tensor). The copy-back reads every result before it writes any state tensor: a result that reads a
  state tensor the copy-back writes (``(a, b) -> (b, a)``, a view of another state element) goes through a
  temporary first. When the trip count is known at compile time (XLA's counted loops: the condition only
  depends on state elements whose values follow from constants), the loop is a ``Repeat(n)`` of the body and
  the condition is not lowered at all.
- ``conditional``: each branch is lowered into its own ``Sequence`` and copies its results into output tensors
  shared by all branches; a pred selects with ``If`` (``branch_0`` is the true branch), an s32 index with
  ``Switch`` (an index out of range runs the last branch, as in XLA).

Liveness needs nothing special: blocks used inside a loop or a branch live for the whole loop or branch step
(``xla_lowering.mapping.memory``), so state, results and temporaries are never reused by another tensor while
the loop can still read them.
"""
from __future__ import annotations

import numpy as np

from kernels.program import Copy, If, Repeat, Sequence, Switch, While

from ..errors import DynamicShapeError, LoweringError
from ..hlo.ir import Computation, Instruction
from ..mapping.tensor import OFFSET_BITS, DTensor, copy_runs
from . import lower_instruction, register_lowering


# --- computations with bound parameters -----------------------------------------------------------
def lower_computation(b, comp: Computation, args, wrap=None):
    """Lower ``comp`` into ``b``'s current sequence with its parameters bound to ``args``; return the root's value.

    ``wrap`` may wrap the instruction list (the compiler's progress bar).
    """
    params = comp.parameters
    if len(args) != len(params):
        raise LoweringError(f"computation '{comp.name}' takes {len(params)} arguments, got {len(args)}")
    values: dict[Instruction, object] = {}
    for p in params:
        arg = args[p.attrs["number"]]
        if p.shape.is_tuple != isinstance(arg, tuple):
            raise LoweringError(f"parameter %{p.name} {p.shape} of computation '{comp.name}' is bound to "
                                f"{'a tuple' if isinstance(arg, tuple) else 'an array'}")
        values[p] = arg
    body = [i for i in comp.instructions if i.opcode != "parameter"]
    for inst in (wrap(body) if wrap is not None else body):
        if any(d < 0 for d in inst.shape.dims):
            raise DynamicShapeError(f"{inst.describe()} has a dynamic shape; the IPU needs static shapes")
        values[inst] = lower_instruction(b, inst, [values[o] for o in inst.operands])
    return values[comp.root]


def leaves(value) -> list[DTensor]:
    """The tensors of a value (a DTensor or nested tuples of them), in order."""
    if isinstance(value, tuple):
        return [t for v in value for t in leaves(v)]
    return [value]


def _rebuild(template, it):
    if isinstance(template, tuple):
        return tuple(_rebuild(v, it) for v in template)
    return next(it)


def _fresh_like(b, t: DTensor, name: str, origin: str) -> DTensor:
    """A new tensor to hold ``t``'s values: ``t``'s tile mapping when it is one region a tile, else linear."""
    if len(t.starts) == len(np.unique(t.tiles)):
        return b.like(t, t.shape, name, "activation", origin)
    return b.linear(t.shape, name, "activation", origin)


def _copy_rows(dst: DTensor, src: DTensor) -> np.ndarray:
    return copy_runs(dst.element_syms(), src.element_syms(), dst.itemsize)


def _add_copy(b, name: str, rows: list[np.ndarray], origin: str) -> None:
    rows = [r for r in rows if len(r)]
    if rows:
        b.add(Copy(name, np.concatenate(rows).astype(np.int64), origin))


# --- call --------------------------------------------------------------------------------------------
@register_lowering("call")
def lower_call(ctx, *args):
    return lower_computation(ctx.b, ctx.inst.called["to_apply"], list(args))


# --- while -------------------------------------------------------------------------------------------
def _passthrough_elements(body: Computation) -> set[int]:
    """Top-level state elements that the body returns unchanged (``tuple(..., gte(param, k), ...)`` at k)."""
    params, root = body.parameters, body.root
    if len(params) != 1:
        return set()
    p = params[0]
    if root is p:
        return set(range(len(p.shape.tuple_shapes))) if p.shape.is_tuple else {0}
    if root.opcode != "tuple" or not p.shape.is_tuple:
        return set()
    return {k for k, o in enumerate(root.operands)
            if o.opcode == "get-tuple-element" and o.operands[0] is p and o.attrs["index"] == k}


def _carry(b, state: list[DTensor], results: list[DTensor], name: str, origin: str) -> None:
    """Copy the body's results into the state tensors, every read before any write."""
    jobs = []
    for s, r in zip(state, results):
        if r is s:
            continue
        dst, src = s.element_syms(), r.element_syms()
        keep = dst != src
        if keep.any():
            jobs.append((s, r, keep, dst[keep], src[keep]))
    if not jobs:
        return
    written = np.unique(np.concatenate([d >> OFFSET_BITS for _, _, _, d, _ in jobs]))
    first, second = [], []
    for s, r, keep, dst, src in jobs:
        isz = s.itemsize
        if np.isin(src >> OFFSET_BITS, written).any():
            tmp = b.like(r, r.shape, f"{name}/carry_tmp", "temporary", origin).element_syms()[keep]
            first.append(copy_runs(tmp, src, isz))
            second.append(copy_runs(dst, tmp, isz))
        else:
            second.append(copy_runs(dst, src, isz))
    _add_copy(b, f"{name}/carry_read", first, origin)
    _add_copy(b, f"{name}/carry", second, origin)


@register_lowering("while")
def lower_while(ctx, init):
    b, inst = ctx.b, ctx.inst
    cond, body = inst.called["condition"], inst.called["body"]
    name, origin = ctx.name, ctx.origin
    keep = _passthrough_elements(body)
    top = init if isinstance(init, tuple) else (init,)
    state_top, init_rows = [], []
    for k, v in enumerate(top):
        if k in keep:
            state_top.append(v)                         # only read in the loop: the init tensor itself
            continue
        fresh = _rebuild(v, iter([_fresh_like(b, t, f"{name}/state{k}", origin) for t in leaves(v)]))
        init_rows += [_copy_rows(d, s) for d, s in zip(leaves(fresh), leaves(v))]
        state_top.append(fresh)
    state = tuple(state_top) if isinstance(init, tuple) else state_top[0]
    _add_copy(b, f"{name}/init", init_rows, origin)

    trips = static_trip_count(inst)
    body_seq = Sequence()
    with b.into(body_seq):
        results = lower_computation(b, body, [state])
        _carry(b, leaves(state), leaves(results), name, origin)
    if trips is not None:
        b.add(Repeat(trips, body_seq))
        return state
    cond_seq = Sequence()
    with b.into(cond_seq):
        pred = leaves(lower_computation(b, cond, [state]))[0]
    if pred.dtype != "pred" or pred.size != 1:
        raise ctx.unsupported(f"a loop condition returning {pred.shape}")
    b.add(While(cond_seq, int(pred.element_syms()[0]), body_seq, name=name))
    return state


# --- compile-time trip counts -------------------------------------------------------------------------
UNKNOWN = type("Unknown", (), {"__repr__": lambda self: "UNKNOWN"})()
MAX_STATIC_TRIPS = 10_000          # longer loops (or ones whose count is not known) stay While loops
MAX_KNOWN_ELEMENTS = 64            # larger values are not tracked at compile time
MAX_EVALUATIONS = 200_000          # instructions evaluated for one loop's trip count, at most
_IMPURE = {"rng", "rng-bit-generator", "rng-get-and-update-state", "while", "infeed", "outfeed", "custom-call",
           "send", "recv", "send-done", "recv-done", "after-all", "parameter"}


class _Budget(Exception):
    pass


def _unknown_in(v) -> bool:
    if isinstance(v, tuple):
        return any(_unknown_in(x) for x in v)
    return v is UNKNOWN


class _PartialEvaluator:
    """Evaluates what follows from constants; anything depending on run-time data is UNKNOWN."""

    def __init__(self):
        self.left = MAX_EVALUATIONS

    def computation(self, comp: Computation, args):
        env = {}
        for inst in comp.instructions:
            if inst.opcode == "parameter":
                env[inst] = args[inst.attrs["number"]]
            else:
                env[inst] = self.instruction(inst, [env[o] for o in inst.operands])
        return env[comp.root]

    def instruction(self, inst: Instruction, ops):
        from ..hlo.reference import evaluate_instruction
        self.left -= 1
        if self.left < 0:
            raise _Budget
        op = inst.opcode
        if op == "tuple":
            return tuple(ops)
        if op == "get-tuple-element":
            return UNKNOWN if ops[0] is UNKNOWN else ops[0][inst.attrs["index"]]
        if op == "call":
            return self.computation(inst.called["to_apply"], ops)
        if op == "fusion":
            return self.computation(inst.called["fused"], ops)
        if op == "conditional":
            sel = ops[0]
            if sel is UNKNOWN:
                return UNKNOWN
            n = len(ops) - 1
            k = (0 if bool(sel) else 1) if inst.operands[0].shape.dtype == "pred" else int(sel)
            k = k if 0 <= k < n else n - 1
            return self.computation(inst.called[f"branch_{k}"], [ops[1 + k]])
        if (op in _IMPURE or inst.shape.is_tuple or inst.shape.size > MAX_KNOWN_ELEMENTS
                or any(_unknown_in(o) for o in ops)):
            return UNKNOWN
        try:
            return evaluate_instruction(inst, ops)
        except Exception:
            return UNKNOWN

    def known(self, inst: Instruction, depth: int = 0):
        """The value of an instruction of the enclosing computation, when constants alone decide it."""
        if inst.opcode == "constant":
            return self.instruction(inst, [])
        if inst.opcode in ("tuple", "get-tuple-element") and depth < 8:
            return self.instruction(inst, [self.known(o, depth + 1) for o in inst.operands])
        return UNKNOWN


def static_trip_count(inst: Instruction) -> int | None:
    """How many times ``inst`` (a while) runs its body, when that follows from constants alone; else None."""
    ev = _PartialEvaluator()
    try:
        state = ev.known(inst.operands[0])
        if not isinstance(state, tuple) or all(v is UNKNOWN for v in leaves(state)):
            return None
        cond, body = inst.called["condition"], inst.called["body"]
        for n in range(MAX_STATIC_TRIPS + 1):
            pred = ev.computation(cond, [state])
            if isinstance(pred, tuple):
                pred = pred[0] if len(pred) == 1 else UNKNOWN
            if pred is UNKNOWN:
                return None
            if not bool(np.asarray(pred)):
                return n
            state = ev.computation(body, [state])
    except _Budget:
        return None
    return None


# --- conditional ---------------------------------------------------------------------------------------
@register_lowering("conditional")
def lower_conditional(ctx, selector, *operands):
    b, inst = ctx.b, ctx.inst
    name, origin = ctx.name, ctx.origin
    if selector.dtype not in ("pred", "s32") or selector.size != 1:
        raise ctx.unsupported(f"a branch selector of type {selector.shape}")
    seqs, results = [], []
    for k, arg in enumerate(operands):
        seq = Sequence()
        with b.into(seq):
            results.append(lower_computation(b, inst.called[f"branch_{k}"], [arg]))
        seqs.append(seq)
    outs = [_fresh_like(b, t, f"{name}/out{j}", origin) for j, t in enumerate(leaves(results[0]))]
    for k, (seq, res) in enumerate(zip(seqs, results)):
        with b.into(seq):
            _add_copy(b, f"{name}/branch{k}/result", [_copy_rows(o, r) for o, r in zip(outs, leaves(res))], origin)
    addr = int(selector.element_syms()[0])
    if selector.dtype == "pred":
        if len(seqs) != 2:
            raise ctx.unsupported(f"a pred conditional with {len(seqs)} branches")
        b.add(If(addr, seqs[0], seqs[1]))
    else:
        b.add(Switch(addr, seqs, name=name))
    return _rebuild(results[0], iter(outs))
