"""The 100k-feature site: index weight and search index size (opt-in: ATLAS_SLOW=1, several minutes)."""

from __future__ import annotations

import os
import re

import pytest

from atlas.site import render_site
from synthetic_store import make_synthetic_store

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("ATLAS_SLOW") != "1", reason="set ATLAS_SLOW=1 to render a 100k-feature site"),
]


def test_100k_features_render_with_a_light_index(tmp_path):
    store = make_synthetic_store(tmp_path / "big.duckdb", n_features=100_000, evil_text=False,
                                 n_top=2, n_intervals=1, per_interval=1, n_random=1, window=4)
    site = tmp_path / "site"
    stats = render_site(store, site)
    assert stats["n_pages"] >= 100_002
    html = (site / "index.html").read_text()
    loaded = len(html.encode()) + sum(
        (site / ref).stat().st_size for ref in re.findall(r'(?:src|href)="([^"#?]+\.(?:js|css))"', html)
    )
    assert loaded < 10_000_000
    assert len(list((site / "data").glob("search*.js"))) >= 5
