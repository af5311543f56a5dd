"""Cycle estimators: one per codelet, plus exchange and sync, in tile clock cycles.

The model follows Poplar's IPU Model in shape: a compute set takes as long as its busiest tile; a tile's time is
the sum of its vertices' estimates (six barrel-scheduled workers share one issue slot, so vertices split over
workers cost their total instruction count); an exchange takes as long as the tile that sends or receives the
most bytes at the per-tile exchange bandwidth; every compute set and exchange ends at a sync.
Figures come from ``kernels/device.py``; per-op costs from ``kernels/expr_ops.py``.
"""
from __future__ import annotations

import numpy as np

from .device import DeviceModel
from .dtypes import itemsize
from .expr_ops import COST

VERTEX_OVERHEAD = 30          # vertex entry, field loads and worker dispatch (our estimate)
ROW_OVERHEAD = 4              # per output row of a reduction, per copy descriptor (our estimate)


def _vector_width(device: DeviceModel, dtype: str) -> int:
    if dtype == "f16":
        return device.f16_vector_width
    if dtype in ("f32", "s32", "u32"):
        return device.f32_vector_width
    return 1


def expr_cycles(device: DeviceModel, n: np.ndarray, ops: list[str], dtype: str) -> np.ndarray:
    """Expression vertices over ``n`` elements each: cost of the op sequence per vector of elements."""
    per_vector = max(1, sum(COST.get(op, 1) for op in ops))
    vec = _vector_width(device, dtype)
    return VERTEX_OVERHEAD + np.ceil(n / vec).astype(np.int64) * per_vector


def matmul_cycles(device: DeviceModel, m: np.ndarray, n: np.ndarray, k: np.ndarray, dtype: str) -> np.ndarray:
    """AMP blocks: M*N*K multiply-accumulates at the tile's MAC rate, plus writing the M*N partials."""
    macs = device.f16_macs_per_cycle if dtype == "f16" else device.f32_macs_per_cycle
    if dtype not in ("f16", "f32"):
        macs = 1                                   # no AMP for integers or f64: one MAC a cycle
    return VERTEX_OVERHEAD + np.ceil(m * n * k / macs).astype(np.int64) + m * n // 2


def reduce_cycles(device: DeviceModel, rows: np.ndarray, row_len: np.ndarray, dtype: str,
                  column=False) -> np.ndarray:
    """Reduce vertices of ``rows`` outputs of ``row_len`` elements each. Contiguous rows are vectorised along the
    row (a descriptor per row); ``column`` records (the outputs adjacent in memory, a row's elements strided, as
    the first stage over channels-last data reads them) are vectorised across the outputs, as PopLibs' strided
    reduce vertex does: one vector op per vector of outputs and element, a loop step per element."""
    vec = _vector_width(device, dtype)
    rows, row_len = np.asarray(rows, np.int64), np.asarray(row_len, np.int64)
    by_row = rows * (ROW_OVERHEAD + np.ceil(row_len / vec).astype(np.int64))
    out_vecs = np.ceil(rows / vec).astype(np.int64)
    by_column = ROW_OVERHEAD * out_vecs + row_len * (out_vecs + 1)
    return VERTEX_OVERHEAD + np.where(column, by_column, by_row)


def rng_cycles(device: DeviceModel, n: np.ndarray, dtype: str, normal: bool) -> np.ndarray:
    # the tile PRNG gives 64 random bits a cycle; a normal sample costs a Box-Muller transform on top
    vec = _vector_width(device, dtype)
    per = 12 if normal else 1
    return VERTEX_OVERHEAD + np.ceil(n / vec).astype(np.int64) * per


def dynamic_slice_cycles(device: DeviceModel, n_index: np.ndarray, n_dims: int, rows_per_index: int,
                         width: np.ndarray, dtype: str, combine: bool) -> np.ndarray:
    """multiSlice / multiUpdate vertices (our estimate, not measured): per index vector ~3 cycles a dimension to
    load, bound and scale its start, +2 to form the row address; per row a descriptor (ROW_OVERHEAD) plus the copy
    at the store bandwidth (memcpy_bytes_per_cycle) or, when combining, 2 cycles a vector (load both, op, store)."""
    if combine:
        per_row = 2 * np.ceil(width / _vector_width(device, dtype)).astype(np.int64)
    else:
        per_row = np.ceil(width * itemsize(dtype) / device.memcpy_bytes_per_cycle).astype(np.int64)
    return VERTEX_OVERHEAD + n_index * (3 * n_dims + 2) + n_index * rows_per_index * (ROW_OVERHEAD + per_row)


def copy_cycles(device: DeviceModel, nbytes_per_tile: np.ndarray, rows_per_tile: np.ndarray) -> np.ndarray:
    """On-tile copies: store-bound at memcpy_bytes_per_cycle, with a descriptor cost per contiguous run."""
    return np.ceil(nbytes_per_tile / device.memcpy_bytes_per_cycle).astype(np.int64) + rows_per_tile * ROW_OVERHEAD


def exchange_cycles(device: DeviceModel, sent: np.ndarray, received: np.ndarray, messages: np.ndarray) -> int:
    """Exchange phase: the busiest tile's bytes at the per-tile bandwidth plus per-message overheads."""
    if len(sent) == 0:
        return 0
    per_tile = np.maximum(sent, received) / device.exchange_bytes_per_cycle + messages * device.exchange_message_cycles
    return int(np.ceil(per_tile.max()))


def host_stream_cycles(device: DeviceModel, nbytes: int) -> int:
    """Host <-> IPU over PCIe: 64 GB/s (Gen4 x16, mk2) or 16 GB/s (Gen3 x16, mk1) in the device's cycles."""
    bytes_per_s = 64e9 if device.name == "mk2" else 16e9
    return int(np.ceil(nbytes / bytes_per_s * device.clock_hz))
