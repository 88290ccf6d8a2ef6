"""The single write funnel: every file of the site goes through `SiteWriter.write`."""

from __future__ import annotations

import posixpath
from pathlib import Path


class SiteWriteError(Exception):
    """A page path escapes the site or two pages claim the same file."""


class SiteWriter:
    """Writes files under `root`, refusing unsafe paths and duplicate outputs; counts what it wrote."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._written: set[str] = set()
        self._dirs: set[str] = set()
        self.n_files = 0
        self.n_bytes = 0
        self.n_pages = 0

    def write(self, rel: str, content: bytes | str) -> Path:
        norm = posixpath.normpath(rel)
        if rel != norm or norm.startswith(("/", "../")) or norm in (".", "..") or "\\" in rel:
            raise SiteWriteError(f"unsafe output path {rel!r}")
        if norm in self._written:
            raise SiteWriteError(f"two outputs would write {rel!r}")
        self._written.add(norm)
        data = content.encode("utf-8") if isinstance(content, str) else content
        parent = posixpath.dirname(norm)
        if parent and parent not in self._dirs:
            (self.root / parent).mkdir(parents=True, exist_ok=True)
            self._dirs.add(parent)
        path = self.root / norm
        path.write_bytes(data)
        self.n_files += 1
        self.n_bytes += len(data)
        if norm.endswith(".html"):
            self.n_pages += 1
        return path

    def written(self) -> frozenset[str]:
        return frozenset(self._written)
