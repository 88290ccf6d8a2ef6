"""The feature page: one per feature, alive or dead, with its stats, labels, charts, neighbours and examples."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import NamedTuple

from markupsafe import Markup

from atlas.site.charts import legend_html
from atlas.site.feature_data import FeatureData
from atlas.site.model import SiteModel
from atlas.site.pages.common import Chrome, Link, Stat, cluster_crumbs, cosine_text, make_chrome
from atlas.site.rows import LogitRow, NeighbourRow, logit_rows, neighbour_rows
from atlas.site.safe import fmt, pct
from atlas.site.steering import SteeringView, build_steering
from atlas.site.urls import PageUrls, SiteUrls
from atlas.site.versions import counterparts, where_it_went


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
    logits_note: str  # why there are no logit effects; '' when the tables are shown
    logits_pos: Markup  # finished table rows (rows.logit_rows)
    logits_neg: Markup
    neighbour_groups: tuple[NeighbourGroup, ...]
    sections: tuple[ExampleSection, ...]
    examples_src: str  # the feature's example script, relative to its page; '' when it has no examples
    short_window: int
    n_tokens: str
    version: VersionNote | None = None
    elsewhere: tuple[VersionNote, ...] = ()  # on the main SAE's pages: where the feature went in each version
    steering: SteeringView | None = None  # None on a dead feature's page


_NO_SNIPPET = Markup("<b></b>")
_NO_CHART = Markup("")
_NEIGHBOUR_KINDS = {
    "decoder": ("Decoder-cosine neighbours", "Features whose decoder directions point the same way (cosine similarity)."),
    "coact": ("Co-activation neighbours", "Features that fire on the same tokens (co-activation score)."),
}

# Keyed by feature_data.SECTION_KINDS, in the order the page shows them.
_SECTION_TEXT = {
    "top": ("Top activations", "The contexts where this feature fired most strongly."),
    "interval": (
        "Interval samples",
        "Random contexts from each slice of the activation range, highest slice first; each slice "
        "is headed by its range and the share of all activations that fall in it.",
    ),
    "random": ("Random samples", "Contexts drawn at random from the stored samples of this feature."),
}


def _random_alive(model: SiteModel, n: int) -> int | None:
    """A fixed 'random' neighbour per page, so the site stays byte-identical between builds."""
    if not len(model.alive_ids):
        return None
    h = int.from_bytes(hashlib.sha256(str(n).encode()).digest()[:8], "big")
    return int(model.alive_ids[h % len(model.alive_ids)])


def build_feature_page(model: SiteModel, urls: SiteUrls, n: int, data: FeatureData, short_window: int,
                       scripts: tuple[str, ...]) -> FeaturePage:
    links = urls.at(urls.feature(n))
    alive = bool(model.alive[n])
    label = model.label[n] or ("Dead feature" if not alive else "Unlabelled feature")
    chrome = make_chrome(model, links, f"#{n} {label}", scripts, counterparts(model.versions, model.comparison, n))
    crumbs = [Link("atlas", links.index)]
    crumbs += cluster_crumbs(model, links, int(model.cluster_id[n]) if model.cluster_id[n] >= 0 else None)
    crumbs.append(Link(f"feature {n}", links.feature(n)))
    prev = Link(f"#{n - 1}", links.feature(n - 1)) if n > 0 else None
    nxt = Link(f"#{n + 1}", links.feature(n + 1)) if n + 1 < model.n_features else None
    r = _random_alive(model, n)
    rnd_link = Link(f"#{r}", links.feature(r)) if r is not None else None
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
    sections = _example_sections(n, data) if alive else ()
    pos, neg = _logit_rows(model, data.logits.get(n, []))
    return FeaturePage(
        chrome=chrome, feature=n, alive=alive, label=label,
        label_source=model.label_source[n] or "", labels=labels, crumbs=tuple(crumbs),
        prev=prev, next=nxt, random=rnd_link,
        map_href=links.index_with(f"feature={n}"),
        stats=stats,
        histogram=data.html.histograms.get(n, _NO_CHART) if alive else Markup(""),
        legend=legend_html(),
        logits_note=model.logits_note,
        logits_pos=pos, logits_neg=neg, neighbour_groups=_neighbour_groups(model, links, data.neighbours.get(n, ())),
        sections=sections,
        examples_src=links.feature_examples(n) if sections else "",
        short_window=short_window, n_tokens=fmt(n_tokens) if n_tokens is not None else "the",
        version=_version_note(model, links, n),
        elsewhere=_elsewhere(model, links, n),
        steering=build_steering(model, n, data.steering.get(n, [])) if alive else None,
    )


def _neighbour_groups(model: SiteModel, links: PageUrls, stored) -> tuple[NeighbourGroup, ...]:
    """One table per kind of neighbour, from the feature's stored (kind, rank, other, score) rows."""
    neighbours: dict[str, list[NeighbourRow]] = {kind: [] for kind in _NEIGHBOUR_KINDS}
    label_html, snippet_html = model.label_html, model.snippet_html
    for kind, _rank, o, score in stored:
        if o is not None and kind in neighbours and 0 <= int(o) < model.n_features:
            o = int(o)
            neighbours[kind].append(NeighbourRow(o, label_html[o], fmt(score, 3), links.feature(o),
                                                 snippet_html.get(o, _NO_SNIPPET)))
    return tuple(NeighbourGroup(title, explain, neighbour_rows(neighbours[kind]))
                 for kind, (title, explain) in _NEIGHBOUR_KINDS.items())


def _logit_rows(model: SiteModel, stored: list[tuple]) -> tuple[Markup, Markup]:
    """The promoted and suppressed tokens' rows, from the feature's stored (sign, rank, token, value) rows."""
    pos, neg = [], []
    biggest = max((abs(float(v)) for *_x, v in stored if v is not None), default=0.0) or 1.0
    for sign, _rank, tid, v in stored:
        v = float(v or 0.0)
        row = LogitRow(model.tokens.shown(int(tid)), f"{v:+.3f}", round(100 * abs(v) / biggest))
        (pos if sign == "pos" else neg).append(row)
    return logit_rows(pos, "pos"), logit_rows(neg, "neg")


def _elsewhere(model: SiteModel, links: PageUrls, n: int) -> tuple[VersionNote, ...]:
    """On the main SAE's feature pages: per other version, what became of this feature there."""
    vs = model.versions
    notes = []
    for v, text, parts, detail in where_it_went(vs, n):
        there = vs.path_to(v)
        went = tuple(Link(f"#{m}", links.feature_in_site(there, m)) for m in parts)
        notes.append(VersionNote(v.name, text, went, detail, links.in_site(there, links.urls.compare)))
    return tuple(notes)


def _version_note(model: SiteModel, links: PageUrls, n: int) -> VersionNote | None:
    comp = model.comparison
    rows = comp.by_new.get(n) if comp is not None else None
    if not rows:
        return None
    kind = rows[0][0]
    if kind == "matched":
        text, detail = "matched to", f"cosine {cosine_text(rows[0][4])}"
    elif kind == "split":
        text, detail = "split from", f"cosine {cosine_text(rows[0][4])} with it; its parts together {cosine_text(rows[0][3])}"
    elif kind == "merge":
        text, detail = "merged from", f"together cosine {cosine_text(rows[0][3])} with this feature"
    else:
        text, detail = "new in this version", ""
    came = tuple(Link(f"#{r[1]}", links.feature_in_site(comp.site_path, r[1])) for r in rows if r[1] >= 0)
    return VersionNote(comp.title, text, came, detail, links.compare)


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
