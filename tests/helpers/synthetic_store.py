"""A synthetic atlas store: every schema table filled with plausible data, straight from numpy.

Used by the site tests (small, with hostile corpus text) and by the scale benchmark (100k features).
Everything derives from one seeded generator, so the same arguments give the same store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from atlas.store import MAIN, Store

# Corpus strings that must come out of the site as text, never as markup or script.
EVIL_TOKENS = [
    "<script>alert(1)</script>",
    "</script>",
    "<img src=x onerror=alert(1)>",
    ' "quoted"',
    " 'single'",
    " &amp;",
    "\n",
    " café",
    " 日本語",
    " 😀",
    "\u2028",
    " <!--",
    " {{ 7*7 }}",
]

_WORDS = (
    "time year people way day man thing woman life child world school state family student group "
    "country problem hand part place case week company system program question work government "
    "number night point home water room mother area money story fact month lot right study book "
    "eye job word business issue side kind head house service friend father power hour game line "
    "end member law car city community name president team minute idea kid body information back "
    "parent face others level office door health person art war history party result change "
    "morning reason research girl guy moment air teacher force education river tree stone cloud"
).split()

_SUFFIXES = ["", "s", "ing", "ed", "er", "ly"]


def _vocab(evil_text: bool) -> list[str]:
    """Word-start pieces carry a leading space, like a BPE vocabulary."""
    pieces: list[str] = []
    for w in _WORDS:
        for suf in _SUFFIXES:
            pieces.append(" " + w + suf)
            pieces.append(w + suf)
    pieces += [".", ",", ";", ":", "!", "?", " (", ")", " the", " a", " of", " and", " to", " in"]
    pieces += ["\n", " \n\n", "\t", " 1", " 2", " 1999", " $", "%"]
    if evil_text:
        pieces += EVIL_TOKENS
    return pieces


def _list_column(offsets: np.ndarray, values: np.ndarray) -> pd.Series:
    arr = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values))
    return pd.Series(arr, dtype=pd.ArrowDtype(arr.type))


def _cluster_counts(n_alive: int) -> list[int]:
    k0 = int(min(24, max(2, n_alive // 300)))
    k1 = int(min(max(k0 * 4, 3), max(k0, n_alive // 8)))
    k2 = int(min(k1 * 3, max(k1, n_alive // 4)))
    return [k0, k1, k2]


def make_synthetic_store(
    path: str | Path,
    n_features: int = 400,
    seed: int = 0,
    evil_text: bool = True,
    *,
    has_unembedding: bool = True,
    dead_share: float = 0.04,
    n_top: int = 20,
    n_intervals: int = 10,
    per_interval: int = 5,
    n_random: int = 10,
    window: int = 16,
    hist_bins: int = 40,
    n_neighbours: int = 10,
    fvu: float = 0.12,
    warnings: list[str] | None = None,
    schema: str = MAIN,
) -> Path:
    """Write a complete synthetic atlas to `path` (overwriting it) and return the path.

    With `schema` (another SAE version's), the atlas goes into that schema of an existing file instead."""
    path = Path(path)
    for p in (path, path.with_name(path.name + ".wal")):
        if schema == MAIN and p.exists():
            p.unlink()
    rng = np.random.default_rng(seed)
    vocab = _vocab(evil_text)
    V = len(vocab)
    n = int(n_features)
    n_tokens = 2_000_000

    # ---- features ------------------------------------------------------------------------
    alive = rng.random(n) >= dead_share
    if n > 2:
        alive[[0, 1]] = True  # the hostile-text features below must be alive
    alive_ids = np.flatnonzero(alive)
    n_alive = len(alive_ids)
    density = np.where(alive, 10 ** rng.uniform(-5.5, -1.2, n), 0.0)
    n_fired = np.round(density * n_tokens).astype(np.int64)
    n_fired = np.where(alive, np.maximum(n_fired, 1), 0)
    density = n_fired / n_tokens
    max_act = np.where(alive, rng.uniform(1.0, 40.0, n), 0.0).astype(np.float32)
    mean_act = (max_act * rng.uniform(0.15, 0.45, n)).astype(np.float32)

    # ---- clusters: a 3-level hierarchy laid out as nested blobs -----------------------------
    counts = _cluster_counts(n_alive)
    cl_rows = []
    level_ids: list[np.ndarray] = []
    centres: dict[int, tuple[float, float]] = {}
    parents: dict[int, int] = {}
    next_id = 0
    spread = [9.0, 2.2, 0.7]
    for level, k in enumerate(counts):
        ids = np.arange(next_id, next_id + k)
        next_id += k
        for j, cid in enumerate(ids):
            if level == 0:
                parent, (px, py) = -1, (0.0, 0.0)
            else:
                parent = int(level_ids[level - 1][j % len(level_ids[level - 1])])
                px, py = centres[parent]
            cx, cy = px + rng.normal(0, spread[level]), py + rng.normal(0, spread[level])
            centres[int(cid)] = (cx, cy)
            parents[int(cid)] = parent
        level_ids.append(ids)
    finest = level_ids[-1]
    f_cluster = np.full(n, -1, dtype=np.int64)
    f_cluster[alive_ids] = finest[rng.integers(0, len(finest), n_alive)]
    # Every finest cluster gets at least one member so no cluster is empty.
    f_cluster[alive_ids[: min(len(finest), n_alive)]] = finest[: min(len(finest), n_alive)]
    fx = np.full(n, np.nan, dtype=np.float32)
    fy = np.full(n, np.nan, dtype=np.float32)
    cxy = np.array([centres[int(c)] for c in f_cluster[alive_ids]])
    fx[alive_ids] = cxy[:, 0] + rng.normal(0, 0.25, n_alive)
    fy[alive_ids] = cxy[:, 1] + rng.normal(0, 0.25, n_alive)

    def ancestors(cid: int) -> list[int]:
        chain = [cid]
        while parents[chain[-1]] >= 0:
            chain.append(parents[chain[-1]])
        return chain

    members_rows: list[tuple[int, int]] = []
    chain_of = {int(c): ancestors(int(c)) for c in finest}
    for f in alive_ids:
        for cid in chain_of[int(f_cluster[f])]:
            members_rows.append((cid, int(f)))
    members = pd.DataFrame(members_rows, columns=["cluster_id", "feature"]).sort_values(
        ["cluster_id", "feature"], kind="stable"
    )
    sizes = members.groupby("cluster_id").size()
    for level, ids in enumerate(level_ids):
        for j, cid in enumerate(ids):
            cid = int(cid)
            w1, w2 = _WORDS[(cid * 7) % len(_WORDS)], _WORDS[(cid * 13 + 3) % len(_WORDS)]
            name = f"{w1} / {w2}" if level else f"{w1.upper()} region"
            if evil_text and cid == int(level_ids[-1][0]):
                name = "</script><img src=x onerror=alert(1)> & friends"
            mem = members.feature[members.cluster_id == cid].to_numpy()
            cx = float(np.mean(fx[mem])) if len(mem) else centres[cid][0]
            cy = float(np.mean(fy[mem])) if len(mem) else centres[cid][1]
            cl_rows.append(dict(
                cluster_id=cid, level=level, parent_id=(parents[cid] if parents[cid] >= 0 else None),
                name=name, name_source="synthetic", size=int(sizes.get(cid, 0)),
                coherence_decoder=float(rng.uniform(0.05, 0.6)),
                coherence_coact=float(rng.uniform(0.0, 0.5)), x=cx, y=cy,
            ))
    clusters = pd.DataFrame(cl_rows)
    clusters["parent_id"] = clusters["parent_id"].astype("Int64")

    # ---- labels ----------------------------------------------------------------------------
    w = np.array(_WORDS)
    lab_a = w[rng.integers(0, len(w), n)]
    lab_b = w[rng.integers(0, len(w), n)]
    label = np.char.add(np.char.add(lab_a.astype(str), " "), lab_b.astype(str)).astype(object)
    label = np.array([f"{s} (f{i})" for i, s in enumerate(label)], dtype=object)
    if evil_text and n > 2:
        label[0] = "<script>alert(1)</script> tokens"
        label[1] = 'quotes "x" & \'y\' <img src=x onerror=alert(1)>'
    label[~alive] = None
    label_source = np.where(alive, "explanation", None)
    lab_rows = pd.DataFrame({
        "feature": np.concatenate([alive_ids, alive_ids]),
        "source": ["explanation"] * n_alive + ["top-tokens"] * n_alive,
        "text": np.concatenate([label[alive_ids], np.char.add("tokens:", lab_b[alive_ids].astype(str)).astype(object)]),
        "score": np.concatenate([rng.uniform(0.3, 0.95, n_alive), np.full(n_alive, np.nan)]),
    }).sort_values(["feature", "source"], kind="stable")

    features = pd.DataFrame({
        "feature": np.arange(n), "alive": alive, "n_fired": n_fired, "density": density,
        "max_act": max_act, "mean_act": mean_act,
        "decoder_norm": rng.uniform(0.8, 1.2, n).astype(np.float32),
        "label": label, "label_source": label_source,
        "cluster_id": pd.array(np.where(alive, f_cluster, 0), dtype="Int64"),
        "x": fx, "y": fy,
    })
    features.loc[~alive, "cluster_id"] = pd.NA

    # ---- examples: windows around a focus token ---------------------------------------------
    per_feat = n_top + n_intervals * per_interval + n_random
    L = 2 * window + 1
    R = n_alive * per_feat
    ex_feat = np.repeat(alive_ids, per_feat)
    slot = np.tile(np.arange(per_feat), n_alive)
    kind = np.where(slot < n_top, "top", np.where(slot < n_top + n_intervals * per_interval, "interval", "random"))
    bucket = np.where(kind == "interval", (slot - n_top) // per_interval, 0)
    rank = np.where(kind == "top", slot, np.where(kind == "interval", (slot - n_top) % per_interval, slot - n_top - n_intervals * per_interval))
    fmax = max_act[ex_feat]
    top_val = fmax * (1.0 - 0.02 * rank)
    lo_frac = bucket / n_intervals
    int_val = fmax * (lo_frac + rng.random(R) / n_intervals)
    rnd_val = fmax * np.minimum(rng.exponential(0.15, R), 1.0)
    value = np.where(kind == "top", top_val, np.where(kind == "interval", int_val, rnd_val)).astype(np.float32)
    value = np.where(kind == "random", value * (rng.random(R) > 0.3), value).astype(np.float32)
    tokens = rng.integers(0, V, (R, L)).astype(np.int32)
    acts = np.where(rng.random((R, L)) < 0.15, rng.random((R, L)) * fmax[:, None] * 0.5, 0.0).astype(np.float32)
    acts[:, window] = value
    # ~10% of windows start at the sequence start, so they are shorter and the focus is not centred.
    cut = np.where(rng.random(R) < 0.1, rng.integers(1, window + 1, R), 0)
    if evil_text and n > 2:
        evil_ids = np.array([vocab.index(t) for t in EVIL_TOKENS], dtype=np.int32)
        for f in (0, 1):
            rows = np.flatnonzero(ex_feat == f)[:3]
            tokens[rows, window - len(evil_ids) // 2: window - len(evil_ids) // 2 + len(evil_ids)] = evil_ids
            cut[rows] = 0
    keep = np.arange(L)[None, :] >= cut[:, None]
    lengths = L - cut
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    examples = pd.DataFrame({
        "feature": ex_feat, "kind": kind, "bucket": bucket, "rank": rank,
        "seq": rng.integers(0, 50_000, R), "pos": rng.integers(window, 64, R),
        "value": value, "focus": window - cut,
        "token_ids": _list_column(offsets, tokens[keep]),
        "acts": _list_column(offsets, acts[keep]),
    })

    # ---- intervals and histograms ------------------------------------------------------------
    iv_feat = np.repeat(alive_ids, n_intervals)
    iv_b = np.tile(np.arange(n_intervals), n_alive)
    iv_w = np.exp(-0.5 * iv_b) * rng.uniform(0.5, 1.5, len(iv_b))
    iv_share = iv_w / np.bincount(np.repeat(np.arange(n_alive), n_intervals), iv_w)[np.repeat(np.arange(n_alive), n_intervals)]
    intervals = pd.DataFrame({
        "feature": iv_feat, "bucket": iv_b,
        "lo": (max_act[iv_feat] * iv_b / n_intervals).astype(np.float32),
        "hi": (max_act[iv_feat] * (iv_b + 1) / n_intervals).astype(np.float32),
        "n": np.round(iv_share * n_fired[iv_feat]).astype(np.int64), "share": iv_share,
    })
    h_feat = np.repeat(alive_ids, hist_bins)
    h_b = np.tile(np.arange(hist_bins), n_alive)
    h_count = np.round(n_fired[h_feat] * np.exp(-h_b / 6.0) / 6.0 * rng.uniform(0.6, 1.4, len(h_b))).astype(np.int64)
    histograms = pd.DataFrame({
        "feature": h_feat, "bin": h_b,
        "lo": (max_act[h_feat] * h_b / hist_bins).astype(np.float32),
        "hi": (max_act[h_feat] * (h_b + 1) / hist_bins).astype(np.float32), "count": h_count,
    })

    # ---- neighbours and logits ---------------------------------------------------------------
    frames = []
    for kind_name in ("decoder", "coact"):
        nb_feat = np.repeat(alive_ids, n_neighbours)
        frames.append(pd.DataFrame({
            "feature": nb_feat, "kind": kind_name, "rank": np.tile(np.arange(n_neighbours), n_alive),
            "other": alive_ids[rng.integers(0, n_alive, len(nb_feat))],
            "score": np.sort(rng.uniform(0.1, 0.9, (n_alive, n_neighbours)), axis=1)[:, ::-1].ravel().astype(np.float32),
        }))
    neighbours = pd.concat(frames, ignore_index=True)
    if has_unembedding:
        k = 10
        lg = []
        for sign, s in (("pos", 1.0), ("neg", -1.0)):
            lg.append(pd.DataFrame({
                "feature": np.repeat(alive_ids, k), "sign": sign, "rank": np.tile(np.arange(k), n_alive),
                "token_id": rng.integers(0, V, n_alive * k).astype(np.int32),
                "value": (s * np.sort(rng.uniform(0.2, 3.0, (n_alive, k)), axis=1)[:, ::-1].ravel()).astype(np.float32),
            }))
        logits = pd.concat(lg, ignore_index=True)
    else:
        logits = pd.DataFrame(columns=["feature", "sign", "rank", "token_id", "value"])

    vocab_df = pd.DataFrame({"token_id": np.arange(V, dtype=np.int32), "token": vocab})
    info = dict(
        title="Synthetic atlas <b>&amp;</b>" if evil_text else "Synthetic atlas",
        model="synthetic-gpt (not a real model)", hook="blocks.6.hook_resid_post",
        hook_description="residual stream after block 6", sae_path="/data/saes/synthetic/sae.safetensors",
        sae_hash="0123456789abcdef", sae_format="saelens", sae_convention="W_dec [d_sae, d_in]",
        d_in=512, d_sae=n, corpus="synthetic words" + (" with <script>alert(1)</script>" if evil_text else ""),
        corpus_hash="fedcba9876543210", n_tokens=n_tokens, n_sequences=n_tokens // 64,
        fvu=fvu, l0=31.7, dead_share=float(1 - alive.mean()), recon_tokens=4096,
        warnings=list(warnings or []), has_unembedding=has_unembedding,
        logits_note=None if has_unembedding else "This model has no unembedding (no language-model head), so logit "
        "effects cannot be computed.",
        built_at="2025-01-02T03:04:05Z",
        config={"harvest": {"top_k": n_top, "window": window, "n_intervals": n_intervals}, "seed": seed},
        versions={"feature-atlas": "0.1.0", "duckdb": "2.0.0"},
        stage_times={"harvest": 812.5, "analysis": 64.25, "site": 0.0},
        cluster_basis="blend", basis_scores={"decoder": 0.41, "coact": 0.37, "blend": 0.52},
    )
    with Store(path, schema=schema) as store:
        store.replace_table("vocab", vocab_df)
        store.replace_table("features", features)
        store.replace_table("examples", examples)
        store.replace_table("intervals", intervals)
        store.replace_table("histograms", histograms)
        store.replace_table("neighbours", neighbours)
        store.replace_table("clusters", clusters)
        store.replace_table("cluster_members", members)
        store.replace_table("labels", lab_rows)
        store.replace_table("logits", logits)
        store.replace_table("runs", pd.DataFrame({
            "run_id": [1], "started_at": [pd.Timestamp("2025-01-02 02:00:00")],
            "finished_at": [pd.Timestamp("2025-01-02 03:04:05")], "config_json": ["{}"],
            "config_hash": ["abc"], "atlas_version": ["0.1.0"], "versions_json": ["{}"],
        }))
        store.replace_table("stages", pd.DataFrame({
            "stage": ["harvest", "analysis"], "input_hash": ["h1", "h2"], "seconds": [812.5, 64.25],
            "computed_at": [pd.Timestamp("2025-01-02 03:00:00")] * 2, "details_json": ["{}", "{}"],
        }))
        store.set_info(**info)
    return path


def add_comparison(path: str | Path, rows: list[tuple], previous_labels: dict[int, str], *, title: str,
                   site_path: str | None, schema: str = MAIN) -> Path:
    """Store a comparison with a previous atlas: `rows` as in `version_matches` (kind, a, b, score, cosine,
    weight; -1 for a missing side, None for a missing number), the previous atlas's labels by feature."""
    matches = pd.DataFrame(rows, columns=["kind", "a", "b", "score", "cosine", "weight"]).astype(
        {"kind": str, "a": np.int64, "b": np.int64, "score": np.float64, "cosine": np.float64, "weight": np.float64})
    with Store(path, schema=schema) as store:
        store.replace_table("versions", pd.DataFrame({
            "role": ["previous"], "title": [title], "store_path": ["/data/previous.duckdb"],
            "sae_hash": ["00ff00ff00ff00ff"], "site_path": pd.array([site_path], dtype=object),
            "d_sae": [max(previous_labels, default=-1) + 1],
        }))
        store.replace_table("version_matches", matches)
        store.replace_table("previous_features", pd.DataFrame({
            "feature": np.array(sorted(previous_labels), dtype=np.int32),
            "alive": np.ones(len(previous_labels), dtype=bool),
            "label": [previous_labels[f] for f in sorted(previous_labels)],
        }))
    return path


def list_versions(path: str | Path, listing: list[dict]) -> Path:
    """Record the atlas's SAE versions (main first, as `SaeVersion.as_info` gives them) in every version's facts."""
    with Store(path) as store:
        store.set_info(version_name=listing[0]["name"], atlas_versions=listing)
        for entry in listing[1:]:
            with store.in_schema(entry["schema"]) as view:
                view.set_info(version_name=entry["name"], atlas_versions=listing)
    return path


def add_steering(path: str | Path, features: list[int], prompts: tuple[str, ...] = ("I think that", "My <b>place</b>"),
                 strengths: tuple[float, ...] = (-4.0, 0.0, 2.0, 4.0), new_tokens: int = 6, seed: int = 0,
                 evil_text: bool = True, schema: str = MAIN) -> Path:
    """Store steering previews of `features` as the steering stage writes them: token ids from the store's own
    vocabulary (its hostile tokens among them when it has them), the feature's activations rising with the
    strength, and the `steering` fact."""
    rng = np.random.default_rng(seed)
    with Store(path, schema=schema) as store:
        vocab = store.table("vocab", order_by="token_id")
        feats = store.table("features", order_by="feature").set_index("feature")
        evil = vocab.loc[vocab["token"].isin(EVIL_TOKENS), "token_id"].to_numpy() if evil_text else []
        rows = []
        for f in features:
            vmax = float(feats.at[f, "max_act"])
            for p, prompt in enumerate(prompts):
                for s in strengths:
                    ids = rng.integers(0, len(vocab), new_tokens)
                    if len(evil) and s > 0:
                        ids[: min(len(evil), new_tokens)] = evil[: new_tokens]
                    acts = np.where(rng.random(new_tokens) < 0.2 + 0.15 * max(s, 0), vmax * rng.random(new_tokens), 0)
                    text = "".join(vocab["token"].to_numpy()[ids])
                    rows.append((f, p, prompt, s, abs(s) * 3.5, ids.astype(np.int32), text, acts.astype(np.float32),
                                 bool(s < 0)))
        frame = pd.DataFrame(rows, columns=["feature", "prompt", "prompt_text", "strength", "added_norm", "token_ids",
                                            "text", "acts", "ended"])
        store.replace_table("steering", frame)
        store.set_info(steering={"status": "computed", "note": "synthetic", "prompts": list(prompts),
                                 "strengths": list(strengths), "new_tokens": new_tokens, "n_features": len(features),
                                 "key": "0123456789abcdef"})
    return path
