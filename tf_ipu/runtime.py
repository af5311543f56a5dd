"""Running exported executables later, without TensorFlow or the compiler: ``tf_ipu.load(path)``.

This module imports only the simulator (kernels/), NumPy and tf_ipu.report, so that a process that never imports
TensorFlow can load a file written by ``tf_ipu.export`` (or any ``.ipuexe`` file, e.g. an executable-cache entry)
and run it on a fresh simulated IPU of its own.

A file from ``tf_ipu.export`` says how the function's arguments map to the program: arguments that XLA folded into
the program as compile-time constants are checked, not fed; the values of the variables and tensors the function
captured are stored in the file and fed by the loader (variables the function updates keep their new values in the
loaded object between calls, the file is not changed); outputs come back in the function's structure (tuples,
lists, str-keyed dicts; other nests as a flat tuple). Any other executable file takes and returns its program's
host tensors as they are.
"""
from __future__ import annotations

import os
from collections import Counter

import numpy as np

from kernels import dtypes
from kernels.device import DeviceModel
from kernels.engine import Engine
from kernels.executable import Executable, HostTensor
from kernels.program import Copy, Execute, If, Repeat, Sequence, StreamIn, StreamOut, Switch, While
from kernels.serialize import ExecutableFormatError, FileInfo, read_executable

from .report import Report


class LoadedExecutable:
    """An executable read from a file, bound to a fresh simulated IPU: ``loaded(*arrays)`` returns NumPy outputs."""

    def __init__(self, exe: Executable, info: FileInfo, seed: int = 0, source: str = ""):
        self.executable = exe
        self.info = info
        self.source = source
        self._engine = Engine(exe, seed=seed)          # its own device: not shared with any strategy
        self._report: Report | None = None
        export = info.extra.get("export")
        if export is not None:
            try:
                self.name = str(export["function"])
                self.inputs = [HostTensor(str(d["name"]), d["dtype"], tuple(int(n) for n in d["dims"]))
                               for d in export["inputs"]]
                self._params = [d["param"] for d in export["inputs"]]
                self._folded = {j: np.asarray(d["value"]) for j, d in enumerate(export["inputs"])
                                if d["param"] is None}
                self._bound = {int(p): np.array(v) for p, v in export["bound"]}
                self._structure = export["structure"]
                n_outputs = int(export["n_outputs"])
                if any(t.dtype not in dtypes.NUMPY for t in self.inputs):
                    raise ValueError("an input of an unknown dtype")
            except (KeyError, TypeError, ValueError) as e:
                raise ExecutableFormatError(f"{source}: malformed export description ({type(e).__name__}: {e})") \
                    from None
        else:
            self.name = str(exe.meta.get("module", "executable"))
            self.inputs = list(exe.inputs)
            self._params = list(range(len(exe.inputs)))
            self._folded, self._bound = {}, {}
            n_outputs = len(exe.outputs)
            self._structure = tuple(range(n_outputs)) if exe.output_tuple else 0
        self.outputs = list(exe.outputs[:n_outputs])
        names = export.get("output_names") if export is not None else None
        if isinstance(names, list) and len(names) == n_outputs and all(type(n) is str for n in names):
            self.outputs = [HostTensor(n, t.dtype, t.dims) for n, t in zip(names, self.outputs)]
        fed = [p for p in self._params if p is not None] + list(self._bound)
        if not all(type(p) is int for p in fed) or sorted(fed) != list(range(len(exe.inputs))):
            raise ExecutableFormatError(f"{source}: the export's inputs do not match the program's "
                                        f"{len(exe.inputs)} inputs")
        if not all(type(k) is int and 0 <= k < len(self.outputs) for k in _leaves(self._structure)):
            raise ExecutableFormatError(f"{source}: the export's output structure does not match the program's "
                                        f"{len(self.outputs)} outputs")

    @property
    def device(self) -> DeviceModel:
        return self.executable.device

    def __call__(self, *arrays):
        """Run on this object's simulated IPU; the outputs in the function's structure, as NumPy arrays."""
        return _pack(self._structure, self.run_flat(*arrays))

    def run_flat(self, *arrays) -> list[np.ndarray]:
        """Run; the outputs as a flat list, in the order of ``outputs``."""
        if len(arrays) != len(self.inputs):
            names = ", ".join(t.name for t in self.inputs)
            raise TypeError(f"'{self.name}' takes {len(self.inputs)} inputs ({names}), got {len(arrays)}")
        feed: list = [None] * len(self.executable.inputs)
        for j, (a, spec) in enumerate(zip(arrays, self.inputs)):
            a = np.asarray(a)
            want = np.dtype(dtypes.NUMPY[spec.dtype])
            if a.dtype != want and not np.can_cast(a.dtype, want, "same_kind"):
                raise TypeError(f"input {j} ('{spec.name}') must be {spec.dtype} ({want}), got {a.dtype}")
            if tuple(a.shape) != tuple(spec.dims):
                raise ValueError(f"input {j} ('{spec.name}') must have shape {tuple(spec.dims)}, got "
                                 f"{tuple(a.shape)}: an exported program runs for the shapes it was compiled for")
            if self._params[j] is None:
                if not np.array_equal(a.astype(want), self._folded[j]):
                    raise ValueError(f"input {j} ('{spec.name}') was folded into the program as a compile-time "
                                     f"constant when it was exported; it must be {self._folded[j].tolist()}")
            else:
                feed[self._params[j]] = a
        for p, value in self._bound.items():
            feed[p] = value
        outs, profile = self._engine.run(feed)
        self._report = Report.build(self.executable, profile, self.name)
        for out_index, param in self.executable.meta.get("aliases", []):
            if param in self._bound:                  # a captured variable the function updates
                self._bound[param] = outs[out_index[0] if out_index else 0].copy()
        return outs[:len(self.outputs)]

    def last_report(self) -> Report:
        if self._report is None:
            raise RuntimeError(f"'{self.name}' has not run yet")
        return self._report

    def describe(self) -> dict:
        """What ``tf-ipu info`` prints: device, signature, tiles, memory, program size and versions."""
        exe, info = self.executable, self.info
        dev = exe.device
        return {
            "file": self.source, "file_bytes": info.file_bytes, "sha256": info.sha256,
            "format_version": info.format_version, "producer": info.producer,
            "compiler_version": info.extra.get("compiler_version", ""), "function": self.name,
            "module": exe.meta.get("module", ""),
            "device": {"name": dev.name, "tiles": dev.num_tiles, "tile_memory": dev.tile_memory,
                       "clock_hz": dev.clock_hz},
            "inputs": [_tensor(t) for t in self.inputs],
            "outputs": [_tensor(t) for t in self.outputs],
            "bound_inputs": len(self._bound),
            "memory": exe.memory.summary() | {"tile_memory": exe.memory.tile_memory,
                                              "always_live_max": int(exe.memory.always_live.max(initial=0)),
                                              "constant_bytes": int(exe.constant_rows[:, 2].sum())},
            "program": program_size(exe.program),
        }


