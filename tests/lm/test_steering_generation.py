"""Steering: strength 0 is plain greedy generation token for token, a strength changes the text, the added vector
follows the SAE's normalisation, and the measured activation is the unsteered model reading the steered text."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from atlas.errors import ModelError, SaeFormatError
from atlas.lm.adapter import load_model
from atlas.lm.steering import steer
from atlas.saes.record import InputNorm, SaeWeights
from tiny_models import save_tiny

PROMPTS = ["the quick brown fox", "a feature atlas explains every", "hello"]  # three lengths: left padding
SMOLLM = Path("/work/scratch/smollm/out/smollm2-float32")
D_SAE = 12


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return load_model(save_tiny("llama", tmp_path_factory.mktemp("steer") / "llama"), "blocks.1.hook_resid_post")


def random_sae(d: int, seed: int = 0, d_sae: int = D_SAE) -> SaeWeights:
    g = torch.Generator().manual_seed(seed)
    return SaeWeights(W_enc=torch.randn(d, d_sae, generator=g), b_enc=torch.zeros(d_sae),
                      W_dec=torch.randn(d_sae, d, generator=g), b_dec=torch.zeros(d), path="test-sae")


def plain_generate(model, prompt: str, n: int) -> list[int]:
    """The reference: batch 1, no padding, no hook, greedy."""
    ids = model.tokenizer(prompt, return_tensors="pt")["input_ids"]
    out = model.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                               max_new_tokens=n, pad_token_id=model.tokenizer.pad_token_id)
    gen = out[0, ids.shape[1]:].tolist()
    eos = model.model.generation_config.eos_token_id
    return gen[: gen.index(eos)] if eos in gen else gen


def by_key(previews):
    return {(p.feature, p.prompt, p.strength): p for p in previews}


def test_strength_zero_is_plain_generate_token_for_token(llama):
    sae = random_sae(llama.d_hook)
    got = by_key(steer(llama, sae, [1, 5], [2.0, 1.0], PROMPTS, [-4, 0, 2, 8], 12))
    for p, prompt in enumerate(PROMPTS):
        want = plain_generate(llama, prompt, 12)
        assert len(want) == 12
        for f in (1, 5):
            assert list(got[(f, p, 0.0)].token_ids) == want, prompt
            assert got[(f, p, 0.0)].added_norm == 0.0


def test_a_strength_changes_the_text(llama):
    sae = random_sae(llama.d_hook)
    got = by_key(steer(llama, sae, [1], [2.0], PROMPTS, [0, 8], 12))
    changed = [got[(1, p, 8.0)].token_ids != got[(1, p, 0.0)].token_ids for p in range(len(PROMPTS))]
    assert all(changed)


def test_previews_come_in_order_with_the_baseline_first_and_are_deterministic(llama):
    sae = random_sae(llama.d_hook)
    first = steer(llama, sae, [3, 7], [1.0, 1.0], PROMPTS[:2], [4, -2], 6, seed=1)
    assert [(p.prompt, p.feature, p.strength) for p in first] == [
        (p, f, s) for p in range(2) for f in (3, 7) for s in (0.0, 4.0, -2.0)]
    again = steer(llama, sae, [3, 7], [1.0, 1.0], PROMPTS[:2], [4, -2], 6, seed=1)
    assert [(p.token_ids, p.acts.tolist()) for p in first] == [(p.token_ids, p.acts.tolist()) for p in again]


def test_activation_is_the_unsteered_model_reading_the_steered_text(llama):
    sae = random_sae(llama.d_hook, seed=2)
    sae.b_enc += 0.5  # fires often, so the comparison sees non-zero values
    for pv in steer(llama, sae, [4], [3.0], PROMPTS, [0, 6], 10):
        prompt_ids = llama.tokenizer(PROMPTS[pv.prompt])["input_ids"]
        ids = torch.tensor([prompt_ids + list(pv.token_ids)])
        clean = sae.encode(llama.activations(ids, torch.ones_like(ids)))[0, len(prompt_ids):, 4]
        assert len(pv.acts) == len(pv.token_ids)
        np.testing.assert_allclose(pv.acts, clean.numpy(), rtol=1e-4, atol=1e-4)
    assert any(p.fired() for p in steer(llama, sae, [4], [3.0], PROMPTS, [0, 6], 10))


def test_added_vector_is_the_feature_at_strength_times_max_activation(llama):
    """A dataset-wide input scale divides the vector; a per-token normalisation scales it by the token's norm."""
    sae = random_sae(llama.d_hook)
    row = sae.W_dec[2].norm().item()
    plain = by_key(steer(llama, sae, [2], [1.5], PROMPTS[:1], [4], 4))[(2, 0, 4.0)]
    assert plain.added_norm == pytest.approx(4 * 1.5 * row, rel=1e-5)
    scaled = replace(sae, input_norm=InputNorm("scale", 0.25))
    got = by_key(steer(llama, scaled, [2], [1.5], PROMPTS[:1], [4], 4))[(2, 0, 4.0)]
    assert got.added_norm == pytest.approx(4 * 1.5 * row / 0.25, rel=1e-5)
    rescaled = replace(sae, input_norm=InputNorm("constant_norm_rescale"))
    pv = by_key(steer(llama, rescaled, [2], [1.5], PROMPTS[:1], [4], 4))[(2, 0, 4.0)]
    ids = torch.tensor([llama.tokenizer(PROMPTS[0])["input_ids"] + list(pv.token_ids)])
    x = llama.activations(ids, torch.ones_like(ids))[0, -len(pv.token_ids):]
    want = (4 * 1.5 * row * x.norm(dim=-1) / math.sqrt(llama.d_hook)).mean().item()
    assert pv.added_norm == pytest.approx(want, rel=1e-4)


