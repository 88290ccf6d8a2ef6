"""The feature page's steering section: the stored previews as side-by-side continuations with a strength control,
or a sentence saying why there are none and how to make one.

Model output is untrusted text: every token comes escaped from `TokenHtml`, and numbers are formatted here, so
nothing the model wrote can become markup. The continuations are plain HTML (about 15 rows of 24 tokens), so the
section reads without the page's script too; the script only adds the strength control.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from markupsafe import Markup, escape

from atlas.site.charts import levels_of
from atlas.site.model import SiteModel
from atlas.site.safe import fmt

COMMAND = 'atlas steer ATLAS {feature} "{prompt}"'
_DEFAULT_PROMPT = "I think that"


class SteerText(NamedTuple):
    """One continuation: its shaded tokens and whether the feature fires on them."""

    strength: str  # as the control labels it: "0", "+4", "−4"
    tokens: Markup  # finished token spans, escaped (TokenHtml), shaded by the feature's activation
    fires: str  # "fires on 7 of 24 tokens, max 12.3"
    ended: bool  # the model ended the text before the token limit
    added: str  # norm of the added vector ('' for the baseline)


class SteerPrompt(NamedTuple):
    prompt: str
    baseline: SteerText
    steered: tuple[SteerText, ...]  # one per non-zero strength, in the order of the control


@dataclass(frozen=True)
class SteeringView:
    """The steering section of one feature page; `prompts` empty: `message` (and `command`, when it would run)."""

    prompts: tuple[SteerPrompt, ...]
    strengths: tuple[str, ...]  # the control's labels, one per steered column
    default: int  # the strength shown first
    max_act: str
    message: str = ""
    command: str = ""


def strength_label(s: float) -> str:
    """+4, −4, 0, +0.5: the sign always shown, a true minus sign."""
    text = fmt(abs(s), 3)
    return "0" if s == 0 else ("+" if s > 0 else "\u2212") + text


def build_steering(model: SiteModel, n: int, stored: list[tuple]) -> SteeringView:
    """Feature n's section from its stored (prompt, prompt_text, strength, added_norm, token_ids, acts, ended)."""
    vmax = float(model.max_act[n])
    max_act = fmt(vmax)
    versions = model.versions
    if versions is not None and versions.current.site_path:
        return SteeringView((), (), 0, max_act, "Steering previews are made for the main SAE of this atlas "
                            f"({versions.entries[0].name}) only.")
    fact = model.info.get("steering") or {}
    if fact.get("status") == "unavailable":
        return SteeringView((), (), 0, max_act, f"No steering previews: {fact.get('note', '')}.")
    prompts = fact.get("prompts") or [_DEFAULT_PROMPT]
    command = COMMAND.format(feature=n, prompt=prompts[0])
    if not stored:
        n_made = int(fact.get("n_features") or 0)
        why = ("This atlas holds no steering previews." if not n_made else
               f"The build made steering previews for {n_made} chosen features (the listed ids, then cluster "
               "representatives and the densest) and this is not one of them.")
        return SteeringView((), (), 0, max_act, f"{why} To steer it yourself, run this with ATLAS being this "
                            "atlas's store (atlas.duckdb) or its TOML config:", command)
    by_prompt: dict[int, list[tuple]] = {}
    for row in stored:
        by_prompt.setdefault(int(row[0]), []).append(row)
    strengths = sorted({float(r[2]) for r in stored if float(r[2]) != 0.0})
    out = []
    for p in sorted(by_prompt):
        rows = {float(r[2]): r for r in by_prompt[p]}
        base = rows.get(0.0)
        if base is None:
            continue
        steered = tuple(_text(model, rows[s], vmax) if s in rows else _missing(s) for s in strengths)
        out.append(SteerPrompt(str(by_prompt[p][0][1]), _text(model, base, vmax), steered))
    positive = [i for i, s in enumerate(strengths) if s > 0]
    default = positive[(len(positive) - 1) // 2] if positive else 0  # the middle of the positive strengths
    return SteeringView(tuple(out), tuple(strength_label(s) for s in strengths), default, max_act)


def _missing(s: float) -> SteerText:
    return SteerText(strength_label(s), Markup(""), "not generated", False, "")


def _text(model: SiteModel, row: tuple, vmax: float) -> SteerText:
    _p, _prompt, strength, added, ids, acts, ended = row
    ids = [int(t) for t in (ids if ids is not None else [])]
    acts = np.nan_to_num(np.asarray(acts if acts is not None else [], dtype=np.float64)[: len(ids)], nan=0.0)
    acts = np.pad(acts, (0, len(ids) - len(acts)))
    levels = levels_of(acts, vmax).tolist()
    spans = []
    for tid, a, level in zip(ids, acts.tolist(), levels):
        shown = model.tokens.shown(tid)
        spans.append(f'<span class="a{level}" data-v="{a:.4g}">{shown}</span>' if level else f"<span>{shown}</span>")
    tokens = Markup(f'<span class="tok" data-t="{escape(" ".join(map(str, ids)))}">{"".join(spans)}</span>')
    fired = int((acts > 0).sum())
    if not ids:
        fires = "the model ended the text at once"
    elif fired:
        fires = f"fires on {fired} of {len(ids)} tokens, max {fmt(acts.max())}"
    else:
        fires = f"does not fire on its {len(ids)} tokens"
    return SteerText(strength_label(float(strength)), tokens, fires, bool(ended),
                     fmt(added, 3) if float(strength) != 0.0 else "")
