"""Example contexts as compact data: one script per feature, which the page's script turns into token rows.

A feature page holds about 80 examples of 30-odd tokens, so a 16k-feature site has some 40M tokens. As
HTML (a span per token, its id and value) they would be four fifths of every page's bytes, rewritten by
every template change. As data they live in a file of their own beside the page (`<n>.examples.js`), about
a quarter of that size, which depends on the store and a few settings only: a template change rewrites the
pages and keeps these files as they are.

The file sets `window.ATLAS_EXAMPLES` to `{"w": short window, "runs": [[row, ...], ...]}`. A row is
`[value shown, [token ids], focus index, [position, level, activation, ...]]`: the flat triples list the
tokens that fired, with their colour level (1..16) and value. Token texts come once for the whole site,
from `data/tokens.js` (`window.ATLAS_TOKENS`, id -> display text). Strings are JSON escaped so that no `<`,
`>`, `&` or line separator appears: a hostile token can neither end a script nor become markup, and the
page's script only ever sets text.

Building a block's scripts is the hot loop of rendering: token ids and their separators come from
per-vocabulary arrays with numpy and are cut per row by character offsets, so Python formats only rows
and the tokens that fired.
"""

from __future__ import annotations

import math
import mmap
from typing import NamedTuple

import numpy as np
from markupsafe import Markup, escape

from atlas.site.charts import levels_of
from atlas.site.safe import json_for_script
from atlas.store.reads import ExampleBlock

# Invisible or line-breaking characters get a visible stand-in so every token has width.
_VISIBLE = str.maketrans({"\n": "↵", "\r": "␍", "\t": "⇥", "\u2028": "↵", "\u2029": "¶", "\x00": "␀"})
MISSING, UNKNOWN = "∅", "\ufffd"  # shown for a missing token (id < 0) and for an id the vocabulary lacks


def display_token(text: str) -> str:
    shown = (text or "").translate(_VISIBLE)
    return shown if shown else "∅"


def _objects(values: list) -> np.ndarray:
    """An object array of exactly these values."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


class TokenHtml:
    """Per token id: its escaped display text (for HTML) and, for the example scripts, its id with a
    leading comma.

    Arrays are indexed by `slots(ids)`: slot 0 is a missing token (id < 0), the last slot an id the
    vocabulary lacks."""

    def __init__(self, vocab: dict[int, str]):
        self.size = max((t for t in vocab if t >= 0), default=-1) + 1
        self.known = sorted(t for t in vocab if t >= 0)
        self.text = [MISSING] + [UNKNOWN] * (self.size + 1)
        for tid, tok in vocab.items():
            if tid >= 0:
                self.text[tid + 1] = display_token(tok)
        self.escaped = _objects([escape(t) for t in self.text])
        self.comma_ids = _objects([",-1"] + [f",{t}" for t in range(self.size)] + [",?"])
        self.comma_len = np.array([len(t) for t in self.comma_ids], dtype=np.int64)

    def script(self) -> bytes:
        """`data/tokens.js`: the display text of every id in the vocabulary, for the example rows."""
        entries = ",".join(f'"{t}":{json_for_script(self.text[t + 1])}' for t in self.known)
        return f"window.ATLAS_TOKENS={{{entries}}};\n".encode()

    def shown(self, tid: int) -> Markup:
        """One token's escaped display text; '�' for an id the vocabulary lacks."""
        return self.escaped[tid + 1 if 0 <= tid < self.size else self.size + 1]

    def slots(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        return np.where(ids < 0, 0, np.where(ids < self.size, ids + 1, self.size + 1))


class ExampleScripts(NamedTuple):
    """A block's example scripts as UTF-8, one per feature of the block in order: feature lo + k's is
    buffer[starts[k]:ends[k]], empty for a feature with no examples."""

    buffer: bytes | mmap.mmap
    starts: np.ndarray
    ends: np.ndarray

    def script(self, k: int) -> bytes:
        return self.buffer[int(self.starts[k]):int(self.ends[k])]


def _cut(pieces: np.ndarray, lengths: np.ndarray, bounds: np.ndarray) -> list[str]:
    """The pieces joined, then cut at `bounds` (piece indexes, one more than there are parts)."""
    text = "".join(pieces.tolist())
    at = np.concatenate([[0], np.cumsum(lengths)])[bounds].tolist()
    return [text[a:b] for a, b in zip(at[:-1], at[1:])]


def example_scripts(ex: ExampleBlock, vmax: np.ndarray, tokens: TokenHtml, short_window: int,
                    run_ends: np.ndarray, lo: int, hi: int) -> ExampleScripts:
    """The example script of every feature in [lo, hi) (the block's rows are in feature order).

    `vmax` is each row's colour-scale maximum; `run_ends` is True at the last row of each run of rows
    the page shows as one group, and each run becomes one list of `runs`."""
    offsets = np.asarray(ex.offsets, dtype=np.int64)
    n_rows = len(offsets) - 1
    lengths = np.diff(offsets)
    raw = np.asarray(ex.token_ids, dtype=np.int64)
    acts = np.nan_to_num(np.asarray(ex.acts, dtype=np.float64), nan=0.0)
    levs = levels_of(acts, np.repeat(np.asarray(vmax, dtype=np.float64), lengths))
    focus = np.clip(np.asarray(ex.focus, dtype=np.int64), 0, np.maximum(lengths - 1, 0)).tolist()

    slots = tokens.slots(raw)
    pieces, widths = tokens.comma_ids[slots], tokens.comma_len[slots]
    odd = np.flatnonzero((slots == 0) | (slots == tokens.size + 1))
    if len(odd):
        pieces[odd] = _objects([f",{t}" for t in raw[odd].tolist()])
        widths[odd] = [len(p) for p in pieces[odd].tolist()]
    ids = _cut(pieces, widths, offsets)

    fired = np.flatnonzero(levs > 0)
    row_of = np.searchsorted(offsets, fired, "right") - 1
    marks = _objects([f",{p},{k},{a:.6g}" for p, k, a in
                      zip((fired - offsets[row_of]).tolist(), levs[fired].tolist(), acts[fired].tolist())])
    row_marks = _cut(marks, np.array([len(m) for m in marks.tolist()], dtype=np.int64),
                     np.searchsorted(fired, offsets, "left"))

    values = [f'"{v:.3g}"' if math.isfinite(v) else '"–"' for v in ex.value.tolist()]  # digits need no escaping
    rows = [f"[{v},[{i[1:]}],{f},[{m[1:]}]]" for v, i, f, m in zip(values, ids, focus, row_marks)]

    feature = np.asarray(ex.feature, dtype=np.int64)
    first = np.searchsorted(feature, np.arange(lo, hi + 1), "left").tolist()
    run_stops = (np.flatnonzero(run_ends) + 1).tolist() if n_rows else []
    scripts: list[bytes] = []
    r = 0
    for a, b in zip(first[:-1], first[1:]):
        if a == b:
            scripts.append(b"")
            continue
        runs, start = [], a
        while r < len(run_stops) and run_stops[r] <= b:
            runs.append("[" + ",".join(rows[start:run_stops[r]]) + "]")
            start = run_stops[r]
            r += 1
        scripts.append(f'window.ATLAS_EXAMPLES={{"w":{int(short_window)},"runs":[{",".join(runs)}]}};\n'.encode())
    sizes = np.array([len(s) for s in scripts], dtype=np.int64)
    ends = np.cumsum(sizes)
    return ExampleScripts(b"".join(scripts), ends - sizes, ends)
