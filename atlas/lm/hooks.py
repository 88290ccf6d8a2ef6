"""Hook-point names: map TransformerLens names, HF module paths and `hidden_states.N` onto one HF module.

See the reference notes (sae-formats.md §9) for the conventions this encodes. The two traps worth repeating:
`hidden_states[L]` is the *input* of layer L, so `hook_resid_pre` L == `hidden_states[L]` and `hook_resid_post` L
== `hidden_states[L+1]`; and for decoders the last entry of `hidden_states` has gone through the final norm, so the
last layer's `hook_resid_post` is taken from the layer output itself, never from `hidden_states[N]`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Literal

from torch import nn

from atlas.errors import ModelError

Io = Literal["input", "output"]


class Family(enum.Enum):
    """Block layouts whose TransformerLens names we know how to place."""

    GPT2 = "gpt2"
    LLAMA = "llama"  # also Mistral, Qwen2: pre-norm, gated MLP
    GEMMA = "gemma"  # Gemma 2/3: pre- and post-norms around both sublayers
    BERT = "bert"  # post-LN encoders


class Norm(enum.Enum):
    """How to turn a norm's input into TransformerLens's `ln*.hook_normalized` (no gain, no bias)."""

    NONE = "none"
    LAYER_NORM = "layer_norm"
    RMS_NORM = "rms_norm"


class Space(enum.Enum):
    """Which space an activation lives in: the residual stream's basis, where the unembedding can read a direction
    directly, or one of the spaces inside a block. The value says what an SAE there reads, for sentences."""

    RESIDUAL = "the residual stream"
    HEADS = "attention heads' outputs before the output projection"
    MLP_HIDDEN = "the MLP's hidden layer"
    NORMALISED = "a layer norm's normalised input, without the norm's gain"
    FINAL_NORM = "the final norm's output, after the residual stream has been normalised"
    OTHER = "an activation inside a block, outside the residual stream"


@dataclass(frozen=True)
class HookSpec:
    """Where to read an activation: a module, its input or output, and which tuple element."""

    hook: str  # the name as the SAE (or the user) gave it
    module: str  # dotted path in `model.named_modules()`; "" is the root
    io: Io  # "input": forward pre-hook on the module; "output": forward hook
    layer: int | None  # block index, when the point sits inside or at a block
    description: str
    tuple_index: int = 0  # taken only when the value is a tuple (older HF layers return (hidden, ...))
    normalize: Norm = Norm.NONE
    eps: float = 0.0
    space: Space = Space.OTHER

    @property
    def in_residual(self) -> bool:
        """Whether the activation is a vector of the residual stream, so a decoder direction there has a direct
        effect on the logits through the final norm and the unembedding."""
        return self.space is Space.RESIDUAL


@dataclass(frozen=True)
class Layout:
    """Where a model keeps its blocks and its final norm."""

    family: Family | None
    layers: str  # path of the ModuleList of blocks
    n_layers: int
    final_norm: str | None
    trunk: str  # path of `model.base_model`, the root sparsify-style relative names hang from


# TL suffix → (module path relative to the block, "" = the block itself; io; normalisation applied afterwards;
# the space the activation lives in)
_Entry = tuple[str, Io, Norm, Space]
_N, _LN, _RMS = Norm.NONE, Norm.LAYER_NORM, Norm.RMS_NORM
_R, _Z, _H, _NS = Space.RESIDUAL, Space.HEADS, Space.MLP_HIDDEN, Space.NORMALISED

_GPT2: dict[str, _Entry] = {
    "hook_resid_pre": ("", "input", _N, _R),
    "hook_resid_mid": ("ln_2", "input", _N, _R),
    "hook_resid_post": ("", "output", _N, _R),
    "hook_attn_out": ("attn", "output", _N, _R),
    "hook_mlp_out": ("mlp", "output", _N, _R),
    "attn.hook_z": ("attn.c_proj", "input", _N, _Z),
    "mlp.hook_pre": ("mlp.c_fc", "output", _N, _H),
    "mlp.hook_post": ("mlp.c_proj", "input", _N, _H),
    "ln1.hook_normalized": ("ln_1", "input", _LN, _NS),
    "ln2.hook_normalized": ("ln_2", "input", _LN, _NS),
}

_GATED_MLP: dict[str, _Entry] = {
    "attn.hook_z": ("self_attn.o_proj", "input", _N, _Z),
    "mlp.hook_pre": ("mlp.gate_proj", "output", _N, _H),
    "mlp.hook_pre_linear": ("mlp.up_proj", "output", _N, _H),
    "mlp.hook_post": ("mlp.down_proj", "input", _N, _H),
    "hook_resid_pre": ("", "input", _N, _R),
    "hook_resid_post": ("", "output", _N, _R),
    "hook_mlp_out": ("mlp", "output", _N, _R),
}

_LLAMA: dict[str, _Entry] = {
    **_GATED_MLP,
    # Llama's `post_attention_layernorm` is the pre-MLP norm, so its input is resid_mid.
    "hook_resid_mid": ("post_attention_layernorm", "input", _N, _R),
    "hook_attn_out": ("self_attn", "output", _N, _R),
    "ln1.hook_normalized": ("input_layernorm", "input", _RMS, _NS),
    "ln2.hook_normalized": ("post_attention_layernorm", "input", _RMS, _NS),
}

_GEMMA: dict[str, _Entry] = {
    **_GATED_MLP,
    # Gemma's post-norms sit on the sublayer outputs: what TL calls attn_out / mlp_out is what is added to the stream.
    "hook_resid_mid": ("pre_feedforward_layernorm", "input", _N, _R),
    "hook_attn_out": ("post_attention_layernorm", "output", _N, _R),
    "hook_mlp_out": ("post_feedforward_layernorm", "output", _N, _R),
    "ln1.hook_normalized": ("input_layernorm", "input", _RMS, _NS),
    "ln1_post.hook_normalized": ("post_attention_layernorm", "input", _RMS, _NS),
    "ln2.hook_normalized": ("pre_feedforward_layernorm", "input", _RMS, _NS),
    "ln2_post.hook_normalized": ("post_feedforward_layernorm", "input", _RMS, _NS),
}

_BERT: dict[str, _Entry] = {
    "hook_resid_pre": ("", "input", _N, _R),
    # Post-LN: TL's resid_mid/resid_post are the sums *before* each LayerNorm; the block output is normalised.
    "hook_resid_mid": ("attention.output.LayerNorm", "input", _N, _R),
    "hook_resid_post": ("output.LayerNorm", "input", _N, _R),
    "hook_normalized_resid_post": ("", "output", _N, _R),
    "hook_attn_out": ("attention.output.dense", "output", _N, _R),
    "hook_mlp_out": ("output.dense", "output", _N, _R),
    "attn.hook_z": ("attention.output.dense", "input", _N, _Z),
    "mlp.hook_pre": ("intermediate.dense", "output", _N, _H),
    "mlp.hook_post": ("output.dense", "input", _N, _H),
    "ln1.hook_normalized": ("attention.output.LayerNorm", "input", _LN, _NS),
    "ln2.hook_normalized": ("output.LayerNorm", "input", _LN, _NS),
}

TL_HOOKS: dict[Family, dict[str, _Entry]] = {
    Family.GPT2: _GPT2,
    Family.LLAMA: _LLAMA,
    Family.GEMMA: _GEMMA,
    Family.BERT: _BERT,
}

_LAYER_LIST_NAMES = ("layers", "h", "layer")
_FINAL_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "final_norm")
_NOT_TEXT = ("vision", "audio", "image")

_TL_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")
_HIDDEN_RE = re.compile(r"^hidden_states(?:\.(-?\d+)|\[(-?\d+)\])$")
_LAYER_TOKEN_RE = re.compile(r"^(?:.*\.)?(layers|h|layer)\.(\d+)((?:\..+)?)$")


def describe_layout(model: nn.Module) -> Layout:
    """Find the block list, the final norm and the family of a HF model."""
    modules = dict(model.named_modules())
    candidates = [
        name
        for name, mod in modules.items()
        if isinstance(mod, nn.ModuleList)
        and len(mod) > 0
        and name.rsplit(".", 1)[-1] in _LAYER_LIST_NAMES
        and not any(word in name for word in _NOT_TEXT)
    ]
    if not candidates:
        raise ModelError(
            f"cannot find the transformer blocks of {type(model).__name__}: no ModuleList named "
            f"{' / '.join(_LAYER_LIST_NAMES)}; supported families are GPT-2, Llama/Mistral/Qwen2, Gemma 2/3 and BERT"
        )
    # The text trunk is the shallowest block list; towers and adapters nest deeper.
    layers = min(candidates, key=lambda n: (n.count("."), n))
    parent = layers.rsplit(".", 1)[0] if "." in layers else ""
    final_norm = next(
        (_join(parent, n) for n in _FINAL_NORM_NAMES if _join(parent, n) in modules),
        None,
    )
    trunk = next((name for name, mod in modules.items() if mod is getattr(model, "base_model", None)), "")
    return Layout(
        family=_family(modules, f"{layers}.0"),
        layers=layers,
        n_layers=len(modules[layers]),
        final_norm=final_norm,
        trunk=trunk,
    )


def _family(modules: dict[str, nn.Module], block: str) -> Family | None:
    def has(*rels: str) -> bool:
        return all(f"{block}.{rel}" in modules for rel in rels)

    if has("attention.output.LayerNorm", "output.LayerNorm"):
        return Family.BERT
    if has("attn.c_proj", "ln_2"):
        return Family.GPT2
    if has("self_attn.o_proj", "pre_feedforward_layernorm", "post_feedforward_layernorm"):
        return Family.GEMMA
    if has("self_attn.o_proj", "post_attention_layernorm", "mlp.down_proj"):
        return Family.LLAMA
    return None


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def resolve_hook(model: nn.Module, hook: str) -> HookSpec:
    """Map a TL name, an HF module path (optionally `.input`/`.output`) or `hidden_states.N` to a HookSpec."""
    layout = describe_layout(model)
    modules = dict(model.named_modules())
    name = hook.strip()
    if m := _TL_RE.match(name):
        return _resolve_tl(layout, modules, hook, int(m.group(1)), m.group(2))
    if m := _HIDDEN_RE.match(name):
        return _resolve_hidden(layout, hook, int(m.group(1) or m.group(2)))
    return _resolve_module_path(layout, modules, hook, name)


def _resolve_tl(layout: Layout, modules: dict, hook: str, layer: int, suffix: str) -> HookSpec:
    _check_layer(layout, hook, layer)
    table = TL_HOOKS.get(layout.family) if layout.family else None
    if table is None:
        raise ModelError(
            f"hook {hook!r}: TransformerLens names are not mapped for this architecture; "
            f"use an HF module path or hidden_states.N instead ({_examples(layout)})"
        )
    if suffix not in table:
        raise ModelError(
            f"hook {hook!r}: unknown TransformerLens hook {suffix!r} for the {layout.family.value} family; "
            f"known: {', '.join(sorted(table))} (model has {layout.n_layers} layers; {_examples(layout)})"
        )
    rel, io, norm, space = table[suffix]
    module = _join(f"{layout.layers}.{layer}", rel)
    if module not in modules:
        raise ModelError(f"hook {hook!r}: expected module {module} is missing from this model ({_examples(layout)})")
    return _spec(layout, modules, hook, module, io, layer, rel, norm, space)


def _resolve_hidden(layout: Layout, hook: str, index: int) -> HookSpec:
    n = layout.n_layers
    if not 0 <= index <= n:
        raise ModelError(
            f"hook {hook!r}: hidden_states has {n + 1} entries (0..{n}) for a model with {n} layers; "
            f"{_examples(layout)}"
        )
    if index < n:
        module = f"{layout.layers}.{index}"
        alias = _alias_text(layout, index, "", "input")
        return HookSpec(hook, module, "input", index, f"input of {module} ({alias})", space=Space.RESIDUAL)
    if layout.final_norm:
        return HookSpec(
            hook,
            layout.final_norm,
            "output",
            None,
            f"output of {layout.final_norm}, the final norm (= hidden_states[{n}]; this is NOT "
            f"blocks.{n - 1}.hook_resid_post, which is the output of {layout.layers}.{n - 1} before the norm)",
            space=Space.FINAL_NORM,
        )
    module = f"{layout.layers}.{n - 1}"
    return HookSpec(hook, module, "output", n - 1, f"output of {module} ({_alias_text(layout, n - 1, '', 'output')})",
                    space=Space.RESIDUAL)


def _resolve_module_path(layout: Layout, modules: dict, hook: str, name: str) -> HookSpec:
    io: Io = "output"
    module = _find_module(layout, modules, name)
    if module is None and name.rsplit(".", 1)[-1] in ("input", "output"):
        stem, io = name.rsplit(".", 1)  # type: ignore[assignment]
        module = _find_module(layout, modules, stem)
    if module is None:
        raise ModelError(
            f"hook {hook!r} is neither a TransformerLens name, hidden_states.N, nor a module of this model "
            f"(model has {layout.n_layers} layers; {_examples(layout)})"
        )
    layer, rel = _layer_of(layout, module)
    return _spec(layout, modules, hook, module, io, layer, rel, Norm.NONE, _module_space(layout, module, rel, io))


def _find_module(layout: Layout, modules: dict, name: str) -> str | None:
    """Accept full paths, paths relative to the trunk (sparsify) and paths written for another nesting."""
    parts = name.split(".")
    for start in range(len(parts)):
        rest = ".".join(parts[start:])
        parent = layout.layers.rsplit(".", 1)[0] if "." in layout.layers else ""
        for candidate in (rest, _join(layout.trunk, rest), _join(parent, rest)):
            if candidate in modules:
                return candidate
        # Same block list under another nesting (Gemma 3's language_model, BERT's `bert.` prefix); a list of
        # another name means the name was written for another architecture, so it is not rewritten.
        m = _LAYER_TOKEN_RE.match(rest)
        if m and m.group(1) == layout.layers.rsplit(".", 1)[-1]:
            index = int(m.group(2))
            if index >= layout.n_layers:
                raise ModelError(
                    f"hook {name!r}: layer {index} is out of range; the model has {layout.n_layers} layers "
                    f"(0..{layout.n_layers - 1}); {_examples(layout)}"
                )
            candidate = f"{layout.layers}.{index}{m.group(3)}"
            if candidate in modules:
                return candidate
    return None


def _layer_of(layout: Layout, module: str) -> tuple[int | None, str]:
    prefix = layout.layers + "."
    if not module.startswith(prefix):
        return None, ""
    index, _, rel = module[len(prefix) :].partition(".")
    return int(index), rel


def _spec(layout: Layout, modules: dict, hook: str, module: str, io: Io, layer, rel: str, norm: Norm,
          space: Space) -> HookSpec:
    where = f"{io} of {module}"
    if norm is not Norm.NONE:
        # Only TL names ask for this: TL's ln*.hook_normalized never includes the norm's gain or bias.
        mod = modules[module]
        eps = float(getattr(mod, "eps", None) or getattr(mod, "variance_epsilon", None) or 0.0)
        description = f"{where}, normalised without the norm's gain and bias (= {hook.strip()})"
        return HookSpec(hook, module, io, layer, description, normalize=norm, eps=eps, space=space)
    if module == layout.final_norm and io == "output":
        alias = f"= hidden_states[{layout.n_layers}], after the final norm"
    else:
        alias = _alias_text(layout, layer, rel, io) if layer is not None else ""
    return HookSpec(hook, module, io, layer, f"{where} ({alias})" if alias else where, space=space)


# Output projections whose output is what the sublayer adds to the residual stream (GPT-2, Llama, BERT; Gemma
# normalises them first, so its TL table decides).
_WRITES_RESIDUAL = ("attn.c_proj", "mlp.c_proj", "self_attn.o_proj", "mlp.down_proj", "attention.output.dense",
                    "output.dense")


def _module_space(layout: Layout, module: str, rel: str, io: Io) -> Space:
    """The space of a module path's input or output: a block's input and output and whatever a sublayer adds to
    the stream are residual; a TL-mapped point keeps its TL space; anything else is taken as not residual."""
    if module == layout.final_norm:
        return Space.FINAL_NORM if io == "output" else Space.RESIDUAL
    if not module.startswith(layout.layers + "."):
        return Space.OTHER
    if rel == "":
        return Space.RESIDUAL
    if io == "output" and rel in _WRITES_RESIDUAL and layout.family is not Family.GEMMA:
        return Space.RESIDUAL
    table = TL_HOOKS.get(layout.family, {}) if layout.family else {}
    spaces = {space for r, i, norm, space in table.values() if (r, i) == (rel, io) and norm is _N}
    return spaces.pop() if len(spaces) == 1 else Space.OTHER


def _alias_text(layout: Layout, layer: int, rel: str, io: Io) -> str:
    if layout.family is Family.BERT and (rel, io) == ("output", "output"):
        rel = ""  # BertOutput's output (dense, add, LayerNorm) is the block's output
    table = TL_HOOKS.get(layout.family, {}) if layout.family else {}
    names = [f"blocks.{layer}.{s}" for s, (r, i, norm, _space) in table.items() if r == rel and i == io and norm is _N]
    note = ""
    if layout.family is Family.BERT and (rel, io) == ("output.LayerNorm", "input"):
        note = "the sum before the block's LayerNorm, in no hidden_states entry (that is hook_normalized_resid_post)"
    if rel == "" and io == "input":
        names.append(f"hidden_states[{layer}]")
    if rel == "" and io == "output":
        if layer + 1 < layout.n_layers or layout.final_norm is None:
            names.append(f"hidden_states[{layer + 1}]")
        else:
            note = f"not hidden_states[{layer + 1}], which has gone through the final norm {layout.final_norm}"
    text = "= " + " = ".join(names) if names else ""
    return "; ".join(t for t in (text, note) if t)


def _check_layer(layout: Layout, hook: str, layer: int) -> None:
    if not 0 <= layer < layout.n_layers:
        raise ModelError(
            f"hook {hook!r}: layer {layer} is out of range; the model has {layout.n_layers} layers "
            f"(0..{layout.n_layers - 1}); {_examples(layout)}"
        )


def _examples(layout: Layout) -> str:
    mid = layout.n_layers // 2
    post = "hook_normalized_resid_post" if layout.family == Family.BERT else "hook_resid_post"
    return f"valid names look like blocks.{mid}.{post}, {layout.layers}.{mid}, hidden_states.{mid}"
