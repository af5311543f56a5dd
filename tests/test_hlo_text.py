"""HLO text parser and printer (xla_lowering.hlo.text).

The fixtures in tests/fixtures were printed once by TensorFlow 2.21 (their header comments give the
functions); these tests do not need TensorFlow. ``assert_same_module`` is also used by test_hlo_proto.py.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xla_lowering.errors import DynamicShapeError
from xla_lowering.hlo import ir
from xla_lowering.hlo.ir import Alias, Computation, Instruction, Module, Shape
from xla_lowering.hlo.text import HloParseError, computation_to_text, module_to_text, parse_module

FIXTURES = Path(__file__).parent / "fixtures"
SOFTMAX = FIXTURES / "softmax_mlp.hlo"
OPS = FIXTURES / "conv_pool_gather_scatter_while.hlo"


# --- structural comparison (shared with test_hlo_proto.py) ----------------------------------------
def assert_same_value(a, b, where: str) -> None:
    """Attribute values: NumPy arrays bit-for-bit (NaN, -0), containers recursively, scalars by type+value."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray), where
        assert (a.dtype, a.shape) == (b.dtype, b.shape), where
        assert a.tobytes() == b.tobytes() or (
            a.dtype.kind == "f" and np.array_equal(a, b, equal_nan=True)
            and np.array_equal(np.signbit(a), np.signbit(b))), f"{where}: {a} != {b}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: {a} != {b}"
        for k in a:
            assert_same_value(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b), f"{where}: {a} != {b}"
        for k, (x, y) in enumerate(zip(a, b)):
            assert_same_value(x, y, f"{where}[{k}]")
    else:
        assert type(a) is type(b) and a == b, f"{where}: {a!r} != {b!r}"


_METADATA_KEYS = ("op_type", "op_name", "source_file", "source_line")


def assert_same_module(a: Module, b: Module) -> None:
    """Same name, aliases and computation graph: instruction by instruction, following called computations."""
    assert a.name == b.name
    assert a.aliases == b.aliases
    _assert_same_computation(a.entry, b.entry, {})


def _assert_same_computation(ca: Computation, cb: Computation, paired: dict) -> None:
    if id(ca) in paired:  # a computation called from several places must map to one counterpart
        assert paired[id(ca)] is cb, f"computation {ca.name} paired twice"
        return
    paired[id(ca)] = cb
    assert ca.name == cb.name
    assert [i.name for i in ca.instructions] == [i.name for i in cb.instructions], ca.name
    pos_a = {id(i): k for k, i in enumerate(ca.instructions)}
    pos_b = {id(i): k for k, i in enumerate(cb.instructions)}
    for ia, ib in zip(ca.instructions, cb.instructions):
        where = f"{ca.name}/%{ia.name}"
        assert (ia.opcode, ia.shape) == (ib.opcode, ib.shape), where
        assert [pos_a[id(o)] for o in ia.operands] == [pos_b[id(o)] for o in ib.operands], where
        assert_same_value(ia.attrs, ib.attrs, where)
        meta_a = {k: v for k, v in ia.metadata.items() if k in _METADATA_KEYS}
        meta_b = {k: v for k, v in ib.metadata.items() if k in _METADATA_KEYS}
        assert meta_a == meta_b, where
        assert sorted(ia.called) == sorted(ib.called), where
        for role in ia.called:
            _assert_same_computation(ia.called[role], ib.called[role], paired)
    assert pos_a[id(ca.root)] == pos_b[id(cb.root)], ca.name


def _by_name(module: Module) -> dict[str, Instruction]:
    return {i.name: i for c in module.computations() for i in c.instructions}


def _round_trip(module: Module) -> Module:
    text = module_to_text(module)
    again = parse_module(text)
    assert_same_module(module, again)
    assert module_to_text(again) == text  # printing is a fixpoint: the cache key is stable
    return again


@pytest.fixture(scope="module")
def softmax() -> Module:
    return parse_module(SOFTMAX.read_text())


@pytest.fixture(scope="module")
def ops() -> Module:
    return parse_module(OPS.read_text())


