"""The steering stage: previews of what chosen features of the main SAE do to the model's text, for their pages.

Features are taken in priority order (the listed ids, one representative per region, one per level-1 cluster, then
the densest) until `[steering] max_features` or the time budget is reached; each group of them is one batched
`atlas.lm.steering.steer` call. Only a causal LM can be steered: for an encoder the stage records that and nothing
else, and the pages say so.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from atlas.config import SteeringSection
from atlas.errors import AtlasError
from atlas.lm.activations import model_identity
from atlas.lm.steering import Preview, check_steerable, steer
from atlas.stages.harvest import write_vocab
from atlas.stages.inputs import SharedInputs
from atlas.stages.run import Keyed, Outcome, Status, StoreLedger, VersionRun, run_keyed
from atlas.store import Store, fixed_build_time, reads

if TYPE_CHECKING:
    from atlas.lm.adapter import ModelAdapter
    from atlas.saes import SaeWeights


def steering(shared: SharedInputs, run: VersionRun, sae: SaeWeights, analysis_key: str) -> str:
    """Write the `steering` table and the `steering` fact for the version's SAE; returns the stage's key."""
    cfg, store, model = run.cfg, run.store, shared.model
    st = cfg.steering
    try:
        check_steerable(model, sae)
    except AtlasError as exc:
        t0 = time.perf_counter()
        store.clear("steering")
        store.forget_stage("steering")  # the rows are gone: a later causal build must not reuse them
        store.set_info(steering={"status": "unavailable", "note": str(exc)})
        run.report.stage("steering", Status.SKIPPED, t0, str(exc).split(";")[0])
        return ""

    def compute(key: str) -> Outcome[None]:
        chosen, core = choose_features(store, sae, st)
        max_act = reads.features(store).set_index("feature")["max_act"].to_dict()
        rows, done, seconds = preview_features(model, sae, st, chosen, core, max_act, cfg.atlas.seed)
        frame = _frame(rows, st)
        store.replace_table("steering", frame)
        write_vocab(store, model, np.unique(np.concatenate([np.zeros(0, np.int64), *frame["token_ids"]])))
        cut = f"; time budget spent after {done} of {len(chosen)}" if done < len(chosen) else ""
        note = (f"{done} features × {len(st.prompts)} prompts × {len(set(_strengths(st)))} strengths, "
                f"{st.new_tokens} new tokens{cut}")
        store.set_info(steering={"status": "computed", "note": note, "prompts": list(st.prompts),
                                 "strengths": _strengths(st), "new_tokens": st.new_tokens, "n_features": done,
                                 "key": key})
        return Outcome(note=f"{note}, {len(frame) / max(seconds, 1e-9):,.1f} previews/s",
                       details={"features": done, "previews": len(frame)})

    return run_keyed(Keyed(
        "steering",
        inputs={"sae": sae.content_hash(), "model": model_identity(cfg.resolve(cfg.model.path)), "hook": shared.hook,
                "settings": cfg.section_dict("steering"), "seed": cfg.atlas.seed, "selection": analysis_key},
        ledger=StoreLedger(store),
        compute=compute,
    ), run.report).key


def _strengths(st: SteeringSection) -> list[float]:
    """The strengths shown, in the order given, with the unsteered baseline (0) first when the list lacks it."""
    order = list(dict.fromkeys(float(s) for s in st.strengths))
    return order if 0.0 in order else [0.0, *order]


def choose_features(store: Store, sae: SaeWeights, st: SteeringSection) -> tuple[list[int], int]:
    """The features to preview, in priority order, and how many of the first ones the time budget never drops
    (the listed ids and one representative per region)."""
    feats = reads.features(store)
    alive = feats.loc[feats["alive"].astype(bool), ["feature", "density"]]
    live = set(alive["feature"].tolist())
    chosen = list(dict.fromkeys(int(f) for f in st.features if 0 <= int(f) < sae.d_sae))
    core = len(chosen)
    if st.select in ("representatives", "all"):
        levels = _members_by_level(store)
        unit = sae.W_dec.float()
        unit = (unit / unit.norm(dim=1, keepdim=True).clamp_min(1e-12)).numpy()
        for level in sorted(levels)[:2]:
            for members in levels[level]:
                rep = _representative([m for m in members if m in live], unit)
                if rep is not None and rep not in chosen:
                    chosen.append(rep)
            if level == min(levels):
                core = len(chosen)
    if st.select in ("densest", "all"):
        order = alive.sort_values(["density", "feature"], ascending=[False, True], kind="stable")["feature"]
        chosen += [int(f) for f in order.tolist() if int(f) not in set(chosen)]
    if st.max_features:  # the config keeps the listed ids within it
        chosen = chosen[: st.max_features]
    return chosen, min(core, len(chosen))


def _members_by_level(store: Store) -> dict[int, list[list[int]]]:
    """Per cluster level, each cluster's member features (clusters in id order)."""
    clusters = reads.clusters(store)
    members = reads.cluster_members(store)
    by_cluster = members.groupby("cluster_id")["feature"].apply(list).to_dict()
    out: dict[int, list[list[int]]] = {}
    for cid, level in zip(clusters["cluster_id"].tolist(), clusters["level"].tolist()):
        out.setdefault(int(level), []).append([int(f) for f in by_cluster.get(cid, [])])
    return out


def _representative(members: list[int], unit: np.ndarray) -> int | None:
    """The member whose decoder direction is nearest the cluster's mean direction (lowest id on a tie)."""
    if not members:
        return None
    rows = unit[np.asarray(sorted(members))]
    score = rows @ rows.mean(axis=0)
    return int(sorted(members)[int(np.argmax(score))])


def preview_features(model: ModelAdapter, sae: SaeWeights, st: SteeringSection, chosen: list[int], core: int,
                     max_act: dict[int, float], seed: int) -> tuple[list[Preview], int, float]:
    """Previews of the chosen features, `features_per_call` at a time, until the time budget is spent (the
    first `core` are always made); returns them, how many features they cover and the seconds taken."""
    budget = st.time_budget_s if fixed_build_time() is None else 0.0
    t0 = time.perf_counter()
    rows, done = [], 0
    for start in range(0, len(chosen), st.features_per_call):
        if budget and start >= core and time.perf_counter() - t0 > budget:
            break
        group = chosen[start:start + st.features_per_call]
        rows += steer(model, sae, group, [float(max_act.get(f, 0.0)) for f in group], st.prompts, st.strengths,
                      st.new_tokens, seed)
        done += len(group)
    return rows, done, time.perf_counter() - t0


def _frame(rows: list[Preview], st: SteeringSection) -> pd.DataFrame:
    """The previews as the `steering` table's rows, by feature, prompt and strength."""
    frame = pd.DataFrame({
        "feature": np.array([r.feature for r in rows], np.int32),
        "prompt": np.array([r.prompt for r in rows], np.int32),
        "prompt_text": [st.prompts[r.prompt] for r in rows],
        "strength": np.array([r.strength for r in rows], np.float32),
        "added_norm": np.array([r.added_norm for r in rows], np.float32),
        "token_ids": [np.asarray(r.token_ids, np.int32) for r in rows],
        "text": [r.text for r in rows],
        "acts": [np.asarray(r.acts, np.float32) for r in rows],
        "ended": np.array([r.ended for r in rows], bool),
    })
    return frame.sort_values(["feature", "prompt", "strength"], kind="stable").reset_index(drop=True)
