"""The activation colour scale and the small charts drawn as inline SVG (no script needed)."""

from __future__ import annotations

import functools
import math

import numpy as np
from markupsafe import Markup

from atlas.site.safe import fmt

N_LEVELS = 16


def _oklab_to_hex(L: float, C: float, h_deg: float) -> str:
    a, b = C * math.cos(math.radians(h_deg)), C * math.sin(math.radians(h_deg))
    l_ = (L + 0.3963377774 * a + 0.2158037573 * b) ** 3
    m_ = (L - 0.1055613458 * a - 0.0638541728 * b) ** 3
    s_ = (L - 0.0894841775 * a - 1.2914855480 * b) ** 3
    rgb = (
        4.0767416621 * l_ - 3.3077115913 * m_ + 0.2309699292 * s_,
        -1.2684380046 * l_ + 2.6097574011 * m_ - 0.3413193965 * s_,
        -0.0041960863 * l_ - 0.7034186147 * m_ + 1.7076147010 * s_,
    )

    def enc(c: float) -> int:
        c = min(1.0, max(0.0, c))
        c = 12.92 * c if c <= 0.0031308 else 1.055 * c ** (1 / 2.4) - 0.055
        return round(c * 255)

    return "#" + "".join(f"{enc(c):02x}" for c in rgb)


def _scale() -> list[tuple[str, bool]]:
    """(colour, dark) per level 1..N: even steps of OkLab lightness, so equal value steps look equal.

    Level 1 already carries a clear tint, so weak activations are visible next to zero (white)."""
    out = []
    for k in range(1, N_LEVELS + 1):
        t = (k - 1) / (N_LEVELS - 1)
        L = 0.93 - 0.45 * t
        out.append((_oklab_to_hex(L, 0.06 + 0.12 * t, 75 - 45 * t), L < 0.64))
    return out


SCALE = _scale()


def levels_of(acts: np.ndarray, vmax) -> np.ndarray:
    """Colour level per activation (a token's, or a histogram bar's): 0 when none, else 1..N in proportion
    to act / vmax.

    `vmax` is one number or one per activation."""
    a = np.nan_to_num(np.asarray(acts, dtype=np.float64), nan=0.0)
    vmax = np.broadcast_to(np.asarray(vmax, dtype=np.float64), a.shape)
    ok = vmax > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        lev = np.clip(np.ceil(np.where(ok, a / np.where(ok, vmax, 1.0), 0.0) * N_LEVELS), 0, N_LEVELS)
    lev = lev.astype(np.int64)
    lev[ok & (a > 0) & (lev == 0)] = 1
    return lev


def scale_css() -> str:
    """CSS classes a1..aN for token backgrounds and chart fills, shared by every page."""
    lines = []
    for k, (colour, dark) in enumerate(SCALE, start=1):
        text = "#fff" if dark else "#1a1a1a"
        lines.append(f".tok .a{k}{{background:{colour};color:{text}}}")
        lines.append(f"svg .a{k}{{fill:{colour}}}")
        lines.append(f".sw.a{k}{{background:{colour}}}")
    return "\n".join(lines) + "\n"


def legend_html() -> Markup:
    cells = "".join(f'<span class="sw a{k}"></span>' for k in range(1, N_LEVELS + 1))
    return Markup(f'<span class="legend" aria-hidden="true">0 {cells} max</span>')


@functools.lru_cache(maxsize=64)
def _bar_geometry(n_bins: int, width: int, pad_l: int, plot_w: int) -> tuple[tuple[str, ...], str]:
    """Each bar's x and the common bar width as text: the same for every histogram with n_bins bins."""
    bw = plot_w / n_bins
    return tuple(f"{pad_l + i * bw:.1f}" for i in range(n_bins)), f"{max(bw - 1, 0.5):.1f}"


def histogram_svg(bins: list[tuple], vmax: float, width: int = 640, height: int = 120) -> Markup:
    """Bars of the nonzero-activation histogram, coloured like the tokens; counts on hover."""
    if not bins:
        return Markup('<p class="muted">No histogram stored.</p>')
    pad_l, pad_b = 46, 18
    plot_w, plot_h = width - pad_l - 4, height - pad_b - 4
    lo = [float(b[1]) for b in bins]
    hi = [float(b[2]) for b in bins]
    counts = [int(b[3] or 0) for b in bins]
    top = max(counts) or 1
    xs, bar_w = _bar_geometry(len(bins), width, pad_l, plot_w)
    # Neighbouring bins share an edge, so each edge is formatted once. fmt of a float writes only digits,
    # signs, '.', 'e' and ',', which need no escaping.
    edges = {e: fmt(e) for e in {*lo, *hi}}
    h = np.asarray(counts, dtype=np.float64) * (plot_h / top)
    mid = (np.asarray(lo) + np.asarray(hi)) / 2
    levs = np.maximum(levels_of(mid, vmax), 1)  # a bin that holds activations is never unshaded
    parts = [
        f'<svg class="hist" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="Histogram of nonzero activations">'
    ]
    bars = [v for row in zip(levs.astype(np.int64).tolist(), xs, (4 + plot_h - h).tolist(), h.tolist(),
                             (edges[e] for e in lo), (edges[e] for e in hi), (f"{c:,}" for c in counts))
            for v in row]
    # One format call for all bars: the per-call cost dominates at 40 bars on thousands of pages.
    bar = f'<rect class="a%d" x="%s" y="%.1f" width="{bar_w}" height="%.1f"><title>%s – %s: %s</title></rect>'
    parts.append((bar * len(bins)) % tuple(bars))
    y0 = 4 + plot_h
    lo0, hi_last = float(bins[0][1]), float(bins[-1][2])
    parts.append(f'<line x1="{pad_l}" y1="{y0}" x2="{width - 4}" y2="{y0}" class="axis"/>')
    parts.append(f'<text x="{pad_l}" y="{height - 4}" class="tick">{edges[lo0]}</text>')
    parts.append(
        f'<text x="{width - 4}" y="{height - 4}" class="tick" text-anchor="end">{edges[hi_last]}</text>'
    )
    parts.append(f'<text x="{pad_l - 4}" y="12" class="tick" text-anchor="end">{top:,}</text>')
    parts.append(f'<text x="{pad_l - 4}" y="{y0}" class="tick" text-anchor="end">0</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def thumb_points_svg(xs, ys, cls: str, r: float) -> str:
    """Circles for a small map; coordinates already in the 0..1000 viewBox, y pointing down."""
    return "".join(f'<circle class="{cls}" cx="{x:.0f}" cy="{y:.0f}" r="{r}"/>' for x, y in zip(xs, ys))
