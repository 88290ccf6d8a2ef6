"""Co-activation: how many tokens each pair of features fires on together.

Up to `coact_dense_max` features the counts are exact (a dense upper-triangle int32 accumulator). Above it a
per-feature Misra-Gries summary keeps a bounded number of partners; see `SparseCoact` for what it guarantees.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import scipy.sparse as sp
import torch

from atlas.harvest.grid import zeros_hugepage
from atlas.harvest.slots import rank_in_groups

_PAIR_BLOCK = 1 << 21  # pairs per block: keeps the key buffers in cache-sized pieces
_SUMMARY_BLOCK_BYTES = 8 << 20  # one block of full count rows, small enough to stay in cache across its passes
_TILE = 128  # accumulator rows transposed at a time when a block's lower part is gathered
_F32_EXACT = 1 << 24  # integers below this convert to float32 exactly
_TIE_ROOM = 2  # Jaccard pre-selection: per row, this many times `top` before a full scan for near-ties
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


def _symmetric_rows(u: torch.Tensor, r0: int, out: torch.Tensor) -> torch.Tensor:
    """Full count rows r0.. of the symmetric matrix whose upper triangle is `u` (diagonal zero), into `out`.

    Row r's partners above r are in row r of `u`, those below r in column r, so a block reads one strip of
    rows and one strip of columns. The column strip is transposed `_TILE` rows at a time so that its reads
    and the scattered writes both stay in cache.
    """
    r1 = r0 + out.shape[0]
    out[:, r1:].copy_(u[r0:r1, r1:])
    for c0 in range(0, r0, _TILE):
        c1 = min(r0, c0 + _TILE)
        out[:, c0:c1].copy_(u[c0:c1, r0:r1].t())
    square = u[r0:r1, r0:r1]
    out[:, r0:r1].copy_(square)
    out[:, r0:r1].add_(square.t())
    out[:, r0:r1].diagonal().zero_()
    return out


def _top_counts(s: torch.Tensor, row_max: torch.Tensor, keep: int, key32: torch.Tensor,
                key64: torch.Tensor) -> tuple[np.ndarray, ...]:
    """Per row, the columns and counts of the `keep` largest counts (ties to the smaller column), -1 / 0 padded.

    The key count * 2**bits + (n-1-col) orders by count and then by smaller column, so one top-k gives the
    exact order with no tie pass. It is built in `key32` when the block's counts leave room for the column
    bits, else in `key64` (both [b, n] buffers).
    """
    b, n = s.shape
    cols = np.full((b, keep), -1, np.int64)
    counts = np.zeros((b, keep), np.int64)
    kk = min(keep, n)
    if kk == 0 or b == 0:
        return cols, counts
    bits = max(1, (n - 1).bit_length())
    if s.dtype == torch.int32 and int(row_max.max()) < (1 << (31 - bits)):
        key = torch.mul(s, 1 << bits, out=key32)
    else:
        key = key64.copy_(s).mul_(1 << bits)
    key.add_(torch.arange(n - 1, -1, -1, dtype=key.dtype))
    top = torch.topk(key, kk, dim=1).values.to(torch.int64).numpy()
    count = top >> bits
    ok = count > 0
    cols[:, :kk] = np.where(ok, (n - 1) - (top & ((1 << bits) - 1)), -1)
    counts[:, :kk] = np.where(ok, count, 0)
    return cols, counts


def _jaccard_order32(s: torch.Tensor, n_rows: torch.Tensor, n_all: torch.Tensor, denom: torch.Tensor,
                     out: torch.Tensor) -> torch.Tensor:
    """c / (n_i + n_j) in float32: ranks a row's partners as Jaccard does, in two passes over the block.

    Jaccard c / (n_i + n_j - c) = x / (1 - x) with x = c / (n_i + n_j), so it rises with x. With every count
    and sum below 2**24 each x is the correctly rounded float32 of the true ratio, and rounding keeps order.
    `n_rows` and `n_all` are the feature counts (at least 1) as float32.
    """
    torch.add(n_rows[:, None], n_all[None, :], out=denom)
    out.copy_(s)
    return out.div_(denom)


def _jaccard64(s: torch.Tensor, n_rows: torch.Tensor, n_all: torch.Tensor) -> torch.Tensor:
    """Jaccard c / max(n_i + n_j - c, 1) in float64, exactly as reported; `n_*` are int64 feature counts."""
    union = torch.add(n_rows[:, None], n_all[None, :]).sub_(s).clamp_min_(1)
    return s.to(torch.float64).div_(union)


def _candidates(score: torch.Tensor, top: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) of every entry scoring above 0 and at least one ulp below its row's `top`-th largest.

    An entry under that line is outside the row's top by exact Jaccard too: a float32 score is a whole ulp
    (relative 2**-24) below `top` others, a gap that float64 rounding cannot close; a float64 score is the
    exact one, so the ulp is only slack. Rows with fewer than `top` partners keep them all. A wider top-k
    finds the candidates unless a row has more near-ties than it holds; only such rows are scanned in full.
    """
    b, n = score.shape
    wide = min(n, _TIE_ROOM * top)
    vals, idx = torch.topk(score, wide, dim=1)
    kth = vals[:, top - 1] if top <= n else torch.zeros(b, dtype=score.dtype)
    thr = torch.where(kth > 0, torch.nextafter(kth, torch.zeros_like(kth)), torch.finfo(score.dtype).tiny)
    r, j = (vals >= thr[:, None]).nonzero(as_tuple=True)
    c = idx[r, j]
    spill = (vals[:, -1] >= thr).nonzero().flatten() if wide < n else torch.zeros(0, dtype=torch.int64)
    if len(spill):
        whole = ~torch.isin(r, spill)
        rs, cs = (score[spill] >= thr[spill, None]).nonzero(as_tuple=True)
        r, c = torch.cat([r[whole], spill[rs]]), torch.cat([c[whole], cs])
    return r, c


