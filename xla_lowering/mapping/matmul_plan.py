"""The matmul planner: how to partition a batched matmul [B,M,K] x [B,K,N] over the tiles.

A plan splits B, M, N and K into pb x pm x pn x pk parts; each tile gets one block of each and computes a
partial [Bb, Mb, Nb] with its AMP unit; when K is split (pk > 1) the partials are reduced afterwards. The cost
model adds the busiest tile's compute cycles, the bytes it must receive (its A and B blocks, and partials to
reduce) at the exchange bandwidth plus a message overhead for every contiguous run of them, and the reduction;
plans that need more than half a tile's memory are rejected. Blocks are padded to equal sizes, which the cost
model counts as work.

The runs of a block depend on how its operand's elements lie in memory: ``Contiguity`` says, for each operand,
which fraction of neighbouring elements along each axis are also neighbours in the operand (1 along K of a
row-major A). A block is staged along whichever of its axes has longer runs, so a block of R x C elements
staged along C arrives in about R * (1 + (C - 1) * (1 - fraction along C)) messages. This is what makes the
planner keep the contiguous dimension of an operand whole where that costs little, as the cycle model
(kernels/cycles.exchange_cycles) charges every message.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernels import cycles as cyc

MEMORY_FRACTION = 0.5       # of a tile's usable memory that one matmul's blocks may take


@dataclass(frozen=True)
class MatmulPlan:
    pb: int
    pm: int
    pn: int
    pk: int
    Bb: int
    Mb: int
    Nb: int
    Kb: int
    cycles: int
    bytes_per_tile: int

    @property
    def tiles(self) -> int:
        return self.pb * self.pm * self.pn * self.pk


def _candidates(d: int, limit: int) -> np.ndarray:
    """Split counts worth trying for a dimension of size d: every count giving a distinct block size."""
    blocks = np.unique(-(-d // np.arange(1, min(d, limit) + 1)))
    parts = np.unique(-(-d // blocks))
    return parts[parts <= limit]


@dataclass(frozen=True)
class Contiguity:
    """Fractions of neighbouring elements that are neighbours in memory: A along K and M, B along K and N; and
    of whole rows (columns) that continue where the previous one ends, which joins the runs of a block that
    spans the whole row (column): A's rows along K, A's columns along M, B's columns along K, B's rows along N."""
    a_k: float = 1.0
    a_m: float = 0.0
    b_k: float = 0.0
    b_n: float = 1.0
    a_k_wrap: float = 1.0
    a_m_wrap: float = 0.0
    b_k_wrap: float = 0.0
    b_n_wrap: float = 1.0


def _messages(rows, cols, full_rows: int, full_cols: int, along_rows: float, along_cols: float,
              wrap_rows: float, wrap_cols: float):
    """Runs of a rows x cols block (of a full_rows x full_cols operand) staged along whichever axis keeps more
    neighbours together; a block as wide as the operand joins a row's last run to the next row's first."""
    if along_cols >= along_rows:
        return rows * (1 + (cols - 1) * (1 - along_cols)) - np.where(cols == full_cols, (rows - 1) * wrap_cols, 0)
    return cols * (1 + (rows - 1) * (1 - along_rows)) - np.where(rows == full_rows, (cols - 1) * wrap_rows, 0)


def plan_matmul(device, B: int, M: int, N: int, K: int, itemsize: int, dtype: str,
                contiguity: Contiguity = Contiguity()) -> MatmulPlan:
    T = device.num_tiles
    budget = device.usable_tile_memory * MEMORY_FRACTION
    pisz = 4 if dtype in ("f16", "f32") else itemsize
    pb, pm, pn, pk = np.meshgrid(_candidates(B, T), _candidates(M, T), _candidates(N, T), _candidates(K, T),
                                 indexing="ij")
    pb, pm, pn, pk = (a.reshape(-1) for a in (pb, pm, pn, pk))
    ok = pb * pm * pn * pk <= T
    pb, pm, pn, pk = pb[ok], pm[ok], pn[ok], pk[ok]
    Bb, Mb, Nb, Kb = -(-B // pb), -(-M // pm), -(-N // pn), -(-K // pk)
    compute = Bb * cyc.matmul_cycles(device, Mb, Nb, Kb, dtype)
    in_bytes = Bb * (Mb * Kb + Kb * Nb) * itemsize
    out_bytes = Bb * Mb * Nb * pisz
    c = contiguity
    messages = Bb * (_messages(Mb, Kb, M, K, c.a_m, c.a_k, c.a_m_wrap, c.a_k_wrap)
                     + _messages(Kb, Nb, K, N, c.b_k, c.b_n, c.b_k_wrap, c.b_n_wrap))
    exchange = in_bytes / device.exchange_bytes_per_cycle + messages * device.exchange_message_cycles
    # K split: every partial is exchanged once more and added; outputs spread over all tiles
    reduce = np.where(pk > 1, out_bytes / device.exchange_bytes_per_cycle
                      + (B * M * N * pk) / max(T, 1) / device.f32_vector_width + 2 * device.sync_cycles, 0)
    cost = compute + exchange + reduce
    mem = in_bytes + out_bytes
    fits = mem <= budget
    if not fits.any():
        fits = mem == mem.min()          # nothing fits: take the smallest; the memory plan will say where
    cost = np.where(fits, cost, np.inf)
    best = int(np.lexsort((pb * pm * pn * pk, cost))[0])
    return MatmulPlan(int(pb[best]), int(pm[best]), int(pn[best]), int(pk[best]), int(Bb[best]), int(Mb[best]),
                      int(Nb[best]), int(Kb[best]), int(cost[best]), int(mem[best]))
