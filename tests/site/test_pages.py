"""Page contexts, URL authority, writer and embedding helpers: each contract checked on its own."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import jinja2
import numpy as np
import pytest
from jinja2 import meta

from atlas.config import FVU_WARNING
from atlas.site.assets import write_assets
from atlas.site.charts import N_LEVELS, SCALE, levels_of
from atlas.site.data import thumb_coords
from atlas.site.env import DEFAULT_TEMPLATES, make_env
from atlas.site.feature_pages import FeatureJob, FeatureRenderer
from atlas.site.model import read_site_model
from atlas.site.pages import PAGES
from atlas.site.pages.cluster import build_cluster_page
from atlas.site.pages.feature import build_feature_page
from atlas.site.pages.overview import site_warnings
from atlas.site.safe import json_for_script
from atlas.site.tokens import TokenHtml, example_scripts
from atlas.site.urls import SiteUrls
from atlas.site.writer import SiteWriteError, SiteWriter
from atlas.store import reads
from atlas.store.reads import ExampleBlock
from synthetic_store import make_synthetic_store

@pytest.mark.parametrize("kind", sorted(PAGES))
def test_template_names_only_its_context_fields(kind):
    env = make_env()
    names = {f.name for f in dataclasses.fields(PAGES[kind].context)} | {"m"}  # m: the macros import
    used = set()
    for template in (PAGES[kind].template, "base.html"):
        source = (DEFAULT_TEMPLATES / template).read_text()
        used |= meta.find_undeclared_variables(env.parse(source))
    assert used <= names, f"{kind} template uses names its context lacks: {sorted(used - names)}"


def test_every_page_template_is_registered():
    """A template of its own (not a partial or the base) is a page kind: it needs its entry in PAGES."""
    templates = {p.name for p in DEFAULT_TEMPLATES.glob("*.html") if not p.name.startswith("_") and p.name != "base.html"}
    assert templates == {kind.template for kind in PAGES.values()}
    for kind in PAGES.values():
        assert dataclasses.is_dataclass(kind.context) and kind.context.__dataclass_params__.frozen


def test_poor_reconstruction_warns_above_the_configured_threshold():
    assert site_warnings({"fvu": FVU_WARNING}) == ()
    (warning,) = site_warnings({"fvu": FVU_WARNING * 1.01})
    assert f"above {FVU_WARNING:g}" in warning


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("ctx")
    store = make_synthetic_store(root / "a.duckdb", n_features=40, seed=3)
    with reads.open_for_reading(store) as s:
        model = read_site_model(s)
    urls = SiteUrls()
    write_assets(SiteWriter(root / "out"), urls, model, DEFAULT_TEMPLATES)
    return store, model, urls


def test_feature_context_contents(built):
    store, model, urls = built
    r = FeatureRenderer(FeatureJob(model, urls, DEFAULT_TEMPLATES, 5, store))
    data = r.read_range(0, 40)
    n = int(model.alive_ids[5])
    page = build_feature_page(model, urls, n, data, 5, ("static/feature.js",))
    assert page.crumbs[0].text == "atlas" and page.crumbs[-1].text == f"feature {n}"
    levels = [model.clusters[int(c.href.rsplit("/", 1)[1][:-5])].level for c in page.crumbs[1:-1]]
    assert levels == sorted(levels) and len(levels) == 3  # coarse to fine
    assert [g.title for g in page.neighbour_groups] == ["Decoder-cosine neighbours", "Co-activation neighbours"]
    assert all(g.rows.count("<tr>") == 10 for g in page.neighbour_groups)
    assert [s.title for s in page.sections] == ["Top activations", "Interval samples", "Random samples"]
    top = page.sections[0].groups[0]
    script = _script_data(bytes(data.html.examples.script(n)))
    assert top.n_examples == 20 and len(script["runs"][int(top.runs)]) == 20 and script["w"] == 5
    shown = [int(k) for s in page.sections for g in s.groups for k in g.runs.split()]
    assert sorted(shown) == list(range(len(script["runs"])))  # every run on the page once
    assert sum(g.n_examples for s in page.sections for g in s.groups) == sum(map(len, script["runs"]))
    assert page.examples_src == f"{n}.examples.js"
    assert page.logits_pos.count('<td class="lv pos">') == 10 and page.logits_neg.count('<td class="lv neg">') == 10
    assert re.match(r'<tr><td class="lt">[^<]*</td><td class="lv pos"><span class="bar" style="width:\d+%"></span>\+',
                    page.logits_pos)
    assert page.prev.href.endswith(f"{n - 1}.html") and page.next.href.endswith(f"{n + 1}.html")
    assert page.map_href == f"../../index.html#feature={n}"
    r.close()


def test_cluster_context_members_sorted(built):
    _store, model, urls = built
    cid = min(model.clusters)
    page = build_cluster_page(model, urls, cid, thumb_coords(model))
    shown = [int(f) for f in re.findall(r'<tr><td><a href="[^"]+">#(\d+)</a>', page.members)]
    dens = [model.density[f] for f in shown]
    assert dens == sorted(dens, reverse=True) and len(shown) == page.n_shown
    assert page.n_members == len(model.members[cid])
    assert page.parent is None and page.children


def test_urls_are_relative_and_sharded():
    urls = SiteUrls(shard_size=1000)
    assert urls.feature(12345) == "features/12/12345.html"
    assert urls.root_of("features/12/12345.html") == "../../"
    assert urls.at("clusters/3.html").feature(7) == "../features/0/7.html"
    assert urls.at("index.html").cluster(3) == "clusters/3.html"
    path = urls.register_asset("static/atlas.css", b"body{}")
    assert path.startswith("static/atlas-") and path.endswith(".css")
    assert urls.register_asset("static/atlas.css", b"body{}") == path
    with pytest.raises(ValueError):
        urls.register_asset("static/atlas.css", b"body{color:red}")
    with pytest.raises(KeyError):
        urls.asset("static/missing.js")


def test_page_urls_are_relative_to_their_page():
    urls = SiteUrls(shard_size=10)
    urls.register_asset("static/atlas.css", b"body{}")
    links = urls.at(urls.feature(42))
    assert links.page == "features/4/42.html" and links.root == "../../"
    assert links.index == "../../index.html" and links.compare == "../../compare.html"
    assert links.cluster(3) == "../../clusters/3.html" and links.index_with("feature=42") == "../../index.html#feature=42"
    assert links.asset("static/atlas.css") == "../../" + urls.asset("static/atlas.css")
    assert links.feature_examples(42) == "42.examples.js"
    assert urls.at(urls.index).feature_examples(42) == "features/4/42.examples.js"
    # Another atlas's site keeps the default shard size; an unknown site gives no link.
    assert links.feature_in_site("../previous%20atlas/", 1234) == "../../../previous%20atlas/features/1/1234.html"
    assert links.in_site("versions/b", urls.index) == "../../versions/b/index.html"
    assert links.in_site(None, urls.index) == "" and links.feature_in_site("", 7) == ""


def test_writer_refuses_escapes_and_duplicates(tmp_path):
    w = SiteWriter(tmp_path)
    w.write("a/b.html", "x")
    for bad in ("../evil.html", "/abs.html", "a/../../x.html", "a//b.html"):
        with pytest.raises(SiteWriteError):
            w.write(bad, "x")
    with pytest.raises(SiteWriteError):
        w.write("a/b.html", "again")
    assert w.counts.n_pages == 1 and w.counts.n_bytes == 1


def test_json_for_script_cannot_close_the_tag():
    evil = {"s": "</script><script>alert(1)</script>", "amp": "&amp;", "ls": "a\u2028b\u2029c", "nl": "\n"}
    out = json_for_script(evil)
    for bad in ("<", ">", "&", "\u2028", "\u2029"):
        assert bad not in out
    assert json.loads(out) == evil


def test_colour_scale_is_monotone_and_visible_at_low_values():
    assert levels_of(np.array([0.0]), 10.0)[0] == 0
    assert levels_of(np.array([1e-6]), 10.0)[0] == 1  # a tiny activation is still shaded
    assert levels_of(np.array([10.0]), 10.0)[0] == N_LEVELS
    lum = []
    for colour, _dark in SCALE:
        r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
        lum.append(0.2126 * r + 0.7152 * g + 0.0722 * b)
    assert lum == sorted(lum, reverse=True)
    assert lum[0] < 245  # the weakest shade differs visibly from white


def _block(rows: list[tuple[list[int], list[float], int]]) -> ExampleBlock:
    """An example block of one feature from (token ids, activations, focus) per row."""
    lengths = [len(ids) for ids, _acts, _f in rows]
    return ExampleBlock(
        feature=np.zeros(len(rows), dtype=np.int64), kind=["top"] * len(rows), bucket=np.zeros(len(rows)),
        rank=np.arange(len(rows)), value=np.array([max(a, default=np.nan) for _i, a, _f in rows]),
        focus=np.array([f for *_x, f in rows]), offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        token_ids=np.array([t for ids, _a, _f in rows for t in ids], dtype=np.int64),
        acts=np.array([a for _i, acts, _f in rows for a in acts], dtype=np.float32),
    )


def _script_data(script: bytes) -> dict:
    text = script.decode()
    head, tail = "window.ATLAS_EXAMPLES=", ";\n"
    assert text.startswith(head) and text.endswith(tail)
    for bad in ("<", ">", "&", "\u2028", "\u2029"):
        assert bad not in text
    return json.loads(text[len(head):-len(tail)])


def _rows(block: ExampleBlock, vmax: np.ndarray, tokens: TokenHtml, w: int, ends=None) -> list:
    """The block's runs of rows (all of feature 0), as parsed from its script: a run per row by default."""
    ends = np.ones(len(block.value), dtype=bool) if ends is None else ends
    data = _script_data(bytes(example_scripts(block, vmax, tokens, w, ends, 0, 1).script(0)))
    assert data["w"] == w
    return data["runs"]


