"""The reports built from an executable and a run of it: text, HTML, ``tf-ipu report`` and IPUConfig(auto_report).

The text and HTML reports come from one ``kernels.report.ProgramReport``; these tests check that its numbers are
those of ``strategy.last_report()`` (and of a run of the same executable on a fresh engine), that the HTML page is
well-formed and self-contained (no URL of any kind: it must open offline and from a mail attachment), that
``tf-ipu report`` works in a process without TensorFlow, and that ``IPUConfig(auto_report=dir)`` writes a report
per compile.

Rendering in a real browser is checked only when headless Chromium is installed (skipped otherwise). To look at a
report yourself:

    PYTHONPATH=. python -c "import tf_ipu, numpy as np, tensorflow as tf
    s = tf_ipu.IPUStrategy(tf_ipu.IPUConfig(tiles_per_ipu=64, auto_report='reports'))
    s.run(tf.function(lambda x, w: tf.nn.softmax(x @ w)), args=(np.ones((64, 96), 'f4'), np.ones((96, 32), 'f4')))"
    chromium --headless --disable-gpu --no-sandbox --screenshot=report.png --window-size=1100,2400 \\
        file://$PWD/reports/function-1.html       # or just open the .html file in any browser
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import tf_ipu
from conftest import TILES, get_strategy, run_cli, tf
from kernels.engine import Engine
from kernels.report import ProgramReport

ROOT = Path(__file__).resolve().parent.parent
F32 = np.float32
RNG = np.random.default_rng(3)
X = RNG.standard_normal((64, 96)).astype(F32)
W = RNG.standard_normal((96, 32)).astype(F32)

@tf.function
def layer(x, w):
    return tf.nn.softmax(tf.nn.relu(x @ w))


@tf.function
def double(x):
    return x * 2.0


class _Checker(HTMLParser):
    """Checks that every element is closed in order; collects SVGs, their shapes, table cells and attributes."""
    VOID = {"meta", "br", "img", "hr", "input", "link", "area", "base", "col", "embed", "source", "track", "wbr"}
    SVG_EMPTY = {"rect", "line", "polyline", "path", "circle"}   # may be written either <rect/> or <rect></rect>

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.svgs: list[str] = []
        self.counts: dict[str, int] = {}
        self.cells: list[str] = []
        self.attrs: list[tuple[str, str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.attrs += [(k, v or "") for k, v in attrs]
        self.counts[tag] = self.counts.get(tag, 0) + 1
        if tag == "svg":
            self.svgs.append(dict(attrs).get("class", ""))
        if tag in ("td", "th"):
            self._cell = []
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.attrs += [(k, v or "") for k, v in attrs]
        self.counts[tag] = self.counts.get(tag, 0) + 1

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _check_html(page: str) -> _Checker:
    assert page.startswith("<!DOCTYPE html>")
    p = _Checker()
    p.feed(page)
    p.close()
    assert not p.errors, p.errors[:5]
    assert p.stack == [], p.stack
    # self-contained: no URL anywhere, nothing loaded from elsewhere
    assert not re.search(r"https?:|//[a-z]|ftp:", page, re.I)
    assert not [a for a in p.attrs if a[0] in ("src", "href", "xlink:href")]
    assert "<script" not in page and "@import" not in page
    return p


def _run_layer(strategy):
    strategy.run(layer, args=(X, W))
    return strategy.last_report()


def test_report_numbers_agree_with_last_report():
    strategy = get_strategy()
    rep = _run_layer(strategy)
    p = rep.program
    assert p is not None
    fields = ("device", "clock_hz", "num_tiles", "tile_memory", "cycles_total", "cycles_compute", "cycles_exchange",
              "cycles_sync", "cycles_host_io", "exchange_bytes", "tiles_used", "memory_total", "seconds")
    for f in fields:
        assert getattr(p, f) == getattr(rep, f), f
    np.testing.assert_array_equal(p.memory_peak, rep.memory_peak)
    np.testing.assert_array_equal(p.memory_always_live, rep.memory_always_live)
    assert {r.name: r.cycles for r in p.steps} == rep.steps
    # every cycle is in a step or in host I/O; every exchanged byte in a copy
    assert sum(r.cycles for r in p.steps) + p.cycles_host_io == p.cycles_total
    assert sum(r.exchange_bytes for r in p.steps) == p.exchange_bytes > 0
    assert sum(r.share for r in p.steps) == pytest.approx(1 - p.cycles_host_io / p.cycles_total)
    assert {r.kind for r in p.steps} >= {"compute set", "copy"}
    assert p.tile_compute.max() <= p.cycles_compute and p.tiles_computing > 1
    assert p.fullest_tiles(3)[0] == int(np.argmax(rep.memory_peak))
    # the same executable run again on a fresh engine reports the same numbers
    exe = strategy.compile(layer, (X, W))
    _, prof = Engine(exe).run([X, W])
    again = ProgramReport.build(exe, prof)
    assert (again.cycles_total, again.exchange_bytes) == (rep.cycles_total, rep.exchange_bytes)
    np.testing.assert_array_equal(again.tile_compute, p.tile_compute)

    text = rep.text()
    busiest = p.fullest_tiles(1)[0]
    for s in (f"{rep.cycles_total:,}", f"{rep.exchange_bytes:,}", f"{rep.tiles_used} used",
              f"{TILES - rep.tiles_used} idle", f"{int(rep.memory_peak[busiest]):,}", "10 fullest tiles",
              p.steps[0].name, f"{p.steps[0].share:.1%}", "always-live"):
        assert s in text, (s, text)
    assert "Cycles:" in str(rep) and "Memory:" in str(rep) and "Most expensive steps:" in str(rep)


def test_html_is_well_formed_self_contained_and_has_the_numbers():
    rep = _run_layer(get_strategy())
    page = rep.html()
    p = _check_html(page)
    assert p.svgs == ["memory", "steps", "tile-compute", "exchange"]
    assert p.counts.get("rect", 0) > TILES and p.counts.get("polyline", 0) == 2
    cells = set(p.cells)
    for t in np.flatnonzero(rep.memory_peak):          # every used tile's row: peak, always-live, compute cycles
        assert {str(t), f"{int(rep.memory_peak[t]):,}", f"{int(rep.memory_always_live[t]):,}",
                f"{int(rep.program.tile_compute[t]):,}"} <= cells
    for r in rep.program.steps:
        assert r.name in cells and f"{r.cycles:,}" in cells
    assert f"{rep.cycles_total:,}" in cells and f"{rep.exchange_bytes:,}" in cells
    for cat, v in rep.memory_by_category.items():
        assert cat in cells and f"{int(v.sum()):,}" in cells


def test_cli_report_without_tensorflow(tmp_path):
    strategy = get_strategy()
    path = tf_ipu.export(strategy, layer, (X, W), tmp_path / "layer.ipuexe")
    rep = _run_layer(strategy)
    proc = run_cli("report", "--help")
    assert proc.returncode == 0 and "usage: tf-ipu report" in proc.stdout and "--html" in proc.stdout, proc.stderr
    assert "report" in run_cli("--help").stdout

    out = tmp_path / "out.html"
    proc = run_cli("report", str(path), "--html", str(out), "--text", str(tmp_path / "out.txt"))
    assert proc.returncode == 0, proc.stderr
    # zeros or not, this program's cycles depend only on shapes
    for s in ("Report of 'layer'", f"{rep.cycles_total:,}", f"{rep.exchange_bytes:,}", "10 fullest tiles",
              "program steps by cycles"):
        assert s in proc.stdout, (s, proc.stdout)
    assert (tmp_path / "out.txt").read_text().strip() in proc.stdout
    page = out.read_text()
    p = _check_html(page)
    assert len(p.svgs) == 4 and f"{rep.cycles_total:,}" in p.cells

    np.savez(tmp_path / "in.npz", x=X, w=W)
    proc = run_cli("report", str(path), "--input", str(tmp_path / "in.npz"), "--top", "3")
    assert proc.returncode == 0 and "Top 3 of" in proc.stdout, proc.stderr
    proc = run_cli("report", str(tmp_path / "missing.ipuexe"))
    assert proc.returncode == 1 and "tf-ipu report: error" in proc.stderr


def test_auto_report_writes_a_report_per_compile(tmp_path):
    where = tmp_path / "reports"
    with pytest.raises(ValueError, match="auto_report"):
        tf_ipu.IPUConfig(auto_report=3)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="not a directory"):
        tf_ipu.IPUConfig(auto_report=tmp_path / "file")
    cfg = tf_ipu.IPUConfig(device="mk2", tiles_per_ipu=TILES, compile_progress=False, auto_report=where)
    assert cfg.auto_report == str(where) and cfg.cache_key() == get_strategy().config.cache_key()
    strategy = tf_ipu.IPUStrategy(cfg)
    strategy.run(double, args=(np.ones((4, 3), F32),))
    strategy.run(double, args=(np.ones((4, 3), F32),))             # no new compile: no new report
    strategy.run(double, args=(np.ones((5, 3), F32),))
    assert sorted(os.listdir(where)) == ["double-1.html", "double-1.txt", "double-2.html", "double-2.txt"]
    text = (where / "double-2.txt").read_text()
    assert "Report of 'double'" in text and f"{strategy.last_report().cycles_total:,}" in text
    p = _check_html((where / "double-2.html").read_text())
    assert len(p.svgs) == 4


def test_auto_report_of_keras_steps(tmp_path):
    keras = pytest.importorskip("keras")
    where = tmp_path / "reports"
    strategy = tf_ipu.IPUStrategy(tf_ipu.IPUConfig(device="mk2", tiles_per_ipu=TILES, compile_progress=False,
                                                   auto_report=where))
    x, y = np.ones((40, 4), F32), np.zeros(40, np.int32)
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", steps_per_execution=2)
        model.fit(x, y, batch_size=16, epochs=2, verbose=0)          # batches of 16, 16, 8: two executables
        model.predict(x[:16], batch_size=16, verbose=0)
    assert sorted(os.listdir(where)) == sorted(f"{name}.{ext}" for name in ("train_step-1", "train_step-2",
                                                                             "predict_step-1")
                                               for ext in ("html", "txt"))
    text = (where / "train_step-1.txt").read_text()
    assert "Report of 'train_step'" in text and "2 steps" in text              # one execution of two steps


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="headless Chromium is not installed")
def test_html_renders_in_headless_chromium(tmp_path):
    page = tmp_path / "report.html"
    page.write_text(_run_layer(get_strategy()).html())
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    proc = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("<svg") == 4 and "Fullest tiles" in proc.stdout
    shot = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", f"--screenshot={shot}",
                    "--window-size=1100,2400", page.as_uri()], capture_output=True, timeout=60)
    assert shot.exists() and shot.stat().st_size > 10_000
