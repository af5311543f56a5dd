"""Errors the compiler raises, each carrying the user's words (TF op names) and what to change."""
from __future__ import annotations


class LoweringError(Exception):
    """Base class of compile errors."""


class UnsupportedOpError(LoweringError, NotImplementedError):
    def __init__(self, inst, detail: str = ""):
        self.inst = inst
        msg = f"{inst.describe()} has no lowering to the IPU"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)


class DynamicShapeError(LoweringError):
    """A shape that is only known at run time; the IPU needs every shape when the program is compiled."""


class TileMemoryError(LoweringError, MemoryError):
    """A tile's tensors do not fit in its memory."""

    def __init__(self, device, tile: int, needed: int, available: int, largest: list[tuple[str, int, str, str]],
                 total_needed: int = 0):
        self.tile, self.needed, self.available, self.largest = tile, needed, available, largest
        lines = [f"Out of memory on tile {tile} of the simulated {device.name} IPU: {needed} bytes are needed at "
                 f"the peak, {available} bytes are available ({device.tile_memory} per tile less "
                 f"{device.reserved_bytes} reserved)."]
        if largest:
            lines.append(f"Largest tensors live on tile {tile} at that point:")
            for name, nbytes, category, origin in largest:
                lines.append(f"  {nbytes:>10} bytes  {name} ({category})" + (f" from TF op '{origin}'" if origin else ""))
        lines.append("What to change: use a smaller batch size, or a device with more tiles or memory "
                     "(IPUConfig(device='mk2')), or split the largest operation above into smaller ones.")
        super().__init__("\n".join(lines))
