"""One atlas holding two SAEs of the tiny GPT-2: the second is the first with planted changes."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

from atlas.config import load_config
from atlas.errors import ConfigError
from atlas.lm.adapter import load_model
from atlas.pipeline import build
from atlas.store import Store
from atlas_fixtures import workspace, write_config  # noqa: F401  (workspace: a fixture)
from test_compare import HOOK, planted, write_dictionary

VERSIONS = '\n[[versions]]\nname = "Second run"\npath = "sae_v2"\n'


def _write(root: Path, versions: str = VERSIONS, **overrides) -> Path:
    path = write_config(root, corpus__max_tokens=1500, analysis__cluster_levels=[2, 4], sae__name="First run",
                        **overrides)
    path.write_text(path.read_text() + versions)
    return path


def _build(path: Path):
    return build(load_config(path), log=lambda *a: None, progress=False)


@pytest.fixture(scope="module")
def atlas(workspace, tmp_path_factory):
    root = tmp_path_factory.mktemp("versions")
    for f in ("model", "corpus.jsonl"):
        (root / f).symlink_to(workspace / f)
    W1, W2, expected = planted(load_model(workspace / "model", HOOK).d_hook)
    write_dictionary(root / "sae", W1)
    write_dictionary(root / "sae_v2", W2)
    report = _build(_write(root, analysis__shared_layout=True))
    return root, expected, report


def _statuses(report) -> dict[str, str]:
    return {s.name: s.status for s in report.stages}


def test_each_version_gets_its_own_schema_and_stages(atlas):
    root, _, report = atlas
    st = _statuses(report)
    assert st["activations"] == "computed"
    for stage in ("recon-check", "harvest", "logits", "analysis", "compare"):
        assert st[f"{stage}@second-run"] == "computed", stage
    with Store(root / "atlas.duckdb", read_only=True) as s:
        assert s.schemas() == ["main", "version_second_run"]
        assert s.count("features") == 12
        main_info = s.info()
        with s.in_schema("version_second_run") as v:
            assert v.count("features") == 13
            info = v.info()
    assert [e["name"] for e in main_info["atlas_versions"]] == ["First run", "Second run"]
    assert info["version_name"] == "Second run" and main_info["version_name"] == "First run"
    assert info["sae_path"] == "sae_v2" and info["d_sae"] == 13


def test_the_version_is_matched_against_the_main_sae(atlas):
    root, expected, _ = atlas
    with Store(root / "atlas.duckdb", read_only=True, schema="version_second_run") as s:
        rows = s.table("version_matches")
        prev = s.table("versions")
    found = {k: set(zip(g["a"].tolist(), g["b"].tolist())) for k, g in rows.groupby("kind")}
    assert found == expected
    assert prev["title"].tolist() == ["First run"] and prev["site_path"].tolist() == ["../.."]


def test_shared_layout_puts_matched_features_together(atlas):
    root, expected, _ = atlas
    with Store(root / "atlas.duckdb", read_only=True) as s:
        a = s.table("features", order_by="feature")[["x", "y"]].to_numpy()
        with s.in_schema("version_second_run") as v:
            b = v.table("features", order_by="feature")[["x", "y"]].to_numpy()
        stage = s.query("SELECT stage FROM stages WHERE stage = 'shared-layout'")
    assert len(stage) == 1
    pairs = np.array(sorted(expected["matched"]))
    matched = np.linalg.norm(a[pairs[:, 0]] - b[pairs[:, 1]], axis=1)
    every = np.linalg.norm(a[:, None] - b[None, :], axis=2)
    assert np.all(matched < np.median(every))


def test_a_rebuild_reuses_every_version_stage(atlas):
    root, _, first = atlas
    again = _build(root / "atlas.toml")
    st = _statuses(again)
    for stage in ("harvest@second-run", "analysis@second-run", "compare@second-run", "shared-layout", "site"):
        assert st[stage] == "reused", stage

    def pages(report) -> str:  # "1,234 pages, 5.6 MiB": both versions' pages, rendered or reused
        return next(s.note for s in report.stages if s.name == "site").split(" pages")[0]

    assert pages(again) == pages(first)


def test_removing_a_version_drops_its_schema(atlas, tmp_path):
    root, _, _ = atlas
    copy = tmp_path / "atlas.duckdb"
    copy.write_bytes((root / "atlas.duckdb").read_bytes())
    path = _write(root, versions="", atlas__store=str(copy), atlas__out_dir=str(tmp_path / "site"))
    _build(path)
    with Store(copy, read_only=True) as s:
        assert s.schemas() == ["main"]
        assert s.info()["atlas_versions"] == []
    assert not (tmp_path / "site" / "versions").exists()
    _write(root, analysis__shared_layout=True)  # leave the module's config as it was


def test_version_names_must_differ(tmp_path):
    path = write_config(tmp_path, sae__name="v2")
    path.write_text(path.read_text() + '\n[[versions]]\nname = "V2"\npath = "other"\n')
    with pytest.raises(ConfigError, match="already used"):
        load_config(path)


def _links(html: str) -> list[str]:
    return re.findall(r'href="([^"#?]+)', html)


def test_each_version_has_its_own_pages_and_a_switcher(atlas):
    root, expected, _ = atlas
    site = root / "site"
    sub = site / "versions" / "second-run"
    assert (sub / "index.html").is_file() and (sub / "compare.html").is_file()
    assert len(list((sub / "features").rglob("*.html"))) == 13
    for page in (site / "index.html", sub / "index.html", site / "features/0/3.html", sub / "features/0/2.html"):
        html = page.read_text()
        nav = re.search(r'<nav class="versions".*?</nav>', html, re.S).group(0)
        assert "First run" in nav and "Second run" in nav
        for href in _links(html):
            assert (page.parent / unquote(href)).resolve().is_file(), (page, href)


def test_feature_pages_link_their_counterparts_both_ways(atlas):
    root, expected, _ = atlas
    site = root / "site"
    a, b = sorted(expected["matched"])[0]
    main_page = (site / f"features/0/{a}.html").read_text()
    assert "In Second run: matched to" in main_page
    assert f'versions/second-run/features/0/{b}.html' in main_page
    version_page = (site / f"versions/second-run/features/0/{b}.html").read_text()
    assert "In First run: matched to" in version_page and f'../../../../features/0/{a}.html' in version_page
    split_from = sorted({x for x, _ in expected["split"]})[0]
    parts = sorted(y for x, y in expected["split"] if x == split_from)
    page = (site / f"features/0/{split_from}.html").read_text()
    assert "In Second run: split into" in page
    assert all(f"versions/second-run/features/0/{p}.html" in page for p in parts)
    gone = next(iter(expected["vanished"]))[0]
    assert "In Second run: no counterpart" in (site / f"features/0/{gone}.html").read_text()
