"""Page contexts as tagged JSON, for the feature cache: reading a cache file back can build only the site's own
record types (dataclasses and named tuples defined in `atlas.site`), never run code the file names."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
from typing import Any

from markupsafe import Markup

_PACKAGE = "atlas.site."


class CodecError(ValueError):
    """The file does not hold page contexts this code can read."""


def dumps(value: Any) -> bytes:
    return json.dumps(_encode(value), separators=(",", ":"), ensure_ascii=False).encode()


def loads(data: bytes) -> Any:
    try:
        return _decode(json.loads(data))
    except (ValueError, TypeError, KeyError, AttributeError, ImportError) as exc:
        raise CodecError(str(exc)) from exc


def _type_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _encode(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, str)) and not isinstance(v, Markup):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else {"@f": repr(v)}
    if isinstance(v, Markup):
        return {"@m": str(v)}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {"@": _type_name(type(v)), "v": [_encode(getattr(v, f.name)) for f in dataclasses.fields(v)]}
    if isinstance(v, tuple) and hasattr(v, "_fields"):
        return {"@": _type_name(type(v)), "v": [_encode(x) for x in v]}
    if isinstance(v, tuple):
        return {"@t": [_encode(x) for x in v]}
    if isinstance(v, list):
        return [_encode(x) for x in v]
    if isinstance(v, dict):
        return {"@d": [[_encode(k), _encode(x)] for k, x in v.items()]}
    if hasattr(v, "item") and callable(v.item):  # a numpy scalar
        return _encode(v.item())
    raise TypeError(f"cannot store a {type(v).__name__} in a page context")


def _record_type(name: str) -> type:
    module, _, qualname = name.partition(":")
    if not module.startswith(_PACKAGE) or "." in qualname:
        raise ValueError(f"{name} is not one of the site's record types")
    cls = getattr(importlib.import_module(module), qualname)
    if not isinstance(cls, type) or not (dataclasses.is_dataclass(cls) or
                                         (issubclass(cls, tuple) and hasattr(cls, "_fields"))):
        raise ValueError(f"{name} is not one of the site's record types")
    return cls


def _decode(v: Any) -> Any:
    if isinstance(v, list):
        return [_decode(x) for x in v]
    if not isinstance(v, dict):
        return v
    if "@m" in v:
        return Markup(v["@m"])
    if "@t" in v:
        return tuple(_decode(x) for x in v["@t"])
    if "@d" in v:
        return {_decode(k): _decode(x) for k, x in v["@d"]}
    if "@f" in v:
        return float(v["@f"])
    if "@" in v:
        return _record_type(v["@"])(*[_decode(x) for x in v["v"]])
    raise ValueError("an untagged object")
