"""Write tiny random SAEs to disk in each format's documented layout, for the loader tests.

Each writer returns the tensors it wrote (float32, under the file's own names) and its config, so a test can run an
independent reference implementation of the format's equations on them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file


def rand(*shape: int, scale: float = 1.0, gen: torch.Generator | None = None) -> torch.Tensor:
    return torch.randn(*shape, generator=gen) * scale


def save_safetensors(path: Path, tensors: dict, dtype: torch.dtype = torch.float32) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(dtype).contiguous() for k, v in tensors.items()}, str(path))


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def standard_tensors(d_in: int, d_sae: int, d_out: int | None = None) -> dict:
    d_out = d_out or d_in
    return {
        "W_enc": rand(d_in, d_sae, scale=d_in**-0.5),
        "b_enc": rand(d_sae, scale=0.1),
        "W_dec": rand(d_sae, d_out, scale=d_sae**-0.5),
        "b_dec": rand(d_out, scale=0.1),
    }


# ---- SAELens ---------------------------------------------------------------------------------------------------

def saelens_cfg(era: str, arch: str, d_in: int, d_sae: int, *, k: int | None = None, normalize="none",
                apply_b_dec: bool = True, hook: str = "blocks.1.hook_resid_post", d_out: int | None = None,
                rescale: bool = False, activation_fn: str = "relu") -> dict:
    """A cfg.json of the given era (v6 | v3-v5 | v1-v2) describing the architecture."""
    if era == "v6":
        cfg = {
            "architecture": arch, "d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu",
            "apply_b_dec_to_input": apply_b_dec, "normalize_activations": normalize, "reshape_activations": "none",
            "metadata": {"sae_lens_version": "6.5.0", "sae_lens_training_version": "6.5.0", "model_name": "tiny",
                         "hook_name": hook, "hook_head_index": None, "context_size": 64, "prepend_bos": True},
        }
        if k is not None:
            cfg["k"] = k
            cfg["rescale_acts_by_decoder_norm"] = rescale
        if d_out is not None:
            cfg["d_out"] = d_out
            cfg["metadata"]["hook_name_out"] = "blocks.1.hook_mlp_out"
        return cfg
    if era == "v3-v5":
        cfg = {
            "d_in": d_in, "d_sae": d_sae, "activation_fn_str": "topk" if k else activation_fn,
            "activation_fn_kwargs": {"k": k} if k else {}, "apply_b_dec_to_input": apply_b_dec,
            "finetuning_scaling_factor": False, "context_size": 128, "model_name": "gpt2", "hook_name": hook,
            "hook_layer": 1, "hook_head_index": None, "prepend_bos": True, "dataset_path": "x",
            "normalize_activations": normalize, "dtype": "torch.float32", "device": "cuda",
            "sae_lens_training_version": "3.12.0", "l1_coefficient": 5.0,
        }
        if arch != "standard" or k:
            cfg["architecture"] = arch
        return cfg
    # v1-v2 runner dump: hook_point keys, bool normalize_activations, expansion_factor instead of d_sae
    return {
        "hook_point": hook, "hook_point_layer": 1, "hook_point_head_index": None, "d_in": d_in,
        "expansion_factor": d_sae // d_in, "d_sae": None, "activation_fn": activation_fn,
        "apply_b_dec_to_input": apply_b_dec, "normalize_activations": bool(normalize and normalize != "none"),
        "dtype": "torch.float32", "device": "cuda", "context_size": 128, "model_name": "gpt2",
        "prepend_bos": True, "lr": 0.0004, "l1_coefficient": 0.001,
    }


def write_saelens(folder: Path, arch: str = "standard", era: str = "v6", d_in: int = 16, d_sae: int = 48,
                  dtype: torch.dtype = torch.float32, **cfg_kw) -> tuple[dict, dict]:
    """A SAELens folder: cfg.json + sae_weights.safetensors with the tensors `arch` needs."""
    d_out = cfg_kw.get("d_out")
    t = standard_tensors(d_in, d_sae, d_out)
    if arch == "gated":
        del t["b_enc"]
        t.update(b_gate=rand(d_sae, scale=0.1), b_mag=rand(d_sae, scale=0.1), r_mag=rand(d_sae, scale=0.3))
    if arch.startswith("jumprelu"):
        t["threshold"] = torch.rand(d_sae) * 0.3 + 0.05
    if arch in ("batchtopk", "matryoshka_batchtopk"):
        t["topk_threshold"] = torch.tensor(0.2, dtype=torch.float64)
    if "skip" in arch:
        t["W_skip"] = rand(d_out or d_in, d_in, scale=d_in**-0.5)
    cfg = saelens_cfg(era, arch, d_in, d_sae, **cfg_kw)
    write_json(folder / "cfg.json", cfg)
    save_safetensors(folder / "sae_weights.safetensors",
                     {k: v if k == "topk_threshold" else v.to(dtype) for k, v in t.items()})
    if dtype != torch.float32:
        t = {k: v.to(dtype).float() for k, v in t.items()}
    t["topk_threshold"] = t.get("topk_threshold", torch.tensor(0.0)).float()
    return t, cfg


# ---- Gemma Scope -----------------------------------------------------------------------------------------------

def write_gemmascope1(folder: Path, d_in: int = 16, d_sae: int = 48, lowercase: bool = False) -> dict:
    """Gemma Scope 1: layer_L/width_W/average_l0_N/params.npz (no config)."""
    t = standard_tensors(d_in, d_sae)
    t["threshold"] = torch.rand(d_sae) * 0.3 + 0.05
    folder.mkdir(parents=True, exist_ok=True)
    names = {k: (k.lower() if lowercase else k) for k in t}
    np.savez(folder / "params.npz", **{names[k]: v.numpy() for k, v in t.items()})
    return t


def write_gemmascope2(folder: Path, d_in: int = 16, d_sae: int = 48, affine: bool = False,
                      config: dict | None = None) -> dict:
    """Gemma Scope 2: params.safetensors with lowercase names (+ config.json)."""
    t = {k.lower(): v for k, v in standard_tensors(d_in, d_sae).items()}
    t["threshold"] = torch.rand(d_sae) * 0.3 + 0.05
    if affine:
        t["affine_skip_connection"] = rand(d_in, d_in, scale=d_in**-0.5)
    save_safetensors(folder / "params.safetensors", t)
    if config is not None:
        write_json(folder / "config.json", config)
    return t


# ---- sparsify --------------------------------------------------------------------------------------------------

def write_sparsify(folder: Path, d_in: int = 16, num_latents: int = 48, k: int = 4, activation: str = "topk",
                   signed: bool | None = None, skip: bool = False, transcode: bool = False) -> dict:
    """<hookpoint>/cfg.json + sae.safetensors (encoder.weight [F,d], W_dec [F,d])."""
    t = {
        "encoder.weight": rand(num_latents, d_in, scale=d_in**-0.5),
        "encoder.bias": rand(num_latents, scale=0.1),
        "W_dec": rand(num_latents, d_in, scale=num_latents**-0.5),
        "b_dec": rand(d_in, scale=0.1),
    }
    if skip:
        t["W_skip"] = rand(d_in, d_in, scale=d_in**-0.5)
    cfg = {"expansion_factor": num_latents // d_in, "normalize_decoder": True, "num_latents": num_latents, "k": k,
           "multi_topk": False, "skip_connection": skip, "transcode": transcode, "d_in": d_in}
    if activation != "topk" or signed is None:
        cfg["activation"] = activation
    if signed is not None:
        cfg["signed"] = signed
    write_json(folder / "cfg.json", cfg)
    save_safetensors(folder / "sae.safetensors", t)
    return t


# ---- OpenAI ----------------------------------------------------------------------------------------------------

def write_openai(path: Path, d_in: int = 16, n_latents: int = 48, activation: str = "TopK", k: int = 4) -> dict:
    """A torch.save'd state dict with pre_bias, latent_bias, encoder/decoder weights and the activation string."""
    t = {
        "pre_bias": rand(d_in, scale=0.1),
        "latent_bias": rand(n_latents, scale=0.1),
        "encoder.weight": rand(n_latents, d_in, scale=d_in**-0.5),
        "decoder.weight": rand(d_in, n_latents, scale=n_latents**-0.5),
    }
    state = dict(t)
    state.update(stats_last_nonzero=torch.zeros(n_latents, dtype=torch.long),
                 latents_activation_frequency=torch.zeros(n_latents), latents_mean_square=torch.zeros(n_latents),
                 activation=activation,
                 activation_state_dict={"k": k, "postact_fn": "ReLU"} if activation == "TopK" else {})
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return t


