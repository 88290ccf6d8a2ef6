"""Time of the explain stage on a built atlas, and its explainers' score distributions against the keyword baseline.

    .venv/bin/python benchmarks/explain.py path/to/atlas.toml            # re-explain, then report
    .venv/bin/python benchmarks/explain.py path/to/atlas.toml --report   # report what the store holds

The explain stage's record is dropped and the build run again, so every other stage is reused and the explain
stage alone is computed. Prints the stage's timings (evidence: the SAE pass, the non-firing contexts and the
encoder pass over the sequences; offline: the offline explainer; scoring: embedding every explanation and its
AUROC), explanations per second, each source's embedding-score distribution and 20 random explanations.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from atlas.config import load_config
    from atlas.pipeline import build
    from atlas.store import Store

    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--report", action="store_true", help="only report what the store holds")
    ap.add_argument("--examples", type=int, default=20)
    args = ap.parse_args()
    cfg = load_config(args.config)
    store_path = cfg.resolve(cfg.atlas.store)
    if not args.report:
        with Store(store_path) as store:
            store.forget_stage("explain")
        build(cfg, log=lambda line: print(line) if "explain" in line else None, progress=False)
    with Store(store_path, read_only=True) as s:
        details = json.loads(s.query("SELECT details_json FROM stages WHERE stage = 'explain'")["details_json"][0])
        info = s.info()
        labels = s.table("labels")
        shown = s.table("feature_explanations", order_by="feature")
    n = len(shown)
    print(f"\n{n:,} features, {int(details.get('contexts', 0)):,} contexts in {int(details.get('sequences', 0)):,} "
          f"sequences ({int(details.get('tokens_read', 0)):,} tokens)")
    for key in ("firing_s", "negatives_s", "contexts_s", "evidence_s", "offline_s", "scoring_s", "endpoint_s"):
        if key in details:
            print(f"  {key[:-2]:<10} {details[key]:8.1f} s")
    explained = details.get("evidence_s", 0) + details.get("offline_s", 0)
    print(f"  offline explanations: {n / max(explained, 1e-9):.1f}/s (evidence included), "
          f"{n / max(details.get('offline_s', 0), 1e-9):.1f}/s (explainer alone)")
    print(f"  scoring: {len(labels) / max(details.get('scoring_s', 0), 1e-9):.0f} explanations/s once the contexts "
          "are embedded")
    print("\nembedding AUROC by source (held-out activating vs non-activating contexts):")
    for source, s in sorted(info["explanation_scores"]["embedding"].items()):
        print(f"  {source:<16} n={s['n']:>6}  mean {s['mean']:.3f}  p10 {s['p10']:.3f}  p25 {s['p25']:.3f}  "
              f"median {s['median']:.3f}  p75 {s['p75']:.3f}  p90 {s['p90']:.3f}")
    print(f"  beats the keyword baseline on: {info['explanation_scores'].get('beats_keyword', {})}")
    print(f"  shown: {info.get('explanation_counts', {})}")
    rng = np.random.default_rng(16)
    by = {src: grp.set_index("feature") for src, grp in labels.groupby("source")}
    print(f"\n{args.examples} random features: shown explanation (source, score) | keyword baseline (score)")
    for f in sorted(rng.choice(shown["feature"].to_numpy(), min(args.examples, n), replace=False)):
        row = shown.set_index("feature").loc[f]
        kw = by.get("keyword")
        base = f"{kw.at[f, 'text']} ({kw.at[f, 'score']:.2f})" if kw is not None and f in kw.index else "-"
        print(f"  {f:>6}  {row['text']} ({row['source']}, {row['score']:.2f}) | {base}")


if __name__ == "__main__":
    main()
