"""Host memory of the compiler: bounded per-element address caches, compact copy rows, and the fast paths that
save memory and time giving what the general paths give."""
from __future__ import annotations

import gc

import numpy as np
from hypothesis import given, settings, strategies as st

from kernels.device import DEVICES
from kernels.program import Copy, walk
from xla_lowering.hlo.ir import Shape
from xla_lowering.mapping import tensor as tensor_mod
from xla_lowering.mapping.tensor import DTensor, copy_runs
from xla_lowering.program import ProgramBuilder

DEV = DEVICES["mk2"].with_tiles(16)


def _reference_syms(t: DTensor) -> np.ndarray:
    out = np.empty(t.size, np.int64)
    for start, count, sym in zip(t.starts, t.counts, t.syms):
        out[start:start + count] = sym + np.arange(count) * t.itemsize
    return out


def _tensor(b: ProgramBuilder, n: int, cuts, tiles, name: str) -> DTensor:
    starts = np.array([0] + sorted(set(c for c in cuts if 0 < c < n)), np.int64)
    counts = np.diff(np.append(starts, n))
    tile_of = np.array([tiles[k % len(tiles)] for k in range(len(starts))], np.int64)
    return b.add_tensor(Shape("f32", (n,)), tile_of, starts, counts, name)


def test_element_syms_cache_is_bounded_and_values_unchanged(monkeypatch):
    cache = tensor_mod._SymsCache(3 * 8 * 100)
    monkeypatch.setattr(tensor_mod, "_SYMS_CACHE", cache)
    b = ProgramBuilder(DEV)
    ts = [b.linear(Shape("f32", (100,)), f"t{k}") for k in range(6)]
    for t in ts:
        syms = t.element_syms()
        np.testing.assert_array_equal(syms, _reference_syms(t))
        assert not syms.flags.writeable
    assert cache.bytes <= cache.budget
    assert [t._elem_syms is not None for t in ts] == [False, False, False, True, True, True]
    ts[3].element_syms()                        # touched: now the most recent, so t4 goes first
    ts[0].element_syms()
    assert ts[4]._elem_syms is None and ts[3]._elem_syms is not None
    # cache=False computes the same addresses without keeping them
    t = b.linear(Shape("f32", (50,)), "once")
    np.testing.assert_array_equal(t.element_syms(cache=False), _reference_syms(t))
    assert t._elem_syms is None
    # a tensor that is gone leaves the cache (and its bytes)
    before = cache.bytes
    del ts[:], b, t
    gc.collect()
    assert cache.bytes < before


def test_copy_rows_do_not_keep_the_buffer_they_were_cut_from():
    n = 4096
    dst = (1 << 32) + np.arange(n, dtype=np.int64) * 4
    src = (2 << 32) + np.arange(n, dtype=np.int64)[::-1] * 4        # reversed: every element its own run
    rows = copy_runs(dst, src, 4)
    assert rows.base is None or rows.base.nbytes == rows.nbytes


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 300), st.integers(1, 300), st.lists(st.integers(0, 300), max_size=8),
       st.lists(st.integers(0, 300), max_size=8), st.lists(st.integers(0, 15), min_size=1, max_size=4),
       st.sampled_from(["arange", "reverse", "stride", "random", "repeat"]), st.integers(0, 2 ** 31))
