"""Read-side queries the site needs: whole small tables once, large per-feature tables by feature range.

Everything comes back sorted, so rendering is deterministic whatever order DuckDB scans in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from atlas.store import MAIN, Store

# Examples are shown top first, then intervals from the highest bucket down, then random samples.
_KIND_ORDER = "CASE kind WHEN 'top' THEN 0 WHEN 'interval' THEN 1 ELSE 2 END"


def open_for_reading(path: str | Path, schema: str = MAIN) -> Store:
    """A read-only store (seen through one version's schema); several processes may hold one at once."""
    return Store(path, read_only=True, schema=schema)


def info(store: Store) -> dict[str, Any]:
    return store.info()


def vocab(store: Store) -> dict[int, str]:
    rows = store.con.execute("SELECT token_id, token FROM vocab ORDER BY token_id").fetchall()
    return {int(t): (s if s is not None else "") for t, s in rows}


def features(store: Store) -> pd.DataFrame:
    return store.query(
        "SELECT feature, alive, n_fired, density, max_act, mean_act, label, label_source, "
        "cluster_id, x, y FROM features ORDER BY feature"
    )


def clusters(store: Store) -> pd.DataFrame:
    return store.query(
        "SELECT cluster_id, level, parent_id, name, size, coherence_decoder, coherence_coact, x, y "
        "FROM clusters ORDER BY level, cluster_id"
    )


def cluster_members(store: Store) -> pd.DataFrame:
    return store.query("SELECT cluster_id, feature FROM cluster_members ORDER BY cluster_id, feature")


def labels(store: Store) -> pd.DataFrame:
    return store.query(
        "SELECT feature, source, text, score FROM labels WHERE text IS NOT NULL "
        "ORDER BY feature, score DESC NULLS LAST, source, text"
    )


def top_tokens(store: Store, per_feature: int = 3) -> pd.DataFrame:
    """The tokens most often at the focus of each feature's top examples (for search)."""
    return store.query(
        f"""
        WITH t AS (
            SELECT feature, token_ids[focus + 1] AS token_id, count(*) AS n
            FROM examples WHERE kind = 'top' AND focus IS NOT NULL
            GROUP BY feature, token_id
        ), r AS (
            SELECT *, row_number() OVER (PARTITION BY feature ORDER BY n DESC, token_id) AS k FROM t
        )
        SELECT feature, token_id FROM r WHERE k <= {int(per_feature)} AND token_id IS NOT NULL
        ORDER BY feature, k
        """
    )


def top_snippets(store: Store, radius: int = 3) -> pd.DataFrame:
    """Each feature's strongest example, cut to `radius` tokens around its focus (for neighbour lists)."""
    r = int(radius)
    return store.query(
        f"""
        SELECT feature, focus - greatest(focus - {r}, 0) AS focus,
               token_ids[greatest(focus - {r}, 0) + 1 : focus + {r} + 1] AS token_ids
        FROM examples WHERE kind = 'top' AND rank = 0 ORDER BY feature
        """
    )


@dataclass
class ExampleBlock:
    """Examples of a feature range as flat arrays: row i's tokens are flat[offsets[i]:offsets[i+1]]."""

    feature: np.ndarray
    kind: list[str]
    bucket: np.ndarray
    rank: np.ndarray
    value: np.ndarray
    focus: np.ndarray
    offsets: np.ndarray
    token_ids: np.ndarray  # int64, -1 where the store holds NULL
    acts: np.ndarray  # float32, NaN where the store holds NULL

    def rows(self, feature: int) -> range:
        lo = int(np.searchsorted(self.feature, feature, "left"))
        hi = int(np.searchsorted(self.feature, feature, "right"))
        return range(lo, hi)


def _flat_list(column, dtype, fill) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow as pa

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) == 0:
        return np.zeros(1, dtype=np.int64), np.zeros(0, dtype=dtype)
    # NULL lists count as empty; offsets are relative to the flattened values.
    arr = arr.fill_null(pa.scalar([], type=arr.type))
    offsets = np.asarray(arr.offsets).astype(np.int64)
    values = arr.values.fill_null(fill).to_numpy(zero_copy_only=False).astype(dtype)
    offsets = offsets - offsets[0]
    return offsets, values[: offsets[-1]]


