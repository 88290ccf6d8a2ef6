"""One typed context per page type: everything a template may use, and nothing else.

Templates are rendered with `StrictUndefined`, and tests check that each template names only the
fields of its context, so a template and its builder cannot silently drift apart.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np
from markupsafe import Markup

from atlas.site.charts import histogram_svg, legend_html, thumb_points_svg
from atlas.site.model import SiteModel
from atlas.site.rows import LogitRow, MemberRow, NeighbourRow, logit_rows, member_rows, neighbour_rows
from atlas.site.safe import fmt, pct
from atlas.site.tokens import ExampleScripts, example_scripts
from atlas.site.urls import SiteUrls
from atlas.site.versions import VersionLink, counterparts, switcher, where_it_went
from atlas.store.reads import ExampleBlock


# Row and group types are NamedTuples: immutable like the page contexts, and several times cheaper to make
# than a frozen dataclass, which matters for the dozens of them on each of thousands of pages.
class Link(NamedTuple):
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
    compare_href: str = ""  # '' when this atlas is compared with no previous one
    versions: tuple[VersionLink, ...] = ()  # the version switcher; empty for an atlas of one SAE


class Stat(NamedTuple):
    name: str
    value: str
    note: str = ""


class LabelRow(NamedTuple):
    source: str
    text: str
    score: str


class NeighbourGroup(NamedTuple):
    title: str
    explain: str
    rows: Markup  # finished table rows (rows.neighbour_rows)


class ExampleGroup(NamedTuple):
    heading: str
    note: str
    n_examples: int
    runs: str  # the runs of the feature's example script (tokens.py) this group shows, as '0' or '3 4'


class ExampleSection(NamedTuple):
    title: str
    explain: str
    groups: tuple[ExampleGroup, ...]


@dataclass(frozen=True)
class VersionNote:
    """Where a feature came from in the previous atlas: 'matched to #N (cosine 0.93)' and the like."""

    previous_title: str
    text: str  # matched to | split from | merged from | new in this version
    links: tuple[Link, ...]  # previous features; href '' when the previous site is unknown
    detail: str
    compare_href: str


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
    logits_pos: Markup  # finished table rows (rows.logit_rows)
    logits_neg: Markup
    neighbour_groups: tuple[NeighbourGroup, ...]
    sections: tuple[ExampleSection, ...]
    examples_src: str  # the feature's example script, relative to its page; '' when it has no examples
    short_window: int
    n_tokens: str
    version: VersionNote | None = None
    elsewhere: tuple[VersionNote, ...] = ()  # on the main SAE's pages: where the feature went in each version


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
    members: Markup  # finished table rows (rows.member_rows), the densest first
    n_shown: int
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


@dataclass(frozen=True)
class FeatureRef:
    feature: int
    label: str
    href: str  # '' when the page cannot be reached (a previous feature whose site is unknown)


@dataclass(frozen=True)
class VersionPart:
    ref: FeatureRef
    cosine: str
    weight: str


@dataclass(frozen=True)
class MatchRow:
    previous: FeatureRef
    current: FeatureRef
    cosine: str


@dataclass(frozen=True)
class ChangeRow:
    """A split (one previous feature, parts in this atlas) or a merge (previous parts, one feature here)."""

    one: FeatureRef
    parts: tuple[VersionPart, ...]
    score: str  # cosine of the parts' combination with `one`


@dataclass(frozen=True)
class ComparePage:
    chrome: Chrome
    previous_title: str
    previous_href: str
    counts: tuple[Stat, ...]
    matched: tuple[MatchRow, ...]
    splits: tuple[ChangeRow, ...]
    merges: tuple[ChangeRow, ...]
    new: tuple[FeatureRef, ...]
    vanished: tuple[FeatureRef, ...]
    shown_note: str  # says which rows were left out when a list is capped, else ''


def template_vars(ctx: Any) -> dict[str, Any]:
    """The context's fields as the template's top-level names."""
    return {f.name: getattr(ctx, f.name) for f in fields(ctx)}


# ---- builders ----------------------------------------------------------------------------------

def make_chrome(model: SiteModel, urls: SiteUrls, page: str, page_title: str, scripts: tuple[str, ...] = (),
                counterparts: dict[str, int] | None = None) -> Chrome:
    root = urls.root_of(page)
    title = str(model.info.get("title") or "Feature atlas")
    return Chrome(
        site_title=title, page_title=page_title, root=root,
        css=root + urls.asset("static/atlas.css"),
        scripts=tuple(root + urls.asset(s) for s in scripts),
        index_href=root + urls.index, about_href=root + urls.about,
        built_at=str(model.info.get("built_at") or "unknown"),
        compare_href=root + urls.compare if model.comparison is not None else "",
        versions=switcher(model.versions, urls, page, counterparts),
    )


def _cluster_crumbs(model: SiteModel, urls: SiteUrls, page: str, cid: int | None) -> list[Link]:
    return [Link(c.name, urls.href(page, urls.cluster(c.cluster_id))) for c in model.cluster_chain(cid)]


def _random_alive(model: SiteModel, n: int) -> int | None:
    """A fixed 'random' neighbour per page, so the site stays byte-identical between builds."""
    if not len(model.alive_ids):
        return None
    h = int.from_bytes(hashlib.sha256(str(n).encode()).digest()[:8], "big")
    return int(model.alive_ids[h % len(model.alive_ids)])


class ExampleRuns(NamedTuple):
    """The rows of an example block that a page shows as one group (same feature, section and interval
    bucket) lie next to each other: where each run of them ends, and each run's key and length."""

    ends: np.ndarray  # bool per row: the run ends here
    keys: list[tuple[int, str, int]]  # feature, section kind, bucket (0 outside intervals)
    lengths: list[int]