def test_rearrange_single_source_fast_path_gives_the_general_rows(n_src, n_dst, src_cuts, dst_cuts, tiles, kind,
                                                                 seed):
    rng = np.random.default_rng(seed)
    if kind == "arange":
        index = np.arange(n_dst) % n_src
    elif kind == "reverse":
        index = (n_dst - 1 - np.arange(n_dst)) % n_src
    elif kind == "stride":
        index = (np.arange(n_dst) * int(rng.integers(1, 7))) % n_src
    elif kind == "repeat":
        index = np.repeat(np.arange(n_src), -(-n_dst // n_src))[:n_dst]
    else:
        index = rng.integers(0, n_src, n_dst)

    def rows(general: bool):
        b = ProgramBuilder(DEV)
        src = _tensor(b, n_src, src_cuts, tiles, "src")
        dst = _tensor(b, n_dst, dst_cuts, tiles[::-1], "dst")
        which = np.zeros(n_dst, np.int64) if general else None
        b.rearrange(dst, [src], index, which, name="r")
        copies = [s.rows for s in walk(b.root) if isinstance(s, Copy)]
        return np.concatenate(copies) if copies else np.zeros((0, 6), np.int64)

    np.testing.assert_array_equal(rows(False), rows(True))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 200), st.lists(st.integers(0, 200), max_size=6), st.integers(0, 2 ** 31))
def test_rearrange_with_boolean_source_choice_matches_int64(n, cuts, seed):
    rng = np.random.default_rng(seed)
    pad = rng.random(n) < 0.3

    def rows(which):
        b = ProgramBuilder(DEV)
        src = _tensor(b, n, cuts, [1, 5, 9], "src")
        zero = b.linear(Shape("f32", ()), "zero")
        dst = _tensor(b, n, cuts[::-1], [2, 3], "dst")
        b.rearrange(dst, [src, zero], np.where(pad, 0, np.arange(n)[::-1]), which, name="r")
        return [s.rows for s in walk(b.root) if isinstance(s, Copy)]

    got, want = rows(pad), rows(pad.astype(np.int64))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 400), st.integers(1, 400), st.lists(st.integers(0, 400), max_size=10),
       st.lists(st.integers(0, 15), min_size=1, max_size=5), st.sampled_from([1, 2, 4, 8]),
       st.sampled_from(["arange", "reverse", "stride", "random", "negative", "identity"]), st.integers(0, 2 ** 31))
def test_gather_copy_runs_equals_copy_runs_of_element_addresses(n_src, n_dst, cuts, tiles, itemsize, kind, seed):
    from xla_lowering.mapping.tensor import gather_copy_runs
    rng = np.random.default_rng(seed)
    dtype = {1: "s8", 2: "f16", 4: "f32", 8: "f64"}[itemsize]
    b = ProgramBuilder(DEV)
    src = b.add_tensor(Shape(dtype, (n_src,)), [tiles[0]], [0], [n_src], "src")
    starts = np.array([0] + sorted(set(c for c in cuts if 0 < c < n_dst)), np.int64)
    dst = b.add_tensor(Shape(dtype, (n_dst,)), [tiles[k % len(tiles)] for k in range(len(starts))], starts,
                       np.diff(np.append(starts, n_dst)), "dst")
    if kind == "identity":          # the destination is the source itself: elements in place are dropped
        src, n_src = dst, n_dst
    p = np.arange(n_dst)
    index = {"arange": p % n_src, "reverse": (n_dst - 1 - p) % n_src, "stride": (p * 3) % n_src,
             "random": rng.integers(0, n_src, n_dst), "negative": -1 - rng.integers(0, n_src, n_dst),
             "identity": p}[kind]
    got = gather_copy_runs(dst, src.element_syms(), index)
    want = copy_runs(dst.element_syms(), src.element_syms()[index], itemsize)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.int64 and got.shape[1] == 6


def test_gather_copy_runs_rejects_indices_out_of_range():
    import pytest
    from xla_lowering.mapping.tensor import gather_copy_runs
    b = ProgramBuilder(DEV)
    src = b.linear(Shape("f32", (10,)), "src")
    dst = b.linear(Shape("f32", (4,)), "dst")
    for bad in ([0, 1, 2, 10], [0, -11, 1, 2]):
        with pytest.raises(IndexError):
            gather_copy_runs(dst, src.element_syms(), np.array(bad))
    with pytest.raises(ValueError):
        gather_copy_runs(dst, src.element_syms(), np.arange(3))


