"""Nested clusters of features (regions → clusters → groups), their coherence, and the choice of basis."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from atlas.analysis.neighbours import unit_rows
from atlas.config import DEFAULT_CLUSTER_LEVELS

DIRECT_UP_TO = 20_000  # Ward over the points themselves needs ~n²·8 bytes (3.2 GB at 20k)


@dataclass
class Hierarchy:
    """Cluster labels per level (0 = coarsest), each finer cluster inside exactly one coarser one.

    `labels[l]` is [n] int64 in 0..k_l-1 over the rows given to `build_hierarchy`; `parents[l]` is
    [k_l] int64, the level l-1 cluster holding each level-l cluster (-1 at level 0). Clusters are
    numbered by parent, then size (largest first), then smallest member, so numbering is stable.
    """

    labels: list[np.ndarray]
    parents: list[np.ndarray]

    @property
    def n_levels(self) -> int:
        return len(self.labels)

    def sizes(self, level: int) -> np.ndarray:
        return np.bincount(self.labels[level], minlength=len(self.parents[level]))

    def offsets(self) -> np.ndarray:
        """Global cluster id of each level's cluster 0 (ids run level by level, coarsest first)."""
        return np.concatenate([[0], np.cumsum([len(p) for p in self.parents])])[:-1]

    def global_labels(self, level: int) -> np.ndarray:
        return self.labels[level] + self.offsets()[level]

    def table(self) -> dict[str, np.ndarray]:
        """Columns of the `clusters` table that depend only on the hierarchy: id, level, parent id, size."""
        off = self.offsets()
        ids, levels, parents, sizes = [], [], [], []
        for lv, par in enumerate(self.parents):
            k = len(par)
            ids.append(off[lv] + np.arange(k))
            levels.append(np.full(k, lv))
            parents.append(np.where(par < 0, -1, par + (off[lv - 1] if lv else 0)))
            sizes.append(self.sizes(lv))
        return {n: np.concatenate(v).astype(np.int64) for n, v in
                zip(("cluster_id", "level", "parent_id", "size"), (ids, levels, parents, sizes))}

    def members(self) -> tuple[np.ndarray, np.ndarray]:
        """(cluster_id, row) pairs for every level: the `cluster_members` table over rows."""
        rows = np.arange(len(self.labels[0]))
        return (np.concatenate([self.global_labels(lv) for lv in range(self.n_levels)]),
                np.tile(rows, self.n_levels))


