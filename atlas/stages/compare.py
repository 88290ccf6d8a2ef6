"""The compare stage: match this SAE's features against the previous atlas's SAE and store the result."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import numpy as np
import pandas as pd

from atlas.analysis.diff import compare_dictionaries
from atlas.config import Config
from atlas.errors import ConfigError, DimensionError
from atlas.stages.run import Keyed, Outcome, StoreLedger, VersionRun, run_keyed
from atlas.store import Store

if TYPE_CHECKING:
    from atlas.saes import SaeWeights

COMPARE_TABLES = ("versions", "version_matches", "version_dead", "previous_features")
_NEEDED_INFO = ("sae_path_abs", "sae_format", "sae_hash", "d_in")


@dataclass(frozen=True)
class PreviousAtlas:
    """What this build needs from the previous atlas's store, read once and then closed."""

    store_path: Path
    title: str
    sae_path: Path
    sae_format: str
    sae_hash: str
    d_in: int
    site_path: str | None  # from this atlas's site folder to the previous one, URL-quoted; None when gone
    features: pd.DataFrame  # feature, alive, label

    def fingerprint(self) -> str:
        """Changes when anything the comparison or its pages show would change."""
        rows = json.dumps([self.features["alive"].astype(bool).tolist(), self.features["label"].tolist()])
        return hashlib.sha256("\n".join([str(self.store_path), self.title, self.sae_hash, str(self.site_path),
                                         rows]).encode()).hexdigest()[:16]


def read_previous(path: Path, own_store: Path, site_dir: Path) -> PreviousAtlas:
    """Read the previous atlas's facts; every failure names the file and the fix."""
    path = Path(path).resolve()
    fix = "point [compare] with_store at the previous build's atlas.duckdb, or remove [compare]"
    if path == Path(own_store).resolve():
        raise ConfigError(f"[compare] with_store = {path} is this atlas's own store; {fix}")
    if not path.is_file():
        raise ConfigError(f"[compare] with_store: the previous atlas's store {path} does not exist; {fix}")
    try:
        store = Store(path, read_only=True)
    except Exception as exc:  # duckdb's own errors stay inside atlas.store's types only by message
        raise ConfigError(f"[compare] with_store: {path} cannot be opened as an atlas store ({exc}); {fix}") from exc
    with store:
        info = store.info()
        missing = [k for k in _NEEDED_INFO if k not in info]
        if missing:
            raise ConfigError(f"[compare] with_store: {path} does not record {', '.join(missing)}; rebuild the "
                              "previous atlas with this version of feature-atlas first")
        feats = store.feature_states()
    sae_path = Path(info["sae_path_abs"])
    if not sae_path.exists():
        raise ConfigError(f"[compare] the previous atlas {path} was built from the SAE {sae_path}, which is gone; "
                          "put that SAE back there (or rebuild the previous atlas where its SAE now lives)")
    prev_site = Path(info["site_dir_abs"]) if info.get("site_dir_abs") else None
    site_path = None
    if prev_site is not None and (prev_site / "index.html").is_file():
        rel = os.path.relpath(prev_site.resolve(), Path(site_dir).resolve())
        site_path = quote(Path(rel).as_posix())
    feats["label"] = feats["label"].astype(object).where(feats["label"].notna(), "")
    return PreviousAtlas(
        store_path=path, title=str(info.get("title") or "the previous atlas"), sae_path=sae_path,
        sae_format=str(info["sae_format"]), sae_hash=str(info["sae_hash"]), d_in=int(info["d_in"]),
        site_path=site_path, features=feats,
    )


def clear_comparison(store: Store) -> None:
    """Forget an earlier comparison, so a build without [compare] shows none."""
    for name in COMPARE_TABLES:
        if store.count(name):
            store.clear(name)
    store.set_info(compare_counts=None)


