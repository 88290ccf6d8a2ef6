"""The harvest against brute force over the whole dense activation matrix, and its order-free guarantees."""

from __future__ import annotations

import math
from dataclasses import fields, replace

import numpy as np
import pytest
import scipy.stats

from atlas.config import HarvestSection
from atlas.errors import DimensionError
from atlas.harvest import SALT_INTERVAL, SALT_RANDOM, Harvester, HarvestResult, sample_key

SEED = 7


class Corpus:
    """Sparse codes for many sequences of varied lengths, with gaps in the global token index."""

    def __init__(self, n_features: int = 96, n_seqs: int = 120, seed: int = 0):
        rng = np.random.default_rng(seed)
        lengths = rng.integers(1, 60, n_seqs)
        self.n = int(lengths.sum())
        self.seq = np.repeat(np.arange(n_seqs), lengths).astype(np.int64)
        self.row_start = np.repeat(np.cumsum(lengths) - lengths, lengths)
        self.row_end = np.repeat(np.cumsum(lengths), lengths)
        gaps = np.repeat(rng.integers(0, 5, n_seqs), lengths)  # sequences need not be adjacent in the corpus
        self.gidx = (np.arange(self.n) + np.cumsum(gaps) + 1000).astype(np.int64)
        rate = rng.choice([0.0, 0.01, 0.05, 0.2, 0.6], n_features, p=[0.08, 0.3, 0.3, 0.2, 0.12])
        fires = rng.random((self.n, n_features)) < rate
        scale = rng.uniform(0.5, 20.0, n_features)
        vals = rng.exponential(1.0, (self.n, n_features)) * scale
        # Coarse values on some features create ties (top-k tie rule) and values on grid edges.
        coarse = rng.random(n_features) < 0.3
        vals[:, coarse] = np.ceil(vals[:, coarse] * 4) / 4
        self.acts = np.where(fires, vals, 0.0).astype(np.float32)
        # A little noise that must not count as firing.
        self.acts[rng.random(self.acts.shape) < 0.01] *= -1
        self.n_features = n_features

    def batches(self, tokens_per_batch: int, order: np.ndarray | None = None):
        """Whole sequences grouped into batches of about `tokens_per_batch` rows."""
        seqs = np.unique(self.seq) if order is None else order
        cur, size = [], 0
        for s in seqs:
            rows = np.flatnonzero(self.seq == s)
            cur.append(rows)
            size += len(rows)
            if size >= tokens_per_batch:
                yield self._batch(cur)
                cur, size = [], 0
        if cur:
            yield self._batch(cur)

    def _batch(self, parts):
        rows = np.concatenate(parts)
        return self.acts[rows], self.gidx[rows], self.seq[rows]

    def window(self, row: int, f: int, half: int) -> np.ndarray:
        out = np.full(2 * half + 1, np.nan, np.float32)
        for o in range(-half, half + 1):
            r = row + o
            if self.row_start[row] <= r < self.row_end[row]:
                out[o + half] = self.acts[r, f]
        return out


def run(corpus: Corpus, cfg: HarvestSection, batch_tokens: int = 300, order=None) -> HarvestResult:
    h = Harvester(corpus.n_features, cfg, seed=SEED)
    for a, g, s in corpus.batches(batch_tokens, order):
        h.update(a, g, s)
    return h.finalize()


def assert_same(r1: HarvestResult, r2: HarvestResult) -> None:
    for fld in fields(HarvestResult):
        a, b = getattr(r1, fld.name), getattr(r2, fld.name)
        if fld.name == "coact":
            assert (a != b).nnz == 0
            assert np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
        else:
            np.testing.assert_array_equal(a, b, err_msg=fld.name)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus()


@pytest.fixture(scope="module")
def cfg() -> HarvestSection:
    return HarvestSection(top_k=8, window=4, n_intervals=6, per_interval=3, n_random=5, hist_bins=12,
                          coact_top=5, coact_keep=7)


@pytest.fixture(scope="module")
def result(corpus, cfg) -> HarvestResult:
    return run(corpus, cfg)


