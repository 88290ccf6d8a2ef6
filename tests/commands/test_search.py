"""`atlas search` on an atlas whose features' meanings are known: queries find features by what they mean, not
only by literal words, multi-word queries and misspellings work, and results are ranked by relevance."""

from __future__ import annotations

import pytest

from atlas.cli import main as cli_main
from atlas.commands.search import search, search_atlas
from atlas.config import load_config
from atlas.pipeline import build
from atlas.store import Store
from planted_atlas import write_planted, write_planted_config


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    write_planted(root)
    build(load_config(write_planted_config(root)), log=lambda *a: None, progress=False)
    return root / "atlas.duckdb"


def _rank(hits, feature):
    ranked = [h.item for h in hits if h.kind == "feature"]
    return ranked.index(feature) if feature in ranked else len(ranked)


@pytest.mark.parametrize("query, planted", [
    ("fox", 0), ("wild animals in the woods", 0), ("stock exchange", 1), ("investors and shares", 1),
    ("the weather forecast", 2), ("markte", 1),
])
def test_a_query_finds_the_feature_that_means_it_before_the_other_planted_ones(atlas, query, planted):
    with Store(atlas, read_only=True) as store:
        hits = search(store, query, limit=100)
    ranks = {f: _rank(hits, f) for f in (0, 1, 2)}
    assert ranks[planted] < min(r for f, r in ranks.items() if f != planted), (query, ranks)
    assert ranks[planted] < 5
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_misspellings_are_corrected_and_said(atlas, capsys):
    with Store(atlas, read_only=True) as store:
        result = search_atlas(store, "markte prices", limit=5)
    assert result.corrections == {"markte": "market"}
    assert cli_main(["search", str(atlas), "markte"]) == 0
    out = capsys.readouterr().out
    assert "instead of 'markte'" in out and "features/0/1.html" in out


def test_clusters_are_found_too_and_link_to_their_pages(atlas):
    with Store(atlas, read_only=True) as store:
        hits = search(store, "rain", limit=50)
    clusters = [h for h in hits if h.kind == "cluster"]
    assert clusters and all(h.page.startswith("clusters/") for h in clusters)
