"""Feature labels, cluster names, the override file and the Neuronpedia / delphi importers."""

import gzip
import json
import math

import numpy as np
import pytest

from atlas.analysis.clusters import Hierarchy
from atlas.analysis.explanations import (
    ClusterKey, import_delphi, import_neuronpedia, load_overrides, parse_cluster_key,
    resolve_cluster_overrides, save_overrides,
)
from atlas.analysis.labels import cluster_names, context_docs, context_docs_for, feature_labels, hierarchy_names
from atlas.errors import ConfigError

# ---- feature labels --------------------------------------------------------------------------


def test_labels_rebuild_the_whole_word_at_the_focus():
    examples = [
        ([" the", " lymph", "ocyte", " count"], 2, 5.0),  # focus on the continuation piece
        ([" a", " lymph", "ocyte", "."], 1, 4.0),  # focus on the word start
        ([" B", "-", "cell", " lymph", "ocytes"], 4, 3.0),
    ]
    label = feature_labels([examples])[0]
    terms = label.split(" · ")
    assert terms[0] == "lymphocyte"
    assert "ocyte" not in terms and "lymph" not in terms and "lymphocytes" in terms


def test_labels_drop_stop_words_and_take_neighbouring_words():
    # The feature fires on " the" before blood words: "the" says nothing, its neighbours do.
    examples = [
        ([" in", " the", " blood", "stream"], 1, 6.0),
        ([" of", " the", " blood", " vessel"], 1, 5.0),
        (["Through", " the", " blood", "."], 1, 4.0),
    ]
    label = feature_labels([examples])[0]
    assert label.split(" · ")[0] in ("bloodstream", "blood")
    assert "the" not in label.lower().split(" · ") and "in" not in label.split(" · ")


def test_labels_from_token_pairs_prefer_words_and_dedupe_case():
    pairs = [(" blood", 5.0), ("ing", 9.0), (" the", 10.0), (",", 8.0), (" Blood", 1.0), (" muscle", 2.0),
             (" antigen", 1.5), (" serum", 1.0)]
    assert feature_labels([pairs]) == ["blood · ing · muscle"]


def test_labels_fall_back_to_stop_words_and_punctuation():
    assert feature_labels([[(" the", 3.0), (",", 1.0)]]) == ["the · ,"]
    assert feature_labels([[("\n", 1.0)]]) == ["↵"]
    assert feature_labels([[]]) == [""]


def test_context_docs_hold_focus_and_nearby_words():
    docs = context_docs([[([" red", " blood", " cell", "s", " count"], 1, 1.0)]], radius=1)
    assert docs == ["blood red blood cells"]


def test_context_docs_at_several_radii_in_one_pass():
    feats = [[([" red", " blood", " cell", "s", " count"], 1, 1.0), ([" a", " cell", " wall"], 2, 0.5)], []]
    both = context_docs_for(feats, (2, 0))
    assert both == {2: context_docs(feats, radius=2), 0: context_docs(feats, radius=0)}
    assert both[0] == ["blood blood wall wall", ""]


# ---- cluster names ---------------------------------------------------------------------------

COMMON = "people said time year make way good"


def planted_docs():
    rng = np.random.default_rng(0)
    topics = {
        "med": ["blood", "muscle", "antigen"],
        "city": ["Francisco", "Golden", "Bay"],
        "law": ["court", "judge", "verdict"],
    }
    clusters = []
    for words in topics.values():
        docs = []
        for _ in range(12):
            picked = list(rng.choice(words, 2, replace=False)) + list(rng.choice(COMMON.split(), 4))
            docs.append(" ".join(picked + ["the", "and"]))
        clusters.append(docs)
    return topics, clusters


def test_cluster_names_pick_the_distinguishing_words():
    topics, clusters = planted_docs()
    names = cluster_names(clusters)
    for words, name in zip(topics.values(), names):
        terms = name.split(", ")
        assert 2 <= len(terms) <= 3
        assert set(terms) <= set(words), name  # casing kept: "Francisco", not "francisco"
        assert not set(terms) & set(COMMON.split())
    assert cluster_names(clusters) == names


