"""Reads and writes of what features mean: the examples the explain stage reads, the explanations with their
scores, the explanation each page shows, and the sentence embeddings search ranks by."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from atlas.store import Store

_KIND_ORDER = "CASE kind WHEN 'top' THEN 0 WHEN 'interval' THEN 1 ELSE 2 END"


@dataclass(frozen=True)
class ExplainExamples:
    """Every stored example of the live features, by feature, then top, interval (highest bucket first), random.

    Token ids and activations are flat: row i's window is token_ids[offsets[i]:offsets[i + 1]]."""

    feature: np.ndarray
    kind: np.ndarray
    rank: np.ndarray
    seq: np.ndarray
    pos: np.ndarray
    value: np.ndarray
    focus: np.ndarray
    offsets: np.ndarray
    token_ids: np.ndarray
    acts: np.ndarray

    def window(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.token_ids[a:b], self.acts[a:b]

    def __len__(self) -> int:
        return len(self.feature)


def explain_examples(store: Store) -> ExplainExamples:
    table = store.con.sql(
        f"""
        SELECT e.feature, e.kind, coalesce(e.rank, 0) AS rank, e.seq, e.pos, e.value, coalesce(e.focus, 0) AS focus,
               e.token_ids, e.acts
        FROM examples e JOIN features f USING (feature) WHERE f.alive
        ORDER BY e.feature, {_KIND_ORDER.replace('kind', 'e.kind')}, e.bucket DESC, e.rank, e.value DESC
        """).to_arrow_table()
    ids = table.column("token_ids").combine_chunks().fill_null(pa.scalar([], type=pa.list_(pa.int32())))
    acts = table.column("acts").combine_chunks().fill_null(pa.scalar([], type=pa.list_(pa.float32())))
    offsets = np.asarray(ids.offsets).astype(np.int64)
    offsets -= offsets[0] if len(offsets) else 0
    n = len(table)
    token_ids = ids.values.to_numpy(zero_copy_only=False).astype(np.int64)[:offsets[-1] if n else 0]
    act_values = np.nan_to_num(acts.values.to_numpy(zero_copy_only=False).astype(np.float32))
    if len(act_values) != len(token_ids):
        raise ValueError(f"{store.path}: an example's token and activation lists differ in length; rebuild the harvest")

    def col(name, dtype):
        return table.column(name).to_numpy(zero_copy_only=False).astype(dtype)

    return ExplainExamples(col("feature", np.int64), np.asarray(table.column("kind").to_pylist(), dtype=object),
                           col("rank", np.int64), col("seq", np.int64), col("pos", np.int64), col("value", np.float32),
                           col("focus", np.int64), offsets, token_ids, act_values)


def decoder_neighbour_lists(store: Store, n_features: int, k: int) -> list[np.ndarray]:
    """Each feature's `k` nearest features by decoder cosine."""
    rows = store.query("SELECT feature, other FROM neighbours WHERE kind = 'decoder' AND rank < ? "
                       "ORDER BY feature, rank", [int(k)])
    out = [np.zeros(0, np.int64) for _ in range(n_features)]
    for f, group in rows.groupby("feature"):
        if 0 <= int(f) < n_features:
            out[int(f)] = group["other"].to_numpy(np.int64)
    return out


def logit_tokens(store: Store, k: int = 8) -> dict[int, tuple[list[int], list[int]]]:
    """Each feature's most promoted and most suppressed token ids (causal models only)."""
    rows = store.query("SELECT feature, sign, token_id FROM logits WHERE rank < ? ORDER BY feature, sign, rank",
                       [int(k)])
    out: dict[int, tuple[list[int], list[int]]] = {}
    for (f, sign), group in rows.groupby(["feature", "sign"]):
        pos, neg = out.setdefault(int(f), ([], []))
        (pos if sign == "pos" else neg).extend(group["token_id"].astype(int).tolist())
    return out


def labels_of_sources(store: Store) -> pd.DataFrame:
    """Every label row as written by the stages before explaining (feature, source, text)."""
    return store.query("SELECT feature, source, text FROM labels WHERE text IS NOT NULL ORDER BY feature, source")


def write_explanations(store: Store, labels: pd.DataFrame, scores: pd.DataFrame, shown: pd.DataFrame) -> None:
    """Replace every label with its score, every score by scorer, and the explanation each page shows."""
    store.replace_table("labels", labels[["feature", "source", "text", "score"]])
    store.replace_table("label_scores", scores[["feature", "source", "scorer", "score", "n_pos", "n_neg"]])
    store.replace_table("feature_explanations", shown[["feature", "text", "source", "score", "scorer"]])


def write_embeddings(store: Store, kind: str, items: np.ndarray, vectors: np.ndarray) -> None:
    """Replace the embeddings of one kind: a unit float32 vector per item."""
    vectors = np.ascontiguousarray(vectors, np.float32)
    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    offsets = pa.array(np.arange(len(items) + 1, dtype=np.int32) * dim)
    frame = pa.table({"kind": pa.array([kind] * len(items), pa.string()),
                      "item": pa.array(np.asarray(items, np.int32)),
                      "vector": pa.ListArray.from_arrays(offsets, flat)})
    store.replace_rows("embeddings", frame, kind=kind)


def embeddings(store: Store, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(items, vectors [n, d] float32) of one kind of embedding, by item."""
    table = store.con.sql("SELECT item, vector FROM embeddings WHERE kind = ? ORDER BY item",
                          params=[kind]).to_arrow_table()
    items = table.column("item").to_numpy(zero_copy_only=False).astype(np.int64)
    if not len(items):
        return items, np.zeros((0, 0), np.float32)
    vec = table.column("vector").combine_chunks()
    values = vec.values.to_numpy(zero_copy_only=False).astype(np.float32)
    return items, values.reshape(len(items), -1)


def shown_explanations(store: Store) -> pd.DataFrame:
    """(feature, text, source, score, scorer) of the explanation each feature's page shows."""
    return store.query("SELECT feature, text, source, score, scorer FROM feature_explanations ORDER BY feature")
