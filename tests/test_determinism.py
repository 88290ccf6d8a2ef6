"""The same inputs built twice from nothing give the same store contents and a byte-identical site."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from atlas.config import load_config
from atlas.pipeline import build
from atlas.store import Store
from atlas_fixtures import workspace, write_config  # noqa: F401  (workspace: a fixture)


def _files(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _tables(path: Path) -> dict[str, list]:
    with Store(path, read_only=True) as s:
        names = s.query("SELECT table_name FROM information_schema.tables ORDER BY 1")["table_name"]
        # Row order of keyed tables follows their update history; their content is what must match.
        return {n: sorted(map(repr, s.con.execute(f"SELECT * FROM {n}").fetchall())) for n in names}


def test_two_builds_from_nothing_are_identical(workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    root = tmp_path / "atlas"
    root.mkdir()
    for f in ("model", "sae", "corpus.jsonl"):
        (root / f).symlink_to(workspace / f)
    config = write_config(root, corpus__max_tokens=1500)
    outputs = []
    for run in range(2):
        for name in ("site", "cache", "atlas.duckdb"):
            target = root / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        build(load_config(config), log=lambda *a: None, progress=False)
        kept = tmp_path / f"run{run}"
        kept.mkdir()
        shutil.move(root / "site", kept / "site")
        shutil.move(root / "atlas.duckdb", kept / "atlas.duckdb")
        with Store(kept / "atlas.duckdb", read_only=True) as s:
            s.export_parquet(kept / "parquet")
        outputs.append(kept)
    first, second = outputs
    site = _files(first / "site")
    assert len(site) > 50 and site == _files(second / "site")
    assert _files(first / "parquet") == _files(second / "parquet")
    tables = _tables(first / "atlas.duckdb")
    assert tables["features"] and tables == _tables(second / "atlas.duckdb")
    assert any("'harvest'" in r for r in tables["stages"]) and any("'analysis'" in r for r in tables["stages"])
    with Store(first / "atlas.duckdb", read_only=True) as s:
        assert set(s.query("SELECT seconds FROM stages")["seconds"]) == {0.0}  # no durations under SOURCE_DATE_EPOCH
