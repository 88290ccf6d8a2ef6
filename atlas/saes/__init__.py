"""SAE loaders: every supported on-disk format becomes one `SaeWeights` record (see FORMATS.md).

The loaders need torch; they are imported on first use, so that `atlas.saes.names` (which the config reads) can be
imported without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from atlas.saes.names import FORMATS

if TYPE_CHECKING:
    from atlas.saes.record import Activation, InputNorm, SaeWeights
    from atlas.saes.registry import detect_format, load_sae, load_sae_candidates

_LAZY = {
    "Activation": "atlas.saes.record",
    "InputNorm": "atlas.saes.record",
    "SaeWeights": "atlas.saes.record",
    "detect_format": "atlas.saes.registry",
    "load_sae": "atlas.saes.registry",
    "load_sae_candidates": "atlas.saes.registry",
}

__all__ = [
    "FORMATS",
    "Activation",
    "InputNorm",
    "SaeWeights",
    "detect_format",
    "load_sae",
    "load_sae_candidates",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'atlas.saes' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
