"""SAELens folders: cfg.json (any era, v1–v6) + sae_weights.safetensors."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from atlas.errors import SaeFormatError
from atlas.saes.files import TensorFile, expect_shape, folder_of, load_safetensors, read_json
from atlas.saes.record import Activation, InputNorm, SaeWeights

CONFIG = "cfg.json"
WEIGHTS = "sae_weights.safetensors"

ARCHITECTURES = (
    "standard", "gated", "jumprelu", "topk", "batchtopk", "matryoshka_batchtopk",
    "transcoder", "skip_transcoder", "jumprelu_transcoder", "jumprelu_skip_transcoder",
)
_METADATA_KEYS = (
    "sae_lens_version", "sae_lens_training_version", "model_name", "model_class_name", "hook_name",
    "hook_head_index", "context_size", "prepend_bos", "exclude_special_tokens", "seqpos_slice", "dataset_path",
    "model_from_pretrained_kwargs", "neuronpedia_id", "sequence_separator_token", "disable_concat_sequences",
    "hook_name_out", "hook_head_index_out", "hf_hook_name", "hf_hook_name_out",
)
_NORMALIZE_MODES = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")
# Training moved to un-processed TransformerLens models in v3.19.2; older SAEs expect processed activations.
_UNPROCESSED_SINCE = (3, 19, 2)


def upgrade_config(raw: dict) -> tuple[dict, str]:
    """The v6 shape of any SAELens cfg.json (SAELens's own pre-6 rules), and the era it was read as."""
    if isinstance(raw.get("metadata"), dict) or _version(raw.get("sae_lens_version")) >= (6,):
        cfg = dict(raw)
        cfg["metadata"] = dict(raw.get("metadata") or {})
        return cfg, "v6"
    era = "v1-v2" if "hook_point" in raw else "v3-v5"
    cfg = dict(raw)
    for old, new in (("hook_point", "hook_name"), ("hook_point_head_index", "hook_head_index"),
                     ("activation_fn_str", "activation_fn")):
        if old in cfg:
            cfg.setdefault(new, cfg.pop(old))
    cfg.setdefault("apply_b_dec_to_input", True)
    cfg.setdefault("architecture", "standard")
    cfg.setdefault("activation_fn", "relu")
    cfg.setdefault("prepend_bos", True)
    cfg.setdefault("finetuning_scaling_factor", False)
    cfg.setdefault("reshape_activations", "hook_z" if "hook_z" in str(cfg.get("hook_name", "")) else "none")
    kwargs = cfg.get("activation_fn_kwargs") or {}
    if cfg["activation_fn"] == "topk" and kwargs.get("k"):
        cfg["architecture"] = "topk"
        cfg["k"] = kwargs["k"]
    norm = cfg.get("normalize_activations")
    cfg["normalize_activations"] = {True: "expected_average_only_in", False: "none", None: "none"}.get(norm, norm)
    if cfg.get("d_sae") is None and cfg.get("expansion_factor") and cfg.get("d_in"):
        cfg["d_sae"] = int(cfg["d_in"] * cfg["expansion_factor"])
    cfg["metadata"] = {k: cfg.pop(k) for k in _METADATA_KEYS if k in cfg}
    return cfg, era


def load(folder: Path) -> list[SaeWeights]:
    """The SAE in a SAELens folder (one candidate)."""
    folder = folder_of(folder)
    raw = read_json(folder / CONFIG)
    cfg, era = upgrade_config(raw)
    tensors = TensorFile(folder / WEIGHTS, load_safetensors(folder / WEIGHTS))
    return [build(cfg, era, tensors, folder)]


def build(cfg: dict, era: str, tf: TensorFile, folder: Path) -> SaeWeights:
    """A SaeWeights from an upgraded (v6-shaped) config and the weights file."""
    cfg_path = folder / CONFIG
    arch = cfg.get("architecture", "standard")
    if arch not in ARCHITECTURES:
        raise SaeFormatError(
            f"{cfg_path}: unknown SAELens architecture {arch!r}; supported: {', '.join(ARCHITECTURES)}. "
            "If the file comes from a newer SAELens, convert it with SAELens's save_inference_model, which writes "
            "one of these."
        )
    meta = dict(cfg.get("metadata") or {})
    written_by_saelens = bool(_version(meta.get("sae_lens_version")) or _version(meta.get("sae_lens_training_version")))
    is_transcoder = "transcoder" in arch

    W_enc = tf.need("W_enc")
    d_in = _int(cfg, "d_in", W_enc.shape[0], cfg_path)
    d_sae = _int(cfg, "d_sae", W_enc.shape[1], cfg_path)
    d_out = _int(cfg, "d_out", d_in, cfg_path) if is_transcoder else d_in
    source = f"{cfg_path} (d_in={d_in}, d_sae={d_sae}{f', d_out={d_out}' if is_transcoder else ''})"
    W_dec = tf.need("W_dec")
    expect_shape(W_enc, (d_in, d_sae), "W_enc", tf.path, source, fixed=written_by_saelens)
    expect_shape(W_dec, (d_sae, d_out), "W_dec", tf.path, source, fixed=written_by_saelens)
    b_dec = tf.need("b_dec")
    expect_shape(b_dec, (d_out,), "b_dec", tf.path, source)

    notes = [f"SAELens {era} cfg, architecture {arch}"]
    activation, b_enc = _activation(cfg, arch, tf, d_sae, source, notes)
    apply_b_dec = bool(cfg.get("apply_b_dec_to_input", not is_transcoder))
    if apply_b_dec and d_out != d_in:
        raise SaeFormatError(
            f"{cfg_path}: apply_b_dec_to_input is true but d_out={d_out} differs from d_in={d_in}, so b_dec cannot "
            "be subtracted from the input; set apply_b_dec_to_input to false (transcoders never subtract it)."
        )
    input_norm = _input_norm(cfg, folder, d_in, notes, meta)

    W_skip = tf.get("W_skip")
    if W_skip is not None:
        expect_shape(W_skip, (d_out, d_in), "W_skip", tf.path, source, fixed=True)
        notes.append("skip term x @ W_skip.T on the raw input")
    decode_scale = tf.get("scaling_factor")
    if decode_scale is not None:
        expect_shape(decode_scale, (d_sae,), "scaling_factor", tf.path, source)
        if torch.all(decode_scale == 1):
            decode_scale = None
        else:
            notes.append("legacy scaling_factor multiplies features before decoding")

    reshape = cfg.get("reshape_activations", "none")
    meta.update(
        architecture=arch,
        saelens_era=era,
        normalize_activations=cfg.get("normalize_activations", "none"),
        apply_b_dec_to_input=apply_b_dec,
        reshape_activations=reshape,
    )
    if reshape == "hook_z":
        notes.append("hook_z input: [..., n_heads, d_head] flattened to d_in")
    if _expects_processed(meta, era):
        meta["tl_processed_activations"] = True
        notes.append("trained before SAELens 3.19.2 on TransformerLens-processed activations")
    hook = meta.get("hook_name")
    candidates = [h for h in (meta.get("hf_hook_name"),) if h and h != hook]
    return SaeWeights(
        W_enc=W_enc, b_enc=b_enc, W_dec=W_dec, b_dec=b_dec, activation=activation, input_norm=input_norm,
        pre_bias=b_dec if apply_b_dec else None, decode_scale=decode_scale, W_skip=W_skip, hook=hook,
        hook_candidates=candidates, format="saelens", path=str(folder), convention="; ".join(notes), metadata=meta,
    )


def _activation(cfg: dict, arch: str, tf: TensorFile, d_sae: int, source: str,
                notes: list) -> tuple[Activation, torch.Tensor]:
    if arch == "gated":
        b_gate, b_mag, r_mag = (tf.need(n, why="gated SAE") for n in ("b_gate", "b_mag", "r_mag"))
        for name, t in (("b_gate", b_gate), ("b_mag", b_mag), ("r_mag", r_mag)):
            expect_shape(t, (d_sae,), name, tf.path, source)
        # The gate path is the usual encoder with b_gate as its bias.
        return Activation("gated", b_gate=b_gate, b_mag=b_mag, r_mag=r_mag), b_gate
    b_enc = tf.need("b_enc")
    expect_shape(b_enc, (d_sae,), "b_enc", tf.path, source)
    rescale = bool(cfg.get("rescale_acts_by_decoder_norm", False))
    if arch.startswith("jumprelu"):
        return Activation("jumprelu", threshold=_threshold(tf, d_sae, source)), b_enc
    if arch == "topk":
        k = cfg.get("k")
        if k is None:
            raise SaeFormatError(f"{tf.path.parent / CONFIG}: architecture topk needs k (or activation_fn_kwargs.k).")
        if rescale:
            notes.append("TopK on pre-activations scaled by ||W_dec[j]|| (features reported in those units)")
        return Activation("topk", k=int(k), rescale_by_decoder_norm=rescale), b_enc
    if arch in ("batchtopk", "matryoshka_batchtopk"):
        t = tf.need("topk_threshold", why="BatchTopK training checkpoint")
        rescale = bool(cfg.get("rescale_acts_by_decoder_norm", True))
        notes.append(f"BatchTopK run at inference with the scalar threshold {float(t.reshape(-1)[0]):.6g}")
        if rescale:
            notes.append("threshold compared with activations scaled by ||W_dec[j]||")
        return Activation("threshold", k=cfg.get("k"), threshold=t.reshape(-1)[0] * torch.ones(d_sae),
                          rescale_by_decoder_norm=rescale), b_enc
    fn = str(cfg.get("activation_fn", "relu")).replace("-", "_")
    if fn not in ("relu", "tanh_relu"):
        raise SaeFormatError(
            f"{tf.path.parent / CONFIG}: activation_fn {cfg.get('activation_fn')!r} is not supported for "
            f"architecture {arch!r}; supported: relu, tanh-relu, or topk with activation_fn_kwargs.k."
        )
    return Activation(fn), b_enc


def _threshold(tf: TensorFile, d_sae: int, source: str) -> torch.Tensor:
    # Inference files store threshold; v6 training keeps log_threshold.
    t = tf.get("threshold")
    if t is None:
        t = torch.exp(tf.need("threshold", "log_threshold", why="JumpReLU"))
    if t.ndim == 0 or t.numel() == 1:
        t = t.reshape(()) * torch.ones(d_sae)
    expect_shape(t, (d_sae,), "threshold", tf.path, source)
    return t


def _input_norm(cfg: dict, folder: Path, d_in: int, notes: list, meta: dict) -> InputNorm:
    mode = cfg.get("normalize_activations", "none") or "none"
    if mode not in _NORMALIZE_MODES:
        raise SaeFormatError(
            f"{folder / CONFIG}: normalize_activations {mode!r} is not one of {', '.join(_NORMALIZE_MODES)}."
        )
    if mode in ("none", "layer_norm", "constant_norm_rescale"):
        if mode != "none":
            notes.append(f"input normalisation {mode}, inverted on the output per token")
        return InputNorm(mode)
    scale, origin = _known_scale(cfg, folder)
    if scale is None:
        meta["input_scale_unknown"] = True
        notes.append(
            "expected_average_only_in with unknown scale: estimate sqrt(d_in)/mean||x|| on real activations "
            "(atlas.saes.check.estimate_input_scale) and set input_norm.scale"
        )
        return InputNorm("scale", 1.0)
    meta["input_scale"] = scale
    notes.append(f"input scaled by {scale:.6g} ({origin}), output divided by it")
    return InputNorm("scale", scale)


def _known_scale(cfg: dict, folder: Path) -> tuple[float | None, str]:
    scaler = folder / "activation_scaler.json"
    if scaler.is_file():
        value = read_json(scaler).get("scaling_factor")
        if value is not None:
            return float(value), "activation_scaler.json"
    for key in ("norm_scaling_factor", "scaling_factor"):
        if isinstance(cfg.get(key), (int, float)) and not isinstance(cfg.get(key), bool):
            return float(cfg[key]), f"cfg.json {key}"
    return None, ""


def _int(cfg: dict, key: str, default, cfg_path: Path) -> int:
    value = cfg.get(key, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise SaeFormatError(f"{cfg_path}: {key} should be an integer, got {value!r}.") from None


def _version(value) -> tuple[int, ...]:
    if not isinstance(value, str):
        return ()
    return tuple(int(p) for p in re.findall(r"\d+", value.split("-")[0])[:3])


def _expects_processed(meta: dict, era: str) -> bool:
    if era == "v6" or meta.get("model_from_pretrained_kwargs"):
        return False
    version = _version(meta.get("sae_lens_training_version")) or _version(meta.get("sae_lens_version"))
    return not version or version < _UNPROCESSED_SINCE
