"""`atlas search`: find features and clusters by what they mean. The query is embedded with the atlas's sentence
encoder and ranked by cosine to the embeddings the explain stage stored (each feature's shown explanation and its
activating contexts; each cluster's name and its members' explanations), plus literal matches of its words in
labels, explanations, top tokens, cluster names and the words around top activations. Words the atlas never uses
are first corrected to its closest word ("immunolgy" → "immunology")."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from atlas.analysis import relevance as rel
from atlas.site.urls import SiteUrls
from atlas.store import Store, reads
from atlas.store import meaning as sm

# A feature's activating contexts are pooled token vectors, whose cosines to a query run lower than those of a
# sentence; this brings them onto the explanations' scale.
CONTEXT_WEIGHT = 0.85


@dataclass
class Hit:
    """One feature or cluster that matches a query: its relevance, label, what matched and its page."""

    kind: str  # feature | cluster
    item: int
    score: float
    label: str
    why: str
    page: str

    @property
    def feature(self) -> int | None:
        return self.item if self.kind == "feature" else None


@dataclass
class SearchResult:
    hits: list[Hit]
    corrections: dict[str, str]


def search(store: Store, query: str, limit: int = 20, encoder=None) -> list[Hit]:
    """Features and clusters ranked by relevance to `query`, best first."""
    return search_atlas(store, query, limit, encoder).hits


def search_atlas(store: Store, query: str, limit: int = 20, encoder=None) -> SearchResult:
    """Search with the corrections made to the query's words."""
    if not rel.words(query):
        return SearchResult([], {})
    feats = reads.features(store).set_index("feature")
    clusters = reads.clusters(store).set_index("cluster_id")
    f_fields, c_fields = _fields(store, feats, clusters)
    vocabulary = {w for entries in (*f_fields.values(), *c_fields.values()) for _, t in entries for w in rel.words(t)}
    vocabulary |= {w for t in reads.vocab(store).values() for w in rel.words(t) if w.isalpha()}
    if encoder is None and len(sm.embeddings(store, "feature")[0]):
        from atlas.meaning.encoder import default_folder, load_encoder

        encoder = load_encoder(str(default_folder()))
    # a word the encoder knows whole is a word, even where the atlas never uses it: only the others are corrected
    known = {w for w in encoder.tokenizer.get_vocab() if w.isalpha()} if encoder is not None else set()
    fixed, corrections = rel.correct(query, vocabulary, known)
    qwords = rel.words(fixed)
    f_ids = np.array(sorted(f_fields), np.int64)
    c_ids = np.array(sorted(c_fields), np.int64)
    f_lit, f_why = rel.literal_scores(qwords, [f_fields[int(f)] for f in f_ids])
    c_lit, c_why = rel.literal_scores(qwords, [c_fields[int(c)] for c in c_ids])
    f_cos, c_cos = _cosines(store, fixed, f_ids, c_ids, encoder)
    urls = SiteUrls()
    hits = []
    for ids, lit, cos, why, kind in ((f_ids, f_lit, f_cos, f_why, "feature"), (c_ids, c_lit, c_cos, c_why, "cluster")):
        score = rel.relevance(cos, lit)
        for i in np.flatnonzero((lit > 0) | (cos > 0)):
            item = int(ids[i])
            label = str(feats.at[item, "label"]) if kind == "feature" else str(clusters.at[item, "name"])
            meaning = f"meaning {cos[i]:.2f}" if cos[i] > 0 else ""
            hits.append(Hit(kind, item, float(score[i]), label, ", ".join(x for x in (meaning, why[i]) if x),
                            urls.feature(item) if kind == "feature" else urls.cluster(item)))
    hits.sort(key=lambda h: (-h.score, h.kind, h.item))
    return SearchResult(hits[:limit], corrections)


def _fields(store: Store, feats, clusters) -> tuple[dict[int, list[tuple[str, str]]], dict[int, list[tuple[str, str]]]]:
    """Each live feature's and each cluster's texts, by the kind of field they come from."""
    vocab = reads.vocab(store)
    f_fields: dict[int, list[tuple[str, str]]] = {int(f): [] for f in feats.index[feats["alive"].astype(bool)]}

    def add(f, kind: str, text) -> None:
        if int(f) in f_fields and isinstance(text, str) and text.strip():
            f_fields[int(f)].append((kind, text.lower()))

    for f, label in feats["label"].items():
        add(f, "label", label)
    for row in reads.labels(store).itertuples():
        add(row.feature, "explanation", row.text)
    for row in reads.top_tokens(store).itertuples():
        add(row.feature, "top token", vocab.get(int(row.token_id), "").strip())
    for row in reads.top_snippets(store).itertuples():
        add(row.feature, "context", "".join(vocab.get(int(t), "") for t in row.token_ids))
    names = clusters["name"].to_dict()
    for row in reads.cluster_members(store).itertuples():
        add(row.feature, "cluster", names.get(int(row.cluster_id), ""))
    c_fields = {int(c): [("cluster", str(n).lower())] for c, n in names.items() if isinstance(n, str)}
    return f_fields, c_fields


def _cosines(store: Store, query: str, f_ids: np.ndarray, c_ids: np.ndarray, encoder) -> tuple[np.ndarray, np.ndarray]:
    """Cosine of the query to each feature (its explanation or its contexts, whichever is closer) and to each
    cluster (its name or its members' mean explanation); zeros when the store holds no embeddings."""
    f_cos, c_cos = np.zeros(len(f_ids)), np.zeros(len(c_ids))
    items, explained = sm.embeddings(store, "feature")
    if not len(items) or encoder is None:
        return f_cos, c_cos
    q = encoder.encode([query])[0]
    ctx_items, contexts = sm.embeddings(store, "context")
    by_item = {int(f): i for i, f in enumerate(items)}
    best = np.full(int(max(items.max(), f_ids.max(initial=0))) + 1, 0.0)
    best[items] = explained @ q
    if len(ctx_items):
        best[ctx_items] = np.maximum(best[ctx_items], CONTEXT_WEIGHT * (contexts @ q))
    f_cos = np.array([best[f] if f in by_item else 0.0 for f in f_ids])
    members = reads.cluster_members(store).groupby("cluster_id")["feature"].apply(list).to_dict()
    c_items, names = sm.embeddings(store, "cluster")
    name_cos = dict(zip(c_items.tolist(), (names @ q).tolist())) if len(c_items) else {}
    for k, c in enumerate(c_ids):
        rows = [by_item[f] for f in members.get(int(c), []) if f in by_item]
        mean = explained[rows].mean(0) if rows else None
        member_cos = float(mean @ q / max(np.linalg.norm(mean), 1e-9)) if mean is not None else 0.0
        c_cos[k] = max(name_cos.get(int(c), 0.0), member_cos)
    return np.clip(f_cos, 0, None), np.clip(c_cos, 0, None)