# --- the softmax MLP fixture ------------------------------------------------------------------------
def test_softmax_module_structure(softmax):
    assert softmax.name == "a_inference_f_19__.3"
    assert softmax.entry.name == "a_inference_f_19__.3"
    assert [p.shape for p in softmax.entry.parameters] == [Shape("f32", (4, 8)), Shape("f32", (8, 3)),
                                                           Shape("f32", (3,))]
    assert [p.attrs["number"] for p in softmax.entry.parameters] == [0, 1, 2]
    assert sorted(c.name for c in softmax.computations()) == ["a_inference_f_19__.3", "region_0.1", "region_1.2"]
    root = softmax.entry.root
    assert (root.opcode, root.shape, root.attrs) == ("get-tuple-element", Shape("f32", (4, 3)), {"index": 0})
    assert root.operands[0].shape == Shape.tuple([Shape("f32", (4, 3))])
    assert softmax.aliases == []
    opcodes = {i.opcode for i in softmax.entry.instructions}
    assert opcodes == {"parameter", "reshape", "dot", "transpose", "broadcast", "add", "constant", "maximum",
                       "reduce", "subtract", "exponential", "divide", "tuple", "get-tuple-element"}


def test_softmax_attributes(softmax):
    insts = _by_name(softmax)
    assert insts["matmul.2"].attrs == {"lhs_batch_dims": (), "rhs_batch_dims": (), "lhs_contracting_dims": (1,),
                                       "rhs_contracting_dims": (0,)}
    assert [o.name for o in insts["matmul.2"].operands] == ["reshape.3", "reshape.4"]
    assert insts["matmul.3"].attrs == {"dimensions": (0, 1)}
    assert insts["add.2"].attrs == {"dimensions": (1,)}
    assert insts["Relu.4"].attrs == {"dimensions": ()}
    reduce_max = insts["Softmax.29"]
    assert reduce_max.attrs == {"dimensions": (1,)}
    assert reduce_max.called["to_apply"].name == "region_0.1"
    assert reduce_max.called["to_apply"].root.opcode == "maximum"
    assert insts["Softmax.36"].called["to_apply"].root.opcode == "add"


def test_softmax_constants(softmax):
    insts = _by_name(softmax)
    zero, minus_inf, minus_zero = (insts[n].attrs["value"] for n in ("Relu.3", "Softmax.28", "Softmax.27"))
    for value in (zero, minus_inf, minus_zero):
        assert value.dtype == np.float32 and value.shape == ()
    assert zero == 0 and not np.signbit(zero)
    assert minus_inf == -np.inf
    assert minus_zero == 0 and np.signbit(minus_zero)


def test_softmax_metadata(softmax):
    insts = _by_name(softmax)
    assert insts["matmul.2"].metadata == {
        "op_type": "MatMul", "op_name": "matmul",
        "source_file": "/work/venv/lib/python3.11/site-packages/tensorflow/python/framework/ops.py",
        "source_line": 1221}
    assert insts["arg0.1"].metadata == {"op_name": "XLA_Args"}  # parameter_replication ignored
    assert insts["reshape.3"].metadata == {}
    assert "from TF op 'matmul' (MatMul)" in insts["matmul.2"].describe()


# --- the conv / pool / gather / scatter / while fixture ---------------------------------------------
def test_ops_convolution_and_pooling(ops):
    insts = _by_name(ops)
    conv = insts["Conv2D.1"]
    assert conv.shape == Shape("f32", (1, 4, 4, 4))
    assert conv.attrs["dnums"] == {
        "input_batch_dimension": 0, "input_feature_dimension": 3, "input_spatial_dimensions": (1, 2),
        "kernel_input_feature_dimension": 2, "kernel_output_feature_dimension": 3,
        "kernel_spatial_dimensions": (0, 1),
        "output_batch_dimension": 0, "output_feature_dimension": 3, "output_spatial_dimensions": (1, 2)}
    assert conv.attrs["feature_group_count"] == 1 and conv.attrs["batch_group_count"] == 1
    dim = {"size": 3, "stride": 2, "pad_low": 0, "pad_high": 1, "window_dilation": 1, "base_dilation": 1,
           "reversal": False}
    assert conv.attrs["window"] == (dim, dim)
    pool = insts["MaxPool2d.3"]
    assert [d["size"] for d in pool.attrs["window"]] == [1, 3, 3, 1]
    assert [d["stride"] for d in pool.attrs["window"]] == [1, 2, 2, 1]
    assert [(d["pad_low"], d["pad_high"]) for d in pool.attrs["window"]] == [(0, 0), (0, 1), (0, 1), (0, 0)]
    assert pool.called["to_apply"].name == "max_F32.4"


