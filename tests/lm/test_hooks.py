"""Hook-name mapping checked against hidden_states, plain forward hooks and the residual-stream identities."""

import pytest
import torch
import torch.nn.functional as F
import transformers as T

from atlas.errors import ModelError
from atlas.lm.hookpoint import capture, intervene
from atlas.lm.hooks import TL_HOOKS, Family, HookSpec, Space, describe_layout, resolve_hook

N_LAYERS = 3
VOCAB = 64
_DECODER = dict(
    num_hidden_layers=N_LAYERS, hidden_size=16, intermediate_size=24, num_attention_heads=4,
    num_key_value_heads=2, head_dim=6, vocab_size=VOCAB, max_position_embeddings=64,
    bos_token_id=1, eos_token_id=2, pad_token_id=0,
)  # fmt: skip
CONFIGS = {
    "gpt2": lambda: T.GPT2Config(
        n_layer=N_LAYERS, n_embd=16, n_head=4, vocab_size=VOCAB, n_positions=64, bos_token_id=1, eos_token_id=2
    ),
    "llama": lambda: T.LlamaConfig(**_DECODER),
    "mistral": lambda: T.MistralConfig(**_DECODER),
    "qwen2": lambda: T.Qwen2Config(**_DECODER),
    "gemma2": lambda: T.Gemma2Config(**_DECODER),
    "gemma3": lambda: T.Gemma3TextConfig(**_DECODER),
    "bert": lambda: T.BertConfig(
        num_hidden_layers=N_LAYERS, hidden_size=16, intermediate_size=24, num_attention_heads=4, vocab_size=VOCAB
    ),
}
DECODERS = ["gpt2", "llama", "mistral", "qwen2", "gemma2", "gemma3"]
FAMILY = {"gpt2": Family.GPT2, "llama": Family.LLAMA, "mistral": Family.LLAMA, "qwen2": Family.LLAMA}
FAMILY |= {"gemma2": Family.GEMMA, "gemma3": Family.GEMMA, "bert": Family.BERT}


