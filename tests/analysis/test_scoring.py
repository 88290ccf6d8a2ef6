"""Held-out scoring: the split never lets a scorer see what the explainer saw, negatives never fire, AUROC equals a
brute-force count, and an embedding scorer rates a planted explanation high and random ones near chance."""

import numpy as np
import pytest

from atlas.analysis.heldout import negatives, plan
from atlas.analysis.scoring import (DROPPED, HELD_OUT, VISIBLE, Firing, Groups, auroc, embedding_scores, halves,
                                    non_firing, pick_shown, span, split_examples, summary)


def _examples(rng, n_features=6, per=30, n_seq=40, seq_len=50):
    feature = np.repeat(np.arange(n_features), per)
    kind = np.tile(np.array(["top"] * 10 + ["interval"] * 15 + ["random"] * 5, dtype=object), n_features)
    rank = np.tile(np.concatenate([np.arange(10), np.arange(15) % 5, np.arange(5)]), n_features)
    seq = rng.integers(0, n_seq, len(feature))
    pos = rng.integers(0, seq_len, len(feature))
    return feature, kind, rank, seq, pos


def test_split_keeps_held_out_contexts_away_from_visible_ones():
    rng = np.random.default_rng(0)
    feature, kind, rank, seq, pos = _examples(rng)
    radius = 3
    role = split_examples(feature, kind, rank, seq, pos, radius)
    assert set(np.unique(role)) <= {VISIBLE, HELD_OUT, DROPPED}
    assert (role[kind == "random"] != VISIBLE).all()
    assert (role[(kind == "top") & (rank % 2 == 0)] == VISIBLE).all()
    vis, held = np.flatnonzero(role == VISIBLE), np.flatnonzero(role == HELD_OUT)
    assert len(vis) and len(held)
    for h in held:  # brute force: no visible context of the same feature overlaps a held-out one
        same = vis[(feature[vis] == feature[h]) & (seq[vis] == seq[h])]
        assert (np.abs(pos[same] - pos[h]) > 2 * radius).all()
    keys = list(zip(feature[held], seq[held], pos[held]))
    assert len(keys) == len(set(keys))


def test_auroc_equals_a_pairwise_count_with_ties_half():
    rng = np.random.default_rng(1)
    pos, neg = rng.integers(0, 5, 30).astype(float), rng.integers(0, 5, 20).astype(float)
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert auroc(pos, neg) == pytest.approx(brute)
    assert np.isnan(auroc(pos, []))


def test_firing_within_matches_a_brute_force_scan():
    rng = np.random.default_rng(2)
    feature, token = rng.integers(0, 5, 200), rng.integers(0, 1000, 200)
    firing = Firing.from_pairs(feature, token, 5)
    lo = rng.integers(0, 1000, 100)
    hi = lo + rng.integers(1, 30, 100)
    for f in range(5):
        fired = set(token[feature == f].tolist())
        expect = [any(t in fired for t in range(a, b)) for a, b in zip(lo, hi)]
        assert firing.fires_within(f, lo, hi).tolist() == expect


def test_non_firing_contexts_never_fire_and_halves_are_disjoint():
    rng = np.random.default_rng(3)
    starts = np.arange(0, 1001, 50)
    firing = Firing.from_pairs(np.zeros(40, np.int64), rng.integers(0, 1000, 40), 1)
    chosen = non_firing(0, np.arange(1000), firing, starts, 2, 100, rng)
    lo, hi = span(chosen, starts, 2)
    assert len(chosen) == 100 and not firing.fires_within(0, lo, hi).any()
    a, b = halves(chosen, rng)
    assert not set(a) & set(b) and len(a) + len(b) == 100


def test_negatives_are_quiet_hard_ones_come_first_and_sides_never_share():
    rng = np.random.default_rng(4)
    feature, kind, rank, seq, pos = _examples(rng, n_features=4, per=30, n_seq=30, seq_len=40)
    starts = np.arange(0, 30 * 40 + 1, 40)
    tokens = rng.integers(0, 20, 30 * 40)
    g = starts[seq] + pos
    fired_f, fired_t = feature, g  # every example's centre fires for its feature
    firing = Firing.from_pairs(fired_f, fired_t, 4)
    p = plan(feature, kind, rank, seq, pos, starts, 4, 2, n_explain=8, n_score=8)
    assert all(len(p.visible.of(f)) <= 8 and len(p.held_out.of(f)) <= 8 for f in range(4))
    top = np.array([tokens[g[p.visible.of(f)[0]]] for f in range(4)])
    sets = negatives(p, firing, tokens, starts, top, [np.array([(f + 1) % 4]) for f in range(4)], 2, 8, 8, seed=0)
    for f in range(4):
        vis = set(sets.visible.of(f).tolist())
        held = set(sets.held_out.of(f).tolist())
        ex_n, sc_n = set(sets.explain_negatives.of(f).tolist()), set(sets.score_negatives.of(f).tolist())
        assert not vis & held and not ex_n & sc_n and not (ex_n | sc_n) & (vis | held)
        centres = sets.centres[sorted(ex_n | sc_n)]
        lo, hi = span(centres, starts, 2)
        assert not firing.fires_within(f, lo, hi).any()
        assert len(sc_n) > 0 and 0 < sets.hard[f] <= len(sc_n)


def test_embedding_scorer_rates_a_planted_explanation_high_and_random_ones_near_chance():
    rng = np.random.default_rng(5)
    dim, n = 64, 40
    direction = np.eye(dim)[0]
    pos = rng.normal(size=(n, dim)) + 4.0 * direction
    neg = rng.normal(size=(n, dim))
    contexts = np.concatenate([pos, neg])
    contexts /= np.linalg.norm(contexts, axis=1, keepdims=True)
    positives = Groups.from_lists([np.arange(n)])
    negs = Groups.from_lists([np.arange(n, 2 * n)])
    planted = embedding_scores(direction[None].astype(np.float32), np.array([0]), contexts, positives, negs)
    assert planted[0] > 0.9
    random = rng.normal(size=(200, dim))
    random /= np.linalg.norm(random, axis=1, keepdims=True)
    scores = embedding_scores(random.astype(np.float32), np.zeros(200, np.int64), contexts, positives, negs)
    assert abs(float(np.mean(scores)) - 0.5) < 0.05


def test_the_page_shows_the_users_label_else_the_best_score_and_a_barred_source_only_as_a_last_resort():
    feature = np.array([0, 0, 0, 1, 1, 2, 2])
    source = np.array(["keyword", "offline", "user", "keyword", "offline", "keyword", "offline"])
    score = np.array([0.9, 0.6, np.nan, 0.8, 0.7, 0.9, np.nan])
    rows = pick_shown(feature, source, score, "user", {1: {"keyword"}})
    assert source[rows].tolist() == ["user", "offline", "keyword"]
    tie = pick_shown(np.array([0, 0]), np.array(["keyword", "offline"]), np.array([0.7, 0.7]), baseline="keyword")
    assert tie.tolist() == [1]


def test_summary_rounds_and_counts():
    s = summary(np.array([0.5, 0.75, np.nan, 1.0]))
    assert s["n"] == 3 and s["median"] == 0.75 and sum(s["histogram"]) == 3
