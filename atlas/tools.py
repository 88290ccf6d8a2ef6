"""Command-line tools over a built atlas: search, inspect text, serve the site, export the store."""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from atlas.errors import AtlasError
from atlas.site.urls import SiteUrls
from atlas.store import Store
from atlas.store import reads


def open_atlas(path: str | Path) -> Store:
    """The store of an atlas given as its .duckdb file, its folder, or its TOML config."""
    p = Path(path)
    if p.suffix == ".toml":
        from atlas.config import load_config

        cfg = load_config(p)
        p = cfg.resolve(cfg.atlas.store)
    elif p.is_dir():
        found = sorted(p.glob("*.duckdb"))
        if not found:
            raise AtlasError(f"{p} holds no .duckdb store; pass the atlas's .duckdb file or its TOML config")
        p = found[0]
    if not p.is_file():
        raise AtlasError(f"{p} does not exist; pass the atlas's .duckdb file (see `atlas build`)")
    return Store(p, read_only=True)


@dataclass
class Hit:
    feature: int
    score: float
    label: str
    why: str
    page: str


def search(store: Store, query: str, limit: int = 20) -> list[Hit]:
    """Features whose label, explanations, top tokens or cluster names contain the query's words."""
    words = [w for w in re.findall(r"\w+", query.lower()) if w]
    if not words:
        return []
    feats = reads.features(store).set_index("feature")
    vocab = reads.vocab(store)
    fields: dict[int, list[tuple[str, str, float]]] = {}

    def add(f: int, kind: str, text: str, weight: float) -> None:
        if isinstance(text, str) and text:
            fields.setdefault(int(f), []).append((kind, text.lower(), weight))

    for f, label in feats["label"].items():
        add(f, "label", label, 3.0)
    for row in reads.labels(store).itertuples():
        add(row.feature, f"explanation ({row.source})", row.text, 2.0)
    for row in reads.top_tokens(store).itertuples():
        add(row.feature, "top token", vocab.get(int(row.token_id), "").strip(), 2.0)
    names = reads.clusters(store).set_index("cluster_id")["name"].to_dict()
    members = reads.cluster_members(store)
    for row in members.itertuples():
        add(row.feature, "cluster", names.get(int(row.cluster_id), ""), 1.0)
    urls = SiteUrls()
    hits = []
    for f, entries in fields.items():
        score, why = 0.0, []
        for w in words:
            best = max(((wt * (2.0 if re.search(rf"\b{re.escape(w)}\b", t) else 1.0), k)
                        for k, t, wt in entries if w in t), default=None)
            if best is None:
                score = 0.0
                break
            score += best[0]
            why.append(best[1])
        if score > 0:
            dens = float(feats.at[f, "density"]) if f in feats.index else 0.0
            hits.append(Hit(f, score + 1e-3 * np.log10(dens + 1e-9), str(feats.at[f, "label"]),
                            ", ".join(sorted(set(why))), urls.feature(f)))
    hits.sort(key=lambda h: (-h.score, h.feature))
    return hits[:limit]


def inspect_text(store: Store, text: str, top: int = 15) -> list[dict]:
    """Run the atlas's model and SAE on `text`; the features that fire most, with labels and pages."""
    import torch

    from atlas.models import load_model
    from atlas.saes import load_sae

    info = store.info()
    model_path, sae_path = info.get("model_path_abs"), info.get("sae_path_abs")
    if not model_path or not sae_path:
        raise AtlasError("this atlas does not record where its model and SAE are; rebuild it with `atlas build`")
    model = load_model(model_path, info["hook"])
    sae = load_sae(sae_path, info.get("sae_format", "auto"))
    if info.get("sae_input_scale"):
        sae.input_norm.scale = float(info["sae_input_scale"])
    enc = model.tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        f = sae.encode(model.activations(enc["input_ids"], enc["attention_mask"]))[0]
    tokens = model.token_strings(enc["input_ids"][0].tolist())
    peak, where = f.max(dim=0)
    order = torch.argsort(peak, descending=True)[:top]
    feats = reads.features(store).set_index("feature")
    urls = SiteUrls()
    out = []
    for i in order.tolist():
        if float(peak[i]) <= 0:
            break
        out.append({"feature": i, "max": float(peak[i]), "token": tokens[int(where[i])],
                    "n_tokens": int((f[:, i] > 0).sum()), "label": str(feats.at[i, "label"]) if i in feats.index else "",
                    "page": urls.feature(i)})
    return out


def export_parquet(store: Store, folder: Path) -> list[Path]:
    """One Parquet file per table."""
    return store.export_parquet(folder)


