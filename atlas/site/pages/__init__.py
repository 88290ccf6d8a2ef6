"""The site's page kinds: for each, its template and the typed context that template may use, and nothing else.

Templates are rendered with `StrictUndefined`, and a test checks that each template names only the fields of
its context (it reads `PAGES`, so a new page kind is checked as soon as it is registered here). A new page
kind is a context type and its builder in a module of this package, a template, and one line below.
"""

from __future__ import annotations

from typing import NamedTuple

from atlas.site.pages.cluster import ClusterPage
from atlas.site.pages.common import template_vars
from atlas.site.pages.compare import ComparePage
from atlas.site.pages.feature import FeaturePage
from atlas.site.pages.overview import AboutPage, DeadPage, IndexPage


class PageKind(NamedTuple):
    template: str  # in the templates folder
    context: type  # a frozen dataclass; its fields are the template's names


PAGES: dict[str, PageKind] = {
    "index": PageKind("index.html", IndexPage),
    "feature": PageKind("feature.html", FeaturePage),
    "cluster": PageKind("cluster.html", ClusterPage),
    "about": PageKind("about.html", AboutPage),
    "compare": PageKind("compare.html", ComparePage),
    "dead": PageKind("dead.html", DeadPage),
}

__all__ = ["PAGES", "PageKind", "template_vars"]
