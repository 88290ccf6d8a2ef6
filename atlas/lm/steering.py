"""Steering previews: greedy continuations of prompts with SAE features' decoder directions added at the SAE's hook.

One call generates every row at once: per prompt, the unsteered baseline and each (feature, strength) pair, in a
single batched `generate` (left padding, attention mask, KV cache, greedy decoding, seeded).

What is added is what the feature contributes to the SAE's reconstruction when it fires at `strength` times its
largest activation on the corpus, in the hook's own basis: `decode(a·e_i) − decode(0)`, i.e. a·W_dec[i] mapped
through the SAE's decode scale and input normalisation. A dataset-wide input scale divides it once; a per-token
normalisation (layer_norm, constant_norm_rescale) scales it by each token's own norm statistics, as the SAE's
reconstruction of that token would. So a strength means the same thing for every feature and every SAE, and 0 is
the unsteered model. The vector goes into every position of the row, prompt and continuation alike.

The feature's activation on each generated token is read at the hook *before* the addition and encoded with the
SAE. Nothing upstream of the hook is edited, so that value is exactly what the unsteered model computes reading the
steered text: it says whether the text the steering produced is text the feature fires on. (After the addition
the activation would be high at any large strength, whatever was written.) A generated token reaches the hook only
when it is fed back, so one token more than asked is generated and dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from atlas.errors import ModelError, SaeFormatError
from atlas.lm.hookpoint import intervene

if TYPE_CHECKING:
    from atlas.lm.adapter import ModelAdapter
    from atlas.saes import SaeWeights
    from atlas.saes.record import SparseCodes

# Normalisations whose de-normalisation depends on the token itself: the added vector is scaled per token.
_PER_TOKEN_NORMS = ("layer_norm", "constant_norm_rescale")
# Tokens encoded at once when measuring: their dense codes stay near this many floats.
_ENCODE_FLOATS = 1 << 24
BASELINE = -1  # the feature of an unsteered row


@dataclass(frozen=True)
class Preview:
    """One continuation: of prompt `prompt`, with `feature` added at `strength` × its max activation (0: none)."""

    feature: int
    prompt: int
    strength: float
    token_ids: tuple[int, ...]  # the generated tokens, up to (not including) the end of text
    ended: bool  # the model ended the text before the token limit
    text: str
    acts: np.ndarray  # float32 [len(token_ids)]: the feature's activation on each generated token
    added_norm: float  # mean norm of the vector added at the generated positions (0 for the baseline)

    def fired(self) -> int:
        """On how many generated tokens the feature fires."""
        return int((self.acts > 0).sum())


@dataclass(frozen=True)
class _Row:
    prompt: int
    feature: int  # BASELINE for the unsteered row
    strength: float


def check_steerable(model: ModelAdapter, sae: SaeWeights) -> None:
    """Refuse what cannot be steered: an encoder, or an SAE whose decoder writes somewhere other than its hook."""
    if not model.is_causal:
        raise ModelError(f"steering needs a causal language model that generates text; {model.name} is an encoder "
                         "(it has no language-model head)")
    if sae.d_out != sae.d_in or sae.W_skip is not None or "transcoder" in sae.convention.lower():
        raise SaeFormatError(f"{sae.path} is a transcoder: its decoder writes to another hook than the one it "
                             "reads, so adding its directions at the read hook would steer the wrong place")


def steer(model: ModelAdapter, sae: SaeWeights, features: Sequence[int], max_acts: Sequence[float],
          prompts: Sequence[str], strengths: Sequence[float], new_tokens: int, seed: int = 0) -> list[Preview]:
    """Continuations of every prompt, unsteered and steered by each feature at each non-zero strength.

    `max_acts[k]` is feature `features[k]`'s largest activation: strengths are multiples of it. Returns, per
    prompt, per feature, one preview per strength in the order given, with the baseline (strength 0) first when
    `strengths` lacks it; the baseline is generated once per prompt, its activations measured for each feature.
    """
    check_steerable(model, sae)
    scale = dict(zip((int(f) for f in features), (float(a) for a in max_acts)))
    features = list(scale)
    order = list(dict.fromkeys(float(s) for s in strengths))
    order = order if 0.0 in order else [0.0, *order]
    if not prompts or not features:
        return []
    steered = [s for s in order if s != 0.0]
    rows = [_Row(p, BASELINE, 0.0) for p in range(len(prompts))]
    rows += [_Row(p, f, s) for p in range(len(prompts)) for f in features for s in steered]
    tokens, ended, values = _generate(model, sae, rows, scale, prompts, new_tokens, seed)
    per_row = [values[r, : len(t)] for r, t in enumerate(tokens)]
    acts = _measure(sae, rows, per_row, features)
    index = {(row.prompt, row.feature, row.strength): r for r, row in enumerate(rows)}
    out = []
    for p in range(len(prompts)):
        for f in features:
            for s in order:
                r = index[(p, BASELINE if s == 0.0 else f, s)]
                out.append(Preview(f, p, s, tuple(tokens[r]), ended[r], _text(model, tokens[r]), acts[r][f],
                                   _added_norm(sae, rows[r], scale, per_row[r])))
    return out


def _text(model: ModelAdapter, ids: list[int]) -> str:
    return model.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _units(sae: SaeWeights, rows: list[_Row], scale: dict[int, float]) -> torch.Tensor:
    """[rows, d_sae]: each row's feature at its activation (strength × max activation), zero for the baseline."""
    f = torch.zeros(len(rows), sae.d_sae, device=sae.W_dec.device)
    for r, row in enumerate(rows):
        if row.feature != BASELINE:
            f[r, row.feature] = row.strength * scale[row.feature]
    return f


