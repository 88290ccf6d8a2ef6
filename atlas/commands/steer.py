"""`atlas steer`: continue a prompt with one feature of the atlas's SAE added at its hook, at several strengths."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from atlas.config import DEFAULT_STEERING_STRENGTHS
from atlas.errors import AtlasError, ModelError, SaeFormatError
from atlas.store import Store, reads

# Control characters a terminal would act on: model output is shown, never obeyed.
_SHOWN = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F)}


@dataclass(frozen=True)
class SteerRun:
    """What `atlas steer` prints: the feature, where it was added, and one preview per strength."""

    feature: int
    label: str
    max_act: float
    hook: str
    previews: list


def steer_feature(store: Store, feature: int, prompt: str, strengths: list[float] | None = None,
                  new_tokens: int | None = None) -> SteerRun:
    """Load the model and SAE the atlas was built from and steer `prompt` with `feature` at each strength
    (multiples of its largest activation; the unsteered baseline comes first)."""
    from atlas.lm.adapter import load_model
    from atlas.lm.steering import check_steerable, steer
    from atlas.saes import load_sae

    info = store.info()
    fact = info.get("steering") or {}
    model_path, sae_path = info.get("model_path_abs"), info.get("sae_path_abs")
    if not model_path or not sae_path:
        raise AtlasError("this atlas does not record where its model and SAE are; rebuild it with `atlas build`")
    row = _feature_row(store, feature, int(info.get("d_sae") or 0))
    if not Path(model_path).is_dir():
        raise ModelError(f"the model folder this atlas was built from, {model_path}, is gone; put the model back "
                         "there (or rebuild the atlas with [model] path pointing at it)")
    if not Path(sae_path).exists():
        raise SaeFormatError(f"the SAE this atlas was built from, {sae_path}, is gone; put it back there "
                             "(or rebuild the atlas with [sae] path pointing at it)")
    model = load_model(model_path, info["hook"])
    sae = load_sae(sae_path, info.get("sae_format", "auto"))
    if info.get("sae_input_scale"):
        sae.input_norm.scale = float(info["sae_input_scale"])
    check_steerable(model, sae)
    if strengths is None:
        strengths = list(fact.get("strengths") or DEFAULT_STEERING_STRENGTHS)
    new_tokens = int(new_tokens or fact.get("new_tokens") or 24)
    previews = steer(model, sae, [feature], [row["max_act"]], [prompt], strengths, new_tokens)
    return SteerRun(feature, row["label"], row["max_act"], str(info["hook"]), previews)


def _feature_row(store: Store, feature: int, d_sae: int) -> dict:
    feats = reads.features(store).set_index("feature")
    if not 0 <= feature < max(d_sae, len(feats)) or feature not in feats.index:
        raise AtlasError(f"feature {feature} does not exist: this atlas's SAE has features 0 to "
                         f"{max(d_sae, len(feats)) - 1}")
    row = feats.loc[feature]
    if not bool(row["alive"]) or not float(row["max_act"] or 0) > 0:
        raise AtlasError(f"feature {feature} never fired on the corpus, so it has no activation range to measure "
                         "a strength by; pick a live feature (`atlas search`, or the map)")
    label = row["label"] if isinstance(row["label"], str) else ""
    return {"max_act": float(row["max_act"]), "label": label}


def shown(text: str) -> str:
    """Model output made safe for a terminal: control characters (escape sequences too) written out."""
    return text.translate(_SHOWN)


def format_run(run: SteerRun, prompt: str) -> str:
    """The previews as text: per strength, the figure and the continuation after the prompt."""
    from atlas.site.steering import strength_label

    lines = [f"feature {run.feature}: {shown(run.label) or 'unlabelled'} (max activation {run.max_act:.4g}), "
             f"added at {run.hook}", f"prompt: {shown(prompt)}", ""]
    for p in run.previews:
        fired = p.fired()
        figure = (f"fires on {fired} of {len(p.token_ids)} tokens, max {float(p.acts.max()):.4g}" if fired
                  else f"does not fire on its {len(p.token_ids)} tokens")
        added = f", added vector norm {p.added_norm:.3g}" if p.strength else " (unsteered)"
        lines.append(f"strength {strength_label(p.strength)}{added}: {figure}")
        body = shown(p.text) + (" [end of text]" if p.ended else "")
        lines += ["    " + line for line in body.split("\n")] + [""]
    return "\n".join(lines).rstrip() + "\n"
