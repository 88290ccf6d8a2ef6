"""The evidence every explainer and scorer reads: the stored examples split into what the explainer sees and what
only scorers see, the contexts each feature does not fire on, and every context's sentence embedding.

Whether a feature fires on a context comes from one batched pass of the SAE over the sequences that hold the
examples (over the cached activations, or the model where there is no cache), for all features at once."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from atlas.analysis import explain as ex
from atlas.analysis.heldout import ContextSets, Plan, negatives, plan
from atlas.analysis.scoring import span
from atlas.corpus import TokenizedCorpus
from atlas.meaning.contexts import ContextCache, embed_contexts
from atlas.meaning.encoder import SentenceEncoder
from atlas.meaning.firing import firing_in
from atlas.store.meaning import ExplainExamples

if TYPE_CHECKING:
    from atlas.config import ExplainSection
    from atlas.lm.adapter import ModelAdapter
    from atlas.saes import SaeWeights


@dataclass
class Evidence:
    """Examples, their split, the context sets and the contexts' unit vectors (rows of `sets.centres`)."""

    examples: ExplainExamples
    plan: Plan
    sets: ContextSets
    contexts: np.ndarray  # [n_contexts, d] float16
    strings: Callable[[list[int]], list[str]]
    tokens: np.ndarray  # the corpus's token ids and sequence starts, for the text of any context
    seq_starts: np.ndarray
    radius: int
    timings: dict[str, float] = field(default_factory=dict)

    def visible_examples(self, f: int) -> list[ex.Example]:
        """The explainer's view of feature f: its visible examples as token strings."""
        return [self.example(int(i)) for i in self.plan.visible.of(f)]

    def example(self, i: int) -> ex.Example:
        ids, acts = self.examples.window(i)
        return ex.Example(self.strings([int(t) for t in ids]), int(self.examples.focus[i]), acts.tolist(),
                          float(self.examples.value[i]))

    def context_text(self, g: int) -> str:
        """The plain text of the context centred on global token index g."""
        lo, hi = span(np.array([g]), self.seq_starts, self.radius)
        return "".join(self.strings([int(t) for t in self.tokens[lo[0]:hi[0]]]))

    def explainer_contexts(self, f: int) -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors of f's visible activating contexts and of its explainer-side non-activating ones."""
        return (self.contexts[self.sets.visible.of(f)].astype(np.float32),
                self.contexts[self.sets.explain_negatives.of(f)].astype(np.float32))


def gather(examples: ExplainExamples, n_features: int, corpus: TokenizedCorpus, sae: SaeWeights,
           acts: np.ndarray | None, model: ModelAdapter, neighbours: list[np.ndarray], settings: ExplainSection,
           encoder: SentenceEncoder, seed: int, batch_tokens: int, cache: ContextCache | None = None,
           log=print) -> Evidence:
    """Split the examples, find where every feature fires in their sequences, choose the non-activating contexts
    and embed every context once (kept in `cache` when one is given)."""
    timings: dict[str, float] = {}
    r = settings.context_radius
    t = time.perf_counter()
    p = plan(examples.feature, examples.kind, examples.rank, examples.seq, examples.pos, corpus.seq_starts,
             n_features, r, settings.n_explain, settings.n_score)
    firing = firing_in(sae, corpus, p.sequences, acts, model if acts is None else None, batch_tokens)
    timings["firing_s"] = time.perf_counter() - t
    t = time.perf_counter()
    top = np.full(n_features, -1, np.int64)
    for f in range(n_features):
        rows = p.visible.of(f)
        if len(rows):
            focus_ids = [int(examples.window(int(i))[0][examples.focus[i]]) for i in rows
                         if 0 <= examples.focus[i] < examples.offsets[i + 1] - examples.offsets[i]]
            if focus_ids:
                ids, counts = np.unique(focus_ids, return_counts=True)
                top[f] = ids[np.argmax(counts)]
    sets = negatives(p, firing, corpus.tokens, corpus.seq_starts, top, neighbours, r, settings.n_hard,
                     settings.n_random, seed)
    timings["negatives_s"] = time.perf_counter() - t
    t = time.perf_counter()
    strings = _cached_strings(model)
    vectors = embed_contexts(encoder, corpus.tokens, corpus.seq_starts, sets.centres, strings, r,
                             batch_tokens=batch_tokens, cache=cache)
    timings["contexts_s"] = time.perf_counter() - t
    n_tokens = int(sum(corpus.seq_starts[q + 1] - corpus.seq_starts[q] for q in p.sequences))
    timings.update(contexts=float(len(sets.centres)), sequences=float(len(p.sequences)), tokens_read=float(n_tokens))
    log(f"  explain: {len(sets.centres):,} contexts in {len(p.sequences):,} sequences ({n_tokens:,} tokens): "
        f"SAE pass {timings['firing_s']:.1f} s, encoder {timings['contexts_s']:.1f} s")
    return Evidence(examples, p, sets, vectors, strings, corpus.tokens, corpus.seq_starts, r, timings)


def _cached_strings(model: ModelAdapter) -> Callable[[list[int]], list[str]]:
    known: dict[int, str] = {}

    def strings(ids: list[int]) -> list[str]:
        new = sorted({int(i) for i in ids} - known.keys())
        if new:
            known.update(zip(new, model.token_strings(new)))
        return [known[int(i)] for i in ids]

    return strings
