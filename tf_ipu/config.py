"""IPUConfig: which simulated IPU to target and how, validated when made."""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

from kernels.device import DEVICES, DeviceModel


@dataclass(frozen=True)
class IPUConfig:
    """Options of the simulated IPU system.

    device: "mk1" (GC2, 1216 tiles x 256 KiB) or "mk2" (GC200, 1472 tiles x 624 KiB).
    tiles_per_ipu: use fewer tiles than the device has (as the IPU Model's option of that name does), e.g. to
        make small experiments compile and run faster; None uses them all.
    num_ipus, replication_factor: only 1 for now (several IPUs come later).
    compile_progress: show a progress bar for compiles that take more than two seconds.
    seed: seed of the device's random number generators.
    executable_cache_dir: a directory of compiled executables shared by processes (``<key hash>.ipuexe`` files,
        made when first written); None keeps executables in memory only.
    auto_report: a directory (made when first written) where ``IPUStrategy.run`` writes ``<function>-<n>.html``
        and ``.txt`` reports after the first run of each new compile (as Graphcore's autoReport options do);
        None writes none.
    """
    device: str = "mk2"
    tiles_per_ipu: int | None = None
    num_ipus: int = 1
    replication_factor: int = 1
    compile_progress: bool = True
    seed: int = 0
    executable_cache_dir: str | None = None
    auto_report: str | None = None

    def __post_init__(self):
        if self.device not in DEVICES:
            raise ValueError(f"IPUConfig(device={self.device!r}): unknown device; choose one of {sorted(DEVICES)}")
        full = DEVICES[self.device].num_tiles
        if self.tiles_per_ipu is not None and not (isinstance(self.tiles_per_ipu, int) and 1 <= self.tiles_per_ipu <= full):
            raise ValueError(f"IPUConfig(tiles_per_ipu={self.tiles_per_ipu!r}): must be an integer from 1 to {full} "
                             f"for device {self.device!r}")
        for name in ("num_ipus", "replication_factor"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"IPUConfig({name}={value!r}): must be a positive integer")
            if value != 1:
                raise NotImplementedError(f"IPUConfig({name}={value}): only one IPU is simulated so far")
        if not isinstance(self.seed, int):
            raise ValueError(f"IPUConfig(seed={self.seed!r}): must be an integer")
        for name in ("executable_cache_dir", "auto_report"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _directory_option(name, getattr(self, name)))

    @property
    def device_model(self) -> DeviceModel:
        model = DEVICES[self.device]
        return model.with_tiles(self.tiles_per_ipu) if self.tiles_per_ipu else model

    def replace(self, **changes) -> "IPUConfig":
        return replace(self, **changes)

    def cache_key(self) -> tuple:
        """What an executable depends on (not seed, progress display or where executables are cached)."""
        return (self.device, self.tiles_per_ipu or DEVICES[self.device].num_tiles, self.num_ipus,
                self.replication_factor)


def _directory_option(name: str, value) -> str:
    """An option naming a directory: a non-empty path that is not a file, made absolute."""
    if isinstance(value, bool) or not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise ValueError(f"IPUConfig({name}={value!r}): must be a directory path (str or os.PathLike) or None")
    where = os.path.abspath(os.path.expanduser(os.fsdecode(value)))
    if os.path.exists(where) and not os.path.isdir(where):
        raise ValueError(f"IPUConfig({name}={value!r}): {where} exists and is not a directory")
    return where
