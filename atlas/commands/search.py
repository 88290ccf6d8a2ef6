"""`atlas search`: find features by label, explanation, top token or cluster name."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from atlas.site.urls import SiteUrls
from atlas.store import Store
from atlas.store import reads


@dataclass
class Hit:
    """One feature that matches a query: its score, label, the fields that matched and its page."""

    feature: int
    score: float
    label: str
    why: str
    page: str


def search(store: Store, query: str, limit: int = 20) -> list[Hit]:
    """Features whose label, explanations, top tokens or cluster names contain the query's words."""
    words = [w for w in re.findall(r"\w+", query.lower()) if w]
    if not words:
        return []
    feats = reads.features(store).set_index("feature")
    vocab = reads.vocab(store)
    fields: dict[int, list[tuple[str, str, float]]] = {}

    def add(f: int, kind: str, text: str, weight: float) -> None:
        if isinstance(text, str) and text:
            fields.setdefault(int(f), []).append((kind, text.lower(), weight))

    for f, label in feats["label"].items():
        add(f, "label", label, 3.0)
    for row in reads.labels(store).itertuples():
        add(row.feature, f"explanation ({row.source})", row.text, 2.0)
    for row in reads.top_tokens(store).itertuples():
        add(row.feature, "top token", vocab.get(int(row.token_id), "").strip(), 2.0)
    names = reads.clusters(store).set_index("cluster_id")["name"].to_dict()
    members = reads.cluster_members(store)
    for row in members.itertuples():
        add(row.feature, "cluster", names.get(int(row.cluster_id), ""), 1.0)
    urls = SiteUrls()
    hits = []
    for f, entries in fields.items():
        score, why = 0.0, []
        for w in words:
            best = max(((wt * (2.0 if re.search(rf"\b{re.escape(w)}\b", t) else 1.0), k)
                        for k, t, wt in entries if w in t), default=None)
            if best is None:
                score = 0.0
                break
            score += best[0]
            why.append(best[1])
        if score > 0:
            dens = float(feats.at[f, "density"]) if f in feats.index else 0.0
            hits.append(Hit(f, score + 1e-3 * np.log10(dens + 1e-9), str(feats.at[f, "label"]),
                            ", ".join(sorted(set(why))), urls.feature(f)))
    hits.sort(key=lambda h: (-h.score, h.feature))
    return hits[:limit]
