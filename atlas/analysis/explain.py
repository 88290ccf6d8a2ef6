"""The offline explainer: a short explanation of what a feature fires on, from the contexts the explainer may see,
with no server (KeyBERT-style).

Candidate phrases are the firing token itself (marked as a token or a word piece when the feature fires on one
token), the words it fires on (multi-token words joined again), and words and word pairs around the activations.
They are embedded with the sentence encoder and ranked by how much closer they are to the activating contexts than
to contexts that do not fire, plus how many activating contexts hold them; maximal marginal relevance keeps the
chosen phrases distinct. A feature that fires on part of a word is explained as that piece, never by a word that
happens to contain it.

Token strings follow the model adapter's display convention: a word-initial piece carries its leading space.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

# A feature is read as firing on one token when that token carries at least this share of its visible activation.
TOKEN_SHARE = 0.5
MAX_CHARS = 160
_CONTENT = re.compile(r"[^\W\d_][\w'’-]*")
_VISIBLE = {"\n": "↵", "\t": "⇥", " ": "␣"}


@dataclass(frozen=True)
class Example:
    """One context the explainer may see: its token strings, the activating token, the feature's activation on
    every token of the window, and the activation at the focus."""

    tokens: Sequence[str]
    focus: int
    acts: Sequence[float]
    value: float


@dataclass(frozen=True)
class Focus:
    """What a feature fires on across its visible examples.

    kind: "token" (one whole-word token), "piece" (one token that is part of longer words) or "words" (varied).
    role: for a piece, where it sits in its words: "start", "end" or "inner"."""

    kind: str
    token: str = ""
    role: str = "word"
    share: float = 0.0
    words: tuple[tuple[str, float], ...] = ()
    hosts: tuple[str, ...] = ()  # for a piece: words that hold it, most activating first


@dataclass(frozen=True)
class Candidates:
    """A feature's focus and its candidate phrases: the words it fires on (and the words that hold a piece) and the
    words around its activations."""

    focus: Focus
    focus_phrases: tuple[str, ...]
    context_phrases: tuple[str, ...]

    def phrases(self) -> tuple[str, ...]:
        return self.focus_phrases + self.context_phrases


def word_spans(tokens: Sequence[str]) -> list[tuple[int, int, str]]:
    """The window's words as (first token, stop token, text): a piece with no leading space that touches the
    previous piece with a letter or digit continues its word; other pieces stand alone."""
    spans: list[tuple[int, int, str]] = []
    for i, tok in enumerate(tokens):
        tok = "" if tok is None else str(tok)
        text = _clean(tok)
        joins = (spans and spans[-1][1] == i and not _starts_word(tok) and (tok[:1].isalnum() or tok.startswith("##"))
                 and spans[-1][2][-1:].isalnum())
        if joins:
            s, _, prev = spans[-1]
            spans[-1] = (s, i + 1, prev + text)
        elif text:
            spans.append((i, i + 1, text))
    return spans


def read_focus(examples: Sequence[Example]) -> Focus:
    """Whether the feature fires on one token (a whole word or a piece of words) or on varied words."""
    token_w: Counter[str] = Counter()
    forms: dict[str, Counter[str]] = defaultdict(Counter)
    roles: dict[str, Counter[str]] = defaultdict(Counter)
    hosts: dict[str, Counter[str]] = defaultdict(Counter)
    word_w: Counter[str] = Counter()
    word_forms: dict[str, Counter[str]] = defaultdict(Counter)
    for ex in examples:
        if not 0 <= ex.focus < len(ex.tokens):
            continue
        v = max(float(ex.value), 1e-6)
        raw = str(ex.tokens[ex.focus] or "")
        key = _clean(raw).lower() or raw
        token_w[key] += v
        span = next(((s, e, t) for s, e, t in word_spans(ex.tokens) if s <= ex.focus < e), None)
        if span is None:
            roles[key]["word"] += v
            forms[key][_clean(raw) or _shown(raw)] += v
            continue
        s, e, text = span
        whole = e - s == 1 or all(float(a) > 0 for a in ex.acts[s:e])
        role = "word" if whole else "start" if ex.focus == s else "end" if ex.focus == e - 1 else "inner"
        roles[key][role] += v
        # a word the feature fires on throughout is shown whole; a piece as itself
        forms[key][text if role == "word" else (_clean(raw) or _shown(raw))] += v
        if role != "word":
            hosts[key][text.lower()] += v
        word_w[text.lower()] += v
        word_forms[text.lower()][text] += v
    total = sum(token_w.values())
    words = tuple((max(word_forms[w].items(), key=lambda kv: (kv[1], kv[0]))[0], round(wt / max(total, 1e-9), 4))
                  for w, wt in sorted(word_w.items(), key=lambda kv: (-kv[1], kv[0])))
    if not total:
        return Focus("words")
    key, weight = min(token_w.items(), key=lambda kv: (-kv[1], kv[0]))
    share = weight / total
    if share < TOKEN_SHARE:
        return Focus("words", share=share, words=words)
    role = min(roles[key].items(), key=lambda kv: (-kv[1], kv[0]))[0]
    shown = max(forms[key].items(), key=lambda kv: (kv[1], kv[0]))[0]
    if role == "word":
        return Focus("token", shown, "word", share, words)
    top_hosts = tuple(h for h, _ in sorted(hosts[key].items(), key=lambda kv: (-kv[1], kv[0]))[:8])
    return Focus("piece", shown, role, share, words, top_hosts)


def context_words(ex: Example, radius: int) -> list[str]:
    """Lower-cased words and adjacent word pairs within `radius` words of the focus word (the focus word left out),
    without stop-words, numbers or punctuation."""
    spans = word_spans(ex.tokens)
    at = next((i for i, (s, e, _) in enumerate(spans) if s <= ex.focus < e), None)
    if at is None:
        return []
    near = [(i, spans[i][2].lower()) for i in range(max(0, at - radius), min(len(spans), at + radius + 1))]
    out = [w for i, w in near if i != at and _is_content(w)]
    out += [f"{a} {b}" for (i, a), (j, b) in zip(near, near[1:])
            if i != at and j != at and _is_content(a) and _is_content(b)]
    return out


def candidates(examples: Sequence[Example], idf: Mapping[str, float] | None = None, radius: int = 6,
               max_focus: int = 8, max_context: int = 4) -> Candidates:
    """A feature's candidate phrases: the words it fires on (most activating first), for a word piece the words
    that hold it, and the words around the activations ranked by how many visible examples hold them times how
    rare they are across features (`idf`)."""
    focus = read_focus(examples)
    n = max(len(examples), 1)
    held: Counter[str] = Counter()
    for ex in examples:
        held.update(set(context_words(ex, radius)))
    focus_words = tuple(w for w, _ in focus.words[:max_focus])
    taken = {w.lower() for w in focus_words} | {focus.token.lower()} | set(focus.hosts)
    ranked = sorted(((c, k / n * (idf.get(c, 1.0) if idf else 1.0)) for c, k in held.items() if c not in taken),
                    key=lambda kv: (-kv[1], kv[0]))
    context = tuple(c for c, _ in ranked[:max_context])
    return Candidates(focus, focus_words + tuple(h for h in focus.hosts if h not in focus_words), context)


def document_frequency(per_feature: Sequence[Sequence[Example]], radius: int = 6) -> dict[str, float]:
    """Inverse document frequency of context words over features: a word around every feature's activations
    (the corpus's boilerplate) weighs little."""
    df: Counter[str] = Counter()
    for examples in per_feature:
        df.update({w for ex in examples for w in context_words(ex, radius)})
    n = len(per_feature)
    return {w: math.log((1 + n) / (1 + k)) + 1.0 for w, k in df.items()}


def select(vectors: np.ndarray, pos: np.ndarray, neg: np.ndarray, k: int, start: Sequence[int] = (),
           min_gain: float = 0.005) -> list[int]:
    """Forward selection of up to `k` phrases (rows of `vectors`) whose mean vector best ranks the activating
    contexts `pos` above the non-activating `neg` (AUROC, ties broken by the mean margin); stops when a phrase adds
    less than `min_gain`. `start` is kept as chosen."""
    chosen = list(start)
    sims_pos, sims_neg = vectors @ pos.T, vectors @ neg.T
    best = _objective(sims_pos[chosen].sum(0, keepdims=True), sims_neg[chosen].sum(0, keepdims=True))[0] \
        if chosen else -np.inf
    while len(chosen) - len(start) < k:
        rest = np.array([i for i in range(len(vectors)) if i not in chosen], np.int64)
        if not len(rest):
            break
        base_p = sims_pos[chosen].sum(0) if chosen else 0.0
        base_n = sims_neg[chosen].sum(0) if chosen else 0.0
        score = _objective(sims_pos[rest] + base_p, sims_neg[rest] + base_n)
        i = int(np.argmax(score))
        if score[i] < best + min_gain:
            break
        best = score[i]
        chosen.append(int(rest[i]))
    return chosen[len(start):]


def _objective(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Per row: AUROC of summed cosines (p [m, P] against n [m, N]) plus a small share of the mean margin."""
    if not p.shape[1] or not n.shape[1]:
        return p.mean(1) if p.shape[1] else np.zeros(len(p))
    wins = (p[:, :, None] > n[:, None, :]).mean((1, 2)) + 0.5 * (p[:, :, None] == n[:, None, :]).mean((1, 2))
    scale = np.maximum(np.abs(p).max(1), 1e-9)
    return wins + 0.1 * (p.mean(1) - n.mean(1)) / scale


def explain(c: Candidates, vectors: Mapping[str, np.ndarray], pos: np.ndarray, neg: np.ndarray,
            max_words: int = 4, context_gain: float = 0.03) -> str:
    """The explanation of one feature from its candidates, their unit vectors, and the unit vectors of its visible
    activating (`pos`) and non-activating (`neg`) contexts.

    Up to `max_words` of the words it fires on are chosen together (`select`); a feature that fires on one token
    is named by that token first, a word piece as a piece with words that hold it. A phrase from around the
    activations is added only when it improves the choice by `context_gain` (on the demo, words around the
    activations more often blurred an explanation than sharpened it)."""
    f = c.focus
    pos, neg = np.asarray(pos, np.float32), np.asarray(neg, np.float32)

    def chosen(phrases: Sequence[str], k: int, start: Sequence[str] = (), gain: float = 0.0) -> list[str]:
        have = [p for p in phrases if p in vectors and p not in start]
        if not have or not len(pos):
            return list(phrases[:k]) if not start else []
        rows = [vectors[p] for p in start] + [vectors[p] for p in have]
        picks = select(np.stack(rows).astype(np.float32), pos, neg, k, range(len(start)), gain)
        return [have[i - len(start)] for i in picks]

    words = [w for w, _ in f.words[:8]]
    if f.kind == "piece":
        where = {"start": "at the start of", "end": "at the end of", "inner": "inside"}[f.role]
        picked = chosen(list(f.hosts), max_words)
        head = f'the word piece "{f.token}" {where} words' + (f" like {', '.join(picked)}" if picked else "")
    else:
        picked = chosen(words[:8], max_words)
        if f.kind == "token":
            also = [w for w in picked if w.lower() != f.token.lower()]
            named = f'the word "{f.token}"' if _is_content(f.token.lower()) else f"the token {_quoted(f.token)}"
            head = named + (f", also {', '.join(_quoted(w) if not _is_content(w.lower()) else w for w in also)}"
                            if also else "")
        else:
            head = ", ".join(picked) or "varied tokens"
    around = chosen(list(c.context_phrases), 1, [p for p in picked if p in vectors], context_gain)
    text = head + (f" in phrases about {around[0]}" if around else "")
    return text if len(text) <= MAX_CHARS else text[:MAX_CHARS - 1].rstrip() + "…"


def _clean(token: str) -> str:
    return str(token).replace("▁", " ").replace("Ġ", " ").removeprefix("##").strip()


def _starts_word(token: str) -> bool:
    return token[:1].isspace() or token[:1] in "▁Ġ"


def _shown(text: str) -> str:
    return text.strip() or "".join(_VISIBLE.get(ch, ch) for ch in text) or "∅"


def _quoted(text: str) -> str:
    shown = _shown(text)
    return f"'{shown}'" if '"' in shown else f'"{shown}"'


def _is_content(word: str) -> bool:
    return len(word) >= 2 and bool(_CONTENT.fullmatch(word)) and word not in ENGLISH_STOP_WORDS
