"""What feature pages show from earlier renders of the same store: the example scripts and the histograms.

They are most of a feature's bytes and of its rendering time, and they depend on the store's data and a few
settings but not on the templates. So a render after a template change (or any render of an unchanged
store) reads them back instead of building them again.

There is one file per block of features. Its name is a hash of the caller's key for the store's content,
the block's bounds, the short window and the rendering code, so a changed store, setting or code simply
misses. A file holds a JSON header line (where each piece lies) and then the pieces as UTF-8, which go into
the pages without being decoded. After a render, files it did not use are deleted.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
from pathlib import Path

import numpy as np
from markupsafe import Markup

from atlas.site.contexts import FeatureHtml
from atlas.site.marker import site_code_digest
from atlas.site.tokens import ExampleScripts

_SUFFIX = ".html-cache"


class ExampleCache:
    """Blocks of feature-page pieces in `folder`, for the store whose content `key` stands for."""

    def __init__(self, folder: Path, key: str, short_window: int):
        self.folder = Path(folder)
        self._base = hashlib.sha256(f"{key}\0{int(short_window)}\0{site_code_digest()}".encode()).hexdigest()

    def name(self, lo: int, hi: int) -> str:
        return hashlib.sha256(f"{self._base}\0{lo}\0{hi}".encode()).hexdigest() + _SUFFIX

    def load(self, lo: int, hi: int) -> FeatureHtml | None:
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
        histograms = {int(f): Markup(data[body + a:body + b].decode()) for f, a, b in head["histograms"]}
        return FeatureHtml([tuple(k) for k in head["run_keys"]], head["run_lengths"],
                           ExampleScripts(data, bounds[0], bounds[1]), histograms)

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
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / self.name(lo, hi)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(json.dumps(head, separators=(",", ":")).encode() + b"\n")
            f.write(ex.buffer)
            f.write(b"".join(charts))
        os.replace(tmp, path)


def keep_only(folder: Path, names: set[str]) -> None:
    """Delete the cached pieces of every block but these."""
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return
    for path in entries:
        if path.name.endswith(_SUFFIX) and path.name not in names or ".tmp-" in path.name:
            path.unlink(missing_ok=True)
