"""dictionary_learning (saprmarks): ae.pt + config.json whose trainer.dict_class names the class."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from atlas.errors import SaeFormatError
from atlas.saes.files import TensorFile, expect_shape, load_pt, read_json
from atlas.saes.record import Activation, InputNorm, SaeWeights

CLASSES = ("AutoEncoder", "AutoEncoderNew", "GatedAutoEncoder", "JumpReluAutoEncoder", "AutoEncoderTopK",
           "BatchTopKSAE", "MatryoshkaBatchTopKSAE")
_SITES = (
    (r"resid_post_layer_?(\d+)|resid_out_layer_?(\d+)", "blocks.{L}.hook_resid_post"),
    (r"attn_out_layer_?(\d+)", "blocks.{L}.hook_attn_out"),
    (r"mlp_out_layer_?(\d+)", "blocks.{L}.hook_mlp_out"),
)


def load(path: Path) -> list[SaeWeights]:
    """The dictionary in ae.pt (a state dict, or an interrupted run's backup with an 'ae' entry)."""
    path = Path(path)
    file = path if path.is_file() else path / "ae.pt"
    # checkpoints/ae_{step}.pt keep their config.json one level up
    folder = next((p for p in (file.parent, file.parent.parent) if (p / "config.json").is_file()), file.parent)
    config = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    trainer = config.get("trainer", {}) if isinstance(config.get("trainer"), dict) else {}
    state = load_pt(file)
    notes, input_norm = [], InputNorm()
    if "ae" in state and isinstance(state["ae"], dict):
        nf = float(state.get("norm_factor") or 1.0)
        state = state["ae"]
        notes.append("backup checkpoint (the 'ae' entry)")
        if nf != 1.0:
            # Backups keep the training-space biases, so inputs are divided by norm_factor as in training.
            input_norm = InputNorm("scale", 1.0 / nf)
            notes.append(f"inputs divided by norm_factor {nf:.6g}, outputs multiplied back")
    tf = TensorFile(file, state)
    dict_class = trainer.get("dict_class") or _guess_class(tf)
    if dict_class not in CLASSES:
        raise SaeFormatError(
            f"{folder / 'config.json'}: unknown dictionary_learning dict_class {dict_class!r}; supported: "
            f"{', '.join(CLASSES)}."
        )
    d = int(trainer.get("activation_dim") or 0) or None
    F = int(trainer.get("dict_size") or 0) or None
    sae = _BUILDERS[dict_class](tf, d, F, trainer, notes)
    sae.input_norm = input_norm
    hook, candidates = _hook(trainer, folder)
    sae.hook, sae.hook_candidates = hook, candidates
    sae.format, sae.path = "dictionary_learning", str(file)
    sae.convention = "; ".join([f"dictionary_learning {dict_class}", *notes,
                                "raw ae.pt weights (decoder columns not renormalised as from_pretrained does)"])
    buffer = config.get("buffer") if isinstance(config.get("buffer"), dict) else {}
    sae.metadata = {"dict_class": dict_class, "hook_name": hook, "model_name": trainer.get("lm_name"),
                    "submodule_name": trainer.get("submodule_name"), "layer": trainer.get("layer"),
                    "context_size": buffer.get("ctx_len")}
    return [sae]


def _guess_class(tf: TensorFile) -> str:
    if "gate_bias" in tf:
        return "GatedAutoEncoder"
    if "group_sizes" in tf:
        return "MatryoshkaBatchTopKSAE"
    if "W_enc" in tf and "threshold" in tf:
        return "JumpReluAutoEncoder"
    if "b_dec" in tf and "encoder.weight" in tf:
        return "AutoEncoderTopK"
    if "bias" in tf:
        return "AutoEncoder"
    if "decoder.bias" in tf:
        return "AutoEncoderNew"
    return "unknown (config.json has no trainer.dict_class)"


def _dims(tf: TensorFile, d: int | None, F: int | None, d_from: str, F_from: str) -> tuple[int, int, str]:
    d = d or int(tf.need(d_from).shape[0])
    F = F or int(tf.need(F_from).shape[0])
    return d, F, f"config.json (activation_dim={d}, dict_size={F})"


def _linear(tf: TensorFile, d: int, F: int, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    enc, dec = tf.need("encoder.weight"), tf.need("decoder.weight")
    expect_shape(enc, (F, d), "encoder.weight", tf.path, source)
    expect_shape(dec, (d, F), "decoder.weight", tf.path, source)
    return enc.T.contiguous(), dec.T.contiguous()


def _autoencoder(tf, d, F, trainer, notes):
    d, F, src = _dims(tf, d, F, "bias", "encoder.bias")
    W_enc, W_dec = _linear(tf, d, F, src)
    bias = tf.need("bias")
    return SaeWeights(W_enc, tf.need("encoder.bias"), W_dec, bias, Activation("relu"), pre_bias=bias)


def _autoencoder_new(tf, d, F, trainer, notes):
    d, F, src = _dims(tf, d, F, "decoder.bias", "encoder.bias")
    W_enc, W_dec = _linear(tf, d, F, src)
    return SaeWeights(W_enc, tf.need("encoder.bias"), W_dec, tf.need("decoder.bias"), Activation("relu"))


def _gated(tf, d, F, trainer, notes):
    d, F, src = _dims(tf, d, F, "decoder_bias", "gate_bias")
    W_enc, W_dec = _linear(tf, d, F, src)
    b = tf.need("decoder_bias")
    gate, mag, r_mag = tf.need("gate_bias"), tf.need("mag_bias"), tf.need("r_mag")
    return SaeWeights(W_enc, gate, W_dec, b, Activation("gated", b_gate=gate, b_mag=mag, r_mag=r_mag), pre_bias=b)


def _jumprelu(tf, d, F, trainer, notes):
    d, F, src = _dims(tf, d, F, "b_dec", "b_enc")
    W_enc, W_dec = tf.need("W_enc"), tf.need("W_dec")
    expect_shape(W_enc, (d, F), "W_enc", tf.path, src)
    expect_shape(W_dec, (F, d), "W_dec", tf.path, src)
    thr = tf.need("threshold")
    return SaeWeights(W_enc, tf.need("b_enc"), W_dec, tf.need("b_dec"), Activation("jumprelu", threshold=thr))


def _k(tf: TensorFile, trainer: dict) -> int:
    k = tf.tensors.get("k")
    k = int(k) if k is not None else trainer.get("k")
    if not k:
        raise SaeFormatError(f"{tf.path}: no k buffer in the file and no trainer.k in config.json.")
    return int(k)


def _threshold_or_topk(tf: TensorFile, trainer: dict, F: int, notes: list) -> Activation:
    k = _k(tf, trainer)
    t = tf.tensors.get("threshold")
    if t is None or float(t) < 0:
        notes.append(f"no batch threshold recorded: per-token top-{k} instead")
        return Activation("topk", k=k)
    notes.append(f"inference with the batch threshold {float(t):.6g} (use_threshold=True)")
    return Activation("threshold", k=k, threshold=torch.full((F,), float(t)))


def _topk(tf, d, F, trainer, notes, batch=False):
    d, F, src = _dims(tf, d, F, "b_dec", "encoder.bias")
    W_enc, W_dec = _linear(tf, d, F, src)
    b_dec = tf.need("b_dec")
    act = _threshold_or_topk(tf, trainer, F, notes) if batch else Activation("topk", k=_k(tf, trainer))
    return SaeWeights(W_enc, tf.need("encoder.bias"), W_dec, b_dec, act, pre_bias=b_dec)


def _matryoshka(tf, d, F, trainer, notes):
    d, F, src = _dims(tf, d, F, "b_dec", "b_enc")
    W_enc, W_dec = tf.need("W_enc"), tf.need("W_dec")
    expect_shape(W_enc, (d, F), "W_enc", tf.path, src)
    expect_shape(W_dec, (F, d), "W_dec", tf.path, src)
    b_dec = tf.need("b_dec")
    act = _threshold_or_topk(tf, trainer, F, notes)
    return SaeWeights(W_enc, tf.need("b_enc"), W_dec, b_dec, act, pre_bias=b_dec)


_BUILDERS = {
    "AutoEncoder": _autoencoder,
    "AutoEncoderNew": _autoencoder_new,
    "GatedAutoEncoder": _gated,
    "JumpReluAutoEncoder": _jumprelu,
    "AutoEncoderTopK": _topk,
    "BatchTopKSAE": lambda *a: _topk(*a, batch=True),
    "MatryoshkaBatchTopKSAE": _matryoshka,
}


def _hook(trainer: dict, folder: Path) -> tuple[str | None, list[str]]:
    names = [str(trainer.get("submodule_name") or ""), *(p.name for p in (folder, folder.parent, folder.parent.parent))]
    for name in names:
        if name == "embed":
            return "hook_embed", []
        for pattern, template in _SITES:
            m = re.search(pattern, name)
            if m:
                L = next(g for g in m.groups() if g is not None)
                return template.format(L=L), []
    layer = trainer.get("layer")
    if isinstance(layer, int):
        # The common case (residual dictionaries) is the layer's output; the others stay as candidates.
        return f"blocks.{layer}.hook_resid_post", [f"blocks.{layer}.hook_mlp_out", f"blocks.{layer}.hook_attn_out"]
    return None, []