def firing(corpus: Corpus, f: int) -> np.ndarray:
    return np.flatnonzero(corpus.acts[:, f] > 0)


def test_counts_sums_max_exact(corpus, result):
    pos = np.where(corpus.acts > 0, corpus.acts, 0)
    assert result.n_tokens == corpus.n
    np.testing.assert_array_equal(result.count, (corpus.acts > 0).sum(0))
    np.testing.assert_array_equal(result.max, pos.max(0))
    exact = np.array([math.fsum(pos[:, f].astype(np.float64)) for f in range(corpus.n_features)])
    np.testing.assert_allclose(result.sum, exact, rtol=1e-13)
    assert result.dead.any() and not result.dead.all()
    assert (result.top_index[result.dead] == -1).all()


def test_top_k_matches_full_sort_with_windows(corpus, cfg, result):
    k, half = cfg.top_k, cfg.window
    for f in range(corpus.n_features):
        rows = firing(corpus, f)
        order = np.lexsort((corpus.gidx[rows], -corpus.acts[rows, f]))[:k]
        want = rows[order]
        got = result.top_index[f]
        np.testing.assert_array_equal(got[: len(want)], corpus.gidx[want])
        assert (got[len(want):] == -1).all() and np.isnan(result.top_vals[f, len(want):]).all()
        np.testing.assert_array_equal(result.top_vals[f, : len(want)], corpus.acts[want, f])
        for j, r in enumerate(want):
            np.testing.assert_array_equal(result.top_windows[f, j], corpus.window(r, f, half))


def test_top_k_tie_rule_is_exercised(corpus, cfg, result):
    """The corpus really has ties at the top, so the smaller-index rule is being tested."""
    v = result.top_vals
    tied = (v[:, 1:] == v[:, :-1]) & ~np.isnan(v[:, 1:])
    assert tied.sum() > 5
    idx = result.top_index
    assert (idx[:, 1:][tied] > idx[:, :-1][tied]).all()


def test_histogram_matches_numpy(corpus, cfg, result):
    for f in range(corpus.n_features):
        v = corpus.acts[firing(corpus, f), f]
        assert result.hist_counts[f].sum() == len(v)
        if len(v) == 0:
            continue
        edges = result.hist_edges[f]
        assert edges[0] == 0 and edges[-1] > v.max() and np.allclose(np.diff(edges), edges[1])
        np.testing.assert_array_equal(result.hist_counts[f], np.histogram(v, bins=edges)[0])


def _bottom(keys: np.ndarray, gidx: np.ndarray, m: int) -> np.ndarray:
    return np.lexsort((gidx, keys))[:m]


