"""Executables as files: the file format (kernels/serialize.py), export and load (tf_ipu.export / tf_ipu.load),
the executable cache on disk (IPUConfig(executable_cache_dir=...)) and the ``tf-ipu`` command.

A file round trip must give an executable that runs identically (same outputs, same cycles); a damaged or foreign
file must be refused with an ``ExecutableFormatError`` that says why. Loading and the command must work in a process
where TensorFlow cannot be imported: those subprocesses install a meta-path hook that blocks it (``NO_TF``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

import tf_ipu
from conftest import NO_TF, TILES, get_strategy, program_node, run_cli, run_python, tf
from kernels import serialize
from kernels.engine import Engine
from kernels.program import If, Switch, While, walk
from kernels.serialize import ExecutableFormatError

ROOT = Path(__file__).resolve().parent.parent
F32 = np.float32


# --- functions ---------------------------------------------------------------------------------------------
STATE = tf.Variable(np.arange(8, dtype=F32))


@tf.function
def dense(x, w):
    """A dense layer reading and updating a captured variable, with dict outputs."""
    STATE.assign_add(tf.ones(8))
    y = tf.nn.softmax(tf.nn.relu(x @ w) + STATE)
    return {"probs": y, "total": tf.reduce_sum(y, axis=0)}


@tf.function
def control(x, n):
    """A data-dependent while loop, a conditional and random numbers: every kind of program node."""
    def body(i, x):
        return i + 1, tf.where(x > 0, x * 0.5, x + 1.0)
    _, y = tf.while_loop(lambda i, x: i < n, body, (tf.constant(0), x))
    z = tf.cond(tf.reduce_sum(y) > 0, lambda: y * 2.0, lambda: y - 1.0)
    k = tf.clip_by_value(n, 0, 2)
    s = tf.switch_case(k, [lambda: z, lambda: z + 1.0, lambda: -z])
    return s, tf.random.uniform((16,)) + z


RNG = np.random.default_rng(7)
X = RNG.standard_normal((32, 16)).astype(F32)
W = RNG.standard_normal((16, 8)).astype(F32)
N = np.int32(3)
SPECS = (tf.TensorSpec((32, 16), tf.float32, name="x"), tf.TensorSpec((16, 8), tf.float32, name="w"))


def _same_profile(a, b) -> None:
    assert (a.total, a.compute, a.exchange, a.sync, a.host_io, a.exchange_bytes) == \
        (b.total, b.compute, b.exchange, b.sync, b.host_io, b.exchange_bytes)
    assert dict(a.steps) == dict(b.steps)
    np.testing.assert_array_equal(a.tile_compute, b.tile_compute)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """``dense`` exported from TensorSpecs, with STATE as it is now."""
    STATE.assign(np.arange(8, dtype=F32))
    path = tmp_path_factory.mktemp("export") / "dense.ipuexe"
    assert tf_ipu.export(get_strategy(), dense, SPECS, path) == path
    return path


@pytest.fixture(scope="module")
def control_exe():
    return get_strategy().compile(control, (tf.constant(X[0]), tf.constant(N)))


# --- the file format ----------------------------------------------------------------------------------------
def test_round_trip_runs_identically_with_every_kind_of_step(control_exe, tmp_path):
    kinds = {type(s) for s in walk(control_exe.program)}
    assert {While, If} <= kinds or {While, Switch} <= kinds
    path = tmp_path / "control.ipuexe"
    serialize.save_executable(control_exe, path, {"note": ("plain", 1, 2.5, float("inf"), np.arange(3))},
                              producer="tf-ipu test")
    exe, info = serialize.read_executable(path)
    assert (info.format_version, info.producer) == (serialize.FORMAT_VERSION, "tf-ipu test")
    assert info.extra["note"][:4] == ("plain", 1, 2.5, float("inf"))
    np.testing.assert_array_equal(info.extra["note"][4], np.arange(3))
    assert exe.meta == control_exe.meta and exe.inputs == control_exe.inputs and exe.device == control_exe.device
    for n in (np.int32(0), np.int32(2), np.int32(5)):       # trip counts and branches differ
        want, want_prof = Engine(control_exe, seed=11).run([X[0], n])
        got, got_prof = Engine(exe, seed=11).run([X[0], n])
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
        _same_profile(got_prof, want_prof)
    # the file is a function of the executable: writing the loaded one gives the same bytes
    assert serialize.dumps(exe, info.extra, producer=info.producer) == path.read_bytes()


def test_save_refuses_what_is_not_plain_data(control_exe, tmp_path):
    with pytest.raises(TypeError, match="extra_meta.*object"):
        serialize.save_executable(control_exe, tmp_path / "x.ipuexe", {"f": object()})
    with pytest.raises(TypeError, match="cannot be stored"):
        serialize.save_executable(control_exe, tmp_path / "x.ipuexe", {"a": np.array([object()])})
    assert not list(tmp_path.iterdir())            # no file, and no temporary file left behind


def _rebuild(raw: bytes, edit) -> bytes:
    """The file with its JSON document edited, and a correct header and checksum (a well-formed forgery)."""
    magic, version, _, jlen, doff, dlen = serialize.HEADER.unpack_from(raw)
    doc = json.loads(raw[serialize.HEADER.size:serialize.HEADER.size + jlen])
    edit(doc)
    text = json.dumps(doc).encode()
    offset = -(-(serialize.HEADER.size + len(text)) // serialize.ALIGN) * serialize.ALIGN
    body = (serialize.HEADER.pack(magic, version, 0, len(text), offset, dlen) + text +
            bytes(offset - serialize.HEADER.size - len(text)) + raw[doff:doff + dlen])
    return body + hashlib.sha256(body).digest()


def _first(doc, kind):
    return program_node(doc, lambda node: node.get("kind") == kind)


def _set_kind(doc):
    _first(doc, "copy")["kind"] = "syscall"


def _set_codelet(doc):
    _first(doc, "vertex_group")["codelet"] = "os.system"


def _set_rows_dtype(doc):
    doc["arrays"][_first(doc, "copy")["rows"]["$array"]]["dtype"] = "<f8"    # copy rows read as floats


def _set_addr_outside(doc):
    _first(doc, "while")["cond_addr"] = 1 << 40


def _set_newer_in_header(raw: bytes) -> bytes:
    return raw[:8] + (serialize.FORMAT_VERSION + 1).to_bytes(4, "little") + raw[12:]


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:len(raw) // 2] + bytes([raw[len(raw) // 2] ^ 0x40]) + raw[len(raw) // 2 + 1:],
     "checksum mismatch"),                                                     # a flipped bit in the arrays
    (lambda raw: raw[:100] + bytes([raw[100] ^ 1]) + raw[101:], "checksum mismatch"),   # ... in the JSON
    (lambda raw: raw[:-1000], "truncated"),
    (lambda raw: raw[:40], "truncated"),
    (lambda raw: raw + b"\0", "unexpected bytes after the end"),
    (lambda raw: b"PK\x03\x04" + raw[4:], "wrong magic"),
    (lambda raw: b"", "empty file"),
    (_set_newer_in_header, f"format version {serialize.FORMAT_VERSION + 1} is newer"),
    (lambda raw: raw[:8] + (0).to_bytes(4, "little") + raw[12:], "unknown format version 0"),
    (lambda raw: _rebuild(raw, _set_kind), "unknown program step kind 'syscall'"),
    (lambda raw: _rebuild(raw, _set_codelet), "unknown codelet 'os.system'"),
    (lambda raw: _rebuild(raw, lambda d: d["meta"].update({"x": {"$pickle": "..."}})), "unknown or malformed tag"),
    (lambda raw: _rebuild(raw, lambda d: d["arrays"][0].update(dtype="|O")), "not allowed"),
    (lambda raw: _rebuild(raw, _set_rows_dtype), "expected int64 rows"),
    (lambda raw: _rebuild(raw, _set_addr_outside), f"address {1 << 40} outside device memory"),
    (lambda raw: _rebuild(raw, lambda d: d.pop("program")), "malformed document"),
], ids=["flipped-data-byte", "flipped-json-byte", "truncated", "truncated-header", "trailing-bytes", "wrong-magic",
        "empty", "newer-version", "unknown-version", "unknown-step-kind", "unknown-codelet", "unknown-tag",
        "object-dtype", "rows-dtype", "address-out-of-range", "missing-program"])
def test_damaged_or_foreign_files_are_refused_with_the_reason(control_exe, tmp_path, damage, message):
    raw = serialize.dumps(control_exe)
    path = tmp_path / "bad.ipuexe"
    path.write_bytes(damage(raw))
    with pytest.raises(ExecutableFormatError, match=message) as err:
        tf_ipu.load(path)
    assert str(path) in str(err.value) and isinstance(err.value, ValueError)


# --- export and load ----------------------------------------------------------------------------------------
def test_export_load_run_equals_strategy_run(exported):
    loaded = tf_ipu.load(exported)
    assert [(t.name, t.dtype, t.dims) for t in loaded.inputs] == [("x", "f32", (32, 16)), ("w", "f32", (16, 8))]
    assert [(t.name, t.dims) for t in loaded.outputs] == [("probs", (32, 8)), ("total", (8,))]
    assert loaded.device.num_tiles == TILES and loaded.device.name == "mk2"
    STATE.assign(np.arange(8, dtype=F32))                   # as it was when exported
    strategy = get_strategy()
    for _ in range(2):                                      # the variable's update carries over to the next call
        want = strategy.run(dense, (tf.constant(X), tf.constant(W)))
        got = loaded(X, W)
        assert sorted(got) == ["probs", "total"]
        for k in got:
            np.testing.assert_array_equal(got[k], want[k].numpy())
        assert loaded.last_report().cycles_total == strategy.last_report().cycles_total
        assert loaded.last_report().steps == strategy.last_report().steps
    with pytest.raises(ValueError, match=r"input 1 \('w'\) must have shape \(16, 8\)"):
        loaded(X, W[:4])
    with pytest.raises(TypeError, match="takes 2 inputs"):
        loaded(X)


def test_export_needs_static_shapes(tmp_path):
    with pytest.raises(ValueError, match="unknown size"):
        tf_ipu.export(get_strategy(), dense, (tf.TensorSpec((None, 16), tf.float32), SPECS[1]), tmp_path / "f")
    assert not list(tmp_path.iterdir())


def test_load_and_run_in_a_process_without_tensorflow(exported, tmp_path):
    out = tmp_path / "out.npz"
    code = NO_TF + f"""
