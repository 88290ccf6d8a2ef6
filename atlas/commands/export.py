"""`atlas export`: the store as Parquet files, or in Neuronpedia's export layout."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np

from atlas.store import Store
from atlas.store import queries, reads


def export_parquet(store: Store, folder: Path) -> list[Path]:
    """One Parquet file per table."""
    return store.export_parquet(folder)


def _write_batches(folder: Path, rows: list[dict], batch: int = 1024) -> None:
    """`rows` as gzipped JSON lines, `batch` rows a file: batch-0.jsonl.gz, batch-1.jsonl.gz, ..."""
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
    base = {"modelId": model_id, "layer": source_id}
    _write_batches(root / "features", _feature_rows(store, info, vocab, base))
    _write_batches(root / "activations", _activation_rows(store, vocab, base))
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


def _feature_rows(store: Store, info: dict, vocab: dict[int, str], base: dict) -> list[dict]:
    by = lambda frame: {int(k): g for k, g in frame.groupby("feature")}  # noqa: E731
    nb, lg, hs = by(queries.decoder_neighbours(store)), by(queries.logit_effects(store)), by(queries.histogram_bins(store))
    rows = []
    for r in reads.features(store).itertuples():
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
        rows.append(row)
    return rows


def _activation_rows(store: Store, vocab: dict[int, str], base: dict) -> list[dict]:
    rows = []
    for r in queries.example_windows(store).itertuples():
        vals = [float(v) for v in r.acts]
        rows.append({**base, "index": str(int(r.feature)), "id": f"{int(r.feature)}-{r.kind}-{r.bucket}-{r.rank}",
                     "tokens": [vocab.get(int(t), "") for t in r.token_ids], "values": vals,
                     "maxValue": float(r.value), "maxValueTokenIndex": int(r.focus), "minValue": min(vals)})
    return rows
