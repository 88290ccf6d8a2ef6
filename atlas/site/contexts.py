"""One typed context per page type: everything a template may use, and nothing else.

Templates are rendered with `StrictUndefined`, and tests check that each template names only the
fields of its context, so a template and its builder cannot silently drift apart.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from markupsafe import Markup

from atlas.site.charts import histogram_svg, legend_html, thumb_points_svg
from atlas.site.model import SiteModel
from atlas.site.safe import fmt, pct
from atlas.site.tokens import display_token, example_div, example_line, levels_of
from atlas.site.urls import SiteUrls
from atlas.store.reads import ExampleBlock


@dataclass(frozen=True)
class Link:
    text: str
    href: str


@dataclass(frozen=True)
class Chrome:
    """The frame shared by every page: title, nav links, assets, build date."""

    site_title: str
    page_title: str
    root: str
    css: str
    scripts: tuple[str, ...]
    index_href: str
    about_href: str
    built_at: str


@dataclass(frozen=True)
class Stat:
    name: str
    value: str
    note: str = ""


@dataclass(frozen=True)
class LabelRow:
    source: str
    text: str
    score: str


@dataclass(frozen=True)
class NeighbourRow:
    feature: int
    label: str
    score: str
    href: str
    example: tuple[str, str, str]  # before, focus token, after: the neighbour's strongest context


@dataclass(frozen=True)
class NeighbourGroup:
    title: str
    explain: str
    rows: tuple[NeighbourRow, ...]


@dataclass(frozen=True)
class LogitRow:
    token: str
    value: str
    width: int  # bar length in percent of the largest magnitude


@dataclass(frozen=True)
class ExampleGroup:
    heading: str
    note: str
    examples: tuple[Markup, ...]  # finished rows: built in Python because this is the hot loop


@dataclass(frozen=True)
class ExampleSection:
    title: str
    explain: str
    groups: tuple[ExampleGroup, ...]


@dataclass(frozen=True)
class FeaturePage:
    chrome: Chrome
    feature: int
    alive: bool
    label: str
    label_source: str
    labels: tuple[LabelRow, ...]
    crumbs: tuple[Link, ...]
    prev: Link | None
    next: Link | None
    random: Link | None
    map_href: str
    stats: tuple[Stat, ...]
    histogram: Markup
    legend: Markup
    has_unembedding: bool
    logits_pos: tuple[LogitRow, ...]
    logits_neg: tuple[LogitRow, ...]
    neighbour_groups: tuple[NeighbourGroup, ...]
    sections: tuple[ExampleSection, ...]
    short_window: int
    n_tokens: str


@dataclass(frozen=True)
class MemberRow:
    feature: int
    label: str
    density: str
    href: str


@dataclass(frozen=True)
class ClusterPage:
    chrome: Chrome
    cluster_id: int
    name: str
    level: int
    n_levels: int
    crumbs: tuple[Link, ...]
    parent: Link | None
    children: tuple[Link, ...]
    stats: tuple[Stat, ...]
    members: tuple[MemberRow, ...]
    n_members: int
    thumb: Markup
    map_href: str


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


@dataclass(frozen=True)
class AboutPage:
    chrome: Chrome
    provenance: tuple[Stat, ...]
    reconstruction: tuple[Stat, ...]
    stage_times: tuple[Stat, ...]
    versions: tuple[Stat, ...]
    config_text: str
    warnings: tuple[str, ...]


def template_vars(ctx: Any) -> dict[str, Any]:
    """The context's fields as the template's top-level names."""
    return {f.name: getattr(ctx, f.name) for f in fields(ctx)}


# ---- builders ----------------------------------------------------------------------------------

def make_chrome(model: SiteModel, urls: SiteUrls, page: str, page_title: str, scripts: tuple[str, ...] = ()) -> Chrome:
    root = urls.root_of(page)
    title = str(model.info.get("title") or "Feature atlas")
    return Chrome(
        site_title=title, page_title=page_title, root=root,
        css=root + urls.asset("static/atlas.css"),
        scripts=tuple(root + urls.asset(s) for s in scripts),
        index_href=root + urls.index, about_href=root + urls.about,
        built_at=str(model.info.get("built_at") or "unknown"),
    )


def _cluster_crumbs(model: SiteModel, urls: SiteUrls, page: str, cid: int | None) -> list[Link]:
    return [Link(c.name, urls.href(page, urls.cluster(c.cluster_id))) for c in model.cluster_chain(cid)]


def _random_alive(model: SiteModel, n: int) -> int | None:
    """A fixed 'random' neighbour per page, so the site stays byte-identical between builds."""
    if not len(model.alive_ids):
        return None
    h = int.from_bytes(hashlib.sha256(str(n).encode()).digest()[:8], "big")
    return int(model.alive_ids[h % len(model.alive_ids)])


@dataclass
class FeatureData:
    """The per-feature rows of the large tables for one feature range."""

    examples: ExampleBlock
    intervals: dict[int, list[tuple]]
    histograms: dict[int, list[tuple]]
    neighbours: dict[int, list[tuple]]
    logits: dict[int, list[tuple]]


_NEIGHBOUR_KINDS = {
    "decoder": ("Decoder-cosine neighbours", "Features whose decoder directions point the same way (cosine similarity)."),
    "coact": ("Co-activation neighbours", "Features that fire on the same tokens (co-activation score)."),
}

_SECTION_TEXT = {
    "top": ("Top activations", "The contexts where this feature fired most strongly."),
    "interval": (
        "Interval samples",
        "Random contexts from each slice of the activation range, highest slice first; each slice "
        "is headed by its range and the share of all activations that fall in it.",
    ),
    "random": ("Random samples", "Contexts drawn at random from the stored samples of this feature."),
}


def build_feature_page(model: SiteModel, urls: SiteUrls, n: int, data: FeatureData, short_window: int, scripts: tuple[str, ...]) -> FeaturePage:
    page = urls.feature(n)
    alive = bool(model.alive[n])
    label = model.label[n] or ("Dead feature" if not alive else "Unlabelled feature")
    chrome = make_chrome(model, urls, page, f"#{n} {label}", scripts)
    crumbs = [Link("atlas", urls.href(page, urls.index))]
    crumbs += _cluster_crumbs(model, urls, page, int(model.cluster_id[n]) if model.cluster_id[n] >= 0 else None)
    crumbs.append(Link(f"feature {n}", urls.href(page, page)))
    prev = Link(f"#{n - 1}", urls.href(page, urls.feature(n - 1))) if n > 0 else None
    nxt = Link(f"#{n + 1}", urls.href(page, urls.feature(n + 1))) if n + 1 < model.n_features else None
    r = _random_alive(model, n)
    rnd_link = Link(f"#{r}", urls.href(page, urls.feature(r))) if r is not None else None
    vmax = float(model.max_act[n])
    n_tokens = model.info.get("n_tokens")
    stats = (
        Stat("density", pct(model.density[n]), "of all tokens"),
        Stat("fired on", fmt(model.n_fired[n]), "tokens"),
        Stat("max activation", fmt(model.max_act[n])),
        Stat("mean activation", fmt(model.mean_act[n]), "when firing"),
    )
    labels = tuple(
        LabelRow(src, text, fmt(score, 3) if score is not None else "–")
        for src, text, score in model.extra_labels.get(n, [])
    )
    groups = []
    nb_rows = data.neighbours.get(n, [])
    for kind, (title, explain) in _NEIGHBOUR_KINDS.items():
        rows = tuple(
            NeighbourRow(int(o), model.feature_label(int(o)), fmt(s, 3), urls.href(page, urls.feature(int(o))),
                         model.snippets.get(int(o), ("", "", "")))
            for k, _rank, o, s in nb_rows if k == kind and o is not None and 0 <= int(o) < model.n_features
        )
        groups.append(NeighbourGroup(title, explain, rows))
    pos, neg = [], []
    lg = data.logits.get(n, [])
    biggest = max((abs(float(v)) for *_x, v in lg if v is not None), default=0.0) or 1.0
    for sign, _rank, tid, v in lg:
        v = float(v or 0.0)
        row = LogitRow(display_token(model.vocab.get(int(tid), "�")), f"{v:+.3f}", round(100 * abs(v) / biggest))
        (pos if sign == "pos" else neg).append(row)
    return FeaturePage(
        chrome=chrome, feature=n, alive=alive, label=label,
        label_source=model.label_source[n] or "", labels=labels, crumbs=tuple(crumbs),
        prev=prev, next=nxt, random=rnd_link,
        map_href=urls.href(page, urls.index_with(f"feature={n}")),
        stats=stats,
        histogram=histogram_svg(data.histograms.get(n, []), vmax) if alive else Markup(""),
        legend=legend_html(),
        has_unembedding=model.has_unembedding,
        logits_pos=tuple(pos), logits_neg=tuple(neg), neighbour_groups=tuple(groups),
        sections=_example_sections(model, n, data, vmax, short_window) if alive else (),
        short_window=short_window, n_tokens=fmt(n_tokens) if n_tokens is not None else "the",
    )


def _example_sections(model: SiteModel, n: int, data: FeatureData, vmax: float, short_window: int) -> tuple[ExampleSection, ...]:
    ex = data.examples
    rows = ex.rows(n)
    by_kind: dict[str, dict[int, list[Markup]]] = {}
    if len(rows):
        base = int(ex.offsets[rows.start])
        flat = slice(base, int(ex.offsets[rows.stop]))
        ids = ex.token_ids[flat].tolist()
        acts = np.nan_to_num(ex.acts[flat].astype(np.float64), nan=0.0)
        levs = levels_of(acts, vmax).tolist()
        acts_l = acts.tolist()
        for i in rows:
            a, b = int(ex.offsets[i]) - base, int(ex.offsets[i + 1]) - base
            line = example_line(ids[a:b], levs[a:b], acts_l[a:b], int(ex.focus[i]), model.tokens, short_window)
            kind = ex.kind[i] if ex.kind[i] in _SECTION_TEXT else "random"
            bucket = int(ex.bucket[i]) if kind == "interval" else 0
            by_kind.setdefault(kind, {}).setdefault(bucket, []).append(Markup(example_div(float(ex.value[i]), line)))
    iv = {int(b[0]): b for b in data.intervals.get(n, [])}
    sections = []
    for kind, (title, explain) in _SECTION_TEXT.items():
        buckets = by_kind.get(kind)
        if not buckets:
            continue
        groups = []
        for bucket in sorted(buckets, reverse=True):
            if kind == "interval":
                row = iv.get(bucket)
                if row is not None:
                    _b, lo, hi, cnt, share = row
                    heading = f"{fmt(lo)} – {fmt(hi)}"
                    note = f"{pct(share)} of activations ({fmt(cnt)} tokens)"
                else:
                    heading, note = f"interval {bucket}", ""
            else:
                heading, note = "", ""
            groups.append(ExampleGroup(heading, note, tuple(buckets[bucket])))
        sections.append(ExampleSection(title, explain, tuple(groups)))
    return tuple(sections)


MAX_MEMBERS_SHOWN = 500


def build_cluster_page(model: SiteModel, urls: SiteUrls, cid: int, thumb_xy: dict[int, tuple[float, float]]) -> ClusterPage:
    c = model.clusters[cid]
    page = urls.cluster(cid)
    chrome = make_chrome(model, urls, page, c.name)
    crumbs = [Link("atlas", urls.href(page, urls.index))] + _cluster_crumbs(model, urls, page, cid)
    parent = model.clusters.get(c.parent) if c.parent is not None else None
    members = sorted(model.members.get(cid, []), key=lambda f: (-float(model.density[f]), f))
    shown = members[:MAX_MEMBERS_SHOWN]
    rows = tuple(
        MemberRow(f, model.feature_label(f), pct(model.density[f]), urls.href(page, urls.feature(f))) for f in shown
    )
    stats = (
        Stat("members", fmt(len(members))),
        Stat("level", f"{c.level} of {model.n_levels - 1}", "0 is coarsest"),
        Stat("decoder coherence", fmt(c.coherence_decoder, 3), "mean decoder cosine within the cluster"),
        Stat("co-activation coherence", fmt(c.coherence_coact, 3), "mean co-activation within the cluster"),
    )
    pts = [thumb_xy[f] for f in members if f in thumb_xy]
    if len(pts) > 2000:  # a fixed stride keeps the page light and the output deterministic
        pts = pts[:: len(pts) // 2000 + 1]
    thumb = Markup(
        f'<svg class="thumb" viewBox="0 0 1000 1000" role="img" aria-label="Where this cluster lies on the map">'
        f'<image href="{urls.href(page, urls.asset("static/mapthumb.svg"))}" width="1000" height="1000"/>'
        + thumb_points_svg([p[0] for p in pts], [p[1] for p in pts], "hl", 6)
        + "</svg>"
    )
    return ClusterPage(
        chrome=chrome, cluster_id=cid, name=c.name, level=c.level, n_levels=model.n_levels,
        crumbs=tuple(crumbs),
        parent=Link(parent.name, urls.href(page, urls.cluster(parent.cluster_id))) if parent else None,
        children=tuple(
            Link(f"{model.clusters[k].name} ({model.clusters[k].size})", urls.href(page, urls.cluster(k)))
            for k in sorted(c.children, key=lambda k: (-model.clusters[k].size, k))
        ),
        stats=stats, members=rows, n_members=len(members), thumb=thumb,
        map_href=urls.href(page, urls.index_with(f"cluster={cid}")),
    )


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
    out = [str(w) for w in (info.get("warnings") or [])]
    fvu = info.get("fvu")
    if isinstance(fvu, (int, float)) and fvu > 0.5:
        out.insert(0, f"The SAE explains little of this layer: FVU is {fvu:.3g} (above 0.5). "
                      "Check the hook, the SAE's input normalisation and the model before trusting these features.")
    return tuple(out)


def build_index_page(model: SiteModel, urls: SiteUrls, scripts: tuple[str, ...], js_config: dict) -> IndexPage:
    page = urls.index
    chrome = make_chrome(model, urls, page, "Map", scripts)
    levels = []
    for lev in range(model.n_levels):
        cl = sorted((c for c in model.clusters.values() if c.level == lev), key=lambda c: (-c.size, c.cluster_id))
        title = "Regions" if lev == 0 else f"Level {lev} clusters"
        levels.append(LevelList(lev, title, tuple((Link(c.name, urls.href(page, urls.cluster(c.cluster_id))), c.size) for c in cl)))
    from atlas.site.safe import script_json

    n_alive = int(model.alive.sum())
    return IndexPage(
        chrome=chrome, stats=_recon_stats(model.info), warnings=site_warnings(model.info),
        levels=tuple(levels), config_json=script_json(js_config),
        n_alive=n_alive, n_dead=model.n_features - n_alive, n_features=model.n_features,
    )


def build_about_page(model: SiteModel, urls: SiteUrls) -> AboutPage:
    info = model.info
    chrome = make_chrome(model, urls, urls.about, "About this atlas")

    def s(key: str, name: str) -> Stat:
        v = info.get(key)
        return Stat(name, "–" if v is None else (v if isinstance(v, str) else json.dumps(v, sort_keys=True)))

    prov = (
        s("model", "model"), s("hook", "hook"), s("hook_description", "hook description"),
        s("sae_path", "SAE path"), s("sae_hash", "SAE hash"), s("sae_format", "SAE format"),
        s("sae_convention", "SAE convention"), s("d_in", "d_in"), s("d_sae", "d_sae"),
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
    )


def thumb_coords(model: SiteModel) -> dict[int, tuple[float, float]]:
    """Alive features in the 0..1000 viewBox of the small maps (y pointing down)."""
    ok = model.alive & np.isfinite(model.x) & np.isfinite(model.y)
    ids = np.flatnonzero(ok)
    if not len(ids):
        return {}
    x, y = model.x[ids], model.y[ids]
    span = max(float(x.max() - x.min()), float(y.max() - y.min()), 1e-9)
    tx = 20 + 960 * (x - x.min()) / span
    ty = 980 - 960 * (y - y.min()) / span
    return {int(f): (float(a), float(b)) for f, a, b in zip(ids, tx, ty)}
