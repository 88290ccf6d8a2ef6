"""Commands over a built atlas, one module each: search, inspect, export, serve; `open_atlas` finds its store."""

from __future__ import annotations

from pathlib import Path

from atlas.errors import AtlasError
from atlas.store import Store


def open_atlas(path: str | Path) -> Store:
    """The store of an atlas given as its .duckdb file, its folder, or its TOML config."""
    p = Path(path)
    if p.suffix == ".toml":
        from atlas.config import load_config

        cfg = load_config(p)
        p = cfg.resolve(cfg.atlas.store)
    elif p.is_dir():
        found = sorted(p.glob("*.duckdb"))
        if not found:
            raise AtlasError(f"{p} holds no .duckdb store; pass the atlas's .duckdb file or its TOML config")
        p = found[0]
    if not p.is_file():
        raise AtlasError(f"{p} does not exist; pass the atlas's .duckdb file (see `atlas build`)")
    return Store(p, read_only=True)
