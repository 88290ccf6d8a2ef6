"""What every page kind shares: links, stat rows, the frame around each page, and how a context meets its template."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np

from atlas.site.model import SiteModel
from atlas.site.urls import PageUrls
from atlas.site.versions import VersionLink, switcher


# Row and group types are NamedTuples: immutable like the page contexts, and several times cheaper to make
# than a frozen dataclass, which matters for the dozens of them on each of thousands of pages.
class Link(NamedTuple):
    text: str
    href: str


class Stat(NamedTuple):
    name: str
    value: str
    note: str = ""


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


def template_vars(ctx: Any) -> dict[str, Any]:
    """The context's fields as the template's top-level names."""
    return {f.name: getattr(ctx, f.name) for f in fields(ctx)}


def make_chrome(model: SiteModel, links: PageUrls, page_title: str, scripts: tuple[str, ...] = (),
                counterparts: dict[str, int] | None = None) -> Chrome:
    """The frame of the page `links` is bound to; `scripts` are registered asset names, loaded in order."""
    title = str(model.info.get("title") or "Feature atlas")
    return Chrome(
        site_title=title, page_title=page_title, root=links.root,
        css=links.asset("static/atlas.css"),
        scripts=tuple(links.asset(s) for s in scripts),
        index_href=links.index, about_href=links.about,
        built_at=str(model.info.get("built_at") or "unknown"),
        compare_href=links.compare if model.comparison is not None else "",
        versions=switcher(model.versions, links, counterparts),
    )


def cluster_crumbs(model: SiteModel, links: PageUrls, cid: int | None) -> list[Link]:
    """Links to the cluster `cid` and its ancestors, coarsest first."""
    return [Link(c.name, links.cluster(c.cluster_id)) for c in model.cluster_chain(cid)]


def cosine_text(x) -> str:
    """Cosines and weights to two decimals, the precision the matching thresholds are set at."""
    return "–" if x is None or not np.isfinite(float(x)) else f"{float(x):.2f}"