def test_ops_gather_scatter_pad_slice(ops):
    insts = _by_name(ops)
    assert insts["GatherV2.1"].attrs == {
        "offset_dims": (), "collapsed_slice_dims": (0,), "start_index_map": (0,), "index_vector_dim": 1,
        "slice_sizes": (1,), "operand_batching_dims": (), "start_indices_batching_dims": (),
        "indices_are_sorted": False}
    scatter = insts["TensorScatterAdd.1"]
    assert scatter.attrs == {
        "update_window_dims": (), "inserted_window_dims": (0,), "scatter_dims_to_operand_dims": (0,),
        "index_vector_dim": 1, "input_batching_dims": (), "scatter_indices_batching_dims": (),
        "indices_are_sorted": False, "unique_indices": False}
    assert scatter.called["to_apply"].name == "scatter-combiner.5"
    assert insts["Pad.3"].attrs == {"padding": ((1, 2, 0),)}
    assert insts["strided_slice.2"].attrs == {"starts": (1,), "limits": (7,), "strides": (2,)}
    assert insts["TopKV2.16"].attrs == {"starts": (0,), "limits": (3,), "strides": (1,)}  # stride omitted
    assert insts["Slice.5"].attrs == {"slice_sizes": (4,)}  # dynamic_slice_sizes
    assert insts["begin.3"].attrs == {"dimension": 0}  # concatenate


def test_ops_control_flow(ops):
    insts = _by_name(ops)
    loop = insts["while.24"]
    assert loop.called["condition"].name == "cond_wrapper.9"
    assert loop.called["body"].name == "while_body_25_const_0__.10"
    # the condition calls the real condition, defined before it in the text
    assert loop.called["condition"].instructions[1].called["to_apply"].name == "while_cond_24_const_0__.8"
    cond = insts["cond.4"]
    assert cond.called["branch_0"].name == "cond_true_57__.11"
    assert cond.called["branch_1"].name == "cond_false_58__.12"
    assert cond.operands[0].shape == Shape("pred", ())


def test_ops_other_attributes(ops):
    insts = _by_name(ops)
    sort = insts["TopKV2.14"]
    assert sort.attrs == {"dimensions": (0,), "is_stable": True}
    comparator = sort.called["to_apply"]
    assert comparator.root.attrs == {"direction": "GT", "compare_type": "TOTALORDER"}
    assert [p.name for p in comparator.parameters] == ["p.0.lhs.2", "p.0.rhs.2", "p.1.lhs.2", "p.1.rhs.2"]
    assert insts["Less.1"].attrs == {"direction": "LT"}  # the default type for s32 is not stored
    assert insts["TopKV2.13"].attrs == {"iota_dimension": 0}
    assert insts["RandomUniform.9"].attrs == {"distribution": "uniform"}
    assert insts["FusedBatchNormV3.15"].attrs == {"epsilon": float(np.float32(0.001)), "feature_index": 3}
    assert insts["TopKV2.18"].attrs == {"dimensions": (0,)}  # set-dimension-size


@pytest.mark.parametrize("name, dtype, expected", [
    ("constant.11", "s8", [[1, -2], [3, 4]]),
    ("constant.12", "s16", [[1, -2], [3, 4]]),
    ("constant.13", "s32", [[1, -2], [3, 4]]),
    ("constant.14", "s64", [[1, -2], [3, 4]]),
    ("constant.15", "u8", [1, 200]),
    ("constant.16", "u16", [1, 200]),
    ("constant.17", "u32", [1, 200]),
    ("constant.18", "u64", [1, 200]),
    ("constant.19", "f16", [0.1, -np.inf, 65504]),
    ("constant.20", "f64", [0.1, 1e-300, np.nan]),
    ("constant.21", "pred", [True, False]),  # printed by XLA as {1, 0}
    ("FusedBatchNormV3.10", "f32", np.zeros(0)),  # constant({})
    ("FusedBatchNormV3.12", "f32", 1.33333337),
])
def test_ops_constants_of_every_dtype(ops, name, dtype, expected):
    value = _by_name(ops)[name].attrs["value"]
    want = np.asarray(expected, dtype=ir.NUMPY_DTYPES[dtype])
    assert value.dtype == want.dtype and value.shape == want.shape
    np.testing.assert_array_equal(value, want)


