"""Explanations from elsewhere: the user's override file, Neuronpedia exports and delphi runs.

Override file (TOML, or JSON with the same two tables)::

    [features]            # feature index → label shown instead of the automatic one
    4812 = "San Francisco landmarks"

    [clusters]            # "L<level>:f<feature>" → name of the cluster holding that feature
    "L1:f4812" = "Bay Area"

A cluster is keyed by one feature it contains ("the level-1 cluster containing feature 4812"), not
by its number: numbers change whenever clustering is rerun, but a name keyed to a feature follows
that feature's neighbourhood into the new clusters. The site should show each cluster's key
(`cluster_key`, using the member nearest the centre, which is the most likely to stay inside).
Looser spellings "1:4812", "L1/F4812" and "level 1 feature 4812" are read too. When two keys land
in the same cluster, the first in the file wins and the rest are reported as unused.
"""

from __future__ import annotations

import gzip
import json
import re
import tomllib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from atlas.errors import ConfigError

COLUMNS = ["feature", "source", "text", "score"]
_KEY = re.compile(r"^\s*(?:l|level)?\s*(\d+)\s*(?:[:/,.]|\s)\s*(?:f|feature)?\s*(\d+)\s*$", re.IGNORECASE)
_DELPHI_NAME = re.compile(r"^(?P<module>.+?)_latent(?P<index>\d+)(?:\.(?:txt|json))?$")


class ClusterKey(NamedTuple):
    """The cluster at `level` that contains `feature`."""

    level: int
    feature: int

    def __str__(self) -> str:
        return f"L{self.level}:f{self.feature}"


def parse_cluster_key(text: str | int) -> ClusterKey:
    m = _KEY.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a cluster key; write it as \"L<level>:f<feature>\", e.g. \"L1:f4812\"")
    return ClusterKey(int(m.group(1)), int(m.group(2)))


def load_overrides(path: str | Path | None) -> tuple[dict[int, str], dict[ClusterKey, str]]:
    """(feature → label, cluster key → name) from the user's override file; no path gives empties."""
    if path is None or str(path) == "":
        return {}, {}
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"labels file {path} does not exist; create it or leave [analysis] labels_file empty")
    text = path.read_text(encoding="utf-8")
    try:
        raw = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path} cannot be parsed: {exc}") from exc
    unknown = set(raw) - {"features", "clusters"}
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {', '.join(sorted(unknown))}; valid: features, clusters")
    features: dict[int, str] = {}
    for key, label in raw.get("features", {}).items():
        if not str(key).strip().isdigit() or not isinstance(label, str):
            raise ConfigError(f"{path}: [features] {key!r} = {label!r} must map a feature index to a text label")
        features[int(key)] = label
    clusters: dict[ClusterKey, str] = {}
    for key, name in raw.get("clusters", {}).items():
        try:
            ck = parse_cluster_key(key)
        except ValueError as exc:
            raise ConfigError(f"{path}: [clusters] {exc}") from None
        if not isinstance(name, str):
            raise ConfigError(f"{path}: [clusters] {key!r} must map to a text name")
        clusters.setdefault(ck, name)
    return features, clusters