def test_example_row_lists_ids_focus_and_fired_tokens():
    tokens = TokenHtml({0: " a", 1: "\n", 2: "<b>"})
    ids = [0, 1, 2, 0, 1, 2, 0, 1, 2]
    acts = [0, 0, 0.5, 0, 4.0, 0, 0, 0, 1e-4]
    (run,) = _rows(_block([(ids, acts, 4)]), np.array([4.0]), tokens, 2)
    assert run == [["4", ids, 4, [2, 2, 0.5, 4, 16, 4.0, 8, 1, 0.0001]]]


def test_token_script_holds_display_text_escaped():
    tokens = TokenHtml({0: " a", 1: "\n", 2: "</script><b>&amp;", 3: "a\u2028b", 5: ""})
    text = tokens.script().decode()
    head, tail = "window.ATLAS_TOKENS=", ";\n"
    assert text.startswith(head) and text.endswith(tail)
    for bad in ("<", ">", "&", "\u2028"):
        assert bad not in text
    assert json.loads(text[len(head):-len(tail)]) == {"0": " a", "1": "↵", "2": "</script><b>&amp;", "3": "a↵b",
                                                      "5": "∅"}


VOCAB = {t: f" w{t}" for t in range(50)} | {50: "\n", 51: "</span>&", 52: ""}


