"""Gemma Scope: 1 (params.npz, no config) and 2 (params.safetensors + config.json, lowercase names)."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

from atlas.errors import SaeFormatError
from atlas.saes.files import TensorFile, expect_shape, folder_of, load_npz, load_safetensors, read_json
from atlas.saes.record import Activation, SaeWeights

# Gemma Scope 1 repo suffix → TransformerLens hook template
_GS1_SITES = {
    "res": "blocks.{L}.hook_resid_post",
    "mlp": "blocks.{L}.hook_mlp_out",
    "att": "blocks.{L}.attn.hook_z",
    "transcoders": "blocks.{L}.ln2.hook_normalized",
}
# Gemma Scope 2 folder → (HF hook in, HF hook out, TL hook in)
_GS2_SITES = {
    "resid_post": ("model.layers.{L}.output", None, "blocks.{L}.hook_resid_post"),
    "attn_out": ("model.layers.{L}.self_attn.o_proj.input", None, "blocks.{L}.attn.hook_z"),
    "mlp_out": ("model.layers.{L}.post_feedforward_layernorm.output", None, "blocks.{L}.hook_mlp_out"),
    "transcoder": ("model.layers.{L}.pre_feedforward_layernorm.output",
                   "model.layers.{L}.post_feedforward_layernorm.output", "blocks.{L}.hook_mlp_in"),
}
# SAELens's transcoder loader accepts these spellings too.
_ALIASES = {
    "W_enc": ("W_enc", "w_enc", "Wenc", "wenc", "W_e", "w_e"),
    "W_dec": ("W_dec", "w_dec", "Wdec", "wdec", "W_d", "w_d"),
    "b_enc": ("b_enc", "benc", "b_e"),
    "b_dec": ("b_dec", "bdec", "b_d"),
    "threshold": ("threshold",),
}


def load(path: Path) -> list[SaeWeights]:
    """Gemma Scope 1 or 2, by which params file the folder holds."""
    folder = folder_of(path)
    if (folder / "params.npz").is_file():
        return _load_gs1(folder)
    if (folder / "params.safetensors").is_file():
        return _load_gs2(folder)
    raise SaeFormatError(f"{folder} has neither params.npz (Gemma Scope 1) nor params.safetensors (Gemma Scope 2).")


def _jumprelu(tf: TensorFile, d_out_expected: int | None = None) -> tuple:
    W_enc, W_dec = tf.need(*_ALIASES["W_enc"]), tf.need(*_ALIASES["W_dec"])
    b_enc, b_dec = tf.need(*_ALIASES["b_enc"]), tf.need(*_ALIASES["b_dec"])
    threshold = tf.need("threshold", why="Gemma Scope SAEs are JumpReLU")
    d_sae, d_out = b_enc.shape[0], b_dec.shape[0]
    d_in = W_enc.shape[0] if W_enc.shape[1] == d_sae else W_enc.shape[1]
    source = f"its biases (d_sae={d_sae}, d_out={d_out})"
    expect_shape(W_enc, (d_in, d_sae), "W_enc", tf.path, source)
    expect_shape(W_dec, (d_sae, d_out), "W_dec", tf.path, source)
    expect_shape(threshold, (d_sae,), "threshold", tf.path, source)
    if float(threshold.min()) < 0:
        raise SaeFormatError(
            f"{tf.path}: threshold has negative entries; a JumpReLU threshold is positive (a log-threshold saved "
            "under the name threshold?). Re-save it as exp(threshold)."
        )
    return W_enc, b_enc, W_dec, b_dec, Activation("jumprelu", threshold=threshold)


def _load_gs1(folder: Path) -> list[SaeWeights]:
    tf = TensorFile(folder / "params.npz", load_npz(folder / "params.npz"))
    W_enc, b_enc, W_dec, b_dec, act = _jumprelu(tf)
    text = folder.as_posix()
    site_m = re.search(r"gemma-scope-[\w.]+?-(?:pt|it)-(res|mlp|att|transcoders)", text)
    layer_m = re.search(r"layer_(\d+)", text)
    meta = {"model_name": _gs1_model(text), "release": "gemma-scope"}
    notes = ["Gemma Scope 1 JumpReLU (no b_dec subtraction)"]
    hook, candidates = None, []
    site = site_m.group(1) if site_m else None
    if "/embedding/" in f"/{text}/":
        hook = "hook_embed"
    elif layer_m:
        L = layer_m.group(1)
        if site is None:
            notes.append("site not in the path (no gemma-scope-…-res/mlp/att repo name): guessed resid_post")
            site = "res"
            candidates = [_GS1_SITES["mlp"].format(L=L)]
        hook = _GS1_SITES[site].format(L=L)
        if site == "att":
            meta["reshape_activations"] = "hook_z"
        if site == "transcoders":
            meta["hook_name_out"] = f"blocks.{L}.hook_mlp_out"
            notes.append("transcoder input is ln2.hook_normalized (without the RMSNorm gain); the HF norm output "
                         "with its gain is the other candidate hook")
            candidates = [f"model.layers.{L}.pre_feedforward_layernorm.output"]
    meta["hook_name"] = hook
    sae = SaeWeights(W_enc=W_enc, b_enc=b_enc, W_dec=W_dec, b_dec=b_dec, activation=act, hook=hook,
                     hook_candidates=candidates, format="gemmascope", path=str(folder), convention="; ".join(notes),
                     metadata=meta)
    if hook != "hook_embed":
        return [sae]
    # SAELens rescales embedding SAEs by sqrt(d_in) because they were trained on embeddings without Gemma's scale.
    s = math.sqrt(sae.d_in)
    folded = replace(sae, W_enc=W_enc / s, W_dec=W_dec * s, convention=sae.convention
                     + "; embedding SAE: W_enc/sqrt(d), W_dec*sqrt(d) for scaled embeddings (SAELens)")
    raw = replace(sae, convention=sae.convention + "; embedding SAE as stored (unscaled embeddings)")
    return [folded, raw]


def _gs1_model(text: str) -> str | None:
    m = re.search(r"gemma-scope-(2b|9b|27b)-(pt|it)", text)
    return None if not m else f"gemma-2-{m.group(1)}" + ("-it" if m.group(2) == "it" else "")


def _load_gs2(folder: Path) -> list[SaeWeights]:
    tf = TensorFile(folder / "params.safetensors", load_safetensors(folder / "params.safetensors"))
    W_enc, b_enc, W_dec, b_dec, act = _jumprelu(tf)
    cfg = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    text = folder.as_posix()
    layer_m = re.search(r"layer_(\d+)", text)
    site_m = re.search(r"(?:^|/)(resid_post|attn_out|mlp_out|transcoder)(?:_all)?/", text + "/")
    notes = ["Gemma Scope 2 JumpReLU (no b_dec subtraction)"]
    meta = {k: cfg[k] for k in ("model_name", "width", "l0", "architecture", "type", "affine_connection",
                                "hf_hook_point_in", "hf_hook_point_out") if k in cfg}
    meta["release"] = "gemma-scope-2"
    hook, hook_out, candidates = cfg.get("hf_hook_point_in"), cfg.get("hf_hook_point_out"), []
    if site_m and layer_m:
        hf_in, hf_out, tl_in = (s.format(L=layer_m.group(1)) if s else None for s in _GS2_SITES[site_m.group(1)])
        hook = hook or hf_in
        hook_out = hook_out or hf_out
        candidates = [tl_in]
        if site_m.group(1) == "attn_out":
            meta["reshape_activations"] = "hook_z"
            notes.append("attn_out is the concatenated heads before o_proj (hook_z), not hook_attn_out")
    if hook is None:
        notes.append("no config.json hf_hook_point_in and no site/layer folder names: set the hook explicitly")
    if hook_out and hook_out != hook:
        meta["hook_name_out"] = hook_out
    meta["hook_name"] = hook
    base = SaeWeights(W_enc=W_enc, b_enc=b_enc, W_dec=W_dec, b_dec=b_dec, activation=act, hook=hook,
                      hook_candidates=candidates, format="gemmascope", path=str(folder), metadata=meta)
    A = tf.get("affine_skip_connection")
    if A is None:
        return [replace(base, convention="; ".join(notes))]
    expect_shape(A, (base.d_in, base.d_out), "affine_skip_connection", tf.path, "W_enc and W_dec")
    # Square, so shape cannot settle the orientation: the tutorial's untransposed form first, SAELens's second.
    return [
        replace(base, W_skip=A.T.contiguous(),
                convention="; ".join(notes + ["skip x @ affine_skip_connection (tutorial)"])),
        replace(base, W_skip=A.clone(),
                convention="; ".join(notes + ["skip x @ affine_skip_connection.T (SAELens)"])),
    ]
