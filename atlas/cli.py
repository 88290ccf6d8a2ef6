"""The `atlas` command: thin subcommands over the library."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from atlas.errors import AtlasError

# Threads that wait for work sleep instead of spinning. On a busy machine a spinning thread burns the core its partner
# needs: measured on 2 shared cores, the model ran at 300-870 tokens/s with spinning threads and 1,250 with sleeping
# ones. Read by the OpenMP runtime when torch loads it, so set before any command imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
    from atlas.commands.search import search

    with open_atlas(args.atlas) as store:
        hits = search(store, args.query, limit=args.limit)
    if not hits:
        print(f"no feature matches {args.query!r}")
        return 1
    for h in hits:
        print(f"{h.feature:>7}  {h.label[:60]:<60}  [{h.why}]  {h.page}")
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


def _steer(args) -> int:
    from atlas.commands import open_atlas
    from atlas.commands.steer import format_run, steer_feature

    with open_atlas(args.atlas) as store:
        run = steer_feature(store, args.feature, args.prompt, args.strength, args.tokens)
    print(format_run(run, args.prompt), end="")
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


def _version() -> str:
    import atlas

    return atlas.__version__


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = argparse.ArgumentParser(prog="atlas", description="Explain every feature of an SAE as a static website.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build an atlas (store + site) from a TOML config; no config: the demo")
    b.add_argument("config", nargs="?", help="the TOML config (default: the embedded demo)")
    b.add_argument("--full", action="store_true", help="demo only: ~1M tokens instead of ~300k")
    b.set_defaults(func=_build)
    s = sub.add_parser("search", help="find features by label, top token, explanation or cluster name")
    s.add_argument("atlas", help="the atlas's .duckdb file (or its TOML config)")
    s.add_argument("query")
    s.add_argument("--limit", type=int, default=20)
    s.set_defaults(func=_search)
    i = sub.add_parser("inspect", help="run the model and SAE on some text and list the features that fire most")
    i.add_argument("atlas")
    i.add_argument("text")
    i.add_argument("--top", type=int, default=15)
    i.set_defaults(func=_inspect)
    st = sub.add_parser("steer", help="continue a prompt with one feature added at the SAE's hook (causal LMs)")
    st.add_argument("atlas")
    st.add_argument("feature", type=int)
    st.add_argument("prompt")
    st.add_argument("--strength", type=float, action="append", metavar="S",
                    help="a multiple of the feature's largest activation (repeat it; default: the atlas's strengths)")
    st.add_argument("--tokens", type=int, metavar="N", help="new tokens per continuation (default: the atlas's)")
    st.set_defaults(func=_steer)
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
    except BrokenPipeError:
        # The reader went away (`atlas search ... | head -1`): stop quietly, as other commands do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"error: {exc.strerror or exc}{where}; check that the path exists, is writable and that the disk has "
              "room; finished stages are kept", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
