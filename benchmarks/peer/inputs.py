"""The inputs both sides of the SAEDashboard comparison read: one GPT-2-small-shaped model, one SAE, one token set.

Runs in our venv. `run_saedashboard.py` (in the peer venv) loads exactly these files, so the two tools see the
same weights, token ids and features; it checks one hook activation and the SAE codes against ours.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

HOOK = "blocks.5.hook_resid_post"  # = the output of transformer.h.5 on the HF side
VOCAB = 50257
D_MODEL = 768
# Rows of reference activations and codes shipped to the peer for its equivalence check.
CHECK_PROMPTS = 2


@dataclass
class PeerInputs:
    model_dir: Path
    sae_dir: Path
    tokens_path: Path
    tokens: np.ndarray  # [prompts, seq] int64
    d_sae: int
    l0: float


def write_sae(folder: Path, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor, b_dec: torch.Tensor,
              hook: str, architecture: str = "standard", k: int | None = None) -> Path:
    """An SAE folder in SAELens v6 form (cfg.json + sae_weights.safetensors)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    d_in, d_sae = W_enc.shape
    cfg = {
        "architecture": architecture, "d_in": int(d_in), "d_sae": int(d_sae), "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": True, "normalize_activations": "none",
        "metadata": {"sae_lens_version": "6.54.12", "hook_name": hook, "prepend_bos": False},
    }
    if k is not None:
        cfg["k"] = int(k)
    (folder / "cfg.json").write_text(json.dumps(cfg, indent=1))
    tensors = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
    save_file({n: t.detach().float().contiguous() for n, t in tensors.items()}, str(folder / "sae_weights.safetensors"))
    return folder


def random_directions(d_in: int, d_sae: int, gen: torch.Generator) -> torch.Tensor:
    """Unit-norm decoder rows [d_sae, d_in]; the encoder is their transpose (SAELens's own initialisation)."""
    W_dec = torch.randn(d_sae, d_in, generator=gen)
    return W_dec / W_dec.norm(dim=1, keepdim=True)


def _word_tokenizer(folder: Path) -> None:
    """A stand-in tokenizer (GPT-2's vocabulary size, pieces named t0..t50256): no tokenizer can be downloaded,
    and both tools are fed token ids, so only the id space matters."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=f"t{VOCAB - 1}", eos_token=f"t{VOCAB - 1}",
                            unk_token="t0").save_pretrained(folder)


def write_gpt2(folder: Path, seed: int) -> Path:
    """GPT-2-small shape (12 layers, d 768, 12 heads, d_mlp 3072, vocab 50257, gelu_new), seeded random weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_positions=1024, n_embd=D_MODEL, n_layer=12, n_head=12,
                        activation_function="gelu_new", layer_norm_epsilon=1e-5)
    GPT2LMHeadModel(config).save_pretrained(folder)
    _word_tokenizer(folder)
    return folder


def prepare(work: Path, prompts: int, seq: int, d_sae: int, l0: int, seed: int) -> PeerInputs:
    """Write model, tokens and a ReLU SAE whose biases give about `l0` active features per token on these tokens.

    A random ReLU SAE with zero bias fires half its features on every token, nothing like a trained one (and a
    worst case for any top-k bookkeeping); per-feature thresholds at the (1 - l0/d_sae) quantile of this
    corpus's pre-activations give a trained SAE's sparsity with random directions.
    """
    from atlas.lm.activations import stream_from_model
    from atlas.corpus import TokenizedCorpus
    from atlas.lm.adapter import load_model

    model_dir = write_gpt2(work / "gpt2-random", seed)
    gen = torch.Generator().manual_seed(seed + 1)
    tokens = torch.randint(0, VOCAB, (prompts, seq), generator=gen).numpy().astype(np.int64)
    model = load_model(model_dir, HOOK)
    corpus = as_corpus(tokens)
    sample = np.arange(min(prompts, 16))
    x = torch.cat([b.x for b in stream_from_model(model, corpus, 8192, sample)])
    W_dec = random_directions(D_MODEL, d_sae, gen)
    b_dec = x.mean(0)
    pre = (x - b_dec) @ W_dec.T
    b_enc = -torch.quantile(pre, 1.0 - l0 / d_sae, dim=0)
    sae_dir = write_sae(work / "sae-relu", W_dec.T.contiguous(), b_enc, W_dec, b_dec, HOOK)

    from atlas.saes import load_sae

    sae = load_sae(sae_dir)
    check = np.arange(CHECK_PROMPTS)
    ref = torch.cat([b.x for b in stream_from_model(model, corpus, 8192, check)])
    codes = sae.encode(ref)
    tokens_path = work / "tokens.npz"
    np.savez(tokens_path, tokens=tokens, ref_acts=ref.numpy().reshape(CHECK_PROMPTS, seq, -1),
             ref_codes=codes.numpy().reshape(CHECK_PROMPTS, seq, -1))
    return PeerInputs(model_dir, sae_dir, tokens_path, tokens, d_sae, float((codes > 0).sum(1).float().mean()))


def as_corpus(tokens: np.ndarray):
    """Equal-length prompts as a TokenizedCorpus with no special tokens: both tools get these ids verbatim."""
    from atlas.corpus import TokenizedCorpus

    prompts, seq = tokens.shape
    return TokenizedCorpus(tokens.reshape(-1).astype(np.int32), np.arange(prompts + 1, dtype=np.int64) * seq, [], [])