def build(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    config = CONFIGS[arch]()
    model = (T.AutoModel if arch == "bert" else T.AutoModelForCausalLM).from_config(config).eval()
    # Norm gains start at 1 (0 for Gemma); perturb them so "with" and "without gain" differ.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower() and p.dim() == 1:
                p.add_(0.5 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module", params=list(CONFIGS))
def arch_model(request):
    return request.param, build(request.param)


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(1)
    ids = torch.randint(3, VOCAB, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # right padding must not matter to the positions before it
    return ids, mask


def run(model, hook, ids, mask):
    spec = resolve_hook(model, hook)
    with torch.inference_mode():
        return capture(model, spec, lambda: model(input_ids=ids, attention_mask=mask))


def hidden_states(model, ids, mask):
    with torch.inference_mode():
        return model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states


def grab_all(model, paths: dict[str, tuple[str, str]], ids, mask) -> dict[str, torch.Tensor]:
    """Independent reference: plain forward hooks / pre-hooks on the named modules, one full forward."""
    got, handles = {}, []
    for key, (path, io) in paths.items():
        module = model.get_submodule(path)
        if io == "input":
            handles.append(module.register_forward_pre_hook(lambda m, a, k=key: got.__setitem__(k, a[0])))
        else:
            first = lambda o: o[0] if isinstance(o, tuple) else o  # noqa: E731
            handles.append(module.register_forward_hook(lambda m, a, o, k=key: got.__setitem__(k, first(o))))
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)
    for h in handles:
        h.remove()
    return got


def test_layout_finds_blocks_family_and_final_norm(arch_model):
    arch, model = arch_model
    layout = describe_layout(model)
    assert layout.family is FAMILY[arch]
    assert layout.n_layers == N_LAYERS
    expected = {"gpt2": ("transformer.h", "transformer.ln_f"), "bert": ("encoder.layer", None)}
    assert (layout.layers, layout.final_norm) == expected.get(arch, ("model.layers", "model.norm"))


def test_resid_pre_and_post_follow_hidden_states_off_by_one(arch_model, batch):
    arch, model = arch_model
    hs = hidden_states(model, *batch)
    post = "hook_normalized_resid_post" if arch == "bert" else "hook_resid_post"
    for layer in range(N_LAYERS):
        torch.testing.assert_close(run(model, f"blocks.{layer}.hook_resid_pre", *batch), hs[layer])
        torch.testing.assert_close(run(model, f"hidden_states.{layer}", *batch), hs[layer])
        if layer < N_LAYERS - 1:
            torch.testing.assert_close(run(model, f"blocks.{layer}.{post}", *batch), hs[layer + 1])
    torch.testing.assert_close(run(model, f"hidden_states.{N_LAYERS}", *batch), hs[N_LAYERS])


@pytest.mark.parametrize("arch", DECODERS)
def test_last_resid_post_is_before_the_final_norm(arch, batch):
    model = build(arch)
    layers = describe_layout(model).layers
    last = grab_all(model, {"out": (f"{layers}.{N_LAYERS - 1}", "output")}, *batch)["out"]
    got = run(model, f"blocks.{N_LAYERS - 1}.hook_resid_post", *batch)
    torch.testing.assert_close(got, last)
    assert not torch.allclose(got, hidden_states(model, *batch)[N_LAYERS], atol=1e-3)
    spec = resolve_hook(model, f"hidden_states.{N_LAYERS}")
    assert "final norm" in spec.description and "NOT" in spec.description


def test_bert_last_layer_output_is_the_last_hidden_state(batch):
    model = build("bert")
    hs = hidden_states(model, *batch)
    torch.testing.assert_close(run(model, f"blocks.{N_LAYERS - 1}.hook_normalized_resid_post", *batch), hs[-1])
    spec = resolve_hook(model, f"hidden_states.{N_LAYERS}")
    assert (spec.module, spec.io) == (f"encoder.layer.{N_LAYERS - 1}", "output")


# Hand-written reference: TL name → the HF module and side a plain hook reads.
REFERENCE = {
    Family.GPT2: {
        "hook_resid_mid": ("ln_2", "input"), "hook_attn_out": ("attn", "output"), "hook_mlp_out": ("mlp", "output"),
        "attn.hook_z": ("attn.c_proj", "input"), "mlp.hook_pre": ("mlp.c_fc", "output"),
        "mlp.hook_post": ("mlp.c_proj", "input"),
    },
    Family.LLAMA: {
        "hook_resid_mid": ("post_attention_layernorm", "input"), "hook_attn_out": ("self_attn", "output"),
        "hook_mlp_out": ("mlp", "output"), "attn.hook_z": ("self_attn.o_proj", "input"),
        "mlp.hook_pre": ("mlp.gate_proj", "output"), "mlp.hook_pre_linear": ("mlp.up_proj", "output"),
        "mlp.hook_post": ("mlp.down_proj", "input"),
    },
    Family.GEMMA: {
        "hook_resid_mid": ("pre_feedforward_layernorm", "input"),
        "hook_attn_out": ("post_attention_layernorm", "output"),
        "hook_mlp_out": ("post_feedforward_layernorm", "output"), "attn.hook_z": ("self_attn.o_proj", "input"),
        "mlp.hook_pre": ("mlp.gate_proj", "output"), "mlp.hook_pre_linear": ("mlp.up_proj", "output"),
        "mlp.hook_post": ("mlp.down_proj", "input"),
    },
    Family.BERT: {
        "hook_resid_mid": ("attention.output.LayerNorm", "input"), "hook_resid_post": ("output.LayerNorm", "input"),
        "hook_attn_out": ("attention.output.dense", "output"), "hook_mlp_out": ("output.dense", "output"),
        "attn.hook_z": ("attention.output.dense", "input"), "mlp.hook_pre": ("intermediate.dense", "output"),
        "mlp.hook_post": ("output.dense", "input"),
    },
}  # fmt: skip


def test_sublayer_hooks_match_plain_forward_hooks(arch_model, batch):
    arch, model = arch_model
    layout = describe_layout(model)
    layer = 1
    block = f"{layout.layers}.{layer}"
    ref = {k: (f"{block}.{rel}", io) for k, (rel, io) in REFERENCE[layout.family].items()}
    expected = grab_all(model, ref, *batch)
    for suffix in ref:
        torch.testing.assert_close(run(model, f"blocks.{layer}.{suffix}", *batch), expected[suffix], msg=suffix)


def test_residual_identities_hold(arch_model, batch):
    """resid_mid = resid_pre + attn_out and resid_post = resid_mid + mlp_out (BERT: before each LayerNorm)."""
    arch, model = arch_model
    acts = {s: run(model, f"blocks.1.{s}", *batch) for s in ("hook_resid_pre", "hook_resid_mid", "hook_attn_out")}
    acts |= {s: run(model, f"blocks.1.{s}", *batch) for s in ("hook_mlp_out", "hook_resid_post")}
    torch.testing.assert_close(acts["hook_resid_mid"], acts["hook_resid_pre"] + acts["hook_attn_out"])
    if arch == "bert":
        block = model.encoder.layer[1]
        with torch.inference_mode():
            mid_normed = block.attention.output.LayerNorm(acts["hook_resid_mid"])
            out = block.output.LayerNorm(acts["hook_resid_post"])
        torch.testing.assert_close(acts["hook_resid_post"], mid_normed + acts["hook_mlp_out"])
        torch.testing.assert_close(run(model, "blocks.1.hook_normalized_resid_post", *batch), out)
    else:
        torch.testing.assert_close(acts["hook_resid_post"], acts["hook_resid_mid"] + acts["hook_mlp_out"])


def test_hook_z_is_flat_heads_and_feeds_the_output_projection(arch_model, batch):
    arch, model = arch_model
    z = run(model, "blocks.0.attn.hook_z", *batch)
    config = model.config
    d_head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    assert z.shape == (2, 7, config.num_attention_heads * d_head)
    if FAMILY[arch] in (Family.LLAMA, Family.GEMMA):
        attn = run(model, "model.layers.0.self_attn.o_proj", *batch)
        with torch.inference_mode():
            torch.testing.assert_close(model.model.layers[0].self_attn.o_proj(z), attn)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gemma2", "bert"])
def test_normalized_hooks_drop_gain_and_bias(arch, batch):
    model = build(arch)
    x = run(model, "blocks.1.hook_resid_pre", *batch)
    got = run(model, "blocks.1.ln1.hook_normalized", *batch)
    if arch in ("gpt2",):
        expected = F.layer_norm(x, x.shape[-1:], eps=model.config.layer_norm_epsilon)
    elif arch == "bert":
        x = run(model, "blocks.1.hook_resid_mid", *batch)
        expected = F.layer_norm(x, x.shape[-1:], eps=model.config.layer_norm_eps)
    else:
        expected = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + model.config.rms_norm_eps)
    torch.testing.assert_close(got, expected)


def test_capture_stops_the_forward_at_the_hook(arch_model, batch):
    arch, model = arch_model
    layout = describe_layout(model)
    ran = []
    later = [model.get_submodule(f"{layout.layers}.{N_LAYERS - 1}")]
    later += [model.get_submodule(layout.final_norm)] if layout.final_norm else []
    handles = [m.register_forward_hook(lambda *a, m=m: ran.append(m)) for m in later]
    handles.append(model.get_submodule(f"{layout.layers}.0").register_forward_hook(lambda *a: ran.append("first")))
    try:
        run(model, "hidden_states.1", *batch)
    finally:
        for h in handles:
            h.remove()
    assert ran == ["first"]


def test_tuple_outputs_take_the_hidden_state_not_the_first_batch_row(batch):
    model = build("llama")
    expected = hidden_states(model, *batch)[2]
    block = model.model.layers[1]
    # Older transformers returned (hidden, attn_weights, ...) from decoder layers; emulate that for our hook.
    handle = block.register_forward_hook(lambda m, a, out: (out, None))
    try:
        got = run(model, "blocks.1.hook_resid_post", *batch)
    finally:
        handle.remove()
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize(
    "arch, hook, module, io",
    [
        ("gpt2", "transformer.h.1", "transformer.h.1", "output"),
        ("gpt2", "h.1", "transformer.h.1", "output"),
        ("gpt2", "transformer.h.1.input", "transformer.h.1", "input"),
        ("llama", "model.layers.1", "model.layers.1", "output"),
        ("llama", "layers.1", "model.layers.1", "output"),
        ("llama", "model.layers.1.self_attn.o_proj.input", "model.layers.1.self_attn.o_proj", "input"),
        ("gemma3", "model.language_model.layers.2", "model.layers.2", "output"),
        ("gemma3", "model.language_model.layers.1.self_attn.o_proj.input", "model.layers.1.self_attn.o_proj", "input"),
        ("bert", "encoder.layer.1", "encoder.layer.1", "output"),
        ("bert", "bert.encoder.layer.1", "encoder.layer.1", "output"),
        ("bert", "encoder.layer.1.input", "encoder.layer.1", "input"),
    ],
)
def test_hf_module_paths_resolve(arch, hook, module, io):
    spec = resolve_hook(build(arch), hook)
    assert (spec.module, spec.io) == (module, io)


RESIDUAL_TL = {"hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out",
               "hook_normalized_resid_post"}


def test_every_tl_hook_knows_whether_it_reads_the_residual_stream(arch_model, batch):
    """The residual hooks are d_model wide; z, MLP-hidden and normalised hooks are not taken as residual."""
    arch, model = arch_model
    layout = describe_layout(model)
    for suffix in TL_HOOKS[layout.family]:
        spec = resolve_hook(model, f"blocks.1.{suffix}")
        assert spec.in_residual is (suffix in RESIDUAL_TL), suffix
        if spec.in_residual:
            assert run(model, f"blocks.1.{suffix}", *batch).shape[-1] == model.config.hidden_size, suffix
    expected = {"attn.hook_z": Space.HEADS, "mlp.hook_pre": Space.MLP_HIDDEN, "mlp.hook_post": Space.MLP_HIDDEN,
                "ln1.hook_normalized": Space.NORMALISED}
    for suffix, space in expected.items():
        assert resolve_hook(model, f"blocks.1.{suffix}").space is space, suffix


@pytest.mark.parametrize(
    "arch, hook, space",
    [
        ("llama", "model.layers.1", Space.RESIDUAL),
        ("llama", "model.layers.1.input", Space.RESIDUAL),
        ("llama", "layers.1.mlp", Space.RESIDUAL),
        ("llama", "model.layers.1.self_attn", Space.RESIDUAL),
        ("llama", "model.layers.1.self_attn.o_proj", Space.RESIDUAL),
        ("llama", "model.layers.1.self_attn.o_proj.input", Space.HEADS),
        ("llama", "model.layers.1.mlp.down_proj.input", Space.MLP_HIDDEN),
        ("llama", "model.layers.1.input_layernorm", Space.OTHER),
        ("llama", "hidden_states.1", Space.RESIDUAL),
        ("llama", f"hidden_states.{N_LAYERS}", Space.FINAL_NORM),
        ("llama", "model.norm", Space.FINAL_NORM),
        ("gpt2", "transformer.h.1", Space.RESIDUAL),
        ("gpt2", "transformer.h.1.attn.c_proj.input", Space.HEADS),
        ("gpt2", "transformer.h.1.mlp.c_proj", Space.RESIDUAL),
        # Gemma normalises each sublayer's output before adding it: only the post-norm's output is residual.
        ("gemma2", "model.layers.1.self_attn.o_proj", Space.OTHER),
        ("gemma2", "model.layers.1.post_attention_layernorm", Space.RESIDUAL),
        ("bert", "encoder.layer.1", Space.RESIDUAL),
        ("bert", "encoder.layer.1.attention.output.dense.input", Space.HEADS),
    ],
)
def test_module_paths_know_their_space(arch, hook, space):
    assert resolve_hook(build(arch), hook).space is space


def test_descriptions_name_the_equivalents():
    gpt2 = build("gpt2")
    assert resolve_hook(gpt2, "transformer.h.1").description == (
        "output of transformer.h.1 (= blocks.1.hook_resid_post = hidden_states[2])"
    )
    assert resolve_hook(gpt2, "blocks.1.hook_resid_pre").description == (
        "input of transformer.h.1 (= blocks.1.hook_resid_pre = hidden_states[1])"
    )
    last = resolve_hook(gpt2, "h.2").description
    assert "blocks.2.hook_resid_post" in last and "not hidden_states[3]" in last and "transformer.ln_f" in last
    bert = resolve_hook(build("bert"), "encoder.layer.0").description
    assert "blocks.0.hook_normalized_resid_post" in bert and "hidden_states[1]" in bert


def test_bert_with_a_prefix(batch):
    torch.manual_seed(0)
    model = T.BertForMaskedLM(CONFIGS["bert"]()).eval()
    assert describe_layout(model).layers == "bert.encoder.layer"
    hs = hidden_states(model, *batch)
    torch.testing.assert_close(run(model, "blocks.1.hook_normalized_resid_post", *batch), hs[2])
    torch.testing.assert_close(run(model, "encoder.layer.1", *batch), hs[2])


def test_gemma3_multimodal_nesting(batch):
    text = T.Gemma3TextConfig(**_DECODER)
    vision = T.SiglipVisionConfig(
        hidden_size=16, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14
    )
    config = T.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4)
    torch.manual_seed(0)
    model = T.Gemma3ForConditionalGeneration(config).eval()
    layout = describe_layout(model)
    assert (layout.layers, layout.family) == ("model.language_model.layers", Family.GEMMA)
    for hook in ("model.layers.1", "layers.1", "blocks.1.hook_resid_post", "model.language_model.layers.1"):
        assert resolve_hook(model, hook).module == "model.language_model.layers.1", hook
    ids, mask = batch
    with torch.inference_mode():
        hs = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    torch.testing.assert_close(run(model, "blocks.1.hook_resid_post", ids, mask), hs[2])


