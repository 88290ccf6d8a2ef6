"""Assemble the demo corpus from Debian packages (WordNet glosses, Jane Austen's novels, the World English Bible),
each optional, mixed in equal shares; Python's standard-library docstrings when none can be had."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from atlas.demo.texts import austen_paragraphs, bible_passages, stdlib_docstrings, wordnet_glosses


@dataclass(frozen=True)
class Source:
    """One of the demo's texts: the Debian package that ships it, how to read it, and what to call it."""

    package: str
    read: Callable[[Path], list[str]]
    title: str
    unit: str  # what one document of it is


SOURCES = {
    "wordnet": Source("wordnet-base", wordnet_glosses, "WordNet 3.0 glosses", "glosses"),
    "austen": Source("r-cran-janeaustenr", austen_paragraphs, "Jane Austen's six novels", "paragraphs"),
    "bible": Source("sword-text-web", bible_passages, "the World English Bible", "passages"),
}
_UNPACKED = ".unpacked"  # written after dpkg-deb succeeded, so a half-unpacked package is unpacked again


def _run(cmd: list[str], cwd: Path) -> bool:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=300).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class DebianPackages:
    """Debian packages unpacked under `cache` (no system-wide install); the package lists are refreshed at most once
    per build, and only when a download failed and we may (root)."""

    def __init__(self, cache: Path, log=print):
        self.cache = cache.resolve()
        self.log = log
        self.refreshed = False

    def unpacked(self, package: str) -> Path | None:
        """The folder `package` is unpacked in, or None when it cannot be had."""
        root = self.cache / package
        if (root / _UNPACKED).is_file():
            return root
        if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
            return None
        dl = self.cache / "deb"
        dl.mkdir(parents=True, exist_ok=True)
        ok = _run(["apt-get", "download", package], dl)
        if not ok and not self.refreshed and hasattr(os, "geteuid") and os.geteuid() == 0:
            self.log("  apt-get download failed; refreshing the package lists once (apt-get update)")
            self.refreshed = True
            _run(["apt-get", "update", "-q"], dl)
            ok = _run(["apt-get", "download", package], dl)
        debs = sorted(dl.glob(f"{package}_*.deb"))
        if not ok or not debs:
            return None
        shutil.rmtree(root, ignore_errors=True)
        if not _run(["dpkg-deb", "-x", str(debs[-1]), str(root)], self.cache):
            return None
        (root / _UNPACKED).write_text(debs[-1].name)
        return root


def build_demo_corpus(cache: Path, seed: int, sources: list[str], log=print) -> tuple[Path, str]:
    """Write the demo corpus as JSONL and return it with a description.

    Each source that can be had gets an equal share of the text, interleaved so that every prefix of the file (what
    a token budget reads) holds that mix; documents are shuffled within each source with `seed`.
    """
    cache.mkdir(parents=True, exist_ok=True)
    debs = DebianPackages(cache, log)
    texts: dict[str, list[str]] = {}
    for name in sources:
        src = SOURCES[name]
        root = debs.unpacked(src.package)
        if root is None:
            log(f"  {src.title} could not be had (Debian package {src.package}): going on without them")
            continue
        try:
            texts[name] = src.read(root)
        except (OSError, ValueError, UnicodeDecodeError, struct.error, zlib.error, IndexError) as exc:
            log(f"  {src.title} could not be read from {root} ({exc}): going on without them")
    texts = {k: v for k, v in texts.items() if v}
    if texts:
        parts = [f"{SOURCES[k].title} ({len(v):,} {SOURCES[k].unit})" for k, v in texts.items()]
        stem = "corpus-" + "-".join(texts)
        share = "in equal shares, " if len(texts) > 1 else ""
        note = f"{', '.join(parts)}, from Debian packages; {share}shuffled with seed {seed}"
    else:
        log("  none of the demo's texts could be had from Debian: using Python standard-library docstrings instead")
        texts = {"docstrings": stdlib_docstrings()}
        stem = "corpus-docstrings"
        note = f"Python {sys.version.split()[0]} standard-library docstrings, shuffled with seed {seed}"
    rng = np.random.default_rng(seed)
    out = cache / f"{stem}.jsonl"
    tmp = out.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for text in interleave([[docs[i] for i in rng.permutation(len(docs))] for docs in texts.values()]):
            fh.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    tmp.replace(out)
    return out, note


def interleave(streams: list[list[str]]) -> list[str]:
    """All documents of every stream, each next one taken from the stream with the fewest characters so far, so any
    prefix holds about equal text from each until the shorter ones run out."""
    taken = [0] * len(streams)
    pos = [0] * len(streams)
    out = []
    while True:
        open_ = [i for i, s in enumerate(streams) if pos[i] < len(s)]
        if not open_:
            return out
        i = min(open_, key=lambda j: (taken[j], j))
        doc = streams[i][pos[i]]
        out.append(doc)
        taken[i] += len(doc)
        pos[i] += 1
