"""SAELens folders of every era and architecture load and run exactly as SAELens's equations say."""

import json
import math

import pytest
import torch

from atlas.saes import detect_format, load_sae
from sae_writers import save_safetensors, write_saelens

D_IN, D_SAE, K = 16, 48, 5


def rel_err(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def ref_saelens(t, x, arch, k=None, normalize="none", apply_b_dec=True, rescale=False, scale=None, act="relu"):
    """SAELens's forward pass (§1.5), written out directly on the stored tensors."""
    if normalize == "layer_norm":
        mu = x.mean(-1, keepdim=True)
        sd = (x - mu).std(-1, keepdim=True)
        xn = (x - mu) / (sd + 1e-5)
    elif normalize == "constant_norm_rescale":
        c = math.sqrt(x.shape[-1]) / x.norm(dim=-1, keepdim=True)
        xn = x * c
    elif normalize == "scale":
        xn = x * scale
    else:
        xn = x
    xc = xn - t["b_dec"] if apply_b_dec else xn
    norms = t["W_dec"].norm(dim=1)
    if arch == "gated":
        gate = (xc @ t["W_enc"] + t["b_gate"]) > 0
        f = gate.float() * torch.relu(xc @ (t["W_enc"] * torch.exp(t["r_mag"])) + t["b_mag"])
    else:
        h = xc @ t["W_enc"] + t["b_enc"]
        if rescale:
            h = h * norms
        if arch.startswith("jumprelu"):
            f = torch.relu(h) * (h > t["threshold"]).float()
        elif arch == "topk":
            f = torch.zeros_like(h)
            for i in range(h.shape[0]):
                order = torch.argsort(h[i], descending=True)[:k]
                f[i, order] = torch.relu(h[i, order])
        elif arch == "batchtopk":
            f = torch.relu(h) * (torch.relu(h) > t["topk_threshold"]).float()
        elif act == "tanh-relu":
            f = torch.tanh(torch.relu(h))
        else:
            f = torch.relu(h)
    g = f / norms if rescale else f
    if "scaling_factor" in t:
        g = g * t["scaling_factor"]
    out = g @ t["W_dec"] + t["b_dec"]
    if normalize == "layer_norm":
        out = out * sd + mu
    elif normalize == "constant_norm_rescale":
        out = out / c
    elif normalize == "scale":
        out = out / scale
    if "W_skip" in t:
        out = out + x @ t["W_skip"].T
    return f, out


def check(sae, ref_f, ref_out, x):
    f, out = sae.forward(x)
    assert f.dtype == torch.float32 and out.dtype == torch.float32
    assert rel_err(f, ref_f) < 1e-5
    assert rel_err(out, ref_out) < 1e-5
    assert rel_err(sae.encode(x), ref_f) < 1e-5


def test_v6_topk_demo_layout_loads_through_load_sae(tmp_path):
    t, _ = write_saelens(tmp_path / "sae", arch="topk", k=K)
    assert detect_format(tmp_path / "sae") == "saelens"
    sae = load_sae(tmp_path / "sae")
    assert (sae.d_in, sae.d_sae, sae.d_out) == (D_IN, D_SAE, D_IN)
    assert sae.hook == "blocks.1.hook_resid_post" and sae.format == "saelens"
    assert sae.metadata["model_name"] == "tiny" and sae.metadata["context_size"] == 64
    x = torch.randn(64, D_IN)
    check(sae, *ref_saelens(t, x, "topk", k=K), x)
    assert torch.equal((sae.encode(x) != 0).sum(-1), torch.full((64,), K))
    # decode without x equals forward's reconstruction when there is no per-token normalisation
    assert rel_err(sae.decode(sae.encode(x)), ref_saelens(t, x, "topk", k=K)[1]) < 1e-5
    # a file inside the folder is accepted too
    assert load_sae(tmp_path / "sae" / "cfg.json").content_hash() == sae.content_hash()


@pytest.mark.parametrize("arch", ["standard", "gated", "jumprelu"])
@pytest.mark.parametrize("era", ["v6", "v3-v5"])
def test_architectures_match_reference(tmp_path, arch, era):
    t, _ = write_saelens(tmp_path / "sae", arch=arch, era=era)
    sae = load_sae(tmp_path / "sae")
    x = torch.randn(64, D_IN)
    check(sae, *ref_saelens(t, x, arch), x)


def test_jumprelu_log_threshold_is_exponentiated(tmp_path):
    t, _ = write_saelens(tmp_path / "sae", arch="jumprelu")
    stored = {k: v for k, v in t.items() if k not in ("threshold", "topk_threshold")}
    stored["log_threshold"] = torch.log(t["threshold"])
    save_safetensors(tmp_path / "sae" / "sae_weights.safetensors", stored)
    sae = load_sae(tmp_path / "sae")
    x = torch.randn(64, D_IN)
    check(sae, *ref_saelens(t, x, "jumprelu"), x)


@pytest.mark.parametrize("rescale", [False, True])
def test_topk_rescale_by_decoder_norm(tmp_path, rescale):
    t, _ = write_saelens(tmp_path / "sae", arch="topk", k=K, rescale=rescale)
    t["W_dec"] *= torch.rand(D_SAE, 1) * 2 + 0.2  # non-unit decoder norms make the rescaling matter
    save_safetensors(tmp_path / "sae" / "sae_weights.safetensors",
                     {k: v for k, v in t.items() if k != "topk_threshold"})
    sae = load_sae(tmp_path / "sae")
    assert sae.activation.rescale_by_decoder_norm is rescale
    x = torch.randn(64, D_IN)
    check(sae, *ref_saelens(t, x, "topk", k=K, rescale=rescale), x)


def test_batchtopk_checkpoint_uses_topk_threshold(tmp_path):
    t, _ = write_saelens(tmp_path / "sae", arch="batchtopk", k=K, rescale=True)
    sae = load_sae(tmp_path / "sae")
    assert sae.activation.kind == "threshold"
    x = torch.randn(64, D_IN)
    check(sae, *ref_saelens(t, x, "batchtopk", rescale=True), x)


def test_pre6_topk_from_activation_fn_kwargs(tmp_path):
    t, _ = write_saelens(tmp_path / "sae", arch="topk", era="v3-v5", k=K)
    sae = load_sae(tmp_path / "sae")
    assert sae.activation.kind == "topk" and sae.activation.k == K
    assert sae.hook == "blocks.1.hook_resid_post"
    assert sae.metadata["tl_processed_activations"] is True  # trained with 3.12, before un-processed models
    x = torch.randn(64, D_IN)
    check(sae, *ref_saelens(t, x, "topk", k=K), x)


def test_v1_runner_dump_tanh_relu_with_expansion_factor(tmp_path):
    t, _ = write_saelens(tmp_path / "sae", era="v1-v2", activation_fn="tanh-relu")
    sae = load_sae(tmp_path / "sae")
    assert sae.d_sae == D_SAE and sae.hook == "blocks.1.hook_resid_post"
    assert sae.activation.kind == "tanh_relu"
    x = torch.randn(64, D_IN)
    check(sae, *ref_saelens(t, x, "standard", act="tanh-relu"), x)


def test_legacy_scaling_factor_multiplies_features(tmp_path):
    t, _ = write_saelens(tmp_path / "sae", era="v3-v5")
    t = {k: v for k, v in t.items() if k != "topk_threshold"}
    t["scaling_factor"] = torch.rand(D_SAE) + 0.5
    save_safetensors(tmp_path / "sae" / "sae_weights.safetensors", t)
    sae = load_sae(tmp_path / "sae")
    assert sae.decode_scale is not None
    x = torch.randn(64, D_IN)
    check(sae, *ref_saelens(t, x, "standard"), x)


@pytest.mark.parametrize("mode", ["layer_norm", "constant_norm_rescale"])
def test_per_token_normalisation_is_inverted(tmp_path, mode):
    t, _ = write_saelens(tmp_path / "sae", arch="topk", k=K, normalize=mode)
    sae = load_sae(tmp_path / "sae")
    x = torch.randn(64, D_IN) * 3 + 1
    check(sae, *ref_saelens(t, x, "topk", k=K, normalize=mode), x)
    # decode with x gives the same de-normalised reconstruction as forward
    assert rel_err(sae.decode(sae.encode(x), x=x), sae.forward(x)[1]) < 1e-6


def test_expected_average_only_in_with_activation_scaler(tmp_path):
    t, _ = write_saelens(tmp_path / "sae", normalize="expected_average_only_in")
    (tmp_path / "sae" / "activation_scaler.json").write_text(json.dumps({"scaling_factor": 0.37}))
    sae = load_sae(tmp_path / "sae")
    assert sae.input_norm.kind == "scale" and sae.input_norm.scale == pytest.approx(0.37)
    assert "activation_scaler.json" in sae.convention
    x = torch.randn(64, D_IN) * 5
    check(sae, *ref_saelens(t, x, "standard", normalize="scale", scale=0.37), x)


def test_expected_average_only_in_with_unknown_scale_is_flagged(tmp_path):
    write_saelens(tmp_path / "sae", era="v1-v2", normalize="expected_average_only_in")
    sae = load_sae(tmp_path / "sae")
    assert sae.metadata["input_scale_unknown"] is True
    assert "unknown scale" in sae.convention
    assert sae.input_norm.kind == "scale" and sae.input_norm.scale == 1.0


@pytest.mark.parametrize("arch", ["transcoder", "skip_transcoder", "jumprelu_skip_transcoder"])
def test_transcoders_load_with_d_out(tmp_path, arch):
    t, _ = write_saelens(tmp_path / "tc", arch=arch, d_out=24, apply_b_dec=False)
    sae = load_sae(tmp_path / "tc")
    assert (sae.d_in, sae.d_out) == (D_IN, 24) and sae.pre_bias is None
    assert sae.metadata["hook_name_out"] == "blocks.1.hook_mlp_out"
    x = torch.randn(64, D_IN)
    check(sae, *ref_saelens(t, x, arch, apply_b_dec=False), x)


def test_bf16_file_computes_in_float32(tmp_path):
    t, _ = write_saelens(tmp_path / "sae", dtype=torch.bfloat16)
    sae = load_sae(tmp_path / "sae")
    assert sae.W_enc.dtype == torch.float32
    x = torch.randn(64, D_IN)
    check(sae, *ref_saelens(t, x, "standard"), x)
