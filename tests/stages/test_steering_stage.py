"""The steering stage: which features it previews and in what order, its time budget, its rows in the store, their
reuse, and an encoder that gets no previews."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from atlas.config import Config, SteeringSection, load_config
from atlas.lm.adapter import load_model
from atlas.lm.steering import Preview
from atlas.pipeline import build
from atlas.saes.record import SaeWeights
from atlas.stages import steering as stage
from atlas.stages.run import Reporter
from atlas.store import Store
from atlas_fixtures import workspace, write_config  # noqa: F401  (workspace: a fixture)
from synthetic_store import make_synthetic_store
from tiny_models import save_tiny

N_FEATURES = 60


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = make_synthetic_store(tmp_path_factory.mktemp("choose") / "a.duckdb", n_features=N_FEATURES, seed=9,
                                evil_text=False, dead_share=0.1)
    g = torch.Generator().manual_seed(0)
    sae = SaeWeights(W_enc=torch.randn(8, N_FEATURES, generator=g), b_enc=torch.zeros(N_FEATURES),
                     W_dec=torch.randn(N_FEATURES, 8, generator=g), b_dec=torch.zeros(8))
    with Store(path, read_only=True) as s:
        feats = s.table("features", order_by="feature")
        levels = s.query("SELECT c.level, m.cluster_id, m.feature FROM cluster_members m "
                         "JOIN clusters c USING (cluster_id) ORDER BY c.level, m.cluster_id, m.feature")
    return path, sae, feats, levels


def choose(synthetic, **settings):
    path, sae, _feats, _levels = synthetic
    with Store(path, read_only=True) as s:
        return stage.choose_features(s, sae, SteeringSection(**settings))


def test_listed_ids_come_first_then_a_representative_per_region_then_per_cluster(synthetic):
    _path, sae, feats, levels = synthetic
    chosen, core = choose(synthetic, features=[7, 3], select="representatives", max_features=0)
    assert chosen[:2] == [7, 3] and len(set(chosen)) == len(chosen)
    regions = levels[levels["level"] == 0].groupby("cluster_id")["feature"].apply(set)
    clusters = levels[levels["level"] == 1].groupby("cluster_id")["feature"].apply(set)
    alive = set(feats.loc[feats["alive"], "feature"])
    assert len(regions) <= core <= 2 + len(regions)
    for members in regions:  # every region is covered within the core
        assert members & set(chosen[:core])
    for members in clusters:
        assert members & set(chosen)
    assert set(chosen[2:]) <= alive
    # the representative of a region is its member nearest the region's mean decoder direction
    unit = (sae.W_dec / sae.W_dec.norm(dim=1, keepdim=True)).numpy()
    first = sorted(regions.iloc[0])
    expected = first[int(np.argmax(unit[first] @ unit[first].mean(axis=0)))]
    assert expected in chosen[:core]


def test_densest_follows_density_and_none_keeps_only_the_listed_ids(synthetic):
    _path, _sae, feats, _levels = synthetic
    chosen, core = choose(synthetic, features=[5], select="densest", max_features=6)
    alive = feats[feats["alive"] & (feats["feature"] != 5)].sort_values(["density", "feature"], ascending=[False, True])
    assert chosen == [5, *alive["feature"].head(5).tolist()] and core == 1
    assert choose(synthetic, features=[5, 9], select="none", max_features=0) == ([5, 9], 2)
    everything, _ = choose(synthetic, select="all", max_features=0)
    assert sorted(everything) == sorted(feats.loc[feats["alive"], "feature"].tolist())


def fake_steer(calls):
    def steer(model, sae, features, max_acts, prompts, strengths, new_tokens, seed=0):
        calls.append(list(features))
        return [Preview(f, 0, 0.0, (), False, "", np.zeros(0, np.float32), 0.0) for f in features]
    return steer


def test_the_time_budget_keeps_the_core_and_drops_the_rest(monkeypatch):
    calls = []
    monkeypatch.setattr(stage, "steer", fake_steer(calls))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    st = SteeringSection(time_budget_s=1e-9, features_per_call=2)
    _rows, done, _s = stage.preview_features(None, None, st, [1, 2, 3, 4, 5, 6, 7], 3, {}, 0)
    assert done == 4 and calls == [[1, 2], [3, 4]]  # the group that holds the core's last feature, then stop
    calls.clear()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # a reproducible build ignores the clock
    _rows, done, _s = stage.preview_features(None, None, st, [1, 2, 3, 4, 5, 6, 7], 3, {}, 0)
    assert done == 7 and calls == [[1, 2], [3, 4], [5, 6], [7]]


def test_an_encoder_gets_no_previews_and_the_pages_are_told(tmp_path):
    bert = load_model(save_tiny("bert", tmp_path / "bert"), "blocks.1.hook_resid_post")
    sae = SaeWeights(W_enc=torch.zeros(bert.d_hook, 4), b_enc=torch.zeros(4), W_dec=torch.zeros(4, bert.d_hook),
                     b_dec=torch.zeros(bert.d_hook))
    lines = []
    with Store(tmp_path / "a.duckdb") as store:
        store.record_stage("steering", "from-an-earlier-causal-build", 1.0)
        run = SimpleNamespace(cfg=Config(), store=store, report=Reporter(log=lines.append, progress=False))
        assert stage.steering(SimpleNamespace(model=bert, hook="blocks.1.hook_resid_post"), run, sae, "k") == ""
        assert store.count("steering") == 0 and store.stage_hash("steering") is None
        fact = store.info()["steering"]
    assert fact["status"] == "unavailable" and "causal language model" in fact["note"]
    assert "skipped" in lines[0]


STEER = {"steering__features": [2], "steering__strengths": [-2, 0, 4], "steering__new_tokens": 6,
         "steering__max_features": 5, "steering__prompts": ["the quick", "a feature atlas"]}


@pytest.fixture(scope="module")
def built(workspace):
    report = build(load_config(write_config(workspace, **STEER)), log=lambda *a: None, progress=False)
    return workspace, report


def test_the_stage_writes_a_row_per_feature_prompt_and_strength(built):
    root, report = built
    assert {s.name: s.status for s in report.stages}["steering"] == "computed"
    with Store(root / "atlas.duckdb", read_only=True) as s:
        rows = s.table("steering", order_by="feature, prompt, strength")
        fact = s.info()["steering"]
        vocab = set(s.vocab_ids().tolist())
        regions = s.query("SELECT count(*) AS n FROM clusters WHERE level = 0")["n"][0]
    features = rows["feature"].unique().tolist()
    assert 2 in features and len(features) == fact["n_features"] <= 5 and len(features) >= min(5, 1 + regions)
    assert len(rows) == len(features) * 2 * 3
    assert fact["strengths"] == [-2.0, 0.0, 4.0] and fact["prompts"] == ["the quick", "a feature atlas"]
    assert set(rows["prompt_text"]) == {"the quick", "a feature atlas"}
    base = rows[rows["strength"] == 0]
    for _p, group in base.groupby("prompt"):  # the baseline is one text, whatever the feature
        assert len({tuple(t) for t in group["token_ids"]}) == 1
        assert (group["added_norm"] == 0).all()
    steered = rows[rows["strength"] != 0]
    assert (steered["added_norm"] > 0).all()
    for ids, acts in zip(rows["token_ids"], rows["acts"]):
        assert len(ids) == len(acts) <= 6 and set(int(t) for t in ids) <= vocab  # every token can be shown


def test_an_unchanged_build_reuses_the_previews_and_a_changed_section_recomputes_them(built):
    root, _ = built
    with Store(root / "atlas.duckdb", read_only=True) as s:
        before = s.table("steering", order_by="feature, prompt, strength")
    again = build(load_config(write_config(root, **STEER)), log=lambda *a: None, progress=False)
    assert {s.name: s.status for s in again.stages}["steering"] == "reused"
    changed = build(load_config(write_config(root, **{**STEER, "steering__strengths": [0, 8]})),
                    log=lambda *a: None, progress=False)
    assert {s.name: s.status for s in changed.stages}["steering"] == "computed"
    with Store(root / "atlas.duckdb", read_only=True) as s:
        after = s.table("steering", order_by="feature, prompt, strength")
    assert sorted(set(after["strength"])) == [0.0, 8.0] and sorted(set(before["strength"])) == [-2.0, 0.0, 4.0]
