"""The house rules that keep the code navigable, checked over atlas/ as text (nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "atlas"
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import in the file, at any depth."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.append((base, [a.name for a in node.names]))
    return out


def _atlas_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        for target, names in _imports(name, path):
            for candidate in [f"{target}.{n}" for n in names] + [target]:
                if candidate in MODULES and candidate != name:
                    edges[name].add(candidate)
                    break
    return edges


def test_no_module_is_over_the_size_limit():
    big = {n: len(p.read_text().splitlines()) for n, p in MODULES.items()}
    assert {n: k for n, k in big.items() if k > MAX_LINES} == {}


def test_no_import_circle_between_modules():
    edges = _atlas_edges()
    # A package's __init__ importing its own submodules is how packages work; circles elsewhere are not.
    for name in edges:
        edges[name] = {t for t in edges[name] if not (t.startswith(name + ".") and MODULES[name].name == "__init__.py")}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_no_private_name_is_imported_across_modules():
    found = [(n, t, x) for n, p in MODULES.items() for t, names in _imports(n, p) for x in names
             if t.startswith("atlas") and x.startswith("_") and not x.startswith("__")]
    assert found == []


def test_only_the_store_imports_duckdb_and_rendering_never_imports_torch():
    duck = [n for n, p in MODULES.items() for t, _ in _imports(n, p) if t.split(".")[0] == "duckdb"]
    assert duck and all(n.startswith("atlas.store") for n in duck)
    torchy = [n for n, p in MODULES.items() for t, _ in _imports(n, p)
              if n.startswith("atlas.site") and t.split(".")[0] in ("torch", "transformers")]
    assert torchy == []


def test_test_modules_have_unique_names():
    # Test folders are not packages, so two test files with one name would shadow each other at collection.
    names = [p.name for p in (ROOT.parent / "tests").rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