def _write_batches(folder: Path, rows: list[dict], batch: int = 1024) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n, start in enumerate(range(0, max(len(rows), 1), batch)):
        with gzip.open(folder / f"batch-{n}.jsonl.gz", "wt", encoding="utf-8") as fh:
            for row in rows[start:start + batch]:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def export_neuronpedia(store: Store, folder: Path, model_id: str = "", source_id: str = "") -> Path:
    """Write the atlas in Neuronpedia's export layout: features/, activations/, explanations/ batches."""
    info = store.info()
    model_id = model_id or re.sub(r"[^a-z0-9-]+", "-", str(info.get("model", "model")).lower()).strip("-")
    source_id = source_id or f"0-atlas-{info.get('d_sae', 0)}"
    root = folder / model_id / source_id
    vocab = reads.vocab(store)
    feats = reads.features(store)
    nbrs = store.query("SELECT feature, other, score FROM neighbours WHERE kind = 'decoder' ORDER BY feature, rank")
    logits = store.query("SELECT feature, sign, token_id, value FROM logits ORDER BY feature, sign, rank")
    hist = store.query("SELECT feature, lo, hi, count FROM histograms ORDER BY feature, bin")
    base = {"modelId": model_id, "layer": source_id}
    by = lambda frame: {int(k): g for k, g in frame.groupby("feature")}  # noqa: E731
    nb, lg, hs = by(nbrs), by(logits), by(hist)
    feature_rows = []
    for r in feats.itertuples():
        f = int(r.feature)
        row = {**base, "index": str(f), "maxActApprox": float(np.nan_to_num(r.max_act)),
               "frac_nonzero": float(r.density), "hookName": info.get("hook", "")}
        if f in nb:
            row["topkCosSimIndices"] = nb[f]["other"].astype(int).tolist()
            row["topkCosSimValues"] = nb[f]["score"].round(6).tolist()
        if f in lg:
            for sign, key in (("pos", "pos"), ("neg", "neg")):
                g = lg[f][lg[f]["sign"] == sign]
                row[f"{key}_str"] = [vocab.get(int(t), "") for t in g["token_id"]]
                row[f"{key}_values"] = g["value"].round(6).tolist()
        if f in hs:
            row["freq_hist_data_bar_heights"] = hs[f]["count"].astype(int).tolist()
            row["freq_hist_data_bar_values"] = ((hs[f]["lo"] + hs[f]["hi"]) / 2).round(6).tolist()
        feature_rows.append(row)
    _write_batches(root / "features", feature_rows)
    ex = store.query("SELECT feature, kind, bucket, rank, token_ids, acts, focus, value FROM examples "
                     "ORDER BY feature, kind, bucket, rank")
    act_rows = []
    for i, r in enumerate(ex.itertuples()):
        vals = [float(v) for v in r.acts]
        act_rows.append({**base, "index": str(int(r.feature)), "id": f"{int(r.feature)}-{r.kind}-{r.bucket}-{r.rank}",
                         "tokens": [vocab.get(int(t), "") for t in r.token_ids], "values": vals,
                         "maxValue": float(r.value), "maxValueTokenIndex": int(r.focus), "minValue": min(vals)})
    _write_batches(root / "activations", act_rows)
    labels = reads.labels(store)
    exp_rows = [{**base, "index": str(int(r.feature)), "id": f"{int(r.feature)}-{i}", "description": r.text,
                 "typeName": r.source, "explanationModelName": r.source, "authorId": "feature-atlas"}
                for i, r in enumerate(labels.itertuples())]
    _write_batches(root / "explanations", exp_rows)
    for name, obj in (("model", {"id": model_id}), ("source", {"id": source_id, "modelId": model_id,
                                                                "hasDashboards": True, "notes": "exported by feature-atlas"}),
                      ("sourceset", {"name": source_id.split("-", 1)[-1], "modelId": model_id}),
                      ("release", {"name": info.get("title", "")})):
        (root / f"{name}.jsonl").write_text(json.dumps(obj) + "\n")
    return root


def serve(site_dir: Path, port: int = 8000) -> None:
    """Preview the site on http://localhost:PORT (the site itself needs no server)."""
    import functools
    import http.server

    if not (site_dir / "index.html").is_file():
        raise AtlasError(f"{site_dir} holds no index.html; build the atlas first")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site_dir))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as httpd:
        print(f"Serving {site_dir} at http://127.0.0.1:{port}/ (Ctrl-C stops)")
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass


def hits_frame(hits: list[Hit]) -> pd.DataFrame:
    return pd.DataFrame([h.__dict__ for h in hits])
