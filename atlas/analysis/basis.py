"""The vectors features are clustered and laid out by: decoder direction, co-activation, contexts, or a blend.

Every basis returns one L2-normalised row per alive feature (rows with no evidence stay zero), so
cosine similarity is a dot product and Ward linkage on the rows is linkage on cosine distance.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from atlas.analysis.neighbours import unit_rows

BASES = ("decoder", "coact", "context", "blend")
DEFAULT_WEIGHTS = {"decoder": 1.0, "coact": 1.0, "context": 1.0}
# Words of two or more characters that start with a letter: numbers and stray pieces say little
# about what a feature is about.
WORD_PATTERN = r"(?u)\b[^\W\d_][\w'-]+\b"


def feature_vectors(
    basis: str,
    W_dec: np.ndarray,
    alive: np.ndarray,
    coact: sp.spmatrix | None = None,
    context_docs: list[str] | None = None,
    seed: int = 0,
    dims: int = 64,
    weights: dict[str, float] | None = None,
) -> np.ndarray:
    """[n_alive, D] unit rows describing each alive feature in the chosen basis.

    `coact` is the [F, F] co-firing count matrix (its diagonal is ignored); `context_docs[i]` is
    the text around feature i's top activations, one string per feature (all F of them).
    `blend` concatenates the available parts, each scaled by sqrt(weight / total weight), so a
    blend cosine is the weighted mean of the parts' cosines; parts whose input is None are left out.
    """
    alive = np.asarray(alive, dtype=bool)
    if basis == "decoder":
        return unit_rows(np.asarray(W_dec)[alive])[0]
    if basis == "coact":
        if coact is None:
            raise ValueError("basis 'coact' needs the co-activation matrix from the harvest")
        return coact_vectors(coact, alive, dims=dims, seed=seed)
    if basis == "context":
        if context_docs is None:
            raise ValueError("basis 'context' needs one context document per feature")
        return context_vectors(context_docs, alive, dims=dims, seed=seed)
    if basis == "blend":
        weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        inputs = {"decoder": W_dec, "coact": coact, "context": context_docs}
        parts = [p for p in ("decoder", "coact", "context") if inputs[p] is not None and weights[p] > 0]
        total = sum(weights[p] for p in parts)
        blocks = [
            np.sqrt(weights[p] / total) * feature_vectors(p, W_dec, alive, coact, context_docs, seed, dims)
            for p in parts
        ]
        return unit_rows(np.hstack(blocks))[0]
    raise ValueError(f"unknown basis {basis!r}; choose one of: {', '.join(BASES)}")


def ppmi(counts: sp.spmatrix) -> sp.csr_matrix:
    """Positive pointwise mutual information of a co-occurrence count matrix, diagonal dropped.

    Raw counts mostly say "this feature fires a lot"; PMI asks whether two features fire together
    more than their rates predict.
    """
    c = sp.csr_matrix(counts, dtype=np.float64)
    c.setdiag(0)
    c.eliminate_zeros()
    total = c.sum()
    if total <= 0:
        return sp.csr_matrix(c.shape, dtype=np.float32)
    rows = np.asarray(c.sum(axis=1)).ravel()
    cols = np.asarray(c.sum(axis=0)).ravel()
    coo = c.tocoo()
    pmi = np.log(coo.data * total / (rows[coo.row] * cols[coo.col]))
    keep = pmi > 0
    out = sp.csr_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=c.shape, dtype=np.float32)
    out.sort_indices()
    return out


def coact_vectors(coact: sp.spmatrix, alive: np.ndarray, dims: int = 64, seed: int = 0) -> np.ndarray:
    """Each alive feature's PPMI co-activation profile, reduced by truncated SVD."""
    m = ppmi(coact)[np.flatnonzero(alive)]
    return _reduce(m, dims, seed)


def context_vectors(docs: list[str], alive: np.ndarray, dims: int = 64, seed: int = 0) -> np.ndarray:
    """TF-IDF of each alive feature's context words (sublinear, English stop words out, min_df 2), reduced by SVD."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if len(docs) != len(alive):
        raise ValueError(f"{len(docs)} context documents for {len(alive)} features; pass one per feature")
    chosen = [docs[i] or "" for i in np.flatnonzero(alive)]
    vectorizer = TfidfVectorizer(
        sublinear_tf=True, stop_words="english", min_df=2, token_pattern=WORD_PATTERN, dtype=np.float32
    )
    try:
        m = vectorizer.fit_transform(chosen)
    except ValueError:  # no word occurs in two documents: the contexts carry no shared signal
        return np.zeros((len(chosen), 1), dtype=np.float32)
    return _reduce(m, dims, seed)


def _reduce(m: sp.csr_matrix, dims: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import TruncatedSVD

    n_comp = min(dims, m.shape[0] - 1, m.shape[1] - 1)
    if m.nnz == 0 or n_comp < 1:
        return unit_rows(m.toarray() if m.shape[1] <= dims else np.zeros((m.shape[0], 1)))[0]
    svd = TruncatedSVD(n_components=n_comp, random_state=seed, algorithm="randomized", n_iter=7)
    return unit_rows(svd.fit_transform(m))[0]
