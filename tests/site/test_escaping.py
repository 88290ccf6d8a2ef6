"""Hostile corpus text reaches every page as text: never as markup, never able to end a script."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from atlas.site import render_site
from synthetic_store import EVIL_TOKENS, make_synthetic_store


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("evil")
    store = make_synthetic_store(root / "a.duckdb", n_features=30, evil_text=True)
    out = root / "site"
    render_site(store, out)
    return out


def _html_pages(site: Path):
    return sorted(site.rglob("*.html"))


def test_no_raw_markup_from_data_in_any_page(site):
    for page in _html_pages(site):
        html = page.read_text(encoding="utf-8")
        assert "alert(1)</script>" not in html, page
        assert "<img src=x" not in html, page
        assert "onerror=" not in html.replace("onerror=alert(1)&gt;", ""), page
        # the only <script> elements are ours: a src or the JSON config
        for tag in re.findall(r"<script[^>]*>", html):
            assert re.fullmatch(r'<script src="[^"]+">|<script id="atlas-config" type="application/json">', tag), tag


def test_evil_tokens_shown_as_text(site):
    html = (site / "features" / "0" / "0.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&amp;amp;" in html  # a literal '&amp;' token is shown as written
    assert "↵" in html  # newlines are visible, not line breaks
    assert "&#34;quoted&#34;" in html or "&quot;quoted&quot;" in html
    assert "\u2028" not in html


def test_data_scripts_hold_no_angle_brackets_or_line_separators(site):
    scripts = list((site / "data").glob("*.js")) + list((site / "features").rglob("*.examples.js"))
    assert len(scripts) > 25  # the data files and an example script per alive feature
    for path in scripts:
        text = path.read_text(encoding="utf-8")
        assert "<" not in text and ">" not in text and "\u2028" not in text, path


def test_evil_tokens_reach_the_example_rows_as_data(site):
    """The rows' token texts come from data/tokens.js, which holds every hostile token unchanged."""
    (path,) = (site / "data").glob("tokens-*.js")
    text = path.read_text(encoding="utf-8")
    head, tail = "window.ATLAS_TOKENS=", ";\n"
    assert text.startswith(head) and text.endswith(tail)
    shown = set(json.loads(text[len(head):-len(tail)]).values())
    assert {"<script>alert(1)</script>", "</script>", "<img src=x onerror=alert(1)>", " &amp;"} <= shown
    assert "↵" in shown and not any("\u2028" in t for t in shown)


def test_no_inline_event_handlers(site):
    for page in _html_pages(site):
        html = page.read_text(encoding="utf-8")
        assert not re.search(r"<[^>]+\son[a-z]+\s*=", html), page


def test_evil_strings_exist_in_the_store():
    assert "<script>alert(1)</script>" in EVIL_TOKENS and "</script>" in EVIL_TOKENS