# --- constants, written by hand ---------------------------------------------------------------------
def _constant(shape_text: str, literal: str) -> np.ndarray:
    module = parse_module(f"HloModule m\nENTRY e {{\n  ROOT c = {shape_text} constant({literal})\n}}\n")
    value = module.entry.root.attrs["value"]
    _round_trip(module)
    return value


@pytest.mark.parametrize("shape_text, literal, expected", [
    ("f32[]", "0", np.float32(0)),
    ("f32[]", "-0", np.float32(-0.0)),
    ("f32[]", "inf", np.float32(np.inf)),
    ("f32[]", "-inf", np.float32(-np.inf)),
    ("f32[]", "nan", np.float32(np.nan)),
    ("f32[]", "1.5e-07", np.float32(1.5e-07)),
    ("f64[]", "0.1", np.float64(0.1)),
    ("f16[]", "65504", np.float16(65504)),
    ("pred[]", "true", np.bool_(True)),
    ("pred[]", "false", np.bool_(False)),
    ("s8[]", "-128", np.int8(-128)),
    ("u8[]", "255", np.uint8(255)),
    ("s16[]", "-32768", np.int16(-32768)),
    ("u16[]", "65535", np.uint16(65535)),
    ("s32[]", "-2147483648", np.int32(-2147483648)),
    ("u32[]", "4294967295", np.uint32(4294967295)),
    ("s64[]", "-9223372036854775808", np.int64(-9223372036854775808)),
    ("u64[]", "18446744073709551615", np.uint64(18446744073709551615)),
    ("s32[3]", "{1, 2, 3}", np.array([1, 2, 3], np.int32)),
    ("f32[2,2]", "{ {1, 2}, {3, 4} }", np.array([[1, 2], [3, 4]], np.float32)),
    ("f64[2,1,2]", "{ { {1, -0} }, { {nan, -inf} } }", np.array([[[1, -0.0]], [[np.nan, -np.inf]]])),
    ("pred[2,2]", "{ {true, false}, {false, true} }", np.array([[1, 0], [0, 1]], bool)),
    ("f32[0]", "{}", np.zeros(0, np.float32)),
    ("f32[0,3]", "{}", np.zeros((0, 3), np.float32)),
    ("f32[2,0]", "{ {}, {} }", np.zeros((2, 0), np.float32)),
    ("u16[3]{0}", "{1, /*comment*/ 2, 3}", np.array([1, 2, 3], np.uint16)),
])
def test_constant_literals(shape_text, literal, expected):
    value = _constant(shape_text, literal)
    assert value.dtype == expected.dtype and value.shape == np.shape(expected)
    assert value.tobytes() == np.asarray(expected).tobytes() or np.isnan(expected).all()


def test_tuple_constant():
    value = _constant("(s32[2], f32[])", "( {1, 2}, 3.5 )")
    assert isinstance(value, tuple) and len(value) == 2
    np.testing.assert_array_equal(value[0], np.array([1, 2], np.int32))
    assert value[1].dtype == np.float32 and value[1] == 3.5


@pytest.mark.parametrize("dtype", ["f16", "f32", "f64"])
def test_float_constants_round_trip_bit_exactly(dtype):
    rng = np.random.default_rng(0)
    np_type = ir.NUMPY_DTYPES[dtype]
    bits = rng.integers(0, 2 ** (8 * np_type.itemsize), size=4000, dtype=np.uint64)
    values = bits.astype(f"u{np_type.itemsize}").view(np_type)
    values = np.concatenate([values[~np.isnan(values)], np.array([np.finfo(np_type).tiny, np.finfo(np_type).max,
                                                                   np.finfo(np_type).smallest_subnormal], np_type)])
    const = Instruction("constant", Shape(dtype, (len(values),)), attrs={"value": values}, name="c")
    module = Module("m", Computation("e", [const], const))
    parsed = parse_module(module_to_text(module)).entry.root.attrs["value"]
    assert parsed.tobytes() == values.tobytes()


