"""Render the whole site from one store file into a scratch folder, then swap it into place."""

from __future__ import annotations

import time
from pathlib import Path

from atlas.site.assets import INDEX_SCRIPTS, search_shard_paths, write_assets
from atlas.site.cache import FeatureCache, keep_only
from atlas.site.data import thumb_coords
from atlas.site.env import make_env, templates_dir
from atlas.site.feature_pages import FeatureJob, n_workers, pool_context, render_feature_pages
from atlas.site.marker import MARKER, marker_bytes, render_key, reusable
from atlas.site.model import SiteModel, read_site_model
from atlas.site.pages import PAGES, template_vars
from atlas.site.pages.cluster import build_cluster_page
from atlas.site.pages.compare import build_compare_page
from atlas.site.pages.overview import build_about_page, build_dead_page, build_index_page
from atlas.site.publish import (
    abandon,
    check_replaceable,
    is_site,
    scratch_for,
    spare_path,
    swap_into_place,
    take_spare,
)
from atlas.site.urls import SiteUrls
from atlas.site.versions import load_versions
from atlas.site.writer import SiteWriter
from atlas.store import MAIN, reads
from atlas.store.records import SaeVersion

_SUMMED = ("n_pages", "n_files", "bytes")  # a site's stats that add up over its versions' sites


def render_other_pages(writer: SiteWriter, env, model: SiteModel, urls: SiteUrls) -> None:
    """Every page but the feature pages: the map, about, dead features, comparison and clusters."""
    js_config = dict(urls.js_config(), searchShards=search_shard_paths(urls))
    pages = [
        (urls.index, "index", build_index_page(model, urls, INDEX_SCRIPTS, js_config)),
        (urls.about, "about", build_about_page(model, urls)),
        (urls.dead, "dead", build_dead_page(model, urls)),
    ]
    if model.comparison is not None:
        pages.append((urls.compare, "compare", build_compare_page(model, urls)))
    for path, kind, ctx in pages:
        writer.write(path, env.get_template(PAGES[kind].template).render(template_vars(ctx)))
    thumbs = thumb_coords(model)
    cluster = env.get_template(PAGES["cluster"].template)
    for cid in sorted(model.clusters):
        writer.write(urls.cluster(cid), cluster.render(template_vars(build_cluster_page(model, urls, cid, thumbs))))


def _render_into(tmp: Path, previous: Path | None, store_path: Path, folder: Path, short_window: int,
                 workers: int | None, key: str | None, cache: FeatureCache | None, schema: str = MAIN,
                 recycled: bool = False, nested: frozenset[str] = frozenset()) -> dict:
    """Write the whole site into `tmp`, the marker last; returns the stats of the files before it and
    the names of the cache files it used. A `recycled` tmp holds an older site: what this render does not
    write is deleted, except the folders in `nested` (the versions' sites, rendered after this one)."""
    with reads.open_for_reading(store_path, schema) as store:
        if n_workers(workers, int(reads.info(store).get("d_sae") or 0)) > 1:
            pool_context()  # the workers' imports now run beside the model's loading
        model = read_site_model(store)
    writer = SiteWriter(tmp, previous, recycled)
    urls = SiteUrls()
    write_assets(writer, urls, model, folder)
    if cache is not None:  # the pages' contexts link to the assets by their content-hashed paths
        cache = cache.with_pages(model.info, urls.assets())
    env = make_env(folder)
    job = FeatureJob(model, urls, folder, short_window, store_path, cache, schema)
    n_used, cache_names = render_feature_pages(job, writer, n_workers(workers, model.n_features),
                                               meanwhile=lambda: render_other_pages(writer, env, model, urls))
    c = writer.counts
    stats = {"n_pages": c.n_pages, "n_files": c.n_files, "bytes": c.n_bytes, "n_features": model.n_features}
    kept = c.n_kept
    writer.prune(nested)
    writer.write(MARKER, marker_bytes(tmp, key, stats))
    return {**stats, "kept": kept, "workers": n_used, "cache_names": cache_names}


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
    check_replaceable(out_dir)
    tmp = scratch_for(out_dir)
    previous = out_dir if out_dir.is_dir() and is_site(out_dir) else None
    cache = _cache(cache_dir, key, short_window)
    spare = spare_path(cache_dir, out_dir)
    recycled = take_spare(spare, tmp)
    try:
        stats = _render_into(tmp, previous, store_path, folder, short_window, workers, full_key, cache,
                             recycled=recycled, nested=frozenset(v.site_path for v in versions))
        for v in versions:
            # Each version's pages are a site of their own under versions/<slug>/, swapped in with the main one.
            before = previous / v.site_path if previous is not None and is_site(previous / v.site_path) \
                else None
            sub = _render_into(tmp / v.site_path, before, store_path, folder, short_window, workers,
                               _sub_key(full_key, v), _cache(cache_dir, _sub_key(key, v), short_window), v.schema,
                               recycled=recycled)
            for k in (*_SUMMED, "kept"):
                stats[k] += sub[k]
            stats["cache_names"] |= sub["cache_names"]
        swap_into_place(tmp, out_dir, spare)
    except BaseException:
        abandon(tmp, spare)
        raise
    cache_names = stats.pop("cache_names")
    if cache is not None:
        keep_only(cache.folder, cache_names)
    return {**stats, "reused": False, "seconds": round(time.perf_counter() - t0, 3)}


def _reusable_with_versions(out_dir: Path, full_key: str, versions: list[SaeVersion]) -> dict | None:
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


def _versions(store) -> list[SaeVersion]:
    """The atlas's other SAE versions, rendered below the main site (none for an atlas of one SAE)."""
    versions = load_versions(store)
    return [] if versions is None else [v for v in versions.entries if v.site_path]


def _cache(cache_dir: Path | None, key: str | None, short_window: int) -> FeatureCache | None:
    """What the feature pages take from the store, kept for `key`; none without a key, which is what vouches
    for the store."""
    if cache_dir is None or key is None:
        return None
    return FeatureCache(Path(cache_dir) / "site-html", key, short_window)


def _sub_key(key: str | None, version: SaeVersion) -> str | None:
    return None if key is None else f"{key}/{version.schema}"


def _templates(given: Path | None) -> Path:
    return templates_dir(given)