def _added(sae: SaeWeights, units: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
    """What `units` [B, d_sae] add to the SAE's reconstruction in the hook's basis: [B, 1, d] without x, else
    [B, S, d] for the tokens x [B, S, d] (a per-token normalisation scales it by each token's statistics)."""
    f = units[:, None, :]
    return sae.decode(f, x) - sae.decode(torch.zeros_like(f), x)


def _generate(model: ModelAdapter, sae: SaeWeights, rows: list[_Row], scale: dict[int, float],
              prompts: Sequence[str], new_tokens: int, seed: int) -> tuple[list[list[int]], list[bool], torch.Tensor]:
    """Greedy continuations of every row in one `generate` call with the rows' vectors added at the hook.

    Returns each row's generated ids (cut at the end of text), whether it ended there, and the hook's values
    before the addition at the generated positions [B, n, d]."""
    tok = model.tokenizer
    gen = model.model.generation_config
    eos = gen.eos_token_id if gen.eos_token_id is not None else tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else (gen.pad_token_id or _first(eos) or 0)
    encoded = [tok(p)["input_ids"] for p in prompts]
    if not all(encoded):
        raise ModelError(f"prompt {[bool(e) for e in encoded].index(False) + 1} has no tokens; give each prompt "
                         "some text")
    ids, mask = _left_padded([encoded[row.prompt] for row in rows], pad)
    ids, mask = ids.to(model.device), mask.to(model.device)
    units = _units(sae, rows, scale)
    per_token = sae.input_norm.kind in _PER_TOKEN_NORMS
    fixed = None if per_token else _added(sae, units, None)
    seen: list[torch.Tensor] = []

    def add(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.detach().float())
        delta = _added(sae, units, x) if per_token else fixed
        return x + delta.to(x.device, x.dtype)

    with torch.random.fork_rng(devices=[]), torch.inference_mode(), intervene(model.model, model.hook_spec, add):
        torch.manual_seed(seed)
        out = model.model.generate(
            input_ids=ids, attention_mask=mask, do_sample=False, num_beams=1, temperature=None, top_p=None,
            top_k=None, max_new_tokens=new_tokens + 1, min_new_tokens=0, use_cache=True, pad_token_id=pad,
            eos_token_id=eos, repetition_penalty=None,
        )
    stops = set(eos if isinstance(eos, list) else [eos]) - {None}
    tokens, ended = [], []
    for row in out[:, ids.shape[1]:].tolist():
        cut = next((j for j, t in enumerate(row) if t in stops), None)
        ended.append(cut is not None and cut < new_tokens)
        tokens.append(row[: min(new_tokens, len(row) if cut is None else cut)])
    return tokens, ended, torch.cat(seen, dim=1)[:, ids.shape[1]:]  # the generated tokens as they were fed back


def _left_padded(prompts: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, P] ids and attention mask, padded on the left: every row's last prompt token sits where generation
    starts. Padding by hand needs no pad token in the tokenizer (GPT-2 has none); masked, its id never matters."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), int(pad), dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for r, p in enumerate(prompts):
        if p:
            ids[r, width - len(p):] = torch.tensor(p)
            mask[r, width - len(p):] = 1
    return ids, mask


def _first(value):
    return value[0] if isinstance(value, list) and value else value


def _measure(sae: SaeWeights, rows: list[_Row], values: list[torch.Tensor],
             features: list[int]) -> list[dict[int, np.ndarray]]:
    """Per row, the activations on its generated tokens of its own feature (the baseline's: of every feature)."""
    x = torch.cat(values)
    cols = np.asarray(features, dtype=np.int64)
    got = np.zeros((len(x), len(cols)), dtype=np.float32)
    step = max(1, _ENCODE_FLOATS // sae.d_sae)
    for start in range(0, len(x), step):
        codes = sae.encode_sparse(x[start:start + step])
        got[start:start + codes.n_rows] = _columns(codes, cols)
    column = {f: k for k, f in enumerate(features)}
    out, at = [], 0
    for row, value in zip(rows, values):
        n = len(value)
        want = features if row.feature == BASELINE else [row.feature]
        out.append({f: got[at:at + n, column[f]].copy() for f in want})
        at += n
    return out


def _columns(codes: SparseCodes, cols: np.ndarray) -> np.ndarray:
    """[rows, len(cols)]: these features' values in sparse codes (zero where a code is absent)."""
    keys = np.arange(codes.n_rows, dtype=np.int64)[:, None] * codes.n_features + cols[None, :]
    if not len(codes.flat):
        return np.zeros(keys.shape, dtype=np.float32)
    at = np.minimum(np.searchsorted(codes.flat, keys), len(codes.flat) - 1)
    return np.where(codes.flat[at] == keys, codes.values[at], 0.0).astype(np.float32)


def _added_norm(sae: SaeWeights, row: _Row, scale: dict[int, float], value: torch.Tensor) -> float:
    """Mean norm of the vector added at the row's generated positions."""
    if row.feature == BASELINE or not len(value):
        return 0.0
    units = _units(sae, [row], scale)
    delta = _added(sae, units, value[None] if sae.input_norm.kind in _PER_TOKEN_NORMS else None)
    return float(delta.norm(dim=-1).mean())
