"""Reports of a compiled and executed program: cycles, memory per tile, tiles used."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kernels.engine import Profile
from kernels.executable import Executable


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

    @staticmethod
    def build(exe: Executable, prof: Profile) -> "Report":
        return Report(device=exe.device.name, clock_hz=exe.device.clock_hz, num_tiles=exe.device.num_tiles,
                      cycles_total=prof.total, cycles_compute=prof.compute, cycles_exchange=prof.exchange,
                      cycles_sync=prof.sync, cycles_host_io=prof.host_io, exchange_bytes=prof.exchange_bytes,
                      memory_peak=exe.memory.peak, memory_always_live=exe.memory.always_live,
                      memory_by_category=exe.memory.by_category, tile_memory=exe.device.tile_memory,
                      tiles_used=exe.memory.tiles_used, compile_seconds=exe.meta.get("compile_seconds", 0.0),
                      steps=dict(prof.steps))

    @property
    def seconds(self) -> float:
        """Simulated IPU time of the run at the device's clock."""
        return self.cycles_total / self.clock_hz

    @property
    def memory_total(self) -> int:
        return int(sum(int(v.sum()) for v in self.memory_by_category.values()))

    def top_steps(self, n: int = 10) -> list[tuple[str, int]]:
        return sorted(self.steps.items(), key=lambda kv: -kv[1])[:n]

    def __str__(self) -> str:
        peak_tile = int(np.argmax(self.memory_peak)) if len(self.memory_peak) else 0
        lines = [
            f"Simulated {self.device} IPU: {self.num_tiles} tiles x {self.tile_memory // 1024} KiB at "
            f"{self.clock_hz / 1e9:.2f} GHz",
            f"Cycles: {self.cycles_total:,} total ({self.seconds * 1e6:.1f} us) = compute {self.cycles_compute:,} "
            f"+ exchange {self.cycles_exchange:,} + sync {self.cycles_sync:,} + host I/O {self.cycles_host_io:,}",
            f"Exchange: {self.exchange_bytes:,} bytes between tiles",
            f"Memory: {self.memory_total:,} bytes on {self.tiles_used} tiles; busiest tile {peak_tile} peaks at "
            f"{int(self.memory_peak[peak_tile]):,} bytes ({self.memory_peak[peak_tile] / self.tile_memory:.1%}), "
            f"always-live {int(self.memory_always_live[peak_tile]):,}",
            "By category: " + ", ".join(f"{k} {int(v.sum()):,}" for k, v in sorted(self.memory_by_category.items())),
            "Most expensive steps:",
        ]
        lines += [f"  {cyc:>12,}  {name}" for name, cyc in self.top_steps()]
        return "\n".join(lines)
