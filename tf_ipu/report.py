"""Reports of a compiled and executed program: cycles, memory per tile, tiles used.

``Report`` holds the numbers ``IPUStrategy.last_report()`` and ``LoadedExecutable.last_report()`` return; it is
built from the same ``kernels.report.ProgramReport`` as the ``tf-ipu report`` command's text and HTML reports
(``report.text()``, ``report.html()``, ``report.write(stem)``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kernels.engine import Profile
from kernels.executable import Executable
from kernels.report import ProgramReport


@dataclass
class Report:
    """What ``IPUStrategy.last_report()`` returns: the latest run's cycles and the executable's memory."""
    device: str
    clock_hz: float
    num_tiles: int
    cycles_total: int
    cycles_compute: int
    cycles_exchange: int
    cycles_sync: int
    cycles_host_io: int
    exchange_bytes: int
    memory_peak: np.ndarray               # bytes per tile
    memory_always_live: np.ndarray        # bytes per tile
    memory_by_category: dict
    tile_memory: int
    tiles_used: int
    compile_seconds: float
    steps: dict = field(default_factory=dict)
    program: ProgramReport | None = field(default=None, repr=False, compare=False)   # the full report

    @staticmethod
    def build(exe: Executable, prof: Profile, name: str = "") -> "Report":
        p = ProgramReport.build(exe, prof, name)
        return Report(device=p.device, clock_hz=p.clock_hz, num_tiles=p.num_tiles, cycles_total=p.cycles_total,
                      cycles_compute=p.cycles_compute, cycles_exchange=p.cycles_exchange, cycles_sync=p.cycles_sync,
                      cycles_host_io=p.cycles_host_io, exchange_bytes=p.exchange_bytes,
                      memory_peak=exe.memory.peak, memory_always_live=exe.memory.always_live,
                      memory_by_category=exe.memory.by_category, tile_memory=p.tile_memory,
                      tiles_used=exe.memory.tiles_used, compile_seconds=p.compile_seconds,
                      steps=dict(prof.steps), program=p)

    @property
    def seconds(self) -> float:
        """Simulated IPU time of the run at the device's clock."""
        return self.cycles_total / self.clock_hz

    @property
    def iterations(self) -> int:
        """Steps the run executed (a Keras execution of steps_per_execution steps is one run)."""
        return self.program.iterations if self.program is not None else 1

    @property
    def cycles_per_step(self) -> float:
        return self.cycles_total / max(self.iterations, 1)

    @property
    def memory_total(self) -> int:
        return int(sum(int(v.sum()) for v in self.memory_by_category.values()))

    def top_steps(self, n: int = 10) -> list[tuple[str, int]]:
        return sorted(self.steps.items(), key=lambda kv: -kv[1])[:n]

    def _program(self) -> ProgramReport:
        if self.program is None:
            raise RuntimeError("this Report was not made by Report.build: it has no full report")
        return self.program

    def text(self, top: int = 10) -> str:
        """The full text report (what ``tf-ipu report`` prints)."""
        return self._program().text(top)

    def html(self) -> str:
        """A self-contained HTML page with charts and tables of the same numbers."""
        return self._program().html()

    def write(self, stem: str) -> tuple[str, str]:
        """Write ``<stem>.html`` and ``<stem>.txt``; return their paths."""
        return self._program().write(stem)

    def __str__(self) -> str:
        p = self.program
        if p is None:     # made by hand: the same lines from this object's fields
            p = ProgramReport(name="", device=self.device, clock_hz=self.clock_hz, num_tiles=self.num_tiles,
                              tile_memory=self.tile_memory, cycles_total=self.cycles_total,
                              cycles_compute=self.cycles_compute, cycles_exchange=self.cycles_exchange,
                              cycles_sync=self.cycles_sync, cycles_host_io=self.cycles_host_io,
                              exchange_bytes=self.exchange_bytes, memory_peak=np.asarray(self.memory_peak),
                              memory_always_live=np.asarray(self.memory_always_live),
                              memory_by_category=dict(sorted(self.memory_by_category.items())),
                              tile_compute=np.zeros(self.num_tiles, np.int64))
        lines = [p.header_line(), p.cycles_line(), p.exchange_line(), p.memory_line(), p.category_line(),
                 "Most expensive steps:"]
        lines += [f"  {cyc:>12,}  {name}" for name, cyc in self.top_steps()]
        return "\n".join(lines)
