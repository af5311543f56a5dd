"""Per-tile memory plan with liveness, and the step that turns symbolic addresses into absolute ones.

Every tensor's storage on a tile is a block. A block is live from the first program step that touches it to
the last (blocks touched inside a loop stay live for the whole loop; constants and variables always). The infeed
loop around a whole step (Repeat FED) is the exception: the lowered step writes each of its values before reading
it, so a block that lives only inside that loop's body is an iteration's own and keeps its own lifetime; only
blocks that live on before or after the loop stretch over it. The branches of an ``If`` or ``Switch`` are laid out
one after the other and need nothing more: one branch runs, once, touching a block only within the block's span
of that layout, and no branch reads what another writes (every branch writes all the outputs), so blocks whose
spans do not overlap are never live at once on any path. A branch's temporaries then live from their first use
to their last, not for the whole conditional (an optimizer's new weights, computed one after the other). On each
tile, blocks are placed first-fit by offset so that blocks whose lifetimes do not overlap share memory. Tiles
with the same blocks in the same order (the common case: tensors spread evenly) are planned once.
"""
from __future__ import annotations


import numpy as np

from kernels import cycles as cyc
from kernels.executable import MemoryReport
from kernels.program import FED, Copy, Execute, If, Repeat, StreamIn, StreamOut, Switch, While

from ..errors import TileMemoryError
from .tensor import OFFSET_BITS, OFFSET_MASK

try:
    from kernels.codelets import copyplan as _copyplan
    from kernels.codelets import firstfit as _firstfit
    from kernels.codelets.firstfit import first_fit as _first_fit
except ImportError:  # pragma: no cover - the Cython extensions are not built
    _copyplan = _firstfit = _first_fit = None

ALWAYS_LIVE = ("constant", "variable")
VERTEX_FIELD_BYTES = 4         # a vertex field is a 32-bit pointer or count on the IPU
VERTEX_BASE_BYTES = 8
COPY_DESCRIPTOR_BYTES = 8      # a plain copy row (one run): addresses and length, packed (our estimate)
STRIDED_DESCRIPTOR_BYTES = 16  # a strided row: a plain row plus count and both strides (our estimate)


def _flatten(seq, out, loops):
    for step in seq.steps:
        out.append(step)
        if isinstance(step, Repeat):
            start = len(out)
            _flatten(step.body, out, loops)
            loops.append((start, len(out) - 1, step.count == FED))
        elif isinstance(step, If):
            _flatten(step.then_body, out, loops)          # branches: straight-line code (module docstring)
            _flatten(step.else_body, out, loops)
        elif isinstance(step, While):
            start = len(out)
            _flatten(step.cond, out, loops)
            _flatten(step.body, out, loops)
            loops.append((start, len(out) - 1, False))    # condition and body run again and again: one loop
        elif isinstance(step, Switch):
            for branch in step.branches:
                _flatten(branch, out, loops)


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


def _step_tables(step):
    """(int64 table, address columns) pairs that hold a step's symbolic addresses, or None when it has others."""
    if isinstance(step, Execute):
        tables = [(g.records, g.addr_cols) for g in step.cs.groups]
    elif isinstance(step, Copy):
        tables = [(step.rows, (0, 1))]
    elif isinstance(step, (StreamIn, StreamOut)):
        tables = [(step.rows, (0,))]
    else:
        return None
    if all(t.dtype == np.int64 and t.ndim == 2 for t, _ in tables):
        return [(t, np.asarray(cols, np.int64)) for t, cols in tables]
    return None


def mark_used(steps, owner: np.ndarray, mark: np.ndarray, value: int) -> None:
    """``mark[owner[b]] = value`` for every block b that ``steps`` use (an owner of -1 marks nothing)."""
    for step in steps:
        tables = _step_tables(step) if _firstfit is not None and owner.dtype == np.int64 else None
        if tables is None:
            syms = _step_syms(step)
            if syms:
                o = owner[np.concatenate(syms) >> OFFSET_BITS]
                mark[o[o >= 0]] = value
            continue
        for table, cols in tables:
            _firstfit.mark_owners(table, cols, owner, mark, value)


