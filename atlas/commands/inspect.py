"""`atlas inspect`: run the atlas's model and SAE on some text and list the features that fire most.

The text goes through the model as the build's corpus did: cut into sequences of the build's length, each framed by
the same special tokens (BOS for a causal LM, [CLS]/[SEP] for BERT), whose positions are then dropped, as the harvest
drops them. On a Llama-family model read at a block boundary the blocks run in plain torch (`atlas.lm.trunk`), which
spares the import of transformers' model code; anything else loads the model through `atlas.lm.adapter`.
"""

from __future__ import annotations

from typing import Protocol

from atlas.errors import AtlasError
from atlas.site.urls import SiteUrls
from atlas.store import Store


class _Reader(Protocol):
    """A model that tokenizes text and gives one sequence's activations at the atlas's hook."""

    def encode(self, text: str) -> list[int]: ...

    def activations(self, ids: list[int]): ...

    def token_strings(self, ids: list[int]) -> list[str]: ...


def inspect_text(store: Store, text: str, top: int = 15) -> list[dict]:
    """Run the atlas's model and SAE on `text`; the features that fire most, with labels and pages."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a few dozen tokens: a second thread costs more in start-up and handoffs than it saves
    try:
        return _inspect(store, text, top)
    finally:
        torch.set_num_threads(threads)


def _inspect(store: Store, text: str, top: int) -> list[dict]:
    import torch

    from atlas.saes import load_sae

    info = store.info()
    model_path, sae_path = info.get("model_path_abs"), info.get("sae_path_abs")
    if not model_path or not sae_path:
        raise AtlasError("this atlas does not record where its model and SAE are; rebuild it with `atlas build`")
    sae = load_sae(sae_path, info.get("sae_format", "auto"))
    if info.get("sae_input_scale"):
        sae.input_norm.scale = float(info["sae_input_scale"])
    seq_len = int(((info.get("config") or {}).get("corpus") or {}).get("seq_len") or 64)
    reader, prefix, suffix = _open_model(info, model_path, sae, seq_len)
    ids = reader.encode(text)
    room = max(1, seq_len - len(prefix) - len(suffix))
    pieces = [ids[s : s + room] for s in range(0, len(ids), room)]
    if not pieces:
        return []
    p = len(prefix)
    acts = torch.cat([reader.activations(prefix + piece + suffix)[p : p + len(piece)] for piece in pieces])
    f = sae.encode(acts)
    tokens = reader.token_strings(ids)
    peak, where = f.max(dim=0)
    order = torch.argsort(peak, descending=True)[:top]
    labels = store.feature_labels([int(i) for i in order])
    urls = SiteUrls()
    out = []
    for i in order.tolist():
        if float(peak[i]) <= 0:
            break
        out.append({"feature": i, "max": float(peak[i]), "token": tokens[int(where[i])],
                    "n_tokens": int((f[:, i] > 0).sum()), "label": labels.get(i, ""), "page": urls.feature(i)})
    return out


def _open_model(info: dict, model_path: str, sae, seq_len: int) -> tuple[_Reader, list[int], list[int]]:
    """The model at the atlas's hook and the special tokens the build framed each sequence with."""
    from atlas.lm.trunk import load_trunk

    prefix, suffix = info.get("token_prefix"), info.get("token_suffix")
    if prefix is not None and suffix is not None and info.get("hook_module") is not None:
        trunk = load_trunk(model_path, info["hook_module"], info.get("hook_io", "output"), seq_len,
                           info.get("tokenizer_file"))
        if trunk is not None:
            return trunk, list(prefix), list(suffix)
    from atlas.lm.adapter import load_model

    model = load_model(model_path, info["hook"])
    if prefix is None or suffix is None:  # a store from before the build recorded them: derive them as it did
        from atlas.corpus import special_tokens

        choice = ((info.get("config") or {}).get("model") or {}).get("prepend_bos", "auto")
        bos = sae.metadata.get("prepend_bos", True) if choice == "auto" else choice == "yes"
        prefix, suffix = special_tokens(model.tokenizer, model.is_causal, bool(bos))
    return _AdapterReader(model), list(prefix), list(suffix)


class _AdapterReader:
    """Any model the adapter loads, behind the calls `inspect_text` makes."""

    def __init__(self, model):
        self.model = model

    def encode(self, text: str) -> list[int]:
        return list(self.model.tokenizer(text, add_special_tokens=False)["input_ids"])

    def activations(self, ids: list[int]):
        import torch

        x = torch.tensor([ids], dtype=torch.long)
        return self.model.activations(x, torch.ones_like(x))[0]

    def token_strings(self, ids: list[int]) -> list[str]:
        return self.model.token_strings(ids)
