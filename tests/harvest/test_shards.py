"""Sharded harvests merged in the store equal one pass: shard partial tables, the SQL merge, the sharded build."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest

from atlas.config import HarvestSection, config_from_dict, load_config
from atlas.errors import ConfigError, DimensionError
from atlas.harvest import Harvester, HarvestResult
from atlas.harvest.grid import NO_GRID
from atlas.pipeline import build
from atlas.store import Store
from atlas.store.partials import PREFIX, HarvestPartials
from atlas_fixtures import workspace, write_config  # noqa: F401  (workspace: a fixture)

SEED = 11
N_SHARDS = 4
SILENT = 0  # fires only in the last shard
DEAD = 1  # never fires
COARSE = 2  # fires 64 times stronger in shard 1, so that shard's grid is coarser than the others'


class Stream:
    """Sparse codes of sequences of varied lengths (gaps in the global token index, ties, negative noise),
    split by sequence into N_SHARDS contiguous shards."""

    def __init__(self, n_features: int = 64, n_seqs: int = 100, seed: int = 3):
        rng = np.random.default_rng(seed)
        lengths = rng.integers(1, 50, n_seqs)
        n = int(lengths.sum())
        self.seq = np.repeat(np.arange(n_seqs), lengths).astype(np.int64)
        gaps = np.repeat(rng.integers(0, 4, n_seqs), lengths)
        self.gidx = (np.arange(n) + np.cumsum(gaps) + 500).astype(np.int64)
        rate = rng.choice([0.01, 0.05, 0.2, 0.5], n_features, p=[0.3, 0.3, 0.25, 0.15])
        vals = rng.exponential(1.0, (n, n_features)) * rng.uniform(0.5, 10.0, n_features)
        coarse = rng.random(n_features) < 0.3
        vals[:, coarse] = np.ceil(vals[:, coarse] * 4) / 4  # ties for the (key, index) rule
        acts = np.where(rng.random((n, n_features)) < rate, vals, 0.0).astype(np.float32)
        acts[rng.random(acts.shape) < 0.01] *= -1
        self.shards = np.array_split(np.arange(n_seqs), N_SHARDS)
        shard_of_row = np.repeat(np.repeat(np.arange(N_SHARDS), [len(s) for s in self.shards]), lengths)
        acts[shard_of_row != N_SHARDS - 1, SILENT] = 0
        acts[:, DEAD] = 0
        acts[shard_of_row == 1, COARSE] *= 64
        self.acts = acts
        self.n_features = n_features

    def batches(self, seqs: np.ndarray, tokens_per_batch: int = 200):
        rows = np.flatnonzero(np.isin(self.seq, seqs))
        cut = np.flatnonzero(np.diff(self.seq[rows])) + 1  # batches end at sequence boundaries
        start = 0
        for end in [*cut, len(rows)]:
            if end - start >= tokens_per_batch or end == len(rows):
                r = rows[start:end]
                yield self.acts[r], self.gidx[r], self.seq[r]
                start = end


def harvest(stream: Stream, cfg: HarvestSection, seqs: np.ndarray) -> Harvester:
    h = Harvester(stream.n_features, cfg, seed=SEED)
    for a, g, s in stream.batches(seqs):
        h.update(a, g, s)
    return h


def merge_in_store(path: Path, shards: list[Harvester], cfg: HarvestSection) -> Harvester:
    with Store(path) as store:
        partials = HarvestPartials(store, "run")
        for i, h in enumerate(shards):
            partials.write(i, h.partial_frames())
        return Harvester.from_partial(partials.merge(), cfg, seed=SEED)


def assert_same(r1: HarvestResult, r2: HarvestResult) -> None:
    """Every array equal, NaN where NaN (windows included); co-activation as the same sparse matrix."""
    for fld in fields(HarvestResult):
        a, b = getattr(r1, fld.name), getattr(r2, fld.name)
        if fld.name == "coact":
            assert (a != b).nnz == 0 and np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
        else:
            np.testing.assert_array_equal(a, b, err_msg=fld.name)


@pytest.fixture(scope="module")
def stream() -> Stream:
    return Stream()


@pytest.fixture(scope="module")
def cfg() -> HarvestSection:
    return HarvestSection(top_k=6, window=3, n_intervals=5, per_interval=3, n_random=4, hist_bins=10,
                          coact_top=4, coact_keep=5)


@pytest.fixture(scope="module")
def one_pass(stream, cfg) -> HarvestResult:
    return harvest(stream, cfg, np.unique(stream.seq)).finalize()


@pytest.fixture(scope="module")
def shards(stream, cfg) -> list[Harvester]:
    return [harvest(stream, cfg, seqs) for seqs in stream.shards]


def test_store_merge_of_four_shards_equals_one_pass(shards, cfg, one_pass, tmp_path):
    merged = merge_in_store(tmp_path / "partials.duckdb", shards, cfg)
    assert_same(one_pass, merged.finalize())
    assert np.isnan(one_pass.top_windows).any() and (one_pass.top_index >= 0).any()


def test_store_merge_of_bounded_coactivation_equals_numpy_merge(stream, cfg, tmp_path):
    bounded = replace(cfg, coact_dense_max=0)
    parts = [harvest(stream, bounded, seqs) for seqs in stream.shards]
    merged = merge_in_store(tmp_path / "partials.duckdb", parts, bounded).finalize()
    reference = harvest(stream, bounded, stream.shards[0])
    errors_before = reference._coact.err.copy()
    for h in parts[1:]:
        reference.merge(h)
    # The summaries overflowed while merging, so the merge's cut (not only a sum) is what is compared.
    assert (reference._coact.err > errors_before + sum(h._coact.err for h in parts[1:])).any()
    assert not merged.coact_exact
    assert_same(reference.finalize(), merged)


def test_partial_tables_round_trip_one_harvester(shards, cfg):
    for h in shards:
        assert_same(h.finalize(), Harvester.from_partial(h.partial_frames(), cfg, seed=SEED).finalize())


def test_writing_a_shard_again_replaces_it(shards, cfg, one_pass, tmp_path):
    with Store(tmp_path / "partials.duckdb") as store:
        partials = HarvestPartials(store, "run")
        partials.write(0, shards[1].partial_frames())  # a wrong first attempt at shard 0
        for i, h in enumerate(shards):
            partials.write(i, h.partial_frames())
        partials.write(2, shards[2].partial_frames())  # a rerun after a crash
        assert partials.finished() == [0, 1, 2, 3]
        merged = Harvester.from_partial(partials.merge(), cfg, seed=SEED)
    assert_same(one_pass, merged.finalize())


def test_features_that_never_fire_in_a_shard_leave_no_rows(shards, one_pass):
    for i, h in enumerate(shards):
        fired = set(h.partial_frames().tables["features"].column("feature").to_pylist())
        assert DEAD not in fired
        assert (SILENT in fired) == (i == N_SHARDS - 1)
        assert fired == set(np.flatnonzero(h.count > 0))
    assert one_pass.count[DEAD] == 0 and np.isnan(one_pass.top_vals[DEAD]).all()
    assert one_pass.count[SILENT] > 0 and (one_pass.top_index[SILENT] >= 0).any()


def test_a_coarser_shard_grid_moves_the_others_bins(shards, cfg, one_pass, tmp_path):
    exps = [h._exp[COARSE] for h in shards]
    assert NO_GRID not in exps and exps[1] >= max(exps[0], exps[2], exps[3]) + 5
    # Merged in the opposite order, the coarse shard arrives after finer ones have already been placed.
    merged = merge_in_store(tmp_path / "partials.duckdb", shards[::-1], cfg).finalize()
    assert_same(one_pass, merged)


def test_partials_of_another_run_are_discarded(shards, tmp_path):
    with Store(tmp_path / "partials.duckdb") as store:
        HarvestPartials(store, "old run").write(0, shards[0].partial_frames())
        assert HarvestPartials(store, "old run").finished() == [0]
        assert HarvestPartials(store, "new run").finished() == []


def test_a_partial_of_another_layout_is_refused(shards, cfg):
    with pytest.raises(DimensionError, match="was the \\[harvest\\] config changed"):
        Harvester.from_partial(shards[0].partial_frames(), replace(cfg, top_k=cfg.top_k + 1), seed=SEED)


# ---- the build with [harvest] shards ----------------------------------------------------------------------

_COMPARED = {"features": "feature", "examples": "feature, kind, bucket, rank", "histograms": "feature, bin",
             "intervals": "feature, bucket", "coactivation": "ALL"}


def _build(workspace: Path, root: Path, log=None, **overrides) -> Path:
    for name in ("model", "sae", "corpus.jsonl"):
        if not (root / name).exists():
            (root / name).symlink_to(workspace / name)
    build(load_config(write_config(root, **overrides)), log=log or (lambda *a: None), progress=False)
    return root / "atlas.duckdb"


def _assert_same_tables(a: Path, b: Path) -> None:
    with Store(a, read_only=True) as x, Store(b, read_only=True) as y:
        for table, order in _COMPARED.items():
            q = f"SELECT * FROM {table} ORDER BY {order}"
            assert x.query(q).equals(y.query(q)), table
        assert x.info()["n_tokens"] == y.info()["n_tokens"]
        assert y.query(f"SELECT * FROM information_schema.tables WHERE table_name LIKE '{PREFIX}%'").empty


@pytest.fixture(scope="module")
def one_pass_store(workspace, tmp_path_factory) -> Path:
    return _build(workspace, tmp_path_factory.mktemp("one-pass"))


def test_a_sharded_build_writes_the_same_tables(workspace, one_pass_store, tmp_path):
    sharded = _build(workspace, tmp_path, harvest__shards=3)
    _assert_same_tables(one_pass_store, sharded)


def test_a_stopped_sharded_build_resumes_at_the_first_unfinished_shard(workspace, one_pass_store, tmp_path,
                                                                        monkeypatch):
    written = []
    real_write = HarvestPartials.write

    def write_then_stop(self, shard, partial):
        if len(written) == 2:
            raise KeyboardInterrupt("stopped during shard 3")
        real_write(self, shard, partial)
        written.append(shard)

    monkeypatch.setattr(HarvestPartials, "write", write_then_stop)
    # Without an activation cache the shards run the model on their own sequences (shortest first).
    settings = {"harvest__shards": 3, "atlas__cache_max_gb": 0.0}
    with pytest.raises(KeyboardInterrupt):
        _build(workspace, tmp_path, **settings)
    monkeypatch.setattr(HarvestPartials, "write", real_write)
    log: list[str] = []
    _build(workspace, tmp_path, log=log.append, **settings)
    assert written == [0, 1]
    assert any("resuming at shard 3 of 3" in line for line in log), log
    _assert_same_tables(one_pass_store, tmp_path / "atlas.duckdb")


def test_shards_must_be_at_least_one():
    assert config_from_dict({"harvest": {"shards": 4}}).harvest.shards == 4
    with pytest.raises(ConfigError, match=r"\[harvest\] shards must be at least 1"):
        config_from_dict({"harvest": {"shards": 0}})
