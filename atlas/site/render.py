"""Render the whole site from one store file into a temporary folder, then swap it into place."""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import multiprocessing
import multiprocessing.forkserver
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

from atlas.errors import AtlasError
from atlas.site import data as site_data
from atlas.site.cache import FeatureCache, keep_only
from atlas.site.charts import scale_css
from atlas.site.contexts import (
    FeatureData,
    FeatureHtml,
    build_about_page,
    build_dead_page,
    build_cluster_page,
    build_compare_page,
    build_feature_page,
    build_index_page,
    feature_html,
    template_vars,
    thumb_coords,
)
from atlas.site.env import PAGE_TEMPLATES, make_env, templates_dir
from atlas.site.marker import MARKER, marker_bytes, render_key, reusable
from atlas.site.model import SiteModel, read_site_model
from atlas.site.urls import SiteUrls
from atlas.site.writer import SiteWriter, WriteCounts
from atlas.site.versions import load_versions
from atlas.store import MAIN, reads

# Scripts each page type loads, by registered asset name (order matters: data before code).
INDEX_SCRIPTS = ("static/plotly.min.js", "data/map.js", "static/map.js", "static/search.js")
FEATURE_SCRIPTS = ("data/tokens.js", "static/feature.js")
CHUNK = 400  # features per unit of work: big enough to amortise the range queries
PARALLEL_FROM = 3000  # below this a process pool costs more than it saves
_SUMMED = ("n_pages", "n_files", "bytes")  # a site's stats that add up over its versions' sites


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
        "data/tokens.js": model.tokens.script(),
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

    def __init__(self, model: SiteModel, urls: SiteUrls, folder: Path, short_window: int, store_path: Path,
                 cache: FeatureCache | None = None, schema: str = MAIN):
        self.model, self.urls, self.short_window, self.store_path = model, urls, short_window, store_path
        self.schema = schema
        self.template = make_env(folder).get_template(PAGE_TEMPLATES["feature"])
        self.cache = cache
        self.cache_names: set[str] = set()  # the cache files this renderer used
        self._store = None

    def _open(self):
        if self._store is None:
            self._store = reads.open_for_reading(self.store_path, self.schema)
        return self._store

    def _html(self, lo: int, hi: int, histograms: bool = True) -> FeatureHtml:
        html = self.cache.load(lo, hi, histograms) if self.cache is not None else None
        if html is None:
            s = self._open()
            html = feature_html(self.model, reads.examples(s, lo, hi), reads.histograms(s, lo, hi), lo, hi,
                                self.short_window)
            if self.cache is not None:
                self.cache.save(lo, hi, html)
        if self.cache is not None:
            self.cache_names.add(self.cache.name(lo, hi))
        return html

    def read_range(self, lo: int, hi: int) -> FeatureData:
        html = self._html(lo, hi)
        s = self._open()
        return FeatureData(html=html, intervals=reads.intervals(s, lo, hi),
                           neighbours=reads.neighbours(s, lo, hi), logits=reads.logits(s, lo, hi))

    def _pages(self, lo: int, hi: int) -> tuple[list, FeatureHtml]:
        """The page contexts of features lo..hi and their example scripts, from the cache where it has them."""
        cache = self.cache
        pages = cache.load_pages(lo, hi) if cache is not None else None
        if pages is not None:
            html = self._html(lo, hi, histograms=False)  # the contexts hold them
        else:
            data = self.read_range(lo, hi)
            html = data.html
            pages = [build_feature_page(self.model, self.urls, n, data, self.short_window, FEATURE_SCRIPTS)
                     for n in range(lo, hi)]
            if cache is not None:
                cache.save_pages(lo, hi, pages)
        if cache is not None and (name := cache.pages_name(lo, hi)) is not None:
            self.cache_names.add(name)
        return pages, html

    def render_range(self, lo: int, hi: int, writer: SiteWriter) -> None:
        pages, html = self._pages(lo, hi)
        scripts = html.examples
        for n, ctx in zip(range(lo, hi), pages):
            writer.write(self.urls.feature(n), self.template.render(template_vars(ctx)))
            if ctx.examples_src:
                writer.write(self.urls.feature_examples(n), scripts.script(n - lo))

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


