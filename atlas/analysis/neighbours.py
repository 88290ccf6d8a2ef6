"""Nearest decoder directions: exact cosine in memory-bounded blocks, approximate above a size."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Similarities closer than this count as equal when ranking. A float32 dot product over a few
# thousand dimensions is only good to ~1e-6, and BLAS may sum a column in a different order
# depending on where it falls in a block, so without a grid exact duplicates could swap places.
TIE_GRID = 2.0**-20
BLOCK_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Neighbours:
    """Top-k neighbours of every row; unpacks as `idx, sim`. `knn` is the approximate graph
    (UMAP's `precomputed_knn` form, self first) when one was built, else None."""

    idx: np.ndarray  # [F, k] int64, -1 where there is no neighbour
    sim: np.ndarray  # [F, k] float32 cosine, NaN where there is no neighbour
    knn: tuple[np.ndarray, np.ndarray] | None = None

    def __iter__(self):
        return iter((self.idx, self.sim))


def unit_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows scaled to unit length (float32) and a mask of the rows that had any length."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1)
    nonzero = norms > 0
    out = np.zeros_like(x)
    out[nonzero] = x[nonzero] / norms[nonzero, None]
    return out, nonzero


def decoder_neighbours(
    W_dec: np.ndarray,
    k: int = 10,
    exact_up_to: int = 65_536,
    block: int | None = None,
    graph_neighbors: int | None = None,
    seed: int = 0,
) -> Neighbours:
    """The k most cosine-similar decoder rows of each row, self excluded, best first.

    Exact up to `exact_up_to` rows (ties go to the smaller index); above it pynndescent, whose
    graph (self included, `graph_neighbors` wide, cosine distances) comes back as `knn` so the
    layout need not search again. Zero-norm rows neither have nor are neighbours.
    """
    units, nonzero = unit_rows(W_dec)
    n = units.shape[0]
    if n <= exact_up_to:
        idx, sim = _exact(units, nonzero, k, block)
        return Neighbours(idx, sim, None)
    width = max(k + 1, graph_neighbors or 0)
    live = np.flatnonzero(nonzero)
    # NN-descent finds a row's first few neighbours far more reliably when it tracks twice as many.
    g_idx, g_dist = knn_graph(units[live], max(width, 2 * k + 1), seed=seed)
    g_idx = live[g_idx]  # back to row numbers of W_dec
    idx, sim = _drop_self(g_idx, g_dist, live, n, k)
    g_idx, g_dist = g_idx[:, :width], g_dist[:, :width]
    full_idx = np.full((n, width), -1, dtype=np.int64)
    full_dist = np.full((n, width), np.inf, dtype=np.float32)
    full_idx[live], full_dist[live] = g_idx, g_dist
    return Neighbours(idx, sim, (full_idx, full_dist))


def knn_graph(vectors: np.ndarray, n_neighbors: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Approximate cosine k-NN graph (self first, distances 1 - cos) in UMAP's `precomputed_knn` form."""
    from pynndescent import NNDescent  # numba compile on import; only pay it when needed

    n = vectors.shape[0]
    n_neighbors = min(n_neighbors, n)
    index = NNDescent(
        np.asarray(vectors, dtype=np.float32),
        metric="cosine",
        n_neighbors=n_neighbors,
        random_state=seed,
        n_jobs=1,  # parallel pynndescent is not reproducible run to run
        low_memory=True,
        compressed=True,
    )
    g_idx, g_dist = index.neighbor_graph
    g_idx = np.asarray(g_idx, dtype=np.int64)
    g_dist = np.asarray(g_dist, dtype=np.float32)
    # Equal distances are ordered by index, as in the exact path, so outputs don't depend on
    # the order the search happened to visit candidates in.
    order = np.lexsort((g_idx, np.round(g_dist / TIE_GRID)), axis=1)
    return np.take_along_axis(g_idx, order, 1), np.take_along_axis(g_dist, order, 1)


def _drop_self(g_idx, g_dist, live, n, k):
    idx = np.full((n, k), -1, dtype=np.int64)
    sim = np.full((n, k), np.nan, dtype=np.float32)
    for row, (cand, dist) in zip(live, zip(g_idx, g_dist)):
        keep = (cand != row) & (cand >= 0)
        cand, dist = cand[keep][:k], dist[keep][:k]
        idx[row, : len(cand)] = cand
        sim[row, : len(cand)] = 1.0 - dist
    return idx, sim


def _exact(units: np.ndarray, nonzero: np.ndarray, k: int, block: int | None):
    n = units.shape[0]
    idx = np.full((n, k), -1, dtype=np.int64)
    sim = np.full((n, k), np.nan, dtype=np.float32)
    live = np.flatnonzero(nonzero)
    kk = min(k, len(live) - 1)
    if kk <= 0:
        return idx, sim
    cols = units[live]
    # Per row of a block: float32 similarities and their grid copy, the int64 argpartition, a mask.
    block = block or max(1, BLOCK_BYTES // (len(live) * 17))
    for start in range(0, len(live), block):
        rows = live[start : start + block]
        s = units[rows] @ cols.T
        s[np.arange(len(rows)), np.arange(start, start + len(rows))] = -np.inf  # self
        top = top_k_stable(s, kk)
        idx[rows, :kk] = live[top]
        sim[rows, :kk] = np.take_along_axis(s, top, 1)
    return idx, sim


def top_k_stable(s: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest values per row; equal values (on the grid) by smaller index."""
    q = np.floor(s * np.float32(1 / TIE_GRID))
    part = np.argpartition(q, -k, axis=1)[:, -k:]
    kth = np.take_along_axis(q, part, 1).min(axis=1)
    out = np.empty((len(s), k), dtype=np.int64)
    # Rows where the k-th value is shared with columns outside the partition need a full look
    # at the tie; elsewhere ordering the k candidates is enough.
    n_at_least = (q >= kth[:, None]).sum(axis=1)
    simple = n_at_least == k
    if simple.any():
        p, qv = part[simple], np.take_along_axis(q[simple], part[simple], 1)
        order = np.lexsort((p, -qv), axis=1)
        out[simple] = np.take_along_axis(p, order, 1)
    for r in np.flatnonzero(~simple):
        cand = np.flatnonzero(q[r] >= kth[r])
        out[r] = cand[np.lexsort((cand, -q[r, cand]))[:k]]
    return out