def _top_jaccard(s: torch.Tensor, score: torch.Tensor, rows: np.ndarray, fc: np.ndarray,
                 top: int) -> tuple[np.ndarray, ...]:
    """Per row, the `top` partners by float64 Jaccard (ties to the smaller column): columns, scores, counts."""
    b = s.shape[0]
    cols = np.full((b, top), -1, np.int64)
    scores = np.zeros((b, top))
    counts = np.zeros((b, top), np.int64)
    if top == 0 or b == 0 or s.shape[1] == 0:
        return cols, scores, counts
    r, c = _candidates(score, top)
    cnt = s[r, c].to(torch.int64).numpy()
    r, c = r.numpy(), c.numpy()
    exact = cnt / np.maximum(fc[rows[r]] + fc[c] - cnt, 1)
    order = np.lexsort((c, -exact, r))
    r, c, cnt, exact = r[order], c[order], cnt[order], exact[order]
    rank = rank_in_groups(r)
    ok = rank < top
    r, rank = r[ok], rank[ok]
    cols[r, rank], scores[r, rank], counts[r, rank] = c[ok], exact[ok], cnt[ok]
    return cols, scores, counts


class _DenseSummary:
    """One pass over the dense accumulator in blocks of full rows: kept counts and Jaccard-ranked partners.

    Jaccard (together / either) is the score: unlike count / min(count_i, count_j) it does not give a perfect
    score to a partner that fired once, and unlike count / count_i it does not favour features that fire
    everywhere. With `fast`, partners are pre-selected on a float32 score (see `_jaccard_order32`), which is
    exact only if no count exceeds its features' counts; `run` reports whether that held.
    """

    def __init__(self, coact: "DenseCoact", fc: np.ndarray, keep: int, top: int, fast: bool):
        self.n, self.fc, self.keep, self.top, self.fast = coact.n, fc, keep, top, fast
        self.u = torch.from_numpy(coact.flat).view(coact.stride, coact.stride)[: coact.n, : coact.n]
        self.block = max(1, min(self.n, _SUMMARY_BLOCK_BYTES // (4 * max(self.n, 1))))
        self.fc64 = torch.from_numpy(fc)
        self.fc32 = torch.from_numpy(np.maximum(fc, 1).astype(np.float32))

    def run(self) -> tuple[CoactSummary, bool]:
        starts = list(range(0, self.n, self.block))
        workers = max(1, min(torch.get_num_threads(), len(starts)))
        # Blocks are independent, so each thread takes whole blocks with single-threaded ops: no barrier per
        # op, which on a shared machine would make every op wait for its slowest half.
        with _single_threaded_ops(), ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(self._blocks, [starts[w::workers] for w in range(workers)]))
        done = sorted((b for part in parts for b in part), key=lambda b: b[0][0])
        blocks = [(rows, kept, top) for rows, kept, top, _ in done]
        return _assemble(self.n, blocks, self.keep, self.top), all(ok for *_, ok in done)

    def _blocks(self, starts: list[int]) -> list[tuple]:
        shape = (self.block, self.n)
        s_buf = torch.empty(shape, dtype=self.u.dtype)
        # Buffers are reused across blocks; pages of one that is never written are never allocated.
        key32, key64 = torch.empty(shape, dtype=torch.int32), torch.empty(shape, dtype=torch.int64)
        denom_buf, score_buf = (torch.empty(shape), torch.empty(shape)) if self.fast else (None, None)
        out = []
        for r0 in starts:
            r1 = min(self.n, r0 + self.block)
            b, rows = r1 - r0, np.arange(r0, r1)
            s = _symmetric_rows(self.u, r0, s_buf[:b])
            row_max = s.amax(dim=1)
            consistent = bool((row_max.to(torch.int64) <= self.fc64[r0:r1]).all())
            kept = _top_counts(s, row_max, self.keep, key32[:b], key64[:b])
            if self.fast:
                score = _jaccard_order32(s, self.fc32[r0:r1], self.fc32, denom_buf[:b], score_buf[:b])
            else:
                score = _jaccard64(s, self.fc64[r0:r1], self.fc64)
            out.append((rows, kept, _top_jaccard(s, score, rows, self.fc, self.top), consistent))
        return out


@contextmanager
def _single_threaded_ops() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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

    def summarise(self, feature_count: np.ndarray, keep: int, top: int) -> CoactSummary:
        fc = np.asarray(feature_count, np.int64)
        # The float32 pre-selection of Jaccard partners holds only for counts that agree with feature_count
        # (no pair fires together more often than either feature fires), as every harvest's do; anything
        # else is detected on the way and summarised again with the exact float64 scores.
        fast = 2 * max(int(fc.max(initial=0)), 1) < _F32_EXACT
        summary, consistent = _DenseSummary(self, fc, keep, top, fast).run()
        if fast and not consistent:
            summary, _ = _DenseSummary(self, fc, keep, top, False).run()
        return summary

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
