"""Render the whole site from one store file into a temporary folder, then swap it into place."""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import shutil
import time
from pathlib import Path

from atlas.errors import AtlasError
from atlas.site import data as site_data
from atlas.site.charts import scale_css
from atlas.site.contexts import (
    FeatureData,
    build_about_page,
    build_dead_page,
    build_cluster_page,
    build_compare_page,
    build_feature_page,
    build_index_page,
    template_vars,
    thumb_coords,
)
from atlas.site.env import PAGE_TEMPLATES, make_env, templates_dir
from atlas.site.model import SiteModel, load_model
from atlas.site.urls import SiteUrls
from atlas.site.writer import SiteWriter
from atlas.store import reads

# Scripts each page type loads, by registered asset name (order matters: data before code).
INDEX_SCRIPTS = ("static/plotly.min.js", "data/map.js", "static/map.js", "static/search.js")
FEATURE_SCRIPTS = ("static/feature.js",)
CHUNK = 400  # features per unit of work: big enough to amortise the range queries
PARALLEL_FROM = 3000  # below this a process pool costs more than it saves


class SiteRenderError(AtlasError):
    """The site could not be written where asked."""


def _plotly_js() -> bytes:
    """The plotly.js bundled with the Python package, found without importing the package."""
    import importlib.util

    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise SiteRenderError("the plotly package is not installed; the map needs its bundled plotly.min.js")
    return (Path(list(spec.submodule_search_locations)[0]) / "package_data" / "plotly.min.js").read_bytes()


def _write_assets(writer: SiteWriter, urls: SiteUrls, model: SiteModel, folder: Path) -> None:
    static = folder / "static"
    files: dict[str, bytes] = {
        "static/atlas.css": (static / "atlas.css").read_bytes() + scale_css().encode(),
        "static/map.js": (static / "map.js").read_bytes(),
        "static/search.js": (static / "search.js").read_bytes(),
        "static/feature.js": (static / "feature.js").read_bytes(),
        "static/plotly.min.js": _plotly_js(),
        "static/mapthumb.svg": site_data.thumb_svg(model),
        "data/map.js": site_data.map_script(model),
    }
    for k, content in enumerate(site_data.search_scripts(model)):
        files[f"data/search{k}.js"] = content
    for name, content in files.items():
        writer.write(urls.register_asset(name, content), content)


def _search_shard_urls(urls: SiteUrls) -> list[str]:
    out, k = [], 0
    while True:
        try:
            out.append(urls.asset(f"data/search{k}.js"))
        except KeyError:
            return out
        k += 1


class FeatureRenderer:
    """Renders feature pages for a range of features; one per process, with its own store handle."""

    def __init__(self, model: SiteModel, urls: SiteUrls, folder: Path, short_window: int, store_path: Path):
        self.model, self.urls, self.short_window, self.store_path = model, urls, short_window, store_path
        self.template = make_env(folder).get_template(PAGE_TEMPLATES["feature"])
        self._store = None

    def render_range(self, lo: int, hi: int) -> list[tuple[str, bytes]]:
        if self._store is None:
            self._store = reads.open_for_reading(self.store_path)
        s = self._store
        data = FeatureData(
            examples=reads.examples(s, lo, hi), intervals=reads.intervals(s, lo, hi),
            histograms=reads.histograms(s, lo, hi), neighbours=reads.neighbours(s, lo, hi),
            logits=reads.logits(s, lo, hi),
        )
        out = []
        for n in range(lo, hi):
            ctx = build_feature_page(self.model, self.urls, n, data, self.short_window, FEATURE_SCRIPTS)
            out.append((self.urls.feature(n), self.template.render(template_vars(ctx)).encode("utf-8")))
        return out

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


_WORKER: FeatureRenderer | None = None


def _worker_init(model, urls, folder, short_window, store_path) -> None:
    global _WORKER
    _WORKER = FeatureRenderer(model, urls, folder, short_window, store_path)


def _worker_range(bounds: tuple[int, int]) -> list[tuple[str, bytes]]:
    assert _WORKER is not None
    return _WORKER.render_range(*bounds)


