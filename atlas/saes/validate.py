"""Checks every loaded SAE must pass, whatever its format: consistent shapes and finite weights."""

from __future__ import annotations

import torch

from atlas.errors import SaeFormatError
from atlas.saes.record import ACTIVATION_KINDS, INPUT_NORM_KINDS, SaeWeights


def validate(sae: SaeWeights) -> SaeWeights:
    """Return `sae` unchanged, or raise SaeFormatError naming the file, the tensor and the fix."""
    where = sae.path
    d_in, d_sae, d_out = sae.d_in, sae.d_sae, sae.d_out
    act = sae.activation
    if act.kind not in ACTIVATION_KINDS:
        raise SaeFormatError(f"{where}: unknown activation {act.kind!r}; supported: {', '.join(ACTIVATION_KINDS)}.")
    if sae.input_norm.kind not in INPUT_NORM_KINDS:
        raise SaeFormatError(
            f"{where}: unknown input normalisation {sae.input_norm.kind!r}; supported: {', '.join(INPUT_NORM_KINDS)}."
        )
    expected = {
        "W_enc": (d_in, d_sae),
        "b_enc": (d_sae,),
        "W_dec": (d_sae, d_out),
        "b_dec": (d_out,),
        "pre_bias": (d_in,),
        "decode_scale": (d_sae,),
        "W_skip": (d_out, d_in),
        "threshold": (d_sae,),
        "b_gate": (d_sae,),
        "b_mag": (d_sae,),
        "r_mag": (d_sae,),
    }
    for name, t in sae.named_tensors():
        if tuple(t.shape) != expected[name]:
            raise SaeFormatError(
                f"{where}: {name} has shape {list(t.shape)} but the other tensors imply {list(expected[name])} "
                f"(d_in={d_in}, d_sae={d_sae}, d_out={d_out}); the file is inconsistent or its config contradicts it."
            )
        if t.dtype != torch.float32:
            raise SaeFormatError(f"{where}: {name} is {t.dtype}; loaders must hand over float32.")
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            n_nan = int(torch.isnan(t).sum())
            raise SaeFormatError(
                f"{where}: {name} holds {bad} non-finite values ({n_nan} NaN, {bad - n_nan} Inf) out of {t.numel()}; "
                "the weights are damaged (often a diverged training run or a bad dtype conversion). "
                "Use an earlier checkpoint or copy the file again."
            )
    if act.kind == "gated" and (act.b_gate is None or act.b_mag is None or act.r_mag is None):
        raise SaeFormatError(f"{where}: a gated SAE needs b_gate, b_mag and r_mag.")
    if act.kind in ("jumprelu", "threshold") and act.threshold is None:
        raise SaeFormatError(f"{where}: a {act.kind} SAE needs a threshold.")
    if act.kind in ("topk", "signed_topk", "groupmax"):
        if not act.k or not 0 < act.k <= d_sae:
            raise SaeFormatError(f"{where}: {act.kind} needs 0 < k <= d_sae={d_sae}, got k={act.k}.")
        if act.kind == "groupmax" and d_sae % act.k:
            raise SaeFormatError(f"{where}: groupmax needs d_sae={d_sae} to be a multiple of k={act.k}.")
    if sae.input_norm.kind == "scale" and not (sae.input_norm.scale > 0):
        raise SaeFormatError(f"{where}: the input scale must be positive, got {sae.input_norm.scale}.")
    return sae
