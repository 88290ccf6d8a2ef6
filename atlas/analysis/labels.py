"""Readable names from activating text: a short label per feature, a distinguishing name per cluster.

Token strings follow the model adapter's display convention: a piece that starts a word carries
its leading space (" blood"), a continuation does not ("ing"). SentencePiece "▁", GPT-2 "Ġ" and
WordPiece "##" markers are understood too, so raw vocabularies work.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from functools import lru_cache
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from atlas.analysis.basis import WORD_PATTERN

# One harvested context: the window's token strings, the position of the activation, its value.
Example = tuple[Sequence[str], int, float]
# Or, when only the activating token is known: (token string, activation).
TokenValue = tuple[str, float]

SEPARATOR = " · "
_TERM = re.compile(r"[^\W\d_][\w'’-]*")
_WORD = re.compile(WORD_PATTERN)
_VISIBLE = {"\n": "↵", "\t": "⇥", " ": "␣"}


def feature_labels(
    features: Sequence[Sequence[Example | TokenValue]],
    n_terms: int = 3,
    neighbour_weight: float = 0.25,
) -> list[str]:
    """A label of up to `n_terms` words per feature, e.g. "blood · muscle · antigen".

    Each feature's items are either `(tokens, focus, value)` examples, from which the whole word
    at the focus token is rebuilt (continuation pieces joined on) and the nearest content word on
    each side is counted at `neighbour_weight`; or `(token, value)` pairs, where a word-start
    token counts fully and a bare piece half. Words are weighted by activation, stop-words,
    numbers and punctuation dropped (unless nothing else is left), and deduplicated ignoring case.
    """
    return [_label(items, n_terms, neighbour_weight) for items in features]


def _label(items, n_terms: int, neighbour_weight: float) -> str:
    weight: Counter[str] = Counter()
    forms: dict[str, Counter[str]] = defaultdict(Counter)
    raw: Counter[str] = Counter()  # every focus unit, stop-words included: the fallback
    for item in items:
        if len(item) == 3:
            tokens, focus, value = item
            units = _units(tokens)
            at = next((i for i, (s, e, _) in enumerate(units) if s <= focus < e), None)
            if at is None:
                continue
            v = max(float(value), 1e-6)
            found = [(units[at][2], v)]
            for side in (range(at - 1, -1, -1), range(at + 1, len(units))):
                near = next((units[i][2] for i in side if _is_term(units[i][2])), None)
                if near:
                    found.append((near, v * neighbour_weight))
        else:
            token, value = item
            starts = token[:1].isspace() or token[:1] in "▁Ġ" or not token[:1].isalnum()
            found = [(_clean(token) or token, max(float(value), 1e-6) * (1.0 if starts else 0.5))]
        raw[_visible(found[0][0])] += found[0][1]
        for word, v in found:
            if _is_term(word):
                weight[word.lower()] += v
                forms[word.lower()][word] += v
    if not weight:
        return SEPARATOR.join(w for w, _ in sorted(raw.items(), key=lambda kv: (-kv[1], kv[0]))[:n_terms])
    best = sorted(weight.items(), key=lambda kv: (-kv[1], kv[0]))[:n_terms]
    return SEPARATOR.join(max(forms[w].items(), key=lambda kv: (kv[1], kv[0]))[0] for w, _ in best)


# Both run on every token of every stored window (millions on a 4096-feature atlas) but see only the vocabulary's
# few thousand distinct pieces: remembered, the demo's labels take half the time.
@lru_cache(maxsize=1 << 18)
def _clean(token: str) -> str:
    return token.replace("▁", " ").replace("Ġ", " ").removeprefix("##").strip()


@lru_cache(maxsize=1 << 18)
def _starts_word(token: str) -> bool:
    return token[:1].isspace() or token[:1] in "▁Ġ"


def _units(tokens: Sequence[str | None]) -> list[tuple[int, int, str]]:
    """Split a window into (start, stop, text) words: a piece joins the previous one when it has
    no leading space and both touch with a letter or digit; punctuation stands alone."""
    units: list[tuple[int, int, str]] = []
    for i, tok in enumerate(tokens):
        tok = "" if tok is None else str(tok)
        joins = (
            units and units[-1][1] == i and not _starts_word(tok)
            and (tok.startswith("##") or tok[:1].isalnum()) and units[-1][2][-1:].isalnum()
        )
        if joins:
            s, _, text = units[-1]
            units[-1] = (s, i + 1, text + _clean(tok))
        elif tok:
            units.append((i, i + 1, _clean(tok) or tok))
    return units


def _is_term(word: str) -> bool:
    return len(word) >= 2 and bool(_TERM.fullmatch(word)) and word.lower() not in ENGLISH_STOP_WORDS


def _visible(text: str) -> str:
    return text.strip() or "".join(_VISIBLE.get(c, c) for c in text) or "∅"


def context_docs(features: Sequence[Sequence[Example]], radius: int = 3) -> list[str]:
    """One text per feature: the focus word (twice) and `radius` words either side, for every example.

    Repetition across examples is the weighting; this is the input of basis 'context' and of
    `cluster_names`.
    """
    return context_docs_for(features, (radius,))[radius]


def context_docs_for(features: Sequence[Sequence[Example]], radii: Sequence[int]) -> dict[int, list[str]]:
    """`context_docs` at each of `radii`, splitting every window into words once."""
    docs: dict[int, list[str]] = {r: [] for r in radii}
    for items in features:
        words: dict[int, list[str]] = {r: [] for r in radii}
        for tokens, focus, _ in items:
            units = _units(tokens)
            at = next((i for i, (s, e, _) in enumerate(units) if s <= focus < e), None)
            if at is None:
                continue
            for r in radii:
                words[r].append(units[at][2])
                words[r].extend(u[2] for u in units[max(0, at - r) : at + r + 1])
        for r in radii:
            docs[r].append(" ".join(words[r]))
    return docs


def cluster_names(
    member_docs: Sequence[Sequence[str]],
    background: Sequence[str] | None = None,
    max_terms: int = 3,
) -> list[str]:
    """A name of 2-3 distinguishing words per cluster, e.g. "blood, muscle, antigen".

    Class-based TF-IDF: a word's weight in a cluster is the share of its members whose document
    holds it, times log(1 + N / df) with df the number of `background` documents holding it
    (default: all members' documents; pass every feature's document to compare with the whole
    atlas). Words must come from two members once a cluster has three; a third word is kept only
    if it scores at least half the first; a cluster whose name repeats an earlier, larger one's
    swaps its last word for its next best. "" when the members share no usable word.
    """
    from sklearn.feature_extraction.text import CountVectorizer

    flat = [d for docs in member_docs for d in docs]
    background = list(background) if background is not None else flat
    vec = CountVectorizer(binary=True, lowercase=True, stop_words="english", token_pattern=WORD_PATTERN)
    try:
        bg = vec.fit_transform(background)
    except ValueError:  # no words at all
        return [""] * len(member_docs)
    vocab = np.array(vec.get_feature_names_out())
    idf = np.log1p(bg.shape[0] / np.maximum(np.asarray(bg.sum(axis=0)).ravel(), 1))
    ranked = []
    for docs in member_docs:
        if not docs:
            ranked.append([])
            continue
        df = np.asarray(sp.csr_matrix(vec.transform(docs)).sum(axis=0)).ravel()
        score = df / len(docs) * idf
        score[df < (2 if len(docs) >= 3 else 1)] = 0
        order = np.lexsort((vocab, -score))
        ranked.append([(vocab[i], score[i]) for i in order[: 4 * max_terms] if score[i] > 0])
    forms = _surface_forms({w for r in ranked for w, _ in r}, flat)
    names, used = [], set()
    for r in ranked:
        terms = _pick(r, max_terms)
        if tuple(terms) in used:
            spare = [w for w, _ in r if w not in terms and not _near_duplicate(w, terms[:-1])]
            if spare:
                terms = terms[:-1] + spare[:1]
        used.add(tuple(terms))
        names.append(", ".join(forms.get(w, w) for w in terms))
    return names


def _pick(ranked: list[tuple[str, float]], max_terms: int) -> list[str]:
    terms: list[str] = []
    for w, s in ranked:
        if len(terms) == max_terms or (len(terms) >= 2 and s < 0.5 * ranked[0][1]):
            break
        if not _near_duplicate(w, terms):
            terms.append(w)
    return terms


def _near_duplicate(word: str, chosen: Sequence[str]) -> bool:
    """"antigen" after "antigens": one inflection is enough in a three-word name."""
    return any((word.startswith(c) or c.startswith(word)) and abs(len(word) - len(c)) <= 2 for c in chosen)


def _surface_forms(words: set[str], docs: Sequence[str]) -> dict[str, str]:
    """The most common spelling of each chosen word, so "Paris" keeps its capital."""
    seen: dict[str, Counter[str]] = defaultdict(Counter)
    for doc in docs:
        for m in _WORD.finditer(doc):
            w = m.group(0)
            if w.lower() in words:
                seen[w.lower()][w] += 1
    return {w: max(c.items(), key=lambda kv: (kv[1], kv[0]))[0] for w, c in seen.items()}


def hierarchy_names(hierarchy, docs: Sequence[str]) -> list[list[str]]:
    """Names for every cluster of every level (`docs` has one entry per hierarchy row), each
    compared with all rows; a cluster with no usable word takes its parent's name, or "cluster N"."""
    out: list[list[str]] = []
    for level, labels in enumerate(hierarchy.labels):
        k = len(hierarchy.parents[level])
        groups: list[list[str]] = [[] for _ in range(k)]
        for row, c in enumerate(labels):
            groups[c].append(docs[row])
        names = cluster_names(groups, background=docs)
        for c, name in enumerate(names):
            if not name:
                parent = hierarchy.parents[level][c]
                names[c] = out[-1][parent] if level and out[-1][parent] else f"cluster {c + 1}"
        out.append(names)
    return out
