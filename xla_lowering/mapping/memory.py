"""Per-tile memory plan with liveness, and the step that turns symbolic addresses into absolute ones.

Every tensor's storage on a tile is a block. A block is live from the first program step that touches it to
the last (blocks touched inside a loop stay live for the whole loop; constants and variables always). On each
tile, blocks are placed first-fit by offset so that blocks whose lifetimes do not overlap share memory. Tiles
with the same blocks in the same order (the common case: tensors spread evenly) are planned once.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from kernels import cycles as cyc
from kernels.executable import MemoryReport
from kernels.program import Copy, Execute, If, Repeat, StreamIn, StreamOut, Switch, While

from ..errors import TileMemoryError
from .tensor import OFFSET_BITS, OFFSET_MASK

ALWAYS_LIVE = ("constant", "variable")
VERTEX_FIELD_BYTES = 4         # a vertex field is a 32-bit pointer or count on the IPU
VERTEX_BASE_BYTES = 8
COPY_DESCRIPTOR_BYTES = 8


def _flatten(seq, out, loops):
    for step in seq.steps:
        out.append(step)
        if isinstance(step, Repeat):
            start = len(out)
            _flatten(step.body, out, loops)
            loops.append((start, len(out) - 1))
        elif isinstance(step, If):
            start = len(out)
            _flatten(step.then_body, out, loops)
            _flatten(step.else_body, out, loops)
            loops.append((start, len(out) - 1))    # both branches: treat like a loop (either may run)
        elif isinstance(step, While):
            start = len(out)
            _flatten(step.cond, out, loops)
            _flatten(step.body, out, loops)
            loops.append((start, len(out) - 1))    # condition and body run again and again: one loop
        elif isinstance(step, Switch):
            start = len(out)
            for branch in step.branches:
                _flatten(branch, out, loops)
            loops.append((start, len(out) - 1))    # any branch may run


def _step_syms(step):
    if isinstance(step, Execute):
        return [g.records[:, list(g.addr_cols)].reshape(-1) for g in step.cs.groups]
    if isinstance(step, Copy):
        return [step.rows[:, :2].reshape(-1)]
    if isinstance(step, (StreamIn, StreamOut)):
        return [step.rows[:, 0]]
    if isinstance(step, If):
        return [np.array([step.cond_addr], np.int64)]
    if isinstance(step, While):
        return [np.array([step.cond_addr], np.int64)]
    if isinstance(step, Switch):
        return [np.array([step.index_addr], np.int64)]
    return []


def _vertex_state(step, block_tiles, num_tiles):
    """Bytes of vertex descriptors and copy descriptors this step keeps on each tile (always live)."""
    out = np.zeros(num_tiles, np.int64)
    if isinstance(step, Execute):
        for g in step.cs.groups:
            per = VERTEX_BASE_BYTES + VERTEX_FIELD_BYTES * g.records.shape[1]
            out += np.bincount(g.tiles, minlength=num_tiles).astype(np.int64) * per
    elif isinstance(step, Copy) and len(step.rows):
        dst_tiles = block_tiles[step.rows[:, 0] >> OFFSET_BITS]
        out += np.bincount(dst_tiles, minlength=num_tiles).astype(np.int64) * COPY_DESCRIPTOR_BYTES
    return out


def _place(sizes, first, last):
    """First-fit placement of blocks with lifetimes; returns offsets and the extent (highest end)."""
    order = np.lexsort((-sizes, first))
    placed_off, placed_end, placed_first, placed_last = [], [], [], []
    offsets = np.zeros(len(sizes), np.int64)
    for i in order:
        s, f, l = int(sizes[i]), int(first[i]), int(last[i])
        busy = sorted((placed_off[j], placed_end[j]) for j in range(len(placed_off))
                      if placed_first[j] <= l and f <= placed_last[j])
        off = 0
        for b_off, b_end in busy:
            if off + s <= b_off:
                break
            off = max(off, b_end)
        offsets[i] = off
        placed_off.append(off)
        placed_end.append(off + s)
        placed_first.append(f)
        placed_last.append(l)
    extent = int((offsets + sizes).max()) if len(sizes) else 0
    return offsets, extent


def plan_memory(builder):
    """Plan every tile's memory. Returns (absolute base address per block, MemoryReport, flat step list)."""
    device = builder.device
    ntiles = device.num_tiles
    block_tiles, block_bytes, block_tensor = builder.block_arrays()
    nblocks = len(block_tiles)
    steps, loops = [], []
    _flatten(builder.root, steps, loops)
    nsteps = max(1, len(steps))

    first = np.full(nblocks, np.iinfo(np.int64).max, np.int64)
    last = np.full(nblocks, -1, np.int64)
    vertex_state = np.zeros(ntiles, np.int64)
    for i, step in enumerate(steps):
        for syms in _step_syms(step):
            if len(syms):
                b = syms >> OFFSET_BITS
                np.minimum.at(first, b, i)
                np.maximum.at(last, b, i)
        vertex_state += _vertex_state(step, block_tiles, ntiles)
    categories = np.array([builder.tensors[t].category for t in block_tensor]) if nblocks else np.zeros(0, str)
    always = np.isin(categories, ALWAYS_LIVE)
    first[always] = 0
    last[always] = nsteps
    for s, e in loops:
        inside = (last >= s) & (first <= e)
        first[inside] = np.minimum(first[inside], s)
        last[inside] = np.maximum(last[inside], e)
    used = last >= 0

    base = np.zeros(nblocks, np.int64)
    extent = np.zeros(ntiles, np.int64)
    by_tile = defaultdict(list)
    for b in np.flatnonzero(used):
        by_tile[int(block_tiles[b])].append(b)
    memo = {}
    for tile, blocks in by_tile.items():
        blocks = np.array(blocks, np.int64)
        key = (block_bytes[blocks].tobytes(), first[blocks].tobytes(), last[blocks].tobytes())
        if key not in memo:
            memo[key] = _place(block_bytes[blocks], first[blocks], last[blocks])
        offsets, extent[tile] = memo[key]
        base[blocks] = tile * device.tile_memory + offsets

    peak = extent + vertex_state
    available = device.usable_tile_memory
    over = np.flatnonzero(peak > available)
    if len(over):
        worst = int(over[np.argmax(peak[over])])
        raise _oom(builder, device, worst, int(peak[worst]), available, block_tiles, block_bytes, block_tensor,
                   first, last, used)

    by_category = {}
    for cat in np.unique(categories[used]) if nblocks else []:
        sel = used & (categories == cat)
        by_category[str(cat)] = np.bincount(block_tiles[sel], weights=block_bytes[sel], minlength=ntiles).astype(np.int64)
    by_category["vertex_state"] = vertex_state
    always_bytes = np.bincount(block_tiles[always & used], weights=block_bytes[always & used],
                               minlength=ntiles).astype(np.int64) if nblocks else np.zeros(ntiles, np.int64)
    report = MemoryReport(always_live=always_bytes + vertex_state, peak=peak, by_category=by_category,
                          tile_memory=device.tile_memory)
    return base, report, steps


