"""The one URL authority: every page's output path and every link between pages come from here.

Paths are POSIX, relative to the site root. A link from page A to page B is `root_of(A) + B`, so the
site works from `file://` and from any sub-folder of any static host.
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

    def href(self, from_page: str, to_path: str) -> str:
        return self.root_of(from_page) + to_path

    def previous_feature(self, from_page: str, previous_site: str | None, n: int) -> str:
        """Link to feature `n` of the previous atlas, whose site lies at `previous_site` (relative to this
        site's root, URL-quoted); '' when that site is unknown. Its pages use the default shard size."""
        if not previous_site:
            return ""
        return f"{self.root_of(from_page)}{previous_site.rstrip('/')}/features/{int(n) // FEATURES_PER_SHARD}/{int(n)}.html"

    def previous_index(self, from_page: str, previous_site: str | None) -> str:
        return f"{self.root_of(from_page)}{previous_site.rstrip('/')}/{self.index}" if previous_site else ""
