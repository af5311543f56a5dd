"""Executables as files: one versioned, checksummed file of plain data, a JSON document and raw arrays.

Layout (integers little-endian):

    offset   size  field
    0        8     magic b"\\x89IPUEXE\\n" (the non-ASCII first byte and the newline catch text-mode transfers)
    8        4     format version (u32)
    12       4     reserved, 0
    16       8     length of the JSON document in bytes (u64)
    24       8     data offset: where the array section starts, a multiple of 64 (u64)
    32       8     length of the array section in bytes (u64)
    40       24    reserved, 0
    64       J     the JSON document, UTF-8
    64+J     ..    zero padding up to the data offset
    D        N     the arrays: raw little-endian bytes, each starting at a multiple of 64 from D
    D+N      32    SHA-256 of every byte before it

The JSON document holds the structure: the device model's fields, the program tree (one object per step with its
``kind`` and scalar fields), vertex-group params, host tensors, the memory report, the executable's meta, the
producer's version and the caller's extra metadata. Every NumPy array in it is a reference ``{"$array": i}`` to
entry i of ``arrays``: ``{"dtype": "<i8", "shape": [...], "offset": ..., "nbytes": ...}`` (offset from D).
Other tags: ``{"$tuple": [...]}``, ``{"$scalar": i}`` (a NumPy scalar, stored as a 0-d array) and
``{"$float": "nan" | "inf" | "-inf"}``.

Loading reads JSON and raw numbers only: nothing in a file is executed or unpickled. A file is refused with an
``ExecutableFormatError`` naming the reason: wrong magic, a newer or unknown format version, truncation, a
checksum mismatch, an unknown step kind or codelet, a malformed document, an address outside device memory.
The loader checks the program's structure and every address column and copy row against the device's memory; it
trusts the codelets' own record contents (element counts, expression slots) as the compiler wrote them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import secrets
import struct
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import BinaryIO

import numpy as np

from . import dtypes
from .device import DeviceModel
from .executable import Executable, HostTensor, MemoryReport, ResidentTensor
from .program import (CODELETS, FED, ComputeSet, Copy, Execute, If, Repeat, Sequence, StreamIn, StreamOut, Switch,
                      VertexGroup, While)

MAGIC = b"\x89IPUEXE\n"
FORMAT_VERSION = 3        # 2: infeed loops (fed streams, Repeat count FED), resident tensors, strided copy rows
                          # 3: broadcast-mode expression inputs (the expr param "in_bcast")
READABLE_VERSIONS = (1, 2, 3)
HEADER = struct.Struct("<8sIIQQQ24x")         # magic, version, reserved, json length, data offset, data length
ALIGN = 64
DIGEST = 32                                   # SHA-256 trailer
SUFFIX = ".ipuexe"

# dtypes an array may have in a file (never "O": object arrays would need pickle)
ARRAY_DTYPES = frozenset(np.dtype(t).newbyteorder("<").str for t in
                         (np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64,
                          np.uint64, np.float16, np.float32, np.float64))

# program nodes by the "kind" they have in the document
STEPS = {"sequence": Sequence, "execute": Execute, "copy": Copy, "repeat": Repeat, "if": If, "while": While,
         "switch": Switch, "stream_in": StreamIn, "stream_out": StreamOut}
NODES = {**STEPS, "compute_set": ComputeSet, "vertex_group": VertexGroup}
KIND = {cls: kind for kind, cls in NODES.items()}


class ExecutableFormatError(ValueError):
    """A file that is not a readable tf-ipu executable; the message says why."""


@dataclass
class FileInfo:
    """What a file says about itself besides the executable."""
    format_version: int
    producer: str
    extra: dict = field(default_factory=dict)
    file_bytes: int = 0
    sha256: str = ""


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


# --- writing -----------------------------------------------------------------------------------------------
class _Encoder:
    """Turns an executable into a JSON-able document, collecting its arrays."""

    def __init__(self):
        self.arrays: list[np.ndarray] = []
        self.descs: list[dict] = []
        self.size = 0

    def array(self, a, where: str) -> dict:
        a = np.asarray(a)
        dt = a.dtype.newbyteorder("<") if a.dtype.byteorder in "=<>" else a.dtype
        if dt.str not in ARRAY_DTYPES:
            raise TypeError(f"{where}: arrays of dtype {a.dtype} cannot be stored in an executable file")
        data = np.ascontiguousarray(a, dtype=dt)
        offset = _align(self.size)
        self.arrays.append(data)
        self.descs.append({"dtype": dt.str, "shape": list(data.shape), "offset": offset, "nbytes": data.nbytes})
        self.size = offset + data.nbytes
        return {"$array": len(self.descs) - 1}

    def value(self, v, where: str):
        """Plain values (params, meta, extra): JSON scalars, lists, tuples, str-keyed dicts, arrays."""
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, int):
            return int(v)
        if isinstance(v, float):
            return float(v) if math.isfinite(v) else {"$float": repr(float(v))}
        if isinstance(v, np.ndarray):
            return self.array(v, where)
        if isinstance(v, np.generic):
            return {"$scalar": self.array(np.asarray(v), where)["$array"]}
        if isinstance(v, tuple):
            return {"$tuple": [self.value(x, f"{where}[{i}]") for i, x in enumerate(v)]}
        if isinstance(v, list):
            return [self.value(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if isinstance(v, dict):
            out = {}
            for k, x in v.items():
                if not isinstance(k, str) or k.startswith("$"):
                    raise TypeError(f"{where}: key {k!r} cannot be stored (keys are strings not starting with '$')")
                out[k] = self.value(x, f"{where}[{k!r}]")
            return out
        raise TypeError(f"{where}: a {type(v).__name__} cannot be stored in an executable file (plain data only)")

    def node(self, node, where: str) -> dict:
        """A program node (step, compute set, vertex group): its kind and every field, by the field's type."""
        kind = KIND.get(type(node))
        if kind is None:
            raise TypeError(f"{where}: {type(node).__name__} is not a program step that can be stored")
        if kind == "vertex_group" and node.codelet not in CODELETS:
            raise TypeError(f"{where}: unknown codelet {node.codelet!r}")
        out = {"kind": kind}
        for f in fields(node):
            out[f.name] = self.field(f.type, getattr(node, f.name), f"{where}.{f.name}")
        return out

    def field(self, ann: str, v, where: str):
        if ann.endswith(" | None"):
            return None if v is None else self.field(ann[:-len(" | None")], v, where)
        if ann == "np.ndarray":
            return self.array(v, where)
        if ann in ("int", "str", "bool"):
            return int(v) if ann == "int" else str(v) if ann == "str" else bool(v)
        if ann == "tuple[int, ...]":
            return [int(x) for x in v]
        if ann == "dict[str, Any]":
            return self.value(dict(v), where)
        if ann in ("Sequence", "ComputeSet"):
            return self.node(v, where)
        if ann in ("list", "list[VertexGroup]", "list[Sequence]"):
            return [self.node(x, f"{where}[{i}]") for i, x in enumerate(v)]
        raise TypeError(f"{where}: no file encoding for a field of type {ann!r}")  # a new field type: add it here