def _vertex_state(step, block_tiles, num_tiles):
    """Bytes of vertex descriptors and copy descriptors this step keeps on each tile (always live)."""
    out = np.zeros(num_tiles, np.int64)
    if isinstance(step, Execute):
        for g in step.cs.groups:
            per = VERTEX_BASE_BYTES + VERTEX_FIELD_BYTES * g.records.shape[1]
            out += np.bincount(g.tiles, minlength=num_tiles).astype(np.int64) * per
    elif isinstance(step, Copy) and len(step.rows):
        out += copy_descriptor_bytes(step.rows, block_tiles[step.rows[:, 0] >> OFFSET_BITS], num_tiles)
    return out


def copy_descriptor_bytes(rows: np.ndarray, dst_tiles: np.ndarray, num_tiles: int) -> np.ndarray:
    """Bytes of copy descriptors each tile keeps for ``rows`` (kept by the tile that receives)."""
    per_row = np.where(rows[:, 3] > 1, STRIDED_DESCRIPTOR_BYTES, COPY_DESCRIPTOR_BYTES)
    return np.bincount(dst_tiles, weights=per_row, minlength=num_tiles).astype(np.int64)


def _place_numpy(sizes, first, last):
    """First-fit placement of blocks with lifetimes; returns offsets and the extent (highest end).

    Blocks are placed in order of first use (largest first among equals); each goes at the lowest offset where
    it does not overlap a placed block whose lifetime overlaps its own. Placed blocks are visited in order of
    offset: a gap before a block's offset that holds the new one ends the search. Since blocks come in order of
    first use, a placed block that died before the current one's first use can never overlap a later one: it is
    dropped from the active set, so each placement only looks at the blocks alive at that point."""
    sizes = np.asarray(sizes, np.int64)
    first = np.asarray(first, np.int64)
    last = np.asarray(last, np.int64)
    n = len(sizes)
    order = np.lexsort((-sizes, first))
    offsets = np.zeros(n, np.int64)
    act_off = np.zeros(0, np.int64)      # the active set (placed, still alive), kept sorted by (offset, end)
    act_end = np.zeros(0, np.int64)
    act_last = np.zeros(0, np.int64)
    big = np.iinfo(np.int64).max
    min_last = big                       # the earliest death in the active set: nothing to drop before it
    for i in order.tolist():
        s, f, l = int(sizes[i]), int(first[i]), int(last[i])
        if f > min_last:
            alive = act_last >= f
            act_off, act_end, act_last = act_off[alive], act_end[alive], act_last[alive]
            min_last = int(act_last.min()) if len(act_last) else big
        if len(act_off):
            # offset reached before each active block = the highest end among the blocks before it
            reach = np.maximum.accumulate(act_end)
            before = np.empty_like(reach)
            before[0] = 0
            before[1:] = reach[:-1]
            fits = before + s <= act_off
            k = int(np.argmax(fits))
            off = int(before[k]) if fits[k] else max(int(reach[-1]), 0)
        else:
            off = 0
        offsets[i] = off
        # insert keeping (offset, end) order; a block alive at f with last < later firsts is dropped above
        pos = int(np.searchsorted(act_off, off, side="right"))
        while pos > 0 and act_off[pos - 1] == off and act_end[pos - 1] > off + s:
            pos -= 1
        act_off = np.concatenate((act_off[:pos], [off], act_off[pos:]))
        act_end = np.concatenate((act_end[:pos], [off + s], act_end[pos:]))
        act_last = np.concatenate((act_last[:pos], [l], act_last[pos:]))
        min_last = min(min_last, l)
    extent = int((offsets + sizes).max()) if n else 0
    return offsets, extent


