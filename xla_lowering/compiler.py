"""HLO module -> executable: passes, lowering of every instruction, memory plan, addresses, cycle estimates."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from kernels.executable import Executable, HostTensor, ResidentTensor
from kernels.program import FED, StreamIn, StreamOut

from .errors import UnsupportedOpError
from .hlo.ir import Module
from .lower.control import lower_computation  # the per-computation lowering loop (shared with control flow)
from .lower.writeback import blocks, same_storage, separable, write_early
from .mapping.memory import estimate_cycles, plan_memory, resolve
from .mapping.exchanges import merge_exchanges
from .program import ProgramBuilder

PROGRESS_DELAY_S = 2.0       # a compile that takes longer than this shows a progress bar


@dataclass(frozen=True)
class CompileOptions:
    """How to compile a module besides the device.

    ``loop``: make an infeed loop: the program runs the module once per iteration, as many iterations as each run
    asks for (Keras's steps_per_execution). Parameters in ``feeds`` are infed (one element per iteration);
    parameters aliased to outputs (variables) carry their updated value from one iteration to the next; the
    other parameters are streamed in once per run. Outputs are streamed out once, after the last iteration
    (``outfeed=False``: a training step's logs), or once per iteration (``outfeed=True``: predictions).
    ``resident``: parameters (with ``loop``) that stay in device memory between runs instead of being streamed:
    variables the host reads and writes only when it needs to (``Executable.resident``).
    """
    run_passes: bool = True
    progress: bool = True
    loop: bool = False
    feeds: frozenset = frozenset()
    resident: frozenset = frozenset()
    outfeed: bool = False

    def key(self) -> tuple:
        """What of these options changes the executable (for caches)."""
        if not self.loop:
            return ()
        return ("loop", tuple(sorted(self.feeds)), tuple(sorted(self.resident)), self.outfeed)


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
    loop = options.loop
    resident = options.resident if loop else frozenset()
    carried = {a.parameter_number: a.output_index[0] if a.output_index else 0 for a in module.aliases} if loop else {}
    args, inputs, resident_tensors, fed_streams = [], [], [], []
    for p in entry.parameters:
        if p.shape.is_tuple:
            raise UnsupportedOpError(p, "tuple-shaped parameters of the entry computation")
        number = p.attrs["number"]
        t = b.linear(p.shape, p.name, "variable" if number in resident else "input", p.op_name)
        args.append(t)
        if number in resident:
            resident_tensors.append((t, ResidentTensor(p.name, p.shape.dtype, tuple(p.shape.dims), number, None)))
            continue
        feed = loop and number in options.feeds
        stream = StreamIn(len(inputs), _rows(t), p.shape.nbytes, feed=feed)
        (fed_streams.append if feed else b.add)(stream)
        inputs.append(HostTensor(p.name, p.shape.dtype, tuple(p.shape.dims), feed))

    def lower(dests=None):
        return lower_computation(b, entry, args, dests=dests,
                                 wrap=lambda items: _progress(items, f"Compiling {module.name} for the IPU",
                                                              options.progress))

    body = [i for i in entry.instructions if i.opcode != "parameter"]
    outputs, output_map = [], []
    if not loop:
        for k, t in enumerate(_flatten(lower())):
            b.add(StreamOut(k, _rows(t), t.shape.nbytes))
            outputs.append(HostTensor(f"output_{k}", t.dtype, t.shape.dims))
        root_value = None
    else:
        after = []                                   # streams after the loop: (output index, tensor)
        with b.repeat(FED) as loop_body:
            for stream in fed_streams:
                b.add(stream)
            # a variable's new value may be computed straight into its storage (a conditional's output: see
            # xla_lowering/lower/control.py); then there is nothing to update
            root_value = lower(dests={k: args[param] for param, k in carried.items()})
            flat = list(_flatten(root_value))
            updates = {param: flat[k] for param, k in carried.items() if not same_storage(flat[k], args[param])}
            overwritten = blocks([args[param] for param in updates])
            early = _early_updates(b, loop_body, updates, args, [t for k, t in enumerate(flat) if k not in carried.values()])
            if options.outfeed:
                for k, t in enumerate(flat):
                    if k not in carried.values():
                        b.add(StreamOut(len(outputs), _rows(t), t.shape.nbytes, feed=True))
                        outputs.append(HostTensor(f"output_{k}", t.dtype, t.shape.dims, True))
                        output_map.append(k)
            else:
                for k, t in enumerate(flat):
                    if k not in carried.values():
                        after.append((k, _snapshot(b, t, overwritten, f"output_{k}")))
            # each updated variable into its parameter's storage, for the next iteration (and the host);
            # updates that read a variable's old storage read a snapshot of it
            sources = {param: _snapshot(b, t, overwritten, f"update_{param}") for param, t in updates.items()
                       if param not in early}
            for param, t in sources.items():
                dst = args[param]
                b.copy(f"update/{dst.name}", dst.element_syms(), t.element_syms(), dst.itemsize, dst.origin)
        for param, k in carried.items():
            if param not in resident:
                after.append((k, args[param]))
        for k, t in sorted(after, key=lambda kt: kt[0]):
            b.add(StreamOut(len(outputs), _rows(t), t.shape.nbytes))
            outputs.append(HostTensor(f"output_{k}", t.dtype, t.shape.dims))
            output_map.append(k)
    t_lower = time.perf_counter()

    merged = merge_exchanges(b.root)
    base, memory, steps = plan_memory(b)
    const_rows, const_data = _constant_image(b)
    resolve(b, base, steps)
    const_rows[:, 0] = base[const_rows[:, 0] >> 32] + (const_rows[:, 0] & 0xFFFFFFFF)
    resident_specs = []
    for t, spec in resident_tensors:
        rows = _rows(t)
        rows[:, 0] = base[rows[:, 0] >> 32] + (rows[:, 0] & 0xFFFFFFFF)
        spec.rows = rows
        resident_specs.append(spec)
    estimate_cycles(device, steps)
    t_end = time.perf_counter()
    meta = {"module": module.name, "lower_seconds": t_lower - t0, "plan_seconds": t_end - t_lower,
            "compile_seconds": t_end - t0, "instructions": len(body), "steps": len(steps),
            "merged_exchanges": merged,
            "aliases": [(a.output_index, a.parameter_number) for a in module.aliases]}
    if loop:
        meta.update(loop=True, outputs=output_map)
    return Executable(device=device, program=b.root, inputs=inputs, outputs=outputs, constant_rows=const_rows,
                      constant_data=const_data, memory=memory, output_tuple=entry.root.shape.is_tuple,
                      meta=meta, resident=resident_specs)


def _rows(t) -> np.ndarray:
    """Stream rows [symbolic dev_addr, host offset, nbytes] of a tensor's regions."""
    isz = t.itemsize
    return np.stack([t.syms, t.starts * isz, t.counts * isz], 1).astype(np.int64)


def _early_updates(b: ProgramBuilder, body, updates: dict, args: list, outputs: list) -> set:
    """Write updated variables into their parameters' storage as early as possible (``writeback.write_early``):
    right after the last step of the body that touches the parameter or the new value, so that the new values (an
    optimizer's updated weights and slots) are not all live at once. Not for a parameter an output reads (outputs
    are read at the end of the step); returns the parameters so written."""
    params = list(updates)
    jobs = [(args[param], updates[param]) for param in params]
    picked = separable(jobs, keep=blocks(outputs))
    write_early(b, body, [jobs[k] for k in picked], "update/")
    return {params[k] for k in picked}


def _snapshot(b: ProgramBuilder, t, overwritten: set, name: str):
    """``t``, or a copy of it made now when it lives in any of the ``overwritten`` blocks (storage about to be
    overwritten)."""
    if not overwritten or not blocks([t]) & overwritten:
        return t
    out = b.like(t, t.shape, f"{name}/snapshot", "temporary", t.origin)
    b.copy(f"snapshot/{name}", out.element_syms(), t.element_syms(), t.itemsize, t.origin)
    return out


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