def _oom(builder, device, tile, needed, available, block_tiles, block_bytes, block_tensor, first, last, used):
    """The error for a tile that does not fit: the tensors live on it at its busiest step, largest first."""
    on_tile = np.flatnonzero((block_tiles == tile) & used)
    best_step, best_bytes = 0, -1
    for s in np.unique(first[on_tile]):
        live = on_tile[(first[on_tile] <= s) & (last[on_tile] >= s)]
        total = int(block_bytes[live].sum())
        if total > best_bytes:
            best_step, best_bytes = s, total
    live = on_tile[(first[on_tile] <= best_step) & (last[on_tile] >= best_step)]
    live = live[np.argsort(-block_bytes[live])][:8]
    largest = []
    for b in live:
        t = builder.tensors[int(block_tensor[b])]
        largest.append((t.name, int(block_bytes[b]), t.category, t.origin))
    return TileMemoryError(device, tile, needed, available, largest)


def resolve(builder, base: np.ndarray, steps) -> None:
    """Replace symbolic addresses (block << 32 | offset) by absolute device addresses, in place."""
    def absolute(sym):
        return base[sym >> OFFSET_BITS] + (sym & OFFSET_MASK)

    for step in steps:
        if isinstance(step, Execute):
            for g in step.cs.groups:
                cols = list(g.addr_cols)
                g.records[:, cols] = absolute(g.records[:, cols])
        elif isinstance(step, Copy):
            step.rows[:, :2] = absolute(step.rows[:, :2])
        elif isinstance(step, (StreamIn, StreamOut)):
            step.rows[:, 0] = absolute(step.rows[:, 0])
        elif isinstance(step, (If, While)):
            step.cond_addr = int(absolute(np.int64(step.cond_addr)))
        elif isinstance(step, Switch):
            step.index_addr = int(absolute(np.int64(step.index_addr)))


def estimate_cycles(device, steps) -> None:
    """Fill in each step's cycle figures (they depend only on the static program)."""
    ntiles, tm = device.num_tiles, device.tile_memory
    for step in steps:
        if isinstance(step, Execute):
            tc = np.zeros(ntiles, np.int64)
            for g in step.cs.groups:
                tc += np.bincount(g.tiles, weights=g.cycles, minlength=ntiles).astype(np.int64)
            step.tile_cycles = tc
        elif isinstance(step, Copy):
            dst_t, src_t, nbytes = step.rows[:, 0] // tm, step.rows[:, 1] // tm, step.rows[:, 2]
            remote = dst_t != src_t
            local_bytes = np.bincount(dst_t[~remote], weights=nbytes[~remote], minlength=ntiles)
            local_rows = np.bincount(dst_t[~remote], minlength=ntiles)
            step.local_cycles = int(cyc.copy_cycles(device, local_bytes, local_rows).max()) if (~remote).any() else 0
            if remote.any():
                # the exchange multicasts: a run sent to several tiles leaves its tile once
                key = np.unique((step.rows[remote, 1] << 32) | step.rows[remote, 2])
                sent = np.bincount((key >> 32) // tm, weights=key & 0xFFFFFFFF, minlength=ntiles)
                recv = np.bincount(dst_t[remote], weights=nbytes[remote], minlength=ntiles)
                msgs = np.bincount(dst_t[remote], minlength=ntiles)
                step.exchange_cycles = cyc.exchange_cycles(device, sent, recv, msgs)
                step.exchange_bytes = int(nbytes[remote].sum())
        elif isinstance(step, (StreamIn, StreamOut)):
            step.cycles = cyc.host_stream_cycles(device, step.nbytes)