def _place(sizes, first, last):
    """First-fit placement of blocks with lifetimes (the C version when built, else ``_place_numpy``)."""
    if _first_fit is None:
        return _place_numpy(sizes, first, last)
    sizes = np.ascontiguousarray(sizes, np.int64)
    first = np.ascontiguousarray(first, np.int64)
    last = np.ascontiguousarray(last, np.int64)
    offsets = _first_fit(sizes, first, last, np.lexsort((-sizes, first)).astype(np.int64))
    extent = int((offsets + sizes).max()) if len(sizes) else 0
    return offsets, extent


def _place_tiles(live_blocks, block_tiles, block_bytes, first, last, tile_memory, base, extent) -> None:
    """Place the live blocks of every tile (``_place``): fills their base addresses and each tile's extent."""
    if not len(live_blocks):
        return
    if _firstfit is None:
        by_order = live_blocks[np.argsort(block_tiles[live_blocks], kind="stable")]   # by tile, block order kept
        cuts = np.flatnonzero(np.diff(block_tiles[by_order])) + 1
        memo = {}
        for blocks in np.split(by_order, cuts):
            tile = int(block_tiles[blocks[0]])
            key = (block_bytes[blocks].tobytes(), first[blocks].tobytes(), last[blocks].tobytes())
            if key not in memo:
                memo[key] = _place(block_bytes[blocks], first[blocks], last[blocks])
            offsets, extent[tile] = memo[key]
            base[blocks] = tile * tile_memory + offsets
        return
    # all tiles in one call: blocks by tile, then in each tile's ``_place`` order (block id on ties)
    tiles = block_tiles[live_blocks]
    sizes = np.ascontiguousarray(block_bytes[live_blocks], np.int64)
    order = np.lexsort((-sizes, first[live_blocks], tiles)).astype(np.int64)
    tile_of = tiles[order]
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(tile_of)) + 1, [len(order)]]).astype(np.int64)
    offsets = _firstfit.first_fit_tiles(sizes, np.ascontiguousarray(first[live_blocks], np.int64),
                                        np.ascontiguousarray(last[live_blocks], np.int64), order, bounds)
    extent[tile_of[bounds[:-1]]] = np.maximum.reduceat((offsets + sizes)[order], bounds[:-1])
    base[live_blocks] = tiles * tile_memory + offsets


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
        tables = _step_tables(step) if _firstfit is not None else None
        if tables is None:
            for syms in _step_syms(step):
                if len(syms):
                    b = syms >> OFFSET_BITS
                    np.minimum.at(first, b, i)
                    np.maximum.at(last, b, i)
            vertex_state += _vertex_state(step, block_tiles, ntiles)
            continue
        for table, cols in tables:
            _firstfit.touch_blocks(table, cols, first, last, i)
        if isinstance(step, Copy):
            _firstfit.copy_state(step.rows, block_tiles, vertex_state, COPY_DESCRIPTOR_BYTES,
                                 STRIDED_DESCRIPTOR_BYTES)
        else:
            vertex_state += _vertex_state(step, block_tiles, ntiles)
    # categories as small codes per block (names looked up once per tensor, not once per block)
    cat_names = sorted({t.category for t in builder.tensors})
    code_of = {c: k for k, c in enumerate(cat_names)}
    tensor_cat = np.array([code_of[t.category] for t in builder.tensors], np.int8)
    categories = tensor_cat[block_tensor] if nblocks else np.zeros(0, np.int8)
    always = np.isin(categories, [code_of[c] for c in ALWAYS_LIVE if c in code_of])
    first[always] = 0
    last[always] = nsteps
    for s, e, own_values in loops:
        if own_values:                       # the infeed loop: see the module's docstring
            before = (first < s) & (last >= s)
            last[before] = np.maximum(last[before], e)
            after = (first >= s) & (first <= e) & (last > e)
            first[after] = s
            continue
        inside = (last >= s) & (first <= e)
        first[inside] = np.minimum(first[inside], s)
        last[inside] = np.maximum(last[inside], e)
    used = last >= 0

    base = np.zeros(nblocks, np.int64)
    extent = np.zeros(ntiles, np.int64)
    _place_tiles(np.flatnonzero(used), block_tiles, block_bytes, first, last, device.tile_memory, base, extent)

    peak = extent + vertex_state
    available = device.usable_tile_memory
    over = np.flatnonzero(peak > available)
    if len(over):
        worst = int(over[np.argmax(peak[over])])
        raise _oom(builder, device, worst, int(peak[worst]), available, block_tiles, block_bytes, block_tensor,
                   first, last, used, steps)

    by_category = {}
    for code in np.unique(categories[used]) if nblocks else []:       # codes follow the sorted names
        sel = used & (categories == code)
        by_category[cat_names[code]] = np.bincount(block_tiles[sel], weights=block_bytes[sel],
                                                   minlength=ntiles).astype(np.int64)
    by_category["vertex_state"] = vertex_state
    always_bytes = np.bincount(block_tiles[always & used], weights=block_bytes[always & used],
                               minlength=ntiles).astype(np.int64) if nblocks else np.zeros(ntiles, np.int64)
    report = MemoryReport(always_live=always_bytes + vertex_state, peak=peak, by_category=by_category,
                          tile_memory=device.tile_memory)
    return base, report, steps