# --- attribute syntax, written by hand --------------------------------------------------------------
# Exercises the attributes TF does not emit for the fixtures. Bare names (no %), untyped operands, a
# computation referenced before it is defined, ignored attributes and an escaped metadata string.
HAND_WRITTEN = r'''
HloModule hand, is_scheduled=true, input_output_alias={ {0}: (1, {}, may-alias), {1, 2}: (0, {3}, must-alias) }, entry_computation_layout={(f32[2,4]{1,0})->f32[2]{0}}

ENTRY main (p0: f32[2,4], p1: f32[4,4]) -> f32[2] {
  p0 = f32[2,4]{1,0} parameter(0), sharding={replicated}
  p1 = f32[4,4]{1,0} parameter(1)
  zero = f32[] constant(0)
  padded = f32[2,11]{1,0} pad(p0, zero), padding=0_0x1_2_2
  sliced = f32[2,2]{1,0} slice(padded), slice={[0:2], [1:9:4]}
  summed = f32[2]{0} reduce(sliced, zero), dimensions={1}, to_apply=add_f32
  bdot = f32[4,4]{1,0} dot(f32[4,4] p1, f32[4,4] p1), lhs_batch_dims={0}, lhs_contracting_dims={1}, rhs_batch_dims={0}, rhs_contracting_dims={1}, operand_precision={highest,default}
  img = f32[1,5,5,5,4]{4,3,2,1,0} broadcast(zero), dimensions={}
  kern = f32[2,2,2,2,4]{4,3,2,1,0} broadcast(zero), dimensions={}
  conv = f32[1,4,4,4,4]{4,3,2,1,0} convolution(img, kern), window={size=2x2x2 stride=1x2x1 pad=0_1x1_0x0_0 lhs_dilate=1x2x1 rhs_dilate=2x1x1 rhs_reversal=1x0x0}, dim_labels=b012f_o012i->f012b, feature_group_count=2, batch_group_count=1
  sel = f32[2,4]{1,0} select-and-scatter(p0, p0, zero), window={size=1x2 stride=1x2}, select=ge_f32, scatter=add_f32
  idx = s32[] constant(1)
  branches = f32[2]{0} conditional(idx, summed, summed), branch_computations={%id_f32, neg_f32}
  dyn = f32[2,2]{1,0} dynamic-slice(p0, idx, idx), dynamic_slice_sizes={2,2}
  ids = s32[3,1]{1,0} constant({ {0}, {1}, {1} })
  gathered = f32[3,4]{1,0} gather(p1, ids), offset_dims={1}, collapsed_slice_dims={0}, start_index_map={0}, index_vector_dim=1, slice_sizes={1,4}, indices_are_sorted=true
  upd = f32[3,4]{1,0} broadcast(zero), dimensions={}
  scattered = f32[4,4]{1,0} scatter(p1, ids, upd), update_window_dims={1}, inserted_window_dims={0}, scatter_dims_to_operand_dims={0}, index_vector_dim=1, indices_are_sorted=true, unique_indices=true, to_apply=add_f32
  cc = f32[2]{0} custom-call(summed), custom_call_target="my_op", backend_config="{\"k\": 1}", metadata={op_type="X" op_name="a \"quoted\" name\\path" source_file="f.py" source_line=7 deduplicated_name="ignored"}
  rp = f32[2]{0} reduce-precision(cc), exponent_bits=5, mantissa_bits=10
  cmp = pred[2]{0} compare(rp, summed), direction=NE, type=TOTALORDER
  mapped = f32[2]{0} map(rp, summed), dimensions={0}, to_apply=add_f32, frontend_attributes={a="b"}
  mean = f32[] constant(0)
  normal = f32[2,3]{1,0} rng(mean, zero), distribution=rng_normal
  state = u64[2]{0} constant({1, 2})
  bits = (u64[2]{0}, u32[4]{0}) rng-bit-generator(state), algorithm=rng_three_fry
  ROOT out = f32[2]{0} add(mapped, branches)
}

add_f32 {
  a = f32[] parameter(0)
  b = f32[] parameter(1)
  ROOT s = f32[] add(a, b)
}

ge_f32 {
  ga = f32[] parameter(0)
  gb = f32[] parameter(1)
  ROOT ge = pred[] compare(ga, gb), direction=GE
}

%id_f32 (x: f32[2]) -> f32[2] {
  ROOT %x = f32[2]{0} parameter(0)
}

neg_f32 {
  y = f32[2]{0} parameter(0)
  ROOT n = f32[2]{0} negate(y)
}
'''