def build_hierarchy(
    vectors: np.ndarray,
    levels: Sequence[int] = DEFAULT_CLUSTER_LEVELS,
    seed: int = 0,
    direct_up_to: int = DIRECT_UP_TO,
    n_centroids: int | None = None,
) -> Hierarchy:
    """Cut one Ward dendrogram of the (unit) rows at several cluster counts, coarse to fine.

    Up to `direct_up_to` rows the dendrogram is over the rows; above it, MiniBatchKMeans first
    reduces them to ~2-4k centroids (or `n_centroids`) and size-weighted Ward joins those, so a
    centroid standing for 300 features weighs 300 times one standing for a single feature.
    Cutting a single tree is what makes the levels nest. Counts above the number of rows are capped.
    """
    x = np.asarray(vectors, dtype=np.float64)
    n = len(x)
    if n == 0:
        return Hierarchy([np.zeros(0, np.int64) for _ in levels], [np.zeros(0, np.int64) for _ in levels])
    if n <= direct_up_to:
        leaf_of_row = np.arange(n)
        merges = _ward_merges(x)
        n_leaves = n
    else:
        m = n_centroids or int(np.clip(n // 8, 2048, 4096))
        m = min(n, max(m, max(levels)))
        leaf_of_row, centroids, weights = _kmeans(x, m, seed)
        merges = _weighted_ward_merges(centroids, weights)
        n_leaves = len(centroids)
    counts = sorted(min(int(k), n_leaves) for k in levels)
    raw = [_cut(merges, n_leaves, k)[leaf_of_row] for k in counts]
    return _number(raw)


def _ward_merges(x: np.ndarray) -> np.ndarray:
    """Merges [n-1, 3] (left node, right node, new node), in height order; nodes ≥ n are merges."""
    from scipy.cluster.hierarchy import linkage

    n = len(x)
    if n == 1:
        return np.zeros((0, 3), np.int64)
    z = linkage(_condensed_euclidean(x), method="ward")
    return np.column_stack([z[:, 0], z[:, 1], n + np.arange(n - 1)]).astype(np.int64)


def _condensed_euclidean(x: np.ndarray) -> np.ndarray:
    """pdist(x) through blocked matrix products: BLAS is many times faster than pdist's loop."""
    n = len(x)
    sq = np.einsum("ij,ij->i", x, x)
    out = np.empty(n * (n - 1) // 2)
    block = max(1, 2**24 // n)
    pos = 0
    for start in range(0, n, block):
        stop = min(n, start + block)
        d2 = sq[start:stop, None] + sq[None, :] - 2.0 * (x[start:stop] @ x.T)
        np.sqrt(np.maximum(d2, 0.0, out=d2), out=d2)
        for i in range(start, stop):
            out[pos : pos + n - i - 1] = d2[i - start, i + 1 :]
            pos += n - i - 1
    return out


def _kmeans(x: np.ndarray, m: int, seed: int):
    from sklearn.cluster import MiniBatchKMeans

    km = MiniBatchKMeans(n_clusters=m, random_state=seed, batch_size=4096, n_init=1, max_iter=20)
    assigned = km.fit_predict(x.astype(np.float32))
    # Centroids that ended up with no rows are dropped; the rest are recomputed as exact means.
    used, leaf_of_row = np.unique(assigned, return_inverse=True)
    weights = np.bincount(leaf_of_row).astype(np.float64)
    centroids = np.zeros((len(used), x.shape[1]))
    np.add.at(centroids, leaf_of_row, x)
    return leaf_of_row, centroids / weights[:, None], weights


def _weighted_ward_merges(c: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Ward over weighted points by the nearest-neighbour chain, Lance-Williams updates, O(m²) memory."""
    m = len(c)
    sq = np.einsum("ij,ij->i", c, c)
    d = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (c @ c.T), 0.0)
    d *= 2.0 * np.outer(w, w) / (w[:, None] + w[None, :])  # Ward cost of joining two points
    np.fill_diagonal(d, np.inf)
    size = w.copy()
    active = np.ones(m, bool)
    node = np.arange(m)
    merges, heights, chain = [], [], []
    while len(merges) < m - 1:
        if not chain:
            chain.append(int(np.flatnonzero(active)[0]))
        a = chain[-1]
        b = int(np.argmin(d[a]))
        if len(chain) > 1 and d[a, chain[-2]] <= d[a, b]:
            b = chain[-2]  # keeps the chain from cycling on equal distances
        if len(chain) < 2 or b != chain[-2]:
            chain.append(b)
            continue
        chain.pop(), chain.pop()
        h = d[a, b]
        merges.append((node[a], node[b], m + len(merges)))
        heights.append(h)
        new = ((size[a] + size) * d[a] + (size[b] + size) * d[b] - size * h) / (size[a] + size[b] + size)
        new[~active] = np.inf
        new[[a, b]] = np.inf
        d[a], d[:, a] = new, new
        d[b], d[:, b] = np.inf, np.inf
        active[b] = False
        size[a] += size[b]
        node[a] = merges[-1][2]
    merges = np.asarray(merges, dtype=np.int64).reshape(-1, 3)
    # Ward is reducible, so ordering by height (stable: a child never sorts after its parent) gives
    # the same tree the chain built, ready to be cut by merge count.
    return merges[np.argsort(heights, kind="stable")]


def _cut(merges: np.ndarray, n: int, k: int) -> np.ndarray:
    """Leaf labels (arbitrary numbering) after applying the first n-k merges."""
    parent = np.arange(n)
    rep = np.empty(n + len(merges), dtype=np.int64)
    rep[:n] = np.arange(n)

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for left, right, new in merges[: n - k]:
        a, b = find(rep[left]), find(rep[right])
        parent[max(a, b)] = min(a, b)
        rep[new] = min(a, b)
    return np.array([find(i) for i in range(n)])


def _number(raw: list[np.ndarray]) -> Hierarchy:
    labels, parents = [], []
    prev = None
    for lab in raw:
        ids, inv = np.unique(lab, return_inverse=True)
        k = len(ids)
        size = np.bincount(inv, minlength=k)
        first = np.full(k, len(lab))
        np.minimum.at(first, inv, np.arange(len(lab)))
        par = prev[first] if prev is not None else np.full(k, -1)
        order = np.lexsort((first, -size, par))
        rank = np.empty(k, np.int64)
        rank[order] = np.arange(k)
        labels.append(rank[inv].astype(np.int64))
        parents.append(par[order].astype(np.int64))
        prev = labels[-1]
    return Hierarchy(labels, parents)


# ---- coherence -------------------------------------------------------------------------------


def coact_similarity(coact: sp.spmatrix) -> sp.csr_matrix:
    """Ochiai coefficient of co-firing, count(i and j) / sqrt(count(i) count(j)), zero diagonal.

    Each feature's own count is read from the diagonal; a matrix that lacks one (e.g. built from
    top-k partner lists) falls back to row sums, which gives a score of the same shape, not in [0, 1].
    """
    c = sp.csr_matrix(coact, dtype=np.float64)
    own = c.diagonal().copy()
    if not own.any():
        own = np.asarray(c.sum(axis=1)).ravel()
    inv = np.zeros_like(own)
    inv[own > 0] = 1.0 / np.sqrt(own[own > 0])
    s = sp.diags(inv) @ c @ sp.diags(inv)
    s = sp.csr_matrix(s)
    s.setdiag(0)
    s.eliminate_zeros()
    return s


def coherence(
    members: np.ndarray,
    W_dec: np.ndarray,
    coact: sp.spmatrix | None = None,
    sample: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Mean pairwise decoder cosine and mean pairwise co-firing (Ochiai) score of a cluster's members.

    Clusters above `sample` members are scored on a seeded sample. NaN when there is no pair, or
    no co-activation matrix.
    """
    members = np.asarray(members, dtype=np.int64)
    if len(members) > sample:
        members = np.sort(np.random.default_rng(seed).choice(members, sample, replace=False))
    if len(members) < 2:
        return float("nan"), float("nan")
    dec = _mean_pairwise_dense(unit_rows(np.asarray(W_dec)[members])[0])
    if coact is None:
        return dec, float("nan")
    s = coact_similarity(sp.csr_matrix(coact)[members][:, members])
    return dec, float(s.sum() / (len(members) * (len(members) - 1)))


def _mean_pairwise_dense(u: np.ndarray) -> float:
    u = u.astype(np.float64)
    n = len(u)
    total = u.sum(axis=0)
    return float((total @ total - np.einsum("ij,ij->", u, u)) / (n * (n - 1)))


# ---- which basis clusters best -------------------------------------------------------------


def signal_lift(labels: np.ndarray, signal: np.ndarray | sp.spmatrix) -> float:
    """How much more alike cluster-mates are than random pairs, on one signal.

    `signal` is either unit rows [n, D] (similarity = dot product) or a sparse [n, n] similarity.
    Returns the member-weighted mean over clusters of their mean pairwise similarity, minus the
    mean over all pairs. Singletons carry no pairs and are skipped.
    """
    labels = np.asarray(labels)
    n, k = len(labels), int(labels.max()) + 1
    size = np.bincount(labels, minlength=k).astype(np.float64)
    if sp.issparse(signal):
        s = sp.coo_matrix(signal)
        off = s.row != s.col
        same = off & (labels[s.row] == labels[s.col])
        within = np.bincount(labels[s.row[same]], weights=s.data[same], minlength=k)
        overall = s.data[off].sum()
    else:
        u = np.asarray(signal, dtype=np.float64)
        onehot = sp.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(k, n))
        sums = onehot @ u
        self_sim = np.bincount(labels, weights=np.einsum("ij,ij->i", u, u), minlength=k)
        within = np.einsum("ij,ij->i", sums, sums) - self_sim
        total = u.sum(axis=0)
        overall = total @ total - self_sim.sum()
    pairs = size * (size - 1)
    ok = pairs > 0
    if not ok.any() or n < 2:
        return float("nan")
    per_cluster = within[ok] / pairs[ok]
    return float(np.average(per_cluster, weights=size[ok]) - overall / (n * (n - 1)))


def basis_scores(
    labelings: dict[str, np.ndarray], signals: dict[str, np.ndarray | sp.spmatrix]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Score clusterings (one per basis) against every signal; returns (basis → score, basis → signal → lift).

    For each signal, a basis's lift is divided by the best lift any basis reached on that signal,
    and the score is the mean of these shares over signals: 1.0 means "as tight as the best
    basis on every notion of relatedness". In-sample caveat, stated plainly: a basis built from
    a signal scores ~1 on it by construction (and the blend is built from all of them), so the
    score measures how well one clustering serves all signals at once, not held-out accuracy.
    """
    table = {b: {s: signal_lift(lab, sig) for s, sig in signals.items()} for b, lab in labelings.items()}
    scores = {}
    for b in labelings:
        shares = []
        for s in signals:
            best = max((table[o][s] for o in labelings if np.isfinite(table[o][s])), default=np.nan)
            if np.isfinite(best) and best > 0 and np.isfinite(table[b][s]):
                shares.append(table[b][s] / best)
        scores[b] = float(np.mean(shares)) if shares else float("nan")
    return scores, table


@dataclass
class BasisChoice:
    """What `choose_basis` measured: the best basis, all scores, the lift table and the hierarchies built."""

    best: str
    scores: dict[str, float]
    table: dict[str, dict[str, float]]
    hierarchies: dict[str, Hierarchy] = field(repr=False)


def choose_basis(
    W_dec: np.ndarray,
    alive: np.ndarray,
    coact: sp.spmatrix | None = None,
    context_docs: list[str] | None = None,
    levels: Sequence[int] = DEFAULT_CLUSTER_LEVELS,
    seed: int = 0,
    bases: tuple[str, ...] | None = None,
) -> BasisChoice:
    """Build a hierarchy in every basis the inputs allow and score each at its finest level.

    Signals are decoder cosine, co-firing (Ochiai) and context TF-IDF cosine, whichever inputs exist.
    Ties go to the earlier basis in decoder, coact, context, blend order.
    """
    from atlas.analysis.basis import context_vectors, feature_vectors

    alive = np.asarray(alive, dtype=bool)
    rows = np.flatnonzero(alive)
    available = ["decoder"] + (["coact"] if coact is not None else []) + (
        ["context"] if context_docs is not None else []) + ["blend"]
    bases = [b for b in (bases or available) if b in available]
    signals: dict[str, np.ndarray | sp.spmatrix] = {"decoder": unit_rows(np.asarray(W_dec)[rows])[0]}
    if coact is not None:
        signals["coact"] = coact_similarity(sp.csr_matrix(coact)[rows][:, rows])
    if context_docs is not None:
        signals["context"] = context_vectors(context_docs, alive, dims=256, seed=seed)
    hierarchies = {
        b: build_hierarchy(feature_vectors(b, W_dec, alive, coact, context_docs, seed), levels, seed)
        for b in bases
    }
    scores, table = basis_scores({b: h.labels[-1] for b, h in hierarchies.items()}, signals)
    ranked = sorted(bases, key=lambda b: -np.nan_to_num(scores[b], nan=-np.inf))
    return BasisChoice(ranked[0], scores, table, hierarchies)