def _document(exe: Executable, enc: _Encoder, producer: str, extra_meta: dict | None) -> dict:
    mem = exe.memory
    return {
        "format": "tf-ipu executable",
        "format_version": FORMAT_VERSION,
        "producer": producer,
        "device": dataclasses.asdict(exe.device),
        "inputs": [_host_tensor(t) for t in exe.inputs],
        "outputs": [_host_tensor(t) for t in exe.outputs],
        "resident": [{**_host_tensor(t), "param": int(t.param), "rows": enc.array(t.rows, f"resident[{i}].rows")}
                     for i, t in enumerate(exe.resident)],
        "output_tuple": bool(exe.output_tuple),
        "constants": {"rows": enc.array(exe.constant_rows, "constant_rows"),
                      "data": enc.array(exe.constant_data, "constant_data")},
        "memory": {"always_live": enc.array(mem.always_live, "memory.always_live"),
                   "peak": enc.array(mem.peak, "memory.peak"),
                   "by_category": {k: enc.array(v, f"memory.by_category[{k!r}]") for k, v in mem.by_category.items()},
                   "tile_memory": int(mem.tile_memory)},
        "program": enc.node(exe.program, "program"),
        "meta": enc.value(dict(exe.meta), "meta"),
        "extra": enc.value(dict(extra_meta or {}), "extra_meta"),
    }


