"""The pages about the atlas as a whole: the map (index), the dead features, and what the atlas was built from."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from markupsafe import Markup

from atlas.config import FVU_WARNING
from atlas.site.model import SiteModel
from atlas.site.pages.common import Chrome, Link, Stat, make_chrome
from atlas.site.safe import fmt, pct, script_json
from atlas.site.urls import SiteUrls


@dataclass(frozen=True)
class LevelList:
    level: int
    title: str
    clusters: tuple[tuple[Link, int], ...]


@dataclass(frozen=True)
class IndexPage:
    chrome: Chrome
    stats: tuple[Stat, ...]
    warnings: tuple[str, ...]
    levels: tuple[LevelList, ...]
    config_json: Markup
    n_alive: int
    n_dead: int
    n_features: int
    dead_href: str


@dataclass(frozen=True)
class DeadPage:
    """Features that never fired on the corpus: left off the map and out of the clusters, listed here."""

    chrome: Chrome
    n_tokens: str
    features: tuple[Link, ...]


@dataclass(frozen=True)
class AboutPage:
    chrome: Chrome
    provenance: tuple[Stat, ...]
    reconstruction: tuple[Stat, ...]
    stage_times: tuple[Stat, ...]
    versions: tuple[Stat, ...]
    config_text: str
    warnings: tuple[str, ...]
    compare: Link | None = None  # the comparison page, titled with the previous version's name


def _recon_stats(info: dict) -> tuple[Stat, ...]:
    fvu = info.get("fvu")
    return (
        Stat("FVU", fmt(fvu, 3), f"fraction of variance unexplained, on {fmt(info.get('recon_tokens'))} tokens"),
        Stat("L0", fmt(info.get("l0"), 4), "active features per token"),
        Stat("dead", pct(info.get("dead_share")) if info.get("dead_share") is not None else "–",
             "of features silent on that sample"),
        Stat("tokens", fmt(info.get("n_tokens")), "in the corpus"),
    )


def site_warnings(info: dict) -> tuple[str, ...]:
    """The build's warnings, after one about the SAE's reconstruction when it is poor."""
    out = [str(w) for w in (info.get("warnings") or [])]
    fvu = info.get("fvu")
    if isinstance(fvu, (int, float)) and fvu > FVU_WARNING:
        out.insert(0, f"The SAE explains little of this layer: FVU is {fvu:.3g} (above {FVU_WARNING:g}). "
                      "Check the hook, the SAE's input normalisation and the model before trusting these features.")
    return tuple(out)


def build_index_page(model: SiteModel, urls: SiteUrls, scripts: tuple[str, ...], js_config: dict) -> IndexPage:
    links = urls.at(urls.index)
    chrome = make_chrome(model, links, "Map", scripts)
    levels = []
    for lev in range(model.n_levels):
        cl = sorted((c for c in model.clusters.values() if c.level == lev), key=lambda c: (-c.size, c.cluster_id))
        title = "Regions" if lev == 0 else f"Level {lev} clusters"
        levels.append(LevelList(lev, title, tuple((Link(c.name, links.cluster(c.cluster_id)), c.size) for c in cl)))
    n_alive = int(model.alive.sum())
    return IndexPage(
        chrome=chrome, stats=_recon_stats(model.info), warnings=site_warnings(model.info),
        levels=tuple(levels), config_json=script_json(js_config),
        n_alive=n_alive, n_dead=model.n_features - n_alive, n_features=model.n_features,
        dead_href=links.dead,
    )


def build_dead_page(model: SiteModel, urls: SiteUrls) -> DeadPage:
    links = urls.at(urls.dead)
    dead = np.flatnonzero(~np.asarray(model.alive, dtype=bool))
    return DeadPage(
        chrome=make_chrome(model, links, "Dead features"), n_tokens=fmt(model.info.get("n_tokens")),
        features=tuple(Link(f"#{int(f)}", links.feature(int(f))) for f in dead),
    )


def build_about_page(model: SiteModel, urls: SiteUrls) -> AboutPage:
    info = model.info
    links = urls.at(urls.about)
    chrome = make_chrome(model, links, "About this atlas")

    def s(key: str, name: str) -> Stat:
        v = info.get(key)
        return Stat(name, "–" if v is None else (v if isinstance(v, str) else json.dumps(v, sort_keys=True)))

    prov = (
        s("model", "model"), s("hook", "hook"), s("hook_description", "hook description"),
        s("sae_path", "SAE path"), s("sae_hash", "SAE hash"), s("sae_format", "SAE format"),
        s("sae_convention", "SAE convention"), s("recon_candidates", "conventions measured (FVU)"),
        s("hook_candidates", "hooks measured (FVU)"), s("d_in", "d_in"), s("d_sae", "d_sae"),
        s("corpus", "corpus"), s("corpus_hash", "corpus hash"), s("n_tokens", "tokens"),
        s("n_sequences", "sequences"), s("cluster_basis", "cluster basis"),
        s("basis_scores", "basis scores"), s("has_unembedding", "has unembedding"),
        s("built_at", "built at"),
    )
    recon = _recon_stats(info) + (Stat("reconstruction tokens", fmt(info.get("recon_tokens"))),)
    times = tuple(Stat(k, f"{float(v):.1f} s") for k, v in sorted((info.get("stage_times") or {}).items()) if isinstance(v, (int, float)))
    versions = tuple(Stat(k, str(v)) for k, v in sorted((info.get("versions") or {}).items()))
    return AboutPage(
        chrome=chrome, provenance=prov, reconstruction=recon, stage_times=times, versions=versions,
        config_text=json.dumps(info.get("config") or {}, indent=2, sort_keys=True),
        warnings=site_warnings(info),
        compare=Link(f"Changes since {model.comparison.title}", links.compare)
        if model.comparison is not None else None,
    )
