"""The explain stage: an explanation of every live feature from each configured explainer (offline, and an
OpenAI-compatible endpoint when one is set), every explanation scored on held-out activations (the keyword labels,
the user's and imported ones alike), the best one picked for the feature's page, and sentence embeddings for
search by meaning."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from atlas.config import EXPLAIN_RUNTIME
from atlas.lm.activations import model_identity
from atlas.stages.inputs import SharedInputs
from atlas.stages.run import Keyed, Outcome, Status, StoreLedger, VersionRun, input_key, run_keyed
from atlas.store import without_durations

if TYPE_CHECKING:
    from atlas.config import Config
    from atlas.meaning.encoder import SentenceEncoder
    from atlas.meaning.evidence import Evidence
    from atlas.saes import SaeWeights
    from atlas.store import Store

KEYWORD = "keyword"
OFFLINE = "offline"
USER = "user"


@dataclass
class Explained:
    """Every explanation (feature, source, text) with its embedding vector, and every score by scorer."""

    feature: list[int] = field(default_factory=list)
    source: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    scores: list[dict] = field(default_factory=list)

    def add(self, feature: int, source: str, text: str) -> None:
        self.feature.append(int(feature))
        self.source.append(str(source))
        self.text.append(str(text))


def explain(shared: SharedInputs, run: VersionRun, sae: SaeWeights, analysis_key: str) -> str:
    """Explain and score every live feature of `sae` in the version's store; returns a key that changes whenever
    what the pages show would."""
    from atlas.meaning.encoder import default_folder

    cfg = run.cfg
    folder = cfg.resolve(cfg.explain.encoder) if cfg.explain.encoder else default_folder()
    settings = {k: v for k, v in cfg.section_dict("explain").items() if k not in EXPLAIN_RUNTIME}

    def compute(key: str) -> Outcome[str | None]:
        return run_explain(shared, run, sae, folder)

    done = run_keyed(Keyed(
        "explain",
        inputs={"analysis": analysis_key, "activations": shared.acts_key, "sae": sae.content_hash(),
                "encoder": model_identity(folder), "settings": settings, "seed": cfg.atlas.seed},
        ledger=StoreLedger(run.store),
        compute=compute,
    ), run.report)
    # A partial result is not recorded, so its key alone would not tell its pages from the next build's.
    return done.key if done.value is None else input_key(done.key, done.value)


def run_explain(shared: SharedInputs, run: VersionRun, sae: SaeWeights, folder: Path) -> Outcome[str | None]:
    """Gather the evidence, explain, score, pick and write; the outcome is PARTIAL when the endpoint's budget left
    features unexplained or unscored (its value then names what was done)."""
    from atlas.meaning.contexts import ContextCache
    from atlas.meaning.encoder import load_encoder
    from atlas.meaning.evidence import gather
    from atlas.meaning.offline import offline_explanations
    from atlas.store import meaning as sm

    cfg, store, log = run.cfg, run.store, run.report.log
    e = cfg.explain
    timings: dict[str, float] = {}
    feats = store.table("features", order_by="feature")
    n_features = len(feats)
    alive = np.flatnonzero(feats["alive"].to_numpy(bool))
    encoder = load_encoder(str(folder))
    corpus = shared.corpus
    cache = None
    if ContextCache.fits(corpus.n_tokens, encoder.dim, cfg.atlas.cache_max_gb):
        key = input_key(shared.tokens_key, model_identity(folder), e.context_radius)
        cache = ContextCache(shared.cache_dir, key, corpus.n_tokens, corpus.n_sequences, encoder.dim)
    t = time.perf_counter()
    ev = gather(sm.explain_examples(store), n_features, corpus, sae, shared.acts, shared.model,
                sm.decoder_neighbour_lists(store, n_features, e.neighbours), e, encoder, cfg.atlas.seed,
                cfg.model.batch_tokens, cache, log)
    timings.update(ev.timings)
    timings["evidence_s"] = time.perf_counter() - t
    t = time.perf_counter()
    offline, pieces = offline_explanations(ev, alive, encoder, cfg.model.batch_tokens)
    timings["offline_s"] = time.perf_counter() - t

    known = sm.labels_of_sources(store)
    out = Explained()
    for f, source, text in zip(known["feature"], known["source"], known["text"]):
        if source not in (OFFLINE,) and not str(source).startswith("openai:"):
            out.add(f, source, text)
    for f in alive:
        out.add(f, OFFLINE, offline[int(f)])
    imported = _imported_scores(store)
    partial = None
    if e.explainer == "openai":
        t = time.perf_counter()
        partial = _ask_endpoint(ev, out, store, feats, alive, cfg, shared.cache_dir, log)
        timings["endpoint_s"] = time.perf_counter() - t

    t = time.perf_counter()
    vectors = encoder.encode(out.text, cfg.model.batch_tokens)
    emb = _embedding_scores(ev, out, vectors)
    timings["scoring_s"] = time.perf_counter() - t
    labels = pd.DataFrame({"feature": np.asarray(out.feature, np.int32), "source": out.source, "text": out.text,
                           "score": pd.array(emb, dtype="Float32")})  # NaN stored as NULL: unscored
    scores = pd.DataFrame(out.scores + imported, columns=["feature", "source", "scorer", "score", "n_pos", "n_neg"])
    shown = _write(store, feats, labels, scores, vectors, ev, pieces, encoder, cfg.model.batch_tokens)
    store.set_info(explanation_scores=_summaries(labels, scores),
                   explanation_method=without_durations(_method(cfg, ev, timings)),
                   explanation_counts=shown["source"].value_counts().sort_index().to_dict())
    off, kw = (labels[labels["source"] == s].set_index("feature")["score"].astype("float64")
               for s in (OFFLINE, KEYWORD))
    both = off.index.intersection(kw.index)
    rate = len(alive) / max(timings["offline_s"] + timings["evidence_s"], 1e-9)
    note = (f"{len(alive):,} features, {rate:,.1f}/s; embedding AUROC offline {np.nanmean(off):.3f}, keyword "
            f"{np.nanmean(kw) if len(kw) else float('nan'):.3f} (offline ahead on "
            f"{np.mean(off[both] > kw[both]) if len(both) else float('nan'):.0%})")
    details = {k: round(v, 3) for k, v in timings.items()}
    if partial:
        return Outcome(partial, note + f"; {partial}", details, status=Status.PARTIAL)
    return Outcome(None, note, details)


def _ask_endpoint(ev: Evidence, out: Explained, store: Store, feats: pd.DataFrame, alive: np.ndarray, cfg: Config,
                  cache_dir: Path, log) -> str | None:
    """Explanations and LLM scores from the endpoint, most firing features first; returns what was left undone
    (None when nothing was)."""
    from atlas.meaning.endpoint import ChatClient, EndpointSettings
    from atlas.meaning.llm import llm_explanations, llm_scores
    from atlas.store import meaning as sm

    e = cfg.explain
    client = ChatClient(EndpointSettings.from_config(e), cache_dir / "explain-chat")
    order = alive[np.argsort(-feats["n_fired"].to_numpy()[alive], kind="stable")]
    source = f"openai:{e.model}"
    texts = llm_explanations(client, ev, order.tolist(), sm.logit_tokens(store))
    for f in order:
        if int(f) in texts:
            out.add(f, source, texts[int(f)])
    if e.llm_scorers:
        rank = {s: i for i, s in enumerate((source, OFFLINE, KEYWORD))}
        position = {int(f): i for i, f in enumerate(order)}
        items = sorted(((f, s, t) for f, s, t in zip(out.feature, out.source, out.text) if s in rank),
                       key=lambda it: (position.get(it[0], len(order)), rank[it[1]]))
        out.scores.extend(llm_scores(client, ev, items, e.llm_scorers, cfg.atlas.seed))
    st = client.stats
    log(f"  explain: endpoint {e.base_url} ({e.model}): {st.answered:,} answered, {st.cached:,} from the cache, "
        f"{st.retries:,} retried, {st.failed:,} failed, {st.skipped:,} left for the budget")
    for message in st.errors:
        log(f"  explain: endpoint error: {message}")
    left = len(order) - len(texts)
    if st.skipped or st.failed or client.fatal:
        why = client.fatal or ("the budget ran out" if st.skipped else "some requests failed")
        return (f"{left:,} of {len(order):,} features kept the offline explanation ({why}); "
                f"{st.answered + st.cached:,} answers so far")
    return None


def _embedding_scores(ev: Evidence, out: Explained, vectors: np.ndarray) -> np.ndarray:
    """The embedding scorer over every explanation; its rows are added to `out.scores`."""
    from atlas.analysis.scoring import embedding_scores

    feature = np.asarray(out.feature, np.int64)
    ok = feature < len(ev.sets.held_out)
    score = np.full(len(feature), np.nan, np.float32)
    score[ok] = embedding_scores(vectors[ok], feature[ok], ev.contexts, ev.sets.held_out, ev.sets.score_negatives)
    n_pos = np.diff(ev.sets.held_out.indptr)
    n_neg = np.diff(ev.sets.score_negatives.indptr)
    for i in np.flatnonzero(np.isfinite(score)):
        f = int(feature[i])
        out.scores.append({"feature": f, "source": out.source[i], "scorer": "embedding", "score": float(score[i]),
                           "n_pos": int(n_pos[f]), "n_neg": int(n_neg[f])})
    return score


def _imported_scores(store: Store) -> list[dict]:
    """Scores imported explanations came with (their own scorer's), as the analysis stage kept them."""
    rows = store.query("SELECT feature, source, score FROM label_scores WHERE scorer = 'imported' "
                       "ORDER BY feature, source")
    return [{"feature": int(f), "source": s, "scorer": "imported", "score": float(v), "n_pos": 0, "n_neg": 0}
            for f, s, v in zip(rows["feature"], rows["source"], rows["score"])]


def _write(store: Store, feats: pd.DataFrame, labels: pd.DataFrame, scores: pd.DataFrame, vectors: np.ndarray,
           ev: Evidence, pieces: set[int], encoder: SentenceEncoder, batch_tokens: int) -> pd.DataFrame:
    """Pick what each page shows, write every table, and the embeddings search ranks by; returns the picks."""
    from atlas.analysis.scoring import pick_shown
    from atlas.store import meaning as sm

    # A keyword label names words: never the one shown for a feature that fires on a piece of words.
    rows = pick_shown(labels["feature"].to_numpy(), labels["source"].to_numpy(),
                      labels["score"].to_numpy(np.float64, na_value=np.nan), USER,
                      {f: {KEYWORD} for f in pieces}, KEYWORD)
    shown = labels.iloc[rows].reset_index(drop=True)
    shown = shown.assign(scorer=np.where(shown["score"].notna(), "embedding", None))
    sm.write_explanations(store, labels, scores, shown)
    alive = feats["alive"].to_numpy(bool)
    label = feats["label"].to_numpy(object).copy()
    source = feats["label_source"].to_numpy(object).copy()
    label[shown["feature"].to_numpy()] = shown["text"].to_numpy(object)
    source[shown["feature"].to_numpy()] = shown["source"].to_numpy(object)
    store.replace_table("features", feats.assign(label=np.where(alive, label, feats["label"]),
                                                 label_source=np.where(alive, source, feats["label_source"])))
    sm.write_embeddings(store, "feature", shown["feature"].to_numpy(), vectors[rows])
    context = np.stack([_unit(ev.explainer_contexts(int(f))[0].mean(0)) if len(ev.sets.visible.of(int(f)))
                        else np.zeros(encoder.dim, np.float32) for f in shown["feature"]]) if len(shown) else \
        np.zeros((0, encoder.dim), np.float32)
    sm.write_embeddings(store, "context", shown["feature"].to_numpy(), context)
    clusters = store.table("clusters", order_by="cluster_id")
    names = [str(n) if isinstance(n, str) else "" for n in clusters["name"]]
    sm.write_embeddings(store, "cluster", clusters["cluster_id"].to_numpy(), encoder.encode(names, batch_tokens))
    return shown


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / max(float(np.linalg.norm(v)), 1e-9)).astype(np.float32)


