"""What feature pages take from earlier renders of the same store: their example scripts and histograms, and
their whole page contexts.

Most of a feature page's rendering time goes into pieces that depend on the store's data and a few settings
but not on the templates. So a render after a template change (or any render of an unchanged store) reads
them back instead of building them again, and runs only the templates.

There are two files per block of features. One holds the example scripts and the histograms: a JSON header
line (where each piece lies), then the pieces as UTF-8, which go into the site without being decoded. Its
name is a hash of the caller's key for the store's content, the block's bounds, the short window and the
rendering code, so a changed store, setting or code simply misses. The other holds the block's page
contexts (tagged JSON that can build only the site's own record types: `context_codec`); its name also covers the
store's facts and the content-hashed paths of the assets the pages link to, so a changed stylesheet or script
misses it while a changed template does not. After a render, files it did not use are deleted.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
from pathlib import Path

import numpy as np
from markupsafe import Markup

from atlas.site import context_codec
from atlas.site.feature_data import FeatureHtml
from atlas.site.marker import pages_key, site_code_digest
from atlas.site.tokens import ExampleScripts

_SUFFIX = ".html-cache"
_PAGES_SUFFIX = ".pages-cache"
_SUFFIXES = (_SUFFIX, _PAGES_SUFFIX)


class FeatureCache:
    """Blocks of feature-page pieces in `folder`, for the store whose content `key` stands for; with
    `pages_key` (see marker.pages_key), the blocks' page contexts too."""

    def __init__(self, folder: Path, key: str, short_window: int, pages_key: str | None = None):
        self.folder = Path(folder)
        self.key, self.short_window = key, int(short_window)
        self._base = hashlib.sha256(f"{key}\0{int(short_window)}\0{site_code_digest()}".encode()).hexdigest()
        self._pages_base = pages_key

    def with_pages(self, facts: dict, assets: dict[str, str]) -> "FeatureCache":
        """This cache, keeping page contexts too, for a site with these store facts and asset paths."""
        return FeatureCache(self.folder, self.key, self.short_window,
                            pages_key(self.key, facts, assets, self.short_window))

    def name(self, lo: int, hi: int) -> str:
        return hashlib.sha256(f"{self._base}\0{lo}\0{hi}".encode()).hexdigest() + _SUFFIX

    def pages_name(self, lo: int, hi: int) -> str | None:
        if self._pages_base is None:
            return None
        return hashlib.sha256(f"{self._pages_base}\0{lo}\0{hi}".encode()).hexdigest() + _PAGES_SUFFIX

    def load_pages(self, lo: int, hi: int) -> list | None:
        """The page contexts saved for features lo..hi, or None."""
        name = self.pages_name(lo, hi)
        if name is None:
            return None
        try:
            data = (self.folder / name).read_bytes()
            size = int.from_bytes(data[:8], "little")
            if len(data) != 8 + size:  # cut short: build them again
                return None
            pages = context_codec.loads(data[8:])
        except (OSError, context_codec.CodecError):
            return None
        return pages if isinstance(pages, list) and len(pages) == hi - lo else None

    def save_pages(self, lo: int, hi: int, pages: list) -> None:
        name = self.pages_name(lo, hi)
        if name is not None:
            body = context_codec.dumps(pages)
            self._put(name, [len(body).to_bytes(8, "little"), body])

    def _put(self, name: str, parts: list[bytes]) -> None:
        """Write a cache file whole, under a temporary name first, so a reader never sees half of it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / name
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            for part in parts:
                f.write(part)
        os.replace(tmp, path)

    def load(self, lo: int, hi: int, histograms: bool = True) -> FeatureHtml | None:
        """The block's example scripts and (unless `histograms` is False: the page contexts hold them too) its
        histograms, or None."""
        try:
            with open(self.folder / self.name(lo, hi), "rb") as f:
                # Mapped, not read: no example script is copied until it is written into the site.
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            end = data.find(b"\n")
            head = json.loads(data[:end])
        except (OSError, ValueError):
            return None
        body = end + 1
        if len(data) != body + head.get("size", -1):  # cut short: build it again
            return None
        bounds = np.asarray(head["examples"], dtype=np.int64).reshape(2, -1) + body
        charts = {int(f): Markup(data[body + a:body + b].decode()) for f, a, b in head["histograms"]} \
            if histograms else {}
        return FeatureHtml([tuple(k) for k in head["run_keys"]], head["run_lengths"],
                           ExampleScripts(data, bounds[0], bounds[1]), charts)

    def save(self, lo: int, hi: int, html: FeatureHtml) -> None:
        ex = html.examples
        charts, spans, at = [], [], len(ex.buffer)
        for f, chart in html.histograms.items():
            b = str(chart).encode()
            charts.append(b)
            spans.append((f, at, at + len(b)))
            at += len(b)
        head = {"run_keys": html.run_keys, "run_lengths": html.run_lengths,
                "examples": [ex.starts.tolist(), ex.ends.tolist()], "histograms": spans, "size": at}
        self._put(self.name(lo, hi), [json.dumps(head, separators=(",", ":")).encode() + b"\n", ex.buffer,
                                      b"".join(charts)])


def keep_only(folder: Path, names: set[str]) -> None:
    """Delete the cached pieces of every block but these."""
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return
    for path in entries:
        if path.name.endswith(_SUFFIXES) and path.name not in names or ".tmp-" in path.name:
            path.unlink(missing_ok=True)
