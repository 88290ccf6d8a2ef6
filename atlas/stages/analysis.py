"""The analysis stage: read the harvest from the store, run the pure analysis functions, write their tables."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from atlas import analysis as an
from atlas.analysis import explanations
from atlas.config import Config
from atlas.corpus import files_hash
from atlas.stages.run import Keyed, Outcome, StoreLedger, VersionRun, run_keyed
from atlas.store import Store, reads, without_durations
from atlas.store.frames import neighbour_rows

if TYPE_CHECKING:
    from atlas.saes import SaeWeights

AUTO_SOURCE = "keyword"  # words of the top activations: the baseline every explainer is measured against


def analysis(run: VersionRun, sae: SaeWeights, harvest_key: str) -> str:
    """Analyse the harvested features of `sae` in the version's store; returns the stage's key."""
    cfg = run.cfg
    labels_file = cfg.resolve(cfg.analysis.labels_file) if cfg.analysis.labels_file else None

    def compute(key: str) -> Outcome[None]:
        note, timings = run_analysis(run.store, sae.W_dec.float().numpy(), cfg, labels_file, run.report.log)
        return Outcome(note=note, details=timings)

    return run_keyed(Keyed(
        "analysis",
        inputs={"harvest": harvest_key, "sae": sae.content_hash(), "settings": cfg.section_dict("analysis"),
                "seed": cfg.atlas.seed,
                "labels": files_hash([labels_file]) if labels_file and labels_file.is_file() else ""},
        ledger=StoreLedger(run.store),
        compute=compute,
    ), run.report).key


def _examples_by_feature(store: Store, n_features: int, kinds: tuple[str, ...]) -> dict[str, list[list]]:
    """Per kind, each feature's stored examples as (token strings, focus, value), read in one pass."""
    lookup = reads.vocab(store)
    ex = store.examples_of_kinds(kinds)
    out = {k: [[] for _ in range(n_features)] for k in kinds}
    for f, kind, ids, focus, value in zip(ex["feature"].to_numpy(), ex["kind"], ex["token_ids"],
                                          ex["focus"].to_numpy(), ex["value"].to_numpy()):
        out[kind][int(f)].append(([lookup.get(int(t), "") for t in ids], int(focus), float(value)))
    return out


def _coact_matrix(store: Store, n: int) -> sp.csr_matrix | None:
    c = store.table("coactivation")
    if not len(c):
        return None
    m = sp.csr_matrix((c["count"].to_numpy(np.float64), (c["feature"].to_numpy(), c["other"].to_numpy())), shape=(n, n))
    return sp.csr_matrix(m.maximum(m.T))  # top partners kept per row: symmetrise what either side kept


def import_explanations(path: Path) -> pd.DataFrame:
    """Explanations from a Neuronpedia export or a delphi run, told apart by their layout."""
    from atlas.errors import ConfigError

    if not path.exists():
        raise ConfigError(f"[analysis] explanations: {path} does not exist")
    names = {p.name for p in path.rglob("*")} if path.is_dir() else {path.name}
    if any(n.startswith("batch-") for n in names) or path.name.endswith((".jsonl", ".jsonl.gz")):
        return explanations.import_neuronpedia(path)
    return explanations.import_delphi(path)