def examples(store: Store, lo: int, hi: int) -> ExampleBlock:
    table = store.con.sql(
        f"""
        SELECT feature, kind, coalesce(bucket, 0) AS bucket, coalesce(rank, 0) AS rank, value,
               coalesce(focus, 0) AS focus, token_ids, acts
        FROM examples WHERE feature >= ? AND feature < ?
        ORDER BY feature, {_KIND_ORDER}, bucket DESC, rank, value DESC
        """,
        params=[int(lo), int(hi)],
    ).to_arrow_table()
    offsets, tokens = _flat_list(table.column("token_ids"), np.int64, -1)
    offsets2, acts = _flat_list(table.column("acts"), np.float32, np.nan)
    if not np.array_equal(offsets, offsets2):
        # A row whose acts and token lists differ in length is shown up to the shorter one.
        n = len(offsets) - 1
        lengths = np.minimum(np.diff(offsets), np.diff(offsets2))
        t_parts = [tokens[offsets[i]: offsets[i] + lengths[i]] for i in range(n)]
        a_parts = [acts[offsets2[i]: offsets2[i] + lengths[i]] for i in range(n)]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        tokens = np.concatenate(t_parts) if t_parts else tokens[:0]
        acts = np.concatenate(a_parts) if a_parts else acts[:0]
    return ExampleBlock(
        feature=table.column("feature").to_numpy(),
        kind=table.column("kind").to_pylist(),
        bucket=table.column("bucket").to_numpy(),
        rank=table.column("rank").to_numpy(),
        value=table.column("value").to_numpy(zero_copy_only=False).astype(np.float64),
        focus=table.column("focus").to_numpy(),
        offsets=offsets,
        token_ids=tokens,
        acts=acts,
    )


def _grouped(store: Store, sql: str, lo: int, hi: int) -> dict[int, list[tuple]]:
    out: dict[int, list[tuple]] = {}
    for row in store.con.execute(sql, [int(lo), int(hi)]).fetchall():
        out.setdefault(int(row[0]), []).append(row[1:])
    return out


def intervals(store: Store, lo: int, hi: int) -> dict[int, list[tuple]]:
    """feature -> [(bucket, lo, hi, n, share)] from the highest bucket down."""
    return _grouped(
        store,
        "SELECT feature, bucket, lo, hi, n, share FROM intervals WHERE feature >= ? AND feature < ? "
        "ORDER BY feature, bucket DESC",
        lo, hi,
    )


def histograms(store: Store, lo: int, hi: int) -> dict[int, list[tuple]]:
    """feature -> [(bin, lo, hi, count)] in bin order."""
    return _grouped(
        store,
        "SELECT feature, bin, lo, hi, count FROM histograms WHERE feature >= ? AND feature < ? "
        "ORDER BY feature, bin",
        lo, hi,
    )


def neighbours(store: Store, lo: int, hi: int) -> dict[int, list[tuple]]:
    """feature -> [(kind, rank, other, score)] by kind then rank."""
    return _grouped(
        store,
        "SELECT feature, kind, rank, other, score FROM neighbours WHERE feature >= ? AND feature < ? "
        "ORDER BY feature, kind, rank, other",
        lo, hi,
    )


def logits(store: Store, lo: int, hi: int) -> dict[int, list[tuple]]:
    """feature -> [(sign, rank, token_id, value)] by sign then rank."""
    return _grouped(
        store,
        "SELECT feature, sign, rank, token_id, value FROM logits WHERE feature >= ? AND feature < ? "
        "ORDER BY feature, sign DESC, rank, token_id",
        lo, hi,
    )


def _has_table(store: Store, name: str) -> bool:
    # Stores built before a table existed are opened read-only, so their schema is never upgraded.
    return bool(store.con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ? AND table_schema = current_schema()",
        [name]).fetchall()[0][0])


def previous_version(store: Store) -> dict[str, Any] | None:
    """The atlas this one is compared with (title, store_path, sae_hash, site_path, d_sae), or None."""
    if not _has_table(store, "versions"):
        return None
    rows = store.query("SELECT title, store_path, sae_hash, site_path, d_sae FROM versions "
                       "WHERE role = 'previous' LIMIT 1")
    if not len(rows):
        return None
    row = rows.iloc[0].to_dict()
    return {k: (None if pd.isna(v) else v) for k, v in row.items()}


def version_matches(store: Store) -> pd.DataFrame:
    """Every comparison row, in a stable order: kind, then previous and new feature."""
    if not _has_table(store, "version_matches"):
        return pd.DataFrame(columns=["kind", "a", "b", "score", "cosine", "weight"])
    return store.query("SELECT kind, a, b, score, cosine, weight FROM version_matches ORDER BY kind, a, b")


def previous_labels(store: Store) -> dict[int, str]:
    if not _has_table(store, "previous_features"):
        return {}
    rows = store.con.execute("SELECT feature, label FROM previous_features ORDER BY feature").fetchall()
    return {int(f): (lab if lab is not None else "") for f, lab in rows}


def steering(store: Store, lo: int, hi: int) -> dict[int, list[tuple]]:
    """feature -> [(prompt, prompt_text, strength, added_norm, token_ids, acts, ended)] by prompt, then strength."""
    if not _has_table(store, "steering"):
        return {}
    return _grouped(
        store,
        "SELECT feature, prompt, prompt_text, strength, added_norm, token_ids, acts, ended FROM steering "
        "WHERE feature >= ? AND feature < ? ORDER BY feature, prompt, strength",
        lo, hi,
    )
