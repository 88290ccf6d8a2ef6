"""The logits stage: the tokens each feature's decoder direction promotes and suppresses through the LM head."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from atlas.lm.activations import model_identity
from atlas.stages.harvest import write_vocab
from atlas.stages.inputs import SharedInputs
from atlas.stages.run import Keyed, Outcome, StoreLedger, VersionRun, run_keyed
from atlas.store import frames

if TYPE_CHECKING:
    from atlas.saes import SaeWeights

TOP = 10  # tokens kept per feature and sign


def logits(shared: SharedInputs, run: VersionRun, sae: SaeWeights) -> str:
    """Write the `logits` table (empty where the model has no unembedding); returns the stage's key."""
    model, store = shared.model, run.store

    def compute(key: str) -> Outcome[None]:
        effects = model.logit_effects(sae.W_dec.float(), k=TOP) if sae.d_out == model.d_hook else None
        # Only a causal LM's hook feeds the residual stream its head reads.
        has = effects is not None and model.is_causal
        if has:
            frame = frames.logits_table([t.numpy() if hasattr(t, "numpy") else t for t in effects])
            store.replace_table("logits", frame)
            write_vocab(store, model, frame["token_id"].unique())
        else:
            store.replace_table("logits", frames.logits_table([np.zeros((0, TOP))] * 4))
        store.set_info(has_unembedding=bool(has))
        return Outcome(note=f"top {TOP} promoted/suppressed tokens" if has else
                       "no unembedding: this model has no LM head")

    return run_keyed(Keyed(
        "logits",
        inputs={"sae": sae.content_hash(), "model": model_identity(run.cfg.resolve(run.cfg.model.path))},
        ledger=StoreLedger(store),
        compute=compute,
    ), run.report).key
