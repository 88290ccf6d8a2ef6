"""Whole-table reads for exports: every row of a per-feature table, in feature order, as one frame."""

from __future__ import annotations

import pandas as pd

from atlas.store import Store


def decoder_neighbours(store: Store) -> pd.DataFrame:
    """(feature, other, score) of the decoder-cosine neighbours, each feature's nearest first."""
    return store.query("SELECT feature, other, score FROM neighbours WHERE kind = 'decoder' ORDER BY feature, rank")


def logit_effects(store: Store) -> pd.DataFrame:
    """(feature, sign, token_id, value) of every logit row, by feature, then sign, then rank."""
    return store.query("SELECT feature, sign, token_id, value FROM logits ORDER BY feature, sign, rank")


def histogram_bins(store: Store) -> pd.DataFrame:
    """(feature, lo, hi, count) of every histogram bin, in bin order."""
    return store.query("SELECT feature, lo, hi, count FROM histograms ORDER BY feature, bin")


def example_windows(store: Store) -> pd.DataFrame:
    """(feature, kind, bucket, rank, token_ids, acts, focus, value) of every stored example."""
    return store.query("SELECT feature, kind, bucket, rank, token_ids, acts, focus, value FROM examples "
                       "ORDER BY feature, kind, bucket, rank")
