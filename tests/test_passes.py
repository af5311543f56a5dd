"""Tests of the pass pipeline: golden before/after structures, and that every pass keeps the reference
evaluator's results (``reference.evaluate_module`` before == after, on random inputs)."""
import copy
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from xla_lowering.hlo.ir import Alias, Computation, Instruction, Module, Shape  # noqa: E402
from xla_lowering.hlo.reference import ELEMENTWISE_OPS, evaluate_module  # noqa: E402
from xla_lowering.hlo.text import parse_module  # noqa: E402
from xla_lowering.passes import PIPELINE, print_stages, run_pipeline  # noqa: E402
from xla_lowering.passes import algebraic, cleanup, constant_fold, dce, fusion, schedule, verify  # noqa: E402

PASSES = dict(PIPELINE)


class Builder:
    """A tiny IR builder: each call appends an instruction; ``module(root)`` wraps them up."""

    def __init__(self, name="main"):
        self.name, self.insts, self.params = name, [], 0

    def add(self, opcode, operands, shape, attrs=None, called=None, **metadata):
        inst = Instruction(opcode, shape, list(operands), dict(attrs or {}), dict(called or {}), metadata=metadata)
        self.insts.append(inst)
        return inst

    def param(self, dtype="f32", dims=()):
        self.params += 1
        return self.add("parameter", [], Shape(dtype, tuple(dims)), {"number": self.params - 1})

    def const(self, value, dtype="f32"):
        value = np.asarray(value, dtype=Shape(dtype).np_dtype)
        return self.add("constant", [], Shape(dtype, value.shape), {"value": value})

    def op(self, opcode, *operands, dtype=None, dims=None, **attrs):
        """An op whose shape defaults to its (first value) operand's; pred for compare."""
        first = operands[1 if opcode in ("select", "clamp") else 0].shape
        dtype = dtype or ("pred" if opcode == "compare" else first.dtype)
        return self.add(opcode, operands, Shape(dtype, first.dims if dims is None else tuple(dims)), attrs)

    def broadcast(self, x, dims, dimensions=()):
        return self.add("broadcast", [x], Shape(x.shape.dtype, tuple(dims)), {"dimensions": tuple(dimensions)})

    def tuple(self, *xs):
        return self.add("tuple", xs, Shape.tuple(x.shape for x in xs))

    def computation(self, root):
        return Computation(self.name, list(self.insts), root)

    def module(self, root, aliases=()):
        return Module("test", self.computation(root), list(aliases))


