"""The dense co-activation summary against a per-row brute force, on every path it can take."""

from __future__ import annotations

import numpy as np
import pytest

import atlas.harvest.coact as coact
from atlas.harvest.coact import DenseCoact


def reference(full: np.ndarray, fc: np.ndarray, keep: int, top: int) -> dict[str, np.ndarray]:
    """Per row: kept counts (largest first, ties to the smaller column) and the float64 Jaccard top list."""
    n = len(full)
    kept = np.zeros((n, n), np.int64)
    top_idx = np.full((n, top), -1, np.int64)
    top_score = np.zeros((n, top), np.float32)
    top_count = np.zeros((n, top), np.int64)
    for i in range(n):
        cols = np.flatnonzero(full[i] > 0)
        c = full[i, cols]
        by_count = cols[np.lexsort((cols, -c))][:keep]
        kept[i, by_count] = full[i, by_count]
        jac = c / np.maximum(fc[i] + fc[cols] - c, 1)
        order = np.lexsort((cols, -jac))[:top]
        top_idx[i, : len(order)] = cols[order]
        top_score[i, : len(order)] = jac[order]
        top_count[i, : len(order)] = c[order]
    return {"kept": kept, "top_idx": top_idx, "top_score": top_score, "top_count": top_count}


def accumulator(upper: np.ndarray, wide: bool = False) -> DenseCoact:
    """A DenseCoact holding the strict upper triangle of `upper`, with junk in the padding row and column."""
    n = len(upper)
    d = DenseCoact(n)
    if wide:
        d._widen_if_needed(0, force=True)
    square = d.flat.reshape(n + 1, n + 1)
    square[:n, :n] = np.triu(upper, 1)
    square[n, :] = 7
    square[:, n] = 9
    return d


def check(d: DenseCoact, fc: np.ndarray, keep: int, top: int) -> None:
    u = d.counts()
    want = reference(u, fc, keep, top)
    got = d.summarise(fc, keep, top)
    assert got.coact.has_sorted_indices
    np.testing.assert_array_equal(got.coact.toarray(), want["kept"])
    for name in ("top_idx", "top_score", "top_count"):
        np.testing.assert_array_equal(getattr(got, name), want[name], err_msg=name)


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    # Blocks of a few rows and tiny transpose tiles, so that small matrices cross block and tile edges and
    # both worker threads get blocks.
    monkeypatch.setattr(coact, "_SUMMARY_BLOCK_BYTES", 4 * 300 * 7)
    monkeypatch.setattr(coact, "_TILE", 3)


def random_counts(rng, n: int, high: int, density: float) -> np.ndarray:
    return rng.integers(0, high, (n, n)) * (rng.random((n, n)) < density)


def consistent_counts(u: np.ndarray, rng, spread: int = 3) -> np.ndarray:
    """Feature counts at least every count in their row, as a harvest's are."""
    return u.max(axis=1, initial=0) + rng.integers(0, spread, len(u))


@pytest.mark.parametrize("n", [1, 2, 5, 40, 300])
@pytest.mark.parametrize("high", [2, 6, 1000])
def test_matches_brute_force_with_ties(n, high):
    rng = np.random.default_rng(n * 1000 + high)
    d = accumulator(random_counts(rng, n, high, 0.3))
    fc = consistent_counts(d.counts(), rng)
    for keep, top in ((7, 5), (1, 1), (64, 10), (n + 5, n + 3), (0, 0)):
        check(d, fc, keep, top)


def test_rows_with_few_partners_and_dead_features():
    rng = np.random.default_rng(1)
    upper = random_counts(rng, 120, 5, 0.03)
    upper[:10] = 0
    upper[:, :10] = 0
    d = accumulator(upper)
    fc = consistent_counts(d.counts(), rng)
    fc[:5] = 0
    check(d, fc, 16, 8)


def test_jaccard_near_ties_beyond_the_wide_top_k():
    # Every feature fires equally often, so partners sharing a count share a Jaccard score: rows hold far more
    # tied candidates than the pre-selection's wider top-k and must be scanned in full.
    rng = np.random.default_rng(2)
    d = accumulator(random_counts(rng, 200, 3, 0.5))
    fc = np.full(200, 50)
    check(d, fc, 10, 4)


def test_counts_too_large_for_an_int32_key():
    rng = np.random.default_rng(3)
    upper = random_counts(rng, 100, 1 << 26, 0.4)
    d = accumulator(upper)
    assert upper.max() >= 1 << (31 - 7)
    check(d, consistent_counts(d.counts(), rng), 12, 6)


def test_widened_int64_accumulator():
    rng = np.random.default_rng(4)
    upper = random_counts(rng, 90, 1 << 34, 0.4)
    d = accumulator(upper, wide=True)
    check(d, consistent_counts(d.counts(), rng), 12, 6)


def test_feature_counts_beyond_float32_use_float64_scores():
    rng = np.random.default_rng(5)
    d = accumulator(random_counts(rng, 80, 40, 0.5))
    fc = consistent_counts(d.counts(), rng) + rng.integers(1 << 23, 1 << 25, 80)
    check(d, fc, 9, 5)


def test_feature_counts_below_pair_counts_are_still_exact():
    # Not a harvest's state, but the summary must not depend on it: the float32 pre-selection is void here,
    # which the summary detects, and it falls back to exact scores (including the union clamp at 1).
    rng = np.random.default_rng(6)
    d = accumulator(random_counts(rng, 150, 30, 0.4))
    fc = rng.integers(0, 20, 150)
    check(d, fc, 9, 5)


def test_float32_ties_are_ordered_by_the_exact_score():
    # Partners 1 and 3 of feature 0 have the same float32 pre-selection score c / (n_0 + n_j) but different
    # float64 Jaccard; the larger column has the better one, so a float32 tie order would pick the wrong one.
    d = accumulator(np.zeros((4, 4), np.int64))
    square = d.flat.reshape(5, 5)
    square[0, 1], square[0, 2], square[0, 3] = 1_053_957, 5, 1_053_966
    fc = np.array([3_000_000, 1_806_921, 10, 1_806_962])
    x = np.float32(square[0, [1, 3]]) / np.float32(fc[0] + fc[[1, 3]])
    assert x[0] == x[1]
    check(d, fc, 3, 1)
    check(d, fc, 3, 3)
    assert d.summarise(fc, 3, 1).top_idx[0, 0] == 3


def test_summary_leaves_thread_setting_alone():
    import torch

    before = torch.get_num_threads()
    d = accumulator(random_counts(np.random.default_rng(7), 30, 5, 0.3))
    d.summarise(np.full(30, 100), 4, 2)
    assert torch.get_num_threads() == before
