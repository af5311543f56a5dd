"""Device models of the simulated IPU, with the published figures they come from.

Every number is cited to ``shared/IPU_FACTS.md`` (and the sources it names) or marked as our estimate.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

KIB = 1024


@dataclass(frozen=True)
class DeviceModel:
    name: str
    num_tiles: int                 # tiles per IPU
    tile_memory: int               # SRAM bytes per tile
    clock_hz: float                # tile clock
    workers_per_tile: int = 6      # hardware worker contexts (barrel-scheduled)
    # Exchange: the all-to-all exchange is ~8 TB/s a chip; per tile that is ~4 bytes a cycle (IPU_FACTS, derived).
    exchange_bytes_per_cycle: float = 4.0
    # Local memory: loads 16 B/cycle, stores 8 B/cycle a tile (Jia et al. 2019); a copy is store-bound.
    memcpy_bytes_per_cycle: float = 8.0
    # Sync: no published per-chip figure; our estimate of an on-chip BSP barrier (tens of ns at ~1.3 GHz).
    sync_cycles: int = 150
    # Per-exchange-message overhead (header and address setup): our estimate.
    exchange_message_cycles: int = 4
    # Accumulating matrix product (AMP) throughput per tile: peak FLOP/s / (tiles x clock) / 2 (IPU_FACTS, derived).
    f32_macs_per_cycle: int = 16
    f16_macs_per_cycle: int = 64
    # Vector ALU width (64-bit datapath): 2 x f32 or 4 x f16 per instruction (our reading of the architecture).
    f32_vector_width: int = 2
    f16_vector_width: int = 4
    # Bytes each tile keeps for code, the stack and exchange buffers: our estimate, not available to tensors.
    reserved_bytes: int = 16 * KIB

    @property
    def usable_tile_memory(self) -> int:
        return self.tile_memory - self.reserved_bytes

    def with_tiles(self, num_tiles: int) -> "DeviceModel":
        """The same device with fewer tiles (as the IPU Model's ``tiles_per_ipu`` option does)."""
        if not 1 <= num_tiles <= self.num_tiles:
            raise ValueError(f"tiles_per_ipu must be between 1 and {self.num_tiles} for {self.name}, got {num_tiles}")
        return replace(self, num_tiles=num_tiles)


DEVICES = {
    # GC2: 1216 tiles x 256 KiB, 1.6 GHz (clock: secondary source), FP32 peak 31.1 TFLOP/s -> 16 FLOP/tile/cycle.
    "mk1": DeviceModel("mk1", num_tiles=1216, tile_memory=256 * KIB, clock_hz=1.6e9,
                       f32_macs_per_cycle=8, f16_macs_per_cycle=32),
    # GC200: 1472 tiles x 624 KiB, 1.33 GHz (MLPerf v1.1 system description), FP32 ~32 FLOP/tile/cycle.
    "mk2": DeviceModel("mk2", num_tiles=1472, tile_memory=624 * KIB, clock_hz=1.33e9,
                       f32_macs_per_cycle=16, f16_macs_per_cycle=64),
}


def get_device(name: str) -> DeviceModel:
    try:
        return DEVICES[name]
    except KeyError:
        raise ValueError(f"unknown IPU device {name!r}; choose one of {sorted(DEVICES)}") from None


def what_if(base: str, tile_memory_kib: int) -> str:
    """Register a what-if variant of device ``base`` with ``tile_memory_kib`` KiB per tile and return its name
    (usable as ``IPUConfig(device=name)``). Not a real IPU: the same tiles, clock and cycle model (its
    ``DeviceModel.name`` stays the base's, which the cycle model looks up), only more or less memory, to measure
    what does not fit yet."""
    name = f"{base}-{tile_memory_kib}KiB"
    DEVICES[name] = replace(get_device(base), tile_memory=tile_memory_kib * KIB)
    return name
