"""The model adapter: load a local HF model, run it to the hook point, and read its unembedding."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from atlas.errors import ModelError
from atlas.lm.hookpoint import capture
from atlas.lm.hooks import HookSpec, Layout, describe_layout, resolve_hook

# A folder named like this says nothing about the model; its parent usually does.
_GENERIC_FOLDER_NAMES = {"model", "models", "hf", "checkpoint", "weights", "snapshot"}
_CAUSAL_HEADS = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
# Encoders whose configs also appear in the causal-LM mapping (as decoder variants) but ship as encoders.
_ENCODER_TYPES = {"bert", "roberta", "xlm-roberta", "electra", "camembert", "ernie", "data2vec-text", "rembert"}
# logit_effects materialises chunks of [rows, vocab] logits; this many floats (256 MiB) per chunk.
_CHUNK_ELEMENTS = 1 << 26
_NOT_YET = object()


def load_model(path: str | Path, hook: str, device: str = "cpu") -> ModelAdapter:
    """Load tokenizer and model from a local folder (never the hub), float32, eval mode, resolved at `hook`."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the build prints its own progress
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelError(
            f"model folder {folder} does not exist; point [model].path at a local folder holding config.json, "
            "the weights and the tokenizer files (nothing is downloaded)"
        )
    if not (folder / "config.json").is_file():
        raise ModelError(
            f"{folder} is not a Hugging Face model folder: it has no config.json; point [model].path at the folder "
            "that save_pretrained wrote (config.json, *.safetensors, tokenizer files)"
        )
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        is_causal = _is_causal(config)
        loader = AutoModelForCausalLM if is_causal else AutoModel
        model = loader.from_pretrained(folder, config=config, dtype=torch.float32, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(
            f"cannot load the model in {folder}: {exc}; the folder needs config.json and the weights "
            "(*.safetensors or pytorch_model.bin) as save_pretrained writes them"
        ) from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(
            f"cannot load a tokenizer from {folder}: {exc}; the folder needs tokenizer.json (or the slow "
            "tokenizer's vocabulary files) next to config.json"
        ) from exc
    model.to(device).eval()
    return ModelAdapter(tokenizer, model, resolve_hook(model, hook), is_causal, _display_name(folder))


def _is_causal(config) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    architectures = getattr(config, "architectures", None) or []
    if architectures:
        return any(a.endswith(_CAUSAL_HEADS) for a in architectures) and type(config) in MODEL_FOR_CAUSAL_LM_MAPPING
    return type(config) in MODEL_FOR_CAUSAL_LM_MAPPING and config.model_type not in _ENCODER_TYPES


def _display_name(folder: Path) -> str:
    folder = folder.resolve()
    if folder.name.lower() in _GENERIC_FOLDER_NAMES and folder.parent.name:
        return folder.parent.name
    return folder.name


class ModelAdapter:
    """One HF model behind the few calls the pipeline needs; hook details stay in `hook_spec`."""

    def __init__(self, tokenizer, model: nn.Module, hook_spec: HookSpec, is_causal: bool, name: str):
        self.tokenizer = tokenizer
        self.model = model
        self.hook_spec = hook_spec
        self.is_causal = is_causal
        self.name = name
        self.layout: Layout = describe_layout(model)
        self.n_layers = self.layout.n_layers
        self.bos_token_id: int | None = getattr(tokenizer, "bos_token_id", None)
        self._pieces = PieceDisplay(tokenizer)
        self._unembed = _NOT_YET
        self.device = next(model.parameters()).device
        # Measured rather than derived from the config: MLP, z and norm hooks each have their own width.
        probe = torch.zeros(1, 2, dtype=torch.long)
        self.d_hook: int = self.activations(probe, torch.ones_like(probe)).shape[-1]

    def activations(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B,S] token ids → [B,S,d_hook] float32 activations at the hook; layers after it are not computed."""
        kwargs = {"input_ids": input_ids.to(self.device), "attention_mask": attention_mask.to(self.device)}
        if self.is_causal:
            kwargs["use_cache"] = False
        with torch.inference_mode():
            value = capture(self.model, self.hook_spec, lambda: self.model(**kwargs))
        batch, seq = input_ids.shape
        return value.reshape(batch, seq, -1).float()

    def token_strings(self, ids: list[int]) -> list[str]:
        """Display text per token id; joined over a tokenized text they read as the text."""
        return self._pieces(list(ids))

    def unembed(self) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """(W_U [d_model, vocab], final-norm gain [d_model] or None), or None when the model has no LM head."""
        if self._unembed is _NOT_YET:
            head = self.model.get_output_embeddings() if self.is_causal else None
            if head is None:
                self._unembed = None
            else:
                W_U = head.weight.detach().float().T
                norm = self.model.get_submodule(self.layout.final_norm) if self.layout.final_norm else None
                scale = _norm_gain(norm, W_U.shape[0]) if norm is not None else None
                self._unembed = (W_U, scale)
        return self._unembed  # type: ignore[return-value]

    def logit_effects(
        self, W_dec: torch.Tensor, k: int = 10, after_norm: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """Top-k promoted and suppressed tokens per decoder row: (pos_ids, pos_vals, neg_ids, neg_vals), each [F,k].

        A row d gets the logits the unembedding gives the model's own final norm applied to d, less those it gives
        the norm applied to zero (a LayerNorm's bias, the same for every feature): `W_U·(norm(d) − norm(0))`.
        Through an RMSNorm that is `lm_head(norm(d))`, the logits of a residual stream pointing along d, whatever
        d's length (the norm's epsilon aside). Values are before any logit soft-capping (Gemma 2), which is
        monotonic and keeps the order. With `after_norm` the rows already live after the final norm (an SAE read
        there) and go straight to the unembedding. None when the model has no LM head.
        """
        unembed = self.unembed()
        if unembed is None:
            return None
        W_U, _gain = unembed
        final = self.layout.final_norm
        norm = self.model.get_submodule(final) if final and not after_norm else None
        rows = W_dec.detach().to(W_U.device, torch.float32)
        vocab = W_U.shape[1]
        k = min(k, vocab)
        step = max(1, _CHUNK_ELEMENTS // vocab)
        out: list[list[torch.Tensor]] = [[], [], [], []]
        with torch.inference_mode():
            offset = norm(torch.zeros_like(rows[:1])).float() if norm is not None else 0.0
            for start in range(0, rows.shape[0], step):
                chunk = rows[start : start + step]
                normed = norm(chunk).float() - offset if norm is not None else chunk
                logits = normed @ W_U
                top = logits.topk(k, dim=1)
                bottom = logits.topk(k, dim=1, largest=False)
                for acc, t in zip(out, (top.indices, top.values, bottom.indices, bottom.values)):
                    acc.append(t.cpu())
        if not out[0]:
            empty_ids, empty_vals = torch.empty(0, k, dtype=torch.long), torch.empty(0, k)
            return empty_ids, empty_vals, empty_ids.clone(), empty_vals.clone()
        return tuple(torch.cat(acc) for acc in out)  # type: ignore[return-value]


def _norm_gain(norm: nn.Module, d_model: int) -> torch.Tensor:
    """The per-dimension gain a final norm applies, measured rather than read from `weight`.

    Gemma's RMSNorm multiplies by (1 + weight), others by weight, and LayerNorm adds a bias; two probes x and -x of
    zero mean and unit RMS cancel the bias and give the gain whatever the convention. The probe is scaled up so the
    norm's eps is negligible.
    """
    pattern = torch.tensor([1.0, -1.0]).repeat((d_model + 1) // 2)[:d_model]
    if d_model % 2:  # keep the mean at zero with every entry non-zero
        pattern[-3:] = torch.tensor([1.0, 1.0, -2.0])
    unit = pattern / pattern.pow(2).mean().sqrt()
    param = next(norm.parameters(), None)
    probe = (1e3 * unit).to(param.device if param is not None else "cpu")[None]
    with torch.inference_mode():
        diff = (norm(probe)[0].float() - norm(-probe)[0].float()).cpu()
    # norm(±probe) = ±unit * gain (+ bias), so the difference is 2 * unit * gain.
    return diff / (2 * unit)


def _byte_alphabet() -> dict[str, int]:
    """Byte-level BPE writes every byte as a printable character; this maps those characters back to bytes."""
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    table, shifted = {}, 0
    for byte in range(256):
        if byte in printable:
            table[chr(byte)] = byte
        else:
            table[chr(256 + shifted)] = byte
            shifted += 1
    return table


class PieceDisplay:
    """Turns token ids into display strings following the tokenizer's own decoder (WordPiece, byte-level, ▁)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.special = set(getattr(tokenizer, "all_special_ids", []) or [])
        self.scheme, self.prefix = "decode", ""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            return
        # Only the decoder is serialised: the whole pipeline's JSON holds the vocabulary (tens of ms to write and read).
        decoder = json.loads(backend.decoder.__getstate__()) if backend.decoder is not None else {}
        kinds = {d.get("type") for d in decoder.get("decoders", [decoder])}
        if "WordPiece" in kinds or type(backend.model).__name__ == "WordPiece":
            self.scheme = "wordpiece"
            self.prefix = decoder.get("prefix") or getattr(backend.model, "continuing_subword_prefix", None) or "##"
        elif "ByteLevel" in kinds:
            self.scheme, self.bytes = "bytelevel", _byte_alphabet()
        elif "Metaspace" in kinds or any(
            d.get("type") == "Replace" and (d.get("pattern") or {}).get("String") == "▁"
            for d in decoder.get("decoders", [decoder])
        ):
            self.scheme = "metaspace"

    def __call__(self, ids: list[int]) -> list[str]:
        if self.scheme == "decode":
            return [self.tokenizer.decode([i], clean_up_tokenization_spaces=False) for i in ids]
        pieces = self.tokenizer.convert_ids_to_tokens(ids)
        return [self._one(i, p) for i, p in zip(ids, pieces)]

    def _one(self, token_id: int, piece: str | None) -> str:
        if piece is None:
            return ""
        if token_id in self.special:
            return piece
        if self.scheme == "wordpiece":
            return piece[len(self.prefix) :] if piece.startswith(self.prefix) else " " + piece
        if self.scheme == "bytelevel":
            if any(c not in self.bytes for c in piece):  # an added token written as plain text
                return piece
            return bytes(self.bytes[c] for c in piece).decode("utf-8", errors="replace")
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):  # sentencepiece byte fallback
            return bytes([int(piece[3:5], 16)]).decode("utf-8", errors="replace")
        return piece.replace("▁", " ")