def _oom(builder, device, tile, needed, available, block_tiles, block_bytes, block_tensor, first, last, used, steps):
    """The error for a tile that does not fit: what is live on it at its busiest step (tensors by category,
    largest first) and the program state it keeps (vertex state and copy descriptors, by step)."""
    on_tile = np.flatnonzero((block_tiles == tile) & used)
    best_step, best_bytes = 0, -1
    for s in np.unique(first[on_tile]):
        live = on_tile[(first[on_tile] <= s) & (last[on_tile] >= s)]
        total = int(block_bytes[live].sum())
        if total > best_bytes:
            best_step, best_bytes = s, total
    live = on_tile[(first[on_tile] <= best_step) & (last[on_tile] >= best_step)]
    tensors: dict[str, int] = {}
    for b in live:
        cat = builder.tensors[int(block_tensor[b])].category
        tensors[cat] = tensors.get(cat, 0) + int(block_bytes[b])
    live = live[np.argsort(-block_bytes[live])][:8]
    largest = []
    for b in live:
        t = builder.tensors[int(block_tensor[b])]
        largest.append((t.name, int(block_bytes[b]), t.category, t.origin))
    program = {"vertex state": 0, "copy descriptors": 0}
    by_step = []
    for step in steps:
        if isinstance(step, (Execute, Copy)):
            nbytes = int(_vertex_state(step, block_tiles, device.num_tiles)[tile])
            if nbytes:
                program["vertex state" if isinstance(step, Execute) else "copy descriptors"] += nbytes
                origin = step.cs.origin if isinstance(step, Execute) else step.origin
                by_step.append((step.name, nbytes, origin))
    by_step.sort(key=lambda r: -r[1])
    return TileMemoryError(device, tile, needed, available, largest, tensors, program, by_step[:8])


def resolve(builder, base: np.ndarray, steps) -> None:
    """Replace symbolic addresses (block << 32 | offset) by absolute device addresses, in place."""
    def absolute(sym):
        return base[sym >> OFFSET_BITS] + (sym & OFFSET_MASK)

    fast = _firstfit is not None and base.dtype == np.int64 and base.flags.c_contiguous
    for step in steps:
        tables = _step_tables(step) if fast else None
        if tables is not None:
            for table, cols in tables:
                _firstfit.resolve_cols(table, cols, base)
        elif isinstance(step, Execute):
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
            _copy_cycles(device, step)
        elif isinstance(step, (StreamIn, StreamOut)):
            step.cycles = cyc.host_stream_cycles(device, step.nbytes)


