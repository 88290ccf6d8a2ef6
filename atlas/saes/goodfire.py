"""Goodfire: a single .pt/.pth state dict with encoder_linear / decoder_linear."""

from __future__ import annotations

import re
from pathlib import Path

from atlas.saes.files import TensorFile, expect_shape, load_pt, single_checkpoint
from atlas.saes.record import Activation, SaeWeights


def load(path: Path) -> list[SaeWeights]:
    """A Goodfire SAE: ReLU, no pre-encoder bias, residual stream after the layer in the file name."""
    file = single_checkpoint(path)
    tf = TensorFile(file, load_pt(file))
    b_enc, b_dec = tf.need("encoder_linear.bias"), tf.need("decoder_linear.bias")
    d_in, d_sae = b_dec.shape[0], b_enc.shape[0]
    source = f"the biases (d_in={d_in}, d_sae={d_sae})"
    enc, dec = tf.need("encoder_linear.weight"), tf.need("decoder_linear.weight")
    expect_shape(enc, (d_sae, d_in), "encoder_linear.weight", file, source)
    expect_shape(dec, (d_in, d_sae), "decoder_linear.weight", file, source)
    meta = {"chat_model": True}
    m = re.search(r"(Llama-[\w.-]+?)-SAE-l(\d+)", file.name)
    hook, candidates = None, []
    if m:
        meta["model_name"] = f"meta-llama/{m.group(1)}"
        hook, candidates = f"blocks.{m.group(2)}.hook_resid_post", [f"model.layers.{m.group(2)}"]
    meta["hook_name"] = hook
    return [SaeWeights(
        W_enc=enc.T.contiguous(), b_enc=b_enc, W_dec=dec.T.contiguous(), b_dec=b_dec, activation=Activation("relu"),
        hook=hook, hook_candidates=candidates, format="goodfire", path=str(file),
        convention="Goodfire ReLU, no pre-encoder bias; trained on chat-formatted text", metadata=meta,
    )]