# ---- worker processes: each renders whole chunks and writes their pages itself ------------------
# Pages never travel back through the pool's pipe (a 16k-feature site is 0.6 GB); only paths and counts do.

_WORKER: tuple[FeatureRenderer, Path, Path | None, bool] | None = None


def _worker_init(model, urls, folder, short_window, store_path, cache, root, previous, recycled, schema) -> None:
    global _WORKER
    renderer = FeatureRenderer(model, urls, folder, short_window, store_path, cache, schema)
    _WORKER = (renderer, root, previous, recycled)


def _worker_range(bounds: tuple[int, int]) -> tuple[WriteCounts, set[str]]:
    assert _WORKER is not None
    renderer, root, previous, recycled = _WORKER
    writer = SiteWriter(root, previous, recycled)
    renderer.render_range(*bounds, writer)
    return writer.counts, renderer.cache_names


def _pool_context():
    """Workers fork from a server process that has imported the rendering code (once, and while this process
    reads the store), not from this process: it has had DuckDB threads, and forking those can deadlock."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["atlas.site.render"])
    multiprocessing.forkserver.ensure_running()
    return ctx


def _chunks(n_features: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + CHUNK, n_features)) for lo in range(0, n_features, CHUNK)]


def _render_features_here(writer: SiteWriter, model: SiteModel, urls: SiteUrls, folder: Path,
                          short_window: int, store_path: Path, cache: FeatureCache | None, schema: str) -> set[str]:
    renderer = FeatureRenderer(model, urls, folder, short_window, store_path, cache, schema)
    try:
        for lo, hi in _chunks(model.n_features):
            renderer.render_range(lo, hi, writer)
    finally:
        renderer.close()
    return renderer.cache_names


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


def _is_site(out: Path) -> bool:
    return (out / MARKER).is_file() or (out / "index.html").is_file()


_CLEANUPS: list[threading.Thread] = []


def _discard(old: Path) -> None:
    """Delete a replaced site in the background: freeing a large site's blocks takes seconds, and the new
    site is already in place. The thread is not a daemon, so the interpreter finishes it before exiting."""
    thread = threading.Thread(target=shutil.rmtree, args=(old,), kwargs={"ignore_errors": True},
                              name=f"delete {old.name}")
    thread.start()
    _CLEANUPS.append(thread)


def finish_cleanup() -> None:
    """Wait until every replaced site is deleted."""
    while _CLEANUPS:
        _CLEANUPS.pop().join()


def _check_replaceable(out: Path) -> None:
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not _is_site(out)):
        raise SiteRenderError(
            f"{out} exists and is not a rendered atlas site; choose an empty or new output folder"
        )


def _spare_path(cache_dir: Path | None, out: Path) -> Path | None:
    """Where the site this render replaces is kept, as scratch for the next render of `out`: in the cache
    folder, so the output folder's parent holds nothing but the site (none without a cache folder)."""
    if cache_dir is None:
        return None
    return Path(cache_dir).resolve() / "site-spare" / hashlib.sha256(os.fsencode(str(out))).hexdigest()[:16]


def _take_spare(spare: Path | None, tmp: Path) -> bool:
    """Move the spare site to `tmp` to render over it; False where there is none (or it lies on another
    filesystem), and `tmp` is then a new folder."""
    if spare is None:
        return False
    try:
        os.rename(spare, tmp)
    except OSError:
        return False
    return True


def _retire(old: Path, spare: Path | None) -> None:
    """Keep a replaced site as the next render's spare, or delete it where it cannot be kept. Spares of
    other output folders (an `out_dir` that has since changed) are deleted: one spare is enough."""
    if spare is not None:
        try:
            spare.parent.mkdir(parents=True, exist_ok=True)
            os.rename(old, spare)
        except OSError:  # another filesystem, or another render's spare already there
            pass
        else:
            for other in spare.parent.iterdir():
                if other.name != spare.name:
                    _discard(other)
            return
    _discard(old)


