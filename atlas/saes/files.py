"""Reading SAE files safely (JSON, safetensors, numpy, weights-only torch pickles) with errors that say the fix."""

from __future__ import annotations

import json
import pickle
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from atlas.errors import SaeFormatError

_SAFETENSORS_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8,
}


def folder_of(path: Path) -> Path:
    """The folder an SAE lives in, whether the user named the folder or a file in it."""
    path = Path(path)
    return path if path.is_dir() else path.parent


def single_checkpoint(path: Path, pattern: str = "*.pt*") -> Path:
    """`path` itself if it is a file, else the one checkpoint matching `pattern` in the folder."""
    path = Path(path)
    if path.is_file():
        return path
    found = sorted(p for p in path.glob(pattern) if p.suffix in (".pt", ".pth"))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise SaeFormatError(
            f"{path} should hold exactly one checkpoint ({pattern}), found: {names}; point `[sae] path` at the file."
        )
    return found[0]


def read_json(path: Path) -> dict:
    """A JSON object from `path`, or an error naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SaeFormatError(f"{path} does not exist.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SaeFormatError(
            f"{path} is not valid JSON ({e}); the file is truncated or corrupt: download or copy it again."
        ) from None
    if not isinstance(data, dict):
        raise SaeFormatError(f"{path} should hold a JSON object, found {type(data).__name__}.")
    return data


def safetensors_header(path: Path) -> dict[str, dict]:
    """Tensor name → {dtype, shape} from a safetensors header, checking the file is as long as it says."""
    path = Path(path)
    size = path.stat().st_size
    try:
        with path.open("rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > size - 8:
                raise ValueError("header longer than file")
            header = json.loads(fh.read(n))
    except (struct.error, ValueError, UnicodeDecodeError) as e:
        raise _corrupt(path, e) from None
    header.pop("__metadata__", None)
    end = max((info["data_offsets"][1] for info in header.values()), default=0)
    if 8 + n + end > size:
        raise _corrupt(path, f"{size} bytes on disk, the header promises {8 + n + end}")
    return header


def load_safetensors(path: Path) -> dict[str, Tensor]:
    """Every tensor of a safetensors file, as stored (dtype unchanged)."""
    from safetensors.torch import load_file

    safetensors_header(path)
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # safetensors raises its own error types for every kind of damage
        raise _corrupt(path, e) from None


def load_npz(path: Path) -> dict[str, Tensor]:
    """Every array of a .npz file as a tensor; pickled object arrays are refused."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: torch.from_numpy(np.array(npz[name])) for name in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise _corrupt(path, e) from None


def load_pt(path: Path) -> dict:
    """A torch checkpoint read with weights_only=True: tensors, numbers, strings and containers, never code."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # old pickle protocols trigger a torch warning that says nothing about the file's safety
            warnings.simplefilter("ignore", UserWarning)
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e):
                    raise
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise SaeFormatError(
            f"{path} holds pickled Python objects (classes or functions), not just tensors, and feature-atlas only "
            "reads checkpoints with torch.load(weights_only=True) because unpickling runs arbitrary code. "
            "If you trust the file, re-save it as a plain state dict in the project that wrote it, e.g. "
            "`torch.save(model.state_dict(), 'sae.pt')` (for a backup checkpoint with an 'ae' entry: "
            "`torch.save(ckpt['ae'], 'ae.pt')`). "
            f"Detail: {_pickle_detail(e)}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise _corrupt(path, e) from None
    if not isinstance(obj, dict):
        raise SaeFormatError(
            f"{path} holds a {type(obj).__name__}, not a state dict of named tensors; re-save it with "
            "`torch.save(model.state_dict(), path)`."
        )
    return obj


def _pickle_detail(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln or "Unsupported" in ln]
    return lines[0] if lines else str(e).splitlines()[0]


def _corrupt(path: Path, detail) -> SaeFormatError:
    return SaeFormatError(
        f"{path} is truncated or corrupt ({detail}); download or copy it again and compare its size with the source."
    )


class TensorFile:
    """Named tensors from one file, with lookups that fail with the file name and the names found."""

    def __init__(self, path: Path, tensors: dict):
        self.path = Path(path)
        self.tensors = {k: v for k, v in tensors.items() if isinstance(v, Tensor)}
        self.extras = {k: v for k, v in tensors.items() if not isinstance(v, Tensor)}

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def first(self, *names: str) -> str | None:
        """The first of `names` present in the file."""
        return next((n for n in names if n in self.tensors), None)

    def get(self, *names: str) -> Tensor | None:
        """The first of `names` present, as float32, or None."""
        name = self.first(*names)
        return None if name is None else f32(self.tensors[name])

    def need(self, *names: str, why: str = "") -> Tensor:
        """The first of `names` present, as float32, or an error listing what the file holds."""
        t = self.get(*names)
        if t is None:
            found = ", ".join(sorted(self.tensors)[:20]) or "no tensors"
            wanted = " or ".join(repr(n) for n in names)
            raise SaeFormatError(
                f"{self.path} has no tensor {wanted}{' (' + why + ')' if why else ''}; it holds: {found}. "
                "The file is incomplete or belongs to another format: pass the right one with "
                '`[sae] format = "..."`.'
            )
        return t


def f32(t: Tensor) -> Tensor:
    """A float32 copy-free view where possible; bf16/fp16 files are computed in float32."""
    return t.detach().to(torch.float32)


def expect_shape(t: Tensor, shape: tuple[int, ...], name: str, path: Path, source: str, *, fixed: bool = True) -> None:
    """Fail unless `t` has `shape`, saying whether it looks transposed or disagrees with `source`.

    `fixed` says whether the format's file layout fixes the orientation; a square matrix whose orientation is not
    fixed cannot be checked by shape, so it is refused.
    """
    got = tuple(t.shape)
    if got == shape:
        if len(shape) == 2 and shape[0] == shape[1] and not fixed:
            raise SaeFormatError(
                f"{path}: {name} is square {list(got)}, and this file's layout does not fix which axis is which, "
                f"so a transposed {name} cannot be detected. Check with the tool that wrote the file that {name} "
                "is stored in the layout this format documents (see atlas/saes/FORMATS.md), then pass the format "
                'explicitly with `[sae] format = "..."`.'
            )
        return
    if len(got) == 2 and len(shape) == 2 and got == shape[::-1]:
        raise SaeFormatError(
            f"{path}: {name} has shape {list(got)} but this format stores it as {list(shape)}; it looks transposed "
            f"(some converters save it the wrong way round). Re-save it as {name}.T, or choose the format whose "
            'layout matches with `[sae] format = "..."`.'
        )
    raise SaeFormatError(
        f"{path}: {name} has shape {list(got)} but {source} implies {list(shape)}; the config contradicts the "
        "weights (or the tensor is damaged). Fix the config to match the weights, or copy the files again."
    )
