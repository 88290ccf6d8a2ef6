"""The demo's TopK SAE trainer: hand-written sparse gradients equal autograd's, training recovers a known
dictionary, runs are reproducible, and the saved folder loads through the SAELens loader."""

import numpy as np
import pytest
import torch

from atlas.demo.train import Sae, _sparse_step, save_saelens, train_topk_sae


def _dense_loss(enc, b_enc, dec, xc, idx, target, scale):
    """The same loss through autograd and dense products: decode the chosen latents, squared error."""
    pre = xc @ enc.T + b_enc
    acts = torch.zeros_like(pre).scatter(1, idx, torch.gather(pre, 1, idx).clamp_min(0))
    return scale * ((acts @ dec - target) ** 2).sum()


@pytest.mark.parametrize("target_kind", ["inputs", "residual"])
def test_sparse_gradients_equal_autograd(target_kind):
    g = torch.Generator().manual_seed(0)
    B, F, d, k = 64, 48, 12, 5
    # a negative encoder bias puts some chosen latents below zero, where no gradient may pass
    sae = Sae(torch.randn(F, d, generator=g), torch.randn(F, generator=g) - 4.0,
              torch.randn(F, d, generator=g), torch.zeros(d))
    xc = torch.randn(B, d, generator=g)
    vals, idx = (xc @ sae.enc.T + sae.b_enc).topk(k, dim=1, sorted=False)
    assert 0 < int((vals < 0).sum()) < vals.numel()
    target = xc if target_kind == "inputs" else torch.randn(B, d, generator=g)
    _, loss, (g_enc, g_b_enc, g_dec) = _sparse_step(sae, xc, idx, vals, target, 0.01)

    params = [p.clone().requires_grad_() for p in (sae.enc, sae.b_enc, sae.dec)]
    ref = _dense_loss(*params, xc, idx, target, 0.01)
    ref.backward()
    assert loss * 0.01 == pytest.approx(ref.item(), rel=1e-4)
    for mine, theirs in zip((g_enc, g_b_enc, g_dec), params):
        assert torch.allclose(mine, theirs.grad, atol=1e-4, rtol=1e-4)


def _sparse_data(n=12_000, d=24, n_atoms=48, active=3, seed=0):
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(n_atoms, d)).astype(np.float32)
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    codes = np.zeros((n, n_atoms), np.float32)
    for row in codes:
        row[rng.choice(n_atoms, active, replace=False)] = rng.uniform(1, 3, active)
    return codes @ atoms + 0.5 + 0.01 * rng.normal(size=(n, d)).astype(np.float32), atoms


def test_training_recovers_a_known_dictionary():
    x, atoms = _sparse_data()
    out = train_topk_sae(x, d_sae=96, k=4, epochs=8, batch_size=256, lr=4e-3, seed=0, log=lambda *a: None)
    assert out["final_fvu"] < 0.1 and out["dead"] == 0
    W_dec = out["weights"]["W_dec"].numpy()
    assert np.allclose(np.linalg.norm(W_dec, axis=1), 1, atol=1e-5)  # unit decoder rows
    best = (atoms @ W_dec.T).max(axis=1)  # each true atom's closest decoder row
    assert (best > 0.9).mean() >= 0.9
    assert out["weights"]["W_enc"].shape == (24, 96)


def test_training_is_reproducible():
    x, _ = _sparse_data(n=3000)
    a = train_topk_sae(x, d_sae=32, k=4, epochs=1, batch_size=256, seed=3, log=lambda *a: None)
    b = train_topk_sae(x, d_sae=32, k=4, epochs=1, batch_size=256, seed=3, log=lambda *a: None)
    for name in a["weights"]:
        assert torch.equal(a["weights"][name], b["weights"][name])


def test_saved_folder_loads_through_the_saelens_loader(tmp_path):
    from atlas.saes import load_sae

    x, _ = _sparse_data(n=2000)
    out = train_topk_sae(x, d_sae=32, k=4, epochs=1, batch_size=256, seed=0, log=lambda *a: None)
    folder = tmp_path / "sae"
    save_saelens(folder, out["weights"], k=4, hook_name="blocks.1.hook_resid_post", model_name="tiny",
                 context_size=64, prepend_bos=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sae"]  # written beside, then renamed
    sae = load_sae(folder)
    assert sae.d_in == 24 and sae.d_sae == 32 and sae.hook == "blocks.1.hook_resid_post"