def test_a_tokenizer_without_a_pad_token_steers_the_same(llama):
    sae = random_sae(llama.d_hook)
    want = steer(llama, sae, [1], [2.0], PROMPTS, [0, 4], 6)
    pad = llama.tokenizer.pad_token
    llama.tokenizer.pad_token = None  # GPT-2's tokenizer has none
    try:
        assert llama.tokenizer.pad_token_id is None
        got = steer(llama, sae, [1], [2.0], PROMPTS, [0, 4], 6)
    finally:
        llama.tokenizer.pad_token = pad
    assert [p.token_ids for p in got] == [p.token_ids for p in want]
    with pytest.raises(ModelError, match="prompt 2 has no tokens"):
        steer(llama, sae, [1], [2.0], ["hello", ""], [0, 4], 6)


def test_an_encoder_cannot_be_steered(tmp_path):
    bert = load_model(save_tiny("bert", tmp_path / "bert"), "blocks.1.hook_resid_post")
    with pytest.raises(ModelError, match="causal language model"):
        steer(bert, random_sae(bert.d_hook), [0], [1.0], PROMPTS, [0, 2], 4)


def test_a_transcoder_cannot_be_steered(llama):
    sae = random_sae(llama.d_hook)
    skip = replace(sae, W_skip=torch.zeros(llama.d_hook, llama.d_hook))
    with pytest.raises(SaeFormatError, match="transcoder"):
        steer(llama, skip, [0], [1.0], PROMPTS, [0, 2], 4)


@pytest.mark.skipif(not SMOLLM.is_dir(), reason=f"the converted SmolLM2 folder is not at {SMOLLM}")
def test_smollm2_baseline_is_plain_generate_and_steering_changes_it():
    model = load_model(SMOLLM, "blocks.9.hook_resid_post")
    sae = random_sae(model.d_hook, d_sae=16)
    sae.W_dec = sae.W_dec / sae.W_dec.norm(dim=1, keepdim=True)
    prompts = ["I think that", "The best thing about"]
    got = by_key(steer(model, sae, [0], [20.0], prompts, [0, 8], 16))
    for p, prompt in enumerate(prompts):
        assert list(got[(0, p, 0.0)].token_ids) == plain_generate(model, prompt, 16)
        assert got[(0, p, 8.0)].token_ids != got[(0, p, 0.0)].token_ids
