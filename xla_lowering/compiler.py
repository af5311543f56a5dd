"""HLO module -> executable: passes, lowering of every instruction, memory plan, addresses, cycle estimates."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from kernels.executable import Executable, HostTensor
from kernels.program import StreamIn, StreamOut

from .errors import UnsupportedOpError
from .hlo.ir import Module
from .lower.control import lower_computation  # the per-computation lowering loop (shared with control flow)
from .mapping.memory import estimate_cycles, plan_memory, resolve
from .program import ProgramBuilder

PROGRESS_DELAY_S = 2.0       # a compile that takes longer than this shows a progress bar


@dataclass(frozen=True)
class CompileOptions:
    run_passes: bool = True
    progress: bool = True


def _passes(module: Module) -> Module:
    try:
        from .passes import run_pipeline
    except ImportError:  # pragma: no cover - the pass pipeline is part of the package
        return module
    return run_pipeline(module)


def _flatten(value):
    if isinstance(value, tuple):
        for v in value:
            yield from _flatten(v)
    else:
        yield value


def _progress(items, desc: str, enabled: bool):
    if not enabled:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return items
    return tqdm(items, desc=desc, delay=PROGRESS_DELAY_S, leave=False, unit="op")


def compile_module(module: Module, device, options: CompileOptions | None = None) -> Executable:
    options = options or CompileOptions()
    t0 = time.perf_counter()
    if options.run_passes:
        module = _passes(module)
    b = ProgramBuilder(device)
    entry = module.entry
    args = []
    inputs = []
    for p in entry.parameters:
        if p.shape.is_tuple:
            raise UnsupportedOpError(p, "tuple-shaped parameters of the entry computation")
        t = b.linear(p.shape, p.name, "input", p.op_name)
        isz = t.itemsize
        b.add(StreamIn(len(inputs), np.stack([t.syms, t.starts * isz, t.counts * isz], 1).astype(np.int64),
                       p.shape.nbytes))
        inputs.append(HostTensor(p.name, p.shape.dtype, p.shape.dims))
        args.append(t)
    body = [i for i in entry.instructions if i.opcode != "parameter"]
    root_value = lower_computation(b, entry, args,
                                   wrap=lambda items: _progress(items, f"Compiling {module.name} for the IPU",
                                                                options.progress))
    outputs = []
    for k, t in enumerate(_flatten(root_value)):
        isz = t.itemsize
        rows = np.stack([t.syms, t.starts * isz, t.counts * isz], 1).astype(np.int64)
        b.add(StreamOut(k, rows, t.shape.nbytes))
        outputs.append(HostTensor(f"output_{k}", t.dtype, t.shape.dims))
    t_lower = time.perf_counter()

    base, memory, steps = plan_memory(b)
    const_rows, const_data = _constant_image(b)
    resolve(b, base, steps)
    const_rows[:, 0] = base[const_rows[:, 0] >> 32] + (const_rows[:, 0] & 0xFFFFFFFF)
    estimate_cycles(device, steps)
    t_end = time.perf_counter()
    meta = {"module": module.name, "lower_seconds": t_lower - t0, "plan_seconds": t_end - t_lower,
            "compile_seconds": t_end - t0, "instructions": len(body), "steps": len(steps),
            "aliases": [(a.output_index, a.parameter_number) for a in module.aliases]}
    return Executable(device=device, program=b.root, inputs=inputs, outputs=outputs, constant_rows=const_rows,
                      constant_data=const_data, memory=memory, output_tuple=isinstance(root_value, tuple),
                      meta=meta)


def _constant_image(b: ProgramBuilder):
    """Initial device contents of constant tensors: rows [symbolic addr, offset in data, nbytes] and the data."""
    rows, chunks, offset = [], [], 0
    for t, value in b.constant_inits:
        raw = value.view(np.uint8)
        isz = t.itemsize
        rows.append(np.stack([t.syms, offset + t.starts * isz, t.counts * isz], 1))
        chunks.append(raw)
        offset += len(raw)
    if not rows:
        return np.zeros((0, 3), np.int64), np.zeros(1, np.uint8)
    return np.concatenate(rows).astype(np.int64), np.concatenate(chunks)
