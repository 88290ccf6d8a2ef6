"""The comparison page: which features of the previous atlas (or the main SAE) were matched, split, merged,
added or lost."""

from __future__ import annotations

from dataclasses import dataclass

from atlas.site.model import SiteModel
from atlas.site.pages.common import Chrome, Stat, cosine_text, make_chrome
from atlas.site.safe import fmt
from atlas.site.urls import SiteUrls

# Lists longer than this are cut on the comparison page: a 65k-feature SAE would otherwise give one
# page of several MB. Matches are shown least similar first, since those are the ones worth reading.
MAX_COMPARE_ROWS = 1000


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


def build_compare_page(model: SiteModel, urls: SiteUrls) -> ComparePage:
    comp = model.comparison
    assert comp is not None
    links = urls.at(urls.compare)
    chrome = make_chrome(model, links, f"Changes since {comp.title}")

    def prev(a: int) -> FeatureRef:
        return FeatureRef(int(a), comp.previous_label(a), links.feature_in_site(comp.site_path, a))

    def cur(b: int) -> FeatureRef:
        return FeatureRef(int(b), model.feature_label(int(b)), links.feature(int(b)))

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
            parts = tuple(VersionPart(cur(r[2]) if kind == "split" else prev(r[1]), cosine_text(r[4]),
                                      cosine_text(r[5])) for r in rs)
            out.append(ChangeRow(one, parts, cosine_text(rs[0][3])))
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
        chrome=chrome, previous_title=comp.title, previous_href=links.in_site(comp.site_path, urls.index),
        counts=counts,
        matched=tuple(MatchRow(prev(r[1]), cur(r[2]), cosine_text(r[4])) for r in matched[:MAX_COMPARE_ROWS]),
        splits=change_rows("split"), merges=change_rows("merge"),
        new=tuple(cur(r[2]) for r in kinds.get("new", [])[:MAX_COMPARE_ROWS]),
        vanished=tuple(prev(r[1]) for r in kinds.get("vanished", [])[:MAX_COMPARE_ROWS]),
        shown_note=(f"Each list shows at most {MAX_COMPARE_ROWS:,} rows (of {', '.join(cut)}); the store's "
                    "version_matches table holds them all.") if cut else "",
    )
