"""What every page may need about the whole atlas, read once from the store and shared with workers."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from markupsafe import Markup, escape

from atlas.site.tokens import TokenHtml
from atlas.site.versions import Versions, load_versions
from atlas.store import reads


@dataclass
class ClusterInfo:
    cluster_id: int
    level: int
    parent: int | None
    name: str
    size: int
    coherence_decoder: float | None
    coherence_coact: float | None
    x: float | None
    y: float | None
    children: list[int] = field(default_factory=list)


@dataclass
class Comparison:
    """The stored comparison with the previous atlas: its rows, and each new feature's rows."""

    title: str
    site_path: str | None  # previous site root relative to this one, URL-quoted; None when unknown
    rows: list[tuple[str, int, int, float | None, float | None, float | None]]  # kind, a, b, score, cosine, weight
    by_new: dict[int, list[tuple]]  # this atlas's feature -> its rows
    previous_labels: dict[int, str]
    counts: dict[str, int]

    def previous_label(self, a: int) -> str:
        return self.previous_labels.get(int(a)) or "unlabelled"


def load_comparison(store) -> Comparison | None:
    prev = reads.previous_version(store)
    if prev is None:
        return None
    frame = reads.version_matches(store)
    if not len(frame):
        return None
    rows = [(str(k), int(a), int(b), _none_if_nan(s), _none_if_nan(c), _none_if_nan(w))
            for k, a, b, s, c, w in frame.itertuples(index=False)]
    by_new: dict[int, list[tuple]] = {}
    for r in rows:
        if r[2] >= 0:
            by_new.setdefault(r[2], []).append(r)
    # split and merge rows are one per part: those count the feature that split or merged
    counts = {k: sum(r[0] == k for r in rows) for k in ("matched", "new", "vanished")}
    counts["split"] = len({r[1] for r in rows if r[0] == "split"})
    counts["merge"] = len({r[2] for r in rows if r[0] == "merge"})
    return Comparison(title=str(prev.get("title") or "the previous atlas"), site_path=prev.get("site_path"),
                      rows=rows, by_new=by_new, previous_labels=reads.previous_labels(store), counts=counts)


@dataclass
class SiteModel:
    """Per-feature columns (indexed by feature id), the cluster tree, labels and display vocabulary."""

    info: dict[str, Any]
    n_features: int
    alive: np.ndarray
    n_fired: np.ndarray
    density: np.ndarray
    max_act: np.ndarray
    mean_act: np.ndarray
    label: list[str | None]
    label_source: list[str | None]
    cluster_id: np.ndarray  # finest cluster, -1 for none
    x: np.ndarray
    y: np.ndarray
    clusters: dict[int, ClusterInfo]
    members: dict[int, list[int]]  # cluster -> features, all levels
    extra_labels: dict[int, list[tuple[str, str, float | None]]]  # feature -> (source, text, score)
    top_tokens: dict[int, list[int]]
    vocab: dict[int, str]
    tokens: TokenHtml
    alive_ids: np.ndarray
    snippets: dict[int, tuple[str, str, str]]  # feature -> (before, focus token, after) of its top example
    comparison: Comparison | None = None
    versions: Versions | None = None  # the atlas's other SAE versions; None for an atlas of one SAE

    @property
    def has_unembedding(self) -> bool:
        return bool(self.info.get("has_unembedding", True))

    @property
    def logits_note(self) -> str:
        """Why the feature pages show no logit effects, as the build recorded it; '' when they show them."""
        if self.has_unembedding:
            return ""
        return str(self.info.get("logits_note") or "Logit effects were not computed for this atlas.")

    @functools.cached_property
    def n_levels(self) -> int:
        return 1 + max((c.level for c in self.clusters.values()), default=-1)

    def cluster_chain(self, cid: int | None) -> list[ClusterInfo]:
        """The cluster and its ancestors, coarsest first."""
        chain: list[ClusterInfo] = []
        seen: set[int] = set()
        while cid is not None and cid in self.clusters and cid not in seen:
            seen.add(cid)
            chain.append(self.clusters[cid])
            cid = self.clusters[cid].parent
        return chain[::-1]

    def feature_label(self, n: int) -> str:
        lab = self.label[n] if 0 <= n < self.n_features else None
        return lab if lab else ("dead feature" if 0 <= n < self.n_features and not self.alive[n] else "unlabelled")

    # Every feature page lists 20 neighbours: their cells are escaped once per feature, not once per mention.
    @functools.cached_property
    def label_html(self) -> list[Markup]:
        return [escape(self.feature_label(n)) for n in range(self.n_features)]

    @functools.cached_property
    def snippet_html(self) -> dict[int, Markup]:
        """feature -> its top example cut short, escaped, with the focus token in <b> and ↵ for newlines."""
        return {f: Markup("{}<b>{}</b>{}").format(*(p.replace("\n", "↵") for p in parts))
                for f, parts in self.snippets.items()}


