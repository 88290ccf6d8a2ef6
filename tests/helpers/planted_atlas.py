"""A small atlas whose features' meanings are known: precomputed activations of a topical corpus in which planted
SAE features fire exactly on one word each (feature 0 on " fox", 1 on " market", 2 on " rain"); the other features
are random. The model folder is a tiny BERT whose word-level tokenizer knows every word of the corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import transformers as T

from sae_writers import save_safetensors, write_json

PLANTED = {0: "fox", 1: "market", 2: "rain"}
D, D_SAE = 16, 24
SENTENCES = [
    "the fox chased a rabbit across the field", "a red fox slept in its den under the oak tree",
    "wolves and a fox hunt deer in the forest", "the hungry fox crept toward the hen house at night",
    "an owl watched the fox leave its burrow", "the fox and the badger share the woods with many birds",
    "the stock market fell as investors sold their shares", "bond prices rose on the market after the bank report",
    "traders on the market bought shares of the bank", "the market closed higher as profits grew",
    "investors fear the market will drop when interest rates rise", "a quiet market saw few trades and low prices",
    "heavy rain flooded the streets of the town", "the forecast promises rain and strong wind tonight",
    "cold rain fell on the roofs all morning", "after the rain the clouds cleared and the sun came out",
    "farmers hoped for rain during the long dry summer", "thunder and rain kept the children indoors",
    "the chef chopped onions and garlic for the soup", "bake the bread in a hot oven for an hour",
    "the team scored a goal in the final minute", "the players trained on the pitch before the match",
    "she planted roses and tulips in the garden", "the old library holds books about ancient history",
]


def _words() -> list[str]:
    return sorted({w for s in SENTENCES for w in s.split()})


def save_word_model(folder: Path) -> Path:
    """A tiny BERT with a word-level WordPiece vocabulary of the corpus (random weights; only its tokenizer and
    width are read, the activations being precomputed)."""
    folder.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_words()]
    tokenizer = T.BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    torch.manual_seed(0)
    config = T.BertConfig(num_hidden_layers=2, hidden_size=D, intermediate_size=24, num_attention_heads=4,
                          vocab_size=len(vocab))
    T.AutoModel.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_planted(root: Path, n_docs: int = 240, seed: int = 0) -> dict[str, Path]:
    """The model folder, the planted SAE and the precomputed activations under `root`; returns their paths."""
    rng = np.random.default_rng(seed)
    model = save_word_model(root / "model")
    tokenizer = T.AutoTokenizer.from_pretrained(model)
    docs = [" ".join(rng.choice(SENTENCES, 2, replace=False)) for _ in range(n_docs)]
    ids = [tokenizer(d, add_special_tokens=False)["input_ids"] for d in docs]
    tokens = np.concatenate(ids).astype(np.int32)
    starts = np.concatenate([[0], np.cumsum([len(x) for x in ids])]).astype(np.int64)
    vocab = len(tokenizer)
    table = rng.normal(size=(vocab, D)).astype(np.float32)
    table[:, :len(PLANTED)] = 0.0  # only a planted word has any activation along its own axis
    for f, word in PLANTED.items():
        table[tokenizer.convert_tokens_to_ids(word), f] = 3.0
    acts = table[tokens] + 0.05 * rng.normal(size=(len(tokens), D)).astype(np.float32)
    np.savez(root / "acts.npz", activations=acts, tokens=tokens, seq_starts=starts)

    g = torch.Generator().manual_seed(seed)
    W_enc = torch.randn(D, D_SAE, generator=g) * 0.4
    W_enc[:len(PLANTED)] = 0.0
    b_enc = torch.full((D_SAE,), -0.6)
    for f in PLANTED:
        W_enc[:, f] = 0.0
        W_enc[f, f] = 1.0
        b_enc[f] = -1.0  # fires at 2 on its word, never elsewhere
    sae = root / "sae"
    save_safetensors(sae / "sae_weights.safetensors", {
        "W_enc": W_enc, "b_enc": b_enc, "W_dec": torch.randn(D_SAE, D, generator=g) * 0.3, "b_dec": torch.zeros(D)})
    write_json(sae / "cfg.json", {
        "architecture": "standard", "d_in": D, "d_sae": D_SAE, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": False, "normalize_activations": "none",
        "metadata": {"sae_lens_version": "6.0.0", "hook_name": "hidden_states.1", "prepend_bos": False}})
    return {"model": model, "sae": sae, "acts": root / "acts.npz"}


def write_planted_config(root: Path, **sections: dict) -> Path:
    """A config for the planted atlas in `root` (model, sae and acts.npz there), with extra settings per section."""
    base = {
        "atlas": {"title": "Planted atlas", "out_dir": "site", "store": "atlas.duckdb", "cache_dir": "cache"},
        "model": {"path": "model", "batch_tokens": 512},
        "sae": {"path": "sae"},
        "corpus": {"activations": "acts.npz", "seq_len": 32},
        "harvest": {"top_k": 8, "window": 6, "n_intervals": 3, "per_interval": 4, "n_random": 6,
                    "recon_tokens": 400},
        "analysis": {"cluster_levels": [2, 4], "umap_neighbors": 5},
        "explain": {"context_radius": 5},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    lines = []
    for name, values in base.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = root / "atlas.toml"
    path.write_text("\n".join(lines) + "\n")
    return path
