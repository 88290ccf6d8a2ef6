"""Embedding untrusted data in pages: JSON that cannot close a script tag, numbers rounded once."""

from __future__ import annotations

import json
import math
from typing import Any

from markupsafe import Markup

# Inside <script>, '</script>' or '<!--' in a string would end or confuse the element; U+2028/2029
# end a line in older JavaScript parsers. Escaping them keeps the JSON identical once parsed.
_SCRIPT_ESCAPES = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def json_for_script(value: Any) -> str:
    """Compact, key-sorted JSON safe to place inside a <script> element."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False)
    return text.translate(_SCRIPT_ESCAPES)


def script_json(value: Any) -> Markup:
    return Markup(json_for_script(value))


def rnd(x: Any, digits: int = 4) -> float | None:
    """A float rounded for output; None for missing or non-finite values."""
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(f):
        return None
    return round(f, digits)


_SIG = {k: f".{k}g" for k in range(1, 18)}


def fmt(x: Any, sig: int = 4) -> str:
    """A number for people: significant digits, thousands separators for big counts."""
    if x is None:
        return "–"
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(f):
        return "–"
    if abs(f) >= 1000 and f == int(f):
        return f"{int(f):,}"
    return format(f, _SIG.get(sig) or f".{sig}g")


def pct(x: Any, sig: int = 3) -> str:
    """A fraction as a percentage that stays readable for tiny densities (0.00042%)."""
    if x is None:
        return "–"
    f = float(x)
    if not math.isfinite(f):
        return "–"
    return f"{f * 100:.{sig}g}%"
