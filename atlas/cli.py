"""The `atlas` command: thin subcommands over the library."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from atlas.errors import AtlasError

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "data" / "demo.toml"


def _build(args) -> int:
    from atlas.config import load_config
    from atlas.pipeline import build

    path = Path(args.config) if args.config else DEMO_CONFIG
    cfg = load_config(path)
    if args.full:
        cfg.demo.full = True
    t0 = time.perf_counter()
    print(f"Building the atlas from {path}")
    report = build(cfg)
    print(f"Done in {time.perf_counter() - t0:.1f} s.")
    print(f"  site:  {(report.site / 'index.html').resolve()}  (open it straight from disk)")
    print(f"  store: {report.store.resolve()}")
    for w in report.warnings:
        print(f"  WARNING: {w}")
    return 0


def _search(args) -> int:
    from atlas.commands import open_atlas
    from atlas.commands.search import search_atlas

    with open_atlas(args.atlas) as store:
        result = search_atlas(store, args.query, limit=args.limit)
    for wrong, right in sorted(result.corrections.items()):
        print(f"(searching for {right!r} instead of {wrong!r})")
    if not result.hits:
        print(f"nothing matches {args.query!r}")
        return 1
    for h in result.hits:
        print(f"{h.kind:<7} {h.item:>7}  {h.score:5.2f}  {h.label[:60]:<60}  [{h.why}]  {h.page}")
    return 0


def _inspect(args) -> int:
    from atlas.commands import open_atlas
    from atlas.commands.inspect import inspect_text

    with open_atlas(args.atlas) as store:
        rows = inspect_text(store, args.text, top=args.top)
        site = store.info().get("site_dir_abs", "")
    if not rows:
        print("no feature fires on this text")
        return 1
    print(f"{'feature':>7}  {'max':>8}  {'tokens':>6}  {'at token':<14} label  (page under {site})")
    for r in rows:
        print(f"{r['feature']:>7}  {r['max']:>8.3f}  {r['n_tokens']:>6}  {r['token'][:14]!r:<14} {r['label'][:50]}  {r['page']}")
    return 0


def _serve(args) -> int:
    from atlas.commands.serve import serve, site_folder

    serve(site_folder(args.atlas), args.port)
    return 0


def _export(args) -> int:
    from atlas.commands import open_atlas
    from atlas.commands.export import export_neuronpedia, export_parquet

    if not (args.parquet or args.neuronpedia):
        print("error: give --parquet DIR and/or --neuronpedia DIR", file=sys.stderr)
        return 2
    with open_atlas(args.atlas) as store:
        if args.parquet:
            files = export_parquet(store, Path(args.parquet))
            print(f"wrote {len(files)} Parquet files to {args.parquet}")
        if args.neuronpedia:
            root = export_neuronpedia(store, Path(args.neuronpedia))
            print(f"wrote a Neuronpedia export to {root}")
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = argparse.ArgumentParser(prog="atlas", description="Explain every feature of an SAE as a static website.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build an atlas (store + site) from a TOML config; no config: the demo")
    b.add_argument("config", nargs="?", help="the TOML config (default: the embedded demo)")
    b.add_argument("--full", action="store_true", help="demo only: ~1M tokens instead of ~300k")
    b.set_defaults(func=_build)
    s = sub.add_parser("search", help="find features and clusters by meaning, label, top token, explanation or "
                                      "cluster name")
    s.add_argument("atlas", help="the atlas's .duckdb file (or its TOML config)")
    s.add_argument("query")
    s.add_argument("--limit", type=int, default=20)
    s.set_defaults(func=_search)
    i = sub.add_parser("inspect", help="run the model and SAE on some text and list the features that fire most")
    i.add_argument("atlas")
    i.add_argument("text")
    i.add_argument("--top", type=int, default=15)
    i.set_defaults(func=_inspect)
    v = sub.add_parser("serve", help="preview the site on localhost (it also works straight from disk)")
    v.add_argument("atlas", help="the .duckdb file, its TOML config, or the site folder")
    v.add_argument("--port", type=int, default=8000)
    v.set_defaults(func=_serve)
    e = sub.add_parser("export", help="export the store as Parquet or in Neuronpedia's export layout")
    e.add_argument("atlas")
    e.add_argument("--parquet", metavar="DIR")
    e.add_argument("--neuronpedia", metavar="DIR")
    e.set_defaults(func=_export)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except AtlasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; finished stages are kept and the next build resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
