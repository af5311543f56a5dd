"""The ``tf-ipu`` command: inspect and run executable files (from ``tf_ipu.export`` or an executable cache).

    tf-ipu info FILE [--json]
    tf-ipu run FILE --input x.npy [--input w.npy ...] --output y.npy [--report] [--seed N]
    tf-ipu report FILE [--input x.npy ...] [--html out.html] [--text out.txt] [--top N] [--seed N]

None of the commands imports TensorFlow.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from kernels import dtypes
from kernels.serialize import ExecutableFormatError

from . import __version__
from .runtime import LoadedExecutable, load


def _shape(t: dict) -> str:
    return f"{t['dtype']}[{','.join(map(str, t['shape']))}]"


def _info_text(d: dict) -> str:
    dev, mem, prog = d["device"], d["memory"], d["program"]
    bound = f" (+{d['bound_inputs']} stored in the file)" if d["bound_inputs"] else ""
    lines = [
        f"file:       {d['file']} ({d['file_bytes']:,} bytes, sha256 {d['sha256'][:16]}...)",
        f"format:     version {d['format_version']}, written by {d['producer'] or 'an unknown producer'}"
        + (f", compiler {d['compiler_version']}" if d["compiler_version"] else ""),
        f"function:   {d['function']}" + (f" (HLO module {d['module']})" if d["module"] else ""),
        f"device:     {dev['name']}: {dev['tiles']} tiles x {dev['tile_memory'] // 1024} KiB at "
        f"{dev['clock_hz'] / 1e9:.2f} GHz",
        f"inputs:     " + (", ".join(f"{t['name']}: {_shape(t)}" for t in d["inputs"]) or "none") + bound,
        f"outputs:    " + (", ".join(f"{t['name']}: {_shape(t)}" for t in d["outputs"]) or "none"),
        f"tiles used: {mem['tiles_used']} with memory, {prog['tiles_with_vertices']} with vertices",
        f"memory:     {mem['total_bytes']:,} bytes; busiest tile {mem['max_tile']} peaks at "
        f"{mem['max_tile_bytes']:,} bytes ({mem['max_tile_fraction']:.1%} of {mem['tile_memory'] // 1024} KiB); "
        f"constants {mem['constant_bytes']:,} bytes",
        f"program:    {prog['steps']:,} steps: {prog['compute_sets']:,} compute sets with {prog['vertices']:,} "
        f"vertices, {prog['copies']:,} copies with {prog['copy_rows']:,} rows ({prog['exchange_bytes']:,} bytes "
        f"exchanged), {prog['host_streams']} host streams, {prog['control_flow']} loops and branches",
    ]
    return "\n".join(lines)


def _read_inputs(paths: list[str], loaded: LoadedExecutable) -> list[np.ndarray]:
    arrays = []
    for p in paths:
        data = np.load(p, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                names = [t.name for t in loaded.inputs]
                keys = names if all(n in data.files for n in names) else data.files
                arrays += [data[k] for k in keys]
        else:
            arrays.append(data)
    return arrays


def _write_outputs(paths: list[str], loaded: LoadedExecutable, flat: list[np.ndarray]) -> None:
    if len(paths) == 1 and paths[0].endswith(".npz"):
        np.savez(paths[0], **{t.name: a for t, a in zip(loaded.outputs, flat)})
        return
    if len(paths) != len(flat):
        raise ValueError(f"the program has {len(flat)} outputs: give one --output .npy file for each, or one .npz")
    for p, a in zip(paths, flat):
        np.save(p, a)


def cmd_info(args) -> int:
    loaded = load(args.file)
    d = loaded.describe()
    print(json.dumps(d, indent=2) if args.json else _info_text(d))
    return 0


def cmd_run(args) -> int:
    loaded = load(args.file, seed=args.seed)
    inputs = _read_inputs(args.input or [], loaded)
    outs = loaded.run_flat(*inputs)
    if args.output:
        _write_outputs(args.output, loaded, outs)
    report = loaded.last_report()
    if args.report:
        print(report)
    else:
        print(f"ran '{loaded.name}' on the simulated {report.device}: {report.cycles_total:,} cycles "
              f"({report.seconds * 1e6:.1f} us)" + (f"; wrote {', '.join(args.output)}" if args.output else ""))
    if not args.output:
        for t, a in zip(loaded.outputs, outs):
            print(f"{t.name}: {t.dtype}{list(a.shape)}\n{a}")
    return 0


def cmd_report(args) -> int:
    loaded = load(args.file, seed=args.seed)
    if args.input:
        inputs = _read_inputs(args.input, loaded)
    else:   # zeros (and the values of inputs folded into the program): the cycles depend only on shapes, except
            # for data-dependent loops and branches
        folded = getattr(loaded, "_folded", {})
        inputs = [folded[j] if j in folded else np.zeros(t.dims, dtype=dtypes.NUMPY[t.dtype])
                  for j, t in enumerate(loaded.inputs)]
    loaded.run_flat(*inputs)
    report = loaded.last_report().program
    text = report.text(args.top)
    print(text)
    if args.text:
        with open(args.text, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    if args.html:
        with open(args.html, "w", encoding="utf-8") as f:
            f.write(report.html())
        print(f"wrote {args.html}")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="tf-ipu", description="Inspect and run tf-ipu executable files "
                                  "(written by tf_ipu.export or an executable cache) on the simulated IPU.")
    top.add_argument("--version", action="version", version=f"tf-ipu {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = sub.add_parser("info", help="describe an executable file",
                          description="Print an executable's device, inputs and outputs, tiles used, memory, "
                                      "program size and the versions that wrote it.")
    info.add_argument("file", metavar="FILE", help="an executable file (.ipuexe)")
    info.add_argument("--json", action="store_true", help="print the description as JSON")
    info.set_defaults(func=cmd_info)
    run = sub.add_parser("run", help="run an executable file on a fresh simulated IPU",
                         description="Run an executable on a fresh simulated IPU with inputs from .npy/.npz files; "
                                     "write its outputs to .npy files (one each) or one .npz.")
    run.add_argument("file", metavar="FILE", help="an executable file (.ipuexe)")
    run.add_argument("--input", "-i", action="append", metavar="PATH",
                     help="an input: a .npy file (one input) or a .npz file (inputs by name, or in order); repeat "
                          "in the order of the program's inputs")
    run.add_argument("--output", "-o", action="append", metavar="PATH",
                     help="where to write the outputs: one .npz, or one .npy per output (repeat); without it the "
                          "outputs are printed")
    run.add_argument("--report", action="store_true", help="print the run's cycle and memory report")
    run.add_argument("--seed", type=int, default=0, help="seed of the device's random number generators")
    run.set_defaults(func=cmd_run)
    rep = sub.add_parser("report", help="run an executable file once and report its cycles and memory",
                         description="Run an executable once on a fresh simulated IPU (on zeros, or the given "
                                     "inputs) and print a report: device, tiles used and idle, memory per tile, "
                                     "cycles by category and by program step, bytes exchanged. With --html, also "
                                     "write a self-contained HTML page with charts and tables of the same numbers.")
    rep.add_argument("file", metavar="FILE", help="an executable file (.ipuexe)")
    rep.add_argument("--input", "-i", action="append", metavar="PATH",
                     help="an input (.npy, or .npz by name or in order), as for 'run'; without any, every input is "
                          "zeros (data-dependent loops and branches may then take other paths)")
    rep.add_argument("--html", metavar="PATH", help="write the HTML report here")
    rep.add_argument("--text", metavar="PATH", help="also write the text report here")
    rep.add_argument("--top", type=int, default=10, metavar="N", help="program steps listed in the text (10)")
    rep.add_argument("--seed", type=int, default=0, help="seed of the device's random number generators")
    rep.set_defaults(func=cmd_report)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ExecutableFormatError, ValueError, TypeError, OSError) as e:
        print(f"tf-ipu {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
