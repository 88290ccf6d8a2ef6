"""A plain-torch forward of Llama-family blocks (Llama, Mistral, Qwen2, SmolLM2), read straight from a model folder.

`atlas inspect` should answer in a few seconds, and importing transformers' model code alone costs about 2.5 CPU-s
here, far more than running a short text through the blocks. For this one common decoder layout the blocks up to the
hook are run here, from config.json and the weights of those blocks only (the embedding rows of the text's tokens,
not the whole table). Text is tokenized by the very pipeline the build's tokenizer ran, which the build saved
(`save_tokenizer`): transformers may rebuild a tokenizer.json's pipeline in a model-specific class. `load_trunk`
returns None for anything it does not reproduce exactly (other families, RoPE scaling, hooks inside a block, no saved
tokenizer); the caller then uses `atlas.lm.adapter`. tests/lm/test_trunk.py holds it to transformers' own forward at
every block boundary.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from atlas.lm.adapter import PieceDisplay

_MODEL_TYPES = {"llama", "mistral", "qwen2"}
_BLOCK_RE = re.compile(r"^model\.layers\.(\d+)$")


@dataclass(frozen=True)
class _Shape:
    """What the forward needs from config.json."""

    n_heads: int
    n_kv_heads: int
    head_dim: int
    eps: float
    theta: float
    window: int | None  # sliding-window attention span, when the config sets one


class _RawTokenizer:
    """A `tokenizers.Tokenizer` behind the few tokenizer calls `PieceDisplay` makes."""

    def __init__(self, tok):
        self.backend_tokenizer = tok
        self.all_special_ids = [i for i, t in tok.get_added_tokens_decoder().items() if t.special]

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str | None]:
        return [self.backend_tokenizer.id_to_token(i) for i in ids]

    def decode(self, ids: list[int], clean_up_tokenization_spaces: bool = False) -> str:
        return self.backend_tokenizer.decode(ids, skip_special_tokens=False)


def save_tokenizer(tokenizer, folder: Path) -> Path | None:
    """Save the pipeline a transformers tokenizer runs (its `tokenizers` backend) as `tokenizer-<hash>.json` in
    `folder`; None for a tokenizer without one."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    text = backend.to_str()
    path = Path(folder) / f"tokenizer-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return path


def load_trunk(folder: str | Path, module: str, io: str, max_len: int,
               tokenizer_file: str | Path | None) -> Trunk | None:
    """The blocks of the model in `folder` up to the hook (`module`, `io`, as the build resolved it), tokenizing with
    the pipeline `save_tokenizer` wrote, or None when this is not a model `Trunk` reproduces; sequences will be at
    most `max_len` tokens."""
    folder = Path(folder)
    if tokenizer_file is None or not Path(tokenizer_file).is_file():
        return None
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    shape = _shape(config)
    stop = _stop(module, io, int(config.get("num_hidden_layers", 0)))
    if shape is None or stop is None or (shape.window is not None and shape.window < max_len):
        return None
    files = _weight_files(folder)
    if not files:
        return None
    from tokenizers import Tokenizer

    n_blocks, final_norm = stop
    wanted = [f"model.layers.{i}." for i in range(n_blocks)] + (["model.norm."] if final_norm else [])
    weights = _read(files, lambda name: name.startswith(tuple(wanted)))
    embed_file = files.get("model.embed_tokens.weight")
    if embed_file is None:
        return None
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_truncation()  # the inspected text is cut into sequences by the caller, as the build cut its corpus
    tokenizer.no_padding()
    return Trunk(shape, weights, n_blocks, final_norm, embed_file, tokenizer)


