"""Two atlases of the tiny GPT-2, the second SAE the first with planted changes: the comparison finds them."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch

from atlas.stages.compare import read_previous
from atlas.config import load_config
from atlas.errors import ConfigError
from atlas.lm.adapter import load_model
from atlas.pipeline import build
from atlas.store import Store
from atlas_fixtures import workspace, write_config  # noqa: F401  (workspace: a fixture)
from sae_writers import save_safetensors, write_json

HOOK = "blocks.1.hook_resid_post"
PREV_TITLE = 'Version <i>one</i> & "old"'
SPLIT_ANGLE = np.deg2rad(50)  # each part alone has cosine 0.64 with its source: below a one-to-one match


def planted(d: int):
    """Previous rows on orthonormal directions q0..q11; the new SAE keeps, splits, merges, drops and adds.

    Returns (W_prev, W_new, expected) with expected in the store's terms (a = previous, b = new).
    """
    q = np.linalg.qr(np.random.default_rng(7).standard_normal((d, d)))[0].T.astype(np.float64)
    c, s = np.cos(SPLIT_ANGLE), np.sin(SPLIT_ANGLE)
    prev = q[:12]
    new = [
        q[1], c * q[5] + s * q[12], q[14], (q[7] + q[8]) / np.sqrt(2), q[0], c * q[6] + s * q[13], q[3],
        c * q[5] - s * q[12], (q[9] + q[10]) / np.sqrt(2), q[15], q[2], c * q[6] - s * q[13], q[4],
    ]
    expected = {
        "matched": {(1, 0), (0, 4), (3, 6), (2, 10), (4, 12)},
        "split": {(5, 1), (5, 7), (6, 5), (6, 11)},
        "merge": {(7, 3), (8, 3), (9, 8), (10, 8)},
        "new": {(-1, 2), (-1, 9)},
        "vanished": {(11, -1)},
    }
    # Row norms differ on purpose: the comparison reads directions only.
    scale = np.linspace(0.5, 1.5, 16)
    return prev * scale[:12, None], np.stack(new) * scale[:13, None], expected


def write_dictionary(folder: Path, W_dec: np.ndarray) -> Path:
    """A ReLU SAELens SAE whose encoder rows are its decoder rows: each feature fires where x points its way."""
    W = torch.from_numpy(np.ascontiguousarray(W_dec, dtype=np.float32))
    F, d = W.shape
    save_safetensors(folder / "sae_weights.safetensors", {
        "W_enc": W.T.contiguous(), "b_enc": torch.zeros(F), "W_dec": W, "b_dec": torch.zeros(d)})
    write_json(folder / "cfg.json", {
        "architecture": "standard", "d_in": d, "d_sae": F, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": True, "normalize_activations": "none",
        "metadata": {"sae_lens_version": "6.0.0", "hook_name": HOOK, "prepend_bos": False},
    })
    return folder


def _config(root: Path, **overrides) -> Path:
    return write_config(root, corpus__max_tokens=1500, analysis__cluster_levels=[2, 4], **overrides)


def _quiet_build(path: Path):
    return build(load_config(path), log=lambda *a: None, progress=False)


@pytest.fixture(scope="module")
def pair(workspace, tmp_path_factory):
    top = tmp_path_factory.mktemp("compare")
    d = load_model(workspace / "model", HOOK).d_hook
    W_prev, W_new, expected = planted(d)
    roots = {}
    for name, W, extra in (("prev", W_prev, {"atlas__title": PREV_TITLE}),
                           ("new", W_new, {"compare__with_store": "../prev/atlas.duckdb"})):
        root = top / name
        root.mkdir()
        for f in ("model", "corpus.jsonl"):
            (root / f).symlink_to(workspace / f)
        write_dictionary(root / "sae", W)
        roots[name] = root
        report = _quiet_build(_config(root, **extra))
    return roots["prev"], roots["new"], expected, report


def test_planted_features_are_all_alive(pair):
    prev, new, _, _ = pair
    for root in (prev, new):
        with Store(root / "atlas.duckdb", read_only=True) as s:
            assert s.query("SELECT bool_and(alive) AS ok FROM features")["ok"][0], root


def test_stored_matches_recover_the_planted_changes(pair):
    prev, new, expected, report = pair
    assert {s.name: s.status for s in report.stages}["compare"] == "computed"
    with Store(new / "atlas.duckdb", read_only=True) as s:
        rows = s.table("version_matches")
        versions = s.table("versions")
        info = s.info()
        names = s.table("previous_features", order_by="feature")
    found = {k: set(zip(g["a"].tolist(), g["b"].tolist())) for k, g in rows.groupby("kind")}
    assert found == expected
    matched = rows[rows["kind"] == "matched"]
    assert np.allclose(matched["cosine"], 1.0, atol=1e-5)
    splits = rows[rows["kind"] == "split"]
    assert np.allclose(splits["cosine"], np.cos(SPLIT_ANGLE), atol=1e-5)
    assert np.allclose(splits["score"], 1.0, atol=1e-5)
    assert info["compare_counts"] == {"matched": 5, "split": 2, "merge": 2, "new": 2, "vanished": 1,
                                      "dead_a": 0, "dead_b": 0}
    v = versions.iloc[0]
    assert (v["role"], v["title"], v["site_path"], int(v["d_sae"])) == ("previous", PREV_TITLE, "../../prev/site", 12)
    assert len(names) == 12 and names["label"].notna().all()


def _links(page: Path) -> list[str]:
    return re.findall(r'href="([^"#]+)', page.read_text(encoding="utf-8"))


def _target(page: Path, href: str) -> Path:
    return Path(posixpath.normpath(posixpath.join(page.parent.as_posix(), unquote(href))))


def test_compare_page_and_feature_notes_link_both_atlases(pair):
    prev, new, _, _ = pair
    site = new / "site"
    page = site / "compare.html"
    html = page.read_text(encoding="utf-8")
    assert "Version &lt;i&gt;one&lt;/i&gt; &amp; &#34;old&#34;" in html and "<i>one</i>" not in html
    links = _links(page)
    assert "../../prev/site/features/0/11.html" in links  # the vanished feature, on the previous site
    assert "features/0/9.html" in links  # a new feature, here
    assert "../../prev/site/index.html" in links
    for href in links:
        assert _target(page, href).is_file(), href
    for other in (site / "index.html", site / "about.html"):
        assert "compare.html" in _links(other), other

    notes = {
        4: ("matched to", ["../../../../prev/site/features/0/0.html"], "cosine 1.00"),
        7: ("split from", ["../../../../prev/site/features/0/5.html"], "cosine 0.64"),
        3: ("merged from", ["../../../../prev/site/features/0/7.html", "../../../../prev/site/features/0/8.html"], ""),
        9: ("new in this version", [], ""),
    }
    for n, (text, hrefs, detail) in notes.items():
        fp = site / "features" / "0" / f"{n}.html"
        m = re.search(r'<p class="version">(.*?)</p>', fp.read_text(encoding="utf-8"))
        assert m, n
        assert m.group(1).startswith("In Version &lt;i&gt;one") and text in m.group(1) and detail in m.group(1)
        note_links = re.findall(r'href="([^"]+)"', m.group(1))
        assert note_links == hrefs + ["../../compare.html"], n
        for href in note_links:
            assert _target(fp, href).is_file(), href


def test_unchanged_rebuild_reuses_the_comparison(pair):
    _, new, _, _ = pair
    report = _quiet_build(new / "atlas.toml")
    status = {s.name: s.status for s in report.stages}
    assert status["compare"] == "reused" and status["analysis"] == "reused"
    assert (new / "site" / "compare.html").is_file()


def test_a_missing_previous_store_or_sae_is_a_clear_error(pair, tmp_path):
    prev, new, _, _ = pair
    with pytest.raises(ConfigError, match=r"nowhere\.duckdb does not exist.*with_store"):
        _quiet_build(_config(new, compare__with_store="nowhere.duckdb"))
    _config(new, compare__with_store="../prev/atlas.duckdb")  # later tests read the config as built

    copy = tmp_path / "copy.duckdb"
    copy.write_bytes((prev / "atlas.duckdb").read_bytes())
    with Store(copy) as s:
        s.set_info(sae_path_abs=str(tmp_path / "moved-away"))
    with pytest.raises(ConfigError, match="moved-away.*gone"):
        read_previous(copy, new / "atlas.duckdb", new / "site")


def test_dropping_the_setting_removes_the_comparison(pair, tmp_path):
    _, new, _, _ = pair
    try:
        _quiet_build(_config(new))
        assert not (new / "site" / "compare.html").exists()
        assert "compare.html" not in (new / "site" / "index.html").read_text(encoding="utf-8")
        with Store(new / "atlas.duckdb", read_only=True) as s:
            assert s.count("version_matches") == 0 and s.stage_hash("compare") is None
    finally:
        _quiet_build(_config(new, compare__with_store="../prev/atlas.duckdb"))