def test_example_rows_match_a_token_by_token_reference():
    """The vectorised block builder against a plain loop over tokens, on random rows with edge cases."""
    rng = np.random.default_rng(0)
    rows = [([], [], 0), ([7], [0.0], 0), ([60, -1], [1.0, 0.0], 5)]  # empty, one quiet token, unknown ids
    for _ in range(40):
        n = int(rng.integers(1, 30))
        acts = np.where(rng.random(n) < 0.3, rng.uniform(0, 9, n), 0.0).astype(np.float32)
        rows.append((rng.integers(0, 53, n).tolist(), acts.tolist(), int(rng.integers(-2, n + 3))))
    vmax = rng.uniform(0, 9, len(rows))
    vmax[1] = 0.0
    block = _block(rows)
    want = [_reference_row(ids, acts, f, value, v)
            for (ids, acts, f), value, v in zip(rows, block.value.tolist(), vmax)]
    assert _rows(block, vmax, TokenHtml(VOCAB), 3) == [[w] for w in want]
    ends = rng.random(len(rows)) < 0.3
    ends[-1] = True
    cuts = np.flatnonzero(ends) + 1
    assert _rows(block, vmax, TokenHtml(VOCAB), 3, ends) == [want[a:b] for a, b in zip(np.r_[0, cuts[:-1]], cuts)]


def test_example_scripts_split_a_block_by_feature():
    block = _block([([1, 2], [0.0, 2.0], 1), ([3], [1.0], 0), ([4, 5, 6], [0.0, 0.0, 3.0], 2)])
    block.feature[:] = [10, 10, 12]  # feature 11 has no rows
    scripts = example_scripts(block, np.array([2.0, 2.0, 3.0]), TokenHtml(VOCAB), 3,
                              np.array([False, True, True]), 10, 13)
    assert bytes(scripts.script(1)) == b""
    assert _script_data(bytes(scripts.script(0)))["runs"] == [[["2", [1, 2], 1, [1, 16, 2.0]],
                                                               ["1", [3], 0, [0, 8, 1.0]]]]
    assert _script_data(bytes(scripts.script(2)))["runs"] == [[["3", [4, 5, 6], 2, [2, 16, 3.0]]]]


def _reference_row(ids: list[int], acts: list[float], focus: int, value: float, vmax: float) -> list:
    acts = np.array(acts, dtype=np.float32).astype(np.float64)
    marks = []
    for i, lev in enumerate(levels_of(acts, vmax).tolist()):
        if lev:
            marks += [i, lev, float(f"{acts[i]:.6g}")]
    focus = min(max(focus, 0), max(len(ids) - 1, 0))
    return [f"{value:.3g}" if np.isfinite(value) else "–", ids, focus, marks]
