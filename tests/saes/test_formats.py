"""Every non-SAELens format loads from its documented layout and matches its own equations (written out here)."""

import math

import numpy as np
import pytest
import torch

from atlas.errors import SaeFormatError
from atlas.saes import detect_format, load_sae, load_sae_candidates
from sae_writers import (
    write_apollo, write_dictionary_learning, write_gemmascope1, write_gemmascope2, write_goodfire, write_kissane,
    write_llamascope_r1, write_llamascope_v1, write_llamascopium, write_openai, write_sparsify,
)

D, F, K = 16, 48, 4


def rel_err(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def assert_matches(sae, x, ref_f, ref_out):
    f, out = sae.forward(x)
    assert rel_err(f, ref_f) < 1e-5
    assert rel_err(out, ref_out) < 1e-5
    assert_sparse_is_dense(sae, x)


def assert_sparse_is_dense(sae, x):
    """The harvest's sparse codes are exactly the dense codes' set bits, whatever path the activation takes."""
    dense = sae.encode(x).reshape(-1, sae.d_sae).numpy()
    sparse = sae.encode_sparse(x)
    flat = np.flatnonzero(dense.view(np.uint32) != 0)
    assert (sparse.n_rows, sparse.n_features) == dense.shape
    np.testing.assert_array_equal(sparse.flat, flat)
    np.testing.assert_array_equal(sparse.values.view(np.uint32), dense.reshape(-1)[flat].view(np.uint32))


@pytest.mark.parametrize("kind", ["topk", "signed_topk", "relu"])
def test_sparse_codes_drop_zeros_and_keep_signs(kind):
    """Top-k entries that ReLU to zero are not codes; signed top-k keeps its negatives."""
    from atlas.saes import Activation, SaeWeights

    W_enc = torch.eye(4, 6)
    sae = SaeWeights(W_enc=W_enc, b_enc=torch.zeros(6), W_dec=W_enc.T.contiguous(), b_dec=torch.zeros(4),
                     activation=Activation(kind, k=3))
    x = torch.tensor([[3.0, -2.0, 1.0, 0.5], [-1.0, -2.0, -3.0, -4.0], [0.0, 0.0, 0.0, 0.0]])
    assert_sparse_is_dense(sae, x)
    codes = sae.encode_sparse(x)
    want = {"topk": [0, 2, 3], "signed_topk": [0, 1, 2, 7, 8, 9], "relu": [0, 2, 3]}[kind]
    assert codes.flat.tolist() == want


def topk_dense(h, k):
    """Brute force: sort each row and keep the k largest, ReLU'd."""
    out = torch.zeros_like(h)
    for i in range(h.shape[0]):
        idx = torch.argsort(h[i], descending=True)[:k]
        out[i, idx] = torch.relu(h[i, idx])
    return out


# ---- Gemma Scope -----------------------------------------------------------------------------------------------

def gemma_ref(t, x, W_enc="W_enc", W_dec="W_dec", b_enc="b_enc", b_dec="b_dec"):
    h = x @ t[W_enc] + t[b_enc]
    f = torch.relu(h) * (h > t["threshold"])
    return f, f @ t[W_dec] + t[b_dec]


@pytest.mark.parametrize("lowercase", [False, True])
def test_gemmascope1_npz_and_site_from_path(tmp_path, lowercase):
    folder = tmp_path / "google" / "gemma-scope-2b-pt-mlp" / "layer_12" / "width_16k" / "average_l0_82"
    t = write_gemmascope1(folder, D, F, lowercase=lowercase)
    assert detect_format(folder) == "gemmascope"
    sae = load_sae(folder / "params.npz")
    assert sae.hook == "blocks.12.hook_mlp_out" and sae.pre_bias is None
    assert sae.metadata["model_name"] == "gemma-2-2b"
    x = torch.randn(64, D)
    assert_matches(sae, x, *gemma_ref(t, x))


def test_gemmascope1_embedding_gives_scaled_and_raw_candidates(tmp_path):
    folder = tmp_path / "gemma-scope-2b-pt-res" / "embedding" / "width_4k" / "average_l0_6"
    t = write_gemmascope1(folder, D, F)
    scaled, raw = load_sae_candidates(folder)
    assert scaled.hook == raw.hook == "hook_embed" and scaled.convention != raw.convention
    x = torch.randn(64, D)
    assert_matches(raw, x, *gemma_ref(t, x))
    # scaled embeddings through the folded SAE give the raw SAE's features on unscaled embeddings
    assert rel_err(scaled.encode(x * math.sqrt(D)), raw.encode(x)) < 1e-5


def test_gemmascope2_affine_skip_gives_both_orientations(tmp_path):
    folder = tmp_path / "transcoder_all" / "layer_5_width_16k_l0_small_affine"
    cfg = {"hf_hook_point_in": "model.layers.5.pre_feedforward_layernorm.output",
           "hf_hook_point_out": "model.layers.5.post_feedforward_layernorm.output", "width": F,
           "architecture": "jump_relu", "affine_connection": True, "model_name": "google/gemma-3-1b-pt"}
    t = write_gemmascope2(folder, D, F, affine=True, config=cfg)
    assert detect_format(folder) == "gemmascope"
    cands = load_sae_candidates(folder)
    assert len(cands) == 2 and len({c.convention for c in cands}) == 2
    assert load_sae(folder).convention == cands[0].convention
    x = torch.randn(64, D)
    f, out = gemma_ref(t, x, "w_enc", "w_dec")
    assert_matches(cands[0], x, f, out + x @ t["affine_skip_connection"])
    assert_matches(cands[1], x, f, out + x @ t["affine_skip_connection"].T)
    assert cands[0].hook == cfg["hf_hook_point_in"]
    assert cands[0].metadata["hook_name_out"] == cfg["hf_hook_point_out"]
    assert "blocks.5.hook_mlp_in" in cands[0].hook_candidates


def test_gemmascope2_attn_out_without_config_is_hook_z(tmp_path):
    folder = tmp_path / "attn_out" / "layer_3_width_16k_l0_medium"
    t = write_gemmascope2(folder, D, F)
    sae = load_sae(folder)
    assert sae.hook == "model.layers.3.self_attn.o_proj.input"
    assert sae.hook_candidates == ["blocks.3.attn.hook_z"] and sae.metadata["reshape_activations"] == "hook_z"
    x = torch.randn(64, D)
    assert_matches(sae, x, *gemma_ref(t, x, "w_enc", "w_dec"))
    # [..., n_heads, d_head] inputs are flattened
    assert rel_err(sae.encode(x.reshape(64, 4, 4)), sae.encode(x)) == 0


# ---- sparsify --------------------------------------------------------------------------------------------------

def sparsify_ref(t, x, k, activation="topk", signed=False, transcode=False):
    xc = x if transcode else x - t["b_dec"]
    pre = xc @ t["encoder.weight"].T + t["encoder.bias"]
    if signed:
        idx = pre.abs().topk(k, dim=-1).indices
        f = torch.zeros_like(pre).scatter(-1, idx, pre.gather(-1, idx))
    elif activation == "groupmax":
        h = torch.relu(pre)
        f = torch.zeros_like(h)
        size = h.shape[-1] // k
        for g in range(k):
            block = h[:, g * size:(g + 1) * size]
            v, i = block.max(dim=-1)
            f[torch.arange(h.shape[0]), g * size + i] = v
    else:
        f = topk_dense(torch.relu(pre), k)
    out = f @ t["W_dec"] + t["b_dec"]
    if "W_skip" in t:
        out = out + x @ t["W_skip"].T
    return f, out


@pytest.mark.parametrize("kw", [dict(), dict(activation="groupmax"), dict(signed=True), dict(skip=True),
                                dict(transcode=True, skip=True)])
def test_sparsify_variants(tmp_path, kw):
    t = write_sparsify(tmp_path / "run" / "layers.6.mlp", D, F, K, **kw)
    sae = load_sae(tmp_path / "run" / "layers.6.mlp")
    assert sae.format == "sparsify" and sae.hook == "layers.6.mlp"
    x = torch.randn(64, D)
    assert_matches(sae, x, *sparsify_ref(t, x, K, activation=kw.get("activation", "topk"),
                                         signed=kw.get("signed", False), transcode=kw.get("transcode", False)))


def test_sparsify_root_with_several_hookpoints_lists_them(tmp_path):
    for name in ("layers.4", "layers.5"):
        write_sparsify(tmp_path / "root" / name, D, F, K)
    assert detect_format(tmp_path / "root") == "sparsify"
    with pytest.raises(SaeFormatError, match=r"layers\.4, layers\.5"):
        load_sae(tmp_path / "root")
    sae = load_sae(tmp_path / "root" / "layers.5")
    assert sae.hook == "layers.5" and sae.hook_candidates == ["blocks.5.hook_resid_pre"]


# ---- OpenAI ----------------------------------------------------------------------------------------------------

def openai_ref(t, x, activation, k):
    if activation == "TopK":
        mu = x.mean(-1, keepdim=True)
        sd = (x - mu).std(-1, keepdim=True)
        xn = (x - mu) / (sd + 1e-5)
    else:
        xn = x
    h = (xn - t["pre_bias"]) @ t["encoder.weight"].T + t["latent_bias"]
    f = topk_dense(h, k) if activation == "TopK" else torch.relu(h)
    out = f @ t["decoder.weight"].T + t["pre_bias"]
    if activation == "TopK":
        out = out * sd + mu
    return f, out


@pytest.mark.parametrize("activation", ["TopK", "ReLU"])
def test_openai_state_dict(tmp_path, activation):
    path = tmp_path / "resid_post_mlp_v5_32k" / "autoencoders" / "6.pt"
    t = write_openai(path, D, F, activation, K)
    assert detect_format(path) == "openai"
    sae = load_sae(path)
    assert sae.hook == "blocks.6.hook_resid_post"
    assert sae.input_norm.kind == ("layer_norm" if activation == "TopK" else "none")
    x = torch.randn(64, D) * 2 + 0.5
    assert_matches(sae, x, *openai_ref(t, x, activation, K))


# ---- dictionary_learning ---------------------------------------------------------------------------------------

def dl_ref(cls, t, x, k):
    lin = lambda v: v @ t["encoder.weight"].T + t["encoder.bias"]  # noqa: E731
    dec = lambda f: f @ t["decoder.weight"].T  # noqa: E731
    if cls == "AutoEncoder":
        f = torch.relu(lin(x - t["bias"]))
        return f, dec(f) + t["bias"]
    if cls == "AutoEncoderNew":
        f = torch.relu(lin(x))
        return f, dec(f) + t["decoder.bias"]
    if cls == "GatedAutoEncoder":
        z = (x - t["decoder_bias"]) @ t["encoder.weight"].T
        f = (z + t["gate_bias"] > 0) * torch.relu(torch.exp(t["r_mag"]) * z + t["mag_bias"])
        return f, dec(f) + t["decoder_bias"]
    if cls == "JumpReluAutoEncoder":
        h = x @ t["W_enc"] + t["b_enc"]
        f = torch.relu(h * (h > t["threshold"]))
        return f, f @ t["W_dec"] + t["b_dec"]
    if cls == "AutoEncoderTopK":
        f = topk_dense(torch.relu(lin(x - t["b_dec"])), k)
        return f, dec(f) + t["b_dec"]
    if cls == "BatchTopKSAE":
        h = torch.relu(lin(x - t["b_dec"]))
        f = h * (h > t["threshold"])
        return f, dec(f) + t["b_dec"]
    if cls == "MatryoshkaBatchTopKSAE":
        h = torch.relu((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"])
        f = h * (h > t["threshold"])
        return f, f @ t["W_dec"] + t["b_dec"]
    raise ValueError(cls)


@pytest.mark.parametrize("cls", ["AutoEncoder", "AutoEncoderNew", "GatedAutoEncoder", "JumpReluAutoEncoder",
                                 "AutoEncoderTopK", "BatchTopKSAE", "MatryoshkaBatchTopKSAE"])
def test_dictionary_learning_classes(tmp_path, cls):
    folder = tmp_path / "resid_post_layer_3" / "trainer_0"
    t, _ = write_dictionary_learning(folder, cls, D, F, K)
    assert detect_format(folder) == "dictionary_learning"
    sae = load_sae(folder)
    assert sae.hook == "blocks.3.hook_resid_post"
    assert sae.metadata["model_name"] == "EleutherAI/pythia-70m-deduped"
    x = torch.randn(64, D)
    assert_matches(sae, x, *dl_ref(cls, t, x, K))


def test_dictionary_learning_old_topk_without_k_buffer_and_backup_checkpoint(tmp_path):
    t, _ = write_dictionary_learning(tmp_path / "a", "AutoEncoderTopK", D, F, K, k_in_file=False)
    x = torch.randn(64, D)
    assert_matches(load_sae(tmp_path / "a"), x, *dl_ref("AutoEncoderTopK", t, x, K))
    t, _ = write_dictionary_learning(tmp_path / "b", "AutoEncoder", D, F, K, backup=True)
    sae = load_sae(tmp_path / "b" / "ae.pt")
    assert "backup" in sae.convention
    assert_matches(sae, x, *dl_ref("AutoEncoder", t, x, K))


# ---- Llama Scope -----------------------------------------------------------------------------------------------

def test_llamascope_v1_threshold_in_normalised_space(tmp_path):
    t, hp = write_llamascope_v1(tmp_path / "L3R", D, F, thr=0.02, norm_in=7.0, norm_out=9.0)
    assert detect_format(tmp_path / "L3R") == "llamascope"
    sae = load_sae(tmp_path / "L3R")
    assert sae.hook == "blocks.3.hook_resid_post" and sae.pre_bias is None
    x = torch.randn(64, D) * 2
    s_in, s_out = math.sqrt(D) / 7.0, math.sqrt(D) / 9.0
    h = (s_in * x) @ t["encoder.weight"].T + t["encoder.bias"]
    f = torch.relu(h) * (h > 0.02 * s_in)
    out = (f @ t["decoder.weight"].T + t["decoder.bias"]) / s_out
    assert_matches(sae, x, f, out)
    # the same SAE in lm_saes's raw-input parameterisation: W_dec·s_in/s_out, biases / s, threshold on raw h
    h_raw = x @ t["encoder.weight"].T + t["encoder.bias"] / s_in
    f_raw = torch.relu(h_raw) * (h_raw > 0.02)
    out_raw = f_raw @ (t["decoder.weight"].T * s_in / s_out) + t["decoder.bias"] / s_out
    assert rel_err(sae.forward(x)[1], out_raw) < 1e-5


def test_llamascope_r1_log_threshold(tmp_path):
    t, _ = write_llamascope_r1(tmp_path / "L7R", D, F, norm_in=6.0)
    sae = load_sae(tmp_path / "L7R")
    s = math.sqrt(D) / 6.0
    x = torch.randn(64, D)
    h = (s * x) @ t["encoder.weight"].T + t["encoder.bias"]
    f = torch.relu(h) * (h > torch.exp(t["log_jumprelu_threshold"]))
    assert_matches(sae, x, f, (f @ t["decoder.weight"].T + t["decoder.bias"]) / s)


def test_llamascope_r1_without_norm_is_flagged(tmp_path):
    write_llamascope_r1(tmp_path / "L7R", D, F, norm_in=None)
    sae = load_sae(tmp_path / "L7R")
    assert sae.metadata["input_scale_unknown"] is True


@pytest.mark.parametrize("include_decoder_norm", [True, False])
def test_llamascopium_decoder_norm_gating(tmp_path, include_decoder_norm):
    t, _ = write_llamascopium(tmp_path / "m", D, F, include_decoder_norm=include_decoder_norm)
    sae = load_sae(tmp_path / "m")
    s_in, s_out = math.sqrt(D) / 5.0, math.sqrt(D) / 8.0
    x = torch.randn(64, D) * 2
    h = (s_in * x) @ t["W_E"] + t["b_E"]
    n = t["W_D"].norm(dim=1) if include_decoder_norm else torch.ones(F)
    thr = torch.exp(t["activation_function.log_jumprelu_threshold"])
    hn = h * n
    f = torch.relu(hn) * (hn > thr) / n
    assert_matches(sae, x, f, (f @ t["W_D"] + t["b_D"]) / s_out)


# ---- Goodfire, Kissane, Apollo ---------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".pth", ".pt"])
def test_goodfire(tmp_path, suffix):
    path = tmp_path / f"Llama-3.1-8B-Instruct-SAE-l19{suffix}"
    t = write_goodfire(path, D, F, dtype=torch.bfloat16)
    assert detect_format(path) == "goodfire"
    sae = load_sae(path)
    assert sae.hook == "blocks.19.hook_resid_post" and "model.layers.19" in sae.hook_candidates
    x = torch.randn(64, D)
    f = torch.relu(x @ t["encoder_linear.weight"].T + t["encoder_linear.bias"])
    assert_matches(sae, x, f, f @ t["decoder_linear.weight"].T + t["decoder_linear.bias"])


def test_kissane_hook_z(tmp_path):
    t, cfg = write_kissane(tmp_path / "kissane", 4, 4, F, layer=5)
    assert detect_format(tmp_path / "kissane") == "kissane"
    sae = load_sae(tmp_path / "kissane")
    assert sae.hook == "blocks.5.attn.hook_z" and sae.metadata["tl_processed_activations"]
    z = torch.randn(64, 4, 4)
    x = z.reshape(64, 16)
    f = torch.relu((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"])
    assert_matches(sae, z, f, f @ t["W_dec"] + t["b_dec"])


def test_apollo_normalises_decoder_columns(tmp_path):
    t = write_apollo(tmp_path / "e2e", D, F, hook="blocks.6.hook_resid_pre")
    assert detect_format(tmp_path / "e2e") == "apollo"
    sae = load_sae(tmp_path / "e2e")
    assert sae.hook == "blocks.6.hook_resid_pre" and sae.metadata["model_name"] == "gpt2"
    p = "blocks-6-hook_resid_pre"
    x = torch.randn(64, D)
    f = torch.relu(x @ t[f"{p}.encoder.0.weight"].T + t[f"{p}.encoder.0.bias"])
    W = t[f"{p}.decoder.weight"]
    W = W / W.norm(dim=0, keepdim=True)
    assert_matches(sae, x, f, f @ W.T + t[f"{p}.decoder.bias"])


def test_dictionary_learning_intermediate_checkpoint_finds_config_above(tmp_path):
    t, _ = write_dictionary_learning(tmp_path / "resid_post_layer_3", "AutoEncoderTopK", D, F, K)
    ckpt = tmp_path / "resid_post_layer_3" / "checkpoints" / "ae_100.pt"
    ckpt.parent.mkdir()
    (tmp_path / "resid_post_layer_3" / "ae.pt").rename(ckpt)
    assert detect_format(ckpt) == "dictionary_learning"
    sae = load_sae(ckpt)
    assert sae.hook == "blocks.3.hook_resid_post"
    x = torch.randn(64, D)
    assert_matches(sae, x, *dl_ref("AutoEncoderTopK", t, x, K))
