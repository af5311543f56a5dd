"""xla_lowering.probe: every instruction of a lowered training step checked locally against the reference evaluator.

The training steps are a residual conv block as keras.applications.ResNet50 builds them (zero padding, strided
convolutions, batch norm from moments, ReLU, 3x3/2 max pooling, a projection shortcut, global average pooling,
dense, softmax cross-entropy), its gradients and an SGD-momentum update, written in plain TF so that every
tensor is an argument. Each probed instruction (contractions, reductions, windowed ops) and each output is
compared with the reference evaluator applied to the simulator's own values of the probed instructions before
it, so the tolerance is one operation's rounding (``probe.TOLERANCES``: 1e-5 of the terms' magnitude in f32)
however ill-conditioned the whole step is (see tests/test_keras.py::test_resnet50_training_step_matches_cpu).
A deliberately wrong lowering rule must be found, and named as the first failing instruction.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from conftest import examples, seeds, tf
from kernels.device import DEVICES
from tf_ipu.hlo_proto import hlo_module_from_function
from xla_lowering import lower, probe
from xla_lowering.hlo.ir import Module
from xla_lowering.hlo.text import parse_module
from xla_lowering.lower import LowerCtx

MK2_16 = DEVICES["mk2"].with_tiles(16)


def _bn(h, gamma, beta):
    mean, var = tf.nn.moments(h, axes=[0, 1, 2])
    return tf.nn.batch_normalization(h, mean, var, beta, gamma, 1.001e-5)


def residual_step(stride: int, pad: str):
    """One SGD-momentum step of: pad, conv/stride, BN, ReLU, max-pool 3x3/2, then a bottleneck-style pair of
    convolutions with a 1x1 strided projection shortcut, add, ReLU, global average pool, dense, softmax CE."""
    def step(x, labels, k1, g1, b1, k2, g2, b2, ks, gs, bs, wd, bd, lr):
        params = [k1, g1, b1, k2, g2, b2, ks, gs, bs, wd, bd]
        with tf.GradientTape() as tape:
            tape.watch(params)
            h = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
            h = tf.nn.relu(_bn(tf.nn.conv2d(h, k1, stride, pad), g1, b1))
            h = tf.nn.max_pool2d(tf.pad(h, [[0, 0], [1, 1], [1, 1], [0, 0]]), 3, 2, "VALID")
            r = _bn(tf.nn.conv2d(h, k2, stride, "SAME"), g2, b2)
            s = _bn(tf.nn.conv2d(h, ks, stride, "VALID"), gs, bs)
            h = tf.reduce_mean(tf.nn.relu(r + s), axis=[1, 2])
            logits = tf.matmul(h, wd) + bd
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        grads = tape.gradient(loss, params)
        return loss, [p - lr * g for p, g in zip(params, grads)]
    return step


def residual_args(rng, batch: int, size: int, cin: int, c1: int, c2: int, classes: int = 3):
    f = lambda *s: rng.standard_normal(s).astype(np.float32)     # noqa: E731
    return [f(batch, size, size, cin), rng.integers(0, classes, batch).astype(np.int32),
            f(3, 3, cin, c1), 1 + 0.1 * f(c1), 0.1 * f(c1),
            f(3, 3, c1, c2), 1 + 0.1 * f(c2), 0.1 * f(c2),
            f(1, 1, c1, c2), 1 + 0.1 * f(c2), 0.1 * f(c2),
            f(c2, classes), 0.1 * f(classes), np.float32(0.01)]


def trace(fn, args) -> Module:
    return hlo_module_from_function(tf.function(fn, jit_compile=True), *[tf.constant(a) for a in args])


@examples(6)
@given(seed=seeds, batch=st.integers(1, 3), size=st.integers(5, 12), cin=st.integers(1, 4),
       c1=st.integers(1, 6), c2=st.integers(1, 6), stride=st.sampled_from([1, 2]),
       pad=st.sampled_from(["SAME", "VALID"]))
def test_every_instruction_of_a_residual_training_step_matches_the_reference(seed, batch, size, cin, c1, c2,
                                                                            stride, pad):
    # the second stage's batch norms normalise batch x side^2 values: with 2 the gradient through them is 0 up to
    # rounding (x - mean is +-d, and both directions are projected out), so what follows is rounding noise only
    side = -(-(size + 2) // stride) if pad == "SAME" else (size - 1) // stride + 1
    side = -(-((side - 1) // 2 + 1) // stride)
    assume(batch * side * side >= 4)
    args = residual_args(np.random.default_rng(seed), batch, size, cin, c1, c2)
    module = trace(residual_step(stride, pad), args)
    check = probe.check_module(module, args, MK2_16)
    assert not check.failures, check.summary()
    opcodes = {e.inst.opcode for e in check.errors}
    assert {"convolution", "reduce", "reduce-window", "select-and-scatter", "dot"} <= opcodes
    # the simulator's outputs are the probed module's, before the probes
    assert len(check.outputs) == 1 + 11


def test_a_wrong_lowering_rule_is_found_at_its_first_instruction(monkeypatch):
    # the input gradients of the convolutions are lowered with their kernel windows reversed: the first of them
    # in program order must be the first failure, and every other instruction must match (each is checked on the
    # simulator's values of the instructions before it, wrong ones included)
    args = residual_args(np.random.default_rng(0), 2, 8, 3, 4, 5)
    module = trace(residual_step(1, "SAME"), args)
    right = lower.RULES["convolution"]

    def wrong(ctx, x, w):
        if "Conv2DBackpropInput" not in ctx.inst.op_name:
            return right(ctx, x, w)
        inst = copy.copy(ctx.inst)
        inst.attrs = copy.deepcopy(inst.attrs)
        for d in inst.attrs["window"]:
            d["reversal"] = not d.get("reversal")
        return right(LowerCtx(ctx.b, inst), x, w)

    monkeypatch.setitem(lower.RULES, "convolution", wrong)
    check = probe.check_module(module, args, MK2_16)
    first = check.first_failure
    assert first is not None and first.inst.opcode == "convolution", check.summary()
    assert "Conv2DBackpropInput" in first.inst.op_name and first.error > 1e-2
    # only the 3x3 kernels' input gradients are wrong (a 1x1 window reversed is the same window)
    wrong_ones = {e.inst.name for e in check.failures}
    assert wrong_ones == {e.inst.name for e in check.errors if "Conv2DBackpropInput" in e.inst.op_name and
                          e.inst.attrs["window"][0]["size"] == 3}, check.summary(20)


PROBES = """
HloModule probes