def test_cluster_names_every_level_of_a_hierarchy():
    _, clusters = planted_docs()
    docs = [d for c in clusters for d in c]
    fine = np.repeat(np.arange(6), 6)
    h = Hierarchy(labels=[np.zeros(36, int), fine // 2, fine],
                  parents=[np.array([-1]), np.zeros(3, int), np.repeat(np.arange(3), 2)])
    names = hierarchy_names(h, docs)
    assert [len(n) for n in names] == [1, 3, 6]
    assert all(all(level) for level in names)
    assert {names[1][0].split(", ")[0], names[2][0].split(", ")[0]} <= {"blood", "muscle", "antigen"}
    assert len(set(names[1])) == 3 and len(set(names[2])) == 6


def test_cluster_names_repeat_only_when_nothing_distinguishes():
    same = [["alpha beta gamma delta"] * 4, ["alpha beta gamma delta"] * 4]
    a, b = cluster_names(same)
    assert a and b and a != b


# ---- override file ---------------------------------------------------------------------------


def test_override_file_round_trips(tmp_path):
    features = {3: 'San "Francisco" \\ Bay', 4812: "line\nbreak · ünïcode", 0: "x"}
    clusters = {ClusterKey(1, 4812): "Bay Area", ClusterKey(0, 3): "places"}
    path = tmp_path / "labels.toml"
    save_overrides(path, features, clusters)
    assert load_overrides(path) == (features, clusters)
    (tmp_path / "labels.json").write_text(json.dumps({"features": {"7": "seven"}, "clusters": {"2:9": "nine"}}))
    assert load_overrides(tmp_path / "labels.json") == ({7: "seven"}, {ClusterKey(2, 9): "nine"})
    assert load_overrides("") == ({}, {})


def test_override_file_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[clusters]\n"somewhere" = "x"\n')
    with pytest.raises(ConfigError, match="L<level>:f<feature>"):
        load_overrides(bad)
    bad.write_text('[feature]\n1 = "x"\n')
    with pytest.raises(ConfigError, match="unknown table"):
        load_overrides(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_overrides(tmp_path / "missing.toml")


def test_cluster_keys_parse_loosely_and_resolve_by_member():
    assert parse_cluster_key("L1:f4812") == parse_cluster_key("level 1 feature 4812") == ClusterKey(1, 4812)
    assert parse_cluster_key("1/4812") == ClusterKey(1, 4812)
    with pytest.raises(ValueError):
        parse_cluster_key("14812")
    h = Hierarchy(labels=[np.array([0, 0, 1, 1]), np.array([0, 1, 2, 3])],
                  parents=[np.array([-1, -1]), np.array([0, 0, 1, 1])])
    features = np.array([10, 11, 20, 21])  # rows are alive features
    overrides = {ClusterKey(0, 21): "second", ClusterKey(0, 20): "dup", ClusterKey(1, 11): "b", ClusterKey(0, 5): "?"}
    names, unused = resolve_cluster_overrides(overrides, features, h)
    assert names == {(0, 1): "second", (1, 1): "b"}
    assert unused == [ClusterKey(0, 20), ClusterKey(0, 5)]


# ---- importers -------------------------------------------------------------------------------


def write_jsonl_gz(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")


def test_import_neuronpedia_export(tmp_path):
    root = tmp_path / "gpt2-small" / "6-res-jb"
    common = {"modelId": "gpt2-small", "layer": "6-res-jb", "authorId": "x", "createdAt": "2024-01-01"}
    write_jsonl_gz(root / "explanations" / "batch-0.jsonl.gz", [
        {**common, "id": "a", "index": "12", "description": " San Francisco ", "typeName": "oai_token-act-pair",
         "explanationModelName": "gpt-4o-mini"},
        {**common, "id": "b", "index": "3", "description": "blood", "typeName": "oai_token-act-pair",
         "explanationModelName": None},
    ])
    write_jsonl_gz(root / "explanations" / "batch-1.jsonl.gz", [
        {**common, "id": "c", "index": "3", "description": "immune", "typeName": "claude",
         "explanationModelName": "claude-3"},
    ])
    write_jsonl_gz(root / "features" / "batch-0.jsonl.gz", [
        {**common, "index": "3", "pos_str": [" a"], "pos_values": [1.0], "maxActApprox": 3.0},
    ])
    df = import_neuronpedia(root)
    assert list(df.columns) == ["feature", "source", "text", "score"]
    assert df[["feature", "source", "text"]].values.tolist() == [
        [3, "neuronpedia:claude-3", "immune"],
        [3, "neuronpedia:oai_token-act-pair", "blood"],
        [12, "neuronpedia:gpt-4o-mini", "San Francisco"],
    ]
    assert df["score"].isna().all() and df["feature"].dtype == np.int64
    assert len(import_neuronpedia(root / "explanations" / "batch-1.jsonl.gz")) == 1
    api = tmp_path / "feature.json"
    api.write_text(json.dumps({"index": "5", "explanations": [{"description": "five", "typeName": "t"}]}))
    assert import_neuronpedia(api)["feature"].tolist() == [5]


def test_import_delphi_run(tmp_path):
    expl = tmp_path / "run" / "explanations"
    expl.mkdir(parents=True)
    (expl / "layers.5_latent3.txt").write_text(json.dumps("blood and muscle"))
    (expl / "layers.5_latent10.txt").write_text("plain text explanation\n")
    (expl / "layers.5_latent11.json").write_text(json.dumps({"explanation": "an object"}))
    for scorer, marks in {"detection": [True, True, False, None], "fuzz": [True, False]}.items():
        folder = tmp_path / "run" / "scores" / scorer
        folder.mkdir(parents=True)
        judged = [{"str_tokens": ["a"], "activations": [0.0], "prediction": 1, "correct": c} for c in marks]
        (folder / "layers.5_latent3.txt").write_text(json.dumps(judged))
    df = import_delphi(tmp_path / "run")
    assert df["feature"].tolist() == [3, 10, 11]
    assert df["text"].tolist() == ["blood and muscle", "plain text explanation", "an object"]
    assert set(df["source"]) == {"delphi"}
    assert df["score"][0] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert math.isnan(df["score"][1])
    assert import_delphi(tmp_path / "run", scorer="detection")["score"][0] == pytest.approx(2 / 3)
    assert import_delphi(expl)["score"][0] == pytest.approx((2 / 3 + 1 / 2) / 2)  # finds ../scores
    (expl / "layers.6_latent1.txt").write_text(json.dumps("other layer"))
    with pytest.raises(ConfigError, match="layers.5, layers.6"):
        import_delphi(expl)
    assert import_delphi(expl, module="layers.6")["feature"].tolist() == [1]
