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
    print(f"  site:  {report.site / 'index.html'}  (open it straight from disk)")
    print(f"  store: {report.store}")
    for w in report.warnings:
        print(f"  WARNING: {w}")
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