def test_intervals_exact_counts_and_bottom_keys(corpus, cfg, result):
    m, half = cfg.per_interval, cfg.window
    for f in range(corpus.n_features):
        rows = firing(corpus, f)
        if len(rows) == 0:
            assert result.interval_counts[f].sum() == 0
            continue
        v = corpus.acts[rows, f]
        edges = result.interval_edges[f]
        # Edges are grid points: multiples of the power-of-two width that puts max in [32w, 64w).
        w = 2.0 ** (math.frexp(float(v.max()))[1] - 6)
        assert 32 * w <= v.max() < 64 * w
        used = int(v.max() // w) + 1
        np.testing.assert_array_equal(edges, ((np.arange(cfg.n_intervals + 1) * used) // cfg.n_intervals) * w)
        keys = sample_key(SEED, SALT_INTERVAL, np.full(len(rows), f), corpus.gidx[rows])
        for i in range(cfg.n_intervals):
            inside = (v >= edges[i]) & (v < edges[i + 1])
            assert result.interval_counts[f, i] == inside.sum()
            sub = np.flatnonzero(inside)
            want = rows[sub[_bottom(keys[sub], corpus.gidx[rows[sub]], m)]]
            got = result.interval_index[f, i]
            np.testing.assert_array_equal(got[: len(want)], corpus.gidx[want])
            assert (got[len(want):] == -1).all()
            vals = result.interval_vals[f, i, : len(want)]
            assert ((vals >= edges[i]) & (vals < edges[i + 1])).all()
            for j, r in enumerate(want):
                np.testing.assert_array_equal(result.interval_windows[f, i, j], corpus.window(r, f, half))
        assert result.interval_counts[f].sum() == len(rows)
        np.testing.assert_allclose(result.interval_share[f].sum(), 1.0, rtol=1e-6)


def test_random_samples_are_bottom_keys(corpus, cfg, result):
    for f in range(corpus.n_features):
        rows = firing(corpus, f)
        keys = sample_key(SEED, SALT_RANDOM, np.full(len(rows), f), corpus.gidx[rows])
        want = rows[_bottom(keys, corpus.gidx[rows], cfg.n_random)]
        np.testing.assert_array_equal(result.random_index[f, : len(want)], corpus.gidx[want])
        np.testing.assert_array_equal(result.random_vals[f, : len(want)], corpus.acts[want, f])
        for j, r in enumerate(want):
            np.testing.assert_array_equal(result.random_windows[f, j], corpus.window(r, f, cfg.window))


def _brute_coact(corpus: Corpus) -> np.ndarray:
    b = (corpus.acts > 0).astype(np.int64)
    c = b.T @ b
    np.fill_diagonal(c, 0)
    return c


def _ranked(score: np.ndarray, valid: np.ndarray, k: int) -> list[int]:
    cols = np.flatnonzero(valid)
    return list(cols[np.lexsort((cols, -score[cols]))][:k])


def test_coactivation_counts_and_ranking(corpus, cfg, result):
    c = _brute_coact(corpus)
    dense = result.coact.toarray()
    count = result.count
    for i in range(corpus.n_features):
        keep = _ranked(c[i].astype(float), c[i] > 0, cfg.coact_keep)
        assert sorted(np.flatnonzero(dense[i])) == sorted(keep)
        np.testing.assert_array_equal(dense[i, keep], c[i, keep])
        jac = np.divide(c[i], count[i] + count - c[i], out=np.zeros(len(count)), where=c[i] > 0)
        top = _ranked(jac, c[i] > 0, cfg.coact_top)
        got = result.coact_top_idx[i]
        np.testing.assert_array_equal(got[: len(top)], top)
        assert (got[len(top):] == -1).all()
        np.testing.assert_allclose(result.coact_top_score[i, : len(top)], jac[top], rtol=1e-6)
        np.testing.assert_array_equal(result.coact_top_count[i, : len(top)], c[i, top])


def test_dense_coactivation_accumulator_is_full_gram(corpus, cfg):
    h = Harvester(corpus.n_features, cfg, seed=SEED)
    for a, g, s in corpus.batches(500):
        h.update(a, g, s)
    np.testing.assert_array_equal(h._coact.counts(), _brute_coact(corpus))


def test_batch_size_and_order_do_not_matter(corpus, cfg, result):
    assert_same(result, run(corpus, cfg, batch_tokens=1))
    shuffled = np.random.default_rng(3).permutation(np.unique(corpus.seq))
    assert_same(result, run(corpus, cfg, batch_tokens=2000, order=shuffled))


def test_merge_of_four_shards_equals_one_pass(corpus, cfg, result):
    order = np.random.default_rng(5).permutation(np.unique(corpus.seq))
    shards = [Harvester(corpus.n_features, cfg, seed=SEED) for _ in range(4)]
    for part, h in zip(np.array_split(order, 4), shards):
        for a, g, s in corpus.batches(250, part):
            h.update(a, g, s)
    shards[2].merge(shards[3])
    shards[0].merge(shards[1])
    shards[0].merge(shards[2])
    assert_same(result, shards[0].finalize())


def test_checkpoint_round_trip_mid_stream(corpus, cfg, result, tmp_path):
    batches = list(corpus.batches(300))
    h = Harvester(corpus.n_features, cfg, seed=SEED)
    for a, g, s in batches[: len(batches) // 2]:
        h.update(a, g, s)
    np.savez(tmp_path / "ck.npz", **h.state_dict())
    with np.load(tmp_path / "ck.npz") as z:
        h2 = Harvester.from_state(dict(z), cfg)
    for a, g, s in batches[len(batches) // 2:]:
        h2.update(a, g, s)
    assert_same(result, h2.finalize())


def test_interval_samples_are_not_biased_to_first_seen():
    """Every feature fires on every token with values in one narrow band, fed in small batches: a scheme
    that kept the first activations seen would put all samples at the start; ours must look uniform."""
    rng = np.random.default_rng(11)
    n, nf = 3000, 40
    acts = rng.uniform(0.95, 1.0, (n, nf)).astype(np.float32)
    cfg = HarvestSection(top_k=2, window=1, n_intervals=4, per_interval=5, n_random=5, hist_bins=8)
    h = Harvester(nf, cfg, seed=1)
    for s in range(0, n, 100):
        h.update(acts[s : s + 100], np.arange(s, s + 100), np.arange(s, s + 100))
    res = h.finalize()
    last = res.interval_index[:, -1, :]
    assert (res.interval_counts[:, -1] > 2000).all()
    positions = np.concatenate([last.ravel(), res.random_index.ravel()]) / n
    assert abs(positions.mean() - 0.5) < 0.06
    assert (positions < 0.1).mean() < 0.2
    assert scipy.stats.kstest(positions, "uniform").pvalue > 1e-3


def test_bounded_coactivation_guarantee(corpus):
    cfg = HarvestSection(top_k=3, window=2, coact_keep=3, coact_top=3, coact_dense_max=0)
    h = Harvester(corpus.n_features, cfg, seed=SEED)
    for a, g, s in corpus.batches(300):
        h.update(a, g, s)
    res = h.finalize()
    assert not res.coact_exact
    true = _brute_coact(corpus)
    cap = h._coact.capacity
    fired = (corpus.acts > 0).astype(np.int64)
    per_token = fired.sum(1)
    n_pairs = np.array([(per_token[fired[:, i] > 0] - 1).sum() for i in range(corpus.n_features)])
    bound = n_pairs / (cap + 1)
    est = np.zeros_like(true)
    ok = h._coact.partner >= 0
    rows = np.broadcast_to(np.arange(corpus.n_features)[:, None], ok.shape)[ok]
    est[rows, h._coact.partner[ok]] = h._coact.count[ok]
    assert (est <= true).all()
    assert (est >= true - bound[:, None]).all()
    heavy = true > bound[:, None]
    assert (est[heavy] > 0).all()
    kept = res.coact.toarray()
    assert ((kept > 0).sum(1) <= cfg.coact_keep).all() and (kept <= true).all()


def test_rejects_wrong_width_and_accepts_torch(corpus, cfg):
    import torch

    h = Harvester(corpus.n_features, cfg)
    with pytest.raises(DimensionError):
        h.update(np.zeros((3, corpus.n_features + 1), np.float32), np.arange(3), np.zeros(3))
    a, g, s = next(corpus.batches(200))
    h.update(torch.from_numpy(a), g, s)
    h2 = Harvester(corpus.n_features, cfg)
    h2.update(a, g, s)
    assert_same(h.finalize(), h2.finalize())


def test_sample_key_is_uniform_and_pure():
    k = sample_key(3, SALT_INTERVAL, np.zeros(20000, np.int64), np.arange(20000))
    assert scipy.stats.kstest(k, "uniform").pvalue > 1e-3
    np.testing.assert_array_equal(k[5:9], sample_key(3, SALT_INTERVAL, np.zeros(4, np.int64), np.arange(5, 9)))
    assert not np.array_equal(k, sample_key(4, SALT_INTERVAL, np.zeros(20000, np.int64), np.arange(20000)))


def test_config_change_is_caught_on_restore(corpus, cfg):
    h = Harvester(corpus.n_features, cfg)
    with pytest.raises((DimensionError, ValueError)):
        Harvester.from_state(h.state_dict(), replace(cfg, hist_bins=200))


def test_all_equal_activations_keep_smallest_indices():
    """A feature stuck at one value: the top-k is decided by the tie rule alone, within and across batches."""
    n = 400
    acts = np.zeros((n, 3), np.float32)
    acts[:, 0] = 2.0
    acts[::3, 1] = 1.5
    cfg = HarvestSection(top_k=6, window=2, n_intervals=4, per_interval=2, n_random=2, hist_bins=8)
    gidx = np.arange(n, dtype=np.int64) * 2 + 10
    for step in (n, 37):
        h = Harvester(3, cfg)
        for s in range(0, n, step)[::-1]:  # latest batches first: the winners arrive last
            h.update(acts[s : s + step], gidx[s : s + step], np.arange(s, s + len(acts[s : s + step])))
        res = h.finalize()
        np.testing.assert_array_equal(res.top_index[0], gidx[:6])
        np.testing.assert_array_equal(res.top_index[1], gidx[::3][:6])
        assert (res.top_index[2] == -1).all() and res.count[2] == 0


@pytest.mark.parametrize("m", [1, 4])
def test_bottom_slots_match_brute_force(m):
    """Random batches, mostly one candidate per slot (taken directly) and sometimes many (ranked), with key ties
    broken by index, and duplicates of held entries offered again: every slot holds its offered bottom-m."""
    from atlas.harvest.slots import BottomSlots

    rng = np.random.default_rng(m)
    n_slots, width = 30, 3
    slots = BottomSlots(n_slots, m, width)
    offered: list[tuple[int, float, int]] = []
    next_index = 0
    for step in range(60):
        size = int(rng.choice([1, 5, 40, 200]))
        slot = rng.integers(0, n_slots, size)
        key = rng.integers(0, 6, size) / 4.0  # coarse keys: many ties
        index = next_index + rng.permutation(size)
        next_index += size
        if offered and step % 7 == 0:  # re-offer some entries already seen
            again = [offered[i] for i in rng.integers(0, len(offered), 5)]
            slot = np.concatenate([slot, [s for s, _, _ in again]])
            key = np.concatenate([key, [k for _, k, _ in again]])
            index = np.concatenate([index, [i for _, _, i in again]])
        index = index.astype(np.int64)
        value = (index % 1000).astype(np.float32)
        slots.offer(slot, key, index, value, lambda sel: np.repeat(value[sel, None], width, axis=1) + np.arange(width))
        offered.extend(zip(slot.tolist(), key.tolist(), index.tolist()))
    value, index, window = slots.sorted()
    for s in range(n_slots):
        mine = sorted((k, i) for sl, k, i in offered if sl == s)[:m]
        got = [i for i in index[s] if i >= 0]
        assert got == [i for _, i in mine]
        np.testing.assert_array_equal(value[s, : len(got)], np.array(got) % 1000)
        np.testing.assert_array_equal(window[s, : len(got)], (np.array(got) % 1000)[:, None] + np.arange(width))


def test_windows_keep_every_code_bit_for_bit():
    """Windows come from the nonzero codes only, so codes that are not > 0 (-0.0, NaN with a payload,
    negatives) must still appear exactly, and rows beyond the sequence must be NaN."""
    n, half = 40, 3
    acts = np.zeros((n, 3), np.float32)
    acts[::5, 0] = 2.0
    acts[1, 0], acts[2, 0], acts[6, 0] = -0.0, np.uint32(0x7FC0_1234).view(np.float32), -1.5
    acts[:, 2] = np.linspace(0.5, 1.0, n, dtype=np.float32)  # a dense neighbour in the same rows
    seq = np.repeat(np.arange(4), 10)
    cfg = HarvestSection(top_k=8, window=half, n_intervals=2, per_interval=1, n_random=1, hist_bins=4)
    h = Harvester(3, cfg)
    h.update(acts, np.arange(n), seq)
    res = h.finalize()
    for j, row in enumerate(np.flatnonzero(acts[:, 0] > 0)):
        want = np.full(2 * half + 1, np.nan, np.float32)
        for o in range(-half, half + 1):
            if 0 <= row + o < n and seq[row + o] == seq[row]:
                want[o + half] = acts[row + o, 0]
        np.testing.assert_array_equal(res.top_windows[0, j].view(np.uint32), want.view(np.uint32))