def _rearrange_rows_by_element(b: ProgramBuilder, dst: DTensor, sources, src_index, which) -> np.ndarray:
    """The copy rows ``rearrange`` made before its gather paths: every element's source address, then copy_runs
    (a one-element source read by many elements is read from its per-tile copies, made by ``rearrange``)."""
    from xla_lowering.mapping.tensor import OFFSET_BITS
    dst_syms = dst.element_syms()
    src_syms = np.empty(len(src_index), np.int64)
    for k, s in enumerate(sources):
        sel = which == k
        if not sel.any():
            continue
        if s.size == 1 and sel.sum() > 1:
            tiles = b.block_tiles()[dst_syms[sel] >> OFFSET_BITS]
            used = np.unique(tiles)
            local = b.scalar_per_tile(s, used)          # already made by rearrange: the cached tensor
            src_syms[sel] = local.syms[np.searchsorted(used, tiles)]
        else:
            src_syms[sel] = s.element_syms()[src_index[sel]]
    return copy_runs(dst_syms, src_syms, dst.itemsize)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(1, 120), min_size=1, max_size=4), st.integers(1, 300),
       st.lists(st.integers(0, 300), max_size=8), st.lists(st.integers(0, 15), min_size=1, max_size=4),
       st.booleans(), st.integers(0, 2 ** 31))
def test_rearrange_from_several_sources_gives_the_element_wise_rows(sizes, n_dst, cuts, tiles, negative, seed):
    rng = np.random.default_rng(seed)
    b = ProgramBuilder(DEV)
    sources = [b.linear(Shape("f32", (n,)), f"s{k}") for k, n in enumerate(sizes)]
    dst = _tensor(b, n_dst, cuts, tiles, "dst")
    which = rng.integers(0, len(sources), n_dst)
    src_index = np.array([rng.integers(0, sizes[w]) for w in which], np.int64)
    if negative:
        src_index = src_index - np.array([sizes[w] for w in which]) * (rng.random(n_dst) < 0.5)
    b.rearrange(dst, sources, src_index, which, name="r")
    copies = [s for s in walk(b.root) if isinstance(s, Copy) and s.name == "r"]
    got = copies[0].rows if copies else np.zeros((0, 6), np.int64)
    np.testing.assert_array_equal(got, _rearrange_rows_by_element(b, dst, sources, src_index, which))


def test_rearrange_with_a_padding_value_broadcasts_it_and_gives_the_element_wise_rows():
    b = ProgramBuilder(DEV)
    x, pad = b.linear(Shape("f32", (40,)), "x"), b.linear(Shape("f32", ()), "pad")
    dst = _tensor(b, 100, [10, 35, 60, 77], [0, 3, 7, 12, 15], "dst")
    which = (np.arange(100) % 5 == 0).astype(np.int64)
    src_index = np.where(which == 1, 0, (np.arange(100) * 7) % 40)
    b.rearrange(dst, [x, pad], src_index, which, name="r")
    names = [s.name for s in walk(b.root) if isinstance(s, Copy)]
    assert names == ["broadcast/pad", "r"]
    rows = [s.rows for s in walk(b.root) if isinstance(s, Copy) and s.name == "r"][0]
    np.testing.assert_array_equal(rows, _rearrange_rows_by_element(b, dst, [x, pad], src_index, which))


@given(st.lists(st.integers(-2**62, 2**62), max_size=300), st.integers(0, 3))
def test_distinct_is_numpys_unique(values, scale):
    """``distinct`` (a count for small non-negative ranges, a sort otherwise) gives np.unique's values."""
    from xla_lowering.mapping.arrays import distinct
    a = np.array(values, np.int64)
    if scale < 3:                    # small non-negative ranges, as tile numbers are: the counting path
        a = np.abs(a) % (10 ** (scale + 1))
    got = distinct(a)
    np.testing.assert_array_equal(got, np.unique(a))
    assert got.dtype == a.dtype
