"""The explain stage on an atlas whose answers are known: a feature planted on one word is explained by that word
and scores high, random explanations score near chance, the page shows the best-scoring explanation (the user's
label first), everything lands in the store; an OpenAI-compatible endpoint within a budget does what it can, the
rest keep the offline explanation, and a later build finishes from the cache."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from atlas.config import load_config
from atlas.pipeline import build
from atlas.store import Store
from fake_chat import FakeChat
from planted_atlas import PLANTED, write_planted, write_planted_config

RANDOM_LABELS = ["medieval cathedral architecture", "quantum chromodynamics lattice", "origami folding patterns",
                 "sonnet meter and rhyme", "volcanic basalt columns", "railway timetable logistics"]


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("planted")
    write_planted(root)
    return root


def _workspace(planted: Path, tmp_path: Path) -> Path:
    for name in ("model", "sae", "acts.npz"):
        (tmp_path / name).symlink_to(planted / name)
    return tmp_path


@pytest.fixture(scope="module")
def offline(planted, tmp_path_factory) -> tuple[Path, object]:
    root = _workspace(planted, tmp_path_factory.mktemp("offline"))
    lines = "\n".join(f'{f} = "{RANDOM_LABELS[f % len(RANDOM_LABELS)]}"' for f in range(3, 24))
    (root / "labels.toml").write_text("[features]\n" + lines + "\n")
    run = root / "delphi"
    (run / "explanations").mkdir(parents=True)
    (run / "scores" / "detection").mkdir(parents=True)
    (run / "explanations" / "layers.1_latent0").write_text('"foxes hunting in the forest"')
    (run / "scores" / "detection" / "layers.1_latent0").write_text('[{"correct": true}, {"correct": false}]')
    cfg = load_config(write_planted_config(root, analysis={"labels_file": "labels.toml", "explanations": ["delphi"]}))
    return root, build(cfg, log=lambda *a: None, progress=False)


def test_a_feature_planted_on_one_word_is_explained_by_it_and_scores_high(offline):
    root, report = offline
    assert {s.name: s.status for s in report.stages}["explain"] == "computed"
    with Store(root / "atlas.duckdb", read_only=True) as s:
        labels = s.table("labels")
    offline_rows = labels[labels["source"] == "offline"].set_index("feature")
    for f, word in PLANTED.items():
        text = offline_rows.at[f, "text"]
        assert re.search(rf'\b{word}\b', text), text
        assert offline_rows.at[f, "score"] > 0.8, (text, offline_rows.at[f, "score"])


def test_random_explanations_score_near_chance(offline):
    root, _ = offline
    with Store(root / "atlas.duckdb", read_only=True) as s:
        user = s.query("SELECT feature, score FROM labels WHERE source = 'user' AND score IS NOT NULL")
        planted = s.query("SELECT avg(score) AS s FROM labels WHERE source = 'offline' AND feature < 3")["s"][0]
    assert len(user) >= 15
    assert 0.35 < user["score"].mean() < 0.65 and planted > user["score"].mean() + 0.25


def test_every_live_feature_has_scored_explanations_and_the_page_shows_the_pick(offline):
    root, _ = offline
    with Store(root / "atlas.duckdb", read_only=True) as s:
        feats = s.table("features", order_by="feature")
        shown = s.table("feature_explanations", order_by="feature")
        scores = s.table("label_scores")
        info = s.info()
        labels = s.table("labels")
    alive = feats[feats["alive"]]
    assert len(shown) == len(alive) and set(shown["feature"]) == set(alive["feature"])
    for source in ("offline", "keyword"):
        assert set(labels[labels["source"] == source]["feature"]) == set(alive["feature"])
    embedding = scores[scores["scorer"] == "embedding"]
    assert set(scores["scorer"]) == {"embedding", "imported"}
    assert (embedding["n_pos"] > 0).all() and (embedding["n_neg"] > 0).all()
    by_feature = shown.set_index("feature")
    for f in alive["feature"]:
        mine = labels[labels["feature"] == f]
        row = by_feature.loc[f]
        if f >= 3:  # the labels file's entry wins whatever it scores
            assert row["source"] == "user"
        else:
            assert row["score"] == pytest.approx(mine["score"].max())
        assert feats.set_index("feature").at[f, "label"] == row["text"]
    emb = info["explanation_scores"]["embedding"]
    scored = labels[(labels["source"] == "offline") & labels["score"].notna()]
    assert emb["offline"]["n"] == len(scored) >= len(alive) - 5 and "beats_keyword" in info["explanation_scores"]
    assert info["explanation_method"]["mean_held_out"] > 0


def test_imported_explanations_are_scored_the_same_way_and_keep_their_own_score(offline):
    root, _ = offline
    with Store(root / "atlas.duckdb", read_only=True) as s:
        rows = s.query("SELECT scorer, score FROM label_scores WHERE feature = 0 AND source = 'delphi' ORDER BY scorer")
    scores = dict(zip(rows["scorer"], rows["score"]))
    assert scores["imported"] == pytest.approx(0.5) and scores["embedding"] > 0.8


def test_search_embeddings_are_stored_as_unit_vectors(offline):
    from atlas.store.meaning import embeddings

    root, _ = offline
    with Store(root / "atlas.duckdb", read_only=True) as s:
        for kind in ("feature", "context", "cluster"):
            items, vectors = embeddings(s, kind)
            assert len(items) and vectors.shape[1] == 384
            assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=2e-2), kind


def _answer(messages: list[dict]) -> str:
    system, user = messages[0]["content"], messages[-1]["content"]
    n = len(re.findall(r"^\d+\. ", user, re.M))
    if "JSON list" in system:
        return "[" + ", ".join("1" if "<<" in line or "fox" in line else "0"
                               for line in user.splitlines() if re.match(r"\d+\. ", line)) + "]" if n else "[]"
    return "Sure.\nExplanation: <b>foxes</b> in\x07 the woods"


def test_an_endpoint_within_its_budget_leaves_the_rest_offline_and_the_next_build_finishes(planted, tmp_path):
    root = _workspace(planted, tmp_path)
    with FakeChat(_answer, fail=[500]) as fake:
        endpoint = {"explainer": "openai", "base_url": fake.base_url, "model": "fake-7b", "max_retries": 2,
                    "concurrency": 2, "timeout_s": 10.0}
        cfg = load_config(write_planted_config(root, explain={**endpoint, "max_requests": 6}))
        first = build(cfg, log=lambda *a: None, progress=False)
        assert {s.name: s.status for s in first.stages}["explain"] == "partial"
        assert len(fake.requests) == 6
        with Store(root / "atlas.duckdb", read_only=True) as s:
            shown = s.table("feature_explanations")
            llm = s.query("SELECT * FROM labels WHERE source = 'openai:fake-7b'")
        assert 0 < len(llm) < len(shown)
        assert (llm["text"] == "<b>foxes</b> in the woods").all()  # cleaned; the pages escape it
        assert set(shown["source"]) <= {"offline", "keyword", "openai:fake-7b"}
        assert "offline" in set(shown["source"]) or "keyword" in set(shown["source"])

        cfg = load_config(write_planted_config(root, explain=endpoint))
        second = build(cfg, log=lambda *a: None, progress=False)
        assert {s.name: s.status for s in second.stages}["explain"] == "computed"
        asked = len(fake.requests)
        with Store(root / "atlas.duckdb", read_only=True) as s:
            n_alive = s.query("SELECT count(*) AS n FROM features WHERE alive")["n"][0]
            llm = s.query("SELECT count(*) AS n FROM labels WHERE source = 'openai:fake-7b'")["n"][0]
            judged = s.query("SELECT DISTINCT scorer FROM label_scores")["scorer"].tolist()
        assert llm == n_alive and {"detection", "fuzzing", "embedding"} <= set(judged)
        third = build(cfg, log=lambda *a: None, progress=False)
        assert {s.name: s.status for s in third.stages}["explain"] == "reused" and len(fake.requests) == asked
    prompt = next(r["messages"][-1]["content"] for r in fake.requests if "Excerpt 1" in r["messages"][-1]["content"])
    assert "<<" in prompt and ">>" in prompt
