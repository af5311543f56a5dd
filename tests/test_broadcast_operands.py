"""Per-channel vectors broadcast into elementwise expressions (bias add, batch-norm scale/shift/mean).

A cyclic broadcast (output element i reads vector element (i // inner) % C) feeding an elementwise op is pulled into
the op's expression fusion and read in broadcast mode: each tile receives only the part of the vector its vertices
read, and the vertex indexes it. Checked here: the codelet's broadcast load against NumPy, the per-tile windows
(``broadcast_windows``) against their definition, whole functions against TensorFlow on the CPU (vectors along the
inner, middle and outer dims, several of them, one shared by two fusions, and a non-cyclic broadcast that keeps
the materialized copy), the program (no activation-sized copy of the vector) and the executable file (saved and
loaded executables run the same; files without broadcast inputs are read as before).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, strategies as st

from conftest import assert_matches_tf, examples, get_strategy, program_node, random_array, seeds, tf
from kernels import dtypes, serialize
from kernels.codelets import expr as expr_codelet
from kernels.engine import Engine
from kernels.expr_ops import OPS
from kernels.program import Copy, Execute, walk
from kernels.serialize import ExecutableFormatError
from xla_lowering.lower.popops_elementwise import broadcast_windows

C = dtypes.code
NP = {"f32": np.float32, "f16": np.float16, "s32": np.int32}


# --- the codelet's broadcast load ------------------------------------------------------------------------
@examples(30)
@given(dt=st.sampled_from(["f32", "f16", "s32"]), n=st.integers(1, 1100), inner=st.sampled_from([1, 2, 3, 7, 300]),
       m=st.integers(1, 40), q=st.integers(0, 2000), seed=seeds)
def test_codelet_broadcast_load_matches_numpy(dt, n, inner, m, q, seed):
    """One vertex: out[k] = x[k] - vec[((q + k) // inner) % m], over several BLOCKs of the codelet."""
    rng = np.random.default_rng(seed)
    x = random_array(rng, n, NP[dt])
    vec = random_array(rng, m, NP[dt])
    mem = np.zeros(64 + x.nbytes + vec.nbytes + n * x.itemsize + 64, np.uint8)
    ax, av = 64, 64 + x.nbytes
    av = -(-av // 8) * 8
    ao = -(-(av + vec.nbytes) // 8) * 8
    mem[ax:ax + x.nbytes] = x.view(np.uint8)
    mem[av:av + vec.nbytes] = vec.view(np.uint8)
    code = np.array([[OPS["load"], 0, 0, 0, 0, C(dt), C(dt)], [OPS["load"], 1, 1, 0, 0, C(dt), C(dt)],
                     [OPS["subtract"], 2, 0, 1, 0, C(dt), C(dt)]], np.int64)
    records = np.array([[n, ao, ax, av, q, m]], np.int64)
    expr_codelet.run_expression(mem, records, code, np.array([C(dt)] * 2, np.int32), np.zeros(2, np.int64), C(dt),
                                2, 3, np.zeros(1), np.zeros(1, np.int64), np.array([[0, 0], [inner, 4]], np.int64))
    got = mem[ao:ao + n * x.itemsize].view(NP[dt])
    want = x - vec[((q + np.arange(n)) // inner) % m]
    np.testing.assert_array_equal(got, want.astype(NP[dt]))


def test_codelet_refuses_bad_broadcast_columns():
    mem = np.zeros(256, np.uint8)
    code = np.array([[OPS["load"], 0, 0, 0, 0, C("f32"), C("f32")]], np.int64)
    with pytest.raises(ValueError, match="record columns"):
        expr_codelet.run_expression(mem, np.array([[4, 64, 128, 0]], np.int64), code, np.array([C("f32")], np.int32),
                                    np.zeros(1, np.int64), C("f32"), 0, 1, np.zeros(1), np.zeros(1, np.int64),
                                    np.array([[1, 3]], np.int64))


# --- the per-tile windows ----------------------------------------------------------------------------------
class _Windows:
    """Stands in for the program builder: records the windows asked for; a window's 'address' is its index."""

    def windows_per_tile(self, vec, tiles, first, lengths, block, origin=""):
        self.tiles, self.first, self.lengths, self.block = tiles, first, lengths, block

        class T:
            syms = np.arange(len(tiles))
        return T()


@examples(60)
@given(c=st.integers(2, 40), inner=st.sampled_from([1, 2, 5, 16]), data=st.data())
def test_windows_give_every_vertex_its_elements(c, inner, data):
    """Random vertices (tile, first output element, count): each vertex's k-th element read through its window is
    vector element ((first + k) // inner) % c; a tile holds at most c elements of the vector, in arcs that do not
    overlap, and a whole copy when its vertices need every element."""
    nv = data.draw(st.integers(1, 12))
    tiles = np.array(data.draw(st.lists(st.integers(0, 3), min_size=nv, max_size=nv)), np.int64)
    first = np.array(data.draw(st.lists(st.integers(0, 5 * c * inner), min_size=nv, max_size=nv)), np.int64)
    count = np.array(data.draw(st.lists(st.integers(1, 3 * c * inner), min_size=nv, max_size=nv)), np.int64)
    b = _Windows()
    vec = np.arange(c)

    class V:
        size, itemsize = c, 4
    addr, q, m = broadcast_windows(b, V(), inner, first, count, tiles)
    # windows are the whole vector or start at a block
    assert np.all((b.lengths == c) | (b.first % b.block == 0))
    parts = [(vec[(f + np.arange(n)) % c]) for f, n in zip(b.first, b.lengths)]
    for v in range(nv):
        k = np.arange(count[v])
        got = parts[addr[v]][((q[v] + k) // inner) % m[v]]
        np.testing.assert_array_equal(got, ((first[v] + k) // inner) % c)
        assert b.tiles[addr[v]] == tiles[v]
    for t in np.unique(b.tiles):
        held = np.concatenate([parts[a] for a in np.flatnonzero(b.tiles == t)])
        assert len(held) == len(np.unique(held)) <= c
        need = np.unique(np.concatenate([((first[v] + np.arange(count[v])) // inner) % c
                                         for v in np.flatnonzero(tiles == t)]))
        assert set(need) <= set(held)
        if len(need) == c:
            assert np.flatnonzero(b.tiles == t).size == 1


# --- against TensorFlow ----------------------------------------------------------------------------------
DIMS = (1, 2, 3, 5, 7, 8, 16, 17, 31, 64, 97)


@st.composite
def cyclic_cases(draw):
    """x of rank 2..4 and a vector of x's dims [a, b) followed by ones (TF broadcasting pads it on the left): a
    cyclic broadcast with inner = the product of x's dims after b."""
    rank = draw(st.integers(2, 4))
    shape = tuple(draw(st.lists(st.sampled_from(DIMS), min_size=rank, max_size=rank)))
    if np.prod(shape) > 40_000:
        shape = (shape[0],) + tuple(min(d, 17) for d in shape[1:])
    a = draw(st.integers(0, rank - 1))
    b = draw(st.integers(a + 1, rank))
    return shape, tuple(shape[a:b]) + (1,) * (rank - b)


@examples(25)
@given(case=cyclic_cases(), dtype=st.sampled_from([np.float32, np.float16, np.int32]),
       op=st.sampled_from(["add", "sub", "mul", "max"]), seed=seeds)
def test_vector_broadcasts_match_tf(case, dtype, op, seed):
    shape, vshape = case
    rng = np.random.default_rng(seed)
    x, v = random_array(rng, shape, dtype), random_array(rng, vshape, dtype)
    w = random_array(rng, shape[-1:], dtype)
    binary = {"add": tf.add, "sub": tf.subtract, "mul": tf.multiply, "max": tf.maximum}[op]

    def f(x, v, w):
        y = binary(x, v)                     # one op with a broadcast vector: a fusion of one op
        return y, (y - w) * v                # two vectors (one of them shared with the first fusion)
    assert_matches_tf(f, x, v, w)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_batch_norm_shapes_match_tf(dtype):
    """The ResNet patterns: f32[C] -> [N,H,W,C] (bias, scale, shift) and [1,1,C] -> [N,1,1,C] (a mean)."""
    rng = np.random.default_rng(3)
    x = random_array(rng, (8, 8, 8, 64), dtype)
    scale, shift = random_array(rng, (64,), dtype), random_array(rng, (64,), dtype)
    y = random_array(rng, (8, 1, 1, 96), dtype)
    mean = random_array(rng, (1, 1, 96), dtype)
    assert_matches_tf(lambda x, s, t, y, m: (tf.nn.relu(x * s + t), tf.math.squared_difference(y, m)),
                      x, scale, shift, y, mean)


def test_one_broadcast_feeding_two_fusions_and_a_reduction():
    rng = np.random.default_rng(4)
    x = random_array(rng, (6, 10, 31), np.float32)
    v = random_array(rng, (31,), np.float32)

    def f(x, v):
        a = tf.exp(x * v * 0.1)
        return tf.reduce_sum(a, axis=0), tf.tanh(x - v) * 2.0
    assert_matches_tf(f, x, v, loose=True)


def test_non_cyclic_broadcast_falls_back():
    """m[:, None, :] broadcast over x's middle dim: operand dims 0 and 2 around dim 1 of size 10, not cyclic."""
    rng = np.random.default_rng(5)
    x = random_array(rng, (7, 10, 13), np.float32)
    m = random_array(rng, (7, 13), np.float32)
    fn = lambda x, m: x * m[:, None, :] + 1.0    # noqa: E731
    assert_matches_tf(fn, x, m)
    exe = get_strategy().compile(fn, (tf.constant(x), tf.constant(m)))
    assert not [g for st in walk(exe.program) if isinstance(st, Execute) for g in st.cs.groups
                if "in_bcast" in g.params]


# --- the program and the executable file ------------------------------------------------------------------
def _copy_bytes(step: Copy) -> int:
    return int((step.rows[:, 2] * step.rows[:, 3]).sum())


def _bias_exe():
    x = tf.constant(np.random.default_rng(6).standard_normal((8, 8, 8, 256)).astype(np.float32))
    v = tf.constant(np.linspace(-1, 1, 256, dtype=np.float32))
    return get_strategy().compile(lambda x, s, t: tf.nn.relu(x * s + t), (x, v, v + 0.5))


def test_program_has_no_activation_sized_copy_of_the_vectors():
    exe = _bias_exe()
    act = 8 * 8 * 8 * 256 * 4
    tiles = exe.device.num_tiles
    copies = [st for st in walk(exe.program) if isinstance(st, Copy)]
    # (an exchange may carry several copies: adjacent independent ones are merged into one phase)
    assert all(_copy_bytes(c) < act for c in copies), [(c.name, _copy_bytes(c)) for c in copies]
    assert sum(_copy_bytes(c) for c in copies) <= 2 * (tiles + 1) * 256 * 4   # the vector on each tile (+ gathered)
    groups = [g for st in walk(exe.program) if isinstance(st, Execute) for g in st.cs.groups]
    assert any(g.codelet == "expr" and "in_bcast" in g.params and (g.params["in_bcast"][:, 0] > 0).sum() == 2
               for g in groups)
    assert exe.memory.by_category["temporary"].max() <= 3 * 256 * 4 + 64    # two windows (+ a gathered vector)


def _inputs(exe, seed=0):
    rng = np.random.default_rng(seed)
    return [random_array(rng, t.dims, dtypes.NUMPY[t.dtype]) for t in exe.inputs]


def test_saved_executable_with_broadcast_inputs_runs_the_same(tmp_path):
    exe = _bias_exe()
    path = tmp_path / "bias.ipuexe"
    serialize.save_executable(exe, path)
    loaded = serialize.load_executable(path)
    ins = _inputs(exe)
    want, want_prof = Engine(exe).run(ins)
    got, got_prof = Engine(loaded).run(ins)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    np.testing.assert_allclose(want[0], np.maximum(ins[0] * ins[1] + ins[2], 0), rtol=1e-6, atol=1e-6)
    assert got_prof.total == want_prof.total


def _forge(raw: bytes, array_edit) -> bytes:
    """The file with one vertex group's record array changed in place (a well-formed forgery)."""
    import hashlib
    magic, version, _, jlen, doff, dlen = serialize.HEADER.unpack_from(raw)
    doc = json.loads(raw[serialize.HEADER.size:serialize.HEADER.size + jlen])
    group = program_node(doc, lambda node: node.get("kind") == "vertex_group" and "in_bcast" in node.get("params", {}))
    desc = doc["arrays"][group["records"]["$array"]]
    data = bytearray(raw[doff:doff + dlen])
    rec = np.frombuffer(bytes(data[desc["offset"]:desc["offset"] + desc["nbytes"]]), "<i8").reshape(desc["shape"])
    rec = rec.copy()
    array_edit(rec)
    data[desc["offset"]:desc["offset"] + desc["nbytes"]] = rec.tobytes()
    body = raw[:doff] + bytes(data)
    return body + hashlib.sha256(body).digest()


def test_broadcast_windows_outside_memory_are_refused(tmp_path):
    exe = _bias_exe()
    raw = serialize.dumps(exe)
    g = next(g for st in walk(exe.program) if isinstance(st, Execute) for g in st.cs.groups if "in_bcast" in g.params)
    i = int(np.flatnonzero(g.params["in_bcast"][:, 0])[0])
    col = int(g.params["in_bcast"][i, 1])
    size = exe.device.num_tiles * exe.device.tile_memory

    def huge_m(rec):
        rec[0, col + 1] = size

    def zero_m(rec):
        rec[0, col + 1] = 0
    for damage, message in ((huge_m, "outside device memory"), (zero_m, "no elements")):
        path = tmp_path / "bad.ipuexe"
        path.write_bytes(_forge(raw, damage))
        with pytest.raises(ExecutableFormatError, match=message):
            serialize.load_executable(path)


def test_files_without_broadcast_inputs_load_and_run_as_before(tmp_path):
    """A version-2 file (written before broadcast inputs: no in_bcast anywhere) still loads and runs."""
    import hashlib
    x = tf.constant(np.random.default_rng(9).standard_normal((40, 30)).astype(np.float32))
    exe = get_strategy().compile(lambda x: tf.exp(x) * 2.0 + 1.0, (x,))
    assert not [g for st in walk(exe.program) if isinstance(st, Execute) for g in st.cs.groups
                if "in_bcast" in g.params]
    raw = serialize.dumps(exe)
    magic, _, _, jlen, doff, dlen = serialize.HEADER.unpack_from(raw)
    doc = json.loads(raw[serialize.HEADER.size:serialize.HEADER.size + jlen])
    doc["format_version"] = 2
    text = json.dumps(doc).encode()
    offset = -(-(serialize.HEADER.size + len(text)) // serialize.ALIGN) * serialize.ALIGN
    body = (serialize.HEADER.pack(magic, 2, 0, len(text), offset, dlen) + text +
            bytes(offset - serialize.HEADER.size - len(text)) + raw[doff:doff + dlen])
    path = tmp_path / "v2.ipuexe"
    path.write_bytes(body + hashlib.sha256(body).digest())
    old, info = serialize.read_executable(path)
    assert info.format_version == 2
    ins = _inputs(exe, 1)
    (got,), _ = Engine(old).run(ins)
    np.testing.assert_allclose(got, np.exp(ins[0]) * 2 + 1, rtol=1e-5)
