"""The executable: everything needed to run a compiled program on the simulated IPU, as plain data.

The same object is run by the engine, written by the exporter, reported on and cached. It holds no code and
no references to the compiler or to TensorFlow.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .device import DeviceModel
from .program import Sequence


@dataclass
class HostTensor:
    """A program input or output as the host sees it.

    ``feed``: an infeed or outfeed. Its host array holds one element of ``dims`` per iteration of the program's
    infeed loop, shape (iterations, *dims); ``nbytes`` is one element's size."""
    name: str
    dtype: str                 # HLO element type name
    dims: tuple[int, ...]
    feed: bool = False

    @property
    def nbytes(self) -> int:
        from .dtypes import itemsize
        return int(np.prod(self.dims, dtype=np.int64)) * itemsize(self.dtype)


@dataclass
class ResidentTensor:
    """A parameter that stays in device memory between runs (a variable): no stream moves it in a run; the host
    reads and writes it through ``Engine.read_resident`` / ``write_resident`` when it needs to. After each step
    (each iteration of an infeed loop) it holds the value of the output aliased to it.

    ``rows`` of [dev_addr, host_offset, nbytes] say where its bytes live on the tiles."""
    name: str
    dtype: str
    dims: tuple[int, ...]
    param: int                 # the HLO entry parameter
    rows: np.ndarray

    @property
    def nbytes(self) -> int:
        from .dtypes import itemsize
        return int(np.prod(self.dims, dtype=np.int64)) * itemsize(self.dtype)


@dataclass
class MemoryReport:
    """Per-tile memory, in bytes: always-live (inputs, outputs, constants, vertex state) vs the peak of all."""
    always_live: np.ndarray            # int64 [tiles]
    peak: np.ndarray                   # int64 [tiles]
    by_category: dict[str, np.ndarray] # category -> int64 [tiles], bytes of blocks of that category
    tile_memory: int

    @property
    def tiles_used(self) -> int:
        return int(np.count_nonzero(self.peak))

    def summary(self) -> dict[str, Any]:
        busiest = int(np.argmax(self.peak))
        return {"tiles_used": self.tiles_used, "total_bytes": int(sum(v.sum() for v in self.by_category.values())),
                "max_tile": busiest, "max_tile_bytes": int(self.peak[busiest]),
                "max_tile_fraction": float(self.peak[busiest] / self.tile_memory)}


@dataclass
class Executable:
    device: DeviceModel
    program: Sequence
    inputs: list[HostTensor]
    outputs: list[HostTensor]
    constant_rows: np.ndarray          # int64 [n, 3]: [dev_addr, offset in constant_data, nbytes]
    constant_data: np.ndarray          # uint8: initial contents of constant tensors
    memory: MemoryReport
    output_tuple: bool = True          # the entry computation returned a tuple
    meta: dict[str, Any] = field(default_factory=dict)
    resident: list[ResidentTensor] = field(default_factory=list)

    @property
    def loop(self) -> bool:
        """The program is an infeed loop: each run says how many iterations (steps) it runs, and fed inputs and
        outputs carry one element per iteration."""
        return bool(self.meta.get("loop", False))
