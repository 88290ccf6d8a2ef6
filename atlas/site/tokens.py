"""Example contexts as HTML: the hot loop of rendering, built a block of examples at a time.

A feature page holds about 80 examples of 30-odd tokens, so a 16k-feature site has some 40M token spans.
Each token's span is picked from per-vocabulary arrays with numpy (Python formats only the tokens that
fired), each row's markup is folded into its first and last span, and a block's spans are joined once and
cut where each group of rows ends. The result is UTF-8 that goes into the page file as it is (render.py
splices it in after the template ran), never through the template engine.

While being built, the UTF-8 is held in `str`s of one character per byte (decoded as Latin-1): joining
and cutting those is a plain memory copy, where real text with a single non-ASCII character would make
Python widen every piece, and `bytes.join` is several times slower than either.
"""

from __future__ import annotations

import math
import mmap
from typing import NamedTuple

import numpy as np
from markupsafe import Markup, escape

from atlas.site.charts import N_LEVELS, levels_of
from atlas.store.reads import ExampleBlock

# Invisible or line-breaking characters get a visible stand-in so every token has width.
_VISIBLE = str.maketrans({"\n": "↵", "\r": "␍", "\t": "⇥", "\u2028": "↵", "\u2029": "¶", "\x00": "␀"})


def display_token(text: str) -> str:
    shown = (text or "").translate(_VISIBLE)
    return shown if shown else "∅"