import numpy as np, tf_ipu
loaded = tf_ipu.load({str(exported)!r})
x = np.load({str(tmp_path / 'x.npy')!r}); w = np.load({str(tmp_path / 'w.npy')!r})
got = loaded(x, w)
np.savez({str(out)!r}, cycles=loaded.last_report().cycles_total, **got)
assert "tensorflow" not in sys.modules, "tensorflow was imported"
"""
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "w.npy", W)
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    STATE.assign(np.arange(8, dtype=F32))
    want = get_strategy().run(dense, (tf.constant(X), tf.constant(W)))
    with np.load(out) as got:
        for k in ("probs", "total"):
            np.testing.assert_array_equal(got[k], want[k].numpy())
        assert int(got["cycles"]) == get_strategy().last_report().cycles_total


# --- the executable cache on disk ---------------------------------------------------------------------------
def _cached_strategy(cache_dir) -> tf_ipu.IPUStrategy:
    return tf_ipu.IPUStrategy(tf_ipu.IPUConfig(device="mk2", tiles_per_ipu=TILES, compile_progress=False,
                                               executable_cache_dir=str(cache_dir)))


def _square_sum(x):
    return tf.reduce_sum(x * x, axis=1) + 1.0


def test_disk_cache_hits_in_the_same_process_and_in_another(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tf_ipu")
    fn = tf.function(_square_sum)
    first = _cached_strategy(tmp_path)
    want = first.run(fn, (tf.constant(X),)).numpy()
    assert first.compile_count == 1
    assert (first.cache_stats.hits, first.cache_stats.misses, first.cache_stats.refused) == (0, 1, 0)
    assert any(r.levelno == logging.INFO and "has no entry" in r.getMessage() for r in caplog.records)
    entries = list(tmp_path.glob("*.ipuexe"))
    assert len(entries) == 1 and not list(tmp_path.glob("*.tmp"))

    second = _cached_strategy(tmp_path)
    np.testing.assert_array_equal(second.run(fn, (tf.constant(X),)).numpy(), want)
    assert second.compile_count == 0 and second.cache_stats.hits == 1

    code = f"""
