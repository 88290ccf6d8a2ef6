"""Co-activation: how many tokens each pair of features fires on together.

Up to `coact_dense_max` features the counts are exact (a dense upper-triangle int32 accumulator). Above it a
per-feature Misra-Gries summary keeps a bounded number of partners; see `SparseCoact` for what it guarantees.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import scipy.sparse as sp
import torch

from atlas.harvest.grid import zeros_hugepage
from atlas.harvest.slots import rank_in_groups

_PAIR_BLOCK = 1 << 21  # pairs per block: keeps the key buffers in cache-sized pieces
_TRIU: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _triu(k: int) -> tuple[np.ndarray, np.ndarray]:
    if k not in _TRIU:
        _TRIU[k] = tuple(a.astype(np.int64) for a in np.triu_indices(k, 1))
    return _TRIU[k]


def pair_blocks(
    t: np.ndarray, f: np.ndarray, n_rows: int, pad: int, dtype: type = np.int64
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(lo, hi) feature ids of every pair firing together on a token, lo < hi, in blocks.

    `t` is sorted and `f` ascends within each token (row-major nonzeros). Tokens are bucketed by their number
    of active features, rounded up (at most 1/8 extra), so each bucket is one padded matrix and one
    upper-triangle template instead of a Python loop over tokens; padded places pair with `pad`. Narrow
    `dtype` halves the memory traffic of the pair buffers when the caller's keys fit in it.
    """
    counts = np.bincount(t, minlength=n_rows)
    starts = np.cumsum(counts) - counts
    rows = np.flatnonzero(counts >= 2)
    if len(rows) == 0:
        return
    n = counts[rows]
    step = np.maximum(8, 1 << np.maximum(0, np.floor(np.log2(n)).astype(np.int64) - 3))
    width = -(-n // step) * step
    for k in np.unique(width):
        bucket = rows[width == k]
        iu, ju = _triu(int(k))
        cols = np.arange(k)
        chunk = max(1, _PAIR_BLOCK // len(iu))
        for s in range(0, len(bucket), chunk):
            rr = bucket[s : s + chunk]
            pos = np.minimum(starts[rr, None] + cols, len(f) - 1)
            mat = np.where(cols < counts[rr, None], f[pos], pad).astype(dtype, copy=False)
            yield np.take(mat, iu, axis=1).ravel(), np.take(mat, ju, axis=1).ravel()


def _top_per_row(score, valid, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the columns of the k largest valid scores, ties to the smaller column; -1 padded.

    Works on [b, F] blocks in torch (multi-threaded, no full partition): the k-th largest value per row is
    the same whatever the tie order, and only entries at or above it are sorted with the exact tie rule.
    """
    score = torch.as_tensor(score)
    valid = torch.as_tensor(valid)
    b, n = score.shape
    cols_out = np.full((b, k), -1, np.int64)
    score_out = np.zeros((b, k))
    if k == 0 or n == 0:
        return cols_out, score_out
    masked = score.to(torch.float64).masked_fill(~valid, float("-inf"))
    kk = min(k, n)
    thr = torch.topk(masked, kk, dim=1, sorted=True).values[:, -1:]
    r, c = ((masked >= thr) & valid).nonzero(as_tuple=True)
    s = masked[r, c].numpy()
    r, c = r.numpy(), c.numpy()
    order = np.lexsort((c, -s, r))
    r, c, s = r[order], c[order], s[order]
    rank = rank_in_groups(r)
    keep = rank < k
    cols_out[r[keep], rank[keep]] = c[keep]
    score_out[r[keep], rank[keep]] = s[keep]
    return cols_out, score_out


class CoactSummary:
    """What finalize hands back: kept counts as CSR plus the ranked partner table."""

    def __init__(self, coact: sp.csr_matrix, top_idx: np.ndarray, top_score: np.ndarray, top_count: np.ndarray):
        self.coact, self.top_idx, self.top_score, self.top_count = coact, top_idx, top_score, top_count


def _summarise_rows(
    rows: np.ndarray, counts: np.ndarray, feature_count: np.ndarray, keep: int, top: int
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """For a block of full count rows [b, F] (diagonal already zero): kept counts and Jaccard-ranked partners.

    Jaccard (together / either) is the score: unlike count / min(count_i, count_j) it does not give a perfect
    score to a partner that fired once, and unlike count / count_i it does not favour features that fire
    everywhere.
    """
    c = torch.as_tensor(counts)
    valid = c > 0
    kc, _ = _top_per_row(c, valid, keep)
    fc = torch.as_tensor(np.asarray(feature_count, dtype=np.int64))
    union = fc[torch.as_tensor(rows)][:, None] + fc[None, :] - c
    jac = torch.where(valid, c.to(torch.float64) / union.clamp_min(1), torch.zeros((), dtype=torch.float64))
    tc, ts = _top_per_row(jac, valid, top)
    counts = c.numpy()
    r_idx = np.arange(len(rows))[:, None]
    kept_counts = np.where(kc >= 0, counts[r_idx, np.maximum(kc, 0)], 0)
    top_counts = np.where(tc >= 0, counts[r_idx, np.maximum(tc, 0)], 0)
    return (kc, kept_counts), (tc, ts, top_counts)


def _assemble(n: int, blocks: list, keep: int, top: int) -> CoactSummary:
    rows_l, cols_l, data_l = [], [], []
    top_idx = np.full((n, top), -1, np.int64)
    top_score = np.zeros((n, top), np.float32)
    top_count = np.zeros((n, top), np.int64)
    for rows, (kc, kcount), (tc, ts, tcount) in blocks:
        ok = kc >= 0
        rows_l.append(np.broadcast_to(rows[:, None], kc.shape)[ok])
        cols_l.append(kc[ok])
        data_l.append(kcount[ok])
        top_idx[rows], top_score[rows], top_count[rows] = tc, ts, tcount
    r = np.concatenate(rows_l) if rows_l else np.zeros(0, np.int64)
    c = np.concatenate(cols_l) if cols_l else np.zeros(0, np.int64)
    d = np.concatenate(data_l) if data_l else np.zeros(0, np.int64)
    mat = sp.csr_matrix((d.astype(np.int64), (r, c)), shape=(n, n))
    mat.sort_indices()
    return CoactSummary(mat, top_idx, top_score, top_count)


class DenseCoact:
    """Exact pair counts in an upper-triangle [F+1, F+1] accumulator (row/column F absorbs padding)."""

    exact = True

    def __init__(self, n_features: int):
        self.n = int(n_features)
        self.stride = self.n + 1
        self.flat = zeros_hugepage(self.stride * self.stride, np.int32)
        self.n_tokens = 0

    def _widen_if_needed(self, more_tokens: int, force: bool = False) -> None:
        # A count is at most the number of tokens; only past 2**31 tokens does int32 stop being safe.
        if self.flat.dtype == np.int32 and (force or self.n_tokens + more_tokens >= np.iinfo(np.int32).max):
            wide = zeros_hugepage(self.flat.size, np.int64)
            wide[:] = self.flat
            self.flat = wide

    def _ones(self, n: int) -> torch.Tensor:
        dtype = torch.from_numpy(self.flat[:0]).dtype
        cached = getattr(self, "_ones_cache", None)
        if cached is None or cached.dtype != dtype or len(cached) < n:
            cached = self._ones_cache = torch.ones(max(n, _PAIR_BLOCK * 2), dtype=dtype)
        return cached[:n]

    def update(self, t: np.ndarray, f: np.ndarray, n_rows: int) -> None:
        self._widen_if_needed(n_rows)
        acc = torch.from_numpy(self.flat)
        narrow = np.int32 if self.stride * self.stride < np.iinfo(np.int32).max else np.int64
        for lo, hi in pair_blocks(t, f, n_rows, pad=self.n, dtype=narrow):
            key = lo * narrow(self.stride)
            key += hi
            acc.index_add_(0, torch.from_numpy(key), self._ones(len(key)))
        self.n_tokens += n_rows

    def merge(self, other: "DenseCoact") -> None:
        self._widen_if_needed(other.n_tokens, force=other.flat.dtype != self.flat.dtype)
        self.flat += other.flat.astype(self.flat.dtype, copy=False)
        self.n_tokens += other.n_tokens

    def counts(self) -> np.ndarray:
        """The full symmetric [F, F] counts (zero diagonal); for tests and small F."""
        u = self.flat.reshape(self.stride, self.stride)[: self.n, : self.n].astype(np.int64)
        return u + u.T

    def summarise(self, feature_count: np.ndarray, keep: int, top: int, block: int = 1024) -> CoactSummary:
        u = self.flat.reshape(self.stride, self.stride)[: self.n, : self.n]
        blocks = []
        for r0 in range(0, self.n, block):
            r1 = min(self.n, r0 + block)
            rows = np.arange(r0, r1)
            tu = torch.from_numpy(u)
            counts = (tu[r0:r1].to(torch.int64) + tu[:, r0:r1].t()).numpy()
            counts[np.arange(r1 - r0), rows] = 0
            blocks.append((rows, *_summarise_rows(rows, counts, feature_count, keep, top)))
        return _assemble(self.n, blocks, keep, top)

    def state(self) -> dict[str, np.ndarray]:
        return {"coact.dense": self.flat, "coact.tokens": np.int64(self.n_tokens)}

    def load(self, state: dict) -> None:
        src = np.asarray(state["coact.dense"])
        if src.dtype != self.flat.dtype:
            self.flat = zeros_hugepage(self.flat.size, src.dtype)
        self.flat[:] = src
        self.n_tokens = int(state["coact.tokens"])


class SparseCoact:
    """Bounded co-activation for large F: per feature a Misra-Gries summary of `capacity` partners.

    Guarantee (Misra-Gries, mergeable per Agarwal et al. 2012): for every pair, the kept estimate satisfies
    true - err_i <= estimate <= true, where err_i <= N_i / (capacity + 1) and N_i is the number of
    (token, partner) co-firings of feature i. So every partner sharing more than N_i / (capacity + 1) tokens
    with i is kept, and the estimates are lower bounds. Unlike the dense path the result can depend on batch
    order (within those bounds). Memory is F * capacity entries, independent of tokens.
    """

    exact = False

    def __init__(self, n_features: int, capacity: int):
        self.n = int(n_features)
        self.capacity = int(capacity)
        self.partner = np.full((self.n, self.capacity), -1, np.int64)
        self.count = np.zeros((self.n, self.capacity), np.int64)
        self.err = np.zeros(self.n, np.int64)

    def update(self, t: np.ndarray, f: np.ndarray, n_rows: int) -> None:
        keys = []
        for lo, hi in pair_blocks(t, f, n_rows, pad=self.n):
            ok = hi < self.n
            keys.append(lo[ok].astype(np.int64) * self.n + hi[ok])
        if not keys:
            return
        key, cnt = np.unique(np.concatenate(keys), return_counts=True)
        lo, hi = np.divmod(key, self.n)
        self._absorb(np.concatenate([lo, hi]), np.concatenate([hi, lo]), np.concatenate([cnt, cnt]))

    def merge(self, other: "SparseCoact") -> None:
        ok = other.partner >= 0
        rows = np.broadcast_to(np.arange(self.n)[:, None], ok.shape)[ok]
        self.err += other.err
        self._absorb(rows, other.partner[ok], other.count[ok])

    def _absorb(self, rows: np.ndarray, cols: np.ndarray, cnt: np.ndarray) -> None:
        ok = self.partner >= 0
        old_rows = np.broadcast_to(np.arange(self.n)[:, None], ok.shape)[ok]
        key = np.concatenate([old_rows * self.n + self.partner[ok], rows * self.n + cols])
        val = np.concatenate([self.count[ok], cnt])
        key, inv = np.unique(key, return_inverse=True)
        val = np.bincount(inv, weights=val).astype(np.int64)
        r, c = np.divmod(key, self.n)
        order = np.lexsort((c, -val, r))
        r, c, val = r[order], c[order], val[order]
        rank = rank_in_groups(r)
        # Rows over capacity: subtract their (capacity+1)-th largest count from all and drop what reaches 0.
        over = rank == self.capacity
        cut = np.zeros(self.n, np.int64)
        cut[r[over]] = val[over]
        self.err += cut
        val = val - cut[r]
        keep = (rank < self.capacity) & (val > 0)
        self.partner[:] = -1
        self.count[:] = 0
        self.partner[r[keep], rank[keep]] = c[keep]
        self.count[r[keep], rank[keep]] = val[keep]

    def summarise(self, feature_count: np.ndarray, keep: int, top: int, block: int = 4096) -> CoactSummary:
        blocks = []
        for r0 in range(0, self.n, block):
            rows = np.arange(r0, min(self.n, r0 + block))
            p, cnt = self.partner[rows], self.count[rows]
            ok = p >= 0
            valid = ok & (cnt > 0)
            # Rows are stored by (-count, partner), so ties on the local column are ties on the partner.
            kc_local, _ = _top_per_row(cnt.astype(np.float64), valid, keep)
            kc = np.where(kc_local >= 0, np.take_along_axis(p, np.maximum(kc_local, 0), 1), -1)
            kcount = np.where(kc_local >= 0, np.take_along_axis(cnt, np.maximum(kc_local, 0), 1), 0)
            union = feature_count[rows][:, None] + feature_count[np.maximum(p, 0)] - cnt
            jac = np.divide(cnt, union, out=np.zeros(cnt.shape), where=valid)
            tl, ts = _top_per_row(jac, valid, top)
            tc = np.where(tl >= 0, np.take_along_axis(p, np.maximum(tl, 0), 1), -1)
            tcount = np.where(tl >= 0, np.take_along_axis(cnt, np.maximum(tl, 0), 1), 0)
            blocks.append((rows, (kc, kcount), (tc, ts, tcount)))
        return _assemble(self.n, blocks, keep, top)

    def state(self) -> dict[str, np.ndarray]:
        return {"coact.partner": self.partner, "coact.count": self.count, "coact.err": self.err}

    def load(self, state: dict) -> None:
        self.partner[...] = state["coact.partner"]
        self.count[...] = state["coact.count"]
        self.err[...] = state["coact.err"]
