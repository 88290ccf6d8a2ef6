"""The cluster page: one per cluster of the tree, with its members, sub-clusters and where it lies on the map."""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup

from atlas.site.charts import thumb_points_svg
from atlas.site.model import SiteModel
from atlas.site.pages.common import Chrome, Link, Stat, cluster_crumbs, make_chrome
from atlas.site.rows import MemberRow, member_rows
from atlas.site.safe import fmt, pct
from atlas.site.urls import SiteUrls

MAX_MEMBERS_SHOWN = 500


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


def build_cluster_page(model: SiteModel, urls: SiteUrls, cid: int, thumb_xy: dict[int, tuple[float, float]]) -> ClusterPage:
    c = model.clusters[cid]
    links = urls.at(urls.cluster(cid))
    chrome = make_chrome(model, links, c.name)
    crumbs = [Link("atlas", links.index)] + cluster_crumbs(model, links, cid)
    parent = model.clusters.get(c.parent) if c.parent is not None else None
    members = sorted(model.members.get(cid, []), key=lambda f: (-float(model.density[f]), f))
    shown = members[:MAX_MEMBERS_SHOWN]
    rows = tuple(MemberRow(f, model.label_html[f], pct(model.density[f]), links.feature(f)) for f in shown)
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
        f'<image href="{links.asset("static/mapthumb.svg")}" width="1000" height="1000"/>'
        + thumb_points_svg([p[0] for p in pts], [p[1] for p in pts], "hl", 6)
        + "</svg>"
    )
    return ClusterPage(
        chrome=chrome, cluster_id=cid, name=c.name, level=c.level, n_levels=model.n_levels,
        crumbs=tuple(crumbs),
        parent=Link(parent.name, links.cluster(parent.cluster_id)) if parent else None,
        children=tuple(
            Link(f"{model.clusters[k].name} ({model.clusters[k].size})", links.cluster(k))
            for k in sorted(c.children, key=lambda k: (-model.clusters[k].size, k))
        ),
        stats=stats, members=member_rows(rows), n_shown=len(rows), n_members=len(members), thumb=thumb,
        map_href=links.index_with(f"cluster={cid}"),
    )

