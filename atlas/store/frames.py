"""Turn computed arrays (harvest, analysis) into the store's tables, whole columns at a time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from atlas.harvest import HarvestResult


def feature_stats(res: HarvestResult, decoder_norm: np.ndarray) -> pd.DataFrame:
    F = res.n_features
    return pd.DataFrame({
        "feature": np.arange(F, dtype=np.int32),
        "alive": res.count > 0,
        "n_fired": res.count.astype(np.int64),
        "density": res.density.astype(np.float64),
        "max_act": np.where(res.count > 0, res.max, np.nan).astype(np.float32),
        "mean_act": res.mean.astype(np.float32),
        "decoder_norm": decoder_norm.astype(np.float32),
    })


def _flatten_examples(kind: str, vals: np.ndarray, index: np.ndarray, windows: np.ndarray, buckets: np.ndarray | None):
    """Rows of (feature, bucket, rank, value, index, window) for every filled slot."""
    F = vals.shape[0]
    W2 = windows.shape[-1]
    v = vals.reshape(F, -1, vals.shape[-1]) if buckets is not None else vals[:, None, :]
    ix = index.reshape(v.shape)
    win = windows.reshape(F, v.shape[1], v.shape[2], W2)
    f, b, r = np.nonzero(ix >= 0)
    return {
        "feature": f.astype(np.int32), "kind": np.full(len(f), kind), "bucket": b.astype(np.int32),
        "rank": r.astype(np.int32), "value": v[f, b, r].astype(np.float32), "index": ix[f, b, r],
        "window": win[f, b, r],
    }


def examples_table(res: HarvestResult, tokens: np.ndarray, seq_starts: np.ndarray, window: int) -> pa.Table:
    """All stored contexts as one Arrow table: token ids and activations trimmed to their sequence."""
    parts = [
        _flatten_examples("top", res.top_vals, res.top_index, res.top_windows, None),
        _flatten_examples("interval", res.interval_vals, res.interval_index, res.interval_windows, np.array([1])),
        _flatten_examples("random", res.random_vals, res.random_index, res.random_windows, None),
    ]
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    g = cols["index"].astype(np.int64)
    seq = np.searchsorted(seq_starts, g, side="right") - 1
    lo = np.maximum(g - window, seq_starts[seq])
    hi = np.minimum(g + window + 1, seq_starts[seq + 1])
    lengths = (hi - lo).astype(np.int64)
    # 64-bit offsets: at ~800k features the windows' elements pass 2**31.
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    # flat positions of every kept window element, without a Python loop over rows
    row = np.repeat(np.arange(len(g)), lengths)
    within = np.arange(offsets[-1]) - offsets[:-1][row]
    flat_tok = tokens[lo[row] + within].astype(np.int32)
    col = (lo[row] + within) - (g[row] - window)
    flat_act = cols["window"][row, col].astype(np.float32)
    flat_act = np.nan_to_num(flat_act, nan=0.0)
    return pa.table({
        "feature": cols["feature"], "kind": cols["kind"], "bucket": cols["bucket"], "rank": cols["rank"],
        "seq": seq.astype(np.int32), "pos": (g - seq_starts[seq]).astype(np.int32),
        "value": cols["value"], "focus": (g - lo).astype(np.int32),
        "token_ids": pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat_tok)),
        "acts": pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat_act)),
    })


def intervals_table(res: HarvestResult) -> pd.DataFrame:
    F, n = res.interval_counts.shape
    f, b = np.nonzero(np.broadcast_to(res.count[:, None] > 0, (F, n)))
    return pd.DataFrame({
        "feature": f.astype(np.int32), "bucket": b.astype(np.int32),
        "lo": res.interval_edges[f, b], "hi": res.interval_edges[f, b + 1],
        "n": res.interval_counts[f, b], "share": res.interval_share[f, b].astype(np.float64),
    })


def histograms_table(res: HarvestResult) -> pd.DataFrame:
    F, B = res.hist_counts.shape
    f, b = np.nonzero(np.broadcast_to(res.count[:, None] > 0, (F, B)))
    return pd.DataFrame({
        "feature": f.astype(np.int32), "bin": b.astype(np.int32),
        "lo": res.hist_edges[f, b], "hi": res.hist_edges[f, b + 1], "count": res.hist_counts[f, b],
    })


def neighbour_rows(kind: str, idx: np.ndarray, score: np.ndarray) -> pd.DataFrame:
    f, r = np.nonzero(idx >= 0)
    return pd.DataFrame({
        "feature": f.astype(np.int32), "kind": kind, "rank": r.astype(np.int32),
        "other": idx[f, r].astype(np.int32), "score": score[f, r].astype(np.float32),
    })


def coact_table(res: HarvestResult) -> pd.DataFrame:
    m = res.coact.tocoo()
    order = np.lexsort((m.col, m.row))
    return pd.DataFrame({"feature": m.row[order].astype(np.int32), "other": m.col[order].astype(np.int32),
                         "count": m.data[order].astype(np.int64)})


def logits_table(effects) -> pd.DataFrame:
    pos_ids, pos_vals, neg_ids, neg_vals = (np.asarray(t) for t in effects)
    frames = []
    for sign, ids, vals in (("pos", pos_ids, pos_vals), ("neg", neg_ids, neg_vals)):
        f, r = np.nonzero(np.ones_like(ids, dtype=bool))
        frames.append(pd.DataFrame({"feature": f.astype(np.int32), "sign": sign, "rank": r.astype(np.int32),
                                    "token_id": ids[f, r].astype(np.int32), "value": vals[f, r].astype(np.float32)}))
    return pd.concat(frames, ignore_index=True)
