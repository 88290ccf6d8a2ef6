"""Neighbours, basis vectors, hierarchy and layout, checked against brute force or planted structure."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.manifold import trustworthiness
from sklearn.metrics import adjusted_rand_score

from atlas.analysis.basis import feature_vectors, ppmi
from atlas.analysis.clusters import (
    basis_scores, build_hierarchy, choose_basis, coact_similarity, coherence, signal_lift,
)
from atlas.analysis import layout
from atlas.analysis.layout import cluster_positions, exact_knn, umap_layout
from atlas.analysis.neighbours import decoder_neighbours


def planted(n_groups=8, per_group=40, d=64, noise=0.35, seed=0):
    """Directions scattered around random group centres: a dictionary whose groups are known."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_groups, d))
    truth = np.repeat(np.arange(n_groups), per_group)
    x = centres[truth] / np.sqrt(d) + noise / np.sqrt(d) * rng.normal(size=(len(truth), d))
    return x.astype(np.float32), truth


def dense_reference(w, k):
    """Neighbours from the full float64 cosine matrix, sorted by similarity then index."""
    norms = np.linalg.norm(w.astype(np.float64), axis=1)
    live = norms > 0
    u = np.zeros_like(w, dtype=np.float64)
    u[live] = w[live] / norms[live, None]
    s = u @ u.T
    np.fill_diagonal(s, -np.inf)
    s[:, ~live] = -np.inf
    return np.argsort(-s, axis=1, kind="stable")[:, :k], s


# ---- neighbours ------------------------------------------------------------------------------


def test_exact_neighbours_match_dense_cosine_across_blocks():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(300, 24)).astype(np.float32)
    ref, s = dense_reference(w, 10)
    for block in (7, 300):  # ragged last block, and one block
        nb = decoder_neighbours(w, k=10, block=block)
        assert nb.knn is None
        np.testing.assert_array_equal(nb.idx, ref)
        np.testing.assert_allclose(nb.sim, np.take_along_axis(s, ref, 1), atol=1e-5)
        assert nb.idx.dtype == np.int64 and nb.sim.dtype == np.float32


def test_exact_neighbours_break_ties_by_smaller_index_and_skip_zero_rows():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(60, 16)).astype(np.float32)
    w[[40, 12, 33]] = w[5]  # exact duplicates of row 5, out of index order
    w[20] = 3.0 * w[5]  # same direction, other length: also a tie
    w[7] = 0.0
    nb = decoder_neighbours(w, k=5, block=4)
    assert nb.idx[5, :4].tolist() == [12, 20, 33, 40]
    assert nb.idx[40, :4].tolist() == [5, 12, 20, 33]
    np.testing.assert_allclose(nb.sim[5, :4], 1.0, atol=1e-6)
    assert (nb.idx[7] == -1).all() and np.isnan(nb.sim[7]).all()
    assert not (nb.idx == 7).any()


def test_neighbours_pad_when_fewer_rows_than_k():
    w = np.eye(4, dtype=np.float32)
    nb = decoder_neighbours(w, k=6)
    assert nb.idx[0].tolist() == [1, 2, 3, -1, -1, -1]
    assert np.isnan(nb.sim[0, 3:]).all()


@pytest.mark.slow
def test_approximate_neighbours_recall_against_exact():
    x, _ = planted(n_groups=100, per_group=50, d=48, noise=1.0, seed=3)
    x[17] = 0.0
    exact = decoder_neighbours(x, k=10)
    approx = decoder_neighbours(x, k=10, exact_up_to=1000, graph_neighbors=15)
    rows = np.flatnonzero(exact.idx[:, 0] >= 0)
    hits = [len(np.intersect1d(exact.idx[r], approx.idx[r])) for r in rows]
    assert np.sum(hits) / (10 * len(rows)) >= 0.95
    assert (approx.idx[17] == -1).all() and not (approx.idx == 17).any()
    assert not (approx.idx == np.arange(len(x))[:, None]).any()  # self excluded
    g_idx, g_dist = approx.knn
    assert g_idx.shape == (len(x), 15)
    assert (g_idx[rows, 0] == rows).all() and np.allclose(g_dist[rows, 0], 0, atol=1e-5)


# ---- basis -----------------------------------------------------------------------------------


def test_ppmi_keeps_only_pairs_above_chance():
    counts = sp.csr_matrix(np.array([[9, 8, 1, 0], [8, 9, 1, 0], [1, 1, 9, 9], [0, 0, 9, 9]], dtype=float))
    p = ppmi(counts).toarray()
    assert p[0, 1] > 0 and p[0, 2] == 0 and np.all(np.diag(p) == 0)


