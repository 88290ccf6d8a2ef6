"""Time and memory of the analysis stage at SAE sizes: decoder neighbours and the UMAP layout.

    .venv/bin/python benchmarks/analysis.py                 # the full table (F = 4k .. 131k)
    .venv/bin/python benchmarks/analysis.py --sizes 4096 --umap 4096

Each neighbour size runs in a fresh process, so peak memory is that call's own and the
pynndescent compile lands in the approximate row. Data are "random with structure": rows
scattered around F/16 random centres in d dimensions, like a dictionary with feature families.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EXACT_UP_TO = 65_536


def structured(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 16), d), dtype=np.float32)
    x = centres[rng.integers(0, len(centres), n)]
    x += 0.8 * rng.standard_normal((n, d), dtype=np.float32)
    return x


def _status(key: str) -> int:
    """A /proc/self/status figure in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def exact_sample(x: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Brute-force neighbours of a few rows, for recall of the approximate search."""
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = u[rows] @ u.T
    s[np.arange(len(rows)), rows] = -np.inf
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def run_neighbours(n: int, d: int, k: int, sample: int) -> dict:
    from atlas.analysis.neighbours import decoder_neighbours

    x = structured(n, d)
    before = _status("VmRSS")
    exact_peak = _reset_peak()
    t0 = time.perf_counter()
    nb = decoder_neighbours(x, k=k, exact_up_to=EXACT_UP_TO, graph_neighbors=15)
    seconds = time.perf_counter() - t0
    peak = _status("VmHWM") - before if exact_peak else float("nan")
    out = {"F": n, "d": d, "mode": "exact" if nb.knn is None else "approx", "seconds": seconds,
           "peak_mb": peak / 2**20, "data_mb": x.nbytes / 2**20}
    if nb.knn is not None:
        rows = np.random.default_rng(1).choice(n, sample, replace=False)
        truth = exact_sample(x, rows, k)
        hits = sum(len(np.intersect1d(a, b)) for a, b in zip(truth, nb.idx[rows]))
        out["recall"] = hits / (k * len(rows))
    return out


def run_umap(sizes: list[int], d: int) -> list[dict]:
    from atlas.analysis.layout import umap_layout

    out = []
    for n in sizes:
        _, timings = umap_layout(structured(n, d), seed=0)
        out.append({"F": n, "d": d, **timings})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="4096,16384,65536,131072")
    ap.add_argument("--umap", default="4096,16384")
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--sample", type=int, default=1000, help="rows whose recall@k is checked")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # internal: one size in this process
    args = ap.parse_args()
    if args.case == "neighbours":
        print(json.dumps(run_neighbours(int(args.sizes), args.d, args.k, args.sample)))
        return
    if args.case == "umap":
        print(json.dumps(run_umap([int(s) for s in args.umap.split(",")], args.d)))
        return

    print(f"decoder neighbours, k={args.k}, d={args.d} (exact up to {EXACT_UP_TO})", flush=True)
    print(f"{'F':>8} {'mode':>7} {'seconds':>9} {'peak MB':>9} {'data MB':>9} {'recall@k':>9}", flush=True)
    for n in [s for s in args.sizes.split(",") if s]:
        r = _child(["--case", "neighbours", "--sizes", n, "--d", str(args.d), "--k", str(args.k),
                    "--sample", str(args.sample)])
        if r:
            rec = f"{r['recall']:.4f}" if "recall" in r else "exact"
            print(f"{r['F']:>8} {r['mode']:>7} {r['seconds']:>9.1f} {r['peak_mb']:>9.0f} {r['data_mb']:>9.0f} "
                  f"{rec:>9}", flush=True)
    if args.umap:
        print(f"\nUMAP layout, d={args.d}, one process (compile is paid by the first size)", flush=True)
        print(f"{'F':>8} {'compile s':>10} {'fit s':>9}", flush=True)
        for r in _child(["--case", "umap", "--umap", args.umap, "--d", str(args.d)]) or []:
            print(f"{r['F']:>8} {r['compile_s']:>10.1f} {r['fit_s']:>9.1f}", flush=True)


def _child(argv: list[str]):
    proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  failed: {' '.join(argv)}\n{proc.stderr[-2000:]}", flush=True)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