def test_hand_written_attributes():
    module = parse_module(HAND_WRITTEN)
    insts = _by_name(module)
    assert module.entry.name == "main"
    assert module.aliases == [Alias((0,), 1, ()), Alias((1, 2), 0, (3,))]
    assert insts["padded"].attrs == {"padding": ((0, 0, 0), (1, 2, 2))}
    assert insts["sliced"].attrs == {"starts": (0, 1), "limits": (2, 9), "strides": (1, 4)}
    assert [o.name for o in insts["padded"].operands] == ["p0", "zero"]
    assert insts["bdot"].attrs == {"lhs_batch_dims": (0,), "rhs_batch_dims": (0,), "lhs_contracting_dims": (1,),
                                   "rhs_contracting_dims": (1,)}
    conv = insts["conv"].attrs
    assert conv["dnums"] == {
        "input_batch_dimension": 0, "input_feature_dimension": 4, "input_spatial_dimensions": (1, 2, 3),
        "kernel_input_feature_dimension": 4, "kernel_output_feature_dimension": 0,
        "kernel_spatial_dimensions": (1, 2, 3),
        "output_batch_dimension": 4, "output_feature_dimension": 0, "output_spatial_dimensions": (1, 2, 3)}
    assert conv["window"][0] == {"size": 2, "stride": 1, "pad_low": 0, "pad_high": 1, "window_dilation": 2,
                                 "base_dilation": 1, "reversal": True}
    assert conv["window"][1] == {"size": 2, "stride": 2, "pad_low": 1, "pad_high": 0, "window_dilation": 1,
                                 "base_dilation": 2, "reversal": False}
    assert (conv["feature_group_count"], conv["batch_group_count"]) == (2, 1)
    assert {r: c.name for r, c in insts["sel"].called.items()} == {"select": "ge_f32", "scatter": "add_f32"}
    assert {r: c.name for r, c in insts["branches"].called.items()} == {"branch_0": "id_f32", "branch_1": "neg_f32"}
    assert insts["dyn"].attrs == {"slice_sizes": (2, 2)}
    assert insts["gathered"].attrs["indices_are_sorted"] is True
    assert insts["scattered"].attrs["unique_indices"] is True
    assert insts["cc"].attrs == {"target": "my_op", "backend_config": '{"k": 1}'}
    assert insts["cc"].metadata == {"op_type": "X", "op_name": 'a "quoted" name\\path', "source_file": "f.py",
                                    "source_line": 7}
    assert insts["rp"].attrs == {"exponent_bits": 5, "mantissa_bits": 10}
    assert insts["cmp"].attrs == {"direction": "NE", "compare_type": "TOTALORDER"}
    assert insts["mapped"].attrs == {"dimensions": (0,)}
    assert insts["normal"].attrs == {"distribution": "normal"}
    assert insts["bits"].attrs == {"algorithm": "three_fry"}
    assert insts["bits"].shape == Shape.tuple([Shape("u64", (2,)), Shape("u32", (4,))])
    assert insts["p0"].attrs == {"number": 0}  # sharding ignored


def test_hand_written_round_trip():
    module = _round_trip(parse_module(HAND_WRITTEN))
    text = module_to_text(module)
    assert "input_output_alias={ {0}: (1, {}, may-alias), {1,2}: (0, {3}, may-alias) }" in text
    assert "branch_computations={%id_f32, %neg_f32}" in text
    assert "padding=0_0x1_2_2" in text
    assert "window={size=2x2x2 stride=1x2x1 pad=0_1x1_0x0_0 lhs_dilate=1x2x1 rhs_dilate=2x1x1 " \
           "rhs_reversal=1x0x0}" in text
    assert "dim_labels=b012f_o012i->f012b" in text


# --- round trips of the fixtures --------------------------------------------------------------------
@pytest.mark.parametrize("path", [SOFTMAX, OPS], ids=lambda p: p.stem)
def test_fixture_round_trip(path):
    module = parse_module(path.read_text())
    again = _round_trip(module)
    assert module.fingerprint() == again.fingerprint()