def test_feature_vectors_every_basis_gives_unit_rows_for_alive_features():
    x, truth = planted(n_groups=4, per_group=20, d=32)
    alive = np.ones(len(x), bool)
    alive[[3, 50]] = False
    # co-firing within groups; context words shared within groups
    same = (truth[:, None] == truth[None, :]).astype(float) * 5 + 1
    coact = sp.csr_matrix(same)
    docs = [f"word{g} topic{g} common filler" for g in truth]
    for basis in ("decoder", "coact", "context", "blend"):
        v = feature_vectors(basis, x, alive, coact, docs, seed=0)
        assert v.shape[0] == alive.sum()
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
        sim = v @ v.T
        t = truth[alive]
        within = sim[t[:, None] == t[None, :]].mean()
        between = sim[t[:, None] != t[None, :]].mean()
        assert within > between + 0.2, basis
    with pytest.raises(ValueError, match="co-activation"):
        feature_vectors("coact", x, alive)


# ---- clusters --------------------------------------------------------------------------------


def assert_nested(h):
    for level in range(1, h.n_levels):
        # every member of a child cluster is in its parent
        np.testing.assert_array_equal(h.parents[level][h.labels[level]], h.labels[level - 1])
    for level in range(h.n_levels):
        assert (h.sizes(level) > 0).all()  # no empty cluster


@pytest.mark.parametrize("route", ["direct", "centroids"])
def test_hierarchy_recovers_planted_groups_and_nests(route):
    x, truth = planted()
    kwargs = {} if route == "direct" else {"direct_up_to": 100, "n_centroids": 120}
    h = build_hierarchy(x / np.linalg.norm(x, axis=1, keepdims=True), levels=[3, 8, 30], seed=0, **kwargs)
    assert [len(p) for p in h.parents] == [3, 8, 30]
    assert adjusted_rand_score(truth, h.labels[1]) >= 0.9
    assert_nested(h)
    again = build_hierarchy(x / np.linalg.norm(x, axis=1, keepdims=True), levels=[3, 8, 30], seed=0, **kwargs)
    for a, b in zip(h.labels, again.labels):
        np.testing.assert_array_equal(a, b)


def test_hierarchy_tables_are_consistent():
    x, _ = planted(n_groups=5, per_group=6)
    h = build_hierarchy(x, levels=[2, 5, 100])
    assert [len(p) for p in h.parents] == [2, 5, 30]  # capped at the number of rows
    t = h.table()
    assert t["cluster_id"].tolist() == list(range(37))
    child = t["level"] > 0
    assert (t["level"][t["parent_id"][child]] == t["level"][child] - 1).all()
    ids, rows = h.members()
    assert len(ids) == 3 * 30 and np.bincount(ids).tolist() == t["size"].tolist()
    assert_nested(h)


def test_coherence_of_a_group_beats_a_random_set():
    x, truth = planted()
    coact = sp.csr_matrix((truth[:, None] == truth[None, :]) * 4.0 + np.eye(len(truth)) * 10)
    tight = coherence(np.flatnonzero(truth == 2), x, coact)
    loose = coherence(np.arange(0, 320, 8), x, coact)
    assert tight[0] > loose[0] + 0.3 and tight[1] > loose[1]
    np.testing.assert_allclose(tight[1], 4 / 14)  # 4 / sqrt(14 * 14): the diagonal is 4 + 10
    assert np.isnan(coherence(np.array([1]), x, coact)[0])
    assert np.isnan(coherence(np.arange(10), x, None)[1])


def test_signal_lift_matches_brute_force_and_scores_the_right_basis():
    x, truth = planted()
    u = x.astype(np.float64) / np.linalg.norm(x, axis=1, keepdims=True)
    labels = build_hierarchy(u, levels=[8]).labels[0]
    sim = u @ u.T
    per, sizes = [], []
    for c in np.unique(labels):
        m = labels == c
        n = m.sum()
        if n > 1:
            per.append((sim[np.ix_(m, m)].sum() - n) / (n * (n - 1)))
            sizes.append(n)
    brute = np.average(per, weights=sizes) - (sim.sum() - len(u)) / (len(u) * (len(u) - 1))
    assert signal_lift(labels, u) == pytest.approx(brute, rel=1e-9)
    dense = sp.csr_matrix(sim - np.diag(np.diag(sim)))
    assert signal_lift(labels, dense) == pytest.approx(brute, rel=1e-9)
    shuffled = np.random.default_rng(0).permutation(labels)
    scores, table = basis_scores({"good": labels, "random": shuffled}, {"decoder": u})
    assert scores["good"] == 1.0 and scores["random"] < 0.1
    assert coact_similarity(sp.csr_matrix(np.array([[4.0, 2], [2, 1]]))).toarray()[0, 1] == 1.0


