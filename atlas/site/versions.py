"""The other SAE versions of the same atlas, as pages show them: the header's switcher and, on the main SAE's
feature pages, where each feature went in every other version.

A version's own comparison with the main SAE is the ordinary `Comparison` (its store schema holds it); the main
SAE's view of it is the same rows read from the other side, which this module reads from each version's schema.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from urllib.parse import quote

from atlas.site.urls import PageUrls
from atlas.store import reads
from atlas.store.records import SaeVersion


@dataclass(frozen=True)
class VersionLink:
    name: str
    href: str
    current: bool


@dataclass
class Versions:
    """Every version of the atlas, which one this site is, and (on the main site) each version's matches."""

    entries: list[SaeVersion]
    current: SaeVersion
    by_main: dict[str, dict[int, list[tuple]]] = field(default_factory=dict)  # schema -> main feature -> rows

    def path_to(self, other: SaeVersion) -> str:
        """`other`'s site root relative to this version's site root, URL-quoted, without a trailing slash."""
        rel = posixpath.relpath(other.site_path or ".", self.current.site_path or ".")
        return quote(rel)


def load_versions(store) -> Versions | None:
    """The versions listed in the store's facts; None for an atlas of one SAE."""
    info = store.info()
    listing = info.get("atlas_versions") or []
    if len(listing) < 2:
        return None
    entries = [SaeVersion.from_info(e) for e in listing]
    schema = getattr(store, "schema", "main")
    current = next((e for e in entries if e.schema == schema), entries[0])
    out = Versions(entries, current)
    if current.site_path == "":
        for e in entries[1:]:
            if e.schema not in store.schemas():
                continue
            with store.in_schema(e.schema) as view:
                frame = reads.version_matches(view)
            rows: dict[int, list[tuple]] = {}
            for kind, a, b, score, cos, _ in frame.itertuples(index=False):
                if int(a) >= 0:
                    rows.setdefault(int(a), []).append((str(kind), int(a), int(b), score, cos))
            out.by_main[e.schema] = rows
    return out


def switcher(versions: Versions | None, links: PageUrls, feature_links: dict[str, int] | None = None
             ) -> tuple[VersionLink, ...]:
    """One link per version, from the page `links` is bound to: to the same page where that is this version,
    to the counterpart feature where one is known, else to that version's map."""
    if versions is None:
        return ()
    out = []
    for e in versions.entries:
        target = (feature_links or {}).get(e.schema)
        if e == versions.current:
            href = links.to(links.page) if links.page.endswith(".html") else links.index
        elif target is not None:
            href = links.feature_in_site(versions.path_to(e), target)
        else:
            href = links.in_site(versions.path_to(e), links.urls.index)
        out.append(VersionLink(e.name, href, e == versions.current))
    return tuple(out)


def where_it_went(versions: Versions | None, n: int) -> list[tuple[SaeVersion, str, list[int], str]]:
    """On the main site: per other version, (version, text, features there, detail) for main feature `n`."""
    if versions is None or versions.current.site_path != "":
        return []
    out = []
    for e in versions.entries[1:]:
        rows = versions.by_main.get(e.schema, {}).get(n)
        if not rows:
            continue
        kind = rows[0][0]
        parts = [r[2] for r in rows if r[2] >= 0]
        if kind == "matched":
            out.append((e, "matched to", parts, f"cosine {_two(rows[0][4])}"))
        elif kind == "split":
            out.append((e, "split into", parts, f"together cosine {_two(rows[0][3])}"))
        elif kind == "merge":
            out.append((e, "merged into", parts, f"with other features, together cosine {_two(rows[0][3])}"))
        else:
            out.append((e, "no counterpart", [], ""))
    return out


def _two(x) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "–"
    return "–" if v != v else f"{v:.2f}"


def counterparts(versions: Versions | None, comparison, n: int) -> dict[str, int]:
    """Schema -> the feature matched one-to-one with feature `n` there (for the switcher's links)."""
    if versions is None:
        return {}
    out = {}
    if versions.current.site_path == "":
        for schema, rows in versions.by_main.items():
            r = rows.get(n)
            if r and r[0][0] == "matched":
                out[schema] = r[0][2]
    elif comparison is not None:
        r = comparison.by_new.get(n)
        if r and r[0][0] == "matched":
            out[versions.entries[0].schema] = r[0][1]
    return out