def _summaries(labels: pd.DataFrame, scores: pd.DataFrame) -> dict:
    """Per scorer and source: the distribution of scores, and how often each source beats the keyword baseline."""
    from atlas.analysis.scoring import summary

    out: dict = {}
    for (scorer, source), group in scores.groupby(["scorer", "source"], sort=True):
        out.setdefault(scorer, {})[source] = summary(group["score"].to_numpy())
    emb = scores[scores["scorer"] == "embedding"].pivot_table(index="feature", columns="source", values="score")
    if KEYWORD in emb:
        out["beats_keyword"] = {s: round(float((emb[s] > emb[KEYWORD])[emb[s].notna() & emb[KEYWORD].notna()].mean()), 4)
                                for s in emb.columns if s != KEYWORD and (emb[s].notna() & emb[KEYWORD].notna()).any()}
    return out


def _method(cfg: Config, ev: Evidence, timings: dict[str, float]) -> dict:
    """How explanations were made and scored, for the About page."""
    e = cfg.explain
    sets = ev.sets
    return {
        "explainer": e.explainer, "model": e.model if e.explainer == "openai" else "",
        "encoder": "all-MiniLM-L6-v2" if not e.encoder else Path(e.encoder).name,
        "context_radius": e.context_radius,
        "mean_held_out": round(float(np.diff(sets.held_out.indptr).mean()), 2) if len(sets.held_out) else 0,
        "mean_negatives": round(float(np.diff(sets.score_negatives.indptr).mean()), 2) if len(sets.held_out) else 0,
        "mean_hard_negatives": round(float(sets.hard.mean()), 2) if len(sets.hard) else 0,
        "contexts": int(len(sets.centres)),
        "scorers": ["embedding"] + (list(e.llm_scorers) if e.explainer == "openai" else []),
        **({k: round(v, 2) for k, v in timings.items() if k.endswith("_s")}),
    }
