"""Logit effects of decoder directions: the adapter's batched computation against the model's own final norm and LM
head run on each row (tests/helpers/logit_checks.py), on tiny Llama, GPT-2 and Gemma 2 models."""

from pathlib import Path

import pytest
import torch

from atlas.lm.adapter import load_model
from logit_checks import check_logit_effects, direct_logits
from tiny_models import save_tiny

ARCHS = ["llama", "gpt2", "gemma2"]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("logit-models")
    loaded = {arch: load_model(save_tiny(arch, root / arch), "blocks.1.hook_resid_post") for arch in ARCHS}
    # GPT-2's final LayerNorm starts with gain 1 and bias 0: give it both, so centring and the bias are exercised.
    ln_f = loaded["gpt2"].model.transformer.ln_f
    with torch.no_grad():
        ln_f.weight.add_(0.5 * torch.randn_like(ln_f.weight))
        ln_f.bias.add_(torch.randn_like(ln_f.bias))
    return loaded


@pytest.mark.parametrize("arch", ARCHS)
def test_logit_effects_match_the_final_norm_and_lm_head_row_by_row(adapters, arch, monkeypatch):
    adapter = adapters[arch]
    vocab = adapter.model.get_output_embeddings().weight.shape[0]
    monkeypatch.setattr("atlas.lm.adapter._CHUNK_ELEMENTS", vocab * 5)  # several chunks, the last one ragged
    W_dec = torch.randn(37, 16)
    assert check_logit_effects(adapter, W_dec, k=5) == 37
    # No ties among random logits: the ids are exactly the direct computation's order.
    pos_ids, _, neg_ids, _ = adapter.logit_effects(W_dec, k=5)
    for i, d in enumerate(W_dec):
        order = direct_logits(adapter, d).argsort(descending=True)
        assert pos_ids[i].tolist() == order[:5].tolist()
        assert neg_ids[i].tolist() == order[-5:].flip(0).tolist()


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_through_an_rms_norm_the_values_are_the_lm_heads_logits(adapters, arch):
    """RMSNorm maps zero to zero: the values are `lm_head(norm(d))` itself, i.e. rms(d) times `W_U·(g ⊙ d)`."""
    adapter = adapters[arch]
    model = adapter.model
    W_dec = torch.randn(6, 16) * torch.tensor([0.5, 1, 2, 3, 5, 8])[:, None]
    pos_ids, pos_vals, _, _ = adapter.logit_effects(W_dec, k=4)
    W_U, gain = adapter.unembed()
    with torch.inference_mode():
        direct = model.lm_head(model.model.norm(W_dec))
    torch.testing.assert_close(pos_vals, direct.gather(1, pos_ids), rtol=1e-4, atol=1e-4)
    rms = W_dec.pow(2).mean(1, keepdim=True).sqrt()
    torch.testing.assert_close(pos_vals * rms, ((W_dec * gain) @ W_U).gather(1, pos_ids), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("arch", ARCHS)
def test_values_do_not_depend_on_the_rows_length(adapters, arch):
    adapter = adapters[arch]
    W_dec = torch.randn(8, 16)
    ids, vals, _, _ = adapter.logit_effects(W_dec, k=5)
    ids3, vals3, _, _ = adapter.logit_effects(7 * W_dec, k=5)
    assert torch.equal(ids, ids3)
    torch.testing.assert_close(vals, vals3, rtol=1e-3, atol=1e-4)


def test_a_layer_norm_ignores_the_rows_mean(adapters):
    """GPT-2's final LayerNorm centres its input: shifting every coordinate of a row changes nothing."""
    adapter = adapters["gpt2"]
    W_dec = torch.randn(8, 16)
    W_dec = W_dec - W_dec.mean(1, keepdim=True)
    ids, vals, _, _ = adapter.logit_effects(W_dec, k=5)
    ids_shifted, vals_shifted, _, _ = adapter.logit_effects(W_dec + 3.0, k=5)
    assert torch.equal(ids, ids_shifted)
    torch.testing.assert_close(vals, vals_shifted, rtol=1e-4, atol=1e-4)


def test_dead_features_zero_rows_have_zero_effects(adapters):
    _, pos_vals, _, neg_vals = adapters["gpt2"].logit_effects(torch.zeros(3, 16), k=4)
    assert float(pos_vals.abs().max()) == 0.0 and float(neg_vals.abs().max()) == 0.0


def test_rows_read_after_the_final_norm_go_straight_to_the_unembedding(adapters):
    adapter = adapters["llama"]
    W_dec = torch.randn(5, 16)
    ids, vals, neg_ids, neg_vals = adapter.logit_effects(W_dec, k=4, after_norm=True)
    with torch.inference_mode():
        direct = adapter.model.lm_head(W_dec)
    torch.testing.assert_close(vals, direct.topk(4, dim=1).values, rtol=1e-4, atol=1e-4)
    assert torch.equal(ids, direct.topk(4, dim=1).indices)
    assert torch.equal(neg_ids, direct.topk(4, dim=1, largest=False).indices)
