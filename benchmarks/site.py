"""Site rendering at scale: build time, page weights, site size, in-browser map load and search latency.

    .venv/bin/python benchmarks/site.py --sizes 16000,100000

Stores are synthetic (tests/synthetic_store.py). Above --full-up-to features each feature keeps fewer
examples (10 top, 5x2 interval, 4 random, ±8 tokens) so the 100k site fits a laptop disk; the figures
say which was used.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from atlas.site import render_site  # noqa: E402
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="16000,100000")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out"))
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--full-up-to", type=int, default=20000)
    ap.add_argument("--keep", action="store_true", help="keep the stores and sites")
    a = ap.parse_args()
    for n in [int(s) for s in a.sizes.split(",") if s]:
        print(json.dumps(run(n, Path(a.out), a.workers, a.full_up_to, a.keep), indent=2), flush=True)


if __name__ == "__main__":
    main()
