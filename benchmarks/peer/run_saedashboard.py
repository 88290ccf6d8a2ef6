"""Times SAEDashboard's SaeVisRunner on the inputs benchmarks/peer/inputs.py wrote; prints one JSON line.

Runs INSIDE .cache/peer-venv (bash benchmarks/peer/install.sh), never in ours:

    .cache/peer-venv/bin/python benchmarks/peer/run_saedashboard.py --model DIR --sae DIR --tokens FILE.npz \
        --features 256 [--feature-batch 128] [--token-batch 64] [--cache] [--threads 2] [--html OUT_DIR]

The model is the HF GPT-2 our side saved, converted to TransformerLens with every weight processing step off
(no LayerNorm folding, no centring), so its `blocks.5.hook_resid_post` equals HF's `transformer.h.5` output;
the JSON reports the largest difference against the activations and SAE codes our side computed.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


class _VocabTokenizer:
    """What SAEDashboard's HTML writer reads from a tokenizer; no real tokenizer can be downloaded here."""

    def __init__(self, vocab_size: int):
        self.vocab = {f"t{i}": i for i in range(vocab_size)}
        self.pad_token_id = self.bos_token_id = self.eos_token_id = None
        self.padding_side = "right"  # TransformerLens reads it even when fed token ids


def load_tl_model(folder: Path, hook: str):
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(folder, torch_dtype=torch.float32).eval()
    c = hf.config
    cfg = HookedTransformerConfig(
        n_layers=c.n_layer, d_model=c.n_embd, n_ctx=c.n_positions, d_head=c.n_embd // c.n_head, n_heads=c.n_head,
        d_mlp=c.n_inner or 4 * c.n_embd, d_vocab=c.vocab_size, act_fn=c.activation_function, eps=c.layer_norm_epsilon,
        normalization_type="LN", positional_embedding_type="standard", original_architecture="GPT2LMHeadModel",
        default_prepend_bos=False, dtype=torch.float32, device="cpu",
    )
    model = HookedTransformer(cfg)
    # All processing off: folded or centred weights change the residual stream the SAE reads.
    model.load_and_process_state_dict(convert_gpt2_weights(hf, cfg), fold_ln=False, center_writing_weights=False,
                                      center_unembed=False, fold_value_biases=False,
                                      refactor_factored_attn_matrices=False)
    model.tokenizer = _VocabTokenizer(c.vocab_size)
    model.eval()
    return model


def load_sae(folder: Path):
    from sae_lens import SAE

    return SAE.load_from_disk(str(folder), device="cpu")


def check(model, sae, hook: str, tokens: torch.Tensor, ref_acts: np.ndarray, ref_codes: np.ndarray) -> dict:
    """Largest differences between this side's hook activations / SAE codes and ours on the first prompts."""
    n = ref_acts.shape[0]
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens[:n], names_filter=hook, stop_at_layer=int(hook.split(".")[1]) + 1)
        acts = cache[hook]
        codes = sae.encode(acts)
    ref_a, ref_c = torch.from_numpy(ref_acts), torch.from_numpy(ref_codes)
    return {
        "acts_max_abs_diff": float((acts - ref_a).abs().max()), "acts_max_abs": float(ref_a.abs().max()),
        "codes_max_abs_diff": float((codes - ref_c).abs().max()),
        "l0_peer": float((codes > 0).sum(-1).float().mean()), "l0_ours": float((ref_c > 0).sum(-1).float().mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--sae", type=Path, required=True)
    ap.add_argument("--tokens", type=Path, required=True)
    ap.add_argument("--hook", default="blocks.5.hook_resid_post")
    ap.add_argument("--features", type=int, default=128, help="the first N features")
    ap.add_argument("--feature-batch", type=int, default=128, help="its minibatch_size_features (Neuronpedia's 128)")
    ap.add_argument("--token-batch", type=int, default=64, help="its minibatch_size_tokens (prompts per forward)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--cache", action="store_true",
                    help="cache_dir set, as its Neuronpedia runner does: one model pass, reread per feature batch")
    ap.add_argument("--html", type=Path, help="also write the feature-centric HTML here and time it")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from sae_dashboard.components_config import SequencesConfig
    from sae_dashboard.data_writing_fns import save_feature_centric_vis
    from sae_dashboard.layout import SaeVisLayoutConfig
    from sae_dashboard.sae_vis_data import SaeVisConfig
    from sae_dashboard.sae_vis_runner import SaeVisRunner

    t0 = time.perf_counter()
    model = load_tl_model(args.model, args.hook)
    sae = load_sae(args.sae)
    with np.load(args.tokens) as z:
        tokens = torch.from_numpy(z["tokens"]).long()
        ref_acts, ref_codes = z["ref_acts"], z["ref_codes"]
    setup_s = time.perf_counter() - t0
    verdict = check(model, sae, args.hook, tokens, ref_acts, ref_codes)

    layout = SaeVisLayoutConfig.default_feature_centric_layout()
    for column in layout.columns.values():
        for comp in column:
            if isinstance(comp, SequencesConfig):
                # The same number of examples as our harvest keeps: 20 top, 10 quantile groups of 5.
                assert (comp.top_acts_group_size, comp.n_quantiles, comp.quantile_group_size) == (20, 10, 5)
    # One run() per feature batch, timed apiece: that is all SaeVisRunner does in its own loop, and it shows the
    # first batch (which runs the model) apart from the others (which, with --cache, reread its activations).
    cache = Path(tempfile.mkdtemp(prefix="saedashboard-acts-")) if args.cache else None
    batch_s, data = [], None
    for start in range(0, args.features, args.feature_batch):
        cfg = SaeVisConfig(
            hook_point=args.hook, features=list(range(start, min(start + args.feature_batch, args.features))),
            minibatch_size_features=args.feature_batch, minibatch_size_tokens=args.token_batch, device="cpu",
            dtype="float32", cache_dir=cache, verbose=False, feature_centric_layout=layout,
        )
        t0 = time.perf_counter()
        part = SaeVisRunner(cfg).run(encoder=sae, model=model, tokens=tokens)
        batch_s.append(time.perf_counter() - t0)
        if data is None:
            data = part
        else:
            data.update(part)
    harvest_s = sum(batch_s)
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)
    html_s = html_bytes = None
    if args.html:
        args.html.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        save_feature_centric_vis(data, args.html / "features.html")
        html_s = time.perf_counter() - t0
        html_bytes = sum(f.stat().st_size for f in args.html.rglob("*") if f.is_file())
    import resource

    versions = {p: md.version(p) for p in ("sae-dashboard", "sae-lens", "transformer-lens", "transformers", "torch",
                                           "numpy")}
    print(json.dumps({
        "features": args.features, "feature_batch": args.feature_batch, "token_batch": args.token_batch,
        "tokens": int(tokens.numel()), "prompts": int(tokens.shape[0]), "threads": torch.get_num_threads(),
        "cache": bool(args.cache), "setup_s": setup_s, "harvest_s": harvest_s, "batch_s": batch_s, "html_s": html_s, "html_bytes": html_bytes,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "check": verdict,
        "versions": versions, "load1": os.getloadavg()[0], "python": sys.version.split()[0],
    }))


if __name__ == "__main__":
    main()