# ---- dictionary_learning ---------------------------------------------------------------------------------------

def write_dictionary_learning(folder: Path, dict_class: str, d: int = 16, F: int = 48, k: int = 4,
                              backup: bool = False, k_in_file: bool = True) -> tuple[dict, dict]:
    """ae.pt + config.json {"trainer": {...}, "buffer": {...}} for one dictionary class."""
    lin_enc = {"encoder.weight": rand(F, d, scale=d**-0.5), "encoder.bias": rand(F, scale=0.1)}
    dec_w = rand(d, F, scale=F**-0.5)
    if dict_class == "AutoEncoder":
        t = {"bias": rand(d, scale=0.1), **lin_enc, "decoder.weight": dec_w}
    elif dict_class == "AutoEncoderNew":
        t = {**lin_enc, "decoder.weight": dec_w, "decoder.bias": rand(d, scale=0.1)}
    elif dict_class == "GatedAutoEncoder":
        t = {"decoder_bias": rand(d, scale=0.1), "encoder.weight": lin_enc["encoder.weight"],
             "r_mag": rand(F, scale=0.3), "gate_bias": rand(F, scale=0.1), "mag_bias": rand(F, scale=0.1),
             "decoder.weight": dec_w}
    elif dict_class == "JumpReluAutoEncoder":
        t = {"W_enc": rand(d, F, scale=d**-0.5), "b_enc": rand(F, scale=0.1), "W_dec": rand(F, d, scale=F**-0.5),
             "b_dec": rand(d, scale=0.1), "threshold": torch.rand(F) * 0.3 + 0.05}
    elif dict_class in ("AutoEncoderTopK", "BatchTopKSAE"):
        t = {**lin_enc, "decoder.weight": dec_w, "b_dec": rand(d, scale=0.1)}
        if k_in_file:
            t.update(k=torch.tensor(k), threshold=torch.tensor(0.25 if dict_class == "BatchTopKSAE" else -1.0))
    elif dict_class == "MatryoshkaBatchTopKSAE":
        t = {"W_enc": rand(d, F, scale=d**-0.5), "b_enc": rand(F, scale=0.1), "W_dec": rand(F, d, scale=F**-0.5),
             "b_dec": rand(d, scale=0.1), "k": torch.tensor(k), "threshold": torch.tensor(0.25),
             "group_sizes": torch.tensor([F // 2, F - F // 2])}
    else:
        raise ValueError(dict_class)
    config = {"trainer": {"dict_class": dict_class, "trainer_class": "X", "activation_dim": d, "dict_size": F,
                          "k": k, "layer": 3, "lm_name": "EleutherAI/pythia-70m-deduped",
                          "submodule_name": "resid_post_layer_3", "lr": 1e-3, "steps": 10, "seed": 0},
              "buffer": {"d_submodule": d, "io": "out", "n_ctxs": 10, "ctx_len": 128, "device": "cpu"}}
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "config.json", config)
    state = {"step": 5, "ae": t, "optimizer": {}, "config": config, "norm_factor": 1.0} if backup else t
    torch.save(state, folder / "ae.pt")
    return t, config


# ---- Llama Scope / OpenMOSS ------------------------------------------------------------------------------------

def write_llamascope_v1(folder: Path, d: int = 16, d_sae: int = 48, thr: float = 0.02,
                        norm_in: float = 7.0, norm_out: float = 9.0) -> tuple[dict, dict]:
    """hyperparams.json + checkpoints/final.safetensors (nn.Linear orientation, scalar threshold)."""
    t = {"encoder.weight": rand(d_sae, d, scale=d**-0.5), "encoder.bias": rand(d_sae, scale=0.1),
         "decoder.weight": rand(d, d_sae, scale=d_sae**-0.5), "decoder.bias": rand(d, scale=0.1)}
    hp = {"d_model": d, "d_sae": d_sae, "expansion_factor": d_sae // d, "act_fn": "jumprelu", "top_k": 50,
          "jump_relu_threshold": thr, "norm_activation": "dataset-wise",
          "dataset_average_activation_norm": {"in": norm_in, "out": norm_out},
          "sparsity_include_decoder_norm": False, "use_decoder_bias": True,
          "apply_decoder_bias_to_pre_encoder": False, "hook_point_in": "blocks.3.hook_resid_post",
          "hook_point_out": "blocks.3.hook_resid_post", "use_glu_encoder": False}
    write_json(folder / "hyperparams.json", hp)
    save_safetensors(folder / "checkpoints" / "final.safetensors", t)
    return t, hp


def write_llamascope_r1(folder: Path, d: int = 16, d_sae: int = 48, norm_in: float | None = 6.0) -> tuple[dict, dict]:
    """config.json + sae_weights.safetensors with encoder/decoder + log_jumprelu_threshold."""
    t = {"encoder.weight": rand(d_sae, d, scale=d**-0.5), "encoder.bias": rand(d_sae, scale=0.1),
         "decoder.weight": rand(d, d_sae, scale=d_sae**-0.5), "decoder.bias": rand(d, scale=0.1),
         "log_jumprelu_threshold": torch.log(torch.rand(d_sae) * 0.3 + 0.05)}
    cfg = {"d_model": d, "expansion_factor": d_sae // d, "act_fn": "jumprelu", "norm_activation": "dataset-wise",
           "apply_decoder_bias_to_pre_encoder": False, "hook_point_in": "blocks.7.hook_resid_post",
           "hook_point_out": "blocks.7.hook_resid_post", "sparsity_include_decoder_norm": False}
    if norm_in is not None:
        cfg["dataset_average_activation_norm"] = {"in": norm_in, "out": norm_in}
    write_json(folder / "config.json", cfg)
    save_safetensors(folder / "sae_weights.safetensors", t)
    return t, cfg


def write_llamascopium(folder: Path, d: int = 16, d_sae: int = 48, include_decoder_norm: bool = True,
                       norm_in: float = 5.0, norm_out: float = 8.0,
                       norm_activation: str = "dataset-wise") -> tuple[dict, dict]:
    """config.json (sae_type, norm_activation) + sae_weights.safetensors with W_E/W_D."""
    t = {"W_E": rand(d, d_sae, scale=d**-0.5), "b_E": rand(d_sae, scale=0.1),
         "W_D": rand(d_sae, d, scale=d_sae**-0.5), "b_D": rand(d, scale=0.1),
         "activation_function.log_jumprelu_threshold": torch.log(torch.rand(d_sae) * 0.3 + 0.05),
         "dataset_average_activation_norm.in": torch.tensor(norm_in),
         "dataset_average_activation_norm.out": torch.tensor(norm_out)}
    cfg = {"sae_type": "sae", "d_model": d, "expansion_factor": d_sae // d, "use_decoder_bias": True,
           "act_fn": "jumprelu", "norm_activation": norm_activation,
           "sparsity_include_decoder_norm": include_decoder_norm, "top_k": 8,
           "hook_point_in": "blocks.2.hook_resid_post", "hook_point_out": "blocks.2.hook_resid_post"}
    write_json(folder / "config.json", cfg)
    save_safetensors(folder / "sae_weights.safetensors", t)
    return t, cfg


# ---- Goodfire, Kissane, Apollo ---------------------------------------------------------------------------------

def write_goodfire(path: Path, d: int = 16, d_sae: int = 48, dtype: torch.dtype = torch.float32) -> dict:
    t = {"encoder_linear.weight": rand(d_sae, d, scale=d**-0.5), "encoder_linear.bias": rand(d_sae, scale=0.1),
         "decoder_linear.weight": rand(d, d_sae, scale=d_sae**-0.5), "decoder_linear.bias": rand(d, scale=0.1)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.to(dtype) for k, v in t.items()}, path)
    return {k: v.to(dtype).float() for k, v in t.items()}


def write_kissane(folder: Path, n_heads: int = 4, d_head: int = 4, d_sae: int = 48,
                  layer: int = 5) -> tuple[dict, dict]:
    """<name>.pt (W_enc, W_dec, b_enc, b_dec) + <name>_cfg.json (act_size, dict_size, act_name)."""
    d = n_heads * d_head
    t = standard_tensors(d, d_sae)
    name = f"gpt2-small_L{layer}_Hcat_z_lr1.20e-03_l11.80e+00_ds{d_sae}_bs4096"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(t, folder / f"{name}.pt")
    cfg = {"act_size": d, "dict_size": d_sae, "act_name": f"blocks.{layer}.attn.hook_z", "layer": layer,
           "l1_coeff": 1.8, "model_name": "gpt2-small"}
    write_json(folder / f"{name}_cfg.json", cfg)
    return t, cfg


def write_apollo(folder: Path, d: int = 16, d_sae: int = 48, hook: str = "blocks.6.hook_resid_pre") -> dict:
    """samples_N.pt (ModuleDict keyed by hook with '.'→'-') + final_config.yaml."""
    prefix = hook.replace(".", "-")
    t = {f"{prefix}.encoder.0.weight": rand(d_sae, d, scale=d**-0.5),
         f"{prefix}.encoder.0.bias": rand(d_sae, scale=0.1),
         f"{prefix}.decoder.weight": rand(d, d_sae, scale=3.0),
         f"{prefix}.decoder.bias": rand(d, scale=0.1)}
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(t, folder / "samples_400000.pt")
    (folder / "final_config.yaml").write_text(
        f"tlens_model_name: gpt2\nsaes:\n  sae_positions:\n  - {hook}\n  dict_size_to_input_ratio: {d_sae // d}\n"
    )
    return t
