"""The matmul planner: how to partition a batched matmul [B,M,K] x [B,K,N] over the tiles.

A plan splits B, M, N and K into pb x pm x pn x pk parts; each tile gets one block of each and computes a
partial [Bb, Mb, Nb] with its AMP unit; when K is split (pk > 1) the partials are reduced afterwards. The cost
model adds the busiest tile's compute cycles, the bytes it must receive (its A and B blocks, and partials to
reduce) at the exchange bandwidth, and the reduction; plans that need more than half a tile's memory are
rejected. Blocks are padded to equal sizes, which the cost model counts as work.
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


def plan_matmul(device, B: int, M: int, N: int, K: int, itemsize: int, dtype: str) -> MatmulPlan:
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
    exchange = in_bytes / device.exchange_bytes_per_cycle
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
