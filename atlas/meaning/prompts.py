"""What the atlas asks a chat model, and how it reads the answers: the explanation prompt (top and interval examples
with the firing tokens marked <<like this>>, and the logit effects where there are some), the detection and fuzzing
scorers' prompts, and the cleaning every answer goes through, since whatever a model writes is untrusted text."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence

MAX_EXPLANATION = 200
_LEAD = re.compile(r"^\s*(?:\*\*)?\s*(?:final\s+)?(?:explanation|answer|label)\s*(?:\*\*)?\s*[:：-]\s*", re.IGNORECASE)

EXPLAIN_SYSTEM = (
    "You explain what a neuron-like feature of a language model responds to. You see text excerpts where the "
    "feature fires; the tokens it fires on are marked <<like this>>. Reply with one short explanation (a noun "
    "phrase of at most 12 words, e.g. \"the token ' in' in phrases about infection\" or \"names of French cities\"), "
    "on one line starting with 'Explanation:'. Name a word piece as a piece, not as a word that contains it.")
DETECTION_SYSTEM = (
    "You judge whether text excerpts match a description of a language-model feature. For each numbered excerpt, "
    "answer 1 if the feature described would fire somewhere in it and 0 if not. Reply with only a JSON list of 0s "
    "and 1s, one per excerpt, in order.")
FUZZING_SYSTEM = (
    "You judge whether marked tokens match a description of a language-model feature. In each numbered excerpt some "
    "tokens are marked <<like this>>. Answer 1 if the marked tokens are the ones the description is about, and 0 "
    "if they are not. Reply with only a JSON list of 0s and 1s, one per excerpt, in order.")


def marked(tokens: Sequence[str], acts: Sequence[float], lo: int = 0, hi: int | None = None) -> str:
    """The text of tokens[lo:hi] with every run of tokens whose activation is positive marked <<like this>>."""
    hi = len(tokens) if hi is None else hi
    out, inside = [], False
    for tok, a in zip(tokens[lo:hi], acts[lo:hi]):
        fires = float(a) > 0
        if fires and not inside:
            lead = len(tok) - len(tok.lstrip())
            out.append(tok[:lead] + "<<" + tok[lead:])
        elif not fires and inside:
            out[-1] += ">>"
            out.append(tok)
        else:
            out.append(tok)
        inside = fires
    if inside and out:
        out[-1] += ">>"
    return _one_line("".join(out))


def explanation_prompt(examples: Sequence[str], promoted: Sequence[str] = (),
                       suppressed: Sequence[str] = ()) -> list[dict[str, str]]:
    """The chat that asks for an explanation from marked examples (strongest first) and logit effects."""
    lines = [f"Excerpt {i + 1}: {text}" for i, text in enumerate(examples)]
    if promoted:
        lines.append("Tokens the feature makes more likely next: " + ", ".join(repr(t) for t in promoted))
    if suppressed:
        lines.append("Tokens it makes less likely next: " + ", ".join(repr(t) for t in suppressed))
    return [{"role": "system", "content": EXPLAIN_SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def judge_prompt(kind: str, explanation: str, excerpts: Sequence[str]) -> list[dict[str, str]]:
    """The chat of a detection or fuzzing scorer: the explanation and numbered excerpts."""
    system = {"detection": DETECTION_SYSTEM, "fuzzing": FUZZING_SYSTEM}[kind]
    body = [f"Description: {explanation}", ""] + [f"{i + 1}. {text}" for i, text in enumerate(excerpts)]
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(body)}]


def clean_text(text: str, limit: int = MAX_EXPLANATION) -> str:
    """Untrusted model output made safe to store: control and format characters dropped, whitespace collapsed,
    cut to `limit` characters. Escaping for HTML and scripts happens where it is written."""
    kept = "".join(" " if ch in "\t\n\r" else ch for ch in str(text)
                   if ch in "\t\n\r" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn"))
    kept = re.sub(r"\s+", " ", kept).strip()
    return kept if len(kept) <= limit else kept[:limit - 1].rstrip() + "…"


def parse_explanation(answer: str | None) -> str:
    """The explanation in a model's answer: the line after 'Explanation:' if there is one, else its first non-empty
    line, without surrounding quotes or markup; '' when nothing is left."""
    if not answer:
        return ""
    lines = [ln for ln in str(answer).splitlines() if ln.strip()]
    tagged = [ln for ln in lines if _LEAD.match(ln)]
    line = _LEAD.sub("", tagged[-1]) if tagged else (lines[0] if lines else "")
    line = clean_text(line).strip("*_`").strip()
    if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'“”":
        line = line[1:-1].strip()
    return clean_text(line)


def parse_flags(answer: str | None, n: int) -> list[int] | None:
    """n answers of 0 or 1 from a judge's reply (a JSON list, or the first n digits 0/1); None if there are not n."""
    if not answer:
        return None
    for found in re.findall(r"\[[^\[\]]*\]", answer):
        try:
            values = json.loads(found)
        except ValueError:
            continue
        if isinstance(values, list) and len(values) == n and all(v in (0, 1, True, False) for v in values):
            return [int(v) for v in values]
    digits = re.findall(r"(?<![\d.])[01](?![\d.])", answer)
    return [int(d) for d in digits[:n]] if len(digits) >= n else None


def balanced_accuracy(predicted: Sequence[int], truth: Sequence[int]) -> float:
    """Mean of the hit rates on the true and the false items (0.5 is chance)."""
    rates = []
    for side in (1, 0):
        idx = [i for i, t in enumerate(truth) if t == side]
        if idx:
            rates.append(sum(predicted[i] == side for i in idx) / len(idx))
    return float(sum(rates) / len(rates)) if rates else float("nan")


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()
