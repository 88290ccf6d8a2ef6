"""The feature page's steering section: previews side by side with a strength control, escaped model output, and a
clear sentence (with the command) where a page has no previews."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from atlas.site import render_site
from atlas.site.steering import strength_label
from atlas.store import Store
from synthetic_store import add_steering, list_versions, make_synthetic_store

HOSTILE = "</script><img src=x onerror=alert(1)>"


def _section(html: str) -> str:
    found = re.search(r'<section class="steering" id="steering">.*?</section>', html, flags=re.S)
    assert found, "the page has no steering section"
    return found.group(0)


def _page(site: Path, n: int) -> str:
    return (site / "features" / str(n // 1000) / f"{n}.html").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def atlas(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("steer-site")
    store = make_synthetic_store(root / "a.duckdb", n_features=30, seed=4, evil_text=True, dead_share=0.2)
    with Store(store, read_only=True) as s:
        alive = s.query("SELECT feature FROM features WHERE alive ORDER BY feature")["feature"].tolist()
        dead = s.query("SELECT feature FROM features WHERE NOT alive ORDER BY feature")["feature"].tolist()
    steered = alive[:2]
    add_steering(store, steered)
    with Store(store) as s:  # one continuation whose text is hostile, as a model could write it
        vocab = s.table("vocab")
        tid = int(vocab["token_id"].max()) + 1
        s.append_rows("vocab", pd.DataFrame({"token_id": [tid], "token": [HOSTILE]}))
        frame = s.table("steering")
        pick = (frame["feature"] == steered[0]) & (frame["strength"] == 4.0) & (frame["prompt"] == 0)
        frame.loc[pick, "text"] = HOSTILE
        frame.loc[pick, "token_ids"] = pd.Series([[tid, tid]], index=frame.index[pick])
        frame.loc[pick, "acts"] = pd.Series([[1.5, 0.0]], index=frame.index[pick])
        s.replace_table("steering", frame)
    out = root / "site"
    render_site(store, out, workers=1)
    return {"site": out, "store": store, "steered": steered, "plain": alive[2], "dead": dead}


def test_steered_feature_shows_baseline_and_each_strength(atlas):
    section = _section(_page(atlas["site"], atlas["steered"][1]))
    assert section.count('<div class="steer">') == 2  # one per prompt
    assert "I think that" in section and "My &lt;b&gt;place&lt;/b&gt;" in section  # prompts are text too
    buttons = re.findall(r'<button type="button" data-s="(\d)" aria-pressed="(true|false)">([^<]+)</button>', section)
    assert [b[2] for b in buttons] == ["\u22124", "+2", "+4"]
    assert [b[0] for b in buttons if b[1] == "true"] == ["1"]  # +2, the middle of the positive strengths
    assert section.count("<h3>unsteered (0)</h3>") == 2
    assert section.count('<div class="steer-s" data-s="') == 6  # 2 prompts x 3 steered strengths
    assert re.search(r"fires on \d+ of 6 tokens, max [\d.]+|does not fire on its 6 tokens", section)
    assert "added vector norm 14" in section  # |+4| x 3.5


def test_shading_follows_the_feature_activation(atlas):
    section = _section(_page(atlas["site"], atlas["steered"][0]))
    # the hostile continuation: first token at 1.5 (shaded, with its value), second at 0 (plain)
    tok = re.search(r'<span class="tok" data-t="(\d+) \1">(.*?)</span></div>', section, flags=re.S)
    assert tok is not None
    spans = re.findall(r"<span( class=\"a\d+\" data-v=\"[^\"]+\")?>", tok.group(2))
    assert spans[0].startswith(' class="a') and 'data-v="1.5"' in spans[0] and spans[1] == ""
    assert "fires on 1 of 2 tokens, max 1.5" in section


def test_hostile_continuation_is_escaped(atlas):
    html = _page(atlas["site"], atlas["steered"][0])
    section = _section(html)
    assert "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in section
    assert "<img" not in html and HOSTILE not in html
    assert not re.search(r"<[^>]+\son[a-z]+\s*=", html)
    for tag in re.findall(r"<script[^>]*>", html):
        assert re.fullmatch(r'<script src="[^"]+">', tag), tag


def test_feature_without_previews_gives_the_command(atlas):
    section = _section(_page(atlas["site"], atlas["plain"]))
    assert "made steering previews for 2 chosen features" in section
    assert f'atlas steer ATLAS {atlas["plain"]} &#34;I think that&#34;' in section
    assert "steer-ctl" not in section


def test_dead_feature_has_no_steering_section(atlas):
    assert 'class="steering"' not in _page(atlas["site"], atlas["dead"][0])


def test_encoder_atlas_says_steering_needs_a_causal_lm(tmp_path):
    store = make_synthetic_store(tmp_path / "a.duckdb", n_features=12, seed=5, evil_text=False)
    with Store(store) as s:
        s.set_info(steering={"status": "unavailable", "note": "steering needs a causal language model that "
                             "generates text; minilm is an encoder (it has no language-model head)"})
        n = int(s.query("SELECT min(feature) AS f FROM features WHERE alive")["f"][0])
    render_site(store, tmp_path / "site", workers=1)
    section = _section(_page(tmp_path / "site", n))
    assert "steering needs a causal language model" in section and "atlas steer" not in section


def test_atlas_without_steering_says_so(tmp_path):
    store = make_synthetic_store(tmp_path / "a.duckdb", n_features=12, seed=6, evil_text=False)
    with Store(store, read_only=True) as s:
        n = int(s.query("SELECT min(feature) AS f FROM features WHERE alive")["f"][0])
    render_site(store, tmp_path / "site", workers=1)
    section = _section(_page(tmp_path / "site", n))
    assert "This atlas holds no steering previews." in section and f"atlas steer ATLAS {n}" in section


def test_version_pages_say_previews_are_for_the_main_sae(tmp_path):
    store = make_synthetic_store(tmp_path / "a.duckdb", n_features=12, seed=6, evil_text=False)
    make_synthetic_store(store, n_features=8, seed=7, evil_text=False, schema="version_wide")
    list_versions(store, [{"name": "Main", "slug": "main", "schema": "main", "site_path": ""},
                          {"name": "Wide", "slug": "wide", "schema": "version_wide", "site_path": "versions/wide"}])
    with Store(store, read_only=True) as s, s.in_schema("version_wide") as v:
        n = int(v.query("SELECT min(feature) AS f FROM features WHERE alive")["f"][0])
    render_site(store, tmp_path / "site", workers=1)
    section = _section(_page(tmp_path / "site" / "versions" / "wide", n))
    assert "made for the main SAE of this atlas (Main) only" in section and "atlas steer" not in section


def test_strength_labels():
    assert [strength_label(s) for s in (-4.0, 0.0, 2.0, 0.5, 12.0)] == ["\u22124", "0", "+2", "+0.5", "+12"]
