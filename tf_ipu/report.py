"""Reports of a compiled and executed program: cycles, memory per tile, tiles used.

``Report`` holds the numbers ``IPUStrategy.last_report()`` and ``LoadedExecutable.last_report()`` return; it is
built from the same ``kernels.report.ProgramReport`` as the ``tf-ipu report`` command's text and HTML reports
(``report.text()``, ``report.html()``, ``report.write(stem)``).
"""
from __future__ import annotations

from kernels.engine import Profile
from kernels.executable import Executable
from kernels.report import ProgramReport


class Report:
    """What ``IPUStrategy.last_report()`` returns: the latest run's cycles and the executable's memory.

    A view of the full ``kernels.report.ProgramReport`` (``program``) under the same names (``device``,
    ``cycles_total``, ``memory_peak``, ``iterations``...), with ``steps`` as a dict of program step name ->
    cycles."""

    def __init__(self, program: ProgramReport):
        self.program = program

    @staticmethod
    def build(exe: Executable, prof: Profile, name: str = "") -> "Report":
        return Report(ProgramReport.build(exe, prof, name))

    @property
    def steps(self) -> dict[str, int]:
        return {row.name: row.cycles for row in self.program.steps}

    def top_steps(self, n: int = 10) -> list[tuple[str, int]]:
        return [(row.name, row.cycles) for row in self.program.steps[:n]]      # rows come sorted by cycles

    def text(self, top: int = 10) -> str:
        """The full text report (what ``tf-ipu report`` prints)."""
        return self.program.text(top)

    def html(self) -> str:
        """A self-contained HTML page with charts and tables of the same numbers."""
        return self.program.html()

    def write(self, stem: str) -> tuple[str, str]:
        """Write ``<stem>.html`` and ``<stem>.txt``; return their paths."""
        return self.program.write(stem)

    def __repr__(self) -> str:
        return f"<Report {self.program.name!r}: {self.cycles_total:,} cycles on {self.device}>"

    def __str__(self) -> str:
        p = self.program
        lines = [p.header_line(), p.cycles_line(), p.exchange_line(), p.memory_line(), p.category_line(),
                 "Most expensive steps:"]
        lines += [f"  {cyc:>12,}  {name}" for name, cyc in self.top_steps()]
        return "\n".join(lines)


def _delegate(name: str) -> property:
    return property(lambda self: getattr(self.program, name), doc=f"``program.{name}``")


for _name in ("name", "device", "clock_hz", "num_tiles", "tile_memory", "cycles_total", "cycles_compute",
              "cycles_exchange", "cycles_sync", "cycles_host_io", "exchange_bytes", "memory_peak",
              "memory_always_live", "memory_by_category", "tile_compute", "compile_seconds", "iterations", "seconds",
              "cycles_per_step", "tiles_used", "tiles_computing", "memory_total"):
    setattr(Report, _name, _delegate(_name))
