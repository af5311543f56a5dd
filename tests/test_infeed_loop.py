"""Infeed loops and resident tensors (CompileOptions(loop=True)): what Keras's steps_per_execution runs on.

A step compiled as an infeed loop and run for N fed elements must give exactly what N runs of the step give,
checked against the NumPy reference evaluator of the same HLO run step by step (with the updated variables fed
back): the loop's outputs after the last step (or an outfeed of every step), the updated variables streamed out
once or kept resident on the device, and the file round trip of such an executable.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, strategies as st

from conftest import examples
from kernels import serialize
from kernels.device import get_device
from kernels.engine import Device, Engine
from kernels.program import FED, Copy, If, Repeat, Switch, walk
from xla_lowering.compiler import CompileOptions, compile_module
from xla_lowering.hlo.reference import evaluate_module
from xla_lowering.hlo.text import parse_module

DEVICE = dataclasses.replace(get_device("mk2"), num_tiles=16)

# x: the batch (fed); v: a variable updated from the batch; c: a step counter; lr: a host constant.
# Outputs: the loss (from v before the update), the new v, the new c.
STEP = """HloModule step, input_output_alias={ {1}: (1, {}, may-alias), {2}: (2, {}, may-alias) }

add {
  a = f32[] parameter(0)
  b = f32[] parameter(1)
  ROOT s = f32[] add(a, b)
}

ENTRY main {
  x = f32[4,3] parameter(0)
  v = f32[3] parameter(1)
  c = s32[] parameter(2)
  lr = f32[] parameter(3)
  z = f32[] constant(0)
  sx = f32[3] reduce(x, z), dimensions={0}, to_apply=add
  lrb = f32[3] broadcast(lr), dimensions={}
  d = f32[3] multiply(sx, lrb)
  v2 = f32[3] subtract(v, d)
  one = s32[] constant(1)
  c2 = s32[] add(c, one)
  vb = f32[4,3] broadcast(v), dimensions={1}
  xv = f32[4,3] multiply(x, vb)
  loss = f32[] reduce(xv, z), dimensions={0,1}, to_apply=add
  ROOT t = (f32[], f32[3], s32[]) tuple(loss, v2, c2)
}
"""

# two variables that swap every step, and an output that is a variable's value before the step: the loop must
# not read storage it has already overwritten
SWAP = """HloModule swap, input_output_alias={ {1}: (1, {}, may-alias), {2}: (2, {}, may-alias) }

ENTRY main {
  x = f32[5] parameter(0)
  a = f32[5] parameter(1)
  b = f32[5] parameter(2)
  bx = f32[5] add(b, x)
  ROOT t = (f32[5], f32[5], f32[5]) tuple(a, bx, a)
}
"""


def reference(text: str, feeds: dict, state: dict, steps: int):
    """Run the module step by step with the reference evaluator: every step's outputs, the final state."""
    module = parse_module(text)
    aliases = {a.output_index[0]: a.parameter_number for a in module.aliases}
    n = len(module.entry.parameters)
    state = dict(state)
    per_step = []
    for i in range(steps):
        args = [feeds[p][i] if p in feeds else state[p] for p in range(n)]
        outs = evaluate_module(module, args)
        per_step.append(outs)
        for k, p in aliases.items():
            state[p] = outs[k]
    return per_step, state


def run_loop(text, feeds, state, steps, resident=frozenset(), outfeed=False, round_trip=True):
    module = parse_module(text)
    exe = compile_module(module, DEVICE, CompileOptions(progress=False, loop=True, feeds=frozenset(feeds),
                                                        resident=frozenset(resident), outfeed=outfeed))
    if round_trip:
        exe = serialize.load_executable(serialize.dumps(exe))
    engine = Engine(exe)
    for k, t in enumerate(exe.resident):
        engine.write_resident(k, state[t.param])
    n = len(module.entry.parameters)
    host_params = [p for p in range(n) if p not in resident]
    inputs = [feeds[p][:steps] if p in feeds else state[p] for p in host_params]
    outs, prof = engine.run(inputs, iterations=steps)
    by_output = dict(zip(exe.meta["outputs"], outs))
    kept = {t.param: engine.read_resident(k) for k, t in enumerate(exe.resident)}
    return exe, by_output, kept, prof


