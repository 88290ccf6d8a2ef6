"""Dictionary diff: planted splits, merges, drops and additions recovered exactly; search and
assignment checked against brute force."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment

import atlas.analysis.diff as diff_module
from atlas.analysis.diff import KINDS, compare_dictionaries, cross_neighbours, one_to_one
from atlas.analysis.neighbours import unit_rows


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def planted(seed=0, d=64, fa=300, n_split=30, n_merge=20, n_drop=30, n_new=30, spread=0.88):
    """A random dictionary A and a retrained B whose relation to A is known.

    Kept rows get a little noise (cosine ~0.995). A split row a becomes a + spread·n1 and
    a + spread·n2 with n1, n2 orthonormal and orthogonal to a: each child alone has cosine 0.75 with
    a (so one of them is also its best one-to-one match) while the pair explains a at 0.85. A merge
    is normalise(a1 + a2). Rows of B are shuffled. Returns A, B and the truth in `found`'s form.
    """
    rng = np.random.default_rng(seed)
    a = unit(rng.standard_normal((fa, d)))
    order = rng.permutation(fa)
    cut = np.cumsum([n_split, 2 * n_merge, n_drop])
    split_src, merge_src, drop, kept = np.split(order, cut)
    rows, origin = [], []
    for i in kept:
        rows.append(unit(a[i] + 0.1 * rng.standard_normal(d) / np.sqrt(d)))
        origin.append(("matched", int(i)))
    for i in split_src:
        q, _ = np.linalg.qr(np.column_stack([a[i], rng.standard_normal((d, 2))]))
        for n in (q[:, 1], q[:, 2]):
            rows.append(unit(a[i] + spread * n))
            origin.append(("split", int(i)))
    for i, j in merge_src.reshape(-1, 2):
        rows.append(unit(a[i] + a[j]))
        origin.append(("merge", {int(i), int(j)}))
    for _ in range(n_new):
        rows.append(unit(rng.standard_normal(d)))
        origin.append(("new", None))
    perm = rng.permutation(len(rows))
    b = np.array(rows)[perm]
    truth = {"matched": set(), "splits": {}, "merges": {}, "new": set(), "vanished": set(drop.tolist())}
    for j, p in enumerate(perm):
        kind, src = origin[p]
        if kind == "matched":
            truth["matched"].add((src, j))
        elif kind == "split":
            truth["splits"].setdefault(src, set()).add(j)
        elif kind == "merge":
            truth["merges"][j] = src
        else:
            truth["new"].add(j)
    return a.astype(np.float32), b.astype(np.float32), truth


def found(diff):
    return {
        "matched": set(zip(diff.matched.a.tolist(), diff.matched.b.tolist())),
        "splits": {a: set(p) for a, p in zip(diff.splits.a, diff.splits.b_parts)},
        "merges": {b: set(p) for b, p in zip(diff.merges.b, diff.merges.a_parts)},
        "new": set(diff.new.tolist()),
        "vanished": set(diff.vanished.tolist()),
    }


@pytest.fixture(scope="module")
def planted_case():
    a, b, truth = planted()
    return a, b, truth, compare_dictionaries(a, b)


def test_planted_changes_are_recovered_exactly(planted_case):
    _, _, truth, diff = planted_case
    got = found(diff)
    for kind in truth:
        assert got[kind] == truth[kind], kind
    assert diff.counts() == {"matched": 200, "split": 30, "merge": 20, "new": 30, "vanished": 30,
                             "dead_a": 0, "dead_b": 0}
    assert (diff.splits.cosine > diff.splits.part_cosines.map(max) + 0.05).all()
    assert np.allclose(diff.merges.cosine, 1.0, atol=1e-6)


@pytest.mark.parametrize("spread", [0.6, 1.0])
def test_splits_are_found_whether_or_not_a_child_also_matches_alone(spread):
    # spread 0.6: each child has cosine 0.86 with its parent (a one-to-one match the split must
    # beat); 1.0: 0.707, at the match threshold's edge.
    a, b, truth = planted(seed=1, spread=spread)
    got = found(compare_dictionaries(a, b))
    assert got == truth


def test_every_live_feature_lands_in_exactly_one_category(planted_case):
    a, b, _, diff = planted_case
    frame = diff.to_frames()["version_matches"]
    a_owner = frame[frame.kind.isin(["matched", "split", "vanished"])].drop_duplicates(["kind", "a"])
    a_owner = pd.concat([a_owner.a, frame[frame.kind == "merge"].a])
    b_owner = frame[frame.kind.isin(["matched", "merge", "new"])].drop_duplicates(["kind", "b"])
    b_owner = pd.concat([b_owner.b, frame[frame.kind == "split"].b])
    assert sorted(a_owner) == list(range(len(a)))
    assert sorted(b_owner) == list(range(len(b)))


def test_identity_diff_matches_every_feature_with_cosine_one():
    a, _, _ = planted(seed=2)
    diff = compare_dictionaries(a, a)
    assert diff.matched.a.tolist() == diff.matched.b.tolist() == list(range(len(a)))
    assert np.allclose(diff.matched.cosine, 1.0, atol=1e-6)
    assert diff.counts() == {"matched": len(a), "split": 0, "merge": 0, "new": 0, "vanished": 0,
                             "dead_a": 0, "dead_b": 0}


def test_same_inputs_give_identical_frames_whatever_the_block(planted_case):
    a, b, _, diff = planted_case
    again = compare_dictionaries(a.copy(), b.copy(), block=17)
    for name, frame in diff.to_frames().items():
        pd.testing.assert_frame_equal(frame, again.to_frames()[name], check_exact=True)


@pytest.mark.parametrize("heavy", [None, 0])  # 0: every row through the tie-rich fallback
def test_blocked_candidate_search_equals_brute_force(heavy, monkeypatch):
    if heavy is not None:
        monkeypatch.setattr(diff_module, "_HEAVY", heavy)
    rng = np.random.default_rng(3)
    a = rng.standard_normal((53, 16)).astype(np.float32)
    b = rng.standard_normal((41, 16)).astype(np.float32)
    a[7] = a[30]  # exact ties: equal cosines go to the smaller index
    b[5] = b[12] = 2 * b[40]
    live_a = np.ones(len(a), bool)
    live_a[[2, 44]] = False
    b[9] = 0  # no direction: neither has nor is a neighbour
    ua, nz_a = unit_rows(a)
    ub, nz_b = unit_rows(b)
    live_a &= nz_a
    k = 6
    a_idx, a_sim, b_idx, b_sim = cross_neighbours(ua, live_a, ub, nz_b, k, block=5)

    s = ua.astype(np.float64) @ ub.T.astype(np.float64)
    s[~live_a] = -np.inf
    s[:, ~nz_b] = -np.inf
    ref_a = np.argsort(-s, axis=1, kind="stable")[:, :k]
    ref_b = np.argsort(-s.T, axis=1, kind="stable")[:, :k]
    la, lb = np.flatnonzero(live_a), np.flatnonzero(nz_b)
    assert np.array_equal(a_idx[la], ref_a[la])
    assert np.array_equal(b_idx[lb], ref_b[lb])
    assert np.allclose(a_sim[la], np.take_along_axis(s, ref_a, 1)[la], atol=1e-5)
    assert np.allclose(b_sim[lb], np.take_along_axis(s.T, ref_b, 1)[lb], atol=1e-5)
    assert (a_idx[~live_a] == -1).all() and (b_idx[9] == -1).all() and np.isnan(b_sim[9]).all()


def test_sparse_assignment_equals_dense_hungarian():
    rng = np.random.default_rng(4)
    fa, fb = 40, 35
    dense = np.where(rng.random((fa, fb)) < 0.12, rng.uniform(0.7, 1.0, (fa, fb)), 0.0)
    ea, eb = np.nonzero(dense)
    cos = dense[ea, eb]
    r, c = linear_sum_assignment(dense, maximize=True)
    best = dense[r, c].sum()
    for dense_max in (1 << 22, 0):  # component-wise Hungarian, then sparse LAPJVsp for all
        match_a, match_b = one_to_one(ea, eb, cos, fa, fb, 0.7, dense_max)
        m = np.flatnonzero(match_a >= 0)
        assert np.all(dense[m, match_a[m]] > 0)
        assert np.array_equal(match_b[match_a[m]], m)
        assert dense[m, match_a[m]].sum() == pytest.approx(best, abs=1e-12)


def test_dead_features_are_reported_apart_and_take_no_part():
    a, b, truth = planted(seed=5)
    matched = sorted(truth["matched"])
    dead_a_row, twin = matched[0]  # its live twin in B has nothing left to match
    orphan_a, dead_b_row = matched[1]
    alive_a = np.ones(len(a), bool)
    alive_a[dead_a_row] = False
    alive_b = np.ones(len(b), bool)
    alive_b[dead_b_row] = False
    a = a.copy()
    zero_row = matched[2][0]
    a[zero_row] = 0  # no direction counts as dead too
    diff = compare_dictionaries(a, b, alive_a=alive_a, alive_b=alive_b)
    assert diff.dead_a.tolist() == sorted([dead_a_row, zero_row])
    assert diff.dead_b.tolist() == [dead_b_row]
    frame = diff.to_frames()["version_matches"]
    assert not frame.a.isin(diff.dead_a).any() and not frame.b.isin(diff.dead_b).any()
    assert twin in diff.new and matched[2][1] in diff.new
    assert orphan_a in diff.vanished
    dead = diff.to_frames()["version_dead"]
    assert dead.side.tolist() == ["a", "a", "b"] and dead.feature.dtype == np.int64


def test_hand_built_diff_gives_the_expected_table():
    e = np.eye(8, dtype=np.float32)
    a = np.stack([e[0], e[1], e[2], e[3], e[6]])  # a4 = e6 is dropped
    b = np.stack([
        e[0],  # b0 keeps a0
        e[1] + e[4], e[1] - e[4],  # b1, b2 split a1 exactly
        e[2] + e[3],  # b3 merges a2 and a3
        e[7],  # b4 is new
    ])
    coact_b = sp.csr_matrix(([0.02, 0.02], ([1, 2], [2, 1])), shape=(5, 5))
    diff = compare_dictionaries(a, b, coact_b=coact_b)
    table = diff.to_frames()["version_matches"]
    h = np.sqrt(0.5)
    expected = pd.DataFrame({
        "kind": ["matched", "split", "split", "merge", "merge", "new", "vanished"],
        "a": [0, 1, 1, 2, 3, -1, 4],
        "b": [0, 1, 2, 3, 3, 4, -1],
        "score": [1.0, 1.0, 1.0, 1.0, 1.0, np.nan, np.nan],
        "cosine": [1.0, h, h, h, h, np.nan, np.nan],
        "weight": [np.nan, h, h, h, h, np.nan, np.nan],
    }).round(6)
    pd.testing.assert_frame_equal(table, expected, check_exact=False, atol=1e-6)
    assert list(dict.fromkeys(table.kind)) == list(KINDS)
    assert diff.splits.part_coact.tolist() == [pytest.approx(0.02)]
    assert np.isnan(diff.merges.part_coact).all()


def test_a_combination_that_does_not_beat_the_match_by_the_margin_stays_a_match():
    e = np.eye(6, dtype=np.float32)
    a = e[:1]
    # b0 alone is a strong match (0.95); b1 adds a little of what b0 misses, not enough to count.
    b = np.stack([0.95 * e[0] + np.sqrt(1 - 0.95**2) * e[1], 0.4 * e[0] - 0.3 * e[1] + 0.866 * e[2]])
    diff = compare_dictionaries(a, b)
    assert diff.matched[["a", "b"]].values.tolist() == [[0, 0]]
    assert diff.new.tolist() == [1] and len(diff.splits) == 0
