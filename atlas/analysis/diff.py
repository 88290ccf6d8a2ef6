"""How a retrained SAE differs from the last one: matched, split, merged, new and vanished features.

Features are compared by decoder direction (cosine of unit rows). The method, in order:

1. Candidates. Each live row's `top` nearest rows in the other dictionary, exact, in float32 blocks of
   A rows against all of B (rows of a block give A→B, its columns update a running B→A top list), so
   no Fa×Fb matrix is ever held; ties follow `decoder_neighbours`' grid and go to the smaller index.
   Candidate cosines are then recomputed per pair in float64, so a pair's score does not depend on
   which block it was found in.
2. One-to-one matches. Maximum total cosine over candidate pairs with cosine ≥ `match_threshold`
   (pairs below it can never be reported as matched, so they are dropped before assigning). The
   Hungarian method (`linear_sum_assignment`) runs per connected component of that sparse graph on a
   dense component-sized weight matrix; a component too large for that (more than
   `assign_dense_max` cells) goes to scipy's sparse LAPJVsp on the same graph made full by one
   dummy partner per feature, which gives the same optimum in memory linear in the edges.
3. Splits and merges. A source feature x (A for splits, B for merges) is explained by parts: its
   candidates in the other dictionary with cosine ≥ `part_threshold` that are not one-to-one matched
   to some other source feature. x is fitted by non-negative least squares on the parts; parts
   that add less than `margin` to the fit's cosine are dropped one at a time (weakest first, refit
   each time). It is a split/merge when at least two parts remain, the combination's cosine is
   ≥ `match_threshold` and beats x's own one-to-one match (0 when unmatched) by at least `margin`.
4. Resolution. Each feature is reported once. Splits and merges are accepted by descending
   combination cosine; one that shares a feature with an already accepted one is dropped. A match
   is reported only when neither end was taken by a split or merge; the other end of a match so
   broken is then new or vanished like any unexplained feature.

Dead features (alive False or zero decoder rows) take no part and are reported apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment, nnls
from scipy.sparse.csgraph import connected_components, min_weight_full_bipartite_matching

from atlas.analysis.neighbours import BLOCK_BYTES, TIE_GRID, top_k_stable, unit_rows

KINDS = ("matched", "split", "merge", "new", "vanished")
_DIGITS = 6  # serialised floats; float64 pair cosines from float32 rows are good to ~1e-7
_EDGE_BYTES = 64 * 2**20
_HEAVY = 64  # survivors per k beyond which a row is tie-rich and goes to the argpartition path


@dataclass(frozen=True)
class DictDiff:
    """Feature-by-feature comparison of dictionary A (old) with dictionary B (new)."""

    matched: pd.DataFrame  # a, b, cosine
    splits: pd.DataFrame  # a, b_parts, weights, part_cosines, cosine (of the combination), part_coact
    merges: pd.DataFrame  # b, a_parts, weights, part_cosines, cosine, part_coact
    new: np.ndarray  # B rows, int64
    vanished: np.ndarray  # A rows, int64
    dead_a: np.ndarray
    dead_b: np.ndarray
    params: dict = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Features per category; split counts A features that split, merge counts B features."""
        return {
            "matched": len(self.matched), "split": len(self.splits), "merge": len(self.merges),
            "new": len(self.new), "vanished": len(self.vanished),
            "dead_a": len(self.dead_a), "dead_b": len(self.dead_b),
        }

    def to_frames(self) -> dict[str, pd.DataFrame]:
        """Tidy tables for the store: `version_matches` (one row per pair or lone feature) and `version_dead`.

        `version_matches`: kind, a, b (-1 where the kind has no such side), score (match cosine or
        the combination's cosine; NaN for new/vanished), cosine (of this a–b pair), weight (the
        part's NNLS weight in a split/merge, else NaN). Ordered by kind, then split/matched/vanished
        by (a, b) and merge/new by (b, a).
        """
        nan = np.nan
        rows: list[tuple] = []
        for a, b, c in self.matched[["a", "b", "cosine"]].itertuples(index=False):
            rows.append(("matched", a, b, c, c, nan))
        for s in self.splits.itertuples(index=False):
            for b, w, c in sorted(zip(s.b_parts, s.weights, s.part_cosines)):
                rows.append(("split", s.a, b, s.cosine, c, w))
        for m in self.merges.itertuples(index=False):
            for a, w, c in sorted(zip(m.a_parts, m.weights, m.part_cosines)):
                rows.append(("merge", a, m.b, m.cosine, c, w))
        rows += [("new", -1, b, nan, nan, nan) for b in self.new]
        rows += [("vanished", a, -1, nan, nan, nan) for a in self.vanished]
        frame = pd.DataFrame(rows, columns=["kind", "a", "b", "score", "cosine", "weight"])
        frame = frame.astype({"kind": str, "a": np.int64, "b": np.int64, "score": np.float64,
                              "cosine": np.float64, "weight": np.float64})
        frame[["score", "cosine", "weight"]] = frame[["score", "cosine", "weight"]].round(_DIGITS)
        dead = pd.DataFrame({
            "side": ["a"] * len(self.dead_a) + ["b"] * len(self.dead_b),
            "feature": np.concatenate([self.dead_a, self.dead_b]).astype(np.int64),
        })
        return {"version_matches": frame, "version_dead": dead}


