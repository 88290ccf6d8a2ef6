"""OpenAI sparse_autoencoder: a torch state dict with pre_bias, latent_bias and an activation string."""

from __future__ import annotations

import re
from pathlib import Path

from atlas.errors import SaeFormatError
from atlas.saes.files import TensorFile, expect_shape, load_pt, single_checkpoint
from atlas.saes.record import Activation, InputNorm, SaeWeights

# location folder → TransformerLens hook
_LOCATIONS = {
    "mlp_post_act": "blocks.{L}.mlp.hook_post",
    "resid_delta_attn": "blocks.{L}.hook_attn_out",
    "resid_post_attn": "blocks.{L}.hook_resid_mid",
    "resid_delta_mlp": "blocks.{L}.hook_mlp_out",
    "resid_post_mlp": "blocks.{L}.hook_resid_post",
}


def load(path: Path) -> list[SaeWeights]:
    """One OpenAI autoencoder file (`…/{location}_v5_32k/autoencoders/{layer}.pt`)."""
    file = single_checkpoint(path)
    state = load_pt(file)
    tf = TensorFile(file, state)
    pre_bias, latent_bias = tf.need("pre_bias"), tf.need("latent_bias")
    d_in, d_sae = pre_bias.shape[0], latent_bias.shape[0]
    source = f"pre_bias and latent_bias (d_in={d_in}, n_latents={d_sae})"
    enc, dec = tf.need("encoder.weight"), tf.need("decoder.weight")
    expect_shape(enc, (d_sae, d_in), "encoder.weight", file, source)
    expect_shape(dec, (d_in, d_sae), "decoder.weight", file, source)
    name = str(tf.extras.get("activation", "ReLU"))
    kwargs = tf.extras.get("activation_state_dict") or {}
    notes = [f"OpenAI {name}"]
    meta = {"model_name": "gpt2"} if "gpt2" in file.as_posix() else {}
    if name == "TopK":
        if "k" not in kwargs:
            raise SaeFormatError(f"{file}: activation TopK without activation_state_dict['k'].")
        act, norm = Activation("topk", k=int(kwargs["k"])), InputNorm("layer_norm")
        # v5 TopK autoencoders were trained on layer-normalised inputs, 64-token contexts without BOS.
        notes.append("layer-normalised input (unbiased std, eps on std), de-normalised output")
        meta.update(prepend_bos=False, context_size=64)
    elif name == "ReLU":
        act, norm = Activation("relu"), InputNorm("none")
    else:
        raise SaeFormatError(f"{file}: unsupported OpenAI activation {name!r}; supported: ReLU, TopK.")
    hook = _hook(file)
    meta["hook_name"] = hook
    return [SaeWeights(
        W_enc=enc.T.contiguous(), b_enc=latent_bias, W_dec=dec.T.contiguous(), b_dec=pre_bias, activation=act,
        input_norm=norm, pre_bias=pre_bias, hook=hook, format="openai", path=str(file),
        convention="; ".join(notes), metadata=meta,
    )]


def _hook(file: Path) -> str | None:
    text = file.as_posix()
    loc = re.search(r"(" + "|".join(_LOCATIONS) + r")(?:_v\w+)?/", text)
    layer = re.fullmatch(r"\d+", file.stem)
    if loc and layer:
        return _LOCATIONS[loc.group(1)].format(L=int(file.stem))
    return None