def run_analysis(store: Store, W_dec: np.ndarray, cfg: Config, labels_file: Path | None, log=print) -> tuple[str, dict]:
    """Neighbours, labels, basis choice, hierarchy with names and coherence, layout; returns (note, timings)."""
    a = cfg.analysis
    seed = cfg.atlas.seed
    timings: dict[str, float] = {}
    feats = store.table("features", order_by="feature")
    F = len(feats)
    alive = feats["alive"].to_numpy(bool)
    rows = np.flatnonzero(alive)

    t = time.perf_counter()
    idx, sim = an.decoder_neighbours(W_dec, k=a.neighbours, exact_up_to=a.exact_neighbours_up_to)
    store.replace_rows("neighbours", neighbour_rows("decoder", np.asarray(idx), np.asarray(sim)), kind="decoder")
    timings["neighbours_s"] = time.perf_counter() - t

    t = time.perf_counter()
    by_kind = _examples_by_feature(store, F, kinds=("interval", "top"))
    auto = an.feature_labels(by_kind["top"])
    sampled = [inter + top for inter, top in zip(by_kind["interval"], by_kind["top"])]
    docs = an.context_docs(sampled)  # words around the activations: what the context basis reads
    # Names read only the words a feature fires on: the words around them are mostly the corpus's
    # boilerplate ("genus", "used", "having" in WordNet glosses) and swamped names measured on the demo.
    focus_docs = an.context_docs(sampled, radius=0)
    timings["labels_s"] = time.perf_counter() - t

    coact = _coact_matrix(store, F)
    t = time.perf_counter()
    scores: dict[str, float] = {}
    if a.cluster_basis == "auto":
        choice = an.choose_basis(W_dec, alive, coact, docs, levels=a.cluster_levels, seed=seed)
        basis, hierarchy, scores = choice.best, choice.hierarchies[choice.best], choice.scores
        vectors = an.feature_vectors(basis, W_dec, alive, coact, docs, seed)
    else:
        basis = a.cluster_basis
        vectors = an.feature_vectors(basis, W_dec, alive, coact, docs, seed)
        hierarchy = an.build_hierarchy(vectors, a.cluster_levels, seed)
    timings["clusters_s"] = time.perf_counter() - t

    t = time.perf_counter()
    xy, umap_t = an.umap_layout(vectors, seed=seed, n_neighbors=a.umap_neighbors, min_dist=a.umap_min_dist,
                                sample_above=a.umap_sample_above)
    timings.update({"umap_compile_s": umap_t.get("compile_s", 0.0), "umap_fit_s": umap_t.get("fit_s", 0.0)})
    timings["layout_s"] = time.perf_counter() - t

    t = time.perf_counter()
    names = an.hierarchy_names(hierarchy, [focus_docs[r] for r in rows])
    feature_over, cluster_over = explanations.load_overrides(labels_file) if labels_file else ({}, {})
    resolved, unused = explanations.resolve_cluster_overrides(cluster_over, rows, hierarchy)
    if unused:
        log(f"  note: {len(unused)} cluster name override(s) matched no cluster: {', '.join(map(str, unused[:5]))}")

    table = hierarchy.table()
    offsets = hierarchy.offsets()
    n_clusters = len(table["cluster_id"])
    name_col, source_col = [], []
    for lv in range(hierarchy.n_levels):
        for c in range(len(hierarchy.parents[lv])):
            if (lv, c) in resolved:
                name_col.append(resolved[(lv, c)])
                source_col.append("user")
            else:
                name_col.append(names[lv][c])
                source_col.append("auto: c-TF-IDF of top contexts")
    member_cluster, member_row = hierarchy.members()
    member_feature = rows[member_row]
    coh_dec, coh_co, cx, cy = (np.full(n_clusters, np.nan, np.float32) for _ in range(4))
    order = np.argsort(member_cluster, kind="stable")
    bounds = np.searchsorted(member_cluster[order], np.arange(n_clusters + 1))
    for cid in range(n_clusters):
        members_rows = member_row[order[bounds[cid]:bounds[cid + 1]]]
        coh_dec[cid], coh_co[cid] = an.coherence(rows[members_rows], W_dec, coact, seed=seed)
        cx[cid], cy[cid] = xy[members_rows].mean(axis=0)
    clusters = pd.DataFrame({
        "cluster_id": table["cluster_id"].astype(np.int32), "level": table["level"].astype(np.int32),
        "parent_id": table["parent_id"].astype(np.int32), "name": name_col, "name_source": source_col,
        "size": table["size"].astype(np.int32), "coherence_decoder": coh_dec, "coherence_coact": coh_co,
        "x": cx, "y": cy,
    })
    store.replace_table("clusters", clusters)
    store.replace_table("cluster_members", pd.DataFrame({"cluster_id": member_cluster.astype(np.int32),
                                                         "feature": member_feature.astype(np.int32)}))

    finest = np.full(F, -1, np.int64)
    finest[rows] = hierarchy.global_labels(hierarchy.n_levels - 1)
    label = np.array(auto, dtype=object)
    source = np.full(F, AUTO_SOURCE, dtype=object)
    for f, text in feature_over.items():
        if 0 <= f < F:
            label[f], source[f] = text, "user"
    label[~alive] = "dead feature"
    source[~alive] = "none"
    x = np.full(F, np.nan, np.float32)
    y = np.full(F, np.nan, np.float32)
    x[rows], y[rows] = xy[:, 0], xy[:, 1]
    feats = feats.assign(label=label, label_source=source, cluster_id=np.where(finest >= 0, finest, pd.NA),
                         x=x, y=y)
    feats["cluster_id"] = feats["cluster_id"].astype("Int32")
    store.replace_table("features", feats)
    labels = pd.DataFrame({"feature": rows.astype(np.int32), "source": AUTO_SOURCE,
                           "text": [auto[r] for r in rows], "score": np.nan})
    extra = [pd.DataFrame({"feature": np.array(list(feature_over), np.int32), "source": "user",
                           "text": list(feature_over.values()), "score": np.nan})] if feature_over else []
    for ref in a.explanations:
        imported = import_explanations(cfg.resolve(ref))
        imported = imported[(imported["feature"] >= 0) & (imported["feature"] < F)]
        log(f"  imported {len(imported):,} explanations from {ref}")
        extra.append(imported.astype({"feature": np.int32}))
    every = pd.concat([labels, *extra], ignore_index=True)
    store.replace_table("labels", every)
    # Scores imported explanations came with, kept apart: the explain stage rescores every label.
    own = every[every["score"].notna()]
    store.replace_table("label_scores", pd.DataFrame({"feature": own["feature"], "source": own["source"],
                                                      "scorer": "imported", "score": own["score"], "n_pos": 0,
                                                      "n_neg": 0}))
    timings["names_s"] = time.perf_counter() - t

    store.set_info(cluster_basis=basis, basis_scores={k: round(v, 4) for k, v in scores.items()},
                   cluster_levels=[len(p) for p in hierarchy.parents], umap_timings=without_durations(umap_t))
    measured = f" (scores: {', '.join(f'{k} {v:.2f}' for k, v in scores.items())})" if scores else ""
    note = (f"basis {basis}{measured}; {', '.join(str(len(p)) for p in hierarchy.parents)} clusters per level; "
            f"UMAP compile {umap_t.get('compile_s', 0):.0f} s + fit {umap_t.get('fit_s', 0):.0f} s")
    return note, {k: round(v, 3) for k, v in timings.items()}