def test_printer_output_is_standard_hlo(softmax, ops):
    text = module_to_text(ops)
    assert text.startswith("HloModule a_inference_f_125__.13\n")
    assert "ENTRY %a_inference_f_125__.13 (arg0.1: f32[1,8,8,2]" in text
    assert "true_computation=%cond_true_57__.11, false_computation=%cond_false_58__.12" in text
    assert "condition=%cond_wrapper.9, body=%while_body_25_const_0__.10" in text
    assert "window={size=3x3 stride=2x2 pad=0_1x0_1}, dim_labels=b01f_01io->b01f" in text
    assert "constant({ {1, -2}, {3, 4} })" in text
    assert "constant({true, false})" in text
    # callees are printed before their callers, the entry last
    assert text.index("%cond_wrapper.9 (") < text.index("ENTRY")
    assert text.index("%while_cond_24_const_0__.8 (") < text.index("%cond_wrapper.9 (")
    region = next(c for c in softmax.computations() if c.name == "region_0.1")
    assert computation_to_text(region) == region.to_text() == (
        "%region_0.1 (Softmax.5: f32[], Softmax.6: f32[]) -> f32[] {\n"
        '  %Softmax.5 = f32[] parameter(0), metadata={op_name="Softmax"}\n'
        '  %Softmax.6 = f32[] parameter(1), metadata={op_name="Softmax"}\n'
        "  ROOT %Softmax.7 = f32[] maximum(f32[] %Softmax.5, f32[] %Softmax.6), "
        'metadata={op_type="Softmax" op_name="Softmax"}\n'
        "}")


def test_fusion_prints_as_kloop_and_parses_back():
    p0 = Instruction("parameter", Shape("f32", (4,)), attrs={"number": 0}, name="fp0")
    neg = Instruction("negate", p0.shape, [p0], name="fneg")
    fused = Computation("fused_negate", [p0, neg], neg)
    x = Instruction("parameter", p0.shape, attrs={"number": 0}, name="x")
    fusion = Instruction("fusion", p0.shape, [x], attrs={"kind": "expression"}, called={"fused": fused},
                         name="fusion.1")
    module = Module("fusion_module", Computation("entry", [x, fusion], fusion))
    text = module_to_text(module)
    assert "ROOT %fusion.1 = f32[4] fusion(f32[4] %x), kind=kLoop, calls=%fused_negate" in text
    again = _round_trip(module)
    assert again.entry.root.attrs == {"kind": "expression"}
    assert again.entry.root.called["fused"].name == "fused_negate"


def test_printer_makes_duplicate_names_unique():
    a = Instruction("parameter", Shape("f32", ()), attrs={"number": 0}, name="same")
    b = Instruction("negate", Shape("f32", ()), [a], name="same")
    again = parse_module(module_to_text(Module("m", Computation("e", [a, b], b))))
    assert [i.name for i in again.entry.instructions] == ["same", "same.dup1"]
    assert again.entry.root.operands[0] is again.entry.instructions[0]


def test_printer_rejects_attributes_it_cannot_print():
    a = Instruction("parameter", Shape("f32", ()), attrs={"number": 0, "my_pass_note": 1}, name="a")
    with pytest.raises(ValueError, match="my_pass_note"):
        module_to_text(Module("m", Computation("e", [a], a)))


def test_newer_xla_dump_details_are_tolerated():
    # stack-frame tables after the computations, an execution thread after a body, a layout with tiling,
    # a header attribute list, control predecessors and a dot precision algorithm
    text = ("HloModule m, is_scheduled=true, entry_computation_layout={(f32[2]{0})->f32[2]{0}}, "
            "frontend_attributes={fingerprint_before_lhs=\"x\"}\n\n"
            "ENTRY %e (p: f32[2]) -> f32[2] {\n"
            "  %p = f32[2]{0:T(128)} parameter(0)\n"
            "  %n = f32[2]{0} negate(f32[2]{0} %p)\n"
            "  ROOT %d = f32[] dot(%p, %n), lhs_contracting_dims={0}, rhs_contracting_dims={0}, "
            "algorithm=dot_f32_f32_f32, control-predecessors={%n}\n"
            "}, execution_thread=\"main\"\n\n"
            "FileNames\n1 \"a.py\"\nStackFrames\n1 {file_location_id=1 parent_frame_id=0}\n")
    module = parse_module(text)
    assert [i.opcode for i in module.entry.instructions] == ["parameter", "negate", "dot"]
    assert module.entry.root.attrs["lhs_contracting_dims"] == (0,)


