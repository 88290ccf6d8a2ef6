"""How well an atlas's items match a query: literal matches of the query's words in their texts, misspelt words
corrected by character-trigram similarity to the atlas's own words, and the two combined with the cosine of sentence
embeddings into one relevance."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

_WORD = re.compile(r"\w+")
# Weights of the fields a literal match can come from: what the page shows first counts most.
FIELD_WEIGHTS = {"label": 3.0, "explanation": 2.0, "top token": 2.0, "cluster": 1.0, "context": 0.5}
# A literal match of every query word adds this to an item's cosine.
LITERAL_BONUS = 0.25


def words(text: str) -> list[str]:
    return [w for w in _WORD.findall(str(text).lower()) if w]


def trigrams(word: str) -> set[str]:
    padded = f"  {word.lower()} "
    return {padded[i:i + 3] for i in range(len(padded) - 2)}


def closest_word(word: str, vocabulary: Iterable[str], min_similarity: float = 0.45) -> str | None:
    """The vocabulary word most like `word` (a misspelling's intended word), or None when none reaches
    `min_similarity`. Similarity is the Dice coefficient of character trigrams, or one minus the share of edits
    (insertions, deletions, substitutions, swaps of neighbours) when that is higher: trigrams alone miss a swap
    in a short word ("frnace")."""
    grams = trigrams(word)
    best, best_sim = None, min_similarity
    for other in vocabulary:
        if abs(len(other) - len(word)) > max(2, len(word) // 3):
            continue
        theirs = trigrams(other)
        sim = 2 * len(grams & theirs) / (len(grams) + len(theirs))
        if sim >= 0.25:
            sim = max(sim, 1.0 - edit_distance(word, other) / max(len(word), len(other)))
        if sim > best_sim or (sim == best_sim and best is not None and other < best):
            best, best_sim = other, sim
    return best


def edit_distance(a: str, b: str) -> int:
    """Edits from a to b: insertions, deletions, substitutions and swaps of neighbouring letters (optimal string
    alignment)."""
    prev2, prev = None, list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
            if prev2 is not None and i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], prev2[j - 2] + 1)
        prev2, prev = prev, row
    return prev[-1]


def correct(query: str, vocabulary: set[str], known: Iterable[str] = ()) -> tuple[str, dict[str, str]]:
    """The query with each word (of 4+ letters) that neither the atlas uses (`vocabulary`) nor is otherwise known
    to be a word (`known`, e.g. the encoder's vocabulary) replaced by its closest atlas word; returns the corrected
    query and the replacements made."""
    known = set(known)
    fixes: dict[str, str] = {}
    for w in set(words(query)):
        if len(w) >= 4 and not w.isdigit() and w not in vocabulary and w not in known:
            found = closest_word(w, vocabulary)
            if found:
                fixes[w] = found
    if not fixes:
        return query, {}
    fixed = _WORD.sub(lambda m: fixes.get(m.group(0).lower(), m.group(0)), query)
    return fixed, fixes


def literal_scores(query_words: Sequence[str], fields: Sequence[Sequence[tuple[str, str]]]) -> tuple[np.ndarray, list[str]]:
    """Per item: the share of query words found in its (field kind, text) fields, each word counted at the weight
    of its best field (a whole-word match twice a substring one) and normalised to [0, 1]; and which fields
    matched."""
    top = 2.0 * max(FIELD_WEIGHTS.values())
    scores = np.zeros(len(fields), np.float64)
    why: list[str] = []
    if not query_words:
        return scores, [""] * len(fields)
    bounded = [re.compile(rf"\b{re.escape(w)}\b") for w in query_words]
    for i, entries in enumerate(fields):
        total, kinds = 0.0, set()
        for w, pattern in zip(query_words, bounded):
            best = max(((FIELD_WEIGHTS.get(k, 1.0) * (2.0 if pattern.search(t) else 1.0), k)
                        for k, t in entries if w in t), default=None)
            if best is not None:
                total += best[0]
                kinds.add(best[1])
        scores[i] = total / (top * len(query_words))
        why.append(", ".join(sorted(kinds)))
    return scores, why


def relevance(cosine: np.ndarray, literal: np.ndarray) -> np.ndarray:
    """One ranking from meaning and literal matches: the cosine of the embeddings plus a bonus for literal
    matches."""
    return np.nan_to_num(np.asarray(cosine, np.float64), nan=0.0) + LITERAL_BONUS * np.asarray(literal, np.float64)
