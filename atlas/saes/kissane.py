"""Kissane/Krzyzanowski GPT-2 attention SAEs: <name>.pt (SAELens names) + <name>_cfg.json."""

from __future__ import annotations

from pathlib import Path

from atlas.errors import SaeFormatError
from atlas.saes.files import TensorFile, expect_shape, load_pt, read_json, single_checkpoint
from atlas.saes.record import Activation, SaeWeights


def load(path: Path) -> list[SaeWeights]:
    """A hook_z SAE: ReLU, b_dec subtracted first, trained on TransformerLens-processed GPT-2."""
    file = single_checkpoint(path)
    cfg_path = file.with_name(f"{file.stem}_cfg.json")
    if not cfg_path.is_file():
        siblings = sorted(file.parent.glob("*_cfg.json"))
        if len(siblings) != 1:
            raise SaeFormatError(f"{file}: expected its config at {cfg_path}.")
        cfg_path = siblings[0]
    cfg = read_json(cfg_path)
    tf = TensorFile(file, load_pt(file))
    d_in, d_sae = int(cfg.get("act_size", 0)), int(cfg.get("dict_size", 0))
    source = f"{cfg_path} (act_size={d_in}, dict_size={d_sae})"
    W_enc, W_dec, b_enc, b_dec = (tf.need(n) for n in ("W_enc", "W_dec", "b_enc", "b_dec"))
    expect_shape(W_enc, (d_in, d_sae), "W_enc", file, source)
    expect_shape(W_dec, (d_sae, d_in), "W_dec", file, source)
    expect_shape(b_enc, (d_sae,), "b_enc", file, source)
    expect_shape(b_dec, (d_in,), "b_dec", file, source)
    hook = cfg.get("act_name")
    meta = {"hook_name": hook, "model_name": "gpt2", "reshape_activations": "hook_z",
            "tl_processed_activations": True, "layer": cfg.get("layer")}
    return [SaeWeights(
        W_enc=W_enc, b_enc=b_enc, W_dec=W_dec, b_dec=b_dec, activation=Activation("relu"), pre_bias=b_dec,
        hook=hook, format="kissane", path=str(file), metadata=meta,
        convention="Kissane hook_z: flattened heads, b_dec subtracted; TransformerLens-processed GPT-2 (no b_V)",
    )]
