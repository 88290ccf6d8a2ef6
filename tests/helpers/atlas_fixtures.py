"""Shared inputs of the pipeline tests: a tiny GPT-2 workspace, a SAELens SAE writer and a config writer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from atlas.lm.adapter import load_model
from sae_writers import save_safetensors, write_json
from tiny_models import save_tiny

EVIL = ['a <script>window.__pwned=1</script> tag', 'quotes " and \' and &amp; entity', "</script><img src=x onerror=alert(1)>"]
D_SAE = 48


def write_sae(folder: Path, d_in: int, seed: int, hook: str = "blocks.1.hook_resid_post") -> Path:
    g = torch.Generator().manual_seed(seed)
    save_safetensors(folder / "sae_weights.safetensors", {
        "W_enc": torch.randn(d_in, D_SAE, generator=g) * 0.5, "b_enc": torch.zeros(D_SAE),
        "W_dec": torch.randn(D_SAE, d_in, generator=g) * 0.3, "b_dec": torch.zeros(d_in),
    })
    write_json(folder / "cfg.json", {
        "architecture": "topk", "d_in": d_in, "d_sae": D_SAE, "k": 4, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": True, "normalize_activations": "none",
        "metadata": {"sae_lens_version": "6.0.0", "hook_name": hook, "prepend_bos": False},
    })
    return folder


def write_config(root: Path, **overrides) -> Path:
    sections = {
        "atlas": {"title": "Tiny atlas", "out_dir": "site", "store": "atlas.duckdb", "cache_dir": "cache"},
        "model": {"path": "model", "batch_tokens": 256},
        "sae": {"path": "sae"},
        "corpus": {"files": ["corpus.jsonl"], "max_tokens": 3000, "seq_len": 24},
        "harvest": {"top_k": 5, "window": 4, "n_intervals": 4, "per_interval": 2, "n_random": 3, "recon_tokens": 500,
                    "checkpoint_every": 2},
        "analysis": {"cluster_levels": [3, 6], "umap_neighbors": 5},
    }
    for key, value in overrides.items():
        section, name = key.split("__")
        sections.setdefault(section, {})[name] = value
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = root / "atlas.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    save_tiny("gpt2", root / "model")
    d = load_model(root / "model", "blocks.1.hook_resid_post").d_hook
    write_sae(root / "sae", d, seed=1)
    rng = np.random.default_rng(0)
    words = "the quick brown fox jumps over lazy dog a feature atlas explains every token of text".split()
    lines = [" ".join(rng.choice(words, size=rng.integers(6, 30))) for _ in range(300)] + EVIL
    (root / "corpus.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in lines) + "\n")
    return root
