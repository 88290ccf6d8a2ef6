"""The offline explainer over the evidence: candidate phrases of every feature embedded in one batch, then ranked
and written up by `atlas.analysis.explain`."""

from __future__ import annotations

import numpy as np

from atlas.analysis import explain as ex
from atlas.meaning.encoder import SentenceEncoder
from atlas.meaning.evidence import Evidence


def offline_explanations(ev: Evidence, features: np.ndarray, encoder: SentenceEncoder,
                         batch_tokens: int = 8192) -> tuple[dict[int, str], set[int]]:
    """An explanation for each of `features` from its visible examples only, and the features read as firing on
    a piece of words."""
    visible = {int(f): ev.visible_examples(int(f)) for f in features}
    idf = ex.document_frequency(list(visible.values()))
    cands = {f: ex.candidates(v, idf) for f, v in visible.items()}
    phrases = sorted({p for c in cands.values() for p in c.phrases()})
    lookup = dict(zip(phrases, encoder.encode(phrases, batch_tokens)))
    out = {}
    for f, c in cands.items():
        out[f] = ex.explain(c, lookup, *ev.explainer_contexts(f))
    return out, {f for f, c in cands.items() if c.focus.kind == "piece"}
