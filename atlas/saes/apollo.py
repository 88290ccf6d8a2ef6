"""Apollo e2e_sae: samples_N.pt (an nn.ModuleDict keyed by hook name with '.'→'-') + final_config.yaml."""

from __future__ import annotations

import re
from pathlib import Path

from atlas.errors import SaeFormatError
from atlas.saes.files import TensorFile, expect_shape, load_pt
from atlas.saes.record import Activation, SaeWeights

_KEY = re.compile(r"^(?P<hook>[^.]+)\.(?P<name>encoder\.0\.weight|encoder\.0\.bias|decoder\.weight|decoder\.bias)$")


def _checkpoint(path: Path) -> Path:
    if path.is_file():
        return path
    found = sorted(path.glob("samples_*.pt"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    if not found:
        raise SaeFormatError(f"{path} holds no samples_*.pt checkpoint.")
    return found[-1]  # the most samples seen: the final one


def load(path: Path) -> list[SaeWeights]:
    """One e2e SAE: ReLU, no pre-encoder bias, decoder columns normalised on the fly as Apollo's forward does."""
    file = _checkpoint(Path(path))
    tf = TensorFile(file, load_pt(file))
    hooks = sorted({m.group("hook") for k in tf.tensors if (m := _KEY.match(k))})
    if len(hooks) != 1:
        listed = ", ".join(h.replace("-", ".") for h in hooks) or "none"
        raise SaeFormatError(
            f"{file} holds SAEs for {len(hooks)} hook points ({listed}); feature-atlas explains one SAE at a time. "
            "Save one of them alone, e.g. `torch.save({k: v for k, v in sd.items() if k.startswith(prefix)}, "
            "'one.pt')`, next to final_config.yaml."
        )
    prefix = hooks[0]
    enc_w, enc_b = tf.need(f"{prefix}.encoder.0.weight"), tf.need(f"{prefix}.encoder.0.bias")
    dec_w, dec_b = tf.need(f"{prefix}.decoder.weight"), tf.need(f"{prefix}.decoder.bias")
    d_in, d_sae = dec_b.shape[0], enc_b.shape[0]
    source = f"the biases (d_in={d_in}, d_sae={d_sae})"
    expect_shape(enc_w, (d_sae, d_in), f"{prefix}.encoder.0.weight", file, source)
    expect_shape(dec_w, (d_in, d_sae), f"{prefix}.decoder.weight", file, source)
    W_dec = (dec_w / dec_w.norm(dim=0, keepdim=True)).T.contiguous()
    hook = prefix.replace("-", ".")
    meta = {"hook_name": hook, "tl_processed_activations": True, **_config(file.parent)}
    return [SaeWeights(
        W_enc=enc_w.T.contiguous(), b_enc=enc_b, W_dec=W_dec, b_dec=dec_b, activation=Activation("relu"),
        hook=hook, format="apollo", path=str(file), metadata=meta,
        convention="Apollo e2e: decoder columns normalised to unit norm; TransformerLens-processed activations",
    )]


def _config(folder: Path) -> dict:
    cfg_path = folder / "final_config.yaml"
    try:
        import yaml

        cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
    except Exception:  # the yaml only adds metadata; the weights file is authoritative
        return {}
    return {"model_name": cfg["tlens_model_name"]} if isinstance(cfg, dict) and cfg.get("tlens_model_name") else {}
