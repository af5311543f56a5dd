"""HloModuleProto import (tf_ipu.hlo_proto): for real TF functions the proto import must equal the text
parse of the same function, and attributes must follow the conventions in xla_lowering.hlo."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
from tensorflow.compiler.xla import xla_data_pb2  # noqa: E402
from tensorflow.compiler.xla.service import hlo_pb2  # noqa: E402

from xla_lowering.errors import DynamicShapeError  # noqa: E402
from tf_ipu.hlo_proto import hlo_module_from_function, module_from_proto  # noqa: E402
from xla_lowering.hlo.ir import Alias, Module, Shape  # noqa: E402
from xla_lowering.hlo.text import module_to_text, parse_module  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from test_hlo_text import assert_same_module  # noqa: E402

F32 = tf.float32


def _softmax_mlp(x, w, b):
    return tf.nn.softmax(tf.nn.relu(x @ w + b))


def _conv_pool(x, k):
    y = tf.nn.conv2d(x, k, strides=[1, 2, 1, 1], padding="SAME", dilations=1)
    y = tf.nn.max_pool2d(y, 3, 2, "SAME")
    return tf.nn.avg_pool2d(y, 2, 1, "VALID")


def _gather_scatter(table, idx, upd):
    g = tf.gather(table, idx, axis=1)
    s = tf.tensor_scatter_nd_add(table, tf.reshape(idx, [-1, 1]), upd)
    return g, s


def _while_loop(x):
    _, acc = tf.while_loop(lambda n, a: n < 5, lambda n, a: (n + 1, a * 2.0 + 1.0), (tf.constant(0), x))
    return acc


def _mixed(x, i):
    padded = tf.pad(x, [[1, 2]])
    c = tf.cond(i > 0, lambda: padded * 2.0, lambda: padded - 1.0)
    d = tf.slice(c, [i], [4])
    srt = tf.sort(x, direction="DESCENDING")
    consts = [tf.constant(np.array([[1, -2], [3, 4]], dt)) for dt in (np.int8, np.int16, np.int32, np.int64)]
    consts += [tf.constant(np.array([1, 200], dt)) for dt in (np.uint8, np.uint16, np.uint32, np.uint64)]
    consts += [tf.constant(np.array([0.1, -np.inf, 65504], np.float16)),
               tf.constant(np.array([0.1, 1e-300, -0.0], np.float64)), tf.constant([True, False])]
    return d, srt, tf.random.uniform([2]), consts


CASES = {
    "softmax_mlp": (_softmax_mlp, [tf.TensorSpec([4, 8], F32), tf.TensorSpec([8, 3], F32), tf.TensorSpec([3], F32)]),
    "conv_pool": (_conv_pool, [tf.TensorSpec([1, 8, 8, 2], F32), tf.TensorSpec([3, 3, 2, 4], F32)]),
    "gather_scatter": (_gather_scatter, [tf.TensorSpec([5, 6], F32), tf.TensorSpec([3], tf.int32),
                                         tf.TensorSpec([3, 6], F32)]),
    "while_loop": (_while_loop, [tf.TensorSpec([3], F32)]),
    "mixed": (_mixed, [tf.TensorSpec([4], F32), tf.TensorSpec([], tf.int32)]),
}


def _text_and_proto(fn, args) -> tuple[Module, Module]:
    get_ir = fn.experimental_get_compiler_ir(*args)
    return parse_module(get_ir(stage="hlo")), module_from_proto(get_ir(stage="hlo_serialized"))


@pytest.fixture(scope="module")
def imported() -> dict[str, tuple[Module, Module]]:
    return {name: _text_and_proto(tf.function(fn, jit_compile=True), args) for name, (fn, args) in CASES.items()}


@pytest.fixture(scope="module")
def variable_case() -> tuple[Module, Module]:
    v = tf.Variable(tf.zeros([3]))

    @tf.function(jit_compile=True)
    def step(x):
        v.assign_add(x)
        return v * 2.0

    return _text_and_proto(step, [tf.TensorSpec([3], F32)])


def _find(module: Module, opcode: str):
    found = [i for c in module.computations() for i in c.instructions if i.opcode == opcode]
    assert found, f"no {opcode} in {module.name}"
    return found


@pytest.mark.parametrize("name", list(CASES))
def test_proto_import_equals_text_parse(imported, name):
    text_module, proto_module = imported[name]
    assert_same_module(proto_module, text_module)
    assert module_to_text(proto_module) == module_to_text(text_module)  # same executable-cache key


def test_variable_update_gives_input_output_alias(variable_case):
    text_module, proto_module = variable_case
    assert_same_module(proto_module, text_module)
    # TF 2.21 passes the variable as the last parameter and returns its new value as output 1
    assert proto_module.aliases == [Alias(output_index=(1,), parameter_number=1, parameter_index=())]
    assert [p.shape for p in proto_module.entry.parameters] == [Shape("f32", (3,))] * 2
    assert proto_module.entry.root.shape == Shape.tuple([Shape("f32", (3,))] * 2)


def test_softmax_attributes(imported):
    _, module = imported["softmax_mlp"]
    dot, = _find(module, "dot")
    assert dot.attrs == {"lhs_batch_dims": (), "rhs_batch_dims": (), "lhs_contracting_dims": (1,),
                         "rhs_contracting_dims": (0,)}
    assert dot.metadata["op_type"] == "MatMul" and dot.metadata["op_name"] == "matmul"
    assert isinstance(dot.metadata["source_line"], int)
    reduces = _find(module, "reduce")
    assert [r.attrs for r in reduces] == [{"dimensions": (1,)}] * 2
    assert [r.called["to_apply"].root.opcode for r in reduces] == ["maximum", "add"]
    minus_inf = reduces[0].operands[1].attrs["value"]
    assert minus_inf.dtype == np.float32 and minus_inf.shape == () and minus_inf == -np.inf
    assert [p.attrs["number"] for p in module.entry.parameters] == [0, 1, 2]


def test_conv_pool_attributes(imported):
    _, module = imported["conv_pool"]
    conv, = _find(module, "convolution")
    assert conv.attrs["dnums"] == {
        "input_batch_dimension": 0, "input_feature_dimension": 3, "input_spatial_dimensions": (1, 2),
        "kernel_input_feature_dimension": 2, "kernel_output_feature_dimension": 3,
        "kernel_spatial_dimensions": (0, 1),
        "output_batch_dimension": 0, "output_feature_dimension": 3, "output_spatial_dimensions": (1, 2)}
    assert [(d["size"], d["stride"], d["pad_low"], d["pad_high"]) for d in conv.attrs["window"]] == \
        [(3, 2, 0, 1), (3, 1, 1, 1)]
    assert (conv.attrs["feature_group_count"], conv.attrs["batch_group_count"]) == (1, 1)
    windows = [rw.attrs["window"] for rw in _find(module, "reduce-window")]
    assert [[d["size"] for d in w] for w in windows] == [[1, 3, 3, 1], [1, 2, 2, 1]]
    assert all(d["window_dilation"] == d["base_dilation"] == 1 and d["reversal"] is False
               for w in windows for d in w)


def test_gather_scatter_attributes(imported):
    _, module = imported["gather_scatter"]
    gather, = _find(module, "gather")
    assert gather.attrs == {"offset_dims": (0,), "collapsed_slice_dims": (1,), "start_index_map": (1,),
                            "index_vector_dim": 1, "slice_sizes": (5, 1), "operand_batching_dims": (),
                            "start_indices_batching_dims": (), "indices_are_sorted": False}
    scatter, = _find(module, "scatter")
    assert scatter.attrs == {"update_window_dims": (1,), "inserted_window_dims": (0,),
                             "scatter_dims_to_operand_dims": (0,), "index_vector_dim": 1,
                             "input_batching_dims": (), "scatter_indices_batching_dims": (),
                             "indices_are_sorted": False, "unique_indices": False}
    assert scatter.called["to_apply"].root.opcode == "add"


def test_while_roles(imported):
    _, module = imported["while_loop"]
    loop, = _find(module, "while")
    # XLA lists the body first in called_computation_ids; the roles must still come out right
    assert loop.called["condition"].root.shape == Shape("pred", ())
    assert loop.called["body"].root.shape == loop.shape
    assert loop.called["body"].name.startswith("while_body")


def test_mixed_attributes(imported):
    _, module = imported["mixed"]
    pad, = _find(module, "pad")
    assert pad.attrs == {"padding": ((1, 2, 0),)}
    cond, = _find(module, "conditional")
    assert sorted(cond.called) == ["branch_0", "branch_1"]
    assert cond.called["branch_0"].name.startswith("cond_true")
    dyn, = _find(module, "dynamic-slice")
    assert dyn.attrs == {"slice_sizes": (4,)}
    sort, = _find(module, "sort")
    assert sort.attrs == {"dimensions": (0,), "is_stable": True}
    assert sort.called["to_apply"].root.attrs == {"direction": "GT", "compare_type": "TOTALORDER"}
    rng, = _find(module, "rng")
    assert rng.attrs == {"distribution": "uniform"}
    iota, = _find(module, "iota")
    assert iota.attrs == {"iota_dimension": 0}


def test_constants_of_every_dtype(imported):
    _, module = imported["mixed"]
    values = {}
    for const in _find(module, "constant"):
        values.setdefault(const.shape.dtype, []).append(const.attrs["value"])
    expected = {
        "s8": np.array([[1, -2], [3, 4]], np.int8), "s16": np.array([[1, -2], [3, 4]], np.int16),
        "s64": np.array([[1, -2], [3, 4]], np.int64), "u8": np.array([1, 200], np.uint8),
        "u16": np.array([1, 200], np.uint16), "u32": np.array([1, 200], np.uint32),
        "u64": np.array([1, 200], np.uint64), "f16": np.array([0.1, -np.inf, 65504], np.float16),
        "f64": np.array([0.1, 1e-300, -0.0]), "pred": np.array([True, False]),
    }
    for dtype, want in expected.items():
        matches = [v for v in values[dtype] if v.shape == want.shape and v.tobytes() == want.tobytes()]
        assert matches, f"{dtype}: {values[dtype]}"
        assert matches[0].dtype == want.dtype
    assert any(v.shape == (2, 2) and v.dtype == np.int32 for v in values["s32"])


# --- hand-built protos: literal encodings and errors ------------------------------------------------
def _shape_proto(dtype: int, dims, minor_to_major=None, dynamic=None) -> xla_data_pb2.ShapeProto:
    sp = xla_data_pb2.ShapeProto(element_type=dtype, dimensions=list(dims))
    sp.is_dynamic_dimension.extend(dynamic or [False] * len(dims))
    if minor_to_major is not None:
        sp.layout.minor_to_major.extend(minor_to_major)
    return sp


def _module_of_constants(literals: list[xla_data_pb2.LiteralProto], shapes) -> hlo_pb2.HloModuleProto:
    comp = hlo_pb2.HloComputationProto(name="entry", id=1)
    for k, (lit, shape) in enumerate(zip(literals, shapes)):
        comp.instructions.add(name=f"c{k}", opcode="constant", id=k + 1, shape=shape, literal=lit)
    comp.instructions.add(name="t", opcode="tuple", id=100, operand_ids=list(range(1, len(literals) + 1)),
                          shape=xla_data_pb2.ShapeProto(element_type=xla_data_pb2.TUPLE, tuple_shapes=shapes))
    comp.root_id = 100
    module = hlo_pb2.HloModuleProto(name="consts", entry_computation_name="entry", entry_computation_id=1)
    module.computations.append(comp)
    return module


def test_literal_encodings():
    x = xla_data_pb2
    col_major = _shape_proto(x.S32, [2, 3], minor_to_major=[0, 1])  # data stored column by column
    cases = [
        (x.LiteralProto(shape=col_major, s32s=[1, 4, 2, 5, 3, 6]), col_major,
         np.array([[1, 2, 3], [4, 5, 6]], np.int32)),
        (x.LiteralProto(f16s=np.array([1.5, -2], "<f2").tobytes()), _shape_proto(x.F16, [2]),
         np.array([1.5, -2], np.float16)),
        (x.LiteralProto(s16s=np.array([-7, 9], "<i2").tobytes()), _shape_proto(x.S16, [2]),
         np.array([-7, 9], np.int16)),
        (x.LiteralProto(u16s=np.array([65535], "<u2").tobytes()), _shape_proto(x.U16, [1]),
         np.array([65535], np.uint16)),
        (x.LiteralProto(s8s=np.array([-1, 2], np.int8).tobytes()), _shape_proto(x.S8, [2]),
         np.array([-1, 2], np.int8)),
        (x.LiteralProto(u8s=bytes([255])), _shape_proto(x.U8, []), np.array(255, np.uint8)),
        (x.LiteralProto(u64s=[2 ** 64 - 1]), _shape_proto(x.U64, []), np.array(2 ** 64 - 1, np.uint64)),
        (x.LiteralProto(preds=[True, False]), _shape_proto(x.PRED, [2]), np.array([True, False])),
    ]
    shapes = [s for _, s, _ in cases]
    module = module_from_proto(_module_of_constants([lit for lit, _, _ in cases], shapes).SerializeToString())
    for inst, (_, _, want) in zip(module.entry.instructions, cases):
        value = inst.attrs["value"]
        assert value.dtype == want.dtype and value.shape == want.shape, inst.name
        np.testing.assert_array_equal(value, want)
    _ = parse_module(module_to_text(module))  # and the printer handles them


def test_tuple_literal():
    x = xla_data_pb2
    inner = [_shape_proto(x.S32, [2]), _shape_proto(x.F32, [])]
    shape = x.ShapeProto(element_type=x.TUPLE, tuple_shapes=inner)
    lit = x.LiteralProto(tuple_literals=[x.LiteralProto(s32s=[1, 2]), x.LiteralProto(f32s=[0.5])])
    value = module_from_proto(_module_of_constants([lit], [shape])).entry.instructions[0].attrs["value"]
    assert isinstance(value, tuple)
    np.testing.assert_array_equal(value[0], np.array([1, 2], np.int32))
    assert value[1].dtype == np.float32 and value[1] == 0.5


def test_dynamic_dimension_names_the_instruction():
    x = xla_data_pb2
    shape = _shape_proto(x.S32, [4], dynamic=[True])
    proto = _module_of_constants([x.LiteralProto(s32s=[1, 2, 3, 4])], [shape])
    with pytest.raises(NotImplementedError, match=r"%c0 .*s32\[<=4\]") as info:
        module_from_proto(proto)
    assert isinstance(info.value, DynamicShapeError)


def test_dynamic_dimension_from_tensorflow():
    fn = tf.function(lambda x, i: x[i:i + 2], jit_compile=True)
    get_ir = fn.experimental_get_compiler_ir(tf.TensorSpec([4], F32), tf.TensorSpec([], tf.int32))
    with pytest.raises(NotImplementedError, match="dynamic"):
        module_from_proto(get_ir(stage="hlo_serialized"))
    with pytest.raises(NotImplementedError, match="dynamic dimension '<=4'"):
        parse_module(get_ir(stage="hlo"))


# --- convenience entry point ------------------------------------------------------------------------
def test_hlo_module_from_function_wraps_non_jit_functions(imported):
    _, reference = imported["softmax_mlp"]
    args = [tf.zeros([4, 8]), tf.zeros([8, 3]), tf.zeros([3])]
    for fn in (tf.function(_softmax_mlp, jit_compile=True), tf.function(_softmax_mlp), _softmax_mlp):
        module = hlo_module_from_function(fn, *args)
        assert [i.opcode for i in module.entry.instructions] == [i.opcode for i in reference.entry.instructions]
        assert [p.shape for p in module.entry.parameters] == [p.shape for p in reference.entry.parameters]


def test_module_from_proto_accepts_proto_objects():
    get_ir = tf.function(_while_loop, jit_compile=True).experimental_get_compiler_ir(tf.TensorSpec([3], F32))
    data = get_ir(stage="hlo_serialized")
    assert_same_module(module_from_proto(hlo_pb2.HloModuleProto.FromString(data)), module_from_proto(data))
