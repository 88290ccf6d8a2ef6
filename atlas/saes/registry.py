"""Which on-disk format a path holds (the reference's §11 decision table), and the loader for each name."""

from __future__ import annotations

import importlib
from pathlib import Path

from atlas.errors import SaeFormatError
from atlas.saes.files import load_pt
from atlas.saes.names import AUTO, FORMATS
from atlas.saes.record import SaeWeights
from atlas.saes.validate import validate

_PT_SUFFIXES = (".pt", ".pth")


def detect_format(path: str | Path) -> str:
    """The format name of the SAE at `path` (a folder or a file), or SaeFormatError listing what was found."""
    path = Path(path)
    if not path.exists():
        raise SaeFormatError(f"The SAE path {path} does not exist; set `[sae] path` to an SAE folder or file.")
    if path.is_file():
        if path.suffix in _PT_SUFFIXES:
            return _detect_pt(path)
        if path.name == "final.safetensors" and path.parent.name == "checkpoints":
            return detect_format(path.parent.parent)
        return _detect_folder(path.parent, asked=path)
    return _detect_folder(path, asked=path)


def _detect_folder(folder: Path, asked: Path) -> str:
    has = lambda name: (folder / name).is_file()  # noqa: E731
    if has("sae_weights.safetensors"):
        if has("cfg.json"):
            return "saelens"
        if has("config.json"):
            return "llamascope"
    if has("hyperparams.json") and (folder / "checkpoints" / "final.safetensors").is_file():
        return "llamascope"
    if has("cfg.json") and has("sae.safetensors"):
        return "sparsify"
    if has("params.npz") or has("params.safetensors"):
        return "gemmascope"
    if has("ae.pt") and has("config.json"):
        return "dictionary_learning"
    if has("final_config.yaml") and any(folder.glob("samples_*.pt")):
        return "apollo"
    if folder.is_dir() and any((sub / "cfg.json").is_file() and (sub / "sae.safetensors").is_file()
                               for sub in folder.iterdir() if sub.is_dir()):
        return "sparsify"
    pts = sorted(p for p in folder.iterdir() if p.suffix in _PT_SUFFIXES) if folder.is_dir() else []
    if len(pts) == 1:
        return _detect_pt(pts[0])
    raise _unknown(asked, folder)


def _detect_pt(path: Path) -> str:
    state = load_pt(path)
    keys = set(state)
    if {"pre_bias", "latent_bias"} <= keys and "encoder.weight" in keys:
        return "openai"
    if any(k.startswith("encoder_linear.") for k in keys):
        return "goodfire"
    if any(".encoder.0.weight" in k for k in keys):
        return "apollo"
    has_config = any((p / "config.json").is_file() for p in (path.parent, path.parent.parent))
    if "ae" in keys or (has_config and keys & {"encoder.weight", "W_enc"}):
        return "dictionary_learning"
    if "W_enc" in keys and any(path.parent.glob("*_cfg.json")):
        return "kissane"
    raise _unknown(path, path.parent, keys=sorted(k for k in keys)[:15])


def _unknown(asked: Path, folder: Path, keys: list[str] | None = None) -> SaeFormatError:
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())[:20] if folder.is_dir() else []
    what = f"files {found}" + (f", tensors {keys}" if keys else "")
    return SaeFormatError(
        f"Cannot tell which SAE format {asked} is: found {what}. Supported formats: {', '.join(FORMATS)} "
        "(see atlas/saes/FORMATS.md for the files each one needs). If you know the format, set "
        '`[sae] format = "..."` in the config; if the path is a folder of several SAEs, point at one of them.'
    )


def load_sae_candidates(path: str | Path, format: str = AUTO) -> list[SaeWeights]:
    """Every plausible reading of the SAE at `path`: usually one; several where the format is ambiguous
    (each with its own `convention`), to be told apart by reconstruction error on real activations."""
    path = Path(path)
    if not path.exists():
        raise SaeFormatError(f"The SAE path {path} does not exist; set `[sae] path` to an SAE folder or file.")
    name = detect_format(path) if format == AUTO else format
    if name not in FORMATS:
        raise SaeFormatError(
            f'Unknown SAE format {format!r} for {path}; `[sae] format = "..."` takes "{AUTO}" or one of: '
            f"{', '.join(FORMATS)}."
        )
    module = importlib.import_module(f"atlas.saes.{name}")
    candidates = module.load(path)
    return [validate(c) for c in candidates]


def load_sae(path: str | Path, format: str = AUTO) -> SaeWeights:
    """The SAE at `path`; where the format is ambiguous, the reading its reference prefers (see `convention`)."""
    return load_sae_candidates(path, format)[0]