def _tensor(t: HostTensor) -> dict:
    return {"name": t.name, "dtype": t.dtype, "shape": list(t.dims)}


def _leaves(structure):
    if isinstance(structure, dict):
        structure = list(structure.values())
    if isinstance(structure, (list, tuple)):
        return [x for s in structure for x in _leaves(s)]
    return [] if structure is None else [structure]


def _pack(structure, outs):
    if structure is None:
        return None
    if isinstance(structure, int):
        return outs[structure]
    if isinstance(structure, dict):
        return {k: _pack(v, outs) for k, v in structure.items()}
    if isinstance(structure, list):
        return [_pack(v, outs) for v in structure]
    return tuple(_pack(v, outs) for v in structure)


def program_size(seq: Sequence) -> dict:
    """Steps of each kind, vertices, copy rows and exchange bytes of a program (loops and branches counted once)."""
    counts: Counter = Counter()

    def visit(s: Sequence) -> None:
        for step in s.steps:
            counts["steps"] += 1
            kind = type(step)
            if kind is Execute:
                counts["compute_sets"] += 1
                counts["vertices"] += sum(len(g.records) for g in step.cs.groups)
            elif kind is Copy:
                counts["copies"] += 1
                counts["copy_rows"] += len(step.rows)
                counts["exchange_bytes"] += step.exchange_bytes
            elif kind in (StreamIn, StreamOut):
                counts["host_streams"] += 1
            elif kind in (Repeat, If, While, Switch):
                counts["control_flow"] += 1
            for body in _bodies(step):
                visit(body)

    visit(seq)
    tiles = set()
    for step in _all_steps(seq):
        if type(step) is Execute:
            for g in step.cs.groups:
                tiles.update(np.unique(g.tiles).tolist())
    counts["tiles_with_vertices"] = len(tiles)
    keys = ("steps", "compute_sets", "vertices", "tiles_with_vertices", "copies", "copy_rows", "exchange_bytes",
            "host_streams", "control_flow")
    return {k: int(counts[k]) for k in keys}


def _bodies(step) -> list[Sequence]:
    kind = type(step)
    if kind is Repeat:
        return [step.body]
    if kind is If:
        return [step.then_body, step.else_body]
    if kind is While:
        return [step.cond, step.body]
    if kind is Switch:
        return list(step.branches)
    if kind is Sequence:
        return [step]
    return []


def _all_steps(seq: Sequence):
    for step in seq.steps:
        yield step
        for body in _bodies(step):
            yield from _all_steps(body)


def load(path: str | os.PathLike, seed: int = 0, device: str | DeviceModel | None = None) -> LoadedExecutable:
    """Load an executable file (from ``tf_ipu.export``, or an executable-cache entry) onto a fresh simulated IPU.

    ``device`` (a device name such as "mk2", or a DeviceModel): the IPU the caller means to run on; a file
    compiled for another device (or another tile count or tile memory) is refused.
    Raises ``ExecutableFormatError`` (a ValueError) naming the reason when the file is not a readable executable
    or not for that device.
    """
    exe, info = read_executable(path)
    if device is not None:
        from kernels.device import get_device
        want = get_device(device) if isinstance(device, str) else device
        have = exe.device
        if (have.name, have.num_tiles, have.tile_memory) != (want.name, want.num_tiles, want.tile_memory):
            raise ExecutableFormatError(
                f"{os.fspath(path)}: compiled for a {have.name} IPU with {have.num_tiles} tiles x "
                f"{have.tile_memory // 1024} KiB, not for the requested {want.name} with {want.num_tiles} tiles x "
                f"{want.tile_memory // 1024} KiB: compile it again for that device")
    return LoadedExecutable(exe, info, seed=seed, source=os.fspath(path))