def _swap_into_place(tmp: Path, out: Path, spare: Path | None = None) -> None:
    if not out.exists():
        os.rename(tmp, out)
        return
    _check_replaceable(out)
    if _exchange(tmp, out):
        _retire(tmp, spare)  # tmp now holds the previous site
        return
    old = tmp.with_name(tmp.name + "-old")
    os.rename(out, old)
    os.rename(tmp, out)
    _retire(old, spare)


def default_workers(n_features: int) -> int:
    if n_features < PARALLEL_FROM:
        return 1
    return max(1, min(8, os.cpu_count() or 1))


def _n_workers(asked: int | None, n_features: int) -> int:
    return asked if asked is not None else default_workers(n_features)


def _render_pages(writer: SiteWriter, env, model: SiteModel, urls: SiteUrls) -> None:
    """Every page but the feature pages: the map, about, dead features, comparison and clusters."""
    js_config = dict(urls.js_config(), searchShards=_search_shard_urls(urls))
    pages = [
        (urls.index, "index", build_index_page(model, urls, INDEX_SCRIPTS, js_config)),
        (urls.about, "about", build_about_page(model, urls)),
        (urls.dead, "dead", build_dead_page(model, urls)),
    ]
    if model.comparison is not None:
        pages.append((urls.compare, "compare", build_compare_page(model, urls)))
    for path, kind, ctx in pages:
        writer.write(path, env.get_template(PAGE_TEMPLATES[kind]).render(template_vars(ctx)))
    thumbs = thumb_coords(model)
    cluster = env.get_template(PAGE_TEMPLATES["cluster"])
    for cid in sorted(model.clusters):
        writer.write(urls.cluster(cid), cluster.render(template_vars(build_cluster_page(model, urls, cid, thumbs))))


def _render_into(tmp: Path, previous: Path | None, store_path: Path, folder: Path, short_window: int,
                 workers: int | None, key: str | None, cache: FeatureCache | None, schema: str = MAIN,
                 recycled: bool = False, nested: frozenset[str] = frozenset()) -> dict:
    """Write the whole site into `tmp`, the marker last; returns the stats of the files before it and
    the names of the cache files it used. A `recycled` tmp holds an older site: what this render does not
    write is deleted, except the folders in `nested` (the versions' sites, rendered after this one)."""
    with reads.open_for_reading(store_path, schema) as store:
        if _n_workers(workers, int(reads.info(store).get("d_sae") or 0)) > 1:
            _pool_context()  # the workers' imports now run beside the model's loading
        model = read_site_model(store)
    writer = SiteWriter(tmp, previous, recycled)
    urls = SiteUrls()
    _write_assets(writer, urls, model, folder)
    if cache is not None:  # the pages' contexts link to the assets by their content-hashed paths
        cache = cache.with_pages(model.info, urls.assets())
    env = make_env(folder)
    n_workers = _n_workers(workers, model.n_features)
    chunks = _chunks(model.n_features)
    if n_workers <= 1 or len(chunks) <= 1:
        n_workers = 1
        _render_pages(writer, env, model, urls)
        cache_names = _render_features_here(writer, model, urls, folder, short_window, store_path, cache, schema)
    else:
        ctx = _pool_context()
        init = (model, urls, folder, short_window, store_path, cache, tmp, previous, recycled, schema)
        n_workers = min(n_workers, len(chunks))
        cache_names = set()
        with ctx.Pool(n_workers, initializer=_worker_init, initargs=init) as pool:
            done = pool.imap_unordered(_worker_range, chunks)
            _render_pages(writer, env, model, urls)  # while the workers start and render
            for counts, names in done:
                writer.merge(counts)
                cache_names |= names
    c = writer.counts
    stats = {"n_pages": c.n_pages, "n_files": c.n_files, "bytes": c.n_bytes, "n_features": model.n_features}
    kept = c.n_kept
    writer.prune(nested)
    writer.write(MARKER, marker_bytes(tmp, key, stats))
    return {**stats, "kept": kept, "workers": n_workers, "cache_names": cache_names}


