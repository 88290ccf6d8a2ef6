"""Assemble the demo corpus: WordNet 3.0 glosses (Debian's wordnet-base), else standard-library docstrings."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np

WORDNET_FILES = ("data.adj", "data.adv", "data.noun", "data.verb")


def _run(cmd: list[str], cwd: Path) -> bool:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=300).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def fetch_wordnet(cache: Path, log=print) -> Path | None:
    """Unpack Debian's wordnet-base into `cache` (no system-wide install); the data folder or None."""
    cache = cache.resolve()
    data = cache / "wordnet-base" / "usr" / "share" / "wordnet"
    if all((data / f).is_file() for f in WORDNET_FILES):
        return data
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        return None
    dl = cache / "deb"
    dl.mkdir(parents=True, exist_ok=True)
    ok = _run(["apt-get", "download", "wordnet-base"], dl)
    if not ok and hasattr(os, "geteuid") and os.geteuid() == 0:
        log("  apt-get download failed; refreshing the package lists once (apt-get update)")
        _run(["apt-get", "update", "-q"], dl)
        ok = _run(["apt-get", "download", "wordnet-base"], dl)
    debs = sorted(dl.glob("wordnet-base*.deb"))
    if not ok or not debs:
        return None
    if not _run(["dpkg-deb", "-x", str(debs[-1]), str(cache / "wordnet-base")], cache):
        return None
    return data if all((data / f).is_file() for f in WORDNET_FILES) else None


def wordnet_glosses(data: Path) -> list[str]:
    """One text per synset: its words, then its gloss (definition and usage examples)."""
    texts = []
    for name in WORDNET_FILES:
        with (data / name).open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("  ") or "|" not in line:
                    continue  # licence header
                head, gloss = line.split("|", 1)
                fields = head.split()
                n_words = int(fields[3], 16)
                words = [fields[4 + 2 * i].replace("_", " ") for i in range(n_words)]
                words = [w.split("(")[0] for w in words]  # adjective markers like (a)
                texts.append(f"{', '.join(words)}: {gloss.strip()}")
    return texts


def stdlib_docstrings() -> list[str]:
    """Paragraphs of the docstrings in Python's standard library sources."""
    root = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for path in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        if "test" in path.parts[-2:][0] or "site-packages" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    for para in doc.split("\n\n"):
                        para = " ".join(para.split())
                        if len(para) > 40:
                            texts.append(para)
    return texts


def build_demo_corpus(cache: Path, seed: int, log=print) -> tuple[Path, str]:
    """Write the demo corpus as JSONL (shuffled with `seed`); returns the file and a description."""
    cache.mkdir(parents=True, exist_ok=True)
    data = fetch_wordnet(cache, log)
    if data is not None:
        texts, source = wordnet_glosses(data), "WordNet 3.0 glosses (Debian wordnet-base)"
    else:
        log("  WordNet (Debian's wordnet-base) could not be fetched: using Python standard-library docstrings instead")
        texts, source = stdlib_docstrings(), f"Python {sys.version.split()[0]} standard-library docstrings"
    order = np.random.default_rng(seed).permutation(len(texts))
    out = cache / ("wordnet.jsonl" if data is not None else "stdlib_docs.jsonl")
    tmp = out.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for i in order:
            fh.write(json.dumps({"text": texts[i]}, ensure_ascii=False) + "\n")
    tmp.replace(out)
    return out, f"{source}, {len(texts)} texts, shuffled with seed {seed}"
