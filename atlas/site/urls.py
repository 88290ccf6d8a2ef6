"""The one URL authority: every page's output path and every link between pages come from here.

Paths are POSIX, relative to the site root. A page's links come from `SiteUrls.at(page)`, which makes each
relative to that page (`root_of(page) + path`), so the site works from `file://` and from any sub-folder of
any static host.
"""

from __future__ import annotations

import hashlib
import posixpath

FEATURES_PER_SHARD = 1000


class SiteUrls:
    """Output paths of pages and content-hashed assets, and relative links between them."""

    def __init__(self, shard_size: int = FEATURES_PER_SHARD):
        self.shard_size = shard_size
        self._assets: dict[str, str] = {}
        self._roots: dict[str, str] = {}

    # ---- pages ---------------------------------------------------------------------------
    index = "index.html"
    about = "about.html"
    compare = "compare.html"
    dead = "dead.html"

    def feature(self, n: int) -> str:
        # Folders of a thousand pages keep directory listings fast on every filesystem.
        return f"features/{int(n) // self.shard_size}/{int(n)}.html"

    def feature_examples(self, n: int) -> str:
        """The script holding feature n's example contexts, beside its page (see tokens.py)."""
        return f"features/{int(n) // self.shard_size}/{int(n)}.examples.js"

    def cluster(self, cluster_id: int) -> str:
        return f"clusters/{int(cluster_id)}.html"

    def index_with(self, fragment: str) -> str:
        return f"{self.index}#{fragment}"

    def js_config(self) -> dict:
        """What the map's script needs to build feature and cluster links itself."""
        return {"featureDir": "features/", "shardSize": self.shard_size, "clusterDir": "clusters/"}

    # ---- assets --------------------------------------------------------------------------
    def register_asset(self, name: str, content: bytes) -> str:
        """Give `name` (e.g. 'static/atlas.css') a content-hashed path and remember it."""
        digest = hashlib.sha256(content).hexdigest()[:12]
        head, dot, ext = name.partition(".")
        path = f"{head}-{digest}.{ext}" if dot else f"{name}-{digest}"
        if name in self._assets and self._assets[name] != path:
            raise ValueError(f"asset {name} registered twice with different content")
        self._assets[name] = path
        return path

    def assets(self) -> dict[str, str]:
        """Every registered asset's name and content-hashed path."""
        return dict(self._assets)

    def asset(self, name: str) -> str:
        try:
            return self._assets[name]
        except KeyError:
            raise KeyError(f"asset {name!r} was not registered before use") from None

    # ---- links ---------------------------------------------------------------------------
    def root_of(self, page: str) -> str:
        """The prefix that leads from `page` back to the site root ('' or '../../')."""
        root = self._roots.get(page)
        if root is None:
            root = self._roots[page] = "../" * posixpath.normpath(page).count("/")
        return root

    def at(self, page: str) -> "PageUrls":
        """The links of `page`: every href it holds comes from here, relative to it."""
        return PageUrls(self, page)


class PageUrls:
    """The URL authority bound to one page: links from that page to any other, relative to it."""

    __slots__ = ("urls", "page", "root")

    def __init__(self, urls: SiteUrls, page: str):
        self.urls, self.page, self.root = urls, page, urls.root_of(page)

    def to(self, path: str) -> str:
        """A link to the site path `path` (as SiteUrls gives it)."""
        return self.root + path

    @property
    def index(self) -> str:
        return self.root + self.urls.index

    @property
    def about(self) -> str:
        return self.root + self.urls.about

    @property
    def compare(self) -> str:
        return self.root + self.urls.compare

    @property
    def dead(self) -> str:
        return self.root + self.urls.dead

    def feature(self, n: int) -> str:
        return self.root + self.urls.feature(n)

    def cluster(self, cluster_id: int) -> str:
        return self.root + self.urls.cluster(cluster_id)

    def index_with(self, fragment: str) -> str:
        """The map, opened at `fragment` (e.g. 'feature=7')."""
        return self.root + self.urls.index_with(fragment)

    def asset(self, name: str) -> str:
        """A registered asset's content-hashed path."""
        return self.root + self.urls.asset(name)

    def feature_examples(self, n: int) -> str:
        """Feature n's example script; from its own page, just the file's name."""
        return posixpath.relpath(self.urls.feature_examples(n), posixpath.dirname(self.page) or ".")

    def in_site(self, site: str | None, path: str) -> str:
        """A link to `path` of another atlas's site whose root lies at `site` (relative to this site's root,
        URL-quoted: a previous atlas, another SAE version); '' when that site is unknown."""
        return f"{self.root}{site.rstrip('/')}/{path}" if site else ""

    def feature_in_site(self, site: str | None, n: int) -> str:
        """Feature n's page in another atlas's site (see `in_site`), whose pages use the default shard size."""
        return self.in_site(site, f"features/{int(n) // FEATURES_PER_SHARD}/{int(n)}.html")
