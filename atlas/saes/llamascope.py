"""Llama Scope / OpenMOSS lm_saes: v1 (hyperparams.json), R1-distill and llamascopium (config.json)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from atlas.errors import SaeFormatError
from atlas.saes.files import TensorFile, expect_shape, folder_of, load_safetensors, read_json
from atlas.saes.record import Activation, InputNorm, SaeWeights


def load(path: Path) -> list[SaeWeights]:
    """Whichever lm_saes generation the folder holds."""
    path = Path(path)
    folder = path.parent.parent if path.name == "final.safetensors" else folder_of(path)
    if (folder / "hyperparams.json").is_file():
        return [_load_v1(folder)]
    cfg = read_json(folder / "config.json")
    tf = TensorFile(folder / "sae_weights.safetensors", load_safetensors(folder / "sae_weights.safetensors"))
    if "W_E" in tf:
        return [_load_llamascopium(folder, cfg, tf)]
    return [_load_r1(folder, cfg, tf)]


def _linear(tf: TensorFile, d: int, d_sae: int, source: str):
    enc_w, enc_b = tf.need("encoder.weight"), tf.need("encoder.bias")
    dec_w, dec_b = tf.need("decoder.weight"), tf.need("decoder.bias")
    expect_shape(enc_w, (d_sae, d), "encoder.weight", tf.path, source)
    expect_shape(enc_b, (d_sae,), "encoder.bias", tf.path, source)
    expect_shape(dec_w, (d, d_sae), "decoder.weight", tf.path, source)
    expect_shape(dec_b, (d,), "decoder.bias", tf.path, source)
    return enc_w.T.contiguous(), enc_b, dec_w.T.contiguous(), dec_b


def _dims(cfg: dict, cfg_path: Path, enc_bias: torch.Tensor | None) -> tuple[int, int, str]:
    d = cfg.get("d_model")
    if not d:
        raise SaeFormatError(f"{cfg_path}: no d_model.")
    d_sae = cfg.get("d_sae") or int(d * (cfg.get("expansion_factor") or 0)) or (
        int(enc_bias.shape[0]) if enc_bias is not None else 0)
    return int(d), int(d_sae), f"{cfg_path} (d_model={d}, d_sae={d_sae})"


def _scales(norm_mode: str, d: int, norm_in, norm_out, where: Path, notes: list, meta: dict) -> tuple[InputNorm, float]:
    """The input normalisation and the factor s_in/s_out to fold into the decoder."""
    if norm_mode == "inference":
        return InputNorm("none"), 1.0
    if norm_mode == "token-wise":
        notes.append("token-wise input norm: each token rescaled to norm sqrt(d_model)")
        return InputNorm("constant_norm_rescale"), 1.0
    if norm_mode == "dataset-wise" and norm_in:
        s_in = math.sqrt(d) / float(norm_in)
        s_out = math.sqrt(d) / float(norm_out or norm_in)
        notes.append(f"dataset-wise input scale sqrt(d)/{float(norm_in):.6g}; output divided by sqrt(d)/"
                     f"{float(norm_out or norm_in):.6g}")
        meta["input_scale"] = s_in
        return InputNorm("scale", s_in), s_in / s_out
    if norm_mode not in ("dataset-wise", "batch-wise"):
        raise SaeFormatError(f"{where}: unknown norm_activation {norm_mode!r}; supported: dataset-wise, "
                             "token-wise, batch-wise, inference.")
    meta["input_scale_unknown"] = True
    notes.append(f"{norm_mode} input norm without a recorded average norm: estimate sqrt(d)/mean||x|| on real "
                 "activations (atlas.saes.check.estimate_input_scale) and set input_norm.scale")
    return InputNorm("scale", 1.0), 1.0


def _meta(cfg: dict) -> dict:
    meta = {k: cfg[k] for k in ("hook_point_in", "hook_point_out", "model_name", "act_fn", "norm_activation",
                                "sae_type") if k in cfg}
    meta["hook_name"] = cfg.get("hook_point_in")
    if cfg.get("hook_point_out") and cfg.get("hook_point_out") != cfg.get("hook_point_in"):
        meta["hook_name_out"] = cfg["hook_point_out"]
    return meta


def _load_v1(folder: Path) -> SaeWeights:
    cfg_path = folder / "hyperparams.json"
    cfg = read_json(cfg_path)
    file = folder / "checkpoints" / "final.safetensors"
    tf = TensorFile(file, load_safetensors(file))
    d, d_sae, source = _dims(cfg, cfg_path, tf.get("encoder.bias"))
    W_enc, b_enc, W_dec, b_dec = _linear(tf, d, d_sae, source)
    notes, meta = ["Llama Scope v1 (lm_saes 2024)"], _meta(cfg)
    avg = cfg.get("dataset_average_activation_norm") or {}
    norm, fold = _scales(cfg.get("norm_activation", "dataset-wise"), d, avg.get("in"), avg.get("out"), cfg_path,
                         notes, meta)
    act_fn = cfg.get("act_fn", "jumprelu")
    rescale = bool(cfg.get("sparsity_include_decoder_norm", False))
    if act_fn == "jumprelu":
        thr = cfg.get("jump_relu_threshold")
        if thr is None:
            raise SaeFormatError(f"{cfg_path}: act_fn jumprelu without jump_relu_threshold.")
        # The released scalar applies in lm_saes's inference parameterisation (raw input); in the normalised
        # space it is multiplied by s_in.
        s_in = norm.scale if norm.kind == "scale" else 1.0
        act = Activation("jumprelu", threshold=torch.full((d_sae,), float(thr) * s_in), rescale_by_decoder_norm=rescale)
        notes.append(f"scalar JumpReLU threshold {float(thr):.6g}·s_in")
    elif act_fn == "topk":
        act = Activation("topk", k=int(cfg.get("top_k") or 0), rescale_by_decoder_norm=rescale)
    elif act_fn == "relu":
        act = Activation("relu", rescale_by_decoder_norm=rescale)
    else:
        raise SaeFormatError(f"{cfg_path}: unsupported act_fn {act_fn!r}; supported: jumprelu, topk, relu.")
    if rescale:
        notes.append("sparsity_include_decoder_norm: pre-activations scaled by ||W_dec[j]|| (lm_saes load)")
    return SaeWeights(W_enc=W_enc, b_enc=b_enc, W_dec=W_dec * fold, b_dec=b_dec * fold, activation=act,
                      input_norm=norm, hook=meta["hook_name"], format="llamascope", path=str(folder),
                      convention="; ".join(notes), metadata=meta)


def _load_r1(folder: Path, cfg: dict, tf: TensorFile) -> SaeWeights:
    cfg_path = folder / "config.json"
    d, d_sae, source = _dims(cfg, cfg_path, tf.get("encoder.bias"))
    W_enc, b_enc, W_dec, b_dec = _linear(tf, d, d_sae, source)
    log_thr = tf.need("log_jumprelu_threshold", why="Llama Scope R1-distill JumpReLU")
    expect_shape(log_thr, (d_sae,), "log_jumprelu_threshold", tf.path, source)
    notes, meta = ["Llama Scope R1-distill (lm_saes 2025), JumpReLU exp(log_jumprelu_threshold)"], _meta(cfg)
    avg = cfg.get("dataset_average_activation_norm") or {}
    norm, fold = _scales(cfg.get("norm_activation", "dataset-wise"), d, avg.get("in"), avg.get("out"), cfg_path,
                         notes, meta)
    return SaeWeights(W_enc=W_enc, b_enc=b_enc, W_dec=W_dec * fold, b_dec=b_dec * fold,
                      activation=Activation("jumprelu", threshold=torch.exp(log_thr)), input_norm=norm,
                      hook=meta["hook_name"], format="llamascope", path=str(folder), convention="; ".join(notes),
                      metadata=meta)


def _load_llamascopium(folder: Path, cfg: dict, tf: TensorFile) -> SaeWeights:
    cfg_path = folder / "config.json"
    d, d_sae, source = _dims(cfg, cfg_path, tf.get("b_E"))
    W_enc, b_enc, W_dec, b_dec = tf.need("W_E"), tf.need("b_E"), tf.need("W_D"), tf.need("b_D")
    expect_shape(W_enc, (d, d_sae), "W_E", tf.path, source)
    expect_shape(W_dec, (d_sae, d), "W_D", tf.path, source)
    if tf.first("W_E_glu") is not None:
        raise SaeFormatError(f"{tf.path}: GLU encoders (W_E_glu) are not supported.")
    notes, meta = [f"llamascopium {cfg.get('sae_type', 'sae')}"], _meta(cfg)
    norm_in = tf.get("dataset_average_activation_norm.in")
    norm_out = tf.get("dataset_average_activation_norm.out")
    avg = cfg.get("dataset_average_activation_norm") or {}
    norm, fold = _scales(cfg.get("norm_activation", "dataset-wise"), d,
                         float(norm_in) if norm_in is not None else avg.get("in"),
                         float(norm_out) if norm_out is not None else avg.get("out"), cfg_path, notes, meta)
    with_norm = bool(cfg.get("sparsity_include_decoder_norm", True))
    dec_norm = W_dec.norm(dim=1)
    act_fn = cfg.get("act_fn", "jumprelu")
    if act_fn == "jumprelu":
        thr = torch.exp(tf.need("activation_function.log_jumprelu_threshold", "log_jumprelu_threshold"))
        # act(h·n)/n with a JumpReLU is a JumpReLU of h with threshold θ/n.
        act = Activation("jumprelu", threshold=thr / dec_norm if with_norm else thr)
    elif act_fn == "relu":
        act = Activation("relu")
    elif act_fn == "topk":
        act = Activation("topk", k=int(cfg.get("top_k") or 0), rescale_by_decoder_norm=with_norm)
        if with_norm:
            notes.append("top-k chosen on h·||W_D[j]||; features reported in those units (lm_saes divides back)")
    else:
        raise SaeFormatError(f"{cfg_path}: unsupported act_fn {act_fn!r}; supported: jumprelu, relu, topk.")
    return SaeWeights(W_enc=W_enc, b_enc=b_enc, W_dec=W_dec * fold, b_dec=b_dec * fold, activation=act,
                      input_norm=norm, hook=meta["hook_name"], format="llamascope", path=str(folder),
                      convention="; ".join(notes), metadata=meta)