def save_overrides(path: str | Path, features: dict[int, str], clusters: dict[ClusterKey, str]) -> None:
    """Write an override file (TOML) that `load_overrides` reads back unchanged."""
    lines = ["[features]"]
    lines += [f"{int(k)} = {_toml_str(v)}" for k, v in sorted(features.items())]
    lines += ["", "[clusters]"]
    lines += [f"{_toml_str(str(ClusterKey(*k)))} = {_toml_str(v)}" for k, v in sorted(clusters.items())]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _toml_str(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def cluster_key(level: int, member_features: np.ndarray, vectors: np.ndarray) -> ClusterKey:
    """The key to show for a cluster: its member nearest the members' mean direction."""
    centre = vectors.mean(axis=0)
    return ClusterKey(level, int(member_features[int(np.argmax(vectors @ centre))]))


def resolve_cluster_overrides(
    overrides: dict[ClusterKey, str], features: np.ndarray, hierarchy
) -> tuple[dict[tuple[int, int], str], list[ClusterKey]]:
    """Map override keys onto a hierarchy: ((level, cluster index) → name, keys that matched nothing).

    `features[row]` is the feature index of each hierarchy row (the alive features).
    """
    row_of = {int(f): r for r, f in enumerate(features)}
    names: dict[tuple[int, int], str] = {}
    unused: list[ClusterKey] = []
    for key, name in overrides.items():
        row = row_of.get(key.feature)
        if row is None or not 0 <= key.level < hierarchy.n_levels:
            unused.append(key)
            continue
        target = (key.level, int(hierarchy.labels[key.level][row]))
        if target in names:
            unused.append(key)
        else:
            names[target] = name
    return names, unused


# ---- Neuronpedia -----------------------------------------------------------------------------


def import_neuronpedia(path: str | Path) -> pd.DataFrame:
    """Explanations from a Neuronpedia export: rows (feature, source, text, score).

    `path` is the export folder (`{modelId}/{sourceId}/`, whose `explanations/batch-*.jsonl.gz`
    are read), the `explanations` folder itself, or one .jsonl / .jsonl.gz / .json file. Rows
    carry `index` (a string in exports), `description`, `typeName`, `explanationModelName`;
    API feature JSON with an `explanations` list is accepted too. Other batches (features,
    activations) are skipped. source is "neuronpedia:<explanationModelName or typeName>"; exports
    hold no scores, so score is NaN.
    """
    path = Path(path)
    if path.is_dir():
        folder = path / "explanations" if (path / "explanations").is_dir() else path
        files = sorted(folder.glob("*.jsonl.gz")) + sorted(folder.glob("*.jsonl")) + sorted(folder.glob("*.json"))
    elif path.is_file():
        files = [path]
    else:
        raise ConfigError(f"Neuronpedia export {path} does not exist")
    rows = []
    for f in files:
        for obj in _json_objects(f):
            nested = obj.get("explanations")
            for expl in nested if isinstance(nested, list) else [obj]:
                text = expl.get("description")
                index = expl.get("index", obj.get("index"))
                if text is None or index is None:
                    continue  # a feature or activation row
                model = expl.get("explanationModelName") or expl.get("typeName") or "unknown"
                rows.append((int(index), f"neuronpedia:{model}", str(text).strip(), np.nan))
    return _frame(rows)


def _json_objects(path: Path):
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        text = fh.read()
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, list):
        yield from (o for o in whole if isinstance(o, dict))
        return
    if isinstance(whole, dict):
        yield whole
        return
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path} line {n} is not JSON: {exc}") from None
            if isinstance(obj, dict):
                yield obj


# ---- delphi ----------------------------------------------------------------------------------


def import_delphi(path: str | Path, module: str | None = None, scorer: str | None = None) -> pd.DataFrame:
    """Explanations from a delphi run: rows (feature, "delphi", text, score).

    `path` is a run folder holding `explanations/` (and optionally `scores/<scorer>/`), an
    explanations folder, or one file. Files are named `<module>_latent<N>` (.txt, .json or bare)
    and hold the explanation as a JSON string, a JSON object with "explanation", or plain text.
    Score files, at `scores/<scorer>/<same name>`, hold a JSON list of judged examples; the
    score is the share with `correct` true among those with `correct` set (delphi's accuracy),
    averaged over scorers unless `scorer` picks one; NaN without score files. With several
    modules in the folder, pass `module` (e.g. "layers.5").
    """
    path = Path(path)
    if path.is_file():
        files, scores_dir = [path], None
    elif (path / "explanations").is_dir():
        files, scores_dir = _delphi_files(path / "explanations"), path / "scores"
    elif path.is_dir():
        files = _delphi_files(path)
        scores_dir = path.parent / "scores" if path.name == "explanations" else path / "scores"
    else:
        raise ConfigError(f"delphi results {path} do not exist")
    named = [(f, _DELPHI_NAME.match(f.name)) for f in files]
    named = [(f, m.group("module"), int(m.group("index"))) for f, m in named if m]
    modules = sorted({m for _, m, _ in named})
    if module is None and len(modules) > 1:
        raise ConfigError(f"{path} holds explanations of several modules ({', '.join(modules)}); pick one")
    rows = []
    for f, mod, index in named:
        if module is not None and mod != module:
            continue
        text = _delphi_text(f.read_text(encoding="utf-8"))
        if text:
            rows.append((index, "delphi", text, _delphi_score(scores_dir, f.name, scorer)))
    return _frame(rows)


def _delphi_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file())


def _delphi_text(content: str) -> str:
    try:
        value = json.loads(content)
    except json.JSONDecodeError:
        return content.strip()
    if isinstance(value, dict):
        value = value.get("explanation", "")
    return str(value).strip() if value is not None else ""


def _delphi_score(scores_dir: Path | None, name: str, scorer: str | None) -> float:
    if scores_dir is None or not scores_dir.is_dir():
        return float("nan")
    folders = [scores_dir / scorer] if scorer else sorted(p for p in scores_dir.iterdir() if p.is_dir())
    accs = []
    for folder in folders:
        f = folder / name
        if not f.is_file():
            continue
        try:
            judged = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            continue
        marks = [bool(e["correct"]) for e in judged if isinstance(e, dict) and e.get("correct") is not None]
        if marks:
            accs.append(float(np.mean(marks)))
    return float(np.mean(accs)) if accs else float("nan")


def _frame(rows) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=COLUMNS)
    df = df.astype({"feature": "int64", "source": "object", "text": "object", "score": "float64"})
    return df.sort_values(["feature", "source", "text"], kind="stable").reset_index(drop=True)
