"""Reconstruction statistics, choosing among conventions by FVU, and the record's bookkeeping."""

import math

import pytest
import torch

from atlas.saes import load_sae, load_sae_candidates
from atlas.saes.check import estimate_input_scale, pick_by_fvu, reconstruction_stats
from sae_writers import write_gemmascope2, write_saelens


def test_reconstruction_stats_against_brute_force(tmp_path):
    write_saelens(tmp_path / "s", arch="topk", k=3)
    sae = load_sae(tmp_path / "s")
    x = torch.randn(2500, 16) * 2 + 1  # more than one chunk
    stats = reconstruction_stats(sae, x)
    f, x_hat = sae.forward(x)
    fvu = ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert stats["fvu"] == pytest.approx(float(fvu), rel=1e-5)
    assert stats["l0"] == pytest.approx(3.0)
    assert stats["dead_share"] == pytest.approx(float(((f != 0).sum(0) == 0).float().mean()))
    assert stats["n_tokens"] == 2500


def test_dead_share_counts_latents_that_never_fire(tmp_path):
    t, _ = write_saelens(tmp_path / "s")
    sae = load_sae(tmp_path / "s")
    sae.b_enc[:12] = -1e6  # these 12 of 48 latents can never fire
    sae.b_enc[12:] = 1e6
    assert reconstruction_stats(sae, torch.randn(50, 16))["dead_share"] == pytest.approx(12 / 48)


def test_pick_by_fvu_finds_the_skip_orientation_that_generated_the_data(tmp_path):
    folder = tmp_path / "transcoder" / "layer_2_width_16k_l0_small_affine"
    write_gemmascope2(folder, 16, 48, affine=True)
    cands = load_sae_candidates(folder)
    x = torch.randn(400, 16)
    for truth in (0, 1):
        y = cands[truth].forward(x)[1]
        best, scores = pick_by_fvu(cands, x, y)
        assert best is cands[truth]
        assert [c for c, _ in scores] == [c.convention for c in cands]
        assert scores[truth][1] < 1e-10 < scores[1 - truth][1]


def test_estimate_input_scale():
    x = torch.randn(1000, 64) * 3
    assert estimate_input_scale(x) == pytest.approx(math.sqrt(64) / float(x.norm(dim=-1).mean()), rel=1e-6)


def test_content_hash_is_stable_and_sensitive(tmp_path):
    write_saelens(tmp_path / "s", arch="topk", k=4)
    a, b = load_sae(tmp_path / "s"), load_sae(tmp_path / "s")
    assert a.content_hash() == b.content_hash() and len(a.content_hash()) == 16
    b.W_dec[3, 5] += 1e-3
    assert a.content_hash() != b.content_hash()
    c = load_sae(tmp_path / "s")
    c.activation.k = 5
    assert a.content_hash() != c.content_hash()


def test_decode_without_x_stays_in_normalised_space(tmp_path):
    write_saelens(tmp_path / "s", arch="topk", k=4, normalize="layer_norm")
    sae = load_sae(tmp_path / "s")
    x = torch.randn(8, 16) * 4 + 2
    f, x_hat = sae.forward(x)
    mu, sd = x.mean(-1, keepdim=True), x.std(-1, keepdim=True)
    assert torch.allclose(sae.decode(f) * sd + mu, x_hat, atol=1e-5)


def test_to_copies_every_tensor(tmp_path):
    write_saelens(tmp_path / "s", arch="jumprelu")
    sae = load_sae(tmp_path / "s")
    moved = sae.to("cpu")
    assert moved.content_hash() == sae.content_hash()
    x = torch.randn(8, 16)
    assert torch.equal(moved.encode(x), sae.encode(x))


def test_wrong_input_width_is_refused_not_reshaped(tmp_path):
    from atlas.errors import DimensionError

    write_saelens(tmp_path / "s")
    sae = load_sae(tmp_path / "s")
    with pytest.raises(DimensionError, match="d_in=16"):
        sae.encode(torch.randn(4, 4))  # 4·4 = d_in, but this SAE is not a hook_z SAE