def _objects(values: list) -> np.ndarray:
    """An object array of exactly these values."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _bytewise(text: str) -> str:
    """`text` as UTF-8, one character per byte (see the module's docstring)."""
    return text.encode().decode("latin-1")


class TokenHtml:
    """Per token id, byte-wise UTF-8: its escaped display text, its id and its span when it did not fire.

    Arrays are indexed by `slots(ids)`: slot 0 is a missing token (id < 0), the last slot an id the
    vocabulary lacks."""

    def __init__(self, vocab: dict[int, str]):
        self.size = max((t for t in vocab if t >= 0), default=-1) + 1
        text = ["∅"] + ["�"] * (self.size + 1)
        for tid, tok in vocab.items():
            if tid >= 0:
                text[tid + 1] = str(escape(display_token(tok)))
        self.escaped = _objects([Markup(t) for t in text])
        self.text = _objects([_bytewise(t) for t in text])
        self.quiet = _objects([f"<span>{t}</span>" for t in self.text])
        ids = ["-1"] + [str(t) for t in range(self.size)] + ["?"]
        self.ids = _objects(ids)
        self.spaced_ids = _objects([" " + t for t in ids])

    def shown(self, tid: int) -> Markup:
        """One token's escaped display text; '�' for an id the vocabulary lacks."""
        return self.escaped[tid + 1 if 0 <= tid < self.size else self.size + 1]

    def slots(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        return np.where(ids < 0, 0, np.where(ids < self.size, ids + 1, self.size + 1))


# Opening of a marked token's span by level, then by level with the focus outline; a focus token
# that did not fire has no value to show.
_OPEN = _objects([f'<span class="a{k}" data-v="' for k in range(N_LEVELS + 1)]
                 + ['<span class="f">'] + [f'<span class="a{k} f" data-v="' for k in range(1, N_LEVELS + 1)])
_CUT = "\x00"  # ends a group of rows; escaped token text never holds it
# Constants go into numpy sums as one-element object arrays: as scalars numpy would make them fixed-width
# strings and drop a trailing NUL.
_FAR_OPEN, _FAR_CLOSE = _objects(['<span class="far">']), _objects(["</span>"])
_ROW_END = _objects(["</span></div>\n", "</span></div>\n" + _CUT])  # a row per line; the second ends a group
_ID_END = _objects([_CUT])
_NO_VALUE = _bytewise("–")


def _marked_spans(levs: np.ndarray, acts: np.ndarray, focus: np.ndarray, texts: np.ndarray) -> np.ndarray:
    """Spans of the tokens that fired or are the focus: their shade, and the value for the hover card."""
    opening = _OPEN[levs + (N_LEVELS + 1) * focus].tolist()
    return _objects([f'{o}{a:.6g}">{t}</span>' if fired else f"{o}{t}</span>"
                     for o, a, t, fired in zip(opening, acts.tolist(), texts.tolist(), (levs > 0).tolist())])


def _insert_empty(pieces: np.ndarray, at: np.ndarray) -> np.ndarray:
    return np.insert(pieces, at, _objects([""] * len(at)))


class ExampleHtml(NamedTuple):
    """A block's example rows as UTF-8, a group of rows after another: group k is buffer[starts[k]:ends[k]]."""

    buffer: bytes | mmap.mmap
    starts: np.ndarray
    ends: np.ndarray

    def group(self, k: int) -> memoryview:
        return memoryview(self.buffer)[int(self.starts[k]):int(self.ends[k])]


def example_html(ex: ExampleBlock, vmax: np.ndarray, tokens: TokenHtml, short_window: int,
                 group_end: np.ndarray) -> ExampleHtml:
    """The block's examples as finished `<div class="ex">` rows, a line each, in block order, in groups of
    rows: a group ends at each row where `group_end` is True (the last row's is).

    `vmax` is each row's colour-scale maximum. Tokens beyond ±short_window of the focus are wrapped in
    `.far`. Each span is one token; the row's `data-t` lists their ids in the same order, and a token
    that fired carries its value (`data-v`), so the hover card needs nothing more per token."""
    offsets = np.asarray(ex.offsets, dtype=np.int64)
    starts, ends = offsets[:-1], offsets[1:]
    lengths = ends - starts
    acts = np.nan_to_num(np.asarray(ex.acts, dtype=np.float64), nan=0.0)
    levs = levels_of(acts, np.repeat(np.asarray(vmax, dtype=np.float64), lengths))
    full = lengths > 0
    focus = starts + np.clip(np.asarray(ex.focus, dtype=np.int64), 0, np.maximum(lengths - 1, 0))
    is_focus = np.zeros(len(acts), dtype=bool)
    is_focus[focus[full]] = True

    slots = tokens.slots(ex.token_ids)
    spans = tokens.quiet[slots]
    marked = np.flatnonzero((levs > 0) | is_focus)
    spans[marked] = _marked_spans(levs[marked], acts[marked], is_focus[marked], tokens.text[slots[marked]])
    lo, hi = np.maximum(starts, focus - short_window), np.minimum(ends, focus + short_window + 1)
    left, right = full & (lo > starts), full & (hi < ends)
    spans[starts[left]] = _FAR_OPEN + spans[starts[left]]
    spans[lo[left] - 1] = spans[lo[left] - 1] + _FAR_CLOSE
    spans[hi[right]] = _FAR_OPEN + spans[hi[right]]
    spans[ends[right] - 1] = spans[ends[right] - 1] + _FAR_CLOSE

    ids = tokens.spaced_ids[slots]
    ids[starts[full]] = tokens.ids[slots[starts[full]]]
    odd = np.flatnonzero((slots == 0) | (slots == tokens.size + 1))
    if len(odd):
        ids[odd] = _objects([f" {t}" for t in np.asarray(ex.token_ids)[odd].tolist()])
        ids[starts[full]] = _objects([t.lstrip() for t in ids[starts[full]].tolist()])
    if not full.all():  # an empty row still needs a piece to carry its markup
        empty = np.flatnonzero(~full)
        spans, ids = _insert_empty(spans, starts[empty]), _insert_empty(ids, starts[empty])
        starts = starts + np.cumsum(~full) - ~full
        ends = starts + np.maximum(lengths, 1)
    first, last = starts, ends - 1

    ids[last] = ids[last] + _ID_END
    values = [f"{v:.3g}" if math.isfinite(v) else _NO_VALUE for v in ex.value.tolist()]
    heads = [f'<div class="ex"><span class="exv">{v}</span><span class="tok" data-t="{i}">'
             for v, i in zip(values, "".join(ids.tolist()).split(_CUT))]
    spans[first] = _objects(heads) + spans[first]
    spans[last] = spans[last] + _ROW_END[np.asarray(group_end, dtype=np.int64)]
    buffer = "".join(spans.tolist()).encode("latin-1")
    cuts = np.flatnonzero(np.frombuffer(buffer, dtype=np.uint8) == 0)
    return ExampleHtml(buffer, np.concatenate([[0], cuts[:-1] + 1]).astype(np.int64), cuts)