def compare_dictionaries(
    W_a: np.ndarray,
    W_b: np.ndarray,
    alive_a: np.ndarray | None = None,
    alive_b: np.ndarray | None = None,
    match_threshold: float = 0.7,
    part_threshold: float = 0.3,
    top: int = 10,
    coact_a=None,
    coact_b=None,
    margin: float = 0.05,
    block: int | None = None,
    assign_dense_max: int = 1 << 22,
) -> DictDiff:
    """Compare decoder dictionaries W_a [Fa, d] and W_b [Fb, d]; see the module docstring for the method.

    `match_threshold`: least cosine for a one-to-one match and for a split/merge combination.
    `part_threshold`: least cosine of each part of a split/merge with the feature it explains.
    `margin`: how much a combination must beat the one-to-one match, and how much each part must add.
    `coact_a`/`coact_b`: optional [F, F] co-activation scores (dense or sparse, e.g. Jaccard) within
    each dictionary; not used to decide anything, only reported as the parts' mean pairwise value
    (parts of a genuine split tend to fire on different tokens, so a low value supports it).
    """
    units_a, live_a = _live_units(W_a, alive_a)
    units_b, live_b = _live_units(W_b, alive_b)
    if units_a.shape[1] != units_b.shape[1]:
        raise ValueError(f"dictionaries differ in width: {units_a.shape[1]} vs {units_b.shape[1]}")
    fa, fb = len(units_a), len(units_b)
    a_idx, a_sim, b_idx, b_sim = cross_neighbours(units_a, live_a, units_b, live_b, top, block)
    ea, eb = _candidate_pairs(a_idx, b_idx, fb)
    cos = _pair_cosines(units_a, units_b, ea, eb)

    match_a, match_b = one_to_one(ea, eb, cos, fa, fb, match_threshold, assign_dense_max)
    ma = np.flatnonzero(match_a >= 0)
    match_cos_a, match_cos_b = np.zeros(fa), np.zeros(fb)
    match_cos_a[ma] = match_cos_b[match_a[ma]] = _pair_cosines(units_a, units_b, ma, match_a[ma])

    explain = dict(part_threshold=part_threshold, need=match_threshold, margin=margin)
    split_props = _explained(units_a, units_b, a_idx, a_sim, match_cos_a, match_b, **explain)
    merge_props = _explained(units_b, units_a, b_idx, b_sim, match_cos_b, match_a, **explain)
    splits, merges = _resolve(split_props, merge_props)

    taken_a = np.zeros(fa, bool)
    taken_b = np.zeros(fb, bool)
    for src, parts, *_ in splits:
        taken_a[src], taken_b[parts] = True, True
    for src, parts, *_ in merges:
        taken_b[src], taken_a[parts] = True, True
    keep = np.flatnonzero((match_a >= 0) & ~taken_a)
    keep = keep[~taken_b[match_a[keep]]]
    matched = pd.DataFrame({"a": keep.astype(np.int64), "b": match_a[keep].astype(np.int64),
                            "cosine": match_cos_a[keep]})
    taken_a[keep], taken_b[match_a[keep]] = True, True

    return DictDiff(
        matched=matched,
        splits=_combination_frame(splits, "a", "b_parts", coact_b),
        merges=_combination_frame(merges, "b", "a_parts", coact_a),
        new=np.flatnonzero(live_b & ~taken_b).astype(np.int64),
        vanished=np.flatnonzero(live_a & ~taken_a).astype(np.int64),
        dead_a=np.flatnonzero(~live_a).astype(np.int64),
        dead_b=np.flatnonzero(~live_b).astype(np.int64),
        params=dict(match_threshold=match_threshold, part_threshold=part_threshold, top=top, margin=margin),
    )


