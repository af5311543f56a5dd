"""Merging adjacent exchanges (xla_lowering/mapping/exchanges.py): hazard-free neighbours become one phase."""
from __future__ import annotations

import numpy as np
from hypothesis import given, strategies as st

from kernels.codelets import copy as copy_codelets
from kernels.program import Copy, Execute, ComputeSet, Repeat, Sequence
from xla_lowering.mapping.exchanges import merge_exchanges
from xla_lowering.mapping.tensor import OFFSET_BITS

BLOCK = 64          # bytes of each storage block in these tests


def _copy(name, dst_block, src_block, n=4, dst_off=0, src_off=0):
    return Copy(name, np.array([[(dst_block << OFFSET_BITS) + dst_off, (src_block << OFFSET_BITS) + src_off, n]],
                               np.int64))


def test_independent_copies_merge_and_hazards_do_not():
    a = _copy("conv.1/patch_boxes", 1, 0)
    b = _copy("conv.1/rhs_blocks", 2, 0)            # reads what a reads, writes elsewhere: merged
    c = _copy("add.2/in0", 3, 2)                    # reads what b wrote: a new phase
    d = _copy("add.2/in1", 0, 5)                    # writes what a read, but a is an earlier phase: joins c
    e = _copy("mul.3", 3, 6)                        # writes what c wrote: a new phase
    seq = Sequence([a, b, c, d, e])
    assert merge_exchanges(seq) == 2
    assert [s.name for s in seq.steps] == ["conv.1/patch_boxes+rhs_blocks", "add.2/in0+in1", "mul.3"]
    assert len(seq.steps[0].rows) == 2 and len(seq.steps[1].rows) == 2


def test_other_steps_separate_exchanges_and_loops_are_merged_inside():
    cs = Execute(ComputeSet("relu", []))
    body = Sequence([_copy("x", 1, 0), _copy("y", 2, 0)])
    seq = Sequence([_copy("a", 1, 0), cs, _copy("b", 2, 0), Repeat(3, body)])
    assert merge_exchanges(seq) == 1
    assert [type(s).__name__ for s in seq.steps] == ["Copy", "Execute", "Copy", "Repeat"]
    assert [s.name for s in body.steps] == ["x + y"]


@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 15), st.integers(0, 15),
                          st.integers(1, 16)), min_size=1, max_size=12), st.integers(0, 2 ** 32 - 1))
def test_merged_program_moves_the_same_bytes(copies, seed):
    """Any list of copies among a few blocks: running the merged steps gives the memory the original order gives."""
    steps = [_copy(f"c{i}", d, s, n, do * 3, so * 3) for i, (d, s, do, so, n) in enumerate(copies) if d != s]
    if not steps:
        return
    init = np.random.default_rng(seed).integers(0, 256, 5 * BLOCK).astype(np.uint8)

    def run(seq):
        mem = init.copy()
        for step in seq.steps:
            rows = step.rows.copy()
            for col in (0, 1):
                rows[:, col] = (rows[:, col] >> OFFSET_BITS) * BLOCK + (rows[:, col] & ((1 << OFFSET_BITS) - 1))
            copy_codelets.run_copies(mem, rows)
        return mem

    want = run(Sequence([Copy(s.name, s.rows.copy()) for s in steps]))
    merged = Sequence(steps)
    merge_exchanges(merged)
    np.testing.assert_array_equal(run(merged), want)
