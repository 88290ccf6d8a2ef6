"""Example contexts as one line of HTML tokens: the hot loop of rendering, kept free of templates."""

from __future__ import annotations

import math

import numpy as np
from markupsafe import escape

from atlas.site.charts import N_LEVELS

# Invisible or line-breaking characters get a visible stand-in so every token has width.
_VISIBLE = str.maketrans({"\n": "↵", "\r": "␍", "\t": "⇥", "\u2028": "↵", "\u2029": "¶", "\x00": "␀"})


def display_token(text: str) -> str:
    shown = (text or "").translate(_VISIBLE)
    return shown if shown else "∅"


class TokenHtml:
    """Escaped display text per token id, and the finished span of a token that did not fire."""

    def __init__(self, vocab: dict[int, str]):
        self.text = {tid: str(escape(display_token(tok))) for tid, tok in vocab.items()}
        self.quiet = {tid: f'<span data-t="{tid}">{t}</span>' for tid, t in self.text.items()}

    def get_text(self, tid: int) -> str:
        return self.text.get(tid, "�") if tid >= 0 else "∅"

    def quiet_span(self, tid: int) -> str:
        span = self.quiet.get(tid)
        return span if span is not None else f'<span data-t="{tid}">{self.get_text(tid)}</span>'


def levels_of(acts: np.ndarray, vmax: float) -> np.ndarray:
    """Colour level per token: 0 when it did not fire, else 1..N in proportion to act / vmax."""
    a = np.nan_to_num(acts.astype(np.float64), nan=0.0)
    if not vmax > 0:
        return np.zeros(len(a), dtype=np.int64)
    lev = np.clip(np.ceil(a / vmax * N_LEVELS), 0, N_LEVELS).astype(np.int64)
    lev[(a > 0) & (lev == 0)] = 1
    return lev


def example_line(ids: list[int], levs: list[int], acts: list[float], focus: int, tokens: TokenHtml,
                 short_window: int) -> str:
    """One example: tokens shaded by activation; those beyond ±short_window are wrapped in `.far`.

    Each token carries its id (data-t) and, when it fired, its value (data-v) for the hover card."""
    n = len(ids)
    if n == 0:
        return ""
    focus = min(max(int(focus), 0), n - 1)
    lo, hi = max(0, focus - short_window), min(n, focus + short_window + 1)
    out: list[str] = ['<span class="far">'] if lo > 0 else []
    quiet, text = tokens.quiet, tokens.get_text
    append = out.append
    for i, tid in enumerate(ids):
        if i == hi:
            append('<span class="far">')
        lev = levs[i]
        if lev or i == focus:
            cls = (f"a{lev} f" if lev else "f") if i == focus else f"a{lev}"
            val = f' data-v="{acts[i]:.6g}"' if lev else ""
            append(f'<span class="{cls}"{val} data-t="{tid}">{text(tid)}</span>')
        else:
            span = quiet.get(tid)
            append(span if span is not None else tokens.quiet_span(tid))
        if i == lo - 1:
            append("</span>")
    if hi < n:
        out.append("</span>")
    return "".join(out)


def example_div(value: float, line: str) -> str:
    shown = "–" if value is None or not math.isfinite(value) else f"{value:.3g}"
    return f'<div class="ex"><span class="exv">{shown}</span><span class="tok">{line}</span></div>'