def test_hooking_a_whole_submodel_reads_its_hidden_state(batch):
    model = build("llama")
    torch.testing.assert_close(run(model, "model", *batch), hidden_states(model, *batch)[-1])


@pytest.mark.parametrize(
    "hook, words",
    [
        ("blocks.9.hook_resid_post", ["blocks.9.hook_resid_post", "3 layers", "blocks.1.hook_resid_post"]),
        ("blocks.1.hook_nonsense", ["hook_nonsense", "known:", "3 layers"]),
        ("hidden_states.4", ["hidden_states.4", "3 layers", "hidden_states.1"]),
        ("model.layers.7", ["model.layers.7", "3 layers"]),
        ("model.lm_mystery.9", ["model.lm_mystery.9", "3 layers", "model.layers.1"]),
    ],
)
def test_bad_hooks_raise_model_error_with_help(hook, words):
    with pytest.raises(ModelError) as info:
        resolve_hook(build("llama"), hook)
    for word in words:
        assert word in str(info.value)


def test_a_module_path_of_another_architecture_is_not_rewritten():
    with pytest.raises(ModelError, match="encoder.layer.1"):
        resolve_hook(build("bert"), "model.layers.1")


def test_bert_resid_post_says_it_is_before_the_layer_norm():
    spec = resolve_hook(build("bert"), "blocks.1.hook_resid_post")
    assert (spec.module, spec.io) == ("encoder.layer.1.output.LayerNorm", "input")
    assert "before the block's LayerNorm" in spec.description


