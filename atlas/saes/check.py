"""How well an SAE reconstructs real activations, and picking among loading conventions by that measure."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from atlas.saes.record import SaeWeights

_CHUNK = 1024


def reconstruction_stats(sae: SaeWeights, x: Tensor, y: Tensor | None = None) -> dict:
    """FVU, mean L0, share of never-firing latents, and the token count, for inputs x [N, d_in].

    FVU = Σ||y − ŷ||² / Σ||y − mean(y)||², where the target y is x itself for an SAE (pass y for a transcoder).
    """
    with torch.inference_mode():
        x = x.reshape(-1, x.shape[-1]).to(torch.float32)
        y = x if y is None else y.reshape(-1, y.shape[-1]).to(torch.float32)
        y_mean = y.to(torch.float64).mean(dim=0)
        err = var = l0 = 0.0
        fired = torch.zeros(sae.d_sae, dtype=torch.bool, device=sae.W_enc.device)
        for start in range(0, x.shape[0], _CHUNK):
            xs, ys = x[start:start + _CHUNK], y[start:start + _CHUNK].to(sae.W_enc.device)
            f, y_hat = sae.forward(xs)
            err += float(((ys - y_hat).to(torch.float64) ** 2).sum())
            var += float(((ys.to(torch.float64) - y_mean.to(ys.device)) ** 2).sum())
            active = f != 0
            l0 += float(active.sum())
            fired |= active.any(dim=0)
        n = int(x.shape[0])
    return {
        "fvu": err / var if var > 0 else math.nan,
        "l0": l0 / n if n else math.nan,
        "dead_share": float((~fired).float().mean()),
        "n_tokens": n,
    }


def pick_by_fvu(candidates: list[SaeWeights], x: Tensor, y: Tensor | None = None) -> tuple[SaeWeights, list]:
    """The candidate with the lowest FVU on x, and every (convention, fvu) measured, in candidate order."""
    scores = [(c.convention, reconstruction_stats(c, x, y)["fvu"]) for c in candidates]
    best = min(range(len(candidates)), key=lambda i: math.inf if math.isnan(scores[i][1]) else scores[i][1])
    return candidates[best], scores


def estimate_input_scale(x: Tensor) -> float:
    """sqrt(d_in) / mean ||x||: the dataset-wide input scale that SAELens's expected_average_only_in assumes."""
    with torch.inference_mode():
        x = x.reshape(-1, x.shape[-1]).to(torch.float32)
        return float(math.sqrt(x.shape[-1]) / x.norm(dim=-1).mean())
