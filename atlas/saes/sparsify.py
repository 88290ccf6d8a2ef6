"""EleutherAI sparsify: <hookpoint>/cfg.json + sae.safetensors, one folder per hookpoint."""

from __future__ import annotations

import re
from pathlib import Path

from atlas.errors import SaeFormatError
from atlas.saes.files import TensorFile, expect_shape, folder_of, load_safetensors, read_json
from atlas.saes.record import Activation, SaeWeights


def _is_sae_folder(folder: Path) -> bool:
    return (folder / "cfg.json").is_file() and (folder / "sae.safetensors").is_file()


def resolve(path: Path) -> Path:
    """The one hookpoint folder `path` points at; a root of several is refused with their names."""
    folder = folder_of(path)
    if _is_sae_folder(folder):
        return folder
    subs = sorted(p for p in folder.rglob("cfg.json") if _is_sae_folder(p.parent))
    if len(subs) == 1:
        return subs[0].parent
    if not subs:
        raise SaeFormatError(f"{folder} holds no sparsify SAE (a folder with cfg.json and sae.safetensors).")
    names = [str(p.parent.relative_to(folder)) for p in subs]
    shown = ", ".join(names[:30]) + (f", … ({len(names)} in all)" if len(names) > 30 else "")
    raise SaeFormatError(
        f"{folder} holds {len(names)} sparsify SAEs, one per hookpoint: {shown}. Point `[sae] path` at one of "
        f"these subfolders, e.g. {folder / names[0]}."
    )


def load(path: Path) -> list[SaeWeights]:
    """The SAE (or transcoder) of one hookpoint folder."""
    folder = resolve(path)
    cfg = read_json(folder / "cfg.json")
    tf = TensorFile(folder / "sae.safetensors", load_safetensors(folder / "sae.safetensors"))
    enc_w = tf.need("encoder.weight")
    enc_b = tf.need("encoder.bias")
    W_dec = tf.need("W_dec", why="saved encoder-only; sparsify needs the decoder to reconstruct")
    b_dec = tf.need("b_dec")
    d_in = int(cfg.get("d_in") or enc_w.shape[1])
    d_sae = int(cfg.get("num_latents") or 0) or int(d_in * cfg.get("expansion_factor", 0)) or int(enc_b.shape[0])
    d_out = int(b_dec.shape[0])
    source = f"{folder / 'cfg.json'} (d_in={d_in}, num_latents={d_sae})"
    expect_shape(enc_w, (d_sae, d_in), "encoder.weight", tf.path, source)
    expect_shape(enc_b, (d_sae,), "encoder.bias", tf.path, source)
    # sparsify's W_dec is already [num_latents, d] (SAELens's converter transposes it by mistake).
    expect_shape(W_dec, (d_sae, d_out), "W_dec", tf.path, source)
    transcode = bool(cfg.get("transcode", False))
    if not transcode and d_out != d_in:
        raise SaeFormatError(f"{tf.path}: b_dec has {d_out} entries but d_in={d_in}, and cfg.json says transcode "
                             "is false; the config contradicts the weights.")
    notes = [f"sparsify {'transcoder' if transcode else 'SAE'}"]
    act = _activation(cfg, d_sae, folder, notes)
    W_skip = tf.get("W_skip")
    if W_skip is not None:
        expect_shape(W_skip, (d_out, d_in), "W_skip", tf.path, source)
        notes.append("skip x @ W_skip.T")
    hook, candidates = _hookpoint(folder, notes)
    meta = {"hookpoint": hook, "hook_name": hook, **{k: cfg[k] for k in cfg if k != "d_in"}}
    root_cfg = _root_config(folder)
    if root_cfg.get("model"):
        meta["model_name"] = root_cfg["model"]
    if root_cfg.get("ctx_len"):
        meta["context_size"] = root_cfg["ctx_len"]
    return [SaeWeights(
        W_enc=enc_w.T.contiguous(), b_enc=enc_b, W_dec=W_dec, b_dec=b_dec, activation=act,
        pre_bias=None if transcode else b_dec, W_skip=W_skip, hook=hook, hook_candidates=candidates,
        format="sparsify", path=str(folder), convention="; ".join(notes), metadata=meta,
    )]


def _activation(cfg: dict, d_sae: int, folder: Path, notes: list) -> Activation:
    k = int(cfg.get("k", 0))
    if cfg.get("signed"):
        notes.append("legacy signed: top-k by |pre-activation|, signs kept, no ReLU")
        return Activation("signed_topk", k=k)
    kind = cfg.get("activation", "topk")
    if kind == "topk":
        return Activation("topk", k=k)
    if kind == "groupmax":
        notes.append(f"groupmax over {k} groups of {d_sae // max(k, 1)} latents")
        return Activation("groupmax", k=k)
    raise SaeFormatError(f"{folder / 'cfg.json'}: unknown sparsify activation {kind!r}; supported: topk, groupmax.")


def _hookpoint(folder: Path, notes: list) -> tuple[str, list[str]]:
    name = folder.name
    if re.fullmatch(r"seed\d+", name):  # <hookpoint>/seed{N}/ when several init seeds were trained
        name = folder.parent.name
    m = re.fullmatch(r"(?:model\.)?layers\.(\d+)", name)
    if m:
        # Until mid-July 2024 the trainer read hidden_states[N] (the block's input) for `layers.N`.
        notes.append("layers.N means the output of block N since 2024-07-16; earlier releases used its input")
        return name, [f"blocks.{m.group(1)}.hook_resid_pre"]
    m = re.fullmatch(r"layer_(\d+)", name)
    if m:
        notes.append("early layer_N folder: trained on hidden_states[N], the input of block N")
        return f"blocks.{m.group(1)}.hook_resid_pre", [f"layers.{m.group(1)}"]
    return name, []


def _root_config(folder: Path) -> dict:
    for parent in (folder.parent, folder.parent.parent):
        if (parent / "config.json").is_file():
            try:
                return read_json(parent / "config.json")
            except SaeFormatError:
                return {}
    return {}