def run_compare(store: Store, prev: PreviousAtlas, W_new: np.ndarray, d_in_new: int, name: str,
                old_sae=None) -> tuple[str, list[str]]:
    """Compare the previous SAE's decoder with `W_new` [F, d] and write the comparison tables.

    `old_sae` is the previous SAE when it is already loaded (another version of the same atlas); otherwise it
    is read from `prev.sae_path`. Returns (note, warnings).
    """
    from atlas.saes import load_sae

    warnings = []
    old = old_sae if old_sae is not None else load_sae(prev.sae_path, prev.sae_format)
    if old.d_in != d_in_new or old.W_dec.shape[1] != W_new.shape[1]:
        raise DimensionError(
            f"[compare] the previous SAE {prev.sae_path} reads {old.d_in}-wide activations but this one reads "
            f"{d_in_new}: they are not of the same layer and cannot be compared; point [compare] with_store at an "
            "atlas of the same hook")
    if old.content_hash() != prev.sae_hash:
        warnings.append(f"the previous SAE {prev.sae_path} changed since {prev.store_path} was built; the "
                        "comparison uses the file as it is now, the previous site shows the old one")
    alive_prev = np.zeros(old.d_sae, bool)
    known = prev.features["feature"].to_numpy()
    ok = known < old.d_sae
    alive_prev[known[ok]] = prev.features["alive"].to_numpy(bool)[ok]
    new_feats = store.feature_states()
    alive_new = np.zeros(len(W_new), bool)
    alive_new[new_feats["feature"].to_numpy()] = new_feats["alive"].to_numpy(bool)

    diff = compare_dictionaries(old.W_dec.float().numpy(), np.asarray(W_new, np.float32), alive_prev, alive_new)
    frames = diff.to_frames()
    store.replace_table("versions", pd.DataFrame({
        "role": ["previous"], "title": [name or prev.title], "store_path": [str(prev.store_path)],
        "sae_hash": [prev.sae_hash], "site_path": pd.array([prev.site_path], dtype=object),
        "d_sae": np.array([old.d_sae], np.int32),
    }))
    store.replace_table("version_matches", frames["version_matches"])
    store.replace_table("version_dead", frames["version_dead"])
    store.replace_table("previous_features", prev.features.astype({"feature": np.int32, "alive": bool}))
    counts = diff.counts()
    store.set_info(compare_counts=counts, compare_params=diff.params)
    note = ", ".join(f"{v:,} {k}" for k, v in counts.items() if not k.startswith("dead"))
    return f"against {name or prev.title}: {note}", warnings


@dataclass(frozen=True)
class Against:
    """What a version's features are compared with: the other atlas, the name its pages give it, its SAE when
    already loaded, and the comparison settings that belong in the key (None: none)."""

    previous: PreviousAtlas
    name: str
    old_sae: SaeWeights | None = None
    settings: dict | None = None


def configured(cfg: Config, store_path: Path, site_dir: Path) -> Against | None:
    """The previous atlas that `[compare]` names, or None without one."""
    if not cfg.compare.with_store:
        return None
    prev = read_previous(cfg.resolve(cfg.compare.with_store), store_path, site_dir)
    return Against(prev, cfg.compare.name, settings=cfg.section_dict("compare"))


def compare(run: VersionRun, sae: SaeWeights, analysis_key: str, against: Callable[[], Against | None]) -> str:
    """Match the version's features against what `against()` gives, or forget an earlier comparison when it gives
    None; returns the stage's key ('' without a comparison)."""
    target = against()
    if target is None:
        if run.store.stage_hash("compare") is not None:
            clear_comparison(run.store)
            run.store.forget_stage("compare")
        return ""
    prev = target.previous
    inputs = {"previous": prev.fingerprint(), "sae": sae.content_hash(), "analysis": analysis_key}
    if target.settings is not None:
        inputs["settings"] = target.settings

    def compute(key: str) -> Outcome[None]:
        note, warnings = run_compare(run.store, prev, sae.W_dec.float().numpy(), sae.d_in, target.name,
                                     old_sae=target.old_sae)
        for w in warnings:
            run.report.warn(w)
        return Outcome(note=note)

    return run_keyed(Keyed("compare", inputs=inputs, ledger=StoreLedger(run.store), compute=compute),
                     run.report).key
