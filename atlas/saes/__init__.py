"""SAE loaders: every supported on-disk format becomes one `SaeWeights` record (see FORMATS.md)."""

from atlas.saes.record import Activation, InputNorm, SaeWeights
from atlas.saes.registry import FORMATS, detect_format, load_sae, load_sae_candidates

__all__ = [
    "FORMATS",
    "Activation",
    "InputNorm",
    "SaeWeights",
    "detect_format",
    "load_sae",
    "load_sae_candidates",
]
