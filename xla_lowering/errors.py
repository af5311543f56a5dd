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
    """A tile's tensors and program state do not fit in its memory.

    ``tensors``: bytes of tensors live on the tile at its busiest point, by category; ``program``: bytes of
    always-live program state there (``vertex state`` and ``copy descriptors``); ``largest``: the largest tensors
    live at that point as (name, bytes, category, TF op); ``descriptors``: the steps keeping the most program
    state on the tile as (step name, bytes, TF op)."""

    def __init__(self, device, tile: int, needed: int, available: int, largest: list[tuple[str, int, str, str]],
                 tensors: dict | None = None, program: dict | None = None,
                 descriptors: list[tuple[str, int, str]] | None = None):
        self.tile, self.needed, self.available, self.largest = tile, needed, available, largest
        self.tensors, self.program, self.descriptors = dict(tensors or {}), dict(program or {}), descriptors or []
        lines = [f"Out of memory on tile {tile} of the simulated {device.name} IPU: {needed:,} bytes are needed at "
                 f"the peak, {available:,} bytes are available ({device.tile_memory:,} per tile less "
                 f"{device.reserved_bytes:,} reserved)."]
        tensor_bytes, program_bytes = sum(self.tensors.values()), sum(self.program.values())
        if self.tensors or self.program:
            parts = ", ".join(f"{k} {v:,}" for k, v in sorted(self.tensors.items(), key=lambda kv: -kv[1]))
            lines.append(f"On tile {tile}: tensors {tensor_bytes:,} bytes at its busiest point ({parts}); "
                         f"program state {program_bytes:,} bytes, always live ("
                         + ", ".join(f"{k} {v:,}" for k, v in self.program.items()) + ").")
        if largest:
            lines.append(f"Largest tensors live on tile {tile} at that point:")
            for name, nbytes, category, origin in largest:
                lines.append(f"  {nbytes:>10,} bytes  {name} ({category})" + (f" from TF op '{origin}'" if origin else ""))
        if self.descriptors:
            lines.append(f"Steps keeping the most program state on tile {tile}:")
            for name, nbytes, origin in self.descriptors:
                lines.append(f"  {nbytes:>10,} bytes  {name}" + (f" from TF op '{origin}'" if origin else ""))
        if program_bytes > tensor_bytes:
            lines.append("What to change: most of it is program state (the descriptors of copies and vertices of "
                         "every step), which a smaller batch shrinks little: use a device with more memory per tile "
                         "or more tiles, or fewer and larger operations (e.g. fewer layers per program); a smaller "
                         "batch helps only with the tensors.")
        else:
            lines.append("What to change: use a smaller batch size, or a device with more tiles or memory "
                         "(IPUConfig(device='mk2')), or split the largest operation above into smaller ones.")
        super().__init__("\n".join(lines))