def example_runs(ex: ExampleBlock) -> ExampleRuns:
    section = [k if k in _SECTION_TEXT else "random" for k in ex.kind]
    keys = list(zip(ex.feature.tolist(), section,
                    [b if k == "interval" else 0 for k, b in zip(section, ex.bucket.tolist())]))
    ends = np.ones(len(keys), dtype=bool)
    ends[:-1] = [a != b for a, b in zip(keys, keys[1:])]
    last = np.flatnonzero(ends)
    return ExampleRuns(ends, [keys[i] for i in last.tolist()], np.diff(last, prepend=-1).tolist())


class FeatureHtml(NamedTuple):
    """What a block of features' pages show that comes from the store alone, not from the templates or the
    rest of the site: what the feature cache keeps beside the page contexts (cache.py)."""

    run_keys: list[tuple[int, str, int]]  # of the example runs, as in ExampleRuns
    run_lengths: list[int]
    examples: ExampleScripts  # each feature's example script
    histograms: dict[int, Markup]  # alive feature -> its histogram


def feature_html(model: SiteModel, ex: ExampleBlock, histograms: dict[int, list[tuple]], lo: int, hi: int,
                 short_window: int) -> FeatureHtml:
    runs = example_runs(ex)
    html = example_scripts(ex, model.max_act[ex.feature], model.tokens, short_window, runs.ends, lo, hi)
    charts = {n: histogram_svg(histograms.get(n, []), float(model.max_act[n])) for n in range(lo, hi) if model.alive[n]}
    return FeatureHtml(runs.keys, runs.lengths, html, charts)


@dataclass
class FeatureData:
    """What the feature pages of one feature range need beyond the model: their example scripts and
    histograms, and the per-feature rows of the other large tables."""

    html: FeatureHtml
    intervals: dict[int, list[tuple]]
    neighbours: dict[int, list[tuple]]
    logits: dict[int, list[tuple]]

    def __post_init__(self):
        self._runs_of: dict[int, list[tuple[str, int, int, int]]] = {}
        for (feature, section, bucket), n in zip(self.html.run_keys, self.html.run_lengths):
            runs = self._runs_of.setdefault(feature, [])
            runs.append((section, bucket, len(runs), n))

    def example_groups(self, n: int) -> dict[str, dict[int, list[tuple[int, int]]]]:
        """Feature n's runs of examples (index in its script, length) by section kind, then by interval
        bucket."""
        out: dict[str, dict[int, list[tuple[int, int]]]] = {}
        for section, bucket, k, length in self._runs_of.get(n, ()):
            out.setdefault(section, {}).setdefault(bucket, []).append((k, length))
        return out