# --- errors -----------------------------------------------------------------------------------------
def test_dynamic_dimensions_are_not_supported():
    # as TF prints x[i:i+2] for a dynamic i (abridged)
    text = ("HloModule dyn\n\nENTRY %e (arg0.1: f32[4]) -> f32[<=4] {\n"
            "  %arg0.1 = f32[4]{0} parameter(0)\n"
            "  %n = s32[] constant(2)\n"
            "  ROOT %d = f32[<=4]{0} set-dimension-size(f32[4]{0} %arg0.1, s32[] %n), dimensions={0}\n}\n")
    with pytest.raises(NotImplementedError, match=r"line 3: dynamic dimension '<=4'") as info:
        parse_module(text)
    assert isinstance(info.value, DynamicShapeError)  # what tf_ipu reports to users


_GOOD_BODY = "ENTRY e {\n  p = f32[2] parameter(0)\n  ROOT r = f32[2] negate(p)\n}\n"


@pytest.mark.parametrize("text, line, message", [
    ("Module m\n" + _GOOD_BODY, 1, "expected 'HloModule name'"),
    ("HloModule m\n", 2, "no computations"),
    ("HloModule m\nENTRY e {\n  ROOT r = f32[2] negate(q)\n}\n", 3, "operand '%q' is not defined"),
    ("HloModule m\nENTRY e {\n  p = f32[2] parameter(0)\n  ROOT r = f32[2] map(p), to_apply=nowhere\n}\n",
     4, "unknown computation 'nowhere'"),
    ("HloModule m\nENTRY e {\n  p = f32[2] parameter(0)\n  ROOT r = f32[2] negate(p), bogus_attr=3\n}\n",
     4, "unsupported attribute 'bogus_attr'"),
    ("HloModule m\nENTRY e {\n  p = f32[2 parameter(0)\n  ROOT r = f32[2] negate(p)\n}\n", 3,
     "unterminated shape"),
    ("HloModule m\nENTRY e {\n  p = f32[2,x] parameter(0)\n}\n", 3, "bad dimension 'x'"),
    ("HloModule m\nENTRY e {\n  p = q32[2] parameter(0)\n}\n", 3, "unknown element type 'q32'"),
    ("HloModule m\nENTRY e {\n  ROOT c = f32[3] constant({1, 2})\n}\n", 3, "constant: expected ','"),
    ("HloModule m\nENTRY e {\n  ROOT c = s8[] constant(300)\n}\n", 3, "bad s8 value"),
    ("HloModule m\nENTRY e {\n  ROOT c = f32[2] constant({1, x})\n}\n", 3, "bad f32 value"),
    ("HloModule m\nENTRY e {\n  ROOT c = f32[9] constant({...})\n}\n", 3, "elided"),
    ("HloModule m\nENTRY e {\n  p = f32[2] parameter(0)\n  ROOT p = f32[2] negate(p)\n}\n", 4,
     "duplicate instruction name"),
    ("HloModule m\nENTRY e {\n  p = f32[2] parameter(0)\n  ROOT r = f32[2] pad(p, p), padding=1x2\n}\n", 4,
     "bad value for 'padding'"),
    ("HloModule m\nENTRY e {\n  p = f32[2] parameter(0)\n  ROOT r = f32[2] negate(p), metadata={op_name=\"x}\n}\n",
     4, "unterminated string"),
    ("HloModule m\nENTRY e {\n  p = f32[2] parameter(0)\n", 2, "not closed"),
    ("HloModule m, input_output_alias={ {0}: 1 }\n" + _GOOD_BODY, 1, "malformed input_output_alias"),
])
def test_malformed_text_raises_parse_error(text, line, message):
    with pytest.raises(HloParseError, match=message) as info:
        parse_module(text)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.line == line, str(err)
    assert f"line {line}:" in str(err)
    assert err.text.strip() in text


def test_text_module_does_not_import_tensorflow():
    code = ("import sys; import xla_lowering.hlo.text as t; "
            f"t.parse_module(open({str(SOFTMAX)!r}).read()); "
            "assert not any(m.split('.')[0] == 'tensorflow' for m in sys.modules), 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)
