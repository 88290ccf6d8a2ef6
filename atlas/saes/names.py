"""The SAE format names, read by the loader registry and by the config's choices; imports nothing, so the config
can list them without loading torch."""

from __future__ import annotations

# Each name is also the module of atlas.saes whose `load(path) -> list[SaeWeights]` reads that format.
FORMATS: tuple[str, ...] = (
    "saelens",
    "gemmascope",
    "sparsify",
    "openai",
    "dictionary_learning",
    "llamascope",
    "goodfire",
    "kissane",
    "apollo",
)
# Detect the format from the files (registry.detect_format).
AUTO = "auto"
# What `[sae] format` and `[[versions]] format` accept.
FORMAT_CHOICES: tuple[str, ...] = (AUTO, *FORMATS)
