"""The single write funnel: every file of the site goes through `SiteWriter.write`."""

from __future__ import annotations

import os
import posixpath
import shutil
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
    share a root; `merge` gathers their counts and checks that no two claimed the same path.

    With `recycled`, `root` already holds files (an older site, kept as scratch): each file is overwritten in
    place where no other path shares it, and `prune` then deletes what was not written. On ext4 without a
    journal, creating a file soon after many were deleted costs up to 1 ms of CPU (the allocator skips every
    recently freed inode); overwriting one costs about 30 µs."""

    def __init__(self, root: Path, previous: Path | None = None, recycled: bool = False):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.previous = Path(previous) if previous is not None else None
        self.recycled = recycled
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
            self._make_dir(parent)
            self._dirs.add(parent)
        # Plain os calls on text paths: a large site writes tens of thousands of files.
        path = os.path.join(self._root_text, norm)
        here = self._existing(path)
        if self._keep_previous(norm, data, path, here):
            self.counts.n_kept += 1
        else:
            self._put(path, data, here)
        self._count(norm, len(data))
        return Path(path)

    def _existing(self, path: str) -> os.stat_result | None:
        """What a recycled root already holds at `path` (a fresh root holds nothing)."""
        if not self.recycled:
            return None
        try:
            return os.lstat(path)
        except FileNotFoundError:
            return None

    def _make_dir(self, parent: str) -> None:
        if self.recycled:  # a recycled root may have a file (or a link) where a folder goes
            parts = parent.split("/")
            for k in range(1, len(parts) + 1):
                p = os.path.join(self._root_text, *parts[:k])
                if os.path.islink(p) or os.path.lexists(p) and not os.path.isdir(p):
                    os.unlink(p)
        (self.root / parent).mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _remove(path: str, st: os.stat_result) -> None:
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)

    def _put(self, path: str, data: bytes, here: os.stat_result | None) -> None:
        """Write `data` at `path`: in place over a recycled file that nothing else links to (no O_TRUNC:
        freeing its blocks first costs more than the write), else as a new file."""
        if here is not None and (not stat.S_ISREG(here.st_mode) or here.st_nlink != 1):
            self._remove(path, here)  # shared with the live site (or another copy): never written through
            here = None
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if here is None else 0)
        fd = os.open(path, flags, 0o666)
        try:
            left = memoryview(data)
            while left:
                left = left[os.write(fd, left):]
            if here is not None and here.st_size > len(data):
                os.ftruncate(fd, len(data))
        finally:
            os.close(fd)

    def _keep_previous(self, norm: str, data: bytes, path: str, here: os.stat_result | None) -> bool:
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
        if here is not None:
            if (here.st_ino, here.st_dev) == (st.st_ino, st.st_dev):
                return True  # the recycled root holds that very file already
            self._remove(path, here)
        try:
            os.link(old, path, follow_symlinks=False)
        except OSError:  # a filesystem without hard links: copy the bytes, then the timestamps
            Path(path).write_bytes(data)
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        return True

    def prune(self, keep_folders: frozenset[str] = frozenset()) -> None:
        """Delete what a recycled root holds besides the files written (and folders left empty), leaving the
        folders in `keep_folders` (relative paths: sites nested in this one) alone."""
        if not self.recycled:
            return
        for folder, dirs, files in os.walk(self._root_text, topdown=False):
            rel = os.path.relpath(folder, self._root_text)
            rel = "" if rel == "." else rel.replace(os.sep, "/")
            if any(rel == k or rel.startswith(k + "/") for k in keep_folders):
                continue
            for name in files:
                norm = f"{rel}/{name}" if rel else name
                if norm not in self._written:
                    os.unlink(os.path.join(folder, name))
            for name in dirs:
                p = os.path.join(folder, name)
                sub = f"{rel}/{name}" if rel else name
                if os.path.islink(p):
                    os.unlink(p)
                elif sub not in keep_folders and not os.listdir(p):
                    os.rmdir(p)

    def merge(self, other: WriteCounts) -> None:
        """Take in what another writer on the same root wrote."""
        for norm in other.paths:
            if norm in self._written:
                raise SiteWriteError(f"two outputs would write {norm!r}")
            self._written.add(norm)
        self.counts.add(other)

    def written(self) -> frozenset[str]:
        return frozenset(self._written)