def render_site(store_path: Path, out_dir: Path, templates_dir: Path | None = None, short_window: int = 5,
                workers: int | None = None, key: str | None = None, cache_dir: Path | None = None) -> dict:
    """Render the atlas in `store_path` to `out_dir`; returns n_pages, n_files, bytes and seconds.

    Files whose bytes are unchanged keep the previous site's file (and its timestamps); `kept` counts
    them. `key` stands for the store's content (the pipeline passes a hash of its stages' results); with
    it, a site already rendered from the same key, store facts, templates and rendering code, and still as
    it was written, is left alone (`reused` is then True), and with `cache_dir` too, each feature's example
    script, histogram and page context are kept there (about the size of the site's example scripts and
    pages together) for the next render of the same key, which then runs only the templates (see cache.py).

    With `cache_dir`, the site a render replaces is kept there too (`site-spare/`, where it is on the same
    filesystem) and the next render writes over it: overwriting a file in place costs far less than
    creating one, and no site is deleted. Its files that are unchanged are the live site's own (hard links),
    so it takes about the size of what changed."""
    t0 = time.perf_counter()
    store_path, out_dir = Path(store_path).resolve(), Path(out_dir).resolve()
    folder = _templates(templates_dir)
    with reads.open_for_reading(store_path) as store:
        full_key = None if key is None else render_key(key, reads.info(store), folder, short_window)
        versions = _versions(store)
    if full_key is not None and (kept := _reusable_with_versions(out_dir, full_key, versions)) is not None:
        return {**kept, "kept": kept.get("n_files", 0), "workers": 0, "reused": True,
                "seconds": round(time.perf_counter() - t0, 3)}
    _check_replaceable(out_dir)
    # Unique per call: a previous call's replaced site may still be being deleted under its tmp name.
    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    previous = out_dir if out_dir.is_dir() and _is_site(out_dir) else None
    cache = _cache(cache_dir, key, short_window)
    spare = _spare_path(cache_dir, out_dir)
    recycled = _take_spare(spare, tmp)
    try:
        stats = _render_into(tmp, previous, store_path, folder, short_window, workers, full_key, cache,
                             recycled=recycled, nested=frozenset(v.site_path for v in versions))
        for v in versions:
            # Each version's pages are a site of their own under versions/<slug>/, swapped in with the main one.
            before = previous / v.site_path if previous is not None and _is_site(previous / v.site_path) else None
            sub = _render_into(tmp / v.site_path, before, store_path, folder, short_window, workers,
                               _sub_key(full_key, v), _cache(cache_dir, _sub_key(key, v), short_window), v.schema,
                               recycled=recycled)
            for k in (*_SUMMED, "kept"):
                stats[k] += sub[k]
            stats["cache_names"] |= sub["cache_names"]
        _swap_into_place(tmp, out_dir, spare)
    except BaseException:
        if spare is not None:
            _retire(tmp, spare)  # half written, but as good as any spare: every render overwrites or prunes
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    cache_names = stats.pop("cache_names")
    if cache is not None:
        keep_only(cache.folder, cache_names)
    return {**stats, "reused": False, "seconds": round(time.perf_counter() - t0, 3)}


def _reusable_with_versions(out_dir: Path, full_key: str, versions: list) -> dict | None:
    """The stats of the site in `out_dir` and its versions' sites, summed, when all of them can stay."""
    kept = reusable(out_dir, full_key)
    for v in versions:
        if kept is None:
            return None
        sub = reusable(out_dir / v.site_path, _sub_key(full_key, v))
        if sub is None:
            return None
        kept = {**kept, **{k: kept.get(k, 0) + sub.get(k, 0) for k in _SUMMED}}
    return kept


def _versions(store) -> list:
    """The atlas's other SAE versions, rendered below the main site (none for an atlas of one SAE)."""
    versions = load_versions(store)
    return [] if versions is None else [v for v in versions.entries if v.site_path]


def _cache(cache_dir: Path | None, key: str | None, short_window: int) -> FeatureCache | None:
    """What the feature pages take from the store, kept for `key`; none without a key, which is what vouches
    for the store."""
    if cache_dir is None or key is None:
        return None
    return FeatureCache(Path(cache_dir) / "site-html", key, short_window)


def _sub_key(key: str | None, version) -> str | None:
    return None if key is None else f"{key}/{version.schema}"


def _templates(given: Path | None) -> Path:
    return templates_dir(given)