def test_choose_basis_prefers_a_basis_that_sees_the_planted_groups():
    # The decoder carries no group signal here; co-firing and contexts do.
    rng = np.random.default_rng(4)
    truth = np.repeat(np.arange(6), 25)
    w = rng.normal(size=(len(truth), 32)).astype(np.float32)
    coact = sp.csr_matrix((truth[:, None] == truth[None, :]) * 6.0 + rng.poisson(1.0, (150, 150)))
    coact = coact + coact.T
    docs = [" ".join(rng.choice([f"w{g}a", f"w{g}b", f"w{g}c", "noise", "filler"], 12)) for g in truth]
    choice = choose_basis(w, np.ones(len(truth), bool), coact, docs, levels=[6], seed=0)
    assert set(choice.scores) == {"decoder", "coact", "context", "blend"}
    assert choice.best != "decoder"
    assert choice.scores["decoder"] < choice.scores["blend"]
    assert adjusted_rand_score(truth, choice.hierarchies[choice.best].labels[0]) >= 0.9


# ---- layout ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def layouts():
    """The module's only UMAP fits: one clustered data set, laid out twice with one seed."""
    x, truth = planted(n_groups=8, per_group=60, d=32, noise=0.6, seed=5)
    first = umap_layout(x, seed=0)
    second = umap_layout(x, seed=0)
    return x, truth, first, second


@pytest.mark.slow
def test_umap_is_deterministic_for_a_seed(layouts):
    _, _, (xy1, t1), (xy2, t2) = layouts
    np.testing.assert_array_equal(xy1, xy2)
    assert xy1.dtype == np.float32 and xy1.shape[1] == 2
    assert set(t1) == {"compile_s", "fit_s"} and t2["compile_s"] == 0.0  # compiled once per process


@pytest.mark.slow
def test_umap_preserves_neighbourhoods_and_is_normalised(layouts):
    x, truth, (xy, _), _ = layouts
    assert trustworthiness(x, xy, n_neighbors=10, metric="cosine") > 0.8
    assert np.abs(xy).max() == pytest.approx(1.0, abs=1e-6)
    span = xy.max(axis=0) - xy.min(axis=0)
    assert span.max() == pytest.approx(2.0, abs=1e-5)
    pos = cluster_positions(truth, xy)
    for g in range(8):  # a cluster's label sits on one of its members
        assert (np.abs(xy[truth == g] - pos[g]).sum(axis=1) == 0).any()


def test_exact_knn_graph_matches_brute_force_self_first():
    x = np.random.default_rng(3).normal(size=(300, 16)).astype(np.float32)
    x[7] = x[5]  # a duplicate: ties go to the smaller index
    idx, dist = exact_knn(x, 6)
    units = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = 1 - units @ units.T
    assert (idx[:, 0] == np.arange(300)).all() and (dist[:, 0] == 0).all()
    for i in (0, 5, 7, 299):
        others = [j for j in np.lexsort((np.arange(300), np.round(d[i], 5))) if j != i][:6]
        assert idx[i, 1:].tolist() == others
        assert np.allclose(dist[i, 1:], d[i, others], atol=1e-5)


def test_layouts_of_a_few_thousand_rows_never_compile_the_approximate_search(monkeypatch):
    calls = []
    monkeypatch.setattr(layout, "warm_up", lambda **kw: calls.append(kw) or 0.0)
    monkeypatch.setattr(layout, "_EXACT_BELOW", 50)  # stands in for UMAP's 4096 rows
    monkeypatch.setattr(layout, "_EXACT_KNN_UP_TO", 200)
    x = np.random.default_rng(4).normal(size=(120, 8)).astype(np.float32)
    xy, _ = umap_layout(x, n_neighbors=5)
    assert calls == [{"approximate": False, "transform": False}] and np.isfinite(xy).all()
    umap_layout(np.random.default_rng(4).normal(size=(240, 8)).astype(np.float32), n_neighbors=5)
    assert calls[-1] == {"approximate": True, "transform": False}  # above the exact graph's limit UMAP searches


def test_tiny_layouts_do_not_call_umap():
    xy, _ = umap_layout(np.eye(3, dtype=np.float32))
    assert xy.shape == (3, 2) and np.isfinite(xy).all()
    assert umap_layout(np.zeros((0, 4), np.float32))[0].shape == (0, 2)


def test_neighbours_unpack_as_idx_and_sim():
    w = np.random.default_rng(6).normal(size=(20, 8)).astype(np.float32)
    idx, sim = decoder_neighbours(w, k=3)
    assert idx.shape == sim.shape == (20, 3)