import numpy as np, tensorflow as tf, tf_ipu, json
strategy = tf_ipu.IPUStrategy(tf_ipu.IPUConfig(device="mk2", tiles_per_ipu={TILES}, compile_progress=False,
                                               executable_cache_dir={str(tmp_path)!r}))
def _square_sum(x):
    return tf.reduce_sum(x * x, axis=1) + 1.0
out = strategy.run(tf.function(_square_sum), (tf.constant(np.load({str(tmp_path / 'x.npy')!r})),)).numpy()
np.save({str(tmp_path / 'out.npy')!r}, out)
print(json.dumps([strategy.compile_count, strategy.cache_stats.hits, strategy.cache_stats.misses]))
"""
    np.save(tmp_path / "x.npy", X)
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [0, 1, 0]
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), want)


def test_disk_cache_refuses_a_corrupt_entry_with_a_warning_and_recompiles(tmp_path, caplog):
    fn = tf.function(_square_sum)
    want = _cached_strategy(tmp_path).run(fn, (tf.constant(X),)).numpy()
    (entry,) = tmp_path.glob("*.ipuexe")
    raw = bytearray(entry.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    entry.write_bytes(bytes(raw))
    caplog.set_level(logging.INFO, logger="tf_ipu")
    strategy = _cached_strategy(tmp_path)
    np.testing.assert_array_equal(strategy.run(fn, (tf.constant(X),)).numpy(), want)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("refused" in m and "checksum mismatch" in m and entry.name in m for m in warnings), warnings
    assert strategy.compile_count == 1 and strategy.cache_stats.refused == 1
    serialize.load_executable(entry)                      # rewritten: whole again
    assert _cached_strategy(tmp_path).compile(fn, (tf.constant(X),)) is not None


def test_cache_key_covers_config_format_and_compiler(tmp_path):
    from tf_ipu.disk_cache import DiskCache
    strategy = get_strategy()
    args = (tf.constant(X[0]), tf.constant(N))
    # TensorFlow names the module and its computations with process-wide counters: a new trace has new names
    first, again = (strategy._trace(tf.function(control.python_function), args, {}).module for _ in range(2))
    assert first.fingerprint() != again.fingerprint()
    assert first.canonical_fingerprint() == again.canonical_fingerprint()
    cache = DiskCache(tmp_path, "test")
    base = cache.key(first, tf_ipu.IPUConfig(tiles_per_ipu=64).cache_key())
    assert {"hlo", "config", "format_version", "compiler_version", "compiler_digest"} <= set(base)
    assert cache.path(base) == cache.path(cache.key(again, tf_ipu.IPUConfig(tiles_per_ipu=64).cache_key()))
    assert cache.path(base) != cache.path(cache.key(first, tf_ipu.IPUConfig(tiles_per_ipu=32).cache_key()))
    assert cache.path(base) != cache.path(dict(base, compiler_version="0"))
    other = strategy._trace(tf.function(_square_sum), (tf.constant(X),), {}).module
    assert cache.path(cache.key(other, tf_ipu.IPUConfig(tiles_per_ipu=64).cache_key())) != cache.path(base)


def test_config_validates_the_cache_dir(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        tf_ipu.IPUConfig(executable_cache_dir=str(tmp_path / "file"))
    with pytest.raises(ValueError, match="directory path"):
        tf_ipu.IPUConfig(executable_cache_dir=3)
    config = tf_ipu.IPUConfig(executable_cache_dir=tmp_path / "new")
    assert config.executable_cache_dir == str(tmp_path / "new")
    assert config.cache_key() == tf_ipu.IPUConfig().cache_key()


# --- the tf-ipu command ---------------------------------------------------------------------------------------
def test_cli_help_info_and_run_without_tensorflow(exported, tmp_path):
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["tf-ipu"] == "tf_ipu.cli:main"
    for args in (["--help"], ["info", "--help"], ["run", "--help"]):
        proc = run_cli(*args)
        assert proc.returncode == 0 and "usage: tf-ipu" in proc.stdout, proc.stderr

    proc = run_cli("info", str(exported))
    assert proc.returncode == 0, proc.stderr
    for text in ("mk2: 64 tiles", "x: f32[32,16]", "w: f32[16,8]", "probs: f32[32,8]", "tiles used:", "memory:",
                 "compute sets", "vertices", "copies with", f"version {serialize.FORMAT_VERSION}",
                 f"tf-ipu {tf_ipu.__version__}"):
        assert text in proc.stdout, (text, proc.stdout)
    info = json.loads(run_cli("info", "--json", str(exported)).stdout)
    assert info["program"]["vertices"] > 0 and info["memory"]["tiles_used"] > 0

    np.save(tmp_path / "x.npy", X)
    np.savez(tmp_path / "in.npz", w=W, x=X)            # by name, in any order
    proc = run_cli("run", str(exported), "--input", str(tmp_path / "x.npy"), "--input", str(tmp_path / "in.npz"))
    assert proc.returncode != 0 and "takes 2 inputs" in proc.stderr    # x given twice: three inputs
    proc = run_cli("run", str(exported), "--input", str(tmp_path / "in.npz"), "--output", str(tmp_path / "y.npz"))
    assert proc.returncode == 0 and "cycles" in proc.stdout, proc.stderr
    STATE.assign(np.arange(8, dtype=F32))
    want = tf_ipu.load(exported)(X, W)
    with np.load(tmp_path / "y.npz") as got:
        for k in ("probs", "total"):
            np.testing.assert_array_equal(got[k], want[k])

    bad = tmp_path / "bad.ipuexe"
    bad.write_bytes(exported.read_bytes()[:-5])
    proc = run_cli("info", str(bad))
    assert proc.returncode == 1 and "truncated" in proc.stderr


def test_export_keras_matches_predict(tmp_path):
    import keras
    strategy = tf_ipu.IPUStrategy(tf_ipu.IPUConfig(tiles_per_ipu=32, compile_progress=False))
    with strategy.scope():
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                                  keras.layers.Dense(3, activation="softmax")])
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    path = tf_ipu.export_keras(model, tmp_path / "model.ipuexe", batch_size=4)
    loaded = tf_ipu.load(path)
    got = loaded(x)
    got = got[0] if isinstance(got, (tuple, list)) else got
    np.testing.assert_allclose(np.asarray(got), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="batch_size"):
        tf_ipu.export_keras(model, tmp_path / "bad.ipuexe", batch_size=0)


def test_file_for_another_device_is_refused(tmp_path):
    strategy = tf_ipu.IPUStrategy(tf_ipu.IPUConfig(device="mk1", tiles_per_ipu=16, compile_progress=False))
    path = tf_ipu.export(strategy, tf.function(lambda x: x * 2.0), (np.ones(8, np.float32),), tmp_path / "f.ipuexe")
    with pytest.raises(ExecutableFormatError, match="compiled for a mk1 IPU with 16 tiles"):
        tf_ipu.load(path, device="mk2")
    loaded = tf_ipu.load(path, device=strategy.device_model)
    out = loaded(np.ones(8, np.float32))
    out = out[0] if isinstance(out, (tuple, list)) else out
    np.testing.assert_array_equal(out, np.full(8, 2.0, np.float32))
