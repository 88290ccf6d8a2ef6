"""Site rendering at scale: build time, page weights, site size, in-browser map load and search latency.

    .venv/bin/python benchmarks/site.py --sizes 16000,100000
    .venv/bin/python benchmarks/site.py --rebuild 16384 [--profile]

Stores are synthetic (tests/helpers/synthetic_store.py). Above --full-up-to features each feature keeps fewer
examples (10 top, 5x2 interval, 4 random, ±8 tokens) so the 100k site fits a laptop disk; the figures
say which was used.

--rebuild renders one site several times, as the pipeline does (with a key and a cache folder): cold; with
nothing changed (the same key, so the site is reused); after a one-byte change to base.html (every page
rendered and rewritten), first into new files, then (--repeat K more times, alternating the templates) over
the spare site the previous render left in the cache folder; with nothing changed but no key (every page
rendered and compared, over the spare); and a template change with no cache folder (new files, the replaced
site deleted). Each row gives the seconds, pages/s, files rewritten and kept, files whose mtime changed, how
long deleting a replaced site took afterwards (it runs in the background), the 1-minute load average before
and after, and the CPU cost of creating one empty file beside the site just before. A last row creates the
same files with no rendering at all: the disk's floor under a render into new files.
--profile adds where the CPU time of a render goes, measured in this process on a few blocks of feature
pages.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "helpers"))

from atlas.site import render_site  # noqa: E402
from atlas.site.env import DEFAULT_TEMPLATES  # noqa: E402
from atlas.site.publish import finish_cleanup  # noqa: E402
from synthetic_store import make_synthetic_store  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update"]
QUERIES = ["water", "time", "the", "region", "zzzz-none", "ing", "1999", "friend", "#42", "president"]


def _index_weight(site: Path) -> dict:
    html = (site / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"#?]+\.(?:js|css))"', html)
    assets = {r: (site / r).stat().st_size for r in refs}
    search = sum(p.stat().st_size for p in (site / "data").glob("search*.js"))
    return {"index_html": len(html.encode()), "loaded_at_start": len(html.encode()) + sum(assets.values()),
            "assets": assets, "search_shards_lazy": search}


def _browser(site: Path) -> dict:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"skipped": "playwright missing"}
    if not os.path.exists(CHROMIUM):
        return {"skipped": f"{CHROMIUM} missing"}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = b.new_page(viewport={"width": 1300, "height": 850})
        t0 = time.perf_counter()
        page.goto((site / "index.html").as_uri())
        page.wait_for_selector('body[data-map-ready="1"]', timeout=300_000)
        map_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        page.evaluate("() => new Promise(r => ATLAS.searchReady(r))")
        shards_s = time.perf_counter() - t1
        times = page.evaluate(
            """(qs) => { const out = []; for (let k = 0; k < 3; k++) for (const q of qs) out.push(ATLAS.searchQuery(q).ms); return out; }""",
            QUERIES,
        )
        b.close()
    return {"map_ready_s": round(map_s, 2), "search_shards_load_s": round(shards_s, 2),
            "search_ms_median": round(statistics.median(times), 2), "search_ms_max": round(max(times), 2)}


def run(n: int, out: Path, workers: int | None, full_up_to: int, keep: bool) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    store = out / f"synthetic-{n}.duckdb"
    site = out / f"site-{n}"
    full = n <= full_up_to
    shape = {} if full else dict(n_top=10, n_intervals=5, per_interval=2, n_random=4, window=8)
    t0 = time.perf_counter()
    make_synthetic_store(store, n_features=n, evil_text=False, **shape)
    store_s = time.perf_counter() - t0
    stats = render_site(store, site, workers=workers)
    feature_pages = sorted((site / "features").rglob("*.html"), key=lambda p: p.stat().st_size)
    sizes = [p.stat().st_size for p in feature_pages]
    row = {
        "features": n, "examples": "full (20 top, 10x5 interval, 10 random, ±16)" if full else "reduced " + json.dumps(shape),
        "store_build_s": round(store_s, 1), "render_s": stats["seconds"], "workers": stats["workers"],
        "pages": stats["n_pages"], "pages_per_s": round(stats["n_pages"] / stats["seconds"], 1),
        "site_mb": round(stats["bytes"] / 1e6, 1),
        "feature_page_kb_median": round(statistics.median(sizes) / 1e3, 1),
        "feature_page_kb_max": round(max(sizes) / 1e3, 1),
        "index": _index_weight(site),
    }
    row["browser"] = _browser(site)
    if not keep:
        shutil.rmtree(site, ignore_errors=True)
        store.unlink(missing_ok=True)
    return row


def _mtimes(site: Path) -> dict[str, int]:
    return {str(p.relative_to(site)): p.stat().st_mtime_ns for p in site.rglob("*") if p.is_file()}


def _edited_templates(out: Path) -> Path:
    """A copy of the templates whose base.html (so every page) has one more comment."""
    folder = out / "templates-edited"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(DEFAULT_TEMPLATES, folder)
    with open(folder / "base.html", "a", encoding="utf-8") as f:
        f.write("<!-- edited -->\n")
    return folder


def _create_cost(near: Path, n: int = 500) -> float:
    """Microseconds of CPU to create one empty file in a new folder beside `near`. On this machine's ext4
    (no journal) it runs from about 30 µs to 1 ms: new files skip every inode freed in the last minutes, so
    it grows with what was deleted lately (this probe's own files too). A render into new files creates
    16,795 pages at 16k features; one over the spare site creates none."""
    folder = near.with_name(near.name + "-probe")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    t0 = time.process_time()
    for k in range(n):
        os.close(os.open(folder / str(k), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666))
    cost = (time.process_time() - t0) / n * 1e6
    shutil.rmtree(folder, ignore_errors=True)
    return round(cost)


def _timed_render(name: str, store: Path, site: Path, workers: int | None, **kw) -> dict:
    # Each render starts on a settled disk: the previous run's writes and its deleted site flushed, as they
    # are by the time anyone rebuilds by hand. Without this, the first files a render creates wait on them.
    os.sync()
    create_us = _create_cost(site)
    before = _mtimes(site) if site.exists() else {}
    load0 = os.getloadavg()[0]
    stats = render_site(store, site, workers=workers, **kw)
    t0 = time.perf_counter()
    finish_cleanup()
    cleanup = time.perf_counter() - t0
    after = _mtimes(site)
    return {
        "run": name, "seconds": stats["seconds"], "pages": stats["n_pages"],
        "pages_per_s": round(stats["n_pages"] / stats["seconds"], 1), "reused": stats["reused"],
        "files": stats["n_files"], "rewritten": stats["n_files"] - stats["kept"], "kept": stats["kept"],
        "mtime_changed": sum(before.get(k) != v for k, v in after.items()),
        "old_site_deleted_after_s": round(cleanup, 2), "workers": stats["workers"],
        "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2), "file_create_us": create_us,
    }


def write_floor(site: Path, scratch: Path) -> dict:
    """Creating the site's files alone, of the same sizes and in the same folders, in one process: no rendering
    at all, so no render into new files can beat it on this disk (a render over the spare site can)."""
    files = [(p.relative_to(site), p.stat().st_size) for p in sorted(site.rglob("*")) if p.is_file()]
    shutil.rmtree(scratch, ignore_errors=True)
    os.sync()
    total = sum(size for _, size in files)
    blob = os.urandom(max((size for _, size in files), default=0))
    t0 = time.perf_counter()
    for rel, size in files:
        path = scratch / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.write(blob[:size])
    seconds = time.perf_counter() - t0
    shutil.rmtree(scratch, ignore_errors=True)
    return {"run": "creating the same files, no rendering", "seconds": round(seconds, 3), "files": len(files),
            "mb": round(total / 1e6, 1), "mb_per_s": round(total / 1e6 / seconds, 1)}


def _cpu(fn, *args):
    t0 = time.process_time()
    out = fn(*args)
    return out, time.process_time() - t0


def profile_render(store: Path, site: Path, templates: Path, chunks: int = 3) -> dict:
    """CPU seconds of each part of a render, in this process: the parent's work once, then the feature
    pages of a few chunks (the best chunk per part, as ms per page), written next to `site` (new files) and
    compared with it as a re-render does. Parts marked "(cached)" are what a render with the cache of an
    earlier render of the same store skips; it reads the page contexts back instead."""
    from atlas.site import feature_pages as F
    from atlas.site import render as R
    from atlas.site.assets import FEATURE_SCRIPTS, write_assets
    from atlas.site.env import make_env
    from atlas.site.feature_data import FeatureData, feature_html
    from atlas.site.pages import template_vars
    from atlas.site.pages.feature import build_feature_page
    from atlas.site.marker import listing_digest
    from atlas.site.model import read_site_model
    from atlas.site.urls import SiteUrls
    from atlas.site.writer import SiteWriter
    from atlas.store import reads

    scratch = site.with_name(site.name + "-profile")
    shutil.rmtree(scratch, ignore_errors=True)
    parent: dict[str, float] = {}
    with reads.open_for_reading(store) as s:
        model, parent["read site model"] = _cpu(read_site_model, s)
    urls, writer = SiteUrls(), SiteWriter(scratch, site)
    _, parent["assets"] = _cpu(write_assets, writer, urls, model, templates)
    _, parent["index, about, cluster pages"] = _cpu(R.render_other_pages, writer, make_env(templates), model, urls)
    _, parent["marker listing"] = _cpu(listing_digest, site)
    renderer = F.FeatureRenderer(F.FeatureJob(model, urls, templates, 5, store))
    s = reads.open_for_reading(store)
    best: dict[str, float] = {}
    step = max(1, model.n_features // (chunks + 1) // F.CHUNK) * F.CHUNK
    for lo in range(step, step * (chunks + 1), step):
        hi = min(lo + F.CHUNK, model.n_features)
        (block, hist), t_read = _cpu(lambda: (reads.examples(s, lo, hi), reads.histograms(s, lo, hi)))
        html, t_html = _cpu(feature_html, model, block, hist, lo, hi, 5)
        data, t_other = _cpu(lambda: FeatureData(html, reads.intervals(s, lo, hi), reads.neighbours(s, lo, hi),
                                                 reads.logits(s, lo, hi)))
        ctxs, t_ctx = _cpu(lambda: [build_feature_page(model, urls, n, data, 5, FEATURE_SCRIPTS) for n in range(lo, hi)])
        pickled = pickle.dumps(ctxs, protocol=pickle.HIGHEST_PROTOCOL)
        _, t_unpickle = _cpu(pickle.loads, pickled)
        pages, t_jinja = _cpu(lambda: [renderer.template.render(template_vars(c)) for c in ctxs])

        def write() -> None:
            for n, page, ctx in zip(range(lo, hi), pages, ctxs):
                writer.write(urls.feature(n), page)
                if ctx.examples_src:
                    writer.write(urls.feature_examples(n), data.html.examples.script(n - lo))

        _, t_write = _cpu(write)
        for name, t in (("store reads: examples, histograms (cached)", t_read),
                        ("example scripts and histograms (cached)", t_html),
                        ("store reads: other tables (cached)", t_other), ("page contexts (cached)", t_ctx),
                        ("page contexts read back from the cache", t_unpickle), ("Jinja", t_jinja),
                        ("compare, write", t_write)):
            best[name] = min(best.get(name, float("inf")), t / (hi - lo))
    s.close()
    shutil.rmtree(scratch, ignore_errors=True)
    per_page = {k: round(v * 1000, 3) for k, v in best.items()}
    read_back = "page contexts read back from the cache"
    uncached = sum(v for k, v in best.items() if k != read_back)  # a render with no cache to read from
    cached = sum(v for k, v in best.items() if k == read_back or "(cached)" not in k)  # a template change
    return {"run": "profile (CPU, this process)", "parent_s": {k: round(v, 2) for k, v in parent.items()},
            "feature_page_ms": per_page, "feature_page_ms_uncached": round(uncached * 1000, 3),
            "feature_page_ms_cached": round(cached * 1000, 3),
            "feature_pages_cpu_s_uncached": round(uncached * model.n_features, 1),
            "feature_pages_cpu_s_cached": round(cached * model.n_features, 1)}


def rebuild(n: int, out: Path, workers: int | None, keep: bool, profile: bool, repeat: int = 0) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    store, site = out / f"synthetic-{n}.duckdb", out / f"rebuild-{n}"
    make_synthetic_store(store, n_features=n, evil_text=False)
    cache = out / f"cache-{n}"  # as the pipeline's cache_dir
    for path in (site, cache):
        shutil.rmtree(path, ignore_errors=True)
    edited = _edited_templates(out)
    key = "synthetic store"  # stands in for the pipeline's hash of the store's content
    rows = [
        _timed_render("cold", store, site, workers, key=key, cache_dir=cache),
        _timed_render("unchanged, same key (reused)", store, site, workers, key=key, cache_dir=cache),
        # The first template change after a cold build creates every page; from the next one on, the render
        # writes over the spare site (the one replaced last time) kept in the cache folder.
        _timed_render("base.html changed (first, new files)", store, site, workers, templates_dir=edited, key=key,
                      cache_dir=cache),
    ]
    templates: Path | None = edited
    for k in range(repeat + 1):  # the disk's time varies a lot from one minute to the next
        templates = None if templates is edited else edited
        rows.append(_timed_render(f"base.html changed ({k + 2}, over the spare)", store, site, workers, key=key,
                                  cache_dir=cache, templates_dir=templates))
    rows += [
        _timed_render("unchanged, no key (all rendered, over the spare)", store, site, workers,
                      templates_dir=templates, cache_dir=cache),
        _timed_render("base.html changed, no cache folder (new files, old site deleted)", store, site, workers,
                      templates_dir=None if templates is edited else edited, key=key),
    ]
    rows[0]["html_cache_mb"] = round(sum(p.stat().st_size for p in (cache / "site-html").iterdir()) / 1e6, 1)
    rows.append(write_floor(site, out / f"write-floor-{n}"))
    if profile:
        rows.append(profile_render(store, site, edited))
    if not keep:
        for path in (site, edited, cache):
            shutil.rmtree(path, ignore_errors=True)
        store.unlink(missing_ok=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="16000,100000")
    ap.add_argument("--rebuild", type=int, default=None, metavar="N",
                    help="time render-only rebuilds of an N-feature site instead")
    ap.add_argument("--profile", action="store_true", help="with --rebuild: where a render's time goes")
    ap.add_argument("--repeat", type=int, default=0, metavar="K",
                    help="with --rebuild: K more template-change renders over the spare site, alternating the "
                         "two templates")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out"))
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--full-up-to", type=int, default=20000)
    ap.add_argument("--keep", action="store_true", help="keep the stores and sites")
    a = ap.parse_args()
    if a.rebuild:
        for row in rebuild(a.rebuild, Path(a.out), a.workers, a.keep, a.profile, a.repeat):
            print(json.dumps(row), flush=True)
        return
    for n in [int(s) for s in a.sizes.split(",") if s]:
        print(json.dumps(run(n, Path(a.out), a.workers, a.full_up_to, a.keep), indent=2), flush=True)


if __name__ == "__main__":
    main()
