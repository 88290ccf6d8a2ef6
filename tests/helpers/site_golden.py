"""The golden site: a small hand-filled store, rendered, against the committed copy in `tests/site/golden/expected-site/`.

The store holds ten features (one dead, hostile text in labels and tokens), a three-level cluster tree, a
comparison with a previous atlas, steering previews of two features and a second SAE version, so every page kind
and every kind of link is written. After a change meant to alter the pages, regenerate the copy and review its diff:

    make golden        (or: python -m tests.site.golden regenerate)

Files the site copies as they are (plotly.min.js, and the scripts in site_templates/static/) are left out of the
copy: the test checks that each is the file it was copied from, which keeps the copy small and free of duplicates.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib.util
import os
import shutil
import sys
from pathlib import Path

from synthetic_store import add_comparison, add_steering, list_versions, make_synthetic_store

from atlas.site import render_site

GOLDEN = Path(__file__).resolve().parents[1] / "site" / "golden" / "expected-site"
# Files copied as they are, by site path: not committed, compared with their source instead.
TEMPLATES_STATIC = Path(__file__).resolve().parents[2] / "site_templates" / "static"
_COPIED_SCRIPTS = tuple(p.stem for p in sorted(TEMPLATES_STATIC.glob("*.js")))
VENDORED = tuple(f"{root}static/{stem}-*.{ext}" for root in ("", "versions/*/")
                 for stem, ext in (("plotly", "min.js"), *((s, "js") for s in _COPIED_SCRIPTS)))
EPOCH = "1700000000"
SMALL = dict(n_top=3, n_intervals=2, per_interval=2, n_random=2, window=7, hist_bins=6, n_neighbours=3)
VERSION = {"name": "Wide SAE", "slug": "wide-sae", "schema": "version_wide_sae", "site_path": "versions/wide-sae"}
MAIN_ENTRY = {"name": "Golden SAE", "slug": "golden-sae", "schema": "main", "site_path": ""}


def make_golden_store(path: Path) -> Path:
    """The store the golden site is rendered from; the same bytes of site on every call."""
    make_synthetic_store(path, n_features=10, seed=7, dead_share=0.2, **SMALL)
    previous = {a: f"previous feature {a} <i>&</i>" for a in range(10)}
    add_comparison(path, [
        ("matched", 0, 0, 0.91, 0.91, None), ("matched", 1, 2, 0.74, 0.74, None),
        ("split", 2, 3, 0.88, 0.61, 0.7), ("split", 2, 4, 0.88, 0.52, 0.4),
        ("merge", 3, 5, 0.83, 0.66, 0.5), ("merge", 4, 5, 0.83, 0.58, 0.45),
        ("new", -1, 6, None, None, None), ("new", -1, 7, None, None, None),
        ("vanished", 8, -1, None, None, None), ("vanished", 9, -1, None, None, None),
    ], previous, title="Golden SAE, last month", site_path="../previous%20atlas")
    add_steering(path, [0, 2])
    make_synthetic_store(path, n_features=6, seed=8, evil_text=False, schema=VERSION["schema"], **SMALL)
    add_comparison(path, [
        ("matched", 0, 0, 0.95, 0.95, None), ("split", 1, 1, 0.9, 0.7, 0.6), ("split", 1, 2, 0.9, 0.5, 0.5),
        ("merge", 2, 3, 0.8, 0.6, 0.5), ("merge", 3, 3, 0.8, 0.55, 0.4), ("new", -1, 4, None, None, None),
        ("vanished", 4, -1, None, None, None),
    ], {a: f"golden {a}" for a in range(10)}, title=MAIN_ENTRY["name"], site_path="../..",
        schema=VERSION["schema"])
    list_versions(path, [MAIN_ENTRY, VERSION])
    return path


def render_golden(folder: Path) -> Path:
    """Render the golden store into `folder`/site (the store is written beside it)."""
    folder.mkdir(parents=True, exist_ok=True)
    store = make_golden_store(folder / "golden.duckdb")
    out = folder / "site"
    before = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = EPOCH
    try:
        render_site(store, out, short_window=3, workers=1)
    finally:
        if before is None:
            del os.environ["SOURCE_DATE_EPOCH"]
        else:
            os.environ["SOURCE_DATE_EPOCH"] = before
    return out


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def vendored(rel: str) -> bool:
    return any(fnmatch.fnmatchcase(rel, pattern) for pattern in VENDORED)


def _vendored_source(rel: str) -> bytes:
    """The bytes a vendored site file was copied from."""
    stem = Path(rel).name.rsplit("-", 1)[0]
    if stem in _COPIED_SCRIPTS:
        return (TEMPLATES_STATIC / f"{stem}.js").read_bytes()
    spec = importlib.util.find_spec("plotly")
    assert spec is not None and spec.submodule_search_locations, "plotly is not installed"
    assert fnmatch.fnmatchcase(Path(rel).name, "plotly-*.min.js"), f"no known source for {rel}"
    return (Path(list(spec.submodule_search_locations)[0]) / "package_data" / "plotly.min.js").read_bytes()


def differences(site: Path, golden: Path = GOLDEN) -> str:
    """'' when `site` matches the golden copy; else what differs, with a diff of the first differing file."""
    got = [f for f in _files(site) if not vendored(f)]
    want = _files(golden)
    problems = []
    if got != want:
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        problems.append(f"files missing from the site: {missing}\nfiles not in the golden copy: {extra}")
    for rel in (f for f in _files(site) if vendored(f)):
        if (site / rel).read_bytes() != _vendored_source(rel):
            problems.append(f"{rel} differs from the file it is copied from")
    for rel in (f for f in want if f in set(got)):
        a, b = (golden / rel).read_bytes(), (site / rel).read_bytes()
        if a != b:
            diff = difflib.unified_diff(a.decode("utf-8", "replace").splitlines(),
                                        b.decode("utf-8", "replace").splitlines(),
                                        f"golden/{rel}", f"rendered/{rel}", lineterm="", n=2)
            lines = list(diff)
            shown = "\n".join(line[:300] for line in lines[:60])
            more = f"\n... {len(lines) - 60} more diff lines" if len(lines) > 60 else ""
            n_other = sum((golden / f).read_bytes() != (site / f).read_bytes() for f in want if f in set(got)) - 1
            problems.append(f"{rel} differs (and {n_other} other files):\n{shown}{more}")
            break
    return "\n\n".join(problems)


def regenerate(golden: Path = GOLDEN) -> Path:
    """Render the golden site again and replace the committed copy with it (vendored files left out)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        site = render_golden(Path(tmp))
        shutil.rmtree(golden, ignore_errors=True)
        for rel in _files(site):
            if not vendored(rel):
                (golden / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(site / rel, golden / rel)
    return golden


def main(argv: list[str]) -> int:
    if argv != ["regenerate"]:
        print("usage: python -m tests.site.golden regenerate", file=sys.stderr)
        return 2
    golden = regenerate()
    files = _files(golden)
    size = sum((golden / f).stat().st_size for f in files)
    print(f"{golden}: {len(files)} files, {size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
