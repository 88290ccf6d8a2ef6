"""The logits stage: the tokens each feature's decoder direction promotes and suppresses through the LM head."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from atlas.errors import ModelError
from atlas.lm.activations import model_identity
from atlas.lm.hooks import HookSpec, Space, resolve_hook
from atlas.stages.harvest import write_vocab
from atlas.stages.inputs import SharedInputs
from atlas.stages.run import Keyed, Outcome, StoreLedger, VersionRun, run_keyed
from atlas.store import frames

if TYPE_CHECKING:
    from atlas.lm.adapter import ModelAdapter
    from atlas.saes import SaeWeights

TOP = 10  # tokens kept per feature and sign
NO_HEAD = "This model has no unembedding (no language-model head), so logit effects cannot be computed."


def logits(shared: SharedInputs, run: VersionRun, sae: SaeWeights) -> str:
    """Write the `logits` table, or, where the decoder has no direct effect on the logits, leave it empty and
    record why (`logits_note`, the sentence the feature pages show); returns the stage's key."""
    model, store = shared.model, run.store

    def compute(key: str) -> Outcome[None]:
        space, why = decoder_space(model, sae)
        if why is None:
            effects = model.logit_effects(sae.W_dec.float(), k=TOP, after_norm=space is Space.FINAL_NORM)
            frame = frames.logits_table([t.numpy() for t in effects])
            store.replace_table("logits", frame)
            write_vocab(store, model, frame["token_id"].unique())
        else:
            store.replace_table("logits", frames.logits_table([np.zeros((0, TOP))] * 4))
        store.set_info(has_unembedding=why is None, logits_note=why)
        return Outcome(note=f"top {TOP} promoted/suppressed tokens" if why is None else f"none: {why}")

    return run_keyed(Keyed(
        "logits",
        inputs={"sae": sae.content_hash(), "model": model_identity(run.cfg.resolve(run.cfg.model.path)),
                "hook": model.hook_spec.hook},
        ledger=StoreLedger(store),
        compute=compute,
    ), run.report).key


def decoder_space(model: ModelAdapter, sae: SaeWeights) -> tuple[Space, str | None]:
    """The space the SAE's decoder writes to (a transcoder's output hook, else the hook it reads) and, when its
    directions have no direct effect on the logits, the sentence that says why (None when they have one)."""
    unembed = model.unembed()
    if unembed is None:
        return Space.OTHER, NO_HEAD
    spec, verb = model.hook_spec, "reads"
    out_hook = sae.metadata.get("hook_name_out")
    if out_hook and out_hook != spec.hook:
        try:
            spec, verb = resolve_hook(model.model, str(out_hook)), "writes"
        except ModelError:
            pass  # an output hook this model cannot place: judge by the hook the SAE reads
    if not (spec.in_residual or spec.space is Space.FINAL_NORM):
        return spec.space, _not_residual(spec, verb)
    d_model = int(unembed[0].shape[0])
    if sae.d_out != d_model:
        return spec.space, (f"This SAE's decoder has {sae.d_out} dimensions and the residual stream {d_model}, "
                            "so it has no direct effect on the logits.")
    return spec.space, None


def _not_residual(spec: HookSpec, verb: str) -> str:
    return (f"This SAE {verb} {spec.space.value} ({spec.hook.strip()}); its decoder does not live in the residual "
            "stream, so it has no direct effect on the logits.")
