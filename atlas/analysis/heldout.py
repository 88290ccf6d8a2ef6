"""Which contexts each feature is explained on and which it is scored on.

From the stored examples: the explainer's activating contexts (visible) and the scorers' (held out, never
overlapping a visible one). From the sequences those examples lie in: contexts the feature does not fire on, half
for the explainer and half for the scorers, both of two sorts: hard (the feature's own top token where it stays
silent, and the activating contexts of its nearest decoder neighbours) and random.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from atlas.analysis.scoring import VISIBLE, HELD_OUT, Firing, Groups, halves, non_firing, split_examples


@dataclass(frozen=True)
class Plan:
    """The activating contexts of every feature, before the negatives: example rows per feature and the sequences
    that hold them (what the SAE and the sentence encoder read)."""

    n_features: int
    g: np.ndarray  # global token index of each example row
    visible: Groups  # example rows, per feature
    held_out: Groups
    sequences: np.ndarray


@dataclass(frozen=True)
class ContextSets:
    """Every context a feature is explained or scored on, as rows into `centres` (global token indices)."""

    centres: np.ndarray
    visible: Groups
    held_out: Groups
    explain_negatives: Groups
    score_negatives: Groups
    hard: np.ndarray  # [F] how many of each feature's scoring negatives are hard ones


def plan(feature: np.ndarray, kind: np.ndarray, rank: np.ndarray, seq: np.ndarray, pos: np.ndarray,
         seq_starts: np.ndarray, n_features: int, radius: int, n_explain: int, n_score: int) -> Plan:
    """Split the examples (see `split_examples`) and keep up to `n_explain` visible and `n_score` held-out ones per
    feature, in the order given (strongest first)."""
    feature = np.asarray(feature, np.int64)
    role = split_examples(feature, kind, rank, seq, pos, radius)
    g = seq_starts[np.asarray(seq, np.int64)] + np.asarray(pos, np.int64)
    vis, held = _per_feature(feature, role == VISIBLE, n_features, n_explain), \
        _per_feature(feature, role == HELD_OUT, n_features, n_score)
    used = np.concatenate([vis.rows, held.rows])
    return Plan(n_features, g, vis, held, np.unique(np.asarray(seq, np.int64)[used]))


def _per_feature(feature: np.ndarray, mask: np.ndarray, n_features: int, cap: int) -> Groups:
    rows = np.flatnonzero(mask)
    rows = rows[np.argsort(feature[rows], kind="stable")]
    starts = np.searchsorted(feature[rows], np.arange(n_features + 1))
    return Groups.from_lists([rows[starts[f]:min(starts[f + 1], starts[f] + cap)] for f in range(n_features)])


def negatives(p: Plan, firing: Firing, tokens: np.ndarray, seq_starts: np.ndarray, top_token: np.ndarray,
              neighbours: list[np.ndarray], radius: int, n_hard: int, n_random: int, seed: int) -> ContextSets:
    """Add each feature's non-activating contexts and index every context once.

    `top_token[f]` is the token id feature f fires on most among its visible examples (-1: none); `neighbours[f]`
    its nearest features by decoder cosine. Random candidates are drawn from the tokens of `p.sequences`."""
    rng = np.random.default_rng(seed)
    pool_tokens = np.concatenate([np.arange(seq_starts[q], seq_starts[q + 1]) for q in p.sequences]) \
        if len(p.sequences) else np.zeros(0, np.int64)
    pool = rng.choice(pool_tokens, min(len(pool_tokens), max(4000, 8 * n_random)), replace=False) \
        if len(pool_tokens) else pool_tokens
    by_token = pool_tokens[np.argsort(tokens[pool_tokens], kind="stable")]
    sorted_ids = tokens[by_token]
    activating = [np.concatenate([p.g[p.visible.of(f)], p.g[p.held_out.of(f)]]) for f in range(p.n_features)]
    ex_neg, sc_neg, hard_count = [], [], np.zeros(p.n_features, np.int64)
    for f in range(p.n_features):
        if not len(p.visible.of(f)) and not len(p.held_out.of(f)):
            ex_neg.append(np.zeros(0, np.int64))
            sc_neg.append(np.zeros(0, np.int64))
            continue
        hard = np.zeros(0, np.int64)
        if top_token[f] >= 0:
            a, b = np.searchsorted(sorted_ids, [top_token[f], top_token[f] + 1])
            same = by_token[a:b]
            same = same if len(same) <= 8 * n_hard else rng.choice(same, 8 * n_hard, replace=False)
            hard = non_firing(f, same, firing, seq_starts, radius, n_hard - n_hard // 2, rng)
        near = np.concatenate([activating[int(o)] for o in neighbours[f] if 0 <= o < p.n_features] or [hard[:0]])
        near = np.setdiff1d(near, hard)
        hard = np.concatenate([hard, non_firing(f, near, firing, seq_starts, radius, n_hard - len(hard), rng)])
        rand = non_firing(f, np.setdiff1d(pool, hard), firing, seq_starts, radius, n_random, rng)
        he, hs = halves(hard, rng)
        re_, rs = halves(rand, rng)
        ex_neg.append(np.concatenate([he, re_]))
        sc_neg.append(np.concatenate([hs, rs]))
        hard_count[f] = len(hs)
    vis_g = [p.g[p.visible.of(f)] for f in range(p.n_features)]
    held_g = [p.g[p.held_out.of(f)] for f in range(p.n_features)]
    every = [np.concatenate(x) for x in (vis_g, held_g, ex_neg, sc_neg) if x]
    centres = np.unique(np.concatenate(every)) if every else np.zeros(0, np.int64)

    def rows(lists) -> Groups:
        return Groups.from_lists([np.searchsorted(centres, np.asarray(x, np.int64)) for x in lists])

    return ContextSets(centres, rows(vis_g), rows(held_g), rows(ex_neg), rows(sc_neg), hard_count)