def _shape(config: dict) -> _Shape | None:
    if config.get("model_type") not in _MODEL_TYPES or config.get("hidden_act", "silu") != "silu":
        return None
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        return None
    theta = rope.get("rope_theta", config.get("rope_theta"))
    heads = int(config["num_attention_heads"])
    window = config.get("sliding_window") if config.get("use_sliding_window", True) else None
    if theta is None or config.get("pretraining_tp", 1) != 1:
        return None
    return _Shape(
        n_heads=heads,
        n_kv_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=int(config.get("head_dim") or config["hidden_size"] // heads),
        eps=float(config.get("rms_norm_eps", 1e-6)),
        theta=float(theta),
        window=int(window) if window else None,
    )


def _stop(module: str, io: str, n_layers: int) -> tuple[int, bool] | None:
    """(blocks to run, whether the final norm follows) for a hook at a block boundary; None for any other hook."""
    if module == "model.norm" and io == "output":
        return n_layers, True
    m = _BLOCK_RE.match(module)
    if not m or int(m.group(1)) >= n_layers:
        return None
    return int(m.group(1)) + (io == "output"), False


def _weight_files(folder: Path) -> dict[str, Path]:
    """Tensor name → the safetensors file holding it (one file, or shards with an index)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            return {k: folder / v for k, v in json.loads(index.read_text())["weight_map"].items()}
        except (OSError, ValueError, KeyError):
            return {}
    single = folder / "model.safetensors"
    if not single.is_file():
        return {}
    from safetensors import safe_open

    with safe_open(str(single), "pt") as f:
        return {k: single for k in f.keys()}


def _read(files: dict[str, Path], wanted) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    out: dict[str, torch.Tensor] = {}
    for path in sorted({p for name, p in files.items() if wanted(name)}):
        with safe_open(str(path), "pt") as f:
            for name in f.keys():
                if wanted(name):
                    out[name] = f.get_tensor(name).float()
    return out


class Trunk:
    """The blocks before a hook at a block boundary: tokenize, and run one sequence to the hook."""

    def __init__(self, shape: _Shape, weights: dict[str, torch.Tensor], n_blocks: int, final_norm: bool,
                 embed_file: Path, tokenizer):
        self.shape = shape
        self.w = weights
        self.n_blocks = n_blocks
        self.final_norm = final_norm
        self.embed_file = embed_file
        self.tokenizer = tokenizer
        self._pieces = PieceDisplay(_RawTokenizer(tokenizer))

    def encode(self, text: str) -> list[int]:
        """The text's token ids, no special tokens added (as the build tokenizes its corpus)."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def token_strings(self, ids: list[int]) -> list[str]:
        return self._pieces(list(ids))

    def activations(self, ids: list[int]) -> torch.Tensor:
        """[S, d] float32 activations at the hook for one sequence of token ids."""
        with torch.inference_mode():
            h = self._embed(ids)
            cos, sin = self._rotary(len(ids))
            for i in range(self.n_blocks):
                h = self._block(f"model.layers.{i}.", h, cos, sin)
            if self.final_norm:
                h = self._rms(h, self.w["model.norm.weight"])
        return h[0]

    def _embed(self, ids: list[int]) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(str(self.embed_file), "pt") as f:
            table = f.get_slice("model.embed_tokens.weight")
            rows = {i: table[i : i + 1].float() for i in set(ids)}
        return torch.cat([rows[i] for i in ids])[None]

    def _rotary(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        dim = self.shape.head_dim
        inv_freq = 1.0 / (self.shape.theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
        freqs = torch.arange(n, dtype=torch.float)[:, None] * inv_freq[None]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.shape.eps))

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, self.w[name + ".weight"], self.w.get(name + ".bias"))

    def _block(self, p: str, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        s = self.shape
        x = self._rms(h, self.w[p + "input_layernorm.weight"])
        n = h.shape[1]
        q = self._linear(x, p + "self_attn.q_proj").view(1, n, s.n_heads, s.head_dim).transpose(1, 2)
        k = self._linear(x, p + "self_attn.k_proj").view(1, n, s.n_kv_heads, s.head_dim).transpose(1, 2)
        v = self._linear(x, p + "self_attn.v_proj").view(1, n, s.n_kv_heads, s.head_dim).transpose(1, 2)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        groups = s.n_heads // s.n_kv_heads
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=s.head_dim**-0.5)
        h = h + self._linear(a.transpose(1, 2).reshape(1, n, s.n_heads * s.head_dim), p + "self_attn.o_proj")
        x = self._rms(h, self.w[p + "post_attention_layernorm.weight"])
        mlp = F.silu(self._linear(x, p + "mlp.gate_proj")) * self._linear(x, p + "mlp.up_proj")
        return h + self._linear(mlp, p + "mlp.down_proj")


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
