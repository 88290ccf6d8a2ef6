"""Several SAEs in one atlas: each [[versions]] entry runs the SAE stages into a store schema of its own.

The model, the tokens and the activation cache belong to the main build and are shared, so a version costs its
SAE encode, harvest and analysis, not a model pass (when activations are cached; see `[atlas] cache_max_gb`).
Each version is compared with the main SAE by the same matching as `[compare]`, its site lives in
`versions/<slug>/` beside the main one, and with `[analysis] shared_layout` all versions share one map.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING
from urllib.parse import quote

import numpy as np
import pandas as pd

from atlas.config import CompareSection, Config, SaeSection, VersionSection, primary_version_name, version_slug
from atlas.stages import compare, provenance
from atlas.stages.inputs import SharedInputs
from atlas.stages.run import Keyed, Outcome, SaeResult, StoreLedger, VersionRun, input_key, run_keyed
from atlas.stages.sae_fit import load_candidates
from atlas.store import MAIN, Store
from atlas.store.records import SaeVersion

if TYPE_CHECKING:
    from atlas.saes import SaeWeights

SITE_FOLDER = "versions"

# The SAE stages of one version: (shared inputs, the version, its SAE candidates, what it is compared with).
SaeStages = Callable[[SharedInputs, VersionRun, list, Callable[[], "compare.Against | None"]], SaeResult]


def schema_name(slug: str) -> str:
    return "version_" + slug.replace("-", "_")


def version_entries(cfg: Config) -> list[SaeVersion]:
    """Every SAE of the atlas as the store lists it: the main one first, then each [[versions]] entry."""
    main = primary_version_name(cfg)
    out = [SaeVersion(main, version_slug(main), MAIN, "")]
    for v in cfg.versions:
        slug = version_slug(v.name)
        out.append(SaeVersion(v.name, slug, schema_name(slug), f"{SITE_FOLDER}/{slug}"))
    return out


def version_config(cfg: Config, version: VersionSection) -> Config:
    """The main config with the version's SAE, and without what only the main SAE has."""
    return replace(
        cfg,
        sae=SaeSection(path=version.path, format=version.format, hook=cfg.sae.hook, name=version.name),
        compare=CompareSection(),
        versions=[],
        # Labels files and imported explanations name the main SAE's feature numbers.
        analysis=replace(cfg.analysis, labels_file="", explanations=[]),
    )


def against_main(shared: SharedInputs, main: VersionRun, main_sae: SaeWeights, entry: SaeVersion) -> compare.Against:
    """The main SAE as a version's previous atlas, so the version is matched against it as `[compare]` would."""
    feats = main.store.feature_states()
    feats["label"] = feats["label"].astype(object).where(feats["label"].notna(), "")
    cfg = main.cfg
    prev = compare.PreviousAtlas(
        store_path=shared.store_path, title=primary_version_name(cfg), sae_path=cfg.resolve(cfg.sae.path),
        sae_format=main_sae.format, sae_hash=main_sae.content_hash(), d_in=main_sae.d_in,
        site_path=quote("/".join([".."] * len(entry.site_path.split("/")))), features=feats,
    )
    return compare.Against(prev, prev.title, old_sae=main_sae)


def build_versions(shared: SharedInputs, main: VersionRun, main_result: SaeResult, started: float,
                   sae_stages: SaeStages) -> str:
    """Build every [[versions]] entry into its schema with `sae_stages`, drop schemas of versions no longer listed,
    and lay out the shared map when asked; returns a hash of everything the versions' pages show."""
    cfg, store = main.cfg, main.store
    entries = version_entries(cfg)
    wanted = {e.schema for e in entries}
    for schema in store.schemas():
        if schema not in wanted:
            store.drop_schema(schema)
    listing = [e.as_info() for e in entries]
    store.set_info(version_name=entries[0].name, atlas_versions=listing if len(entries) > 1 else [])
    if len(entries) == 1:
        return ""
    hashes = [main_result.analysis_key]
    decoders = {MAIN: main_result.sae.W_dec.float().numpy()}
    for version, entry in zip(cfg.versions, entries[1:]):
        run = VersionRun(version_config(cfg, version), entry, store.in_schema(entry.schema),
                         main.report.for_version(entry.slug), main.site_dir / entry.site_path)
        try:
            result = sae_stages(shared, run, load_candidates(run.cfg),
                                lambda: against_main(shared, main, main_result.sae, entry))
            provenance.record_run(shared, run, result, started)
            run.store.set_info(title=f"{run.cfg.atlas.title}: {entry.name}")
        finally:
            run.store.close()
        hashes.append(result.digest())
        decoders[entry.schema] = result.sae.W_dec.float().numpy()
        with store.in_schema(entry.schema) as view:
            view.set_info(version_name=entry.name, atlas_versions=listing)
    if cfg.analysis.shared_layout:
        hashes.append(_shared_layout(main, entries, decoders, hashes))
    else:
        store.forget_stage("shared-layout")
    return input_key(*hashes)


def _shared_layout(main: VersionRun, entries: list[SaeVersion], decoders: dict[str, np.ndarray],
                   hashes: list[str]) -> str:
    """One UMAP over the unit decoder directions of every version's live features, written to each schema."""
    from atlas.analysis import umap_layout

    a, seed, store = main.cfg.analysis, main.cfg.atlas.seed, main.store

    def compute(key: str) -> Outcome[None]:
        views = {e.schema: (store if e.schema == MAIN else store.in_schema(e.schema)) for e in entries}
        alive = {s: v.alive_features() for s, v in views.items()}
        blocks = []
        for e in entries:
            w = decoders[e.schema][alive[e.schema]]
            blocks.append(w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12))
        xy, umap_t = umap_layout(np.concatenate(blocks), seed=seed, n_neighbors=a.umap_neighbors,
                                 min_dist=a.umap_min_dist, sample_above=a.umap_sample_above)
        start = 0
        for e in entries:
            rows = alive[e.schema]
            _write_layout(views[e.schema], rows, xy[start:start + len(rows)])
            start += len(rows)
            if e.schema != MAIN:
                views[e.schema].close()
        return Outcome(note=f"{len(xy):,} features of {len(entries)} versions in one UMAP of decoder directions "
                            f"(compile {umap_t.get('compile_s', 0):.0f} s + fit {umap_t.get('fit_s', 0):.0f} s)",
                       details=umap_t)

    return run_keyed(Keyed(
        "shared-layout",
        inputs={"versions": hashes, "neighbours": a.umap_neighbors, "min_dist": a.umap_min_dist,
                "sample_above": a.umap_sample_above, "seed": seed},
        ledger=StoreLedger(store),
        compute=compute,
    ), main.report).key


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
    centres = store.cluster_centres()
    centre = pd.Series(centres["cx"].to_numpy(), index=centres["cluster_id"].to_numpy())
    clusters["x"] = clusters["cluster_id"].map(centre).astype(np.float32)
    centre = pd.Series(centres["cy"].to_numpy(), index=centres["cluster_id"].to_numpy())
    clusters["y"] = clusters["cluster_id"].map(centre).astype(np.float32)
    store.replace_table("clusters", clusters)