def _host_tensor(t) -> dict:
    return {"name": t.name, "dtype": t.dtype, "dims": [int(d) for d in t.dims], "feed": bool(getattr(t, "feed", False))}


def save_executable(exe: Executable, path_or_file: str | os.PathLike | BinaryIO, extra_meta: dict | None = None,
                    *, producer: str = "") -> None:
    """Write ``exe`` as one file. A path is written atomically (a temporary file in the same directory, then a
    rename), so a reader sees the old file or the whole new one. ``producer`` names the writer (e.g.
    "tf-ipu 0.1.0"); ``extra_meta`` is plain data (JSON values, tuples, NumPy arrays) kept with the file."""
    enc = _Encoder()
    doc = _document(exe, enc, producer, extra_meta)
    doc["arrays"] = enc.descs
    text = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8")
    data_offset = _align(HEADER.size + len(text))
    header = HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(text), data_offset, enc.size)
    if isinstance(path_or_file, (str, os.PathLike)):
        path = Path(path_or_file)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)  # umask applies
        try:
            with os.fdopen(fd, "wb") as f:
                _write(f, header, text, data_offset, enc)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    else:
        _write(path_or_file, header, text, data_offset, enc)


def _write(f: BinaryIO, header: bytes, text: bytes, data_offset: int, enc: _Encoder) -> None:
    sha = hashlib.sha256()

    def put(chunk) -> None:
        sha.update(chunk)
        f.write(chunk)

    put(header)
    put(text)
    put(bytes(data_offset - HEADER.size - len(text)))
    pos = 0
    for a, desc in zip(enc.arrays, enc.descs):
        put(bytes(desc["offset"] - pos))
        put(memoryview(a.reshape(-1).view(np.uint8)))
        pos = desc["offset"] + desc["nbytes"]
    f.write(sha.digest())


# --- reading -----------------------------------------------------------------------------------------------
def _fail(reason: str, source: str) -> ExecutableFormatError:
    return ExecutableFormatError(f"{source}: not a readable tf-ipu executable: {reason}")


def _read_bytes(path_or_file) -> tuple[bytearray, str]:
    if isinstance(path_or_file, (str, os.PathLike)):
        with open(path_or_file, "rb") as f:
            return bytearray(f.read()), os.fspath(path_or_file)
    if isinstance(path_or_file, (bytes, bytearray, memoryview)):
        return bytearray(path_or_file), "<bytes>"
    return bytearray(path_or_file.read()), getattr(path_or_file, "name", "<file>")


def _check_envelope(raw: bytearray, source: str) -> tuple[int, int, int, int]:
    """Magic, version, lengths and checksum; returns (version, json length, data offset, data length)."""
    if not raw:
        raise _fail("empty file (0 bytes)", source)
    if raw[:len(MAGIC)] != MAGIC[:len(raw)]:
        raise _fail(f"wrong magic bytes {bytes(raw[:8])!r} (expected {MAGIC!r})", source)
    if len(raw) < HEADER.size:
        raise _fail(f"truncated: {len(raw)} bytes, shorter than the {HEADER.size}-byte header", source)
    _, version, _, json_len, data_offset, data_len = HEADER.unpack_from(raw)
    if version > FORMAT_VERSION:
        raise _fail(f"format version {version} is newer than this tf-ipu reads (up to {FORMAT_VERSION}): "
                    f"upgrade tf-ipu, or export the executable again with this version", source)
    if version not in READABLE_VERSIONS:
        raise _fail(f"unknown format version {version} (this tf-ipu reads versions {READABLE_VERSIONS})", source)
    if data_offset < HEADER.size + json_len or data_offset % ALIGN:
        raise _fail(f"inconsistent header (JSON length {json_len}, data offset {data_offset})", source)
    expected = data_offset + data_len + DIGEST
    if len(raw) < expected:
        raise _fail(f"truncated: {len(raw)} bytes, the header says {expected}", source)
    if len(raw) > expected:
        raise _fail(f"{len(raw) - expected} unexpected bytes after the end of the executable", source)
    body = memoryview(raw)[:expected - DIGEST]
    if hashlib.sha256(body).digest() != bytes(raw[expected - DIGEST:]):
        raise _fail("checksum mismatch: the file is corrupt (changed after it was written)", source)
    return version, json_len, data_offset, data_len


