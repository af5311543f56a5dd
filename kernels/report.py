"""Reports of an executable and a run of it: a text report for the terminal and a self-contained HTML page.

Both are built from the same numbers (``ProgramReport.build(exe, profile)``): device, tiles used and idle,
memory per tile (always-live vs peak, by category, the fullest tiles), cycles by category, the program steps
(compute sets, copies, loop predicates) that took the most cycles with their share of the run, and the bytes
exchanged between tiles. The HTML page draws them as inline SVG charts (no scripts, styles or fonts from
elsewhere: it has no URL at all) next to tables of the same numbers.

Imports only NumPy and the simulator's data classes: no TensorFlow, no compiler.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field

import numpy as np

from .engine import Profile
from .executable import Executable
from .program import Copy, Execute, While, Switch, walk

CATEGORY_COLOURS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
                    "#9c755f", "#bab0ac"]


@dataclass
class StepRow:
    name: str
    kind: str            # 'compute set', 'copy', 'while', 'switch'
    cycles: int
    share: float         # of the run's total cycles
    exchange_bytes: int
    origin: str = ""


@dataclass
class ProgramReport:
    """Every number the text and HTML reports show, from one executable and one profile."""
    name: str
    device: str
    clock_hz: float
    num_tiles: int
    tile_memory: int
    cycles_total: int
    cycles_compute: int
    cycles_exchange: int
    cycles_sync: int
    cycles_host_io: int
    exchange_bytes: int
    memory_peak: np.ndarray
    memory_always_live: np.ndarray
    memory_by_category: dict
    tile_compute: np.ndarray
    steps: list[StepRow] = field(default_factory=list)
    compile_seconds: float = 0.0
    iterations: int = 1             # steps the run executed (an infeed loop runs several)

    @staticmethod
    def build(exe: Executable, prof: Profile, name: str = "") -> "ProgramReport":
        kinds: dict[str, tuple[str, str]] = {}
        for step in walk(exe.program):
            if isinstance(step, Execute):
                kinds.setdefault(step.cs.name, ("compute set", step.cs.origin))
            elif isinstance(step, Copy):
                kinds.setdefault(step.name, ("copy", step.origin))
            elif isinstance(step, While):
                kinds.setdefault(step.name, ("while", ""))
            elif isinstance(step, Switch):
                kinds.setdefault(step.name, ("switch", ""))
        total = prof.total
        xbytes = getattr(prof, "step_exchange_bytes", {}) or {}
        rows = [StepRow(n, kinds.get(n, ("step", ""))[0], int(c), (c / total) if total else 0.0, int(xbytes.get(n, 0)),
                        kinds.get(n, ("step", ""))[1]) for n, c in prof.steps.items()]
        rows.sort(key=lambda r: (-r.cycles, r.name))
        ntiles = exe.device.num_tiles
        tile_compute = prof.tile_compute if prof.tile_compute is not None else np.zeros(ntiles, np.int64)
        return ProgramReport(
            name=name or str(exe.meta.get("module", "")), device=exe.device.name, clock_hz=exe.device.clock_hz,
            num_tiles=ntiles, tile_memory=exe.device.tile_memory, cycles_total=total, cycles_compute=prof.compute,
            cycles_exchange=prof.exchange, cycles_sync=prof.sync, cycles_host_io=prof.host_io,
            exchange_bytes=prof.exchange_bytes, memory_peak=np.asarray(exe.memory.peak, np.int64),
            memory_always_live=np.asarray(exe.memory.always_live, np.int64),
            memory_by_category={k: np.asarray(v, np.int64) for k, v in sorted(exe.memory.by_category.items())},
            tile_compute=np.asarray(tile_compute, np.int64), steps=rows,
            compile_seconds=float(exe.meta.get("compile_seconds", 0.0)), iterations=int(getattr(prof, "iterations", 1)))

    # --- derived numbers -------------------------------------------------------------------------------
    @property
    def seconds(self) -> float:
        return self.cycles_total / self.clock_hz

    @property
    def cycles_per_step(self) -> float:
        """Cycles of the run over the steps it ran (an infeed loop of several steps)."""
        return self.cycles_total / max(self.iterations, 1)

    @property
    def tiles_used(self) -> int:
        return int(np.count_nonzero(self.memory_peak))

    @property
    def tiles_computing(self) -> int:
        return int(np.count_nonzero(self.tile_compute))

    @property
    def memory_total(self) -> int:
        return int(sum(int(v.sum()) for v in self.memory_by_category.values()))

    def fullest_tiles(self, n: int = 10) -> list[int]:
        order = np.lexsort((np.arange(len(self.memory_peak)), -self.memory_peak))
        return [int(t) for t in order[:n] if self.memory_peak[t] > 0]

    def cycle_categories(self) -> list[tuple[str, int]]:
        return [("compute", self.cycles_compute), ("exchange", self.cycles_exchange), ("sync", self.cycles_sync),
                ("host I/O", self.cycles_host_io)]

    # --- text --------------------------------------------------------------------------------------------
    def header_line(self) -> str:
        return (f"Simulated {self.device} IPU: {self.num_tiles} tiles x {self.tile_memory // 1024} KiB at "
                f"{self.clock_hz / 1e9:.2f} GHz")

    def cycles_line(self) -> str:
        steps = f", {self.iterations} steps: {self.cycles_per_step:,.0f} a step" if self.iterations != 1 else ""
        return (f"Cycles: {self.cycles_total:,} total ({self.seconds * 1e6:.1f} us{steps}) = compute "
                f"{self.cycles_compute:,} + exchange {self.cycles_exchange:,} + sync {self.cycles_sync:,} + host I/O "
                f"{self.cycles_host_io:,}")

    def exchange_line(self) -> str:
        return f"Exchange: {self.exchange_bytes:,} bytes between tiles"

    def memory_line(self) -> str:
        t = int(np.argmax(self.memory_peak)) if len(self.memory_peak) else 0
        return (f"Memory: {self.memory_total:,} bytes on {self.tiles_used} tiles; busiest tile {t} peaks at "
                f"{int(self.memory_peak[t]):,} bytes ({self.memory_peak[t] / self.tile_memory:.1%}), "
                f"always-live {int(self.memory_always_live[t]):,}")

    def category_line(self) -> str:
        return "By category: " + ", ".join(f"{k} {int(v.sum()):,}" for k, v in self.memory_by_category.items())

    def text(self, top: int = 10) -> str:
        peak, live = self.memory_peak, self.memory_always_live
        used = peak > 0
        lines = [f"Report of '{self.name}'" if self.name else "Report", self.header_line(),
                 f"Tiles: {self.tiles_used} used (with memory), {self.num_tiles - self.tiles_used} idle; "
                 f"{self.tiles_computing} ran vertices",
                 "", self.cycles_line()]
        for cat, cyc in self.cycle_categories():
            lines.append(f"  {cat:<10} {cyc:>14,}  {_pct(cyc, self.cycles_total)}")
        lines += ["", self.exchange_line(), "", self.memory_line()]
        if used.any():
            lines.append(f"  per used tile: peak min {int(peak[used].min()):,} / mean {int(peak[used].mean()):,} / "
                         f"max {int(peak.max()):,} bytes; always-live min {int(live[used].min()):,} / mean "
                         f"{int(live[used].mean()):,} / max {int(live.max()):,} bytes (of {self.tile_memory:,})")
        lines.append("  " + self.category_line())
        fullest = self.fullest_tiles(10)
        if fullest:
            cats = list(self.memory_by_category)
            lines.append(f"  The {len(fullest)} fullest tiles:")
            lines.append(f"    {'tile':>6} {'peak':>10} {'% tile':>7} {'always-live':>12}  " +
                         " ".join(f"{c:>12}" for c in cats))
            for t in fullest:
                lines.append(f"    {t:>6} {int(peak[t]):>10,} {peak[t] / self.tile_memory:>7.1%} {int(live[t]):>12,}  " +
                             " ".join(f"{int(self.memory_by_category[c][t]):>12,}" for c in cats))
        lines += ["", f"Top {min(top, len(self.steps))} of {len(self.steps)} program steps by cycles:",
                  f"  {'cycles':>12} {'share':>7} {'exchange B':>12}  {'kind':<11} name"]
        for r in self.steps[:top]:
            lines.append(f"  {r.cycles:>12,} {r.share:>7.1%} {r.exchange_bytes:>12,}  {r.kind:<11} {r.name}"
                         + (f"  ({r.origin})" if r.origin and r.origin != r.name else ""))
        return "\n".join(lines)

    def write(self, stem: str) -> tuple[str, str]:
        """Write ``<stem>.html`` and ``<stem>.txt``; return their paths."""
        paths = (f"{stem}.html", f"{stem}.txt")
        with open(paths[0], "w", encoding="utf-8") as f:
            f.write(self.html())
        with open(paths[1], "w", encoding="utf-8") as f:
            f.write(self.text() + "\n")
        return paths

    # --- HTML --------------------------------------------------------------------------------------------
    def html(self) -> str:
        e = html.escape
        cats = list(self.memory_by_category)
        colours = {c: CATEGORY_COLOURS[i % len(CATEGORY_COLOURS)] for i, c in enumerate(cats)}
        title = f"tf-ipu report: {self.name}" if self.name else "tf-ipu report"
        parts = [
            "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">', f"<title>{e(title)}</title>",
            f"<style>{_CSS}</style>", "</head>", "<body>", f"<h1>{e(title)}</h1>",
            f"<p>{e(self.header_line())}. Tiles: {self.tiles_used} used (with memory), "
            f"{self.num_tiles - self.tiles_used} idle, {self.tiles_computing} ran vertices.</p>",
            "<h2>Summary</h2>",
            _table(["quantity", "value"], [
                ("cycles total", f"{self.cycles_total:,}"), ("simulated time", f"{self.seconds * 1e6:.1f} us"),
                *[(f"cycles {c}", f"{v:,} ({_pct(v, self.cycles_total).strip()})") for c, v in self.cycle_categories()],
                ("exchange bytes", f"{self.exchange_bytes:,}"), ("tiles used", str(self.tiles_used)),
                ("tiles idle", str(self.num_tiles - self.tiles_used)),
                ("memory total (bytes)", f"{self.memory_total:,}"),
                ("largest tile peak (bytes)", f"{int(self.memory_peak.max(initial=0)):,}"),
                ("largest always-live (bytes)", f"{int(self.memory_always_live.max(initial=0)):,}"),
                ("tile memory (bytes)", f"{self.tile_memory:,}"),
                *[(f"memory {c} (bytes)", f"{int(v.sum()):,}") for c, v in self.memory_by_category.items()]],
                cls="summary"),
            "<h2>Memory per tile</h2>",
            "<p>Bars: bytes of each tile's blocks by category (blocks of different phases share memory, so the "
            "stack can exceed the peak); lines: peak and always-live bytes; dashed: the tile's memory.</p>",
            _legend([(c, colours[c]) for c in cats] + [("peak", "#000"), ("always-live", "#b000b5")]),
            self._memory_svg(cats, colours),
            "<h2>Cycles per program step</h2>",
            self._steps_svg(),
            "<h2>Compute cycles per tile</h2>",
            "<p>Cycles each tile spent running vertices over the whole run (all compute sets).</p>",
            _bars_svg("tile-compute", [str(t) for t in range(self.num_tiles)], self.tile_compute, "cycles",
                      "#4e79a7"),
            "<h2>Exchange volume per step</h2>",
            self._exchange_svg(),
            "<h2>Program steps</h2>",
            _table(["#", "name", "kind", "cycles", "share", "exchange bytes", "origin"],
                   [(str(i + 1), r.name, r.kind, f"{r.cycles:,}", f"{r.share:.2%}", f"{r.exchange_bytes:,}",
                     r.origin) for i, r in enumerate(self.steps)], cls="steps"),
            "<h2>Fullest tiles</h2>",
            self._tile_table(self.fullest_tiles(10), cats, "fullest"),
            "<h2>Every used tile</h2>",
            "<details><summary>memory and compute cycles of each tile with memory</summary>",
            self._tile_table([int(t) for t in np.flatnonzero(self.memory_peak)], cats, "tiles"),
            "</details>", "</body>", "</html>", ""]
        return "\n".join(parts)

    def _tile_table(self, tiles: list[int], cats: list[str], cls: str) -> str:
        rows = [(str(t), f"{int(self.memory_peak[t]):,}", f"{self.memory_peak[t] / self.tile_memory:.1%}",
                 f"{int(self.memory_always_live[t]):,}",
                 *[f"{int(self.memory_by_category[c][t]):,}" for c in cats], f"{int(self.tile_compute[t]):,}")
                for t in tiles]
        return _table(["tile", "peak", "% of tile", "always-live", *cats, "compute cycles"], rows, cls=cls)

    def _memory_svg(self, cats, colours) -> str:
        n = self.num_tiles
        w, h, left, bottom, top = 960, 300, 70, 30, 10
        pw, ph = w - left - 24, h - bottom - top
        stacked = np.zeros(n, np.int64)
        for c in cats:
            stacked += self.memory_by_category[c]
        ymax = max(int(stacked.max(initial=0)), int(self.memory_peak.max(initial=0)), 1)
        ymax = max(ymax, min(self.tile_memory, 2 * ymax))       # show the tile's memory when near it
        bw = pw / max(n, 1)
        sy = ph / ymax
        out = [_svg_open("memory", w, h, "Memory per tile, stacked by category, with peak and always-live"),
               _axes(left, top, pw, ph, ymax, "bytes", n, "tile")]
        base = np.zeros(n, np.int64)
        for c in cats:
            v = self.memory_by_category[c]
            for t in np.flatnonzero(v):
                y0 = top + ph - (base[t] + v[t]) * sy
                out.append(f'<rect x="{left + t * bw:.2f}" y="{y0:.2f}" width="{max(bw, 0.5):.2f}" '
                           f'height="{v[t] * sy:.2f}" fill="{colours[c]}"><title>tile {t} {html.escape(c)}: '
                           f'{int(v[t]):,} bytes</title></rect>')
            base += v
        for arr, colour, name in ((self.memory_peak, "#000", "peak"), (self.memory_always_live, "#b000b5", "always-live")):
            pts = []
            for t in range(n):
                y = top + ph - arr[t] * sy
                pts.append(f"{left + t * bw:.2f},{y:.2f} {left + (t + 1) * bw:.2f},{y:.2f}")
            out.append(f'<polyline class="{name}" points="{" ".join(pts)}" fill="none" stroke="{colour}" '
                       f'stroke-width="1.5"><title>{name}</title></polyline>')
        if self.tile_memory <= ymax:
            y = top + ph - self.tile_memory * sy
            out.append(f'<line x1="{left}" y1="{y:.2f}" x2="{left + pw}" y2="{y:.2f}" stroke="#888" '
                       f'stroke-dasharray="4 3"><title>tile memory {self.tile_memory:,} bytes</title></line>')
        out.append("</svg>")
        return "\n".join(out)

    def _steps_svg(self, top: int = 40) -> str:
        rows = [r for r in self.steps if r.cycles > 0][:top]
        note = f"<p>The {len(rows)} steps with the most cycles (of {len(self.steps)}), as a share of the run.</p>"
        return note + _hbars_svg("steps", [r.name for r in rows], [r.cycles for r in rows],
                                 [f"{r.kind}: {r.cycles:,} cycles ({r.share:.1%})" for r in rows], "#4e79a7")

    def _exchange_svg(self, top: int = 40) -> str:
        rows = sorted((r for r in self.steps if r.exchange_bytes > 0), key=lambda r: (-r.exchange_bytes, r.name))
        note = (f"<p>Bytes moved between tiles by each copy over the run ({len(rows)} copies exchange data; the "
                f"{min(top, len(rows))} largest shown).</p>")
        rows = rows[:top]
        return note + _hbars_svg("exchange", [r.name for r in rows], [r.exchange_bytes for r in rows],
                                 [f"{r.exchange_bytes:,} bytes" for r in rows], "#f28e2b")


def _pct(part: int, whole: int) -> str:
    return f"{part / whole:6.1%}" if whole else "     -"


_CSS = ("body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}td.n{text-align:right;font-variant-numeric:"
        "tabular-nums}th{background:#f2f2f2}svg{display:block;margin:.5em 0;background:#fff}"
        "svg text{font-size:11px;fill:#333}.legend span{display:inline-block;margin-right:1em;font-size:13px}"
        ".legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}")


def _is_number(s: str) -> bool:
    return bool(s) and s.replace(",", "").replace(".", "").replace("%", "").replace("-", "").strip().isdigit()


def _table(head, rows, cls: str = "") -> str:
    e = html.escape
    out = [f'<table class="{cls}">', "<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead>",
           "<tbody>"]
    for row in rows:
        out.append("<tr>" + "".join(f'<td class="n">{e(c)}</td>' if _is_number(c) else f"<td>{e(c)}</td>"
                                    for c in row) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _legend(items) -> str:
    return ('<div class="legend">' + "".join(f'<span><i style="background:{c}"></i>{html.escape(n)}</span>'
                                             for n, c in items) + "</div>")


def _svg_open(cls: str, w: int, h: int, label: str) -> str:
    return (f'<svg class="{cls}" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}" role="img" aria-label="{html.escape(label)}">')


def _axes(left, top, pw, ph, ymax, ylabel, n, xlabel) -> str:
    out = [f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#444"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#444"/>']
    for i in range(5):
        v = ymax * i / 4
        y = top + ph - ph * i / 4
        out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{_si(v)}</text>')
        if i:
            out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#eee"/>')
    for t in sorted({0, n // 4, n // 2, 3 * n // 4, max(n - 1, 0)}):
        x = left + (t + 0.5) * pw / max(n, 1)
        out.append(f'<text x="{x:.1f}" y="{top + ph + 14}" text-anchor="middle">{t}</text>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph + 27}" text-anchor="middle">{html.escape(xlabel)}</text>')
    out.append(f'<text x="12" y="{top + ph / 2:.1f}" transform="rotate(-90 12 {top + ph / 2:.1f})" '
               f'text-anchor="middle">{html.escape(ylabel)}</text>')
    return "\n".join(out)


def _si(v: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}"


def _bars_svg(cls: str, labels, values, ylabel: str, colour: str) -> str:
    values = np.asarray(values, np.int64)
    n = len(values)
    w, h, left, bottom, top = 960, 220, 70, 30, 10
    pw, ph = w - left - 24, h - bottom - top
    ymax = max(int(values.max(initial=0)), 1)
    bw, sy = pw / max(n, 1), ph / ymax
    out = [_svg_open(cls, w, h, f"{ylabel} per {cls}"), _axes(left, top, pw, ph, ymax, ylabel, n, "tile")]
    for i in np.flatnonzero(values):
        out.append(f'<rect x="{left + i * bw:.2f}" y="{top + ph - values[i] * sy:.2f}" width="{max(bw, 0.5):.2f}" '
                   f'height="{values[i] * sy:.2f}" fill="{colour}"><title>tile {html.escape(labels[i])}: '
                   f'{int(values[i]):,} {ylabel}</title></rect>')
    out.append("</svg>")
    return "\n".join(out)


def _hbars_svg(cls: str, labels, values, tips, colour: str) -> str:
    e = html.escape
    n = len(values)
    row, left, w = 16, 330, 960
    h = max(n, 1) * row + 20
    pw = w - left - 120
    vmax = max(max(values, default=0), 1)
    out = [_svg_open(cls, w, h, f"{cls} bar chart")]
    if not n:
        out.append(f'<text x="10" y="14">nothing to show</text>')
    for i, (name, v, tip) in enumerate(zip(labels, values, tips)):
        y = 4 + i * row
        short = name if len(name) <= 48 else name[:45] + "..."
        out.append(f'<text x="{left - 6}" y="{y + 11}" text-anchor="end">{e(short)}</text>')
        out.append(f'<rect x="{left}" y="{y + 1}" width="{max(v / vmax * pw, 0.5):.2f}" height="{row - 3}" '
                   f'fill="{colour}"><title>{e(name)}: {e(tip)}</title></rect>')
        out.append(f'<text x="{left + v / vmax * pw + 4:.2f}" y="{y + 11}">{int(v):,}</text>')
    out.append("</svg>")
    return "\n".join(out)


def text_report(exe: Executable, prof: Profile, name: str = "", top: int = 10) -> str:
    return ProgramReport.build(exe, prof, name).text(top)


def html_report(exe: Executable, prof: Profile, name: str = "") -> str:
    return ProgramReport.build(exe, prof, name).html()


def write_reports(exe: Executable, prof: Profile, stem: str, name: str = "") -> tuple[str, str]:
    """Write ``<stem>.html`` and ``<stem>.txt``; return their paths."""
    return ProgramReport.build(exe, prof, name).write(stem)