def _none_if_nan(v: Any) -> Any:
    if v is None:
        return None
    try:
        if isinstance(v, float) and math.isnan(v):
            return None
    except TypeError:
        pass
    try:
        import pandas as pd

        if v is pd.NA:
            return None
    except ImportError:  # pragma: no cover
        pass
    return v


def read_site_model(store) -> SiteModel:
    """What every page may need about the whole atlas, read from the store once."""
    info = reads.info(store)
    feats = reads.features(store)
    n = int(feats["feature"].max()) + 1 if len(feats) else int(info.get("d_sae") or 0)
    n = max(n, int(info.get("d_sae") or 0))

    def column(name, dtype, fill):
        out = np.full(n, fill, dtype=dtype)
        vals = feats[name].to_numpy(dtype=dtype, na_value=fill)
        out[feats["feature"].to_numpy()] = vals
        return out

    alive = column("alive", bool, False)
    label = [None] * n
    source = [None] * n
    for f, lab, src in zip(feats["feature"].tolist(), feats["label"].tolist(), feats["label_source"].tolist()):
        label[f] = _none_if_nan(lab)
        source[f] = _none_if_nan(src)

    cl = reads.clusters(store)
    clusters: dict[int, ClusterInfo] = {}
    for row in cl.itertuples(index=False):
        parent = _none_if_nan(row.parent_id)
        clusters[int(row.cluster_id)] = ClusterInfo(
            cluster_id=int(row.cluster_id), level=int(row.level),
            parent=int(parent) if parent is not None else None,
            name=_none_if_nan(row.name) or f"cluster {int(row.cluster_id)}",
            size=int(_none_if_nan(row.size) or 0),
            coherence_decoder=_none_if_nan(row.coherence_decoder),
            coherence_coact=_none_if_nan(row.coherence_coact),
            x=_none_if_nan(row.x), y=_none_if_nan(row.y),
        )
    for c in clusters.values():
        if c.parent is not None and c.parent in clusters:
            clusters[c.parent].children.append(c.cluster_id)
    for c in clusters.values():
        c.children.sort()

    cluster_id = column("cluster_id", np.float64, np.nan)
    cluster_id = np.where(np.isnan(cluster_id), -1, cluster_id).astype(np.int64)
    members: dict[int, list[int]] = {}
    mem = reads.cluster_members(store)
    for cid, f in zip(mem["cluster_id"].tolist(), mem["feature"].tolist()):
        members.setdefault(int(cid), []).append(int(f))
    if not members:
        # Older stores: derive membership from each feature's finest cluster and its ancestors.
        for f in np.flatnonzero(cluster_id >= 0).tolist():
            cid = int(cluster_id[f])
            while cid is not None and cid in clusters:
                members.setdefault(cid, []).append(f)
                cid = clusters[cid].parent

    extra: dict[int, list[tuple[str, str, float | None]]] = {}
    labs = reads.labels(store)
    for f, src, text, score in zip(labs["feature"].tolist(), labs["source"].tolist(), labs["text"].tolist(), labs["score"].tolist()):
        extra.setdefault(int(f), []).append((_none_if_nan(src) or "unknown", str(text), _none_if_nan(score)))

    top: dict[int, list[int]] = {}
    tt = reads.top_tokens(store)
    for f, t in zip(tt["feature"].tolist(), tt["token_id"].tolist()):
        top.setdefault(int(f), []).append(int(t))

    voc = reads.vocab(store)
    snippets: dict[int, tuple[str, str, str]] = {}
    sn = reads.top_snippets(store)
    for f, focus, ids in zip(sn["feature"].tolist(), sn["focus"].tolist(), sn["token_ids"].tolist()):
        text = [voc.get(int(t), "") for t in ids]
        snippets[int(f)] = ("".join(text[:focus]), text[focus] if focus < len(text) else "", "".join(text[focus + 1:]))
    return SiteModel(
        info=info, n_features=n, alive=alive,
        n_fired=column("n_fired", np.float64, 0.0), density=column("density", np.float64, 0.0),
        max_act=column("max_act", np.float64, 0.0), mean_act=column("mean_act", np.float64, 0.0),
        label=label, label_source=source, cluster_id=cluster_id,
        x=column("x", np.float64, np.nan), y=column("y", np.float64, np.nan),
        clusters=clusters, members=members, extra_labels=extra, top_tokens=top,
        vocab=voc, tokens=TokenHtml(voc), alive_ids=np.flatnonzero(alive), snippets=snippets,
        comparison=load_comparison(store), versions=load_versions(store),
    )
