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

Outputs written in place (XLA's buffer assignment gives a conditional's output the buffer of the variable it
updates): the caller of ``lower_computation`` may name storage that it copies root values into and whose old value
it reads no more (an infeed loop's variables, ``dests``). When such a root value is (through tuples only) an
output of a conditional and nothing after the conditional reads that storage, the conditional's output *is* that
storage: each branch writes its result there as soon as it has read the old value for the last time and computed
the new one (``writeback.write_early``; a result that is already that storage, a branch that passes the variable
through, is no copy at all), and the caller's copy disappears. Without this, the old values, every branch's
results and the outputs (an optimizer's weights, slots and accumulators, three times over) would all be live at
once. A result that reads storage another output overwrites goes through ``writeback.carry`` (a temporary).

Liveness needs nothing special: blocks used inside a loop live for the whole loop (``xla_lowering.mapping.memory``),
so state, results and temporaries are never reused by another tensor while the loop can still read them; a
branch is straight-line code that runs at most once a step, so its temporaries live only from their first use to
their last.
"""
from __future__ import annotations

import numpy as np

from kernels.program import If, Repeat, Sequence, Switch, While

from ..errors import DynamicShapeError, LoweringError
from ..hlo.ir import Computation, Instruction, Shape
from ..mapping.tensor import DTensor, copy_runs
from . import lower_instruction, register_lowering
from .writeback import add_copy, blocks, carry, same_storage, separable, write_early


# --- computations with bound parameters -----------------------------------------------------------
def lower_computation(b, comp: Computation, args, wrap=None, dests=None):
    """Lower ``comp`` into ``b``'s current sequence with its parameters bound to ``args``; return the root's value.

    ``wrap`` may wrap the instruction list (the compiler's progress bar). ``dests`` (leaf index of the root's value
    -> DTensor): storage the caller copies those root values into and whose old value it reads no more after
    ``comp``; a conditional (or call) that computes such a value may write it there in place (module docstring).
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
    planned = _dests_by_producer(comp, dests) if dests else {}
    for pos, inst in enumerate(wrap(body) if wrap is not None else body):
        if any(d < 0 for d in inst.shape.dims):
            raise DynamicShapeError(f"{inst.describe()} has a dynamic shape; the IPU needs static shapes")
        ops = [values[o] for o in inst.operands]
        if inst in planned:
            values[inst] = lower_instruction(b, inst, ops, _unread_later(planned[inst], inst, body[pos + 1:], values))
        else:
            values[inst] = lower_instruction(b, inst, ops)
    return values[comp.root]


IN_PLACE_OPS = ("conditional", "call")     # rules that take ``dests`` (LowerCtx.dests)


def _leaf_count(shape: Shape) -> int:
    return sum(_leaf_count(s) for s in shape.tuple_shapes) if shape.is_tuple else 1


def _producer(inst: Instruction, leaf: int) -> tuple[Instruction, int]:
    """The instruction, and the leaf of its value, that leaf ``leaf`` of ``inst``'s value is: through tuple and
    get-tuple-element, which only pass values on."""
    while True:
        if inst.opcode == "tuple":
            for o in inst.operands:
                n = _leaf_count(o.shape)
                if leaf < n:
                    inst = o
                    break
                leaf -= n
        elif inst.opcode == "get-tuple-element":
            src = inst.operands[0]
            leaf += sum(_leaf_count(s) for s in src.shape.tuple_shapes[:inst.attrs["index"]])
            inst = src
        else:
            return inst, leaf


def _dests_by_producer(comp: Computation, dests: dict) -> dict[Instruction, dict[int, DTensor]]:
    """``dests`` by the in-place-capable instruction (and output leaf) that computes each root value."""
    planned: dict[Instruction, dict[int, DTensor]] = {}
    for k, dst in sorted(dests.items()):
        inst, leaf = _producer(comp.root, k)
        if inst.opcode in IN_PLACE_OPS:
            planned.setdefault(inst, {}).setdefault(leaf, dst)      # a value returned twice: one storage
    return planned


def _unread_later(dests: dict, inst: Instruction, later: list[Instruction], values: dict) -> dict:
    """The ``dests`` whose storage no instruction of ``later`` (those after ``inst``) reads. An instruction after
    ``inst`` reaches storage only through its operands: values computed before ``inst`` (looked at here), ``inst``'s
    own output (the new values), or values computed after it, which in turn reach storage only through theirs."""
    after = set(later)
    read = blocks(t for u in later for o in u.operands if o is not inst and o not in after
                  for t in leaves(values[o]))
    return {j: dst for j, dst in dests.items() if not blocks([dst]) & read}


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


# --- call --------------------------------------------------------------------------------------------
@register_lowering("call")
def lower_call(ctx, *args):
    return lower_computation(ctx.b, ctx.inst.called["to_apply"], list(args), dests=ctx.dests)


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
    add_copy(b, f"{name}/init", init_rows, origin)

    trips = static_trip_count(inst)
    body_seq = Sequence()
    with b.into(body_seq):
        results = lower_computation(b, body, [state])
        carry(b, leaves(state), leaves(results), name, origin)
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
    dests = ctx.dests or {}
    seqs, results = [], []
    for k, arg in enumerate(operands):
        seq = Sequence()
        with b.into(seq):
            results.append(lower_computation(b, inst.called[f"branch_{k}"], [arg], dests=dests))
        seqs.append(seq)
    # an output written in place is a view of its storage, a new tensor: a value cached for the storage's old
    # contents (a scalar's per-tile copies) is not taken for the new ones
    outs = [dests[j].view(t.shape) if j in dests else _fresh_like(b, t, f"{name}/out{j}", origin)
            for j, t in enumerate(leaves(results[0]))]
    for k, (seq, res) in enumerate(zip(seqs, results)):
        _write_results(b, seq, outs, leaves(res), [j in dests for j in range(len(outs))], f"{name}/branch{k}", origin)
    addr = int(selector.element_syms()[0])
    if selector.dtype == "pred":
        if len(seqs) != 2:
            raise ctx.unsupported(f"a pred conditional with {len(seqs)} branches")
        b.add(If(addr, seqs[0], seqs[1]))
    else:
        b.add(Switch(addr, seqs, name=name))
    return _rebuild(results[0], iter(outs))


def _write_results(b, seq: Sequence, outs: list[DTensor], results: list[DTensor], in_place: list[bool], name: str,
                   origin: str) -> None:
    """End a branch by writing its results into the conditional's outputs: an output written in place as soon as
    the branch is done with the old value and the result (when ``separable``); the others (fresh outputs, results
    that read storage an output overwrites) at the end, every read before any write."""
    jobs = [(o, r, own) for o, r, own in zip(outs, results, in_place) if not same_storage(o, r)]
    own = [k for k, job in enumerate(jobs) if job[2]]
    early = {own[i] for i in separable([jobs[k][:2] for k in own])}
    late = [job for k, job in enumerate(jobs) if k not in early]
    with b.into(seq):
        carry(b, [o for o, _, _ in late], [r for _, r, _ in late], name, origin)
    write_early(b, seq, [jobs[k][:2] for k in sorted(early)], f"{name}/write/", origin)
