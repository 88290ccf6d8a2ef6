"""Data files loaded by `<script>` tags (file:// forbids fetch): the map points and the search shards."""

from __future__ import annotations

import numpy as np

from atlas.site.model import SiteModel
from atlas.site.safe import json_for_script
from atlas.site.tokens import display_token

# Map coordinates are sent as integers on a 0..GRID square: a fifth of the bytes of floats, and at
# 10^4 steps finer than a screen pixel at any useful zoom.
GRID = 10_000
SEARCH_SHARD_FEATURES = 20_000


def _quantiser(model: SiteModel):
    ok = model.alive & np.isfinite(model.x) & np.isfinite(model.y)
    if ok.any():
        x0, y0 = float(model.x[ok].min()), float(model.y[ok].min())
        span = max(float(model.x[ok].max()) - x0, float(model.y[ok].max()) - y0, 1e-9)
    else:
        x0, y0, span = 0.0, 0.0, 1.0

    def q(x, y):
        return (np.rint((np.asarray(x, float) - x0) / span * GRID).astype(np.int64),
                np.rint((np.asarray(y, float) - y0) / span * GRID).astype(np.int64))

    return ok, q


def map_data(model: SiteModel) -> dict:
    """Columns for the map: one entry per alive, laid-out feature, plus every cluster."""
    ok, q = _quantiser(model)
    ids = np.flatnonzero(ok)
    qx, qy = q(model.x[ids], model.y[ids])
    clusters = sorted(model.clusters.values(), key=lambda c: (c.level, c.cluster_id))
    index_of = {c.cluster_id: i for i, c in enumerate(clusters)}
    fc = [index_of.get(int(c), -1) for c in model.cluster_id[ids]]
    dens = model.density[ids]
    logd = np.where(dens > 0, np.round(np.log10(np.maximum(dens, 1e-12)) * 100), -1200).astype(np.int64)
    cl_rows = []
    for c in clusters:
        if c.x is not None and c.y is not None:
            cx, cy = q([c.x], [c.y])
            cx, cy = int(cx[0]), int(cy[0])
        else:
            cx = cy = None
        cl_rows.append([c.cluster_id, c.level, index_of.get(c.parent, -1) if c.parent is not None else -1,
                        c.name, c.size, cx, cy])
    return {
        "n": int(model.n_features),
        "grid": GRID,
        "ids": ids.tolist(),
        "x": qx.tolist(),
        "y": qy.tolist(),
        "fc": fc,
        "logd": logd.tolist(),
        "labels": [lab if lab is not None else "" for lab in model.label],
        "clusters": cl_rows,
        "levels": model.n_levels,
    }


def map_script(model: SiteModel) -> bytes:
    return ("window.ATLAS_MAP=" + json_for_script(map_data(model)) + ";\n").encode("utf-8")


def _clean(s: str) -> str:
    return " ".join(display_token(s).replace("\t", " ").split()).lower()


def search_lines(model: SiteModel) -> list[str]:
    """One lower-case line per feature: label, top tokens, other explanations, tab-separated."""
    lines = []
    for f in range(model.n_features):
        label = model.label[f] or ""
        toks = " ".join(_clean(model.vocab.get(t, "")) for t in model.top_tokens.get(f, []))
        others = " · ".join(_clean(t) for _src, t, _s in model.extra_labels.get(f, []) if t != label)
        lines.append(f"{_clean(label)}\t{toks}\t{others}".replace("\n", " "))
    return lines


def search_scripts(model: SiteModel) -> list[bytes]:
    lines = search_lines(model)
    out = []
    for k, start in enumerate(range(0, max(len(lines), 1), SEARCH_SHARD_FEATURES)):
        text = "\n".join(lines[start: start + SEARCH_SHARD_FEATURES])
        out.append(f"ATLAS_SEARCH_SHARD({k},{start},{json_for_script(text)});\n".encode("utf-8"))
    return out


def thumb_coords(model: SiteModel) -> dict[int, tuple[float, float]]:
    """Alive features in the 0..1000 viewBox of the small maps (y pointing down)."""
    ok = model.alive & np.isfinite(model.x) & np.isfinite(model.y)
    ids = np.flatnonzero(ok)
    if not len(ids):
        return {}
    x, y = model.x[ids], model.y[ids]
    span = max(float(x.max() - x.min()), float(y.max() - y.min()), 1e-9)
    tx = 20 + 960 * (x - x.min()) / span
    ty = 980 - 960 * (y - y.min()) / span
    return {int(f): (float(a), float(b)) for f, a, b in zip(ids, tx, ty)}


def thumb_svg(model: SiteModel) -> bytes:
    """The grey map behind every cluster page's highlight (a shared, cached image)."""
    xy = thumb_coords(model)
    pts = list(xy.values())
    if len(pts) > 6000:
        pts = pts[:: len(pts) // 6000 + 1]
    body = "".join(f'<circle cx="{x:.0f}" cy="{y:.0f}" r="3"/>' for x, y in pts)
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1000 1000">'
        '<rect width="1000" height="1000" fill="#fafafa"/>'
        f'<g fill="#c8c8c8">{body}</g></svg>\n'
    ).encode("utf-8")
