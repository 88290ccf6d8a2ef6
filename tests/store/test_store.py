"""The store: tables created from the schema, whole-frame writes, facts, stage keys, version schemas, exports."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from atlas.store import MAIN, Store, fixed_build_time, queries, reads, without_durations
from atlas.store.records import SaeVersion
from atlas.store.schema import TABLES, create_statements, primary_key


@pytest.fixture()
def store(tmp_path):
    with Store(tmp_path / "a.duckdb") as s:
        yield s


def _features(ids, **columns) -> pd.DataFrame:
    ids = list(ids)
    frame = {"feature": ids, "alive": [True] * len(ids), "density": [0.1 * (i + 1) for i in range(len(ids))],
             "label": [f"f{i}" for i in ids]}
    frame.update(columns)
    return pd.DataFrame(frame)


def _tables_in(store: Store, schema: str = MAIN) -> set[str]:
    rows = store.con.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = ?",
                             [schema]).fetchall()
    return {r[0] for r in rows}


# ---- creating and opening ----------------------------------------------------------------------------------------


def test_a_new_store_holds_every_table_of_the_schema_empty(store):
    assert _tables_in(store) == set(TABLES)
    assert all(store.count(name) == 0 for name in TABLES)
    assert len(create_statements()) == len(TABLES)
    cols = store.query("SELECT column_name FROM information_schema.columns "
                       "WHERE table_schema = 'main' AND table_name = 'features' ORDER BY ordinal_position")
    assert cols["column_name"].tolist()[:3] == ["feature", "alive", "n_fired"]


def test_primary_keys_are_read_from_the_schema():
    assert primary_key("features") == "feature"
    assert primary_key("stages") == "stage"
    assert primary_key("atlas_info") == "key"
    assert primary_key("clusters") == "cluster_id"
    assert primary_key("examples") is None and primary_key("neighbours") is None


def test_opening_again_keeps_the_rows_and_adds_no_duplicates(tmp_path):
    path = tmp_path / "a.duckdb"
    with Store(path) as s:
        s.replace_table("features", _features(range(3)))
    with Store(path) as s:
        assert s.count("features") == 3 and _tables_in(s) == set(TABLES)
    with Store(path, read_only=True) as s:
        assert s.table("features", order_by="feature")["feature"].tolist() == [0, 1, 2]


def test_a_missing_file_is_not_created_by_a_read_only_open(tmp_path):
    with pytest.raises(FileNotFoundError):
        Store(tmp_path / "nowhere.duckdb", read_only=True)
    assert not (tmp_path / "nowhere.duckdb").exists()
    with pytest.raises(FileNotFoundError):
        reads.open_for_reading(tmp_path / "nowhere.duckdb")


def test_a_read_only_store_refuses_writes(tmp_path):
    path = tmp_path / "a.duckdb"
    Store(path).close()
    with Store(path, read_only=True) as s:
        with pytest.raises(duckdb.Error):
            s.replace_table("features", _features(range(2)))
        assert s.count("features") == 0


# ---- writing whole frames ----------------------------------------------------------------------------------------


def test_replace_table_replaces_every_row_and_matches_columns_by_name(store):
    store.replace_table("features", _features(range(5)))
    # columns in another order, and fewer of them: the rest are NULL
    store.replace_table("features", pd.DataFrame({"label": ["b", "a"], "feature": [7, 3]}))
    got = store.table("features", order_by="feature")
    assert got["feature"].tolist() == [3, 7] and got["label"].tolist() == ["a", "b"]
    assert got["alive"].isna().all() and got["density"].isna().all()


def test_replace_table_takes_an_arrow_table(store):
    store.replace_table("vocab", pa.table({"token_id": pa.array([2, 1], pa.int64()), "token": ["b", None]}))
    assert reads.vocab(store) == {1: "", 2: "b"}  # NULL text reads back as ""


def test_an_empty_frame_empties_the_table(store):
    store.replace_table("features", _features(range(4)))
    store.replace_table("features", _features([]))
    assert store.count("features") == 0


def test_replace_rows_touches_only_the_matching_rows(store):
    rows = pd.DataFrame({"feature": [0, 0, 1, 1], "kind": ["decoder", "coact"] * 2, "rank": 0,
                         "other": [5, 6, 7, 8], "score": [0.5, 0.4, 0.3, 0.2]})
    store.replace_table("neighbours", rows)
    new = pd.DataFrame({"feature": [0, 1, 2], "kind": "coact", "rank": 0, "other": [9, 9, 9], "score": 0.9})
    store.replace_rows("neighbours", new, kind="coact")
    got = store.table("neighbours", order_by="kind, feature")
    assert got[["kind", "feature", "other"]].values.tolist() == [
        ["coact", 0, 9], ["coact", 1, 9], ["coact", 2, 9], ["decoder", 0, 5], ["decoder", 1, 7]]


def test_a_failed_replace_leaves_the_table_as_it_was(store):
    store.replace_table("features", _features(range(3)))
    with pytest.raises(duckdb.Error):  # two rows with one primary key
        store.replace_table("features", _features([4, 4]))
    assert store.table("features", order_by="feature")["feature"].tolist() == [0, 1, 2]
    with pytest.raises(duckdb.Error):  # a column the table does not have
        store.replace_rows("features", pd.DataFrame({"feature": [0], "colour": ["red"]}), feature=0)
    assert store.count("features") == 3
    store.replace_table("features", _features([5]))  # the connection is usable afterwards
    assert store.count("features") == 1


def test_writing_an_unknown_table_is_refused(store):
    with pytest.raises(KeyError, match="unknown table 'feature'"):
        store.replace_table("feature", _features(range(1)))
    with pytest.raises(KeyError, match="unknown table"):
        store.table("harvest_partial_features")


# ---- facts -------------------------------------------------------------------------------------------------------


def test_facts_round_trip_through_json(store):
    facts = {"d_sae": 48, "fvu": 0.125, "model": "tiny", "warnings": ["a", "b"], "has_unembedding": True,
             "hook_candidates": [{"hook": "h", "fvu": 0.5}], "sae_input_scale": None}
    store.set_info(**facts)
    assert store.info() == facts
    assert list(store.info()) == sorted(facts)


def test_facts_given_again_are_overwritten_and_others_kept(store):
    store.set_info(title="one", d_sae=3)
    store.set_info(title="two")
    store.set_info()  # nothing to record
    assert store.info() == {"d_sae": 3, "title": "two"}
    stored = store.query("SELECT value FROM atlas_info WHERE key = 'title'")["value"][0]
    assert json.loads(stored) == "two"


def test_sae_version_records_round_trip_through_the_facts(store):
    versions = [SaeVersion("main", "main", "main", ""), SaeVersion("Second run", "second-run",
                                                                  "version_second-run", "versions/second-run")]
    store.set_info(atlas_versions=[v.as_info() for v in versions])
    assert [SaeVersion.from_info(e) for e in store.info()["atlas_versions"]] == versions


# ---- stage keys --------------------------------------------------------------------------------------------------


def test_a_stage_key_is_recorded_and_replaced(store, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert store.stage_hash("harvest") is None
    store.record_stage("harvest", "abc", 1.5, {"n_tokens": 10, "harvest_s": 1.5})
    assert store.stage_hash("harvest") == "abc"
    store.record_stage("harvest", "def", 2.0)
    assert store.stage_hash("harvest") == "def" and store.stage_hash("analysis") is None
    row = store.table("stages").iloc[0]
    assert store.count("stages") == 1 and row["seconds"] == 2.0 and json.loads(row["details_json"]) == {}
    store.record_stage("analysis", "x", 0.5, {"b": 1, "a": 2, "analysis_s": 0.5})
    details = store.query("SELECT details_json FROM stages WHERE stage = 'analysis'")["details_json"][0]
    assert details == json.dumps({"a": 2, "analysis_s": 0.5, "b": 1})  # keys sorted, durations kept


def test_a_fixed_build_time_records_no_durations(store, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    store.record_stage("harvest", "abc", 12.5, {"n_tokens": 10, "harvest_s": 12.5})
    row = store.table("stages").iloc[0]
    assert row["seconds"] == 0.0
    assert json.loads(row["details_json"]) == {"n_tokens": 10}
    assert pd.Timestamp(row["computed_at"]).tz_localize(None) == pd.Timestamp(1700000000, unit="s")


@pytest.mark.parametrize("value, expected", [("1700000000", 1700000000.0), (" 12.5 ", 12.5), ("", None),
                                             ("yesterday", None)])
def test_the_fixed_build_time_is_read_from_source_date_epoch(monkeypatch, value, expected):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", value)
    assert fixed_build_time() == expected
    facts = {"n": 1, "fit_s": 2.0}
    assert without_durations(facts) == (facts if expected is None else {"n": 1})


def test_without_a_fixed_build_time_durations_stay(monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert fixed_build_time() is None
    assert without_durations({"n": 1, "fit_s": 2.0}) == {"n": 1, "fit_s": 2.0}


# ---- version schemas ---------------------------------------------------------------------------------------------


def test_a_version_schema_has_its_own_tables_in_the_same_file(tmp_path):
    path = tmp_path / "a.duckdb"
    with Store(path) as s:
        s.replace_table("features", _features(range(3)))
        with s.in_schema("version_b") as v:
            assert v.schema == "version_b" and v.path == s.path
            assert _tables_in(s, "version_b") == set(TABLES)
            v.replace_table("features", _features(range(5)))
            v.set_info(title="b")
        with s.in_schema("version_a") as v:
            v.set_info(title="a")
        assert s.count("features") == 3 and s.info() == {}
        assert s.schemas() == ["main", "version_a", "version_b"]
    with Store(path, read_only=True) as s:
        assert s.schemas() == ["main", "version_a", "version_b"]
        with s.in_schema("version_b") as v:
            assert v.count("features") == 5 and v.info() == {"title": "b"}
        with reads.open_for_reading(path, schema="version_a") as v:
            assert v.info() == {"title": "a"} and v.count("features") == 0
        with pytest.raises(KeyError, match="no version schema 'version_c'"):
            s.in_schema("version_c")
        with pytest.raises(KeyError, match="no version schema"):
            Store(path, read_only=True, schema="version_c")


def test_dropping_a_schema_removes_it_and_never_main(store):
    store.in_schema("version_b").replace_table("features", _features(range(2)))
    store.drop_schema("version_b")
    store.drop_schema(MAIN)
    assert store.schemas() == ["main"] and _tables_in(store) == set(TABLES)


# ---- exports -----------------------------------------------------------------------------------------------------


def test_parquet_export_writes_every_table_keyed_ones_in_key_order(store, tmp_path):
    store.replace_table("features", _features([5, 1, 3]))
    store.replace_rows("features", _features([1], label=["one"]), feature=1)  # updated in place
    store.replace_table("clusters", pd.DataFrame({"cluster_id": [9, 2], "level": [0, 0], "name": ["n", "m"]}))
    store.replace_table("cluster_members", pd.DataFrame({"cluster_id": [9, 2, 9], "feature": [5, 1, 3]}))
    store.set_info(title="t", d_sae=6)
    folder = tmp_path / "it's here"  # a quote in the path
    files = store.export_parquet(folder)
    assert files == [folder / f"{name}.parquet" for name in TABLES]
    assert all(f.is_file() for f in files)
    feats = pq.read_table(folder / "features.parquet").to_pandas()
    assert feats["feature"].tolist() == [1, 3, 5] and feats.loc[0, "label"] == "one"
    assert pq.read_table(folder / "clusters.parquet").column("cluster_id").to_pylist() == [2, 9]
    assert pq.read_table(folder / "atlas_info.parquet").column("key").to_pylist() == ["d_sae", "title"]
    # an unkeyed table keeps the order its rows were written in
    assert pq.read_table(folder / "cluster_members.parquet").column("feature").to_pylist() == [5, 1, 3]
    assert pq.read_table(folder / "examples.parquet").num_rows == 0


def test_whole_table_reads_for_exports_come_in_feature_order(store):
    store.replace_table("neighbours", pd.DataFrame({
        "feature": [1, 0, 0, 0], "kind": ["decoder", "decoder", "coact", "decoder"], "rank": [0, 1, 0, 0],
        "other": [4, 3, 9, 2], "score": [0.9, 0.5, 0.8, 0.7]}))
    store.replace_table("logits", pd.DataFrame({
        "feature": [0, 0, 0], "sign": ["pos", "neg", "pos"], "rank": [1, 0, 0], "token_id": [5, 6, 7],
        "value": [1.0, -2.0, 3.0]}))
    store.replace_table("histograms", pd.DataFrame({
        "feature": [1, 0, 0], "bin": [0, 1, 0], "lo": [0.0, 1.0, 0.0], "hi": [1.0, 2.0, 1.0], "count": [4, 2, 3]}))
    store.replace_table("examples", pd.DataFrame({
        "feature": [0, 0], "kind": ["top", "random"], "bucket": [0, 0], "rank": [0, 0], "focus": [1, 0],
        "value": [2.0, 1.0], "token_ids": [[1, 2], [3]], "acts": [[0.0, 2.0], [1.0]]}))
    nb = queries.decoder_neighbours(store)
    assert nb.values.tolist() == [[0, 2, pytest.approx(0.7)], [0, 3, 0.5], [1, 4, pytest.approx(0.9)]]
    assert queries.logit_effects(store)[["sign", "token_id"]].values.tolist() == [["neg", 6], ["pos", 7], ["pos", 5]]
    assert queries.histogram_bins(store)["count"].tolist() == [3, 2, 4]
    ex = queries.example_windows(store)
    assert ex["kind"].tolist() == ["random", "top"] and list(ex.columns) == [
        "feature", "kind", "bucket", "rank", "token_ids", "acts", "focus", "value"]
    assert list(ex.loc[1, "token_ids"]) == [1, 2]


# ---- reads the site relies on ------------------------------------------------------------------------------------


def test_labels_leave_out_empty_text_and_put_the_best_score_first(store):
    store.replace_table("labels", pd.DataFrame({
        "feature": [0, 0, 0, 1], "source": ["auto", "file", "np", "auto"], "text": ["x", None, "y", "z"],
        "score": [0.2, 0.9, None, 0.5]}))
    got = reads.labels(store)
    assert got[["feature", "text"]].values.tolist() == [[0, "x"], [0, "y"], [1, "z"]]


def test_top_tokens_are_the_most_frequent_focus_tokens(store):
    store.replace_table("examples", pd.DataFrame({
        "feature": [0, 0, 0, 1], "kind": ["top", "top", "random", "top"], "rank": [0, 1, 0, 0],
        "focus": [1, 0, 0, 0], "value": 1.0,
        "token_ids": [[7, 8], [8, 9], [5], [4]], "acts": [[0.0, 1.0], [1.0, 0.0], [1.0], [1.0]]}))
    got = reads.top_tokens(store, per_feature=1)
    assert got.values.tolist() == [[0, 8], [1, 4]]  # 8 is at the focus of both top examples; random ones don't count


def test_example_blocks_cut_a_row_to_its_shorter_list(store):
    store.replace_table("examples", pd.DataFrame({
        "feature": [2, 2, 3], "kind": ["random", "top", "top"], "bucket": [None, 0, 0], "rank": [0, 0, 0],
        "focus": [0, 1, 0], "value": [1.0, 3.0, 2.0],
        "token_ids": [[1, 2, 3], [4, None], [6]], "acts": [[0.5, 0.25], [0.0, 3.0], [2.0]]}))
    block = reads.examples(store, 2, 3)
    assert block.kind == ["top", "random"]  # top examples first
    assert block.rows(2) == range(0, 2) and block.rows(3) == range(2, 2)
    assert block.token_ids.tolist() == [4, -1, 1, 2]  # NULL token -1; the random row cut to its 2 acts
    assert np.array_equal(block.offsets, [0, 2, 4])
    assert block.acts.tolist() == [0.0, 3.0, 0.5, 0.25]


def test_a_store_without_comparison_tables_reads_as_uncompared(tmp_path):
    path = tmp_path / "old.duckdb"
    with Store(path) as s:
        for name in ("versions", "version_matches", "previous_features"):
            s.con.execute(f"DROP TABLE {name}")
    with Store(path, read_only=True) as s:
        assert reads.previous_version(s) is None
        assert reads.version_matches(s).empty
        assert list(reads.version_matches(s).columns) == ["kind", "a", "b", "score", "cosine", "weight"]
        assert reads.previous_labels(s) == {}


def test_the_previous_version_reads_back_with_nulls_as_none(store):
    assert reads.previous_version(store) is None
    store.replace_table("versions", pd.DataFrame({"role": ["previous"], "title": ["v1"], "store_path": ["../a.duckdb"],
                                                  "sae_hash": ["h"], "site_path": [None], "d_sae": [48]}))
    store.replace_table("previous_features", pd.DataFrame({"feature": [1, 0], "alive": True, "label": [None, "a"]}))
    assert reads.previous_version(store) == {"title": "v1", "store_path": "../a.duckdb", "sae_hash": "h",
                                             "site_path": None, "d_sae": 48}
    assert reads.previous_labels(store) == {0: "a", 1: ""}