def random_args(module, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for p in module.entry.parameters:
        dt = p.shape.np_dtype
        data = rng.standard_normal(p.shape.dims) * 3 if dt.kind == "f" else rng.integers(-9, 9, p.shape.dims)
        out.append(np.asarray(data).astype(dt))
    return out


def flat(value):
    return [v for item in value for v in flat(item)] if isinstance(value, tuple) else [np.asarray(value)]


def results(module, seeds=(0, 1)):
    return [flat(evaluate_module(module, random_args(module, seed))) for seed in seeds]


def opcodes(comp):
    return [i.opcode for i in comp.instructions]


def run_pass(run, module):
    """Run one pass in place; check the IR stays valid and the results stay the same."""
    verify.verify_module(module)
    params, aliases = [p.shape for p in module.entry.parameters], list(module.aliases)
    want = results(module)
    after = run(module) or module
    verify.verify_module(after)
    assert [p.shape for p in after.entry.parameters] == params
    assert after.aliases == aliases
    for w_outs, g_outs in zip(want, results(after)):
        assert len(w_outs) == len(g_outs)
        for w, g in zip(w_outs, g_outs):
            assert w.shape == g.shape and w.dtype == g.dtype
            np.testing.assert_array_equal(g, w)  # NaN == NaN, -0 == +0
    return after


# --- cleanup ---------------------------------------------------------------------------------------
def test_cleanup_golden():
    b = Builder()
    x, y = b.param("f32", (2, 3)), b.param("f32", (6,))
    t = b.tuple(x, y)
    g = b.add("get-tuple-element", [t], y.shape, {"index": 1})
    r1 = b.op("reshape", g, dims=(3, 2))
    r2 = b.op("reshape", r1, dims=(2, 3))  # reshape(reshape(y)) -> one reshape
    same = b.op("reshape", x)  # same shape: no-op
    tr = b.op("transpose", same, dimensions=(0, 1))
    bc = b.broadcast(tr, (2, 3), (0, 1))
    cv = b.op("convert", b.op("copy", bc))
    root = b.tuple(b.op("add", cv, r2), x)
    after = run_pass(cleanup.run, b.module(root, [Alias((1,), 0)]))
    entry = after.entry
    assert entry.root.opcode == "tuple" and entry.root is root
    add = entry.root.operands[0]
    assert add.operands[0] is x
    folded = add.operands[1]
    assert folded.opcode == "reshape" and folded.operands[0] is y and folded.shape.dims == (2, 3)
    assert opcodes(entry) == ["parameter", "parameter", "reshape", "add", "tuple"]


def test_cleanup_keeps_entry_root_tuple_and_meaningful_ops():
    b = Builder()
    x = b.param("f32", (2, 3))
    keep = [b.op("transpose", x, dims=(3, 2), dimensions=(1, 0)), b.op("convert", x, dtype="f16"),
            b.op("reshape", x, dims=(6,))]
    module = b.module(b.tuple(*keep))
    after = run_pass(cleanup.run, module)
    assert opcodes(after.entry) == ["parameter", "transpose", "convert", "reshape", "tuple"]


def _naive_apply_rules(comp, rules):
    """The rewrite driver spelled out: every use replaced (a pass over the computation) per replacement."""
    while True:
        changed = False
        members = {i.id for i in comp.instructions}
        for inst in list(comp.instructions):
            for rewrite in rules:
                new = rewrite(inst)
                if new is None or new is inst:
                    continue
                if new.id not in members:
                    dce.insert_before(comp, inst, [new])
                    members.add(new.id)
                dce.replace_uses(comp, inst, new)
                changed = True
                break
        if not changed:
            return
        dce.remove_dead(comp)


def _signature(comp):
    pos = {inst.id: k for k, inst in enumerate(comp.instructions)}
    return ([(i.opcode, i.shape.dims, [pos[o.id] for o in i.operands]) for i in comp.instructions],
            pos[comp.root.id])


def test_cleanup_sweeps_long_chains_like_the_naive_driver():
    # long chains of no-ops, reshapes of reshapes and tuple forwarding, used many times, the root replaced
    # too: replacements applied once per sweep give the module the one-pass-per-replacement driver gives
    b = Builder()
    x = b.param("f32", (4, 6))
    vals = [x]
    for k in range(300):
        v = vals[-1]
        kind = k % 5
        if kind == 0:
            v = b.op("reshape", v, dims=(24,) if v.shape.dims != (24,) else (4, 6))
        elif kind == 1:
            v = b.op("copy", v)
        elif kind == 2:
            v = b.add("get-tuple-element", [b.tuple(v, x)], v.shape, {"index": 0})
        elif kind == 3:
            v = b.op("reshape", b.op("reshape", v, dims=(2, 12)), dims=(4, 6) if k % 2 else (24,))
        else:
            v = b.op("add", v, vals[-3] if vals[-3].shape == v.shape else v)
        vals.append(v)
    root = b.op("convert", b.op("copy", vals[-1]))
    module = b.module(root)
    naive = copy.deepcopy(module)
    cleanup.apply_rules(module.entry, cleanup.RULES)
    _naive_apply_rules(naive.entry, cleanup.RULES)
    assert _signature(module.entry) == _signature(naive.entry)
    x_val = np.arange(24, dtype=np.float32).reshape(4, 6)
    np.testing.assert_array_equal(evaluate_module(module, [x_val]), evaluate_module(naive, [x_val]))


# --- algebraic -----------------------------------------------------------------------------------
def test_algebraic_golden():
    b = Builder()
    x, p = b.param("f32", (4,)), b.param("pred", (4,))
    one, zero = b.broadcast(b.const(1.0), (4,)), b.broadcast(b.const(0.0), (4,))
    a = b.op("multiply", one, b.op("add", x, zero))  # 1 * (x + 0)
    n = b.op("negate", b.op("negate", a))
    s = b.op("select", b.broadcast(b.const(True, "pred"), (4,)), n, x)
    m = b.op("maximum", s, s)
    keep = b.op("multiply", x, b.broadcast(b.const(2.0), (4,)))  # not an identity
    q = b.op("and", p, b.broadcast(b.const(True, "pred"), (4,)))
    after = run_pass(algebraic.run, b.module(b.tuple(m, keep, q)))
    assert after.entry.root.operands[0] is x
    assert after.entry.root.operands[1] is keep
    assert after.entry.root.operands[2] is p


def test_algebraic_respects_types_and_shapes():
    b = Builder()
    x = b.param("f32", ())
    widened = b.op("add", b.broadcast(x, (3,)), b.broadcast(b.const(0.0), (3,)))  # x is f32[], result f32[3]
    narrow = b.op("multiply", b.broadcast(b.const(1.0), (3,)), b.broadcast(x, (3,)))
    after = run_pass(algebraic.run, b.module(b.tuple(widened, narrow)))
    for forwarded in after.entry.root.operands:  # the broadcast of x, never x itself (f32[] != f32[3])
        assert forwarded.opcode == "broadcast" and forwarded.operands[0] is x


# --- constant folding ----------------------------------------------------------------------------
def test_constant_fold_golden():
    b = Builder()
    x = b.param("f32", (3,))
    c = b.op("add", b.const([1.0, 2.0, 3.0]), b.const([10.0, 20.0, 30.0]))
    e = b.op("exponential", b.op("negate", c))  # folds through the chain
    splat = b.op("add", b.broadcast(b.const(1.5), (3,)), b.broadcast(b.const(2.0), (3,)))
    big = b.broadcast(b.const(7.0), (512, 512))  # stays a broadcast
    rng = b.add("rng", [b.const(0.0), b.const(1.0)], Shape("f32", (3,)), {"distribution": "uniform"})
    root = b.tuple(b.op("multiply", x, e), splat, big, rng)
    after = run_pass(constant_fold.run, b.module(root))
    mul, splat2, big2, rng2 = after.entry.root.operands
    assert mul.operands[1].opcode == "constant"
    np.testing.assert_array_equal(mul.operands[1].attrs["value"], np.exp(-np.float32([11, 22, 33])))
    assert splat2.opcode == "broadcast" and splat2.operands[0].attrs["value"] == np.float32(3.5)
    assert big2.opcode == "broadcast" and big2.operands[0].shape.rank == 0
    assert rng2.opcode == "rng"


def test_constant_fold_size_limit():
    b = Builder()
    iota = b.add("iota", [], Shape("s32", (300, 300)), {"iota_dimension": 1})  # never folded (a leaf)
    small = b.op("reverse", b.const(np.arange(6).reshape(2, 3), "s32"), dimensions=(1,))
    const = b.const(np.ones((300, 300)), "s32")
    large = b.op("negate", const)  # 90000 elements > 64 Ki: kept
    after = run_pass(constant_fold.run, b.module(b.tuple(iota, small, large)))
    kinds = [o.opcode for o in after.entry.root.operands]
    assert kinds == ["iota", "constant", "negate"]
    assert constant_fold.MAX_FOLDED_ELEMENTS == 65536


# --- dce -------------------------------------------------------------------------------------------
def test_dce_removes_dead_code_everywhere_and_keeps_parameters():
    module = parse_module("""
HloModule m

add {
  a = f32[] parameter(0)
  b = f32[] parameter(1)
  dead = f32[] multiply(a, b)
  ROOT s = f32[] add(a, b)
}

ENTRY main {
  p = f32[4] parameter(0)
  unused = f32[4] parameter(1)
  z = f32[] constant(0)
  dead1 = f32[4] exponential(p)
  dead2 = f32[4] add(dead1, p)
  ROOT r = f32[] reduce(p, z), dimensions={0}, to_apply=add
}
""")
    after = run_pass(dce.run, module)
    assert opcodes(after.entry) == ["parameter", "parameter", "constant", "reduce"]
    assert opcodes(after.entry.root.called["to_apply"]) == ["parameter", "parameter", "add"]


# --- schedule --------------------------------------------------------------------------------------
def test_schedule_moves_fills_to_their_first_user():
    # a conditional branch that resets accumulators lists its zeros first: each moves to just before its user
    module = parse_module("""
HloModule m

ENTRY main {
  z = f32[] constant(0)
  zeros = f32[4] broadcast(z), dimensions={}
  ids = s32[4] iota(), iota_dimension=0
  p = f32[4] parameter(0)
  e = f32[4] exponential(p)
  q = s32[4] parameter(1)
  n = s32[4] negate(q)
  s = s32[4] add(n, ids)
  pb = f32[4] broadcast(e), dimensions={0}
  ROOT t = (f32[4], s32[4], f32[4], f32[4]) tuple(e, s, zeros, pb)
}
""")
    after = run_pass(schedule.run, module)
    assert [i.name for i in after.entry.instructions] == ["z", "p", "e", "q", "n", "ids", "s", "pb", "zeros", "t"]


# --- verify ----------------------------------------------------------------------------------------
def test_verify_accepts_valid_and_reports_problems():
    b = Builder()
    x, y = b.param("f32", (2, 3)), b.param("f32", (3, 2))
    good = b.module(b.op("add", x, x))
    verify.verify_module(good)

    bad_dims = Builder().module(b.op("add", x, y))
    with pytest.raises(verify.VerificationError, match=r"operand 1 has dims \[3, 2\]"):
        verify.verify_module(Module("m", Computation("c", [x, y, bad_dims.entry.root], bad_dims.entry.root)))

    late = Instruction("negate", x.shape, [x])
    use = Instruction("exponential", x.shape, [late])
    with pytest.raises(verify.VerificationError, match="not defined before it"):
        verify.verify_module(Module("m", Computation("c", [x, use, late], use)))

    p2 = Instruction("parameter", x.shape, attrs={"number": 2})
    with pytest.raises(verify.VerificationError, match=r"numbered \[0, 2\]"):
        verify.verify_module(Module("m", Computation("c", [x, p2], x)))

    orphan = Instruction("negate", x.shape, [x])
    with pytest.raises(verify.VerificationError, match="root"):
        verify.verify_module(Module("m", Computation("c", [x], orphan)))

    mixed = Instruction("add", x.shape, [x, Instruction("parameter", Shape("s32", (2, 3)), attrs={"number": 1})])
    with pytest.raises(verify.VerificationError, match="differ from the result type"):
        verify.verify_module(Module("m", Computation("c", [x, mixed.operands[1], mixed], mixed)))


# --- fusion ----------------------------------------------------------------------------------------
def fusions(comp):
    return [i for i in comp.instructions if i.opcode == "fusion"]


def check_fusion_invariants(module):
    """Every fusion: >= 2 elementwise ops (or one, reading a vector through a cyclic broadcast); operands rank-0,
    full dims, or read through a cyclic broadcast; only the root escapes; and no elementwise producer that should
    have been fused was left outside its only consumer."""
    for comp in fusion.fusible_computations(module):
        users = comp.users()
        for f in fusions(comp):
            body = f.called["fused"]
            assert f.attrs == {"kind": "expression"}
            assert [p.shape for p in body.parameters] == [o.shape for o in f.operands]
            body_users = body.users()
            vector_broadcasts = 0
            for p in body.parameters:
                if p.shape.rank == 0 or p.shape.dims == f.shape.dims:
                    continue
                assert body_users[p] and all(u.opcode == "broadcast" and fusion.broadcast_cycle(u) is not None
                                             for u in body_users[p]), f"{p} is not read through a cyclic broadcast"
                vector_broadcasts += p.shape.size > 1
            assert sum(i.opcode in ELEMENTWISE_OPS for i in body.instructions) >= (1 if vector_broadcasts else 2)
            for i in body.instructions:
                assert i.opcode in ELEMENTWISE_OPS | {"parameter", "constant", "broadcast"}
                if i.opcode == "constant":
                    assert i.shape.rank == 0
                if i.opcode == "broadcast":
                    assert i.operands[0].shape.rank == 0 or (i.operands[0].opcode == "parameter"
                                                              and fusion.broadcast_cycle(i) is not None)
        for inst in comp.instructions:
            if inst.opcode not in ELEMENTWISE_OPS or inst is comp.root or not users[inst]:
                continue
            consumers = {u.id for u in users[inst]}
            only = users[inst][0]
            if len(consumers) == 1 and only.shape.dims == inst.shape.dims and (
                    only.opcode == "fusion" or fusion._is_fusible(only)) and fusion._is_fusible(inst):
                raise AssertionError(f"{inst} should have been fused into its only user {only}")


def test_fusion_golden_chain_with_scalars():
    b = Builder()
    x, y, s = b.param("f32", (2, 3)), b.param("f32", (2, 3)), b.param("f32", ())
    two = b.broadcast(b.const(2.0), (2, 3))
    e = b.op("exponential", b.op("add", x, y))
    m = b.op("multiply", e, two)
    root = b.add("subtract", [m, b.broadcast(s, (2, 3))], m.shape, op_name="sub")
    after = run_pass(fusion.run, b.module(b.tuple(root)))
    (f,) = fusions(after.entry)
    assert opcodes(after.entry) == ["parameter", "parameter", "parameter", "fusion", "tuple"]
    assert f.operands == [x, y, s] and f.metadata == {"op_name": "sub"}
    body = f.called["fused"]
    assert opcodes(body) == ["parameter", "parameter", "parameter", "add", "exponential", "constant",
                             "broadcast", "multiply", "broadcast", "subtract"]
    assert body.root.opcode == "subtract"
    check_fusion_invariants(after)


def test_fusion_single_output_and_singletons():
    b = Builder()
    x, y = b.param("f32", (4,)), b.param("f32", (4,))
    a = b.op("add", x, y)  # also used by the root tuple: can only be a group root
    c = b.op("multiply", b.op("exponential", a), a)
    lone = b.op("negate", y)  # a single op: left alone
    scaled = b.op("multiply", x, b.broadcast(b.const(3.0), (4,)))  # one op + broadcast: left alone
    red = b.add("reduce", [c, b.const(0.0)], Shape("f32", ()), {"dimensions": (0,)},
                {"to_apply": scalar_add()})
    after = run_pass(fusion.run, b.module(b.tuple(a, red, lone, scaled)))
    (f,) = fusions(after.entry)
    assert f.operands == [a] and opcodes(f.called["fused"]) == ["parameter", "exponential", "multiply"]
    assert after.entry.root.operands[0] is a and a.opcode == "add"
    assert after.entry.root.operands[2] is lone and after.entry.root.operands[3] is scaled
    check_fusion_invariants(after)


def test_fusion_dims_and_duplicated_broadcasts():
    b = Builder()
    x, v, m = b.param("f32", (2, 3)), b.param("f32", (3,)), b.param("f32", (3, 2))
    row = b.broadcast(v, (2, 3), (1,))  # a cyclic broadcast of a vector: pulled in, v is the operand
    flipped = b.broadcast(m, (2, 3), (1, 0))  # a transposing broadcast is not cyclic: stays outside
    half = b.broadcast(b.const(0.5), (2, 3))
    t = b.op("tanh", b.op("multiply", x, half))
    u = b.op("add", b.op("add", t, row), flipped)
    out2 = b.op("subtract", x, half)  # `half` is used by two groups: each gets its own copy
    other = b.op("sine", b.op("cosine", out2))
    after = run_pass(fusion.run, b.module(b.tuple(u, other, half, row)))
    f1, f2 = fusions(after.entry)
    assert f1.operands == [x, v, flipped] and f2.operands == [x]
    assert [i.opcode for i in f1.called["fused"].instructions if i.operands and i.operands[0].opcode == "parameter"
            and i.operands[0].shape.dims == (3,)] == ["broadcast"]
    assert after.entry.root.operands[2] is half  # the original broadcasts stay for their other users
    assert after.entry.root.operands[3] is row
    check_fusion_invariants(after)


def test_broadcast_cycle_patterns():
    b = Builder()

    def cycle(op_dims, out_dims, dimensions):
        return fusion.broadcast_cycle(b.broadcast(b.param("f32", op_dims), out_dims, dimensions))

    assert cycle((256,), (8, 8, 8, 256), (3,)) == (1, 256)               # bias add: the inner dim
    assert cycle((1, 1, 512), (8, 1, 1, 512), (1, 2, 3)) == (1, 512)      # size-1 dims left out
    assert cycle((5,), (4, 5, 6), (1,)) == (6, 5)                        # a middle dim
    assert cycle((5, 6), (4, 5, 6), (1, 2)) == (1, 30)
    assert cycle((5, 6), (5, 1, 6, 7), (0, 2)) == (7, 30)                # contiguous once size-1 dims are out
    assert cycle((4, 6), (4, 5, 6), (0, 2)) is None                      # dim 1 (size 5) in between
    assert cycle((6, 5), (4, 5, 6), (2, 1)) is None                      # a transposition
    assert cycle((), (4, 5), ()) == (20, 1)                              # a scalar
    assert cycle((1, 1), (4, 5), (0, 1)) == (20, 1)


def test_single_op_with_a_vector_broadcast_is_a_fusion():
    b = Builder()
    x, v, s = b.param("f32", (4, 5, 6)), b.param("f32", (5,)), b.param("f32", ())
    y = b.op("multiply", x, b.broadcast(v, (4, 5, 6), (1,)))        # one op: still fused, v read in place
    z = b.op("add", x, b.broadcast(s, (4, 5, 6)))                   # one op with a scalar: left alone
    w = b.op("add", x, b.broadcast(b.param("f32", (6, 5)), (4, 5, 6), (2, 1)))  # not cyclic: left alone
    after = run_pass(fusion.run, b.module(b.tuple(y, z, w)))
    (f,) = fusions(after.entry)
    assert f.operands == [x, v] and opcodes(f.called["fused"]) == ["parameter", "parameter", "broadcast", "multiply"]
    assert [o.opcode for o in after.entry.root.operands] == ["fusion", "add", "add"]
    check_fusion_invariants(after)


def test_fusion_results_feed_other_fusions():
    b = Builder()
    x, y = b.param("f32", (5,)), b.param("f32", (5,))
    shared = b.op("exponential", b.op("add", x, y))  # two users: the root of its own group
    left = b.op("negate", b.op("multiply", shared, x))
    right = b.op("abs", b.op("subtract", shared, y))
    after = run_pass(fusion.run, b.module(b.tuple(left, right)))
    first, f_left, f_right = fusions(after.entry)
    assert f_left.operands == [first, x] and f_right.operands == [first, y]
    assert after.entry.root.operands == [f_left, f_right]
    check_fusion_invariants(after)


def test_fusion_in_control_flow_but_not_in_reducers():
    module = parse_module("""
HloModule m

argmax {
  a = f32[] parameter(0)
  i = s32[] parameter(1)
  b = f32[] parameter(2)
  j = s32[] parameter(3)
  ge = pred[] compare(a, b), direction=GE
  v = f32[] select(ge, a, b)
  k = s32[] select(ge, i, j)
  ROOT t = (f32[], s32[]) tuple(v, k)
}

cond {
  s = (s32[], f32[4]) parameter(0)
  n = s32[] get-tuple-element(s), index=0
  lim = s32[] constant(3)
  ROOT lt = pred[] compare(n, lim), direction=LT
}

body {
  s = (s32[], f32[4]) parameter(0)
  n = s32[] get-tuple-element(s), index=0
  one = s32[] constant(1)
  n1 = s32[] add(n, one)
  x = f32[4] get-tuple-element(s), index=1
  h = f32[] constant(0.5)
  hb = f32[4] broadcast(h), dimensions={}
  y = f32[4] multiply(x, hb)
  z = f32[4] cosine(y)
  ROOT r = (s32[], f32[4]) tuple(n1, z)
}

ENTRY main {
  p = f32[4] parameter(0)
  i = s32[4] iota(), iota_dimension=0
  zero = s32[] constant(0)
  ninf = f32[] constant(-inf)
  am = (f32[], s32[]) reduce(p, i, ninf, zero), dimensions={0}, to_apply=argmax
  init = (s32[], f32[4]) tuple(zero, p)
  w = (s32[], f32[4]) while(init), condition=cond, body=body
  ROOT out = ((f32[], s32[]), (s32[], f32[4])) tuple(am, w)
}
""")
    after = run_pass(fusion.run, module)
    comps = {c.name: c for c in after.computations()}
    assert len(fusions(comps["body"])) == 1
    assert not fusions(comps["argmax"]) and not fusions(comps["cond"])
    check_fusion_invariants(after)


# --- properties: random elementwise graphs through every pass ---------------------------------------
UNARY = ["negate", "abs", "tanh", "exponential", "sine", "floor"]
BINARY = ["add", "subtract", "multiply", "maximum", "minimum"]


@st.composite
def elementwise_modules(draw):
    b = Builder()
    dims = draw(st.sampled_from([(), (3,), (2, 3)]))
    values = [b.param("f32", dims) for _ in range(draw(st.integers(1, 3)))]
    scalar = b.param("f32", ())
    vector = b.param("f32", dims[:1])          # broadcast along the outer dim (cyclic: fused as a vector input)
    pick = lambda: values[draw(st.integers(0, len(values) - 1))]  # noqa: E731
    for _ in range(draw(st.integers(1, 14))):
        kind = draw(st.sampled_from(["unary", "binary", "binary", "const", "scalar", "vector", "reshape", "noop",
                                     "select"]))
        if kind == "vector":
            values.append(b.op(draw(st.sampled_from(BINARY)), pick(), b.broadcast(vector, dims, (0,) if dims else ())))
            continue
        if kind == "unary":
            values.append(b.op(draw(st.sampled_from(UNARY)), pick()))
        elif kind == "binary":
            values.append(b.op(draw(st.sampled_from(BINARY)), pick(), pick()))
        elif kind == "const":  # 0 and 1 feed the algebraic rules
            c = b.broadcast(b.const(draw(st.sampled_from([0.0, 1.0, -2.5]))), dims)
            values.append(b.op(draw(st.sampled_from(BINARY)), pick(), c) if draw(st.booleans()) else c)
        elif kind == "scalar":
            values.append(b.op(draw(st.sampled_from(BINARY)), pick(), b.broadcast(scalar, dims)))
        elif kind == "reshape":
            flat_ = b.op("reshape", pick(), dims=(int(np.prod(dims)),))
            values.append(b.op("reshape", flat_, dims=dims))
        elif kind == "noop":
            values.append(b.op(draw(st.sampled_from(["copy", "convert", "negate"])), b.op("negate", pick())))
        else:
            values.append(b.op("select", b.op("compare", pick(), pick(), direction="LT"), pick(), pick()))
    outputs = draw(st.lists(st.sampled_from(values), min_size=1, max_size=3))
    return b.module(b.tuple(*outputs))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(module=elementwise_modules())
def test_every_pass_preserves_results(module):
    verify.verify_module(module)
    for name, run in PIPELINE:  # each pass alone, on the original
        run_pass(run, copy.deepcopy(module))
    after = run_pass(run_pipeline, module)
    assert after.entry.root.opcode == "tuple"
    check_fusion_invariants(after)


# --- the pipeline ------------------------------------------------------------------------------------
def scalar_add():
    b = Builder("add")
    return b.computation(b.op("add", b.param(), b.param()))


def mlp_module():
    return parse_module("""
HloModule mlp, input_output_alias={ {1}: (1, {}, may-alias) }

add {
  a = f32[] parameter(0)
  b = f32[] parameter(1)
  ROOT s = f32[] add(a, b)
}

ENTRY main {
  x = f32[4,5] parameter(0)
  w = f32[5,3] parameter(1)
  xr = f32[4,5] reshape(x)
  d = f32[4,3] dot(xr, w), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  zero = f32[] constant(0)
  zb = f32[4,3] broadcast(zero), dimensions={}
  relu = f32[4,3] maximum(d, zb)
  one = f32[] constant(1)
  onec = f32[] convert(one)
  ob = f32[4,3] broadcast(onec), dimensions={}
  scaled = f32[4,3] multiply(relu, ob)
  e = f32[4,3] exponential(scaled)
  s = f32[4] reduce(e, zero), dimensions={1}, to_apply=add
  sb = f32[4,3] broadcast(s), dimensions={0}
  sm = f32[4,3] divide(e, sb)
  t = (f32[4,3], f32[5,3]) tuple(sm, w)
  g0 = f32[4,3] get-tuple-element(t), index=0
  ROOT out = (f32[4,3], f32[5,3]) tuple(g0, w)
}
""")


def test_pipeline_stages_and_trace():
    module = mlp_module()
    seen = []
    after = run_pass(lambda m: run_pipeline(m, trace=lambda name, m2: seen.append((name, m2.entry.root.opcode))),
                     module)
    assert [n for n, _ in seen] == [n for n, _ in PIPELINE]
    assert [n for n, _ in PIPELINE] == ["verify-input", "cleanup", "constant-fold", "algebraic", "dce", "fusion",
                                        "schedule", "verify"]
    assert all(op == "tuple" for _, op in seen)
    assert after.aliases == [Alias((1,), 1)]
    # maximum+exponential fuse; the softmax divide is one op reading the row sums through a cyclic broadcast: a
    # fusion of its own, and the broadcast is not materialized
    assert opcodes(after.entry) == ["parameter", "parameter", "dot", "constant", "fusion", "reduce", "fusion",
                                    "tuple"]
    check_fusion_invariants(after)
    reparsed = parse_module(after.to_text())  # the fused module prints as HLO text that parses back
    assert [len(fusions(c)) for c in reparsed.computations()] == [len(fusions(c)) for c in after.computations()]
    assert all(np.array_equal(a, b) for a, b in zip(flat(evaluate_module(reparsed, random_args(after))),
                                                     flat(evaluate_module(after, random_args(after)))))


def test_print_stages_names_every_stage_and_keeps_input():
    module = mlp_module()
    before = module.to_text()
    text = print_stages(module)
    assert module.to_text() == before
    assert text.startswith("=== input ===\nHloModule mlp")
    positions = [text.index(f"=== after {name} ===") for name, _ in PIPELINE]
    assert positions == sorted(positions)
    assert "kind=kLoop" in text.split("=== after fusion ===")[1]


def test_passes_on_traced_tensorflow_models():
    tf = pytest.importorskip("tensorflow")
    from tf_ipu.hlo_proto import hlo_module_from_function

    def model(x, w, k):
        h = tf.nn.relu(tf.nn.conv2d(x, k, 1, "SAME") * 0.5 + 1.0)
        h = tf.nn.max_pool2d(h, 2, 2, "VALID")
        logits = tf.reshape(h, [2, -1]) @ w
        i, acc = tf.while_loop(lambda i, a: i < 3, lambda i, a: (i + 1, tf.tanh(a) * 2.0 - a), (0, logits))
        return tf.nn.softmax(acc), tf.argmax(acc, axis=1), i

    rng = np.random.default_rng(0)
    args = [rng.standard_normal(s).astype(np.float32) for s in ((2, 4, 4, 3), (16, 5), (3, 3, 3, 4))]
    module = hlo_module_from_function(model, *args)
    after = run_pass(run_pipeline, module)
    check_fusion_invariants(after)
    assert len([i for c in fusion.fusible_computations(after) for i in fusions(c)]) >= 3
    assert [p.shape for p in after.entry.parameters] == [p.shape for p in module.entry.parameters]