_NO_SNIPPET = Markup("<b></b>")
_NO_CHART = Markup("")
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
    chrome = make_chrome(model, urls, page, f"#{n} {label}", scripts, counterparts(model.versions, model.comparison, n))
    crumbs = [Link("atlas", urls.href(page, urls.index))]
    crumbs += _cluster_crumbs(model, urls, page, int(model.cluster_id[n]) if model.cluster_id[n] >= 0 else None)
    crumbs.append(Link(f"feature {n}", urls.href(page, page)))
    prev = Link(f"#{n - 1}", urls.href(page, urls.feature(n - 1))) if n > 0 else None
    nxt = Link(f"#{n + 1}", urls.href(page, urls.feature(n + 1))) if n + 1 < model.n_features else None
    r = _random_alive(model, n)
    rnd_link = Link(f"#{r}", urls.href(page, urls.feature(r))) if r is not None else None
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
    neighbours: dict[str, list[NeighbourRow]] = {kind: [] for kind in _NEIGHBOUR_KINDS}
    root, label_html, snippet_html = urls.root_of(page), model.label_html, model.snippet_html
    for kind, _rank, o, score in data.neighbours.get(n, ()):
        if o is not None and kind in neighbours and 0 <= int(o) < model.n_features:
            o = int(o)
            neighbours[kind].append(NeighbourRow(o, label_html[o], fmt(score, 3), root + urls.feature(o),
                                                 snippet_html.get(o, _NO_SNIPPET)))
    groups = [NeighbourGroup(title, explain, neighbour_rows(neighbours[kind]))
              for kind, (title, explain) in _NEIGHBOUR_KINDS.items()]
    sections = _example_sections(n, data) if alive else ()
    pos, neg = [], []
    lg = data.logits.get(n, [])
    biggest = max((abs(float(v)) for *_x, v in lg if v is not None), default=0.0) or 1.0
    for sign, _rank, tid, v in lg:
        v = float(v or 0.0)
        row = LogitRow(model.tokens.shown(int(tid)), f"{v:+.3f}", round(100 * abs(v) / biggest))
        (pos if sign == "pos" else neg).append(row)
    return FeaturePage(
        chrome=chrome, feature=n, alive=alive, label=label,
        label_source=model.label_source[n] or "", labels=labels, crumbs=tuple(crumbs),
        prev=prev, next=nxt, random=rnd_link,
        map_href=urls.href(page, urls.index_with(f"feature={n}")),
        stats=stats,
        histogram=data.html.histograms.get(n, _NO_CHART) if alive else Markup(""),
        legend=legend_html(),
        has_unembedding=model.has_unembedding,
        logits_pos=logit_rows(pos, "pos"), logits_neg=logit_rows(neg, "neg"), neighbour_groups=tuple(groups),
        sections=sections,
        examples_src=posixpath.basename(urls.feature_examples(n)) if sections else "",
        short_window=short_window, n_tokens=fmt(n_tokens) if n_tokens is not None else "the",
        version=_version_note(model, urls, page, n),
        elsewhere=_elsewhere(model, urls, page, n),
    )


def _cos(x) -> str:
    """Cosines and weights to two decimals, the precision the matching thresholds are set at."""
    return "–" if x is None or not np.isfinite(float(x)) else f"{float(x):.2f}"


def _elsewhere(model: SiteModel, urls: SiteUrls, page: str, n: int) -> tuple[VersionNote, ...]:
    """On the main SAE's feature pages: per other version, what became of this feature there."""
    vs = model.versions
    notes = []
    for v, text, parts, detail in where_it_went(vs, n):
        there = vs.path_to(v)
        links = tuple(Link(f"#{m}", urls.previous_feature(page, there, m)) for m in parts)
        notes.append(VersionNote(v.name, text, links, detail, f"{urls.root_of(page)}{there}/{urls.compare}"))
    return tuple(notes)


def _version_note(model: SiteModel, urls: SiteUrls, page: str, n: int) -> VersionNote | None:
    comp = model.comparison
    rows = comp.by_new.get(n) if comp is not None else None
    if not rows:
        return None
    kind = rows[0][0]

    def prev_link(a: int) -> Link:
        return Link(f"#{a}", urls.previous_feature(page, comp.site_path, a))

    if kind == "matched":
        text, detail = "matched to", f"cosine {_cos(rows[0][4])}"
    elif kind == "split":
        text, detail = "split from", f"cosine {_cos(rows[0][4])} with it; its parts together {_cos(rows[0][3])}"
    elif kind == "merge":
        text, detail = "merged from", f"together cosine {_cos(rows[0][3])} with this feature"
    else:
        text, detail = "new in this version", ""
    links = tuple(prev_link(r[1]) for r in rows if r[1] >= 0)
    return VersionNote(comp.title, text, links, detail, urls.href(page, urls.compare))


