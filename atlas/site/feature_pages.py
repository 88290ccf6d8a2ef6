"""Writing the feature pages, one block of features at a time, in this process or in a pool of workers."""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from atlas.site.assets import FEATURE_SCRIPTS
from atlas.site.cache import FeatureCache
from atlas.site.env import make_env
from atlas.site.feature_data import FeatureData, FeatureHtml, feature_html
from atlas.site.model import SiteModel
from atlas.site.pages import PAGES, template_vars
from atlas.site.pages.feature import build_feature_page
from atlas.site.urls import SiteUrls
from atlas.site.writer import SiteWriter, WriteCounts
from atlas.store import MAIN, reads

CHUNK = 400  # features per unit of work: big enough to amortise the range queries
PARALLEL_FROM = 3000  # below this a process pool costs more than it saves


@dataclass(frozen=True)
class FeatureJob:
    """What rendering any block of one site's feature pages needs: sent once to each worker."""

    model: SiteModel
    urls: SiteUrls
    folder: Path  # the templates
    short_window: int
    store_path: Path
    cache: FeatureCache | None = None
    schema: str = MAIN


class FeatureRenderer:
    """Renders feature pages for a range of features; one per process, with its own store handle."""

    def __init__(self, job: FeatureJob):
        self.job = job
        self.model, self.urls, self.short_window, self.cache = job.model, job.urls, job.short_window, job.cache
        self.template = make_env(job.folder).get_template(PAGES["feature"].template)
        self.cache_names: set[str] = set()  # the cache files this renderer used
        self._store = None

    def _open(self):
        if self._store is None:
            self._store = reads.open_for_reading(self.job.store_path, self.job.schema)
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
                           neighbours=reads.neighbours(s, lo, hi), logits=reads.logits(s, lo, hi),
                           steering=reads.steering(s, lo, hi))

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


def default_workers(n_features: int) -> int:
    if n_features < PARALLEL_FROM:
        return 1
    return max(1, min(8, os.cpu_count() or 1))


def n_workers(asked: int | None, n_features: int) -> int:
    """The workers asked for, else as many as pay for themselves on this many features."""
    return asked if asked is not None else default_workers(n_features)


def chunks(n_features: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + CHUNK, n_features)) for lo in range(0, n_features, CHUNK)]


def pool_context():
    """Workers fork from a server process that has imported the rendering code (once, and while this process
    reads the store), not from this process: it has had DuckDB threads, and forking those can deadlock.
    Calling this early starts that server."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    multiprocessing.forkserver.ensure_running()
    return ctx


def render_feature_pages(job: FeatureJob, writer: SiteWriter, workers: int, meanwhile: Callable[[], None]
                         ) -> tuple[int, set[str]]:
    """Write every feature page and example script through `writer` (or through writers of their own on the
    same root, in `workers` processes); `meanwhile` runs here while the workers render. Returns how many
    processes rendered and the names of the cache files they used."""
    blocks = chunks(job.model.n_features)
    if workers <= 1 or len(blocks) <= 1:
        meanwhile()
        renderer = FeatureRenderer(job)
        try:
            for lo, hi in blocks:
                renderer.render_range(lo, hi, writer)
        finally:
            renderer.close()
        return 1, renderer.cache_names
    workers = min(workers, len(blocks))
    names: set[str] = set()
    init = (job, writer.root, writer.previous, writer.recycled)
    with pool_context().Pool(workers, initializer=_worker_init, initargs=init) as pool:
        done = pool.imap_unordered(_worker_range, blocks)
        meanwhile()
        for counts, used in done:
            writer.merge(counts)
            names |= used
    return workers, names


# ---- worker processes: each renders whole chunks and writes their pages itself ------------------
# Pages never travel back through the pool's pipe (a 16k-feature site is 0.6 GB); only paths and counts do.

_WORKER: tuple[FeatureRenderer, Path, Path | None, bool] | None = None


def _worker_init(job: FeatureJob, root: Path, previous: Path | None, recycled: bool) -> None:
    global _WORKER
    _WORKER = (FeatureRenderer(job), root, previous, recycled)


def _worker_range(bounds: tuple[int, int]) -> tuple[WriteCounts, set[str]]:
    assert _WORKER is not None
    renderer, root, previous, recycled = _WORKER
    writer = SiteWriter(root, previous, recycled)
    renderer.render_range(*bounds, writer)
    return writer.counts, renderer.cache_names

