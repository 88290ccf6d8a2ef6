"""Several SAEs in one atlas: each [[versions]] entry runs the SAE stages into a store schema of its own.

The model, the tokens and the activation cache belong to the main build and are shared, so a version costs its
SAE encode, harvest and analysis, not a model pass (when activations are cached; see `[atlas] cache_max_gb`).
Each version is compared with the main SAE by the same matching as `[compare]`, its site lives in
`versions/<slug>/` beside the main one, and with `[analysis] shared_layout` all versions share one map.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from urllib.parse import quote

import numpy as np
import pandas as pd

from atlas.config import CompareSection, SaeSection, VersionSection, primary_version_name, version_slug
from atlas.corpus import TokenizedCorpus
from atlas.pipeline import STAGE_VERSIONS, Build, _hash
from atlas.store import MAIN, Store

SITE_FOLDER = "versions"
_SHARED = ("model", "hook", "acts", "acts_key", "tokens_key", "corpus_hash", "cache_dir", "store_path")


def schema_name(slug: str) -> str:
    return "version_" + slug.replace("-", "_")


@dataclass(frozen=True)
class VersionEntry:
    """One SAE of the atlas as the site lists it: the main one first."""

    name: str
    slug: str
    schema: str
    site_path: str  # the version's site root, relative to the main site's root ('' for the main SAE)

    def as_info(self) -> dict:
        return {"name": self.name, "slug": self.slug, "schema": self.schema, "site_path": self.site_path}


def version_entries(cfg) -> list[VersionEntry]:
    main = primary_version_name(cfg)
    out = [VersionEntry(main, version_slug(main), MAIN, "")]
    for v in cfg.versions:
        slug = version_slug(v.name)
        out.append(VersionEntry(v.name, slug, schema_name(slug), f"{SITE_FOLDER}/{slug}"))
    return out


class VersionBuild(Build):
    """The SAE stages of one extra version, on the main build's model, tokens and activations."""

    def __init__(self, parent: Build, version: VersionSection, entry: VersionEntry):
        cfg = copy.deepcopy(parent.cfg)
        cfg.sae = SaeSection(path=version.path, format=version.format, hook=parent.cfg.sae.hook, name=version.name)
        cfg.compare = CompareSection()
        cfg.versions = []
        # Labels files and imported explanations name the main SAE's feature numbers.
        cfg.analysis.labels_file = ""
        cfg.analysis.explanations = []
        super().__init__(cfg, parent.log, parent.progress)
        self.report = parent.report
        self.entry = entry
        for attr in _SHARED:
            setattr(self, attr, getattr(parent, attr, None))
        self.site_dir = parent.site_dir / entry.site_path
        if getattr(parent, "hook_choice", None):
            self.hook_choice = parent.hook_choice

    def _stage(self, name: str, status: str, t0: float, note: str = "") -> None:
        super()._stage(f"{name}@{self.entry.slug}", status, t0, note)

    def run_version(self, corpus: TokenizedCorpus, store: Store, main: Build, started: float) -> str:
        self.store = store.in_schema(self.entry.schema)
        try:
            self._load_sae()
            self._check_sae_fits()
            self._reconstruction(corpus)
            harvest_hash = self._harvest(corpus)
            self._logits()
            analysis_hash = self._analysis(harvest_hash)
            compare_hash = self._compare_with_main(main, analysis_hash)
            self._record_run(started, corpus)
            self.store.set_info(title=f"{self.cfg.atlas.title}: {self.entry.name}")
        finally:
            self.store.close()
            self.store = None
        return _hash(harvest_hash, analysis_hash, compare_hash)

    def _compare_with_main(self, main: Build, analysis_hash: str) -> str:
        """Match this version's features with the main SAE's, as `[compare]` does with a previous atlas."""
        from atlas.compare_stage import PreviousAtlas, run_compare

        t0 = time.perf_counter()
        feats = main.store.query("SELECT feature, alive, label FROM features ORDER BY feature")
        feats["label"] = feats["label"].astype(object).where(feats["label"].notna(), "")
        prev = PreviousAtlas(
            store_path=main.store_path, title=primary_version_name(main.cfg), sae_path=main.cfg.resolve(main.cfg.sae.path),
            sae_format=main.sae.format, sae_hash=main.sae.content_hash(), d_in=main.sae.d_in,
            site_path=quote("/".join([".."] * len(self.entry.site_path.split("/")))), features=feats,
        )
        key = _hash(prev.fingerprint(), self.sae.content_hash(), analysis_hash, STAGE_VERSIONS["compare"])
        if self.store.stage_hash("compare") == key:
            self._stage("compare", "reused", t0)
            return key
        note, warnings = run_compare(self.store, prev, self.sae.W_dec.float().numpy(), self.sae.d_in, prev.title,
                                     old_sae=main.sae)
        for w in warnings:
            self._warn(w)
        self.store.record_stage("compare", key, time.perf_counter() - t0)
        self._stage("compare", "computed", t0, note)
        return key