def _example_sections(n: int, data: FeatureData) -> tuple[ExampleSection, ...]:
    by_kind = data.example_groups(n)
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
            runs = buckets[bucket]
            groups.append(ExampleGroup(heading, note, sum(length for _k, length in runs),
                                       " ".join(str(k) for k, _length in runs)))
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
        MemberRow(f, model.label_html[f], pct(model.density[f]), urls.href(page, urls.feature(f))) for f in shown
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
        stats=stats, members=member_rows(rows), n_shown=len(rows), n_members=len(members), thumb=thumb,
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
        dead_href=urls.href(page, urls.dead),
    )


def build_dead_page(model: SiteModel, urls: SiteUrls) -> DeadPage:
    page = urls.dead
    dead = np.flatnonzero(~np.asarray(model.alive, dtype=bool))
    return DeadPage(
        chrome=make_chrome(model, urls, page, "Dead features"), n_tokens=fmt(model.info.get("n_tokens")),
        features=tuple(Link(f"#{int(f)}", urls.href(page, urls.feature(int(f)))) for f in dead),
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
        compare=Link(f"Changes since {model.comparison.title}", urls.href(urls.about, urls.compare))
        if model.comparison is not None else None,
    )


# Lists longer than this are cut on the comparison page: a 65k-feature SAE would otherwise give one
# page of several MB. Matches are shown least similar first, since those are the ones worth reading.
MAX_COMPARE_ROWS = 1000


def build_compare_page(model: SiteModel, urls: SiteUrls) -> ComparePage:
    comp = model.comparison
    assert comp is not None
    page = urls.compare
    chrome = make_chrome(model, urls, page, f"Changes since {comp.title}")

    def prev(a: int) -> FeatureRef:
        return FeatureRef(int(a), comp.previous_label(a), urls.previous_feature(page, comp.site_path, a))

    def cur(b: int) -> FeatureRef:
        return FeatureRef(int(b), model.feature_label(int(b)), urls.href(page, urls.feature(int(b))))

    kinds: dict[str, list[tuple]] = {}
    for r in comp.rows:
        kinds.setdefault(r[0], []).append(r)
    matched = sorted(kinds.get("matched", []), key=lambda r: (r[4] if r[4] is not None else 0.0, r[1]))
    groups: dict[str, dict[int, list[tuple]]] = {"split": {}, "merge": {}}
    for kind, side in (("split", 1), ("merge", 2)):
        for r in kinds.get(kind, []):
            groups[kind].setdefault(r[side], []).append(r)

    def change_rows(kind: str) -> tuple[ChangeRow, ...]:
        out = []
        for key, rs in sorted(groups[kind].items()):
            one = prev(key) if kind == "split" else cur(key)
            parts = tuple(VersionPart(cur(r[2]) if kind == "split" else prev(r[1]), _cos(r[4]), _cos(r[5]))
                          for r in rs)
            out.append(ChangeRow(one, parts, _cos(rs[0][3])))
        return tuple(out[:MAX_COMPARE_ROWS])

    cut = [f"{len(v):,} {k}" for k, v in (("matched", matched), ("new", kinds.get("new", [])),
                                           ("vanished", kinds.get("vanished", [])),
                                           ("splits", groups["split"]), ("merges", groups["merge"]))
           if len(v) > MAX_COMPARE_ROWS]
    c = comp.counts
    counts = (
        Stat("matched", fmt(c["matched"]), "one-to-one, cosine ≥ 0.7"),
        Stat("split", fmt(c["split"]), "previous features now covered by several"),
        Stat("merged", fmt(c["merge"]), "features here covering several previous ones"),
        Stat("new", fmt(c["new"]), "with no counterpart before"),
        Stat("vanished", fmt(c["vanished"]), "previous features with no counterpart here"),
    )
    return ComparePage(
        chrome=chrome, previous_title=comp.title, previous_href=urls.previous_index(page, comp.site_path),
        counts=counts,
        matched=tuple(MatchRow(prev(r[1]), cur(r[2]), _cos(r[4])) for r in matched[:MAX_COMPARE_ROWS]),
        splits=change_rows("split"), merges=change_rows("merge"),
        new=tuple(cur(r[2]) for r in kinds.get("new", [])[:MAX_COMPARE_ROWS]),
        vanished=tuple(prev(r[1]) for r in kinds.get("vanished", [])[:MAX_COMPARE_ROWS]),
        shown_note=(f"Each list shows at most {MAX_COMPARE_ROWS:,} rows (of {', '.join(cut)}); the store's "
                    "version_matches table holds them all.") if cut else "",
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
