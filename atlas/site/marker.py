"""The marker a rendered site carries: which inputs made it and what files it holds, so an unchanged site is reused.

The marker is written last into the new site, before the site is swapped into place, so a site with a
marker is always a complete one. Its key covers the caller's key (the store's content), the store's facts
that pages show, the templates, the rendering code and the libraries whose output lands in the pages; its
listing (every file's path and size) tells whether the site is still as it was written.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
from pathlib import Path

MARKER = ".atlas-site.json"
_SITE_CODE = Path(__file__).resolve().parent
_LIBRARIES = ("jinja2", "markupsafe", "plotly")


def _tree_digest(folder: Path, pattern: str) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob(pattern) if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


@functools.cache
def site_code_digest() -> str:
    """A digest of the rendering code (this package's modules): pages and cached HTML depend on it."""
    return _tree_digest(_SITE_CODE, "*.py")


def _library_versions() -> dict[str, str]:
    out = {}
    for name in _LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "none"
    return out


# Store facts that change on every build but are not worth a new site: the build time and stage timings.
_VOLATILE_FACTS = ("built_at", "stage_times")


def _hash(key: str, facts: dict, *rest) -> str:
    """A digest of `key`, the store's facts that pages show, the rendering code and libraries, and `rest`."""
    shown = {k: v for k, v in facts.items() if k not in _VOLATILE_FACTS}
    parts = [key, shown, site_code_digest(), _library_versions(), *rest]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def render_key(key: str, facts: dict, templates: Path, short_window: int) -> str:
    """`key` (the store's content) combined with everything else that decides the pages' bytes: the store's
    facts shown on the pages, the templates, the rendering code and libraries, the short window."""
    return _hash(key, facts, _tree_digest(Path(templates), "*"), int(short_window))


def pages_key(key: str, facts: dict, assets: dict[str, str], short_window: int) -> str:
    """What the feature pages' contexts depend on besides the templates: `key` (the store's content), the
    store's facts, the content-hashed asset paths the pages link to, the rendering code and libraries, and
    the short window. A template change keeps it; a changed stylesheet or script does not."""
    return _hash(key, facts, assets, int(short_window))


def _listing(root: Path) -> list[tuple[str, int]]:
    """(path, size) of every file of the site, sorted; sites nested inside it (their own marker) left out."""
    out: list[tuple[str, int]] = []
    stack = [("", str(root))]
    while stack:
        rel, folder = stack.pop()
        with os.scandir(folder) as it:
            entries = list(it)
        if rel and any(e.name == MARKER for e in entries):
            continue
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                stack.append((f"{rel}{e.name}/", e.path))
            elif rel or e.name != MARKER:
                out.append((rel + e.name, e.stat(follow_symlinks=False).st_size))
    return sorted(out)


def listing_digest(root: Path) -> str:
    text = "\n".join(f"{path}\t{size}" for path, size in _listing(root))
    return hashlib.sha256(text.encode()).hexdigest()


def marker_bytes(root: Path, key: str | None, stats: dict) -> bytes:
    """The marker for the site under `root` as it stands (written last, so it does not list itself)."""
    facts = {"key": key, "listing": listing_digest(root), **stats}
    return (json.dumps(facts, sort_keys=True, indent=1) + "\n").encode()


def reusable(out_dir: Path, key: str) -> dict | None:
    """The stats recorded for the site in `out_dir` when it was made with `key` and still holds what it held."""
    try:
        facts = json.loads((Path(out_dir) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(facts, dict) or facts.get("key") != key:
        return None
    try:
        if facts.get("listing") != listing_digest(out_dir):
            return None
    except OSError:
        return None
    return {k: v for k, v in facts.items() if k not in ("key", "listing")}
