"""Where every feature fires in a set of sequences: one batched pass of the SAE (over cached activations, or the
model when there is no cache) for all features at once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from atlas.analysis.scoring import Firing
from atlas.corpus import TokenizedCorpus
from atlas.lm.activations import Batch, stream_from_model

if TYPE_CHECKING:
    from atlas.lm.adapter import ModelAdapter
    from atlas.saes import SaeWeights


def firing_in(sae: SaeWeights, corpus: TokenizedCorpus, seqs: np.ndarray, acts: np.ndarray | None,
              model: ModelAdapter | None, batch_tokens: int,
              progress: Callable[[int], object] | None = None) -> Firing:
    """The tokens of sequences `seqs` on which each feature of `sae` has a positive code."""
    features, tokens = [], []
    for batch in _batches(corpus, np.sort(np.asarray(seqs, np.int64)), acts, model, batch_tokens):
        codes = sae.encode_sparse(batch.x)
        keep = codes.values > 0
        flat = codes.flat[keep]
        features.append((flat % codes.n_features).astype(np.int32))
        tokens.append(batch.token_index[flat // codes.n_features])
        if progress is not None:
            progress(len(batch.token_index))
    if not features:
        return Firing.from_pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), sae.d_sae)
    return Firing.from_pairs(np.concatenate(features), np.concatenate(tokens), sae.d_sae)


def _batches(corpus: TokenizedCorpus, seqs: np.ndarray, acts: np.ndarray | None, model: ModelAdapter | None,
             batch_tokens: int) -> Iterator[Batch]:
    import torch

    if acts is None:
        yield from stream_from_model(model, corpus, batch_tokens, seqs)
        return
    starts = corpus.seq_starts
    lengths = starts[seqs + 1] - starts[seqs]
    ends = np.cumsum(lengths)
    a = 0
    while a < len(seqs):
        b = max(int(np.searchsorted(ends, (ends[a - 1] if a else 0) + batch_tokens, side="right")), a + 1)
        rows = np.concatenate([np.arange(starts[q], starts[q + 1]) for q in seqs[a:b]])
        seq_id = np.repeat(seqs[a:b], lengths[a:b])
        yield Batch(torch.from_numpy(np.asarray(acts[rows], np.float32)), rows.astype(np.int64), seq_id)
        a = b