class _Decoder:
    """Builds an executable back from a document and the file's array section, checking every step."""

    def __init__(self, raw: bytearray, descs, data_offset: int, data_len: int):
        self.raw, self.data_offset, self.data_len = raw, data_offset, data_len
        self.descs = descs if isinstance(descs, list) else self.bad("arrays", "must be a list")
        self.cache: dict[int, np.ndarray] = {}

    @staticmethod
    def bad(where: str, what: str):
        raise ExecutableFormatError(f"{where}: {what}")

    def array(self, ref, where: str) -> np.ndarray:
        if not (isinstance(ref, dict) and set(ref) == {"$array"} and type(ref["$array"]) is int):
            self.bad(where, f"expected an array reference, found {_short(ref)}")
        return self.array_at(ref["$array"], where)

    def array_at(self, i: int, where: str) -> np.ndarray:
        if not 0 <= i < len(self.descs):
            self.bad(where, f"array reference {i} out of range (the file has {len(self.descs)} arrays)")
        if i in self.cache:
            return self.cache[i]
        d = self.descs[i]
        dtype, shape, offset, nbytes = d["dtype"], d["shape"], d["offset"], d["nbytes"]
        if dtype not in ARRAY_DTYPES:
            self.bad(f"arrays[{i}]", f"dtype {dtype!r} is not allowed in an executable file")
        if not (isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape)):
            self.bad(f"arrays[{i}]", f"bad shape {shape!r}")
        dt = np.dtype(dtype)
        if type(offset) is not int or type(nbytes) is not int or offset < 0 or \
                nbytes != math.prod(shape) * dt.itemsize or offset + nbytes > self.data_len:
            self.bad(f"arrays[{i}]", f"bad extent (offset {offset!r}, {nbytes!r} bytes of {dtype} {shape}) in a "
                                     f"{self.data_len}-byte array section")
        a = np.frombuffer(self.raw, dtype=dt, count=math.prod(shape), offset=self.data_offset + offset)
        a = a.reshape(shape)
        if not dt.isnative or not a.flags.aligned:
            a = a.astype(dt.newbyteorder("="))
        self.cache[i] = a
        return a

    def value(self, v, where: str):
        if v is None or type(v) in (bool, int, float, str):
            return v
        if isinstance(v, list):
            return [self.value(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if not isinstance(v, dict):
            self.bad(where, f"unexpected value {_short(v)}")
        tags = [k for k in v if k.startswith("$")]
        if not tags:
            return {k: self.value(x, f"{where}[{k!r}]") for k, x in v.items()}
        if len(v) != 1:
            self.bad(where, f"a tagged value has other keys: {sorted(v)}")
        tag, x = tags[0], v[tags[0]]
        if tag == "$array":
            return self.array(v, where)
        if tag == "$scalar" and type(x) is int:
            a = self.array_at(x, where)
            return a[()] if a.ndim == 0 else self.bad(where, "a scalar must be a 0-d array")
        if tag == "$tuple" and isinstance(x, list):
            return tuple(self.value(y, f"{where}[{i}]") for i, y in enumerate(x))
        if tag == "$float" and x in ("nan", "inf", "-inf"):
            return float(x)
        self.bad(where, f"unknown or malformed tag {tag!r}")

    def node(self, d, kinds, where: str):
        if not (isinstance(d, dict) and isinstance(d.get("kind"), str)):
            self.bad(where, f"expected a program node with a 'kind', found {_short(d)}")
        kind = d["kind"]
        if kind not in NODES:
            self.bad(where, f"unknown program step kind {kind!r} (this tf-ipu knows {sorted(STEPS)})")
        if kind not in kinds:
            self.bad(where, f"a {kind!r} node where {' or '.join(map(repr, kinds))} belongs")
        cls = NODES[kind]
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known - {"kind"}
        if unknown:
            self.bad(where, f"unknown fields {sorted(unknown)} of a {kind!r} node")
        args = {}
        for f in fields(cls):
            if f.name in d:
                args[f.name] = self.field(f.type, d[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                self.bad(where, f"a {kind!r} node without its field {f.name!r}")
        return cls(**args)

    def field(self, ann: str, v, where: str):
        if ann.endswith(" | None"):
            return None if v is None else self.field(ann[:-len(" | None")], v, where)
        if ann == "np.ndarray":
            return self.array(v, where)
        if ann == "int":
            return v if type(v) is int else self.bad(where, f"expected an integer, found {_short(v)}")
        if ann == "str":
            return v if type(v) is str else self.bad(where, f"expected a string, found {_short(v)}")
        if ann == "bool":
            return v if type(v) is bool else self.bad(where, f"expected true or false, found {_short(v)}")
        if ann == "tuple[int, ...]":
            if not (isinstance(v, list) and all(type(x) is int for x in v)):
                self.bad(where, f"expected a list of integers, found {_short(v)}")
            return tuple(v)
        if ann == "dict[str, Any]":
            out = self.value(v, where)
            return out if isinstance(out, dict) else self.bad(where, "expected an object")
        if not isinstance(v, (list, dict)):
            self.bad(where, f"unexpected value {_short(v)}")
        if ann == "Sequence":
            return self.node(v, ("sequence",), where)
        if ann == "ComputeSet":
            return self.node(v, ("compute_set",), where)
        if ann in ("list", "list[VertexGroup]", "list[Sequence]") and isinstance(v, list):
            kinds = {"list": tuple(STEPS), "list[VertexGroup]": ("vertex_group",), "list[Sequence]": ("sequence",)}
            return [self.node(x, kinds[ann], f"{where}[{i}]") for i, x in enumerate(v)]
        self.bad(where, f"unexpected value {_short(v)}")


def _short(v) -> str:
    text = json.dumps(v) if not isinstance(v, (bytes, bytearray)) else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _host_tensors(items, where: str) -> list[HostTensor]:
    if not isinstance(items, list):
        raise ExecutableFormatError(f"{where}: must be a list")
    out = []
    for i, t in enumerate(items):
        name, dtype, dims, feed = t["name"], t["dtype"], t["dims"], t.get("feed", False)
        if type(name) is not str or dtype not in dtypes.NUMPY or type(feed) is not bool or \
                not (isinstance(dims, list) and all(type(n) is int and n >= 0 for n in dims)):
            raise ExecutableFormatError(f"{where}[{i}]: bad host tensor {_short(t)}")
        out.append(HostTensor(name, dtype, tuple(dims), feed))
    return out


def _resident(items, dec) -> list[ResidentTensor]:
    tensors = _host_tensors(items, "resident")
    out = []
    for i, (t, d) in enumerate(zip(tensors, items)):
        if t.feed or type(d.get("param")) is not int or d["param"] < 0:
            raise ExecutableFormatError(f"resident[{i}]: bad resident tensor {_short(d)}")
        out.append(ResidentTensor(t.name, t.dtype, t.dims, d["param"], dec.array(d["rows"], f"resident[{i}].rows")))
    return out


def _device(d) -> DeviceModel:
    if not isinstance(d, dict):
        raise ExecutableFormatError("device: must be an object")
    kinds = {f.name: f.type for f in fields(DeviceModel)}
    unknown = set(d) - set(kinds)
    if unknown:
        raise ExecutableFormatError(f"device: unknown fields {sorted(unknown)}")
    args = {}
    for name, value in d.items():
        ann = kinds[name]
        ok = (type(value) is str) if ann == "str" else (type(value) is int) if ann == "int" else \
            type(value) in (int, float) and math.isfinite(value)
        if not ok:
            raise ExecutableFormatError(f"device.{name}: expected {ann}, found {_short(value)}")
        args[name] = float(value) if ann == "float" else value
    try:
        device = DeviceModel(**args)
    except TypeError as e:
        raise ExecutableFormatError(f"device: {e}") from None
    if device.num_tiles < 1 or device.tile_memory < 1:
        raise ExecutableFormatError(f"device: {device.num_tiles} tiles x {device.tile_memory} bytes")
    return device


def read_executable(path_or_file) -> tuple[Executable, FileInfo]:
    """Read a file written by ``save_executable``: the executable and what the file says about itself."""
    raw, source = _read_bytes(path_or_file)
    version, json_len, data_offset, data_len = _check_envelope(raw, source)
    try:
        doc = json.loads(raw[HEADER.size:HEADER.size + json_len].decode("utf-8"))
        if not isinstance(doc, dict):
            raise ExecutableFormatError("the document is not a JSON object")
        if doc.get("format_version") != version:
            raise ExecutableFormatError(f"the document's format version {doc.get('format_version')!r} differs "
                                        f"from the header's {version}")
        dec = _Decoder(raw, doc["arrays"], data_offset, data_len)
        device = _device(doc["device"])
        mem = doc["memory"]
        memory = MemoryReport(always_live=dec.array(mem["always_live"], "memory.always_live"),
                              peak=dec.array(mem["peak"], "memory.peak"),
                              by_category={k: dec.array(v, f"memory.by_category[{k!r}]")
                                           for k, v in mem["by_category"].items()},
                              tile_memory=dec.field("int", mem["tile_memory"], "memory.tile_memory"))
        output_tuple = doc["output_tuple"]
        if type(output_tuple) is not bool:
            raise ExecutableFormatError("output_tuple: expected true or false")
        exe = Executable(device=device, program=dec.node(doc["program"], ("sequence",), "program"),
                         inputs=_host_tensors(doc["inputs"], "inputs"),
                         outputs=_host_tensors(doc["outputs"], "outputs"),
                         constant_rows=dec.array(doc["constants"]["rows"], "constant_rows"),
                         constant_data=dec.array(doc["constants"]["data"], "constant_data"),
                         memory=memory, output_tuple=output_tuple, meta=dec.value(doc["meta"], "meta"),
                         resident=_resident(doc.get("resident", []), dec))
        extra = dec.value(doc.get("extra", {}), "extra")
        producer = doc.get("producer", "")
        if not isinstance(exe.meta, dict) or not isinstance(extra, dict) or type(producer) is not str:
            raise ExecutableFormatError("meta, extra and producer must be an object, an object and a string")
        check_executable(exe)
    except ExecutableFormatError as e:
        raise _fail(str(e), source) from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RecursionError, UnicodeDecodeError) as e:
        raise _fail(f"malformed document ({type(e).__name__}: {e})", source) from None
    digest = bytes(raw[-DIGEST:]).hex()
    return exe, FileInfo(version, producer, extra, len(raw), digest)


def load_executable(path_or_file) -> Executable:
    """The executable in a file written by ``save_executable`` (see ``read_executable`` for the rest)."""
    return read_executable(path_or_file)[0]


def dumps(exe: Executable, extra_meta: dict | None = None, *, producer: str = "") -> bytes:
    buf = io.BytesIO()
    save_executable(exe, buf, extra_meta, producer=producer)
    return buf.getvalue()


# --- checking a loaded program against its device ------------------------------------------------------
def check_executable(exe: Executable) -> None:
    """Refuse a program whose steps the engine cannot run safely: unknown codelets, missing params, arrays of
    the wrong shape or type, addresses and copies outside device memory, streams that do not fit their tensors."""
    dev = exe.device
    size = dev.num_tiles * dev.tile_memory
    _check_rows(exe.constant_rows, size, len(exe.constant_data), "constant_rows",
                "a constant lies outside device memory or the constant data")
    for name in ("always_live", "peak"):
        if getattr(exe.memory, name).shape != (dev.num_tiles,):
            raise ExecutableFormatError(f"memory.{name}: expected one entry per tile ({dev.num_tiles})")
    for i, t in enumerate(exe.resident):
        _check_rows(t.rows, size, t.nbytes, f"resident[{i}]", "a resident tensor row reaches outside device memory "
                                                              "or the tensor")
    _check_seq(exe.program, exe, size, "program")


def _check_rows(rows: np.ndarray, first_limit: int, second_limit: int, where: str, what: str) -> None:
    """Rows [first address, second address, nbytes] (copies, streams, constants) within their two memories."""
    if rows.dtype != np.int64 or rows.ndim != 2 or rows.shape[1] != 3:
        raise ExecutableFormatError(f"{where}: expected int64 rows of 3 columns, found {rows.dtype} {rows.shape}")
    if len(rows) and ((rows < 0).any() or (rows[:, 0] + rows[:, 2] > first_limit).any() or
                      (rows[:, 1] + rows[:, 2] > second_limit).any()):
        raise ExecutableFormatError(f"{where}: {what}")


def _check_copy_rows(rows: np.ndarray, size: int, where: str) -> None:
    """Copy rows [dst, src, nbytes, count, dst_stride, src_stride]: every run inside device memory, and the runs
    of a row never overlapping at the destination (the engine runs them in parallel)."""
    if rows.dtype != np.int64 or rows.ndim != 2 or rows.shape[1] != 6:
        raise ExecutableFormatError(f"{where}: expected int64 rows of 6 columns (a copy list), found {rows.dtype} {rows.shape}")
    if not len(rows):
        return
    dst, src, nbytes, count, dst_stride, src_stride = rows.T
    if (nbytes < 0).any() or (count < 1).any():
        raise ExecutableFormatError(f"{where}: a copy row with a negative length or a count below 1")
    if ((count > 1) & (np.abs(dst_stride) < nbytes)).any():
        raise ExecutableFormatError(f"{where}: a strided copy row whose runs overlap at the destination")
    for start, stride in ((dst, dst_stride), (src, src_stride)):
        span = (count - 1) * stride
        if (start + np.minimum(span, 0) < 0).any() or (start + np.maximum(span, 0) + nbytes > size).any():
            raise ExecutableFormatError(f"{where}: a copy reaches outside device memory ({size} bytes)")


def _check_seq(seq: Sequence, exe: Executable, size: int, where: str, in_loop: bool = False) -> None:
    for i, step in enumerate(seq.steps):
        at = f"{where}.steps[{i}]"
        kind = type(step)
        if kind is Execute:
            _check_execute(step, exe, size, at)
        elif kind is Copy:
            _check_copy_rows(step.rows, size, f"{at} (copy '{step.name}')")
        elif kind in (StreamIn, StreamOut):
            tensors = exe.inputs if kind is StreamIn else exe.outputs
            if not 0 <= step.index < len(tensors) or step.nbytes != tensors[step.index].nbytes:
                raise ExecutableFormatError(f"{at}: a stream of {step.nbytes} bytes for host tensor {step.index}, "
                                            f"which the executable does not have at that size")
            if step.feed != tensors[step.index].feed or (step.feed and not in_loop):
                raise ExecutableFormatError(f"{at}: a {'fed' if step.feed else 'plain'} stream for a "
                                            f"{'fed' if tensors[step.index].feed else 'plain'} host tensor"
                                            + ("" if in_loop else " outside an infeed loop"))
            _check_rows(step.rows, size, step.nbytes, at, "a stream row reaches outside device memory or its host "
                                                          "tensor")
        elif kind is Repeat:
            if step.count == FED and (not exe.loop or in_loop):
                raise ExecutableFormatError(f"{at}: an infeed loop " + ("inside another" if in_loop else
                                            "in an executable whose meta does not say it has one"))
            if step.count < 0 and step.count != FED:
                raise ExecutableFormatError(f"{at}: negative repeat count {step.count}")
            _check_seq(step.body, exe, size, f"{at}.body", in_loop or step.count == FED)
        elif kind is If:
            _check_addr(step.cond_addr, 1, size, at)
            _check_seq(step.then_body, exe, size, f"{at}.then_body", in_loop)
            _check_seq(step.else_body, exe, size, f"{at}.else_body", in_loop)
        elif kind is While:
            _check_addr(step.cond_addr, 1, size, at)
            _check_seq(step.cond, exe, size, f"{at}.cond", in_loop)
            _check_seq(step.body, exe, size, f"{at}.body", in_loop)
        elif kind is Switch:
            _check_addr(step.index_addr, 4, size, at)
            if not step.branches:
                raise ExecutableFormatError(f"{at}: a switch without branches")
            for k, branch in enumerate(step.branches):
                _check_seq(branch, exe, size, f"{at}.branches[{k}]", in_loop)
        elif kind is Sequence:
            _check_seq(step, exe, size, at, in_loop)


def _check_addr(addr: int, nbytes: int, size: int, where: str) -> None:
    if not 0 <= addr <= size - nbytes:
        raise ExecutableFormatError(f"{where}: address {addr} outside device memory ({size} bytes)")


def _check_execute(step: Execute, exe: Executable, size: int, where: str) -> None:
    tiles = exe.device.num_tiles
    tc = step.tile_cycles
    if tc is None or tc.dtype != np.int64 or tc.shape != (tiles,):
        raise ExecutableFormatError(f"{where}: tile_cycles must be int64, one per tile ({tiles})")
    for k, g in enumerate(step.cs.groups):
        at = f"{where}.cs.groups[{k}] ('{step.cs.name}')"
        if g.codelet not in CODELETS:
            raise ExecutableFormatError(f"{at}: unknown codelet {g.codelet!r} (this tf-ipu runs {sorted(CODELETS)})")
        missing = [p for p in CODELETS[g.codelet] if p not in g.params]
        if missing:
            raise ExecutableFormatError(f"{at}: codelet {g.codelet!r} without its params {missing}")
        rec = g.records
        if rec.dtype != np.int64 or rec.ndim != 2:
            raise ExecutableFormatError(f"{at}: records must be a 2-D int64 array, found {rec.dtype} {rec.shape}")
        n = rec.shape[0]
        for name in ("tiles", "cycles"):
            a = getattr(g, name)
            if a.dtype.kind != "i" or a.shape != (n,):
                raise ExecutableFormatError(f"{at}: {name} must be integers, one per vertex ({n})")
        if n and ((g.tiles < 0).any() or (g.tiles >= tiles).any()):
            raise ExecutableFormatError(f"{at}: a vertex on a tile the device does not have ({tiles} tiles)")
        if any(not 0 <= c < rec.shape[1] for c in g.addr_cols):
            raise ExecutableFormatError(f"{at}: address columns {g.addr_cols} outside the records' {rec.shape[1]}")
        if n and g.addr_cols:
            addrs = rec[:, list(g.addr_cols)]
            if (addrs < 0).any() or (addrs > size).any():
                raise ExecutableFormatError(f"{at}: an address outside device memory ({size} bytes)")
        if g.codelet == "expr" and g.params.get("in_bcast") is not None:
            _check_broadcast_inputs(g, size, at)


def _check_broadcast_inputs(g: VertexGroup, size: int, where: str) -> None:
    """An expression's broadcast-mode inputs (param ``in_bcast``, rows (inner, col) per input, inner 0 for the
    others): each vertex reads M elements from its input address, with (q, M) in record columns col, col + 1."""
    bc, rec, in_dt = g.params["in_bcast"], g.records, g.params["in_dt"]
    nin = len(in_dt)
    if not isinstance(bc, np.ndarray) or bc.dtype != np.int64 or bc.shape != (nin, 2):
        raise ExecutableFormatError(f"{where}: in_bcast must be int64 rows (inner, column), one per input ({nin})")
    for i in np.flatnonzero(bc[:, 0]):
        inner, col = int(bc[i, 0]), int(bc[i, 1])
        if inner < 0 or not 2 + nin <= col < rec.shape[1] - 1 or g.params["in_scalar"][i] or (2 + i) not in g.addr_cols:
            raise ExecutableFormatError(f"{where}: broadcast input {i} with inner {inner} and columns {col}, {col + 1}")
        q, m = rec[:, col], rec[:, col + 1]
        isz = {c: dtypes.itemsize(d) for d, c in dtypes.CODES.items()}.get(int(in_dt[i]), size + 1)
        if len(rec) and ((q < 0).any() or (m < 1).any() or (rec[:, 2 + i] + m * isz > size).any()):
            raise ExecutableFormatError(f"{where}: broadcast input {i}: a vertex's vector lies outside device memory "
                                        f"({size} bytes) or has no elements")
