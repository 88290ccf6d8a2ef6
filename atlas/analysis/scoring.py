"""Scoring explanations on held-out activations: which stored examples the explainer sees and which it never sees,
where each feature fires, the contexts that do not fire (hard and random), and the embedding scorer's AUROC.

A context is a span of `radius` tokens either side of one token of the corpus, named by that token's global index.
A feature fires on a context when it fires on any token of the span; it does not fire on it when it fires on none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

VISIBLE, HELD_OUT, DROPPED = 0, 1, 2


def split_examples(feature: np.ndarray, kind: np.ndarray, rank: np.ndarray, seq: np.ndarray, pos: np.ndarray,
                   radius: int) -> np.ndarray:
    """The role of each stored example: VISIBLE (the explainer sees it), HELD_OUT (only scorers see it) or DROPPED.

    Top and interval examples alternate by rank (even ranks visible, odd held out; each interval bucket alike), so
    both sides span the whole activation range; random samples are all held out. A held-out example whose context
    overlaps a visible context of the same feature (same sequence, positions within 2·radius), or repeats another
    held-out one, is dropped, so no token the explainer saw is scored.
    """
    feature, seq, pos = (np.asarray(a, np.int64) for a in (feature, seq, pos))
    kind, rank = np.asarray(kind).astype(str), np.asarray(rank, np.int64)
    role = np.where((kind != "random") & (rank % 2 == 0), VISIBLE, HELD_OUT).astype(np.int8)
    if not len(role):
        return role
    stride = int(pos.max()) + 4 * radius + 4
    coord = (feature * (int(seq.max()) + 1) + seq) * stride + pos  # far apart across (feature, sequence)
    seen = np.sort(coord[role == VISIBLE])
    held = np.flatnonzero(role == HELD_OUT)
    if len(seen):
        at = np.searchsorted(seen, coord[held])
        left = np.abs(coord[held] - seen[np.clip(at - 1, 0, len(seen) - 1)])
        right = np.abs(seen[np.clip(at, 0, len(seen) - 1)] - coord[held])
        role[held[np.minimum(left, right) <= 2 * radius]] = DROPPED
    held = np.flatnonzero(role == HELD_OUT)
    _, first = np.unique(coord[held], return_index=True)
    repeat = np.ones(len(held), bool)
    repeat[first] = False
    role[held[repeat]] = DROPPED
    return role


@dataclass(frozen=True)
class Firing:
    """Where each feature fires among the tokens that were read: per feature, its ascending global token indices."""

    indptr: np.ndarray  # [F + 1]
    tokens: np.ndarray  # [nnz] int64

    @classmethod
    def from_pairs(cls, feature: np.ndarray, token: np.ndarray, n_features: int) -> "Firing":
        feature, token = np.asarray(feature, np.int64), np.asarray(token, np.int64)
        order = np.lexsort((token, feature))
        indptr = np.concatenate([[0], np.cumsum(np.bincount(feature, minlength=n_features))]).astype(np.int64)
        return cls(indptr, token[order])

    def positions(self, f: int) -> np.ndarray:
        return self.tokens[self.indptr[f]:self.indptr[f + 1]]

    def fires_within(self, f: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Whether feature f fires on any token in [lo, hi), for each pair."""
        p = self.positions(f)
        lo = np.asarray(lo, np.int64)
        if not len(p):
            return np.zeros(lo.shape, bool)
        at = np.searchsorted(p, lo)
        return (at < len(p)) & (p[np.minimum(at, len(p) - 1)] < np.asarray(hi, np.int64))


@dataclass(frozen=True)
class Groups:
    """A list of context rows per feature, stored flat: rows[indptr[f]:indptr[f + 1]]."""

    indptr: np.ndarray
    rows: np.ndarray

    @classmethod
    def from_lists(cls, lists: list) -> "Groups":
        lengths = np.array([len(x) for x in lists], np.int64)
        flat = np.concatenate([np.asarray(x, np.int64) for x in lists]) if lists else np.zeros(0, np.int64)
        return cls(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), flat.astype(np.int64))

    def of(self, f: int) -> np.ndarray:
        return self.rows[self.indptr[f]:self.indptr[f + 1]]

    def __len__(self) -> int:
        return len(self.indptr) - 1