# ---- intervene: editing the value at a hook point ---------------------------------------------------------------


def logits_with(model, hook, edit, ids, mask):
    with torch.inference_mode(), intervene(model, resolve_hook(model, hook), edit):
        return model(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("arch", DECODERS)
def test_an_edit_at_a_block_input_equals_the_same_edit_at_the_previous_block_output(arch, batch):
    """resid_pre of block 1 is resid_post of block 0: a pre-hook edit and a forward-hook edit must agree."""
    model = build(arch)
    g = torch.Generator().manual_seed(3)
    v = torch.randn(model.config.hidden_size, generator=g)
    plain = logits_with(model, "blocks.1.hook_resid_pre", lambda x: x, *batch)
    with torch.inference_mode():
        torch.testing.assert_close(plain, model(input_ids=batch[0], attention_mask=batch[1]).logits)
    pre = logits_with(model, "blocks.1.hook_resid_pre", lambda x: x + v, *batch)
    post = logits_with(model, "blocks.0.hook_resid_post", lambda x: x + v, *batch)
    torch.testing.assert_close(pre, post)
    assert (pre - plain).abs().max() > 1e-3


def test_an_edit_reaches_the_tuple_element_and_stops_when_the_context_closes():
    class Pair(torch.nn.Module):  # a layer returning (hidden, extras), as older HF layers do
        def forward(self, x):
            return x * 2, x

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Pair()

        def forward(self, x):
            hidden, extra = self.inner(x)
            return hidden + extra

    toy, x = Toy(), torch.ones(2, 3)
    spec = HookSpec("inner", "inner", "output", None, "output of inner")
    with intervene(toy, spec, torch.zeros_like):
        torch.testing.assert_close(toy(x), x)  # the hidden state zeroed, the extra element kept
    torch.testing.assert_close(toy(x), 3 * x)


def test_an_edit_of_hook_z_feeds_the_output_projection(batch):
    model = build("llama")
    z = run(model, "blocks.0.attn.hook_z", *batch)
    seen = []
    logits_with(model, "blocks.0.attn.hook_z", lambda x: seen.append(x) or x * 2, *batch)
    torch.testing.assert_close(seen[0], z)
    out = run(model, "blocks.0.hook_attn_out", *batch)
    edited = []
    handle = model.model.layers[0].self_attn.register_forward_hook(lambda m, a, o: edited.append(o[0]))
    try:
        logits_with(model, "blocks.0.attn.hook_z", lambda x: x * 2, *batch)
    finally:
        handle.remove()
    torch.testing.assert_close(edited[0], 2 * out)


def test_normalised_hooks_cannot_be_edited(batch):
    model = build("llama")
    with pytest.raises(ModelError, match="computed for reading only"):
        logits_with(model, "blocks.1.ln1.hook_normalized", lambda x: x, *batch)