add {
  a = f32[] parameter(0)
  b = f32[] parameter(1)
  ROOT s = f32[] add(a, b)
}

argmax {
  av = f32[] parameter(0)
  ai = s32[] parameter(1)
  bv = f32[] parameter(2)
  bi = s32[] parameter(3)
  gt = pred[] compare(bv, av), direction=GT
  v = f32[] select(gt, bv, av)
  i = s32[] select(gt, bi, ai)
  ROOT r = (f32[], s32[]) tuple(v, i)
}

ENTRY main {
  x = f32[2,6] parameter(0)
  zero = f32[] constant(0)
  s = f32[2] reduce(x, zero), dimensions={1}, to_apply=add
  i = s32[2,6] iota(), iota_dimension=1
  ninf = f32[] constant(-inf)
  big = s32[] constant(1000)
  am = (f32[2,3], s32[2,3]) reduce-window(x, i, ninf, big), window={size=1x2 stride=1x2}, to_apply=argmax
  v = f32[2,3] get-tuple-element(am), index=0
  sb = f32[2,3] broadcast(s), dimensions={0}
  ROOT out = f32[2,3] subtract(sb, v)
}
"""


def test_probes_keep_the_module_and_check_tuples_and_outputs():
    # a root that is not a tuple, a tuple-shaped probe (a variadic reduce-window), a sum with cancellation
    module = parse_module(PROBES)
    text = module.to_text()
    probed = probe.with_probes(module)
    assert module.to_text() == text                       # the original is not changed
    assert [p.name for p in probed.probes] == ["s", "am"] and probed.n_outputs == 1
    x = np.array([[1, -1, 2, -2, 3, -3], [0.5, 4, -4, 1, 1, 2]], np.float32)
    s, am, out = (i for i in module.entry.instructions if i.name in ("s", "am", "out"))
    check = probe.check_module(module, [x], MK2_16)
    assert [e.inst.name for e in check.errors] == ["s", "am", "am", "out"], check.summary()
    assert not check.failures, check.summary()
    v = x.reshape(2, 3, 2).max(2)
    np.testing.assert_allclose(check.outputs[0], x.sum(1)[:, None] - v, rtol=1e-6)
    # a wrong value is reported where it is, relative to the magnitude of the terms summed (the largest row's:
    # 12.5; row 0 sums to 0); what is computed from it is checked on it, so only the first wrong value is reported
    wrong = x.sum(1) + np.float32([0.012, 0])
    errors = probe.local_errors(module, [x], {s.id: wrong, am.id: (v, np.int32([[0, 2, 4], [1, 3, 5]])),
                                              out.id: wrong[:, None] - v})
    assert [e.ok for e in errors] == [False, True, True, True]
    assert errors[0].error == pytest.approx(0.012 / 12.5, rel=1e-4) and errors[0].scale == pytest.approx(12.5)
    errors = probe.local_errors(module, [x], {am.id: (v, np.int32([[1, 3, 5], [1, 3, 5]]))})    # row 0 wrong
    assert [e.ok for e in errors] == [True, False] and errors[1].error == 0.5