def _copy_cycles(device, step: Copy) -> None:
    """Cycles of a copy step (``_copy_cycles_numpy`` says how; this is the same in C when it is built)."""
    if _copyplan is None:
        return _copy_cycles_numpy(device, step)
    ntiles, tm = device.num_tiles, device.tile_memory
    rows = np.ascontiguousarray(step.rows, np.int64)
    local_bytes, local_runs, recv, msgs, keys, strided, moved = _copyplan.copy_traffic(rows, tm, ntiles)
    # no local rows: every tile's local bytes and runs are 0, and so is the most any tile spends
    step.local_cycles = int(cyc.copy_cycles(device, local_bytes.astype(np.float64),
                                            local_runs.astype(np.float64)).max()) if len(rows) else 0
    if len(keys) or len(strided):
        keys.sort()
        sent = _copyplan.sent_once(keys, tm, ntiles)
        if len(strided):
            s = rows[strided]
            src, nb, cnt, stride = s[:, 1], s[:, 2], s[:, 3], s[:, 5]
            o = np.lexsort((stride, cnt, nb, src))
            src, nb, cnt, stride = src[o], nb[o], cnt[o], stride[o]
            first = np.ones(len(src), bool)
            first[1:] = (src[1:] != src[:-1]) | (nb[1:] != nb[:-1]) | (cnt[1:] != cnt[:-1]) | (stride[1:] != stride[:-1])
            sent += np.bincount(src[first] // tm, weights=nb[first] * cnt[first], minlength=ntiles).astype(np.int64)
        step.exchange_cycles = cyc.exchange_cycles(device, sent.astype(np.float64), recv.astype(np.float64),
                                                   msgs.astype(np.float64))
        step.exchange_bytes = int(moved)


def _copy_cycles_numpy(device, step: Copy) -> None:
    """Cycles of a copy step: each run of a row costs what a plain row would (a strided row saves descriptor
    memory, not time). On-tile runs are store-bound with a per-run overhead; the exchange takes as long as the
    tile that sends or receives the most, with a message per run received, and multicasts: the same source
    pattern sent to several tiles leaves its tile once."""
    ntiles, tm = device.num_tiles, device.tile_memory
    rows = step.rows
    dst_t, src_t = rows[:, 0] // tm, rows[:, 1] // tm
    count = rows[:, 3]
    nbytes = rows[:, 2] * count
    remote = dst_t != src_t
    local = ~remote
    if local.any():
        local_bytes = np.bincount(dst_t[local], weights=nbytes[local], minlength=ntiles)
        local_runs = np.bincount(dst_t[local], weights=count[local], minlength=ntiles)
        step.local_cycles = int(cyc.copy_cycles(device, local_bytes, local_runs).max())
    else:
        step.local_cycles = 0
    if remote.any():
        src, cnt = rows[remote, 1], count[remote]
        plain = cnt == 1
        # plain runs: (source, bytes) as one exact key (a run never exceeds its tile's memory); sorted, not hashed
        key = np.sort(src[plain] * (tm + 1) + rows[remote, 2][plain], kind="stable")
        first = np.ones(len(key), bool)
        first[1:] = key[1:] != key[:-1]
        key = key[first]
        sent = np.bincount(key // (tm + 1) // tm, weights=key % (tm + 1), minlength=ntiles).astype(np.float64)
        if not plain.all():
            s = rows[remote][~plain]
            src, nb, cnt, stride = s[:, 1], s[:, 2], s[:, 3], s[:, 5]
            o = np.lexsort((stride, cnt, nb, src))
            src, nb, cnt, stride = src[o], nb[o], cnt[o], stride[o]
            first = np.ones(len(src), bool)
            first[1:] = (src[1:] != src[:-1]) | (nb[1:] != nb[:-1]) | (cnt[1:] != cnt[:-1]) | (stride[1:] != stride[:-1])
            sent += np.bincount(src[first] // tm, weights=nb[first] * cnt[first], minlength=ntiles)
        dst_r = dst_t[remote]
        recv = np.bincount(dst_r, weights=nbytes[remote], minlength=ntiles)
        msgs = np.bincount(dst_r, weights=count[remote], minlength=ntiles)
        step.exchange_cycles = cyc.exchange_cycles(device, sent, recv, msgs)
        step.exchange_bytes = int(nbytes[remote].sum())
