"""Harvest throughput and peak memory on synthetic sparse codes (no model).

    .venv/bin/python benchmarks/harvest_memory.py [--tokens 1000000 10000000] [--features 16384] [--quick]

Each (features, tokens) run is a fresh subprocess so its peak RSS is its own. For scale, the table also
shows a reference SAE encode (d_in 768, ReLU) on the same batches: the harvest should cost well under it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def child(n_features: int, n_tokens: int, batch: int, active: tuple[int, int], finalize: bool) -> dict:
    import numpy as np
    import torch

    from atlas.config import HarvestSection
    from atlas.harvest import Harvester

    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    # Power-law feature frequencies, as in trained SAEs: a few dense features, a long tail of rare ones.
    freq = 1.0 / np.arange(1, n_features + 1) ** 0.8
    freq = rng.permutation(freq / freq.sum())
    scale = rng.uniform(0.5, 10.0, n_features).astype(np.float32)
    seq_len = 64
    buf = np.zeros((batch, n_features), np.float32)
    h = Harvester(n_features, HarvestSection(), seed=0)
    rss_start = _peak_rss_mib()
    t_update = t_gen = 0.0
    done = 0
    while done < n_tokens:
        t0 = time.perf_counter()
        k = rng.integers(active[0], active[1] + 1, batch)
        rows = np.repeat(np.arange(batch), k)
        feats = rng.choice(n_features, size=len(rows), p=freq)
        buf.fill(0.0)
        buf[rows, feats] = (rng.exponential(1.0, len(rows)) * scale[feats]).astype(np.float32) + 1e-3
        gidx = np.arange(done, done + batch, dtype=np.int64)
        seq = gidx // seq_len
        t1 = time.perf_counter()
        h.update(buf, gidx, seq)
        t2 = time.perf_counter()
        t_gen += t1 - t0
        t_update += t2 - t1
        done += batch
    out = {
        "features": n_features, "tokens": done, "update_tok_s": done / t_update, "update_s": t_update,
        "gen_s": t_gen, "peak_rss_update_mib": _peak_rss_mib(), "rss_before_mib": rss_start,
        "mean_active": float((buf > 0).sum(1).mean()),
    }
    if finalize:
        t0 = time.perf_counter()
        res = h.finalize()
        out["finalize_s"] = time.perf_counter() - t0
        out["peak_rss_final_mib"] = _peak_rss_mib()
        out["dead"] = int(res.dead.sum())
    # Reference: a ReLU SAE encode of the same batch size (float32; d_in 768 like GPT-2 small).
    x = torch.randn(batch, 768)
    w = torch.randn(768, n_features) / 28
    torch.relu(x @ w)
    t0 = time.perf_counter()
    reps = 3
    for _ in range(reps):
        torch.relu(x @ w)
    out["encode_tok_s"] = reps * batch / (time.perf_counter() - t0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--features", type=int, default=16384)
    p.add_argument("--small-features", type=int, default=4096)
    p.add_argument("--small-tokens", type=int, default=500_000)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--active", type=int, nargs=2, default=[32, 64])
    p.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        res = child(args.child[0], args.child[1], args.batch, tuple(args.active), finalize=True)
        print(json.dumps(res))
        return
    runs = [(args.features, n) for n in args.tokens] + [(args.small_features, args.small_tokens)]
    header = (f"{'F':>6} {'tokens':>10} {'update tok/s':>13} {'encode tok/s':>13} {'upd/enc time':>13} "
              f"{'peak RSS MiB':>13} {'after finalize':>14} {'finalize s':>10}")
    print(header)
    for f, n in runs:
        cmd = [sys.executable, __file__, "--child", str(f), str(n), "--batch", str(args.batch),
               "--active", *map(str, args.active)]
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        print(f"{f:>6} {r['tokens']:>10} {r['update_tok_s']:>13.0f} {r['encode_tok_s']:>13.0f} "
              f"{r['encode_tok_s'] / r['update_tok_s']:>13.2f} {r['peak_rss_update_mib']:>13.0f} "
              f"{r['peak_rss_final_mib']:>14.0f} {r['finalize_s']:>10.1f}", flush=True)


if __name__ == "__main__":
    main()
