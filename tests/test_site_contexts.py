"""Page contexts, URL authority, writer and embedding helpers: each contract checked on its own."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jinja2
import numpy as np
import pytest
from jinja2 import meta

from atlas.site import contexts as ctxmod
from atlas.site.charts import N_LEVELS, SCALE, level
from atlas.site.env import DEFAULT_TEMPLATES, PAGE_TEMPLATES, make_env
from atlas.site.model import load_model
from atlas.site.render import FeatureRenderer, _write_assets
from atlas.site.safe import json_for_script
from atlas.site.tokens import TokenHtml, example_line, levels_of
from atlas.site.urls import SiteUrls
from atlas.site.writer import SiteWriteError, SiteWriter
from atlas.store import reads
from synthetic_store import make_synthetic_store

CONTEXTS = {
    "index": ctxmod.IndexPage,
    "feature": ctxmod.FeaturePage,
    "cluster": ctxmod.ClusterPage,
    "about": ctxmod.AboutPage,
    "compare": ctxmod.ComparePage,
    "dead": ctxmod.DeadPage,
}


@pytest.mark.parametrize("kind", sorted(CONTEXTS))
def test_template_names_only_its_context_fields(kind):
    env = make_env()
    names = {f.name for f in dataclasses.fields(CONTEXTS[kind])} | {"m"}  # m: the macros import
    used = set()
    for template in (PAGE_TEMPLATES[kind], "base.html"):
        source = (DEFAULT_TEMPLATES / template).read_text()
        used |= meta.find_undeclared_variables(env.parse(source))
    assert used <= names, f"{kind} template uses names its context lacks: {sorted(used - names)}"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("ctx")
    store = make_synthetic_store(root / "a.duckdb", n_features=40, seed=3)
    with reads.open_for_reading(store) as s:
        model = load_model(s)
    urls = SiteUrls()
    _write_assets(SiteWriter(root / "out"), urls, model, DEFAULT_TEMPLATES)
    return store, model, urls


def test_feature_context_contents(built):
    store, model, urls = built
    r = FeatureRenderer(model, urls, DEFAULT_TEMPLATES, 5, store)
    s = reads.open_for_reading(store)
    data = ctxmod.FeatureData(reads.examples(s, 0, 40), reads.intervals(s, 0, 40), reads.histograms(s, 0, 40),
                              reads.neighbours(s, 0, 40), reads.logits(s, 0, 40))
    s.close()
    n = int(model.alive_ids[5])
    page = ctxmod.build_feature_page(model, urls, n, data, 5, ("static/feature.js",))
    assert page.crumbs[0].text == "atlas" and page.crumbs[-1].text == f"feature {n}"
    levels = [model.clusters[int(c.href.rsplit("/", 1)[1][:-5])].level for c in page.crumbs[1:-1]]
    assert levels == sorted(levels) and len(levels) == 3  # coarse to fine
    assert [g.title for g in page.neighbour_groups] == ["Decoder-cosine neighbours", "Co-activation neighbours"]
    assert all(len(g.rows) == 10 for g in page.neighbour_groups)
    assert [s.title for s in page.sections] == ["Top activations", "Interval samples", "Random samples"]
    assert len(page.sections[0].groups[0].examples) == 20
    assert page.logits_pos and page.logits_neg and page.logits_pos[0].value.startswith("+")
    assert page.prev.href.endswith(f"{n - 1}.html") and page.next.href.endswith(f"{n + 1}.html")
    assert page.map_href == f"../../index.html#feature={n}"
    r.close()


def test_cluster_context_members_sorted(built):
    _store, model, urls = built
    cid = min(model.clusters)
    page = ctxmod.build_cluster_page(model, urls, cid, ctxmod.thumb_coords(model))
    dens = [model.density[m.feature] for m in page.members]
    assert dens == sorted(dens, reverse=True)
    assert page.n_members == len(model.members[cid])
    assert page.parent is None and page.children


def test_urls_are_relative_and_sharded():
    urls = SiteUrls(shard_size=1000)
    assert urls.feature(12345) == "features/12/12345.html"
    assert urls.root_of("features/12/12345.html") == "../../"
    assert urls.href("clusters/3.html", urls.feature(7)) == "../features/0/7.html"
    assert urls.href("index.html", urls.cluster(3)) == "clusters/3.html"
    path = urls.register_asset("static/atlas.css", b"body{}")
    assert path.startswith("static/atlas-") and path.endswith(".css")
    assert urls.register_asset("static/atlas.css", b"body{}") == path
    with pytest.raises(ValueError):
        urls.register_asset("static/atlas.css", b"body{color:red}")
    with pytest.raises(KeyError):
        urls.asset("static/missing.js")


def test_writer_refuses_escapes_and_duplicates(tmp_path):
    w = SiteWriter(tmp_path)
    w.write("a/b.html", "x")
    for bad in ("../evil.html", "/abs.html", "a/../../x.html", "a//b.html"):
        with pytest.raises(SiteWriteError):
            w.write(bad, "x")
    with pytest.raises(SiteWriteError):
        w.write("a/b.html", "again")
    assert w.n_pages == 1 and w.n_bytes == 1


def test_json_for_script_cannot_close_the_tag():
    evil = {"s": "</script><script>alert(1)</script>", "amp": "&amp;", "ls": "a\u2028b\u2029c", "nl": "\n"}
    out = json_for_script(evil)
    for bad in ("<", ">", "&", "\u2028", "\u2029"):
        assert bad not in out
    assert json.loads(out) == evil


def test_colour_scale_is_monotone_and_visible_at_low_values():
    assert level(0.0, 10.0) == 0
    assert level(1e-6, 10.0) == 1  # a tiny activation is still shaded
    assert level(10.0, 10.0) == N_LEVELS
    lum = []
    for colour, _dark in SCALE:
        r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
        lum.append(0.2126 * r + 0.7152 * g + 0.0722 * b)
    assert lum == sorted(lum, reverse=True)
    assert lum[0] < 245  # the weakest shade differs visibly from white


def test_example_line_marks_focus_and_far_context():
    tokens = TokenHtml({0: " a", 1: "\n", 2: "<b>"})
    ids = [0, 1, 2, 0, 1, 2, 0, 1, 2]
    acts = np.array([0, 0, 0.5, 0, 4.0, 0, 0, 0, 1e-4], dtype=np.float32)
    html = example_line(ids, levels_of(acts, 4.0).tolist(), acts.tolist(), 4, tokens, 2)
    assert html.count('<span class="far">') == 2
    assert 'class="a16 f" data-v="4" data-t="1">↵</span>' in html
    assert "&lt;b&gt;" in html and "<b>" not in html
    assert 'class="a1" data-v="0.0001"' in html