def _render_features(writer: SiteWriter, model: SiteModel, urls: SiteUrls, folder: Path, short_window: int,
                     store_path: Path, workers: int) -> None:
    chunks = [(lo, min(lo + CHUNK, model.n_features)) for lo in range(0, model.n_features, CHUNK)]
    if workers <= 1 or len(chunks) <= 1:
        renderer = FeatureRenderer(model, urls, folder, short_window, store_path)
        try:
            for lo, hi in chunks:
                for path, content in renderer.render_range(lo, hi):
                    writer.write(path, content)
        finally:
            renderer.close()
        return
    # spawn, not fork: the parent has had DuckDB threads, and forking those can deadlock.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_worker_init, initargs=(model, urls, folder, short_window, store_path)) as pool:
        for pages in pool.imap(_worker_range, chunks):
            for path, content in pages:
                writer.write(path, content)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange)
    return rc == 0


def _keep_unchanged_timestamps(tmp: Path, out: Path) -> int:
    """Give every new file whose bytes equal the old site's file that file's timestamps.

    Static hosts and sync tools that compare size and mtime then upload only what changed.
    """
    import filecmp

    kept = 0
    for new in tmp.rglob("*"):
        if not new.is_file():
            continue
        old = out / new.relative_to(tmp)
        try:
            st = old.stat()
        except OSError:
            continue
        if st.st_size == new.stat().st_size and filecmp.cmp(old, new, shallow=False):
            os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
            kept += 1
    return kept


def _swap_into_place(tmp: Path, out: Path) -> None:
    if out.is_dir() and (out / "index.html").exists():
        _keep_unchanged_timestamps(tmp, out)
    if not out.exists():
        os.rename(tmp, out)
        return
    if out.is_file() or (any(out.iterdir()) and not (out / "index.html").exists()):
        raise SiteRenderError(
            f"{out} exists and is not a rendered atlas site; choose an empty or new output folder"
        )
    if _exchange(tmp, out):
        shutil.rmtree(tmp)  # tmp now holds the previous site
        return
    old = out.with_name(out.name + f".tmp-old-{os.getpid()}")
    os.rename(out, old)
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def default_workers(n_features: int) -> int:
    if n_features < PARALLEL_FROM:
        return 1
    return max(1, min(8, os.cpu_count() or 1))


def render_site(store_path: Path, out_dir: Path, templates_dir: Path | None = None, short_window: int = 5,
                workers: int | None = None) -> dict:
    """Render the atlas in `store_path` to `out_dir`; returns n_pages, n_files, bytes and seconds."""
    t0 = time.perf_counter()
    store_path, out_dir = Path(store_path).resolve(), Path(out_dir).resolve()
    folder = _templates(templates_dir)
    tmp = out_dir.with_name(out_dir.name + f".tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        with reads.open_for_reading(store_path) as store:
            model = load_model(store)
        writer = SiteWriter(tmp)
        urls = SiteUrls()
        _write_assets(writer, urls, model, folder)
        env = make_env(folder)

        js_config = dict(urls.js_config(), searchShards=_search_shard_urls(urls))
        pages = [
            (urls.index, "index", build_index_page(model, urls, INDEX_SCRIPTS, js_config)),
            (urls.about, "about", build_about_page(model, urls)),
            (urls.dead, "dead", build_dead_page(model, urls)),
        ]
        if model.comparison is not None:
            pages.append((urls.compare, "compare", build_compare_page(model, urls)))
        thumbs = thumb_coords(model)
        pages += [
            (urls.cluster(cid), "cluster", build_cluster_page(model, urls, cid, thumbs))
            for cid in sorted(model.clusters)
        ]
        for path, kind, ctx in pages:
            writer.write(path, env.get_template(PAGE_TEMPLATES[kind]).render(template_vars(ctx)))
        n_workers = workers if workers is not None else default_workers(model.n_features)
        _render_features(writer, model, urls, folder, short_window, store_path, n_workers)
        stats = {"n_pages": writer.n_pages, "n_files": writer.n_files, "bytes": writer.n_bytes,
                 "n_features": model.n_features, "workers": n_workers}
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    return stats


def _templates(given: Path | None) -> Path:
    return templates_dir(given)
