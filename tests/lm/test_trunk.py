"""The plain-torch Llama-family trunk against transformers: the same tokens, the same activations at every block
boundary, and no trunk at all where it would not reproduce them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from atlas.lm.adapter import ModelAdapter, load_model
from atlas.lm.hooks import resolve_hook
from atlas.lm.trunk import load_trunk, save_tokenizer
from tiny_models import N_LAYERS, SENTENCE, TEXT, save_tiny

ARCHS = ["llama", "qwen2", "mistral"]
TEXTS = [SENTENCE, TEXT[3], "naïve café, 東京 and unseen words"]


def _perturb_biases(folder: Path) -> None:
    """Random init leaves Qwen2's q/k/v biases at zero; give them values so the trunk has to add them."""
    path = folder / "model.safetensors"
    weights = load_file(str(path))
    g = torch.Generator().manual_seed(3)
    for name, t in weights.items():
        if name.endswith(".bias"):
            weights[name] = t + 0.3 * torch.randn(t.shape, generator=g)
    save_file(weights, str(path), metadata={"format": "pt"})


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trunk-models")
    out = {arch: save_tiny(arch, root / arch) for arch in [*ARCHS, "gemma2", "gpt2"]}
    _perturb_biases(out["qwen2"])
    return out


def _at(adapter: ModelAdapter, hook: str) -> ModelAdapter:
    return ModelAdapter(adapter.tokenizer, adapter.model, resolve_hook(adapter.model, hook), adapter.is_causal, "x")


def _hooks() -> list[str]:
    hooks = [f"blocks.{L}.hook_resid_{w}" for L in range(N_LAYERS) for w in ("pre", "post")]
    return hooks + ["model.layers.1", "layers.2.input", f"hidden_states.{N_LAYERS}"]


@pytest.mark.parametrize("arch", ARCHS)
def test_the_trunk_reproduces_transformers_at_every_block_boundary(folders, arch, tmp_path):
    loaded = load_model(folders[arch], "hidden_states.0")
    saved = save_tokenizer(loaded.tokenizer, tmp_path)
    if arch == "qwen2":
        assert float(loaded.model.model.layers[0].self_attn.q_proj.bias.detach().abs().max()) > 0
    for hook in _hooks():
        adapter = _at(loaded, hook)
        trunk = load_trunk(folders[arch], adapter.hook_spec.module, adapter.hook_spec.io, 64, saved)
        assert trunk is not None, hook
        for text in TEXTS:
            ids = trunk.encode(text)
            assert ids == adapter.tokenizer(text, add_special_tokens=False)["input_ids"]
            ids = [adapter.bos_token_id, *ids]
            expected = adapter.activations(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))[0]
            torch.testing.assert_close(trunk.activations(ids), expected, rtol=1e-5, atol=1e-5, msg=hook)
            assert trunk.token_strings(ids) == adapter.token_strings(ids)


def test_sharded_weights_are_read_through_their_index(folders, tmp_path):
    sharded = tmp_path / "sharded"
    shutil.copytree(folders["llama"], sharded)
    model = load_model(sharded, "blocks.1.hook_resid_post").model
    (sharded / "model.safetensors").unlink()
    model.save_pretrained(sharded, max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").is_file() and len(list(sharded.glob("*.safetensors"))) > 2
    adapter = load_model(sharded, "blocks.1.hook_resid_post")
    trunk = load_trunk(sharded, "model.layers.1", "output", 64, save_tokenizer(adapter.tokenizer, tmp_path))
    ids = [adapter.bos_token_id, *trunk.encode(SENTENCE)]
    expected = adapter.activations(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))[0]
    torch.testing.assert_close(trunk.activations(ids), expected, rtol=1e-5, atol=1e-5)


def _edited(folder: Path, tmp_path: Path, file: str, **changes) -> Path:
    copy = tmp_path / f"{folder.name}-edited-{file}"
    shutil.copytree(folder, copy)
    data = json.loads((copy / file).read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    (copy / file).write_text(json.dumps(data))
    return copy


def test_no_trunk_where_it_would_not_reproduce_the_model(folders, tmp_path):
    llama = folders["llama"]
    tok = save_tokenizer(load_model(llama, "hidden_states.1").tokenizer, tmp_path)
    assert load_trunk(llama, "model.layers.1", "output", 64, tok) is not None
    assert load_trunk(llama, "model.layers.1", "output", 64, None) is None  # no saved tokenizer pipeline
    assert load_trunk(llama, "model.layers.1", "output", 64, tmp_path / "missing.json") is None
    assert load_trunk(folders["gemma2"], "model.layers.1", "output", 64, tok) is None  # another family
    assert load_trunk(folders["gpt2"], "transformer.h.1", "output", 64, tok) is None
    for module, io in [("model.layers.1.self_attn.o_proj", "input"), ("model.layers.1.mlp", "output"),
                       (f"model.layers.{N_LAYERS}", "output"), ("model.norm", "input")]:
        assert load_trunk(llama, module, io, 64, tok) is None, (module, io)
    scaled = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0}
    assert load_trunk(_edited(llama, tmp_path, "config.json", rope_parameters=scaled), "model.layers.1", "output", 64,
                      tok) is None
    # Mistral's sliding window only matters past its span.
    window = _edited(folders["mistral"], tmp_path, "config.json", sliding_window=8)
    assert load_trunk(window, "model.layers.1", "output", 8, tok) is not None
    assert load_trunk(window, "model.layers.1", "output", 9, tok) is None


def test_the_saved_tokenizer_is_the_pipeline_transformers_runs(folders, tmp_path):
    """Qwen2's tokenizer class rebuilds its pipeline from the vocabulary: the saved pipeline is that rebuilt one."""
    adapter = load_model(folders["qwen2"], "hidden_states.1")
    saved = save_tokenizer(adapter.tokenizer, tmp_path)
    assert save_tokenizer(adapter.tokenizer, tmp_path) == saved  # named by its contents, written once
    trunk = load_trunk(folders["qwen2"], "model.layers.1", "output", 64, saved)
    for text in TEXTS:
        assert trunk.encode(text) == adapter.tokenizer(text, add_special_tokens=False)["input_ids"]