def span(g: np.ndarray, seq_starts: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) of the contexts around global token indices `g`, cut at their sequences' ends."""
    g = np.asarray(g, np.int64)
    s = np.searchsorted(seq_starts, g, side="right") - 1
    return np.maximum(g - radius, seq_starts[s]), np.minimum(g + radius + 1, seq_starts[s + 1])


def non_firing(f: int, candidates: np.ndarray, firing: Firing, seq_starts: np.ndarray, radius: int, n: int,
               rng: np.random.Generator) -> np.ndarray:
    """Up to `n` of the candidate contexts (global token indices, each once) on which feature f does not fire,
    drawn at random."""
    cand = np.unique(np.asarray(candidates, np.int64))
    if not len(cand) or n <= 0:
        return np.zeros(0, np.int64)
    lo, hi = span(cand, seq_starts, radius)
    quiet = cand[~firing.fires_within(f, lo, hi)]
    return quiet if len(quiet) <= n else np.sort(rng.choice(quiet, n, replace=False))


def halves(rows: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of `rows` (the explainer's and the scorers'), drawn at random."""
    rows = np.asarray(rows, np.int64)
    perm = rng.permutation(len(rows))
    cut = (len(rows) + 1) // 2
    return np.sort(rows[perm[:cut]]), np.sort(rows[perm[cut:]])


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """The probability that a random positive outscores a random negative (ties count half); NaN if a side is
    empty."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    if not len(pos) or not len(neg):
        return float("nan")
    ranks = rankdata(np.concatenate([pos, neg]))
    u = ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def embedding_scores(vectors: np.ndarray, features: np.ndarray, contexts: np.ndarray, positives: Groups,
                     negatives: Groups) -> np.ndarray:
    """The embedding scorer: for each explanation (a unit vector, and the feature it explains), the AUROC of its
    cosine to the feature's held-out activating contexts against its non-activating ones."""
    out = np.full(len(features), np.nan, np.float32)
    for i, (v, f) in enumerate(zip(np.asarray(vectors, np.float32), np.asarray(features, np.int64))):
        p, n = positives.of(int(f)), negatives.of(int(f))
        if len(p) and len(n):
            sims = contexts[np.concatenate([p, n])].astype(np.float32) @ v
            out[i] = auroc(sims[:len(p)], sims[len(p):])
    return out


def summary(scores: np.ndarray, bins: int = 10) -> dict:
    """Count, mean, quartiles and a histogram over [0, 1] of some scores (NaN left out), rounded for the store."""
    s = np.asarray(scores, np.float64)
    s = s[np.isfinite(s)]
    if not len(s):
        return {"n": 0}
    q = np.quantile(s, [0.1, 0.25, 0.5, 0.75, 0.9])
    counts = np.histogram(np.clip(s, 0, 1), bins=bins, range=(0.0, 1.0))[0]
    return {"n": int(len(s)), "mean": round(float(s.mean()), 4),
            **{k: round(float(v), 4) for k, v in zip(("p10", "p25", "median", "p75", "p90"), q)},
            "histogram": [int(c) for c in counts]}


def pick_shown(feature: np.ndarray, source: np.ndarray, score: np.ndarray, preferred: str = "user",
               barred: dict[int, set[str]] | None = None, baseline: str = "") -> np.ndarray:
    """Per feature, the index of the explanation its page shows: one from `preferred` (the user's own label) if
    there is one, else the best-scoring one (unscored last; a tie goes against the `baseline` source, then to the
    earlier row), skipping a source that `barred[feature]` rules out unless nothing else is left. Returns row
    indices, ascending by feature."""
    feature, source = np.asarray(feature, np.int64), np.asarray(source).astype(str)
    score = np.asarray(score, np.float64)
    barred = barred or {}
    best: dict[int, tuple] = {}
    for i, (f, s, v) in enumerate(zip(feature, source, score)):
        rank = (s == preferred, s not in barred.get(int(f), ()), bool(np.isfinite(v)), v if np.isfinite(v) else -1.0,
                s != baseline, -i)
        if int(f) not in best or rank > best[int(f)][0]:
            best[int(f)] = (rank, i)
    return np.array([best[f][1] for f in sorted(best)], np.int64)
