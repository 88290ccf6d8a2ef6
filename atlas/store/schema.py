"""The store's schema: every table the pipeline writes and the site reads, in one place.

Conventions: `feature` is the SAE latent index (0-based). Cluster `level` 0 is the coarsest
(regions); larger levels are finer. Example `kind` is 'top', 'interval' or 'random'.
Neighbour `kind` is 'decoder' (cosine of decoder rows) or 'coact' (co-activation).
"""

import re

TABLES: dict[str, str] = {
    # One row per build: what was asked for and with which software.
    "runs": """
        run_id INTEGER, started_at TIMESTAMP, finished_at TIMESTAMP,
        config_json TEXT, config_hash TEXT, atlas_version TEXT, versions_json TEXT
    """,
    # One row per pipeline stage: the hash of its inputs, so an unchanged stage is skipped.
    "stages": """
        stage TEXT PRIMARY KEY, input_hash TEXT, seconds DOUBLE, computed_at TIMESTAMP,
        details_json TEXT
    """,
    # Key/value facts about the atlas (values are JSON): model, hook, sae path/hash/format,
    # d_in, d_sae, corpus description/hash, n_tokens, n_sequences, reconstruction figures
    # (fvu, l0, dead_share, recon_tokens), warnings, has_unembedding, title, built_at; with [compare],
    # compare_counts (features per kind of change) and compare_params (the matching thresholds).
    "atlas_info": "key TEXT PRIMARY KEY, value TEXT",
    # Display text of every token id that appears in an example or a logit row.
    "vocab": "token_id INTEGER PRIMARY KEY, token TEXT",
    # Per-feature statistics and the chosen label; layout coordinates are NULL for dead features.
    "features": """
        feature INTEGER PRIMARY KEY, alive BOOLEAN, n_fired BIGINT, density DOUBLE,
        max_act REAL, mean_act REAL, decoder_norm REAL,
        label TEXT, label_source TEXT, cluster_id INTEGER, x REAL, y REAL
    """,
    # Stored contexts: token ids and per-token activations of the feature around a focus token.
    "examples": """
        feature INTEGER, kind TEXT, bucket INTEGER, rank INTEGER,
        seq INTEGER, pos INTEGER, value REAL, focus INTEGER,
        token_ids INTEGER[], acts REAL[]
    """,
    # Activation intervals used for interval samples: range, count and share of all activations.
    "intervals": "feature INTEGER, bucket INTEGER, lo REAL, hi REAL, n BIGINT, share DOUBLE",
    # Histogram of nonzero activations.
    "histograms": "feature INTEGER, bin INTEGER, lo REAL, hi REAL, count BIGINT",
    "neighbours": "feature INTEGER, kind TEXT, rank INTEGER, other INTEGER, score REAL",
    # Co-activation counts: tokens on which both features fire (the largest partners per feature).
    "coactivation": "feature INTEGER, other INTEGER, count BIGINT",
    "clusters": """
        cluster_id INTEGER PRIMARY KEY, level INTEGER, parent_id INTEGER, name TEXT,
        name_source TEXT, size INTEGER, coherence_decoder REAL, coherence_coact REAL,
        x REAL, y REAL
    """,
    "cluster_members": "cluster_id INTEGER, feature INTEGER",
    # Every explanation/label known for a feature, with where it came from: 'keyword' (words of its top
    # activations), 'offline' (the offline explainer), 'openai:<model>' (an OpenAI-compatible endpoint), 'user'
    # (the labels file) or an imported source. score: its embedding score (see label_scores), NULL if unscored.
    "labels": "feature INTEGER, source TEXT, text TEXT, score REAL",
    # Every score of every explanation, by scorer, on held-out contexts the explainer never saw: 'embedding' (AUROC
    # of the cosine between the explanation's sentence embedding and held-out activating against non-activating
    # contexts, hard ones included), 'detection' and 'fuzzing' (an LLM's balanced accuracy, with an endpoint).
    # n_pos / n_neg: how many activating and non-activating contexts it was scored on.
    "label_scores": "feature INTEGER, source TEXT, scorer TEXT, score REAL, n_pos INTEGER, n_neg INTEGER",
    # The explanation a feature's page shows: the user's label, else its best-scoring explanation, with that
    # explanation's source, score and scorer (features.label and label_source hold the same text and source).
    "feature_explanations": "feature INTEGER PRIMARY KEY, text TEXT, source TEXT, score REAL, scorer TEXT",
    # Unit sentence embeddings (float32) for search by meaning: kind 'feature' (of the explanation it shows),
    # 'context' (mean of its activating contexts), 'cluster' (of the cluster's name); item is the feature or
    # cluster id.
    "embeddings": "kind TEXT, item INTEGER, vector FLOAT[]",
    # Logit effects of a feature's decoder direction: sign is 'pos' or 'neg'.
    "logits": "feature INTEGER, sign TEXT, rank INTEGER, token_id INTEGER, value REAL",
    # The atlas this one is compared with ([compare] in the config): role 'previous'. site_path leads
    # from this atlas's site folder to the previous site (POSIX, relative), NULL when that site is gone.
    "versions": "role TEXT, title TEXT, store_path TEXT, sae_hash TEXT, site_path TEXT, d_sae INTEGER",
    # Feature-by-feature comparison with the previous SAE: `a` is the previous feature, `b` this one's
    # (-1 where a kind has no such side). kind: matched | split | merge | new | vanished. score: the
    # match's or the split/merge combination's cosine; cosine: of this a-b pair; weight: the part's
    # NNLS weight in a split/merge.
    "version_matches": "kind TEXT, a BIGINT, b BIGINT, score DOUBLE, cosine DOUBLE, weight DOUBLE",
    # Dead features left out of the comparison: side 'a' (previous) or 'b' (this SAE).
    "version_dead": "side TEXT, feature BIGINT",
    # The previous atlas's features as far as this site shows them.
    "previous_features": "feature INTEGER, alive BOOLEAN, label TEXT",
}


def primary_key(table: str) -> str | None:
    """The column a table is keyed by, as its definition above declares it; None for an unkeyed table."""
    found = re.search(r"(\w+) \w+ PRIMARY KEY", TABLES[table])
    return found.group(1) if found else None


def create_statements() -> list[str]:
    """DDL for every table, in a stable order."""
    return [f"CREATE TABLE IF NOT EXISTS {name} ({cols.strip()})" for name, cols in TABLES.items()]
