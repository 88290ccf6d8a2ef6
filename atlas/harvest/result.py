"""The harvest's output record and the end-of-pass summaries built from the streaming state."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from atlas.harvest.grid import NO_GRID
from atlas.harvest.slots import INDEX_EMPTY, BottomSlots, rank_in_groups


@dataclass
class HarvestResult:
    """Everything the single pass learned about each of F features (numpy arrays; F first)."""

    n_tokens: int
    count: np.ndarray  # [F] int64 tokens with act > 0
    sum: np.ndarray  # [F] float64 over firing tokens
    max: np.ndarray  # [F] float32
    top_vals: np.ndarray  # [F, k] float32, descending, NaN padded
    top_index: np.ndarray  # [F, k] int64 global token index, -1 padded
    top_windows: np.ndarray  # [F, k, 2W+1] float32, element W is the focus token, NaN outside the sequence
    interval_edges: np.ndarray  # [F, n_int+1] float32, on the power-of-two grid
    interval_counts: np.ndarray  # [F, n_int] int64
    interval_share: np.ndarray  # [F, n_int] float32, interval_counts / count
    interval_vals: np.ndarray  # [F, n_int, m] float32
    interval_index: np.ndarray  # [F, n_int, m] int64, -1 padded
    interval_windows: np.ndarray  # [F, n_int, m, 2W+1] float32
    random_vals: np.ndarray  # [F, n_random] float32
    random_index: np.ndarray  # [F, n_random] int64
    random_windows: np.ndarray  # [F, n_random, 2W+1] float32
    hist_edges: np.ndarray  # [F, B+1] float32, equal-width bins from 0
    hist_counts: np.ndarray  # [F, B] int64
    coact: sp.csr_matrix  # [F, F] the coact_keep largest counts per row, diagonal excluded
    coact_top_idx: np.ndarray  # [F, coact_top] int64, by Jaccard, -1 padded
    coact_top_score: np.ndarray  # [F, coact_top] float32 Jaccard = together / (count_i + count_j - together)
    coact_top_count: np.ndarray  # [F, coact_top] int64
    coact_exact: bool = True  # False when the bounded (Misra-Gries) summary was used

    @property
    def n_features(self) -> int:
        return len(self.count)

    @property
    def density(self) -> np.ndarray:
        return self.count / max(self.n_tokens, 1)

    @property
    def mean(self) -> np.ndarray:
        """Mean activation over firing tokens (NaN for dead features)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.sum / self.count, np.nan)

    @property
    def dead(self) -> np.ndarray:
        return self.count == 0


def _used_sub_bins(max_value: np.ndarray, exponent: np.ndarray, capacity: int) -> np.ndarray:
    """How many grid sub-bins [0, max] spans (0 for dead features)."""
    alive = exponent != NO_GRID
    used = np.floor(np.ldexp(max_value.astype(np.float64), -np.where(alive, exponent, 0).astype(np.int64)))
    return np.where(alive, np.minimum(used.astype(np.int64) + 1, capacity), 0)


def histogram(hist: np.ndarray, max_value: np.ndarray, exponent: np.ndarray, bins: int) -> tuple[np.ndarray, ...]:
    """Equal-width output bins made of whole grid sub-bins, so each count is exact.

    Each bin is g sub-bins wide with g = ceil(used / bins); the last edge lies at most `bins` sub-bins above
    the max (under 8% of the range with a 1024-sub-bin grid).
    """
    n, cap = hist.shape
    used = _used_sub_bins(max_value, exponent, cap)
    g = np.maximum(-(-used // bins), 1)
    stops = np.minimum(np.arange(bins + 1)[None, :] * g[:, None], cap)
    cum = np.zeros((n, cap + 1), np.int64)
    np.cumsum(hist, axis=1, out=cum[:, 1:])
    counts = np.diff(np.take_along_axis(cum, stops, axis=1), axis=1)
    width = np.ldexp(g.astype(np.float64), np.where(used > 0, exponent, 0).astype(np.int64))
    edges = np.arange(bins + 1)[None, :] * width[:, None]
    edges[used == 0] = 0.0
    return edges.astype(np.float32), counts


def intervals(
    sub_counts: np.ndarray, max_value: np.ndarray, exponent: np.ndarray, n_int: int, store: BottomSlots,
    chunk: int = 4096,
) -> tuple[np.ndarray, ...]:
    """Group each feature's used sub-bins into n_int contiguous intervals (sizes differ by at most one).

    The edges are grid points (reported as they are, not rounded). Each interval's samples are the bottom-m
    keys of the union of its sub-bins' bottom-m, which is the bottom-m of all its activations.
    """
    n, cap = sub_counts.shape
    m, width = store.m, store.width
    used = _used_sub_bins(max_value, exponent, cap)
    bounds = (np.arange(n_int + 1)[None, :] * used[:, None]) // n_int
    cum = np.zeros((n, cap + 1), np.int64)
    np.cumsum(sub_counts, axis=1, out=cum[:, 1:])
    counts = np.diff(np.take_along_axis(cum, bounds, axis=1), axis=1)
    edges = np.ldexp(bounds.astype(np.float64), np.where(used > 0, exponent, 0).astype(np.int64)[:, None])
    vals = np.full((n, n_int, m), np.nan, np.float32)
    index = np.full((n, n_int, m), -1, np.int64)
    wins = np.full((n, n_int, m, width), np.nan, np.float32)
    for f0 in range(0, n, chunk):
        f1 = min(n, f0 + chunk)
        key = store.key[f0 * cap : f1 * cap]
        filled = np.flatnonzero(store.index[f0 * cap : f1 * cap].ravel() != INDEX_EMPTY)
        if len(filled) == 0:
            continue
        slot = filled // max(m, 1)
        feat = slot // cap
        sub = slot % cap
        # interval of sub-bin b: the number of inner boundaries at or below b
        which = (sub[:, None] >= bounds[f0 + feat, 1:n_int]).sum(axis=1)
        group = feat * n_int + which
        k, idx = key.ravel()[filled], store.index[f0 * cap : f1 * cap].ravel()[filled]
        order = np.lexsort((idx, k, group))
        rank = rank_in_groups(group[order])
        take = order[rank < m]
        rank = rank[rank < m]
        gf, gi = group[take] // n_int + f0, group[take] % n_int
        pos = filled[take] + f0 * cap * m
        vals[gf, gi, rank] = store.value.ravel()[pos]
        index[gf, gi, rank] = store.index.ravel()[pos]
        wins[gf, gi, rank] = store.window_rows(pos)
    total = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, total, out=np.zeros(counts.shape), where=total > 0).astype(np.float32)
    return edges.astype(np.float32), counts, share, vals, index, wins
