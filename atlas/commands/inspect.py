"""`atlas inspect`: run the atlas's model and SAE on some text and list the features that fire most."""

from __future__ import annotations

from atlas.errors import AtlasError
from atlas.site.urls import SiteUrls
from atlas.store import Store
from atlas.store import reads


def inspect_text(store: Store, text: str, top: int = 15) -> list[dict]:
    """Run the atlas's model and SAE on `text`; the features that fire most, with labels and pages."""
    import torch

    from atlas.lm.adapter import load_model
    from atlas.saes import load_sae

    info = store.info()
    model_path, sae_path = info.get("model_path_abs"), info.get("sae_path_abs")
    if not model_path or not sae_path:
        raise AtlasError("this atlas does not record where its model and SAE are; rebuild it with `atlas build`")
    model = load_model(model_path, info["hook"])
    sae = load_sae(sae_path, info.get("sae_format", "auto"))
    if info.get("sae_input_scale"):
        sae.input_norm.scale = float(info["sae_input_scale"])
    enc = model.tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        f = sae.encode(model.activations(enc["input_ids"], enc["attention_mask"]))[0]
    tokens = model.token_strings(enc["input_ids"][0].tolist())
    peak, where = f.max(dim=0)
    order = torch.argsort(peak, descending=True)[:top]
    feats = reads.features(store).set_index("feature")
    urls = SiteUrls()
    out = []
    for i in order.tolist():
        if float(peak[i]) <= 0:
            break
        out.append({"feature": i, "max": float(peak[i]), "token": tokens[int(where[i])],
                    "n_tokens": int((f[:, i] > 0).sum()), "label": str(feats.at[i, "label"]) if i in feats.index else "",
                    "page": urls.feature(i)})
    return out