def cross_neighbours(units_a, live_a, units_b, live_b, k: int, block: int | None = None):
    """Exact top-k cosine rows of B for each live row of A and of A for each live row of B, best first.

    Returns `a_idx, a_sim, b_idx, b_sim` ([Fa, k] and [Fb, k]; -1 / NaN where there is none). Ties
    (on neighbours' similarity grid) go to the smaller index, as in `decoder_neighbours`.
    """
    fa, fb = len(units_a), len(units_b)
    a_idx, a_sim = np.full((fa, k), -1, np.int64), np.full((fa, k), np.nan, np.float32)
    b_idx, b_sim = np.full((fb, k), -1, np.int64), np.full((fb, k), np.nan, np.float32)
    la, lb = np.flatnonzero(live_a), np.flatnonzero(live_b)
    ka, kb = min(k, len(lb)), min(k, len(la))
    if ka == 0 or kb == 0:
        return a_idx, a_sim, b_idx, b_sim
    cols = units_b[lb]
    # Per cell: the float32 block and a mask; survivors of the mask are a few per row.
    block = block or max(1, BLOCK_BYTES // (len(lb) * 8))
    run_idx = np.full((len(lb), kb), -1, np.int64)
    run_sim = np.full((len(lb), kb), -np.inf, np.float32)
    for start in range(0, len(la), block):
        rows = la[start : start + block]
        s = units_a[rows] @ cols.T
        top, sim = _block_top(s, ka)
        a_idx[rows, :ka], a_sim[rows, :ka] = lb[top], sim
        # Only what beats a B row's current k-th best can enter its list.
        top, sim = _block_top(s, kb, axis=0, floor=run_sim[:, -1])
        run_idx, run_sim = _merge_top(run_idx, run_sim, np.where(top >= 0, rows[top], -1), sim)
    b_idx[lb, :kb], b_sim[lb, :kb] = run_idx, run_sim
    return a_idx, a_sim, b_idx, b_sim


def _block_top(s, k: int, axis: int = 1, floor=None):
    """Positions and values of the k largest entries of each row of s (axis=1) or of each column
    (axis=0), ties (on the grid) by smaller position.

    Exact, without an argpartition of the whole block: a lower bound on each group's k-th value
    (the k-th of a slice of the block, or `floor`, a value known to be beaten elsewhere) masks all
    but a few entries, and only those are sorted. Groups where ties leave too many survivors go to
    `top_k_stable`. Groups with fewer than k survivors are padded with -1 / -inf.
    """
    sg = s if axis == 1 else s.T  # groups as rows; a view, used for shapes and the fallback only
    g, n = sg.shape
    k = min(k, n)
    lower = np.full(g, -np.inf, np.float32) if floor is None else floor.astype(np.float32)
    m = max(4 * k, n // 16)
    if m < n:
        head = s[:, :m] if axis == 1 else s[:m]
        lower = np.maximum(lower, np.take(np.partition(head, m - k, axis=axis), m - k, axis=axis))
    # Compare on the grid: an entry in the same cell as the bound may still win on index.
    cut = np.floor(lower * np.float32(1 / TIE_GRID)) * np.float32(TIE_GRID)
    mask = s >= np.expand_dims(cut, axis)
    heavy = np.flatnonzero(np.count_nonzero(mask, axis=axis) > _HEAVY * k)
    if axis == 1:
        mask[heavy] = False
    else:
        mask[:, heavy] = False
    r, c = np.nonzero(mask)  # in s's own (C) order: a transposed mask is far slower to scan
    vals = s[r, c]
    gi, pj = (r, c) if axis == 1 else (c, r)
    order = np.lexsort((pj, -np.floor(vals * np.float32(1 / TIE_GRID)), gi))
    gi, pj, vals = gi[order], pj[order], vals[order]
    rank = np.arange(len(gi)) - np.searchsorted(gi, gi)
    keep = rank < k
    pos = np.full((g, k), -1, np.int64)
    sim = np.full((g, k), -np.inf, np.float32)
    pos[gi[keep], rank[keep]], sim[gi[keep], rank[keep]] = pj[keep], vals[keep]
    if len(heavy):
        hs = np.ascontiguousarray(sg[heavy])
        pos[heavy] = top_k_stable(hs, k)
        sim[heavy] = np.take_along_axis(hs, pos[heavy], 1)
    return pos, sim


def _merge_top(idx, sim, new_idx, new_sim):
    """Keep the best of a running top list and a block's, with the same grid and tie rule."""
    k = idx.shape[1]
    idx, sim = np.concatenate([idx, new_idx], 1), np.concatenate([sim, new_sim], 1)
    q = np.floor(sim * np.float32(1 / TIE_GRID))
    # Padding (-1, -inf) sorts last whatever its index.
    order = np.lexsort((np.where(idx < 0, np.iinfo(np.int64).max, idx), -q), axis=1)[:, :k]
    return np.take_along_axis(idx, order, 1), np.take_along_axis(sim, order, 1)


def one_to_one(ea, eb, cos, fa: int, fb: int, threshold: float, dense_max: int = 1 << 22):
    """Maximum-total-cosine one-to-one matching over pairs with cosine ≥ threshold.

    Returns `match_a` [fa] (B row or -1) and `match_b` [fb] (A row or -1).
    """
    match_a, match_b = np.full(fa, -1, np.int64), np.full(fb, -1, np.int64)
    keep = cos >= threshold
    ea, eb, w = ea[keep], eb[keep], cos[keep]
    if not len(ea):
        return match_a, match_b
    graph = sp.coo_matrix((np.ones(len(ea)), (ea, fa + eb)), shape=(fa + fb, fa + fb))
    _, label = connected_components(graph, directed=False)
    comp = label[ea]
    # Most features of a retrained SAE have one clear counterpart: a lone pair needs no solver.
    lone = np.bincount(comp)[comp] == 1
    match_a[ea[lone]], match_b[eb[lone]] = eb[lone], ea[lone]
    rest = np.flatnonzero(~lone)
    order = rest[np.argsort(comp[rest], kind="stable")]  # (a, b) order kept within a component
    cuts = np.flatnonzero(np.diff(comp[order])) + 1
    for part in np.split(order, cuts) if len(order) else []:
        ua, ia = np.unique(ea[part], return_inverse=True)
        ub, ib = np.unique(eb[part], return_inverse=True)
        if len(ua) * len(ub) <= dense_max:
            # Zero stands for "no pair": every real pair weighs ≥ threshold > 0, so pairing
            # through a zero cell never beats leaving both ends unmatched.
            dense = np.zeros((len(ua), len(ub)))
            dense[ia, ib] = w[part]
            r, c = linear_sum_assignment(dense, maximize=True)
            real = dense[r, c] > 0
            r, c = r[real], c[real]
        else:
            r, c = _sparse_assignment(ia, ib, w[part], len(ua), len(ub))
        match_a[ua[r]], match_b[ub[c]] = ub[c], ua[r]
    return match_a, match_b


def _sparse_assignment(ia, ib, w, na: int, nb: int):
    """Maximum-weight (not necessarily full) matching of a sparse bipartite graph, memory linear in edges.

    LAPJVsp needs a full matching to exist, so every A node gets a private dummy column and every
    B node a private dummy row (cost 1.5 each), and dummy rows meet dummy columns wherever the real
    pair exists (cost 1). A real pair costs 2 - w, so matching it costs 3 - w against 3 for leaving
    both ends on their dummies: minimising cost maximises the matched weight, all costs positive.
    """
    rows = np.concatenate([ia, np.arange(na), na + ib, na + np.arange(nb)])
    cols = np.concatenate([ib, nb + np.arange(na), nb + ia, np.arange(nb)])
    cost = np.concatenate([2.0 - w, np.full(na, 1.5), np.ones(len(w)), np.full(nb, 1.5)])
    graph = sp.csr_matrix((cost, (rows, cols)), shape=(na + nb, na + nb))
    r, c = min_weight_full_bipartite_matching(graph)
    real = (r < na) & (c < nb)
    return r[real], c[real]


def _live_units(w, alive):
    units, nonzero = unit_rows(w)
    live = nonzero if alive is None else nonzero & np.asarray(alive, dtype=bool)
    if len(live) != len(units):
        raise ValueError(f"alive mask has {len(live)} entries for {len(units)} rows")
    return units, live


def _candidate_pairs(a_idx, b_idx, fb: int):
    """Distinct (a, b) pairs found from either side, sorted by (a, b)."""
    fa = len(a_idx)
    ea = np.concatenate([np.repeat(np.arange(fa), a_idx.shape[1]), b_idx.ravel()])
    eb = np.concatenate([a_idx.ravel(), np.repeat(np.arange(fb), b_idx.shape[1])])
    ok = (ea >= 0) & (eb >= 0)
    key = np.unique(ea[ok] * fb + eb[ok])
    return key // fb, key % fb


def _pair_cosines(units_a, units_b, ea, eb):
    out = np.empty(len(ea))
    step = max(1, _EDGE_BYTES // (16 * max(1, units_a.shape[1])))
    for s in range(0, len(ea), step):
        xa = units_a[ea[s : s + step]].astype(np.float64)
        xb = units_b[eb[s : s + step]].astype(np.float64)
        out[s : s + step] = np.einsum("ij,ij->i", xa, xb)
    return out


def _explained(src, dst, nbr_idx, nbr_sim, match_cos_src, match_dst, *, part_threshold, need, margin):
    """Proposals (source, parts, weights, part cosines, combination cosine) for every source row
    that a non-negative combination of ≥2 rows of the other dictionary explains (see step 3)."""
    out = []
    owner = np.where(nbr_idx >= 0, match_dst[nbr_idx], -2)
    mine = (owner == -1) | (owner == np.arange(len(nbr_idx))[:, None])
    # The search's float32 cosines only shortlist rows; the exact test below is in float64.
    mine &= (nbr_idx >= 0) & (nbr_sim >= part_threshold - 1e-4)
    for i in np.flatnonzero((mine.sum(1) >= 2) & (match_cos_src + margin <= 1)):
        cand = nbr_idx[i][mine[i]]
        x = src[i].astype(np.float64)
        parts = dst[cand].astype(np.float64)
        c = parts @ x
        ok = c >= part_threshold
        if ok.sum() < 2:
            continue
        cand, parts, c = cand[ok], parts[ok], c[ok]
        bar = max(need, match_cos_src[i] + margin)
        gram = parts @ parts.T
        # Unconstrained least squares bounds the non-negative fit from above and costs one solve;
        # most features (well matched, or with nothing near) stop here.
        if bar > 1 or c @ np.linalg.lstsq(gram, c, rcond=None)[0] < bar * bar:
            continue
        fit = _necessary_parts(gram, c, bar, margin)
        if fit is not None:
            keep, w, r = fit
            order = np.argsort(cand[keep])
            out.append((int(i), cand[keep][order], w[order], c[keep][order], r))
    return out


def _necessary_parts(gram, c, need: float, margin: float):
    """NNLS of a unit vector on parts given by their Gram matrix and cosines; drop parts adding < margin.

    Returns (kept positions, weights, combination cosine) or None when fewer than two parts stay
    or the combination falls below `need`. Dropping parts only lowers the cosine, so a fit that
    starts below `need` stops at once.
    """
    keep = np.arange(len(c))
    while True:
        w = _nnls_gram(gram[np.ix_(keep, keep)], c[keep])
        keep, w = keep[w > 0], w[w > 0]
        if len(keep) < 2:
            return None
        r = _fit_cosine(gram[np.ix_(keep, keep)], c[keep], w)
        if r < need:
            return None
        losses = []
        for j in range(len(keep)):
            rest = np.delete(keep, j)
            g, cc = gram[np.ix_(rest, rest)], c[rest]
            losses.append(r - _fit_cosine(g, cc, _nnls_gram(g, cc)))
        j = int(np.argmin(losses))
        if losses[j] >= margin:
            return keep, w, r
        keep = np.delete(keep, j)


def _nnls_gram(gram, c):
    """argmin_{w ≥ 0} |P^T w - x|² from G = P P^T and c = P x alone: with G = R^T R it is
    |R w - R^-T c|², a k×k problem however long the vectors."""
    # The ridge keeps Cholesky defined when two parts are the same direction.
    low = np.linalg.cholesky(gram + 1e-10 * np.eye(len(c)))
    w, _ = nnls(low.T, np.linalg.solve(low, c))
    return w


def _fit_cosine(gram, c, w) -> float:
    norm2 = float(w @ gram @ w)
    return float(w @ c) / np.sqrt(norm2) if norm2 > 0 else 0.0


def _resolve(split_props, merge_props):
    """Accept proposals by descending combination cosine; each feature goes to at most one."""
    tagged = [(p[4], 0, p) for p in split_props] + [(p[4], 1, p) for p in merge_props]
    tagged.sort(key=lambda t: (-round(t[0], 9), t[1], t[2][0]))
    used = (set(), set())  # A rows, B rows
    splits, merges = [], []
    for _, kind, p in tagged:
        src_side, part_side = (0, 1) if kind == 0 else (1, 0)
        parts = set(p[1].tolist())
        if p[0] in used[src_side] or parts & used[part_side]:
            continue
        used[src_side].add(p[0])
        used[part_side].update(parts)
        (splits if kind == 0 else merges).append(p)
    return sorted(splits, key=lambda p: p[0]), sorted(merges, key=lambda p: p[0])


def _combination_frame(props, src_col: str, parts_col: str, coact):
    frame = pd.DataFrame({
        src_col: np.array([p[0] for p in props], dtype=np.int64),
        parts_col: [p[1].astype(np.int64).tolist() for p in props],
        "weights": [p[2].tolist() for p in props],
        "part_cosines": [p[3].tolist() for p in props],
        "cosine": np.array([p[4] for p in props], dtype=np.float64),
        "part_coact": np.array([_mean_coact(coact, p[1]) for p in props], dtype=np.float64),
    })
    return frame


def _mean_coact(coact, parts) -> float:
    if coact is None:
        return np.nan
    sub = coact[parts][:, parts]
    sub = sub.toarray() if sp.issparse(sub) else np.asarray(sub, dtype=np.float64)
    iu = np.triu_indices(len(parts), 1)
    return float(np.mean(sub[iu]))
