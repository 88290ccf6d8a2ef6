"""Rendering a small synthetic atlas: links resolve, output is deterministic, swaps are atomic."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import pytest

from atlas.errors import SiteRenderError
from atlas.site import feature_pages, render_site
from atlas.site.marker import MARKER
from atlas.site.publish import finish_cleanup, spare_path
from atlas.store import reads
from atlas_fixtures import workspace, write_config  # noqa: F401  (workspace: a fixture)
from synthetic_store import make_synthetic_store

ATTR_URL = re.compile(r'\s(?:href|src|action)="([^"]*)"')


def local_targets(html: str) -> list[str]:
    return ATTR_URL.findall(html)


def resolve(page: Path, ref: str) -> Path | None:
    """The file a relative link points to, or None for a pure fragment."""
    ref = ref.split("#", 1)[0].split("?", 1)[0]
    return (page.parent / ref).resolve() if ref else None


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_synthetic_store(tmp_path_factory.mktemp("store") / "atlas.duckdb", n_features=60, seed=1)


@pytest.fixture(scope="module")
def site(store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site") / "site"
    render_site(store, out)
    return out


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_every_page_type_is_written(site):
    assert (site / "index.html").is_file()
    assert (site / "about.html").is_file()
    assert len(list((site / "features").rglob("*.html"))) == 60
    assert list((site / "clusters").glob("*.html"))
    assert len(list((site / "static").glob("plotly-*.min.js"))) == 1


def test_every_relative_link_resolves(site):
    pages = sorted(site.rglob("*.html"))
    checked = 0
    for page in pages:
        html = page.read_text(encoding="utf-8")
        for ref in local_targets(html):
            assert not re.match(r"^[a-z]+:|^//", ref), f"{page}: non-relative URL {ref!r}"
            target = resolve(page, ref)
            if target is not None:
                assert target.is_file(), f"{page.relative_to(site)} links to missing {ref}"
                checked += 1
    assert checked > 60 * 5


def test_nothing_points_outside_the_site(site):
    for path in site.rglob("*"):
        if path.suffix not in (".html", ".js", ".css", ".svg") or path.name.startswith("plotly-"):
            continue
        text = path.read_text(encoding="utf-8")
        # The SVG namespace is an identifier, not a request.
        text = text.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert not re.search(r"https?://", text), f"{path.relative_to(site)} names an outside URL"


def test_render_is_byte_identical(store, site, tmp_path):
    again = tmp_path / "again"
    render_site(store, again)
    assert _digest(again) == _digest(site)


def test_stats_are_reported(store, tmp_path):
    stats = render_site(store, tmp_path / "s")
    assert stats["n_pages"] == 60 + 3 + len(list((tmp_path / "s" / "clusters").glob("*.html")))  # index, about, dead
    files = [p for p in (tmp_path / "s").rglob("*") if p.is_file() and p.name != MARKER]
    assert stats["bytes"] == sum(p.stat().st_size for p in files) and stats["n_files"] == len(files)
    assert stats["seconds"] > 0


def test_failed_render_leaves_old_site(store, tmp_path):
    out = tmp_path / "site"
    render_site(store, out)
    before = _digest(out)
    broken = tmp_path / "broken_templates"
    broken.mkdir()
    (broken / "static").mkdir()
    with pytest.raises(Exception):
        render_site(store, out, templates_dir=broken)
    assert _digest(out) == before
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []


def test_rerender_replaces_site_in_place(store, tmp_path):
    out = tmp_path / "site"
    render_site(store, out)
    (out / "stale.html").write_text("old")
    render_site(store, out)
    assert not (out / "stale.html").exists()
    assert (out / "index.html").is_file()


def test_unchanged_files_keep_their_timestamps(store, tmp_path):
    import os

    out = tmp_path / "site"
    render_site(store, out)
    past = 1_600_000_000_000_000_000
    files = [p for p in out.rglob("*") if p.is_file()]
    for p in files:
        os.utime(p, ns=(past, past))
    changed = out / "about.html"
    changed.write_text(changed.read_text() + "<!-- edited -->")
    render_site(store, out)
    assert all((out / p.relative_to(out)).stat().st_mtime_ns == past for p in files if p != changed)
    assert changed.stat().st_mtime_ns != past


def test_refuses_to_replace_a_folder_that_is_not_a_site(store, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    with pytest.raises(SiteRenderError):
        render_site(store, out)
    assert (out / "thesis.tex").read_text() == "do not delete"


def test_feature_pages_stay_light(site):
    biggest = max(p.stat().st_size for p in (site / "features").rglob("*.html"))
    assert biggest < 300_000


def test_dead_features_are_listed_apart(store, site):
    with reads.open_for_reading(store) as s:
        dead = s.query("SELECT feature FROM features WHERE NOT alive ORDER BY feature")["feature"].tolist()
    html = (site / "dead.html").read_text()
    assert dead and all(f'>#{f}</a>' in html for f in dead)
    assert 'href="dead.html"' in (site / "index.html").read_text()


def test_dead_feature_page_says_so(store, site):
    from atlas.store import Store

    with Store(store, read_only=True) as s:
        dead = s.query("SELECT feature FROM features WHERE NOT alive ORDER BY feature")["feature"].tolist()
    assert dead, "the synthetic store should contain dead features"
    html = next((site / "features").rglob(f"{dead[0]}.html")).read_text()
    assert "This feature is dead" in html
    assert "Top activations" not in html


def test_no_unembedding_gives_a_sentence(tmp_path):
    store = make_synthetic_store(tmp_path / "a.duckdb", n_features=20, has_unembedding=False)
    out = tmp_path / "site"
    render_site(store, out)
    html = (out / "features" / "0" / "2.html").read_text()
    assert "has no unembedding" in html
    assert "promoted" not in html


def test_bad_fvu_and_warnings_raise_a_banner(tmp_path):
    store = make_synthetic_store(tmp_path / "a.duckdb", n_features=20, fvu=0.8, warnings=["hook mismatch <b>"])
    out = tmp_path / "site"
    render_site(store, out)
    html = (out / "index.html").read_text()
    assert 'class="warn"' in html
    assert "FVU is 0.8" in html
    assert "hook mismatch &lt;b&gt;" in html


def test_good_atlas_has_no_banner(site):
    assert 'class="warn"' not in (site / "index.html").read_text()


def test_interval_sections_run_high_to_low(site):
    html = (site / "features" / "0" / "3.html").read_text()
    section = html.split("<h2>Interval samples</h2>", 1)[1].split("<h2>", 1)[0]
    lows = [float(m) for m in re.findall(r"<h3>([0-9.e+-]+) – ", section)]
    assert len(lows) >= 2 and lows == sorted(lows, reverse=True)
    assert "of activations" in section
    assert html.index("Top activations") < html.index("Interval samples") < html.index("Random samples")


def test_cluster_page_links_parent_children_and_members(site):
    pages = sorted((site / "clusters").glob("*.html"), key=lambda p: int(p.stem))
    top = pages[0].read_text()
    assert "Sub-clusters" in top and "Members by density" in top
    densities = [float(x) for x in re.findall(r"<td>([0-9.e+-]+)%</td>", top)]
    assert densities == sorted(densities, reverse=True)
    leaf = pages[-1].read_text()
    assert "Part of <a href=" in leaf
    assert "svg class=\"thumb\"" in leaf


def test_about_page_has_provenance(site):
    html = (site / "about.html").read_text()
    for needle in ("blocks.6.hook_resid_post", "0123456789abcdef", "saelens", "fedcba9876543210",
                   "2025-01-02T03:04:05Z", "harvest", "duckdb"):
        assert needle in html


def test_rendering_never_imports_torch_or_the_model(store, tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path; from atlas.site import render_site; "
        f"render_site(Path({str(store)!r}), Path({str(tmp_path / 'site')!r})); "
        "bad = [m for m in ('torch', 'transformers', 'atlas.lm.adapter', 'atlas.harvest') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_sparse_store_still_renders(tmp_path):
    """A store with no clusters, labels, logits or info facts still gives a working site."""
    from atlas.store import Store

    path = make_synthetic_store(tmp_path / "a.duckdb", n_features=12)
    with Store(path) as s:
        for table in ("clusters", "cluster_members", "labels", "logits", "atlas_info", "neighbours"):
            s.con.execute(f"DELETE FROM {table}")
        s.con.execute("UPDATE features SET cluster_id = NULL, label = NULL")
    out = tmp_path / "site"
    stats = render_site(path, out)
    assert stats["n_pages"] == 12 + 3  # index, about, dead
    pages = [p.read_text() for p in (out / "features" / "0").glob("*.html")]
    assert any("Unlabelled feature" in html and "Top activations" in html for html in pages)


# ---- re-rendering: reuse, kept files, the HTML cache, workers ----------------------------------------


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def _edited_templates(tmp_path: Path, comment: str = "edited") -> Path:
    from atlas.site.env import DEFAULT_TEMPLATES

    folder = tmp_path / ("templates" if comment == "edited" else f"templates-{comment}")
    shutil.copytree(DEFAULT_TEMPLATES, folder)
    with open(folder / "base.html", "a", encoding="utf-8") as f:
        f.write(f"<!-- {comment} -->\n")
    return folder


def test_same_key_reuses_the_site_and_its_files(store, tmp_path):
    out = tmp_path / "site"
    first = render_site(store, out, key="k1")
    before = _mtimes(out)
    again = render_site(store, out, key="k1")
    assert again["reused"] and not first["reused"]
    assert again["n_pages"] == first["n_pages"] and again["bytes"] == first["bytes"]
    assert _mtimes(out) == before
    assert not render_site(store, out, key="k2")["reused"]  # another key: rendered again


def test_a_site_changed_by_hand_is_rendered_again(store, tmp_path):
    out = tmp_path / "site"
    render_site(store, out, key="k")
    want = _digest(out)
    (out / "about.html").unlink()
    (out / "features" / "0" / "stray.html").write_text("not ours")
    assert not render_site(store, out, key="k")["reused"]
    assert _digest(out) == want


@pytest.mark.parametrize("cached", [False, True], ids=["no cache folder", "cache folder (spare site)"])
def test_template_change_rewrites_only_the_pages(store, tmp_path, cached):
    out, cache = tmp_path / "site", (tmp_path / "cache" if cached else None)
    edited = _edited_templates(tmp_path)
    render_site(store, out, key="k", cache_dir=cache)
    for templates in (edited, None, edited):  # with a cache folder, the last two write over a spare site
        before = _mtimes(out)
        stats = render_site(store, out, templates_dir=templates, key="k", cache_dir=cache)
        after = _mtimes(out)
        changed = {p for p in after if after[p] != before.get(p)}
        assert not stats["reused"] and stats["kept"] == stats["n_files"] - stats["n_pages"]
        # assets and data keep their timestamps; the marker names the new templates
        assert changed == {p for p in after if p.endswith(".html")} | {MARKER}
        assert (out / "features" / "0" / "7.html").read_text().endswith("<!-- edited -->\n") == (templates == edited)
    finish_cleanup()  # a replaced site is deleted in the background where there is no cache folder
    assert sorted(p.name for p in tmp_path.iterdir()) == (["cache", "site", "templates"] if cached else
                                                          ["site", "templates"])


def _spares(cache: Path) -> list[Path]:
    return sorted((cache / "site-spare").iterdir()) if (cache / "site-spare").is_dir() else []


def test_a_render_over_the_spare_site_equals_a_fresh_one(store, tmp_path, monkeypatch):
    other = make_synthetic_store(tmp_path / "other.duckdb", n_features=40, seed=2)  # fewer pages: some go
    edited = _edited_templates(tmp_path)
    cache, out = tmp_path / "cache", tmp_path / "site"
    render_site(store, out, key="a", cache_dir=cache)
    assert _spares(cache) == []
    render_site(store, out, key="a", templates_dir=edited, cache_dir=cache)
    [spare] = _spares(cache)  # the first site, kept
    assert (spare / "features" / "0" / "59.html").is_file()
    monkeypatch.setattr(feature_pages, "CHUNK", 16)  # the workers write over the spare too
    render_site(other, out, key="b", cache_dir=cache, workers=2)
    render_site(other, tmp_path / "fresh-b", key="b", workers=1)
    assert _digest(out) == _digest(tmp_path / "fresh-b")
    render_site(store, out, key="a", templates_dir=edited, cache_dir=cache)
    render_site(store, tmp_path / "fresh-a", key="a", templates_dir=edited)
    assert _digest(out) == _digest(tmp_path / "fresh-a")
    assert _spares(cache) == [spare]
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_the_spare_site_is_never_written_through(store, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "site"
    render_site(store, out, key="a", cache_dir=cache)
    render_site(store, out, key="a", templates_dir=_edited_templates(tmp_path), cache_dir=cache)
    [spare] = _spares(cache)
    # A page of the spare also linked from elsewhere, a page that is a link, and a folder that is a link.
    os.link(spare / "features" / "0" / "7.html", tmp_path / "linked.html")
    linked = (tmp_path / "linked.html").read_bytes()
    (tmp_path / "target.html").write_text("mine")
    (spare / "about.html").unlink()
    (spare / "about.html").symlink_to(tmp_path / "target.html")
    (tmp_path / "elsewhere").mkdir()
    shutil.rmtree(spare / "clusters")
    (spare / "clusters").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (spare / "features" / "0" / "stray.html").write_text("stale")
    third = _edited_templates(tmp_path, "third")  # every page differs from the spare's and the live site's
    render_site(store, out, key="a", templates_dir=third, cache_dir=cache)
    assert (tmp_path / "linked.html").read_bytes() == linked
    assert (tmp_path / "target.html").read_text() == "mine" and not any((tmp_path / "elsewhere").iterdir())
    render_site(store, tmp_path / "fresh", key="a", templates_dir=third)
    assert _digest(out) == _digest(tmp_path / "fresh")


def test_one_spare_is_kept_per_cache_folder(store, tmp_path):
    cache, edited = tmp_path / "cache", _edited_templates(tmp_path)
    for out in (tmp_path / "first", tmp_path / "second"):  # the output folder moved
        render_site(store, out, key="a", cache_dir=cache)
        render_site(store, out, key="a", templates_dir=edited, cache_dir=cache)
        assert spare_path(cache, out.resolve()) in _spares(cache)
    finish_cleanup()
    assert _spares(cache) == [spare_path(cache, (tmp_path / "second").resolve())]


def test_a_failed_render_keeps_the_spare_and_the_site(store, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "site"
    render_site(store, out, key="a", cache_dir=cache)
    render_site(store, out, key="a", templates_dir=_edited_templates(tmp_path), cache_dir=cache)
    before = _digest(out)
    broken = tmp_path / "broken_templates"
    (broken / "static").mkdir(parents=True)
    with pytest.raises(Exception):
        render_site(store, out, templates_dir=broken, key="a", cache_dir=cache)
    assert _digest(out) == before and len(_spares(cache)) == 1
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    render_site(store, out, key="a", cache_dir=cache)
    render_site(store, tmp_path / "fresh", key="a")
    assert _digest(out) == _digest(tmp_path / "fresh")


def test_workers_write_the_same_site_as_one_process(store, tmp_path, monkeypatch):
    monkeypatch.setattr(feature_pages, "CHUNK", 16)  # four chunks of the 60 features
    stats = render_site(store, tmp_path / "parallel", workers=2)
    assert stats["workers"] == 2
    render_site(store, tmp_path / "serial", workers=1)
    assert _digest(tmp_path / "parallel") == _digest(tmp_path / "serial")


def test_html_cache_gives_the_same_pages_and_keeps_only_what_was_used(store, tmp_path):
    cache = tmp_path / "cache"
    render_site(store, tmp_path / "plain")
    render_site(store, tmp_path / "cold", key="k", cache_dir=cache)
    files = sorted((cache / "site-html").iterdir())
    assert files
    for f in files:  # a warm render must read these back, not build them again
        os.utime(f, ns=(1, 1))
    edited = _edited_templates(tmp_path)
    render_site(store, tmp_path / "warm", templates_dir=edited, key="k", cache_dir=cache)
    assert sorted((cache / "site-html").iterdir()) == files and all(f.stat().st_mtime_ns == 1 for f in files)
    render_site(store, tmp_path / "uncached", templates_dir=edited)

    def pages(site: str) -> dict[str, str]:
        return {k: v for k, v in _digest(tmp_path / site).items() if k != MARKER}  # the marker names the key

    assert pages("cold") == pages("plain") and pages("warm") == pages("uncached") != pages("plain")
    damaged = [next(f for f in files if f.name.endswith(kind)) for kind in (".html-cache", ".pages-cache")]
    sizes = [f.stat().st_size for f in damaged]
    for f, size in zip(damaged, sizes):  # a damaged file is built again
        with open(f, "r+b") as fh:
            fh.truncate(size // 2)
    render_site(store, tmp_path / "repaired", templates_dir=edited, key="k", cache_dir=cache)
    assert pages("repaired") == pages("uncached") and [f.stat().st_size for f in damaged] == sizes
    render_site(store, tmp_path / "wider", short_window=7, key="k", cache_dir=cache)
    assert not set(files) & set((cache / "site-html").iterdir())  # the old window's HTML is gone


def test_a_changed_stylesheet_is_linked_from_pages_whose_contexts_were_cached(store, tmp_path):
    cache = tmp_path / "cache"
    render_site(store, tmp_path / "cold", key="k", cache_dir=cache)
    styled = _edited_templates(tmp_path)
    with open(styled / "static" / "atlas.css", "a", encoding="utf-8") as f:
        f.write("\n.exv { color: red; }\n")
    render_site(store, tmp_path / "warm", templates_dir=styled, key="k", cache_dir=cache)
    render_site(store, tmp_path / "uncached", templates_dir=styled)
    warm = {k: v for k, v in _digest(tmp_path / "warm").items() if k != MARKER}
    assert warm == {k: v for k, v in _digest(tmp_path / "uncached").items() if k != MARKER}
    [css] = (tmp_path / "warm" / "static").glob("atlas-*.css")
    assert css.name in (tmp_path / "warm" / "features" / "0" / "7.html").read_text()


def test_a_rebuild_with_nothing_changed_keeps_the_site_and_a_template_change_renders_it(workspace, tmp_path,
                                                                                        monkeypatch):
    from atlas.config import load_config
    from atlas.pipeline import build
    from atlas.site import env

    for name in ("model", "sae", "corpus.jsonl"):
        (tmp_path / name).symlink_to(workspace / name)
    config = write_config(tmp_path, analysis__cluster_levels=[2, 4])

    def site_status() -> str:
        report = build(load_config(config), log=lambda *a: None, progress=False)
        return {s.name: s.status for s in report.stages}["site"]

    assert site_status() == "computed"
    assert list((tmp_path / "cache" / "site-html").iterdir())  # kept beside the build's other caches
    site = tmp_path / "site"
    before = _mtimes(site)
    assert site_status() == "reused"
    assert _mtimes(site) == before
    monkeypatch.setattr(env, "DEFAULT_TEMPLATES", _edited_templates(tmp_path))
    assert site_status() == "computed"
    after = _mtimes(site)
    assert (site / "index.html").read_text().endswith("<!-- edited -->\n")
    assert {p for p in after if after[p] != before.get(p)} == {p for p in after if p.endswith(".html")} | {MARKER}


def test_a_page_context_file_holding_a_pickle_is_never_run(store, tmp_path):
    import pickle

    cache = tmp_path / "cache"
    render_site(store, tmp_path / "cold", key="k", cache_dir=cache)
    witness = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(witness), "w"))

    for f in (cache / "site-html").glob("*.pages-cache"):
        body = pickle.dumps([Payload()])
        f.write_bytes(len(body).to_bytes(8, "little") + body)
    render_site(store, tmp_path / "again", key="k", cache_dir=cache)
    assert not witness.exists()
    assert _digest(tmp_path / "again") == _digest(tmp_path / "cold")


def test_the_cache_codec_builds_only_the_sites_record_types():
    # A warm render equal to an uncached one (above) is the round trip; here, what it refuses.
    from markupsafe import Markup

    from atlas.site import context_codec
    from atlas.site.pages.common import Link

    value = [Link("a <b>", "x.html"), (1, 2.5, float("nan")), {3: Markup("<i>x</i>")}, None]
    back = context_codec.loads(context_codec.dumps(value))
    assert back[0] == value[0] and isinstance(back[0], Link) and back[1][:2] == (1, 2.5) and back[1][2] != back[1][2]
    assert back[2] == {3: Markup("<i>x</i>")} and isinstance(back[2][3], Markup)
    for hostile in (b'{"@": "os:system", "v": ["true"]}', b'{"@": "atlas.site.urls:SiteUrls", "v": []}',
                    b'{"@": "builtins:eval", "v": ["1"]}'):
        with pytest.raises(context_codec.CodecError):
            context_codec.loads(hostile)