@given(steps=st.integers(0, 6), resident=st.sets(st.sampled_from([1, 2])), outfeed=st.booleans(),
       seed=st.integers(0, 2**16))
@examples(12)
def test_infeed_loop_equals_the_step_run_n_times(steps, resident, outfeed, seed):
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((6, 4, 3)).astype(np.float32)
    state = {1: rng.standard_normal(3).astype(np.float32), 2: np.int32(rng.integers(0, 100)), 3: np.float32(0.1)}
    per_step, final = reference(STEP, {0: xs}, state, steps)
    exe, outs, kept, prof = run_loop(STEP, {0: xs}, state, steps, resident, outfeed)
    assert prof.iterations == steps
    assert [t.param for t in exe.resident] == sorted(resident)
    for p, out in ((1, 1), (2, 2)):          # variables: resident, or streamed out once after the loop
        got = kept[p] if p in resident else outs[out]
        np.testing.assert_allclose(got, final[p], rtol=1e-6, atol=1e-6)
    losses = np.array([o[0] for o in per_step], np.float32)
    if outfeed:
        assert outs[0].shape == (steps,)
        np.testing.assert_allclose(outs[0], losses, rtol=1e-5, atol=1e-5)
    elif steps:
        np.testing.assert_allclose(outs[0], losses[-1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("resident", [frozenset(), frozenset({1, 2})], ids=["streamed", "resident"])
def test_variables_read_before_they_are_overwritten(resident):
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((4, 5)).astype(np.float32)
    state = {1: rng.standard_normal(5).astype(np.float32), 2: rng.standard_normal(5).astype(np.float32)}
    per_step, final = reference(SWAP, {0: xs}, state, 4)
    exe, outs, kept, _ = run_loop(SWAP, {0: xs}, state, 4, resident)
    got = {p: kept[p] if p in resident else outs[p] for p in (1, 2)}
    np.testing.assert_allclose(got[1], final[1], rtol=1e-6)
    np.testing.assert_allclose(got[2], final[2], rtol=1e-6)
    np.testing.assert_allclose(outs[0], per_step[-1][0], rtol=1e-6)   # a's value before the last step


def test_resident_tensors_stay_between_runs_and_other_executables_overwrite_them():
    rng = np.random.default_rng(2)
    xs = rng.standard_normal((6, 4, 3)).astype(np.float32)
    state = {1: rng.standard_normal(3).astype(np.float32), 2: np.int32(0), 3: np.float32(0.5)}
    _, final = reference(STEP, {0: xs}, state, 6)
    opts = CompileOptions(progress=False, loop=True, feeds=frozenset({0}), resident=frozenset({1, 2}))
    exe = compile_module(parse_module(STEP), DEVICE, opts)
    other = compile_module(parse_module(SWAP), DEVICE, CompileOptions(progress=False))
    device = Device(DEVICE)
    engine, engine2 = Engine(exe, device=device), Engine(other, device=device)
    engine.write_resident(0, state[1])
    engine.write_resident(1, state[2])
    engine.run([xs[:2], state[3]])
    engine.run([xs[2:6], state[3]])                       # the variables stayed on the device in between
    np.testing.assert_allclose(engine.read_resident(0), final[1], rtol=1e-6)
    assert int(engine.read_resident(1)) == 6
    assert device.transfer_bytes == 2 * (12 + 4)          # written once, read once
    saved = []
    engine.before_unload = lambda e: saved.append(e.read_resident(0))
    engine2.run([np.zeros(5, np.float32)] * 3)             # loading another executable unloads this one...
    np.testing.assert_allclose(saved[0], final[1], rtol=1e-6)          # ...after its hook read the values back
    with pytest.raises(RuntimeError, match="another executable was loaded"):
        engine.read_resident(0)


def test_loop_run_checks_its_feeds():
    exe = compile_module(parse_module(STEP), DEVICE, CompileOptions(progress=False, loop=True,
                                                                    feeds=frozenset({0})))
    engine = Engine(exe)
    x = np.zeros((3, 4, 3), np.float32)
    v, c, lr = np.zeros(3, np.float32), np.int32(0), np.float32(0)
    assert engine.run([x, v, c, lr])[1].iterations == 3            # the feed's length by default
    with pytest.raises(ValueError, match="3 steps to run but the fed inputs hold"):
        engine.run([x[:2], v, c, lr], iterations=3)
    with pytest.raises(ValueError, match="one element of shape"):
        engine.run([x[:, :2], v, c, lr])
    assert any(isinstance(s, Repeat) and s.count == FED for s in exe.program.steps)


def test_stop_ends_the_loop_between_steps():
    rng = np.random.default_rng(3)
    xs = rng.standard_normal((5, 4, 3)).astype(np.float32)
    state = {1: rng.standard_normal(3).astype(np.float32), 2: np.int32(0), 3: np.float32(0.1)}
    exe = compile_module(parse_module(STEP), DEVICE, CompileOptions(progress=False, loop=True, feeds=frozenset({0}),
                                                                    resident=frozenset({1, 2})))
    engine = Engine(exe)
    engine.write_resident(0, state[1])
    engine.write_resident(1, state[2])
    real, calls = engine._execute, []

    def execute(step):
        calls.append(1)
        if len(calls) == 3:              # during the first step: it completes, no other starts
            engine.stop = True
        return real(step)

    engine._execute = execute
    _, prof = engine.run([xs, state[3]])
    _, final = reference(STEP, {0: xs}, state, 1)
    assert prof.iterations == 1 and int(engine.read_resident(1)) == 1
    np.testing.assert_allclose(engine.read_resident(0), final[1], rtol=1e-6)


def test_version_1_files_still_load(tmp_path):
    exe = compile_module(parse_module(SWAP), DEVICE, CompileOptions(progress=False))
    raw = bytearray(serialize.dumps(exe))
    assert serialize.load_executable(bytes(raw)).resident == []
    # a file as version 1 wrote it: the same document without the fields version 2 added
    import hashlib
    import json
    hdr = serialize.HEADER.unpack_from(raw)
    doc = json.loads(bytes(raw[serialize.HEADER.size:serialize.HEADER.size + hdr[3]]))
    doc["format_version"] = 1
    del doc["resident"]
    for t in doc["inputs"] + doc["outputs"]:
        del t["feed"]
    text = json.dumps(doc, separators=(",", ":")).encode()
    data = bytes(raw[hdr[4]:hdr[4] + hdr[5]])
    off = -(-(serialize.HEADER.size + len(text)) // serialize.ALIGN) * serialize.ALIGN
    body = serialize.HEADER.pack(serialize.MAGIC, 1, 0, len(text), off, len(data)) + text
    body += b"\0" * (off - len(body)) + data
    old = serialize.load_executable(body + hashlib.sha256(body).digest())
    x = [np.arange(5, dtype=np.float32)] * 3
    np.testing.assert_array_equal(Engine(old).run(x)[0][1], Engine(exe).run(x)[0][1])


CHAIN = """HloModule chain

add {
  a = f32[] parameter(0)
  b = f32[] parameter(1)
  ROOT s = f32[] add(a, b)
}

ENTRY main {
  x = f32[64,256] parameter(0)
  t1 = f32[64,256] exponential(x)
  t2 = f32[64,256] transpose(t1), dimensions={1,0}
  t3 = f32[256,64] log(t2)
  t4 = f32[64,256] transpose(t3), dimensions={1,0}
  t5 = f32[64,256] tanh(t4)
  z = f32[] constant(0)
  ROOT r = f32[] reduce(t5, z), dimensions={0,1}, to_apply=add
}
"""


def test_an_iterations_own_values_share_memory_as_without_the_loop():
    # the step's temporaries live within one iteration: the loop must not keep them all alive at once
    plain = compile_module(parse_module(CHAIN), DEVICE, CompileOptions(progress=False, run_passes=False))
    looped = compile_module(parse_module(CHAIN), DEVICE, CompileOptions(progress=False, run_passes=False, loop=True,
                                                                        feeds=frozenset({0})))
    assert looped.memory.peak.max() <= plain.memory.peak.max() + 1024
    x = np.random.default_rng(4).standard_normal((3, 64, 256)).astype(np.float32) * 0.1
    outs, prof = Engine(looped).run([x])
    want = np.tanh(np.log(np.exp(x[-1]))).sum()
    np.testing.assert_allclose(outs[0], want, rtol=1e-4)


def test_updated_variables_are_written_back_early():
    # v's new value is written into v's storage right after the last step that reads v or writes v2, not at the
    # end of the step: the optimizer's new values are not all live at once
    exe = compile_module(parse_module(STEP), DEVICE, CompileOptions(progress=False, loop=True, feeds=frozenset({0}),
                                                                    resident=frozenset({1, 2})))
    loop = next(s for s in exe.program.steps if isinstance(s, Repeat))
    names = [getattr(s, "name", "") for s in loop.body.steps]
    update = names.index("update/v")
    assert update < len(names) - 1, names                  # steps of the step's own come after it
    assert any("loss" in n or "reduce" in n for n in names[update + 1:]), names


# Gradient accumulation as Keras 3 compiles it: every other step a conditional applies the accumulated gradient to
# the weight w and its momentum m and resets the accumulator acc; the other steps add the gradient to acc and pass
# w and m through. The conditional's outputs are the variables' new values.
ACCUMULATE = """HloModule accumulate, input_output_alias={ {1}: (1, {}, may-alias), {2}: (2, {}, may-alias), {3}: (3, {}, may-alias), {4}: (4, {}, may-alias) }

add {
  a = f32[] parameter(0)
  b = f32[] parameter(1)
  ROOT s = f32[] add(a, b)
}

apply {
  t = (f32[64], f32[64], f32[64], f32[64]) parameter(0)
  g = f32[64] get-tuple-element(t), index=0
  w = f32[64] get-tuple-element(t), index=1
  m = f32[64] get-tuple-element(t), index=2
  acc = f32[64] get-tuple-element(t), index=3
  sum = f32[64] add(acc, g)
  half = f32[] constant(0.5)
  halves = f32[64] broadcast(half), dimensions={}
  mean = f32[64] multiply(sum, halves)
  mu = f32[] constant(0.9)
  mus = f32[64] broadcast(mu), dimensions={}
  mm = f32[64] multiply(m, mus)
  m2 = f32[64] subtract(mm, mean)
  lr = f32[] constant(0.1)
  lrs = f32[64] broadcast(lr), dimensions={}
  step = f32[64] multiply(m2, lrs)
  w2 = f32[64] add(w, step)
  z = f32[] constant(0)
  zeros = f32[64] broadcast(z), dimensions={}
  ROOT r = (f32[64], f32[64], f32[64]) tuple(w2, m2, zeros)
}

accumulate {
  t = (f32[64], f32[64], f32[64], f32[64]) parameter(0)
  g = f32[64] get-tuple-element(t), index=0
  w = f32[64] get-tuple-element(t), index=1
  m = f32[64] get-tuple-element(t), index=2
  acc = f32[64] get-tuple-element(t), index=3
  acc2 = f32[64] add(acc, g)
  ROOT r = (f32[64], f32[64], f32[64]) tuple(w, m, acc2)
}

ENTRY main {
  x = f32[8,64] parameter(0)
  w = f32[64] parameter(1)
  m = f32[64] parameter(2)
  acc = f32[64] parameter(3)
  c = s32[] parameter(4)
  wb = f32[8,64] broadcast(w), dimensions={1}
  xw = f32[8,64] multiply(x, wb)
  z = f32[] constant(0)
  g = f32[64] reduce(xw, z), dimensions={0}, to_apply=add
  loss = f32[] reduce(xw, z), dimensions={0,1}, to_apply=add
  one = s32[] constant(1)
  c2 = s32[] add(c, one)
  two = s32[] constant(2)
  rem = s32[] remainder(c2, two)
  zi = s32[] constant(0)
  p = pred[] compare(rem, zi), direction=EQ
  ops = (f32[64], f32[64], f32[64], f32[64]) tuple(g, w, m, acc)
  u = (f32[64], f32[64], f32[64]) conditional(p, ops, ops), true_computation=apply, false_computation=accumulate
  w2 = f32[64] get-tuple-element(u), index=0
  m2 = f32[64] get-tuple-element(u), index=1
  acc2 = f32[64] get-tuple-element(u), index=2
  ROOT out = (f32[], f32[64], f32[64], f32[64], s32[]) tuple(loss, w2, m2, acc2, c2)
}
"""
# the step also returns w's value from before the step: w's old storage is read after the conditional
ACCUMULATE_OLD_W = ACCUMULATE.replace("ROOT out = (f32[], f32[64], f32[64], f32[64], s32[]) tuple(loss, w2, m2, acc2, c2)",
                                     "ROOT out = (f32[], f32[64], f32[64], f32[64], s32[], f32[64]) "
                                     "tuple(loss, w2, m2, acc2, c2, w)")
# the same as an indexed conditional (a Switch): branch 0 applies, branch 1 accumulates
ACCUMULATE_SWITCH = ACCUMULATE.replace("conditional(p, ops, ops), true_computation=apply, false_computation=accumulate",
                                       "conditional(rem, ops, ops), branch_computations={apply, accumulate}")
# the accumulating branch swaps w and m: each result is the storage another output is written into
ACCUMULATE_SWAP = ACCUMULATE.replace("ROOT r = (f32[64], f32[64], f32[64]) tuple(w, m, acc2)",
                                     "ROOT r = (f32[64], f32[64], f32[64]) tuple(m, w, acc2)")


def _copy_names(seq) -> set:
    """Names of the copies in ``seq`` and the sequences inside it (merged exchanges split into their parts)."""
    return {part for s in walk(seq) if isinstance(s, Copy) for part in s.name.split(" + ")}


@pytest.mark.parametrize("text, in_place", [(ACCUMULATE, {"w", "m", "acc"}), (ACCUMULATE_SWITCH, {"w", "m", "acc"}),
                                            (ACCUMULATE_OLD_W, {"m", "acc"}), (ACCUMULATE_SWAP, {"w", "m", "acc"})],
                         ids=["plain", "switch", "old-w", "swap"])
@pytest.mark.parametrize("resident", [frozenset(), frozenset({1, 2, 3, 4})], ids=["streamed", "resident"])
def test_conditional_writes_variables_in_place(text, in_place, resident):
    # the conditional's outputs are the variables' own storage: each branch writes its results there, no fresh
    # outputs and no update copies after the conditional; where the old value is read after the conditional (old-w)
    # that variable keeps today's scheme. Five steps take both branches.
    rng = np.random.default_rng(5)
    xs = rng.standard_normal((5, 8, 64)).astype(np.float32)
    state = {1: rng.standard_normal(64).astype(np.float32), 2: rng.standard_normal(64).astype(np.float32),
             3: rng.standard_normal(64).astype(np.float32), 4: np.int32(0)}
    per_step, final = reference(text, {0: xs}, state, 5)
    exe, outs, kept, _ = run_loop(text, {0: xs}, state, 5, resident)
    for p in (1, 2, 3):
        np.testing.assert_allclose(kept[p] if p in resident else outs[p], final[p], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outs[0], per_step[-1][0], rtol=1e-5, atol=1e-5)
    if 5 in outs:
        np.testing.assert_allclose(outs[5], per_step[-1][5], rtol=1e-6)
    cond = next(s for s in walk(exe.program) if isinstance(s, (If, Switch)))
    names = _copy_names(exe.program)
    updates = {f"update/{v}" for v in ("w", "m", "acc")}
    assert names & updates == updates - {f"update/{v}" for v in in_place}
    applied, accumulated = map(_copy_names, cond.branches if isinstance(cond, Switch) else (cond.then_body,
                                                                                            cond.else_body))
    assert {f"u/branch0/write/{v}" for v in in_place} <= applied
    assert ("u/branch0/carry" in applied) == ("w" not in in_place)          # a fresh output only for old-w's w
    if text == ACCUMULATE_SWAP:
        assert {"u/branch1/carry_read", "u/branch1/carry"} <= accumulated      # read both, then write both
    else:
        assert {n for n in accumulated if "/write/" in n} == {"u/branch1/write/acc"}   # w and m pass through
