"""The single write funnel: every file of the site goes through `SiteWriter.write`."""

from __future__ import annotations

import os
import posixpath
import stat
from dataclasses import dataclass, field
from pathlib import Path


class SiteWriteError(Exception):
    """A page path escapes the site or two pages claim the same file."""


@dataclass
class WriteCounts:
    """What one writer put down: the paths it claimed and how many files, bytes and pages, and files kept."""

    paths: list[str] = field(default_factory=list)
    n_files: int = 0
    n_bytes: int = 0
    n_pages: int = 0
    n_kept: int = 0

    def add(self, other: "WriteCounts") -> None:
        self.paths.extend(other.paths)
        self.n_files += other.n_files
        self.n_bytes += other.n_bytes
        self.n_pages += other.n_pages
        self.n_kept += other.n_kept


class SiteWriter:
    """Writes files under `root`, refusing unsafe paths and duplicate outputs; counts what it wrote.

    With `previous` (the site being replaced), a file whose bytes equal the previous site's file at the
    same path is hard-linked from it instead of written, so it keeps its bytes and timestamps: hosts that
    sync by size and time then upload only what changed. Several writers (one per worker process) may
    share a root; `merge` gathers their counts and checks that no two claimed the same path."""

    def __init__(self, root: Path, previous: Path | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.previous = Path(previous) if previous is not None else None
        self._root_text = str(self.root)
        self._previous_text = str(self.previous) if previous is not None else None
        self._written: set[str] = set()
        self._dirs: set[str] = set()
        self.counts = WriteCounts()

    def _claim(self, rel: str) -> str:
        norm = posixpath.normpath(rel)
        if rel != norm or norm.startswith(("/", "../")) or norm in (".", "..") or "\\" in rel:
            raise SiteWriteError(f"unsafe output path {rel!r}")
        if norm in self._written:
            raise SiteWriteError(f"two outputs would write {rel!r}")
        self._written.add(norm)
        self.counts.paths.append(norm)
        return norm

    def _count(self, norm: str, size: int) -> None:
        c = self.counts
        c.n_files += 1
        c.n_bytes += size
        if norm.endswith(".html"):
            c.n_pages += 1

    def write(self, rel: str, content: bytes | str) -> Path:
        norm = self._claim(rel)
        data = content.encode("utf-8") if isinstance(content, str) else content
        parent = posixpath.dirname(norm)
        if parent and parent not in self._dirs:
            (self.root / parent).mkdir(parents=True, exist_ok=True)
            self._dirs.add(parent)
        # Plain os calls on text paths: a large site writes tens of thousands of files.
        path = os.path.join(self._root_text, norm)
        if self._keep_previous(norm, data, path):
            self.counts.n_kept += 1
        else:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            try:
                left = memoryview(data)
                while left:
                    left = left[os.write(fd, left):]
            finally:
                os.close(fd)
        self._count(norm, len(data))
        return Path(path)

    def _keep_previous(self, norm: str, data: bytes, path: str) -> bool:
        """Put the previous site's file at `path` if its bytes equal `data`; False where there is none."""
        if self._previous_text is None:
            return False
        old = os.path.join(self._previous_text, norm)
        try:
            st = os.lstat(old)
            if not stat.S_ISREG(st.st_mode) or st.st_size != len(data):
                return False
            with open(old, "rb") as f:
                if f.read() != data:
                    return False
        except OSError:
            return False
        try:
            os.link(old, path, follow_symlinks=False)
        except OSError:  # a filesystem without hard links: copy the bytes, then the timestamps
            Path(path).write_bytes(data)
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        return True

    def merge(self, other: WriteCounts) -> None:
        """Take in what another writer on the same root wrote."""
        for norm in other.paths:
            if norm in self._written:
                raise SiteWriteError(f"two outputs would write {norm!r}")
            self._written.add(norm)
        self.counts.add(other)

    def written(self) -> frozenset[str]:
        return frozenset(self._written)
