"""Explanations and scores from a chat model: the explainer sees a feature's visible examples with the firing
tokens marked and its logit effects; the detection and fuzzing scorers judge an explanation on held-out contexts
only. Features are asked in the order given, so a spent budget leaves out the last ones."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from atlas.meaning.endpoint import ChatClient
from atlas.meaning.evidence import Evidence
from atlas.meaning.prompts import (balanced_accuracy, explanation_prompt, judge_prompt, marked, parse_explanation,
                                   parse_flags)


def llm_explanations(client: ChatClient, ev: Evidence, features: Sequence[int],
                     logits: dict[int, tuple[list[int], list[int]]], n_examples: int = 20) -> dict[int, str]:
    """An explanation per feature from the endpoint, cleaned; features it could not do are left out."""
    chats = []
    for f in features:
        texts = []
        for i in ev.plan.visible.of(int(f))[:n_examples]:
            ids, acts = ev.examples.window(int(i))
            texts.append(marked(ev.strings([int(t) for t in ids]), acts.tolist()))
        promoted, suppressed = logits.get(int(f), ([], []))
        chats.append(explanation_prompt(texts, [s.strip() or s for s in ev.strings(promoted)],
                                        [s.strip() or s for s in ev.strings(suppressed)]))
    answers = client.ask_all(chats)
    out = {}
    for f, answer in zip(features, answers):
        text = parse_explanation(answer)
        if text:
            out[int(f)] = text
    return out


def llm_scores(client: ChatClient, ev: Evidence, items: Sequence[tuple[int, str, str]], scorers: Sequence[str],
               seed: int, n_each: int = 5) -> list[dict]:
    """Detection and fuzzing scores (balanced accuracy, 0.5 is chance) of (feature, source, text) items, asked in
    the order given; an item the endpoint could not judge gets no row."""
    rng = np.random.default_rng(seed)
    jobs, chats = [], []
    for f, source, text in items:
        for kind in scorers:
            excerpts, truth = (_detection if kind == "detection" else _fuzzing)(ev, int(f), n_each, rng)
            if len(set(truth)) < 2:
                continue
            jobs.append((int(f), source, kind, truth))
            chats.append(judge_prompt(kind, text, excerpts))
    rows = []
    for (f, source, kind, truth), answer in zip(jobs, client.ask_all(chats)):
        flags = parse_flags(answer, len(truth))
        if flags is not None:
            rows.append({"feature": f, "source": source, "scorer": kind, "score": balanced_accuracy(flags, truth),
                         "n_pos": int(sum(truth)), "n_neg": int(len(truth) - sum(truth))})
    return rows


def _detection(ev: Evidence, f: int, n: int, rng: np.random.Generator) -> tuple[list[str], list[int]]:
    """Held-out activating contexts and scorer-side non-activating ones, shuffled."""
    pos = ev.sets.held_out.of(f)[:n]
    neg = ev.sets.score_negatives.of(f)
    neg = neg if len(neg) <= n else rng.choice(neg, n, replace=False)
    items = [(ev.context_text(int(ev.sets.centres[r])), 1) for r in pos] + \
            [(ev.context_text(int(ev.sets.centres[r])), 0) for r in neg]
    order = rng.permutation(len(items))
    return [items[i][0] for i in order], [items[i][1] for i in order]


def _fuzzing(ev: Evidence, f: int, n: int, rng: np.random.Generator) -> tuple[list[str], list[int]]:
    """Held-out activating examples, half with the firing tokens marked and half with as many other tokens."""
    rows = ev.plan.held_out.of(f)[:2 * n]
    items = []
    for k, i in enumerate(rows):
        ids, acts = ev.examples.window(int(i))
        focus = int(ev.examples.focus[int(i)])
        lo, hi = max(0, focus - ev.radius), min(len(ids), focus + ev.radius + 1)
        acts = np.asarray(acts[lo:hi], np.float32)
        strings = ev.strings([int(t) for t in ids[lo:hi]])
        if k % 2 == 0 or not (acts <= 0).any():
            items.append((marked(strings, acts.tolist()), 1))
            continue
        wrong = np.zeros(len(acts), np.float32)
        quiet = np.flatnonzero(acts <= 0)
        wrong[rng.choice(quiet, min(len(quiet), max(1, int((acts > 0).sum()))), replace=False)] = 1.0
        items.append((marked(strings, wrong.tolist()), 0))
    order = rng.permutation(len(items))
    return [items[i][0] for i in order], [items[i][1] for i in order]
