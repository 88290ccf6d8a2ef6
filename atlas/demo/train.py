"""A small TopK SAE trainer for the demo, saving in SAELens's on-disk format."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file


def _unit_rows(w: torch.Tensor) -> torch.Tensor:
    return w / w.norm(dim=1, keepdim=True).clamp_min(1e-8)


def train_topk_sae(
    acts: np.ndarray,
    d_sae: int,
    k: int,
    epochs: int = 2,
    batch_size: int = 1024,
    lr: float = 1e-3,
    seed: int = 0,
    dead_after_tokens: int = 100_000,
    aux_k: int | None = None,
    aux_coef: float = 1 / 32,
    log=print,
) -> dict:
    """Train a TopK SAE (unit-norm decoder rows, b_dec at the data mean, AuxK loss on dead latents).

    Returns the weights (SAELens names and orientation) and training figures.
    """
    g = torch.Generator().manual_seed(seed)
    n, d_in = acts.shape
    aux_k = aux_k or min(d_in // 2, d_sae)
    data = torch.from_numpy(np.array(acts, dtype=np.float32))
    W_dec = _unit_rows(torch.randn(d_sae, d_in, generator=g))
    W_enc = W_dec.T.clone().contiguous()
    b_enc = torch.zeros(d_sae)
    b_dec = data[torch.randperm(n, generator=g)[: min(n, 65536)]].mean(0)
    params = [p.requires_grad_() for p in (W_enc, b_enc, W_dec, b_dec)]
    opt = torch.optim.Adam(params, lr=lr)
    steps = epochs * math.ceil(n / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (steps - s) / (0.2 * steps)))
    since_fired = torch.zeros(d_sae, dtype=torch.long)
    t0, step = time.perf_counter(), 0
    var_total = ((data - data.mean(0)) ** 2).sum(1).mean().item()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=g)
        fvu_sum, seen = 0.0, 0
        for s in range(0, n, batch_size):
            x = data[order[s:s + batch_size]]
            pre = (x - b_dec) @ W_enc + b_enc
            vals, idx = pre.topk(k, dim=1)
            vals = vals.relu()
            # decode from the k active rows only: k*d work per token instead of d_sae*d
            x_hat = torch.einsum("bk,bkd->bd", vals, W_dec[idx]) + b_dec
            err = x - x_hat
            mse = (err ** 2).sum(1).mean()
            loss = mse / var_total
            fired = torch.zeros(d_sae, dtype=torch.bool)
            fired[idx[vals > 0]] = True
            since_fired += x.shape[0]
            since_fired[fired] = 0
            dead = since_fired > dead_after_tokens
            if dead.any():
                kk = min(aux_k, int(dead.sum()))
                aux_pre = pre.masked_fill(~dead, -math.inf)
                a_vals, a_idx = aux_pre.topk(kk, dim=1)
                e_hat = torch.einsum("bk,bkd->bd", a_vals.relu(), W_dec[a_idx])
                target = err.detach()
                aux = ((target - e_hat) ** 2).sum(1).mean() / (target - target.mean(0)).pow(2).sum(1).mean().clamp_min(1e-8)
                loss = loss + aux_coef * torch.nan_to_num(aux, nan=0.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                # keep the decoder on the unit sphere: drop the gradient's radial part, then renormalise
                W_dec.grad -= (W_dec.grad * W_dec).sum(1, keepdim=True) * W_dec
            opt.step()
            sched.step()
            with torch.no_grad():
                W_dec.copy_(_unit_rows(W_dec))
            fvu_sum += mse.item() * x.shape[0]
            seen += x.shape[0]
            step += 1
        log(f"  epoch {epoch + 1}/{epochs}: FVU {fvu_sum / seen / var_total:.3f}, "
            f"{int((since_fired > dead_after_tokens).sum())} dead, {n * (epoch + 1) / (time.perf_counter() - t0):,.0f} tokens/s")
    with torch.no_grad():
        weights = {"W_enc": W_enc.detach().contiguous(), "b_enc": b_enc.detach().contiguous(),
                   "W_dec": W_dec.detach().contiguous(), "b_dec": b_dec.detach().contiguous()}
    return {"weights": weights, "seconds": time.perf_counter() - t0, "steps": step,
            "final_fvu": fvu_sum / max(seen, 1) / var_total}


def save_saelens(folder: Path, weights: dict, k: int, hook_name: str, model_name: str,
                 context_size: int, prepend_bos: bool) -> None:
    """Write a SAELens v6 TopK SAE folder: cfg.json + sae_weights.safetensors."""
    folder.mkdir(parents=True, exist_ok=True)
    d_sae, d_in = weights["W_dec"].shape
    cfg = {
        "architecture": "topk", "d_in": int(d_in), "d_sae": int(d_sae), "k": int(k),
        "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
        "normalize_activations": "none", "reshape_activations": "none",
        "rescale_acts_by_decoder_norm": False,
        "metadata": {"sae_lens_version": "6.0.0", "model_name": model_name, "hook_name": hook_name,
                     "hook_head_index": None, "context_size": context_size, "prepend_bos": prepend_bos},
    }
    tmp = folder / "sae_weights.safetensors.tmp"
    save_file({k_: v.float().contiguous() for k_, v in weights.items()}, str(tmp))
    tmp.replace(folder / "sae_weights.safetensors")
    (folder / "cfg.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