def build_versions(main: Build, corpus: TokenizedCorpus, started: float, main_hash: str) -> str:
    """Build every [[versions]] entry into its schema, drop schemas of versions no longer listed, and lay out
    the shared map when asked; returns a hash of everything the versions' pages show."""
    cfg = main.cfg
    store = main.store
    entries = version_entries(cfg)
    wanted = {e.schema for e in entries}
    for schema in store.schemas():
        if schema not in wanted:
            store.drop_schema(schema)
    listing = [e.as_info() for e in entries]
    store.set_info(version_name=entries[0].name, atlas_versions=listing if len(entries) > 1 else [])
    if len(entries) == 1:
        return ""
    hashes = [main_hash]
    decoders = {MAIN: main.sae.W_dec.float().numpy()}
    for version, entry in zip(cfg.versions, entries[1:]):
        vb = VersionBuild(main, version, entry)
        hashes.append(vb.run_version(corpus, store, main, started))
        decoders[entry.schema] = vb.sae.W_dec.float().numpy()
        with store.in_schema(entry.schema) as view:
            view.set_info(version_name=entry.name, atlas_versions=listing)
    if cfg.analysis.shared_layout:
        hashes.append(_shared_layout(main, entries, decoders, hashes))
    else:
        store.con.execute("DELETE FROM stages WHERE stage = 'shared-layout'")
    return _hash(*hashes)


def _shared_layout(main: Build, entries: list[VersionEntry], decoders: dict[str, np.ndarray], hashes: list[str]) -> str:
    """One UMAP over the unit decoder directions of every version's live features, written to each schema."""
    from atlas.analysis import umap_layout

    a = main.cfg.analysis
    t0 = time.perf_counter()
    key = _hash(hashes, a.umap_neighbors, a.umap_min_dist, a.umap_sample_above, main.cfg.atlas.seed,
                STAGE_VERSIONS["analysis"])
    store = main.store
    if store.stage_hash("shared-layout") == key:
        main._stage("shared-layout", "reused", t0)
        return key
    views = {e.schema: (store if e.schema == MAIN else store.in_schema(e.schema)) for e in entries}
    alive = {s: v.query("SELECT feature FROM features WHERE alive ORDER BY feature")["feature"].to_numpy()
             for s, v in views.items()}
    blocks = []
    for e in entries:
        w = decoders[e.schema][alive[e.schema]]
        blocks.append(w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12))
    xy, umap_t = umap_layout(np.concatenate(blocks), seed=main.cfg.atlas.seed, n_neighbors=a.umap_neighbors,
                             min_dist=a.umap_min_dist, sample_above=a.umap_sample_above)
    start = 0
    for e in entries:
        rows = alive[e.schema]
        _write_layout(views[e.schema], rows, xy[start:start + len(rows)])
        start += len(rows)
        if e.schema != MAIN:
            views[e.schema].close()
    store.record_stage("shared-layout", key, time.perf_counter() - t0, umap_t)
    main._stage("shared-layout", "computed", t0,
                f"{len(xy):,} features of {len(entries)} versions in one UMAP of decoder directions "
                f"(compile {umap_t.get('compile_s', 0):.0f} s + fit {umap_t.get('fit_s', 0):.0f} s)")
    return key


def _write_layout(store: Store, rows: np.ndarray, xy: np.ndarray) -> None:
    """Replace a version's map coordinates and move its cluster centres with them."""
    feats = store.table("features", order_by="feature")
    x = np.full(len(feats), np.nan, np.float32)
    y = np.full(len(feats), np.nan, np.float32)
    x[rows], y[rows] = xy[:, 0], xy[:, 1]
    feats = feats.assign(x=x, y=y)
    feats["cluster_id"] = feats["cluster_id"].astype("Int32")
    store.replace_table("features", feats)
    clusters = store.table("clusters", order_by="cluster_id")
    centres = store.query("SELECT m.cluster_id, avg(f.x) AS cx, avg(f.y) AS cy FROM cluster_members m "
                          "JOIN features f USING (feature) GROUP BY m.cluster_id")
    centre = pd.Series(centres["cx"].to_numpy(), index=centres["cluster_id"].to_numpy())
    clusters["x"] = clusters["cluster_id"].map(centre).astype(np.float32)
    centre = pd.Series(centres["cy"].to_numpy(), index=centres["cluster_id"].to_numpy())
    clusters["y"] = clusters["cluster_id"].map(centre).astype(np.float32)
    store.replace_table("clusters", clusters)
