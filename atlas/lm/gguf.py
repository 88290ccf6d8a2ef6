"""A GGUF model file as an ordinary Hugging Face folder: converted once into the build's cache, keyed by the file's
sha256, and loaded like any other folder from then on.

The conversion dequantises every tensor to float32 (exact: the same values transformers computes when it loads the
GGUF itself, and the fastest form to load again) and writes config.json, model.safetensors and the tokenizer files
into a temporary folder that is renamed into place, so a killed conversion never leaves a half folder behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

from atlas.errors import ModelError

GGUF_MAGIC = b"GGUF"
# Weight files that make a folder a model of its own rather than a place that merely holds a GGUF.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
_SOURCE_FILE = "atlas-source.json"


def gguf_file(path: Path) -> Path | None:
    """The GGUF that a `[model] path` names (the file itself, or a folder's only model file when that is a GGUF), or
    None for a Hugging Face folder; anything else is refused with the fix."""
    if path.is_file():
        if not _has_magic(path):
            raise ModelError(
                f"{path} is a file but not a GGUF model (it does not start with the bytes 'GGUF'); point [model] path "
                "at a Hugging Face model folder (config.json, weights, tokenizer files) or at a .gguf file"
            )
        return path
    if not path.is_dir() or (path / "config.json").is_file():
        return None
    ggufs = sorted(p for p in path.glob("*.gguf") if p.is_file())
    if not ggufs:
        return None
    others = [p.name for p in path.iterdir() if p.suffix in _WEIGHT_SUFFIXES]
    if len(ggufs) > 1 or others:
        names = ", ".join([p.name for p in ggufs] + others)
        raise ModelError(f"{path} holds several model files ({names}); point [model] path at the one to use")
    if not _has_magic(ggufs[0]):
        raise ModelError(f"{ggufs[0]} is named .gguf but is not a GGUF file (it does not start with the bytes "
                         "'GGUF'); replace it with the model's GGUF file")
    return ggufs[0]


def _has_magic(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4) == GGUF_MAGIC


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def converted_folder(gguf: Path, cache_dir: Path) -> tuple[Path, bool]:
    """The Hugging Face folder converted from `gguf` under `cache_dir`, keyed by the file's sha256; converted now only
    when no earlier build did. Returns the folder and whether it was converted by this call.

    The folder is named after the GGUF (that name is what the atlas calls the model) inside one named by the hash.
    """
    digest = sha256_file(gguf)
    out = cache_dir / "models" / digest[:16] / gguf.stem
    if (out / _SOURCE_FILE).is_file():
        return out, False
    _convert(gguf, digest, out)
    return out, True


def _convert(gguf: Path, digest: str, out: Path) -> None:
    """Write the Hugging Face folder for `gguf` at `out`: complete or not at all."""
    config, tokenizer, tensors = _read(gguf)
    from safetensors.torch import save_file
    from transformers import GenerationConfig

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        config.save_pretrained(tmp)
        GenerationConfig.from_model_config(config).save_pretrained(tmp)
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(tmp)
        # written last: its presence is what says the folder is complete
        (tmp / _SOURCE_FILE).write_text(json.dumps({"gguf": gguf.name, "sha256": digest, "dtype": "float32"},
                                                   indent=1))
        try:
            os.replace(tmp, out)
        except OSError:
            if not (out / _SOURCE_FILE).is_file():  # another build's conversion of the same file got there first
                raise
    except OSError as exc:
        raise ModelError(f"cannot write the converted model at {out}: {exc.strerror or exc}; free some space or "
                         "point [atlas] cache_dir at a writable folder") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read(gguf: Path):
    """(config, tokenizer, float32 state dict named as the Hugging Face model names its parameters) of a GGUF."""
    _require_gguf_library(gguf)
    read = _read_direct if _has_gguf_reader() else _read_through_from_pretrained
    try:
        return read(gguf)
    except (ValueError, KeyError, IndexError, NotImplementedError, RuntimeError, EOFError, struct.error) as exc:
        raise ModelError(f"cannot read the GGUF model {gguf}: {exc}; the file may be truncated or damaged (fetch it "
                         "again), or of an architecture this transformers release cannot load") from exc


def _has_gguf_reader() -> bool:
    """Whether transformers has its own GGUF reader (5.17 and later); before it, its public loader is used."""
    try:
        from transformers.integrations.gguf import convert_gguf_tokenizer, get_gguf_tokenizer  # noqa: F401
        from transformers.integrations.gguf.reader import GgufHeader, load_gguf_state_dict  # noqa: F401
    except ImportError:
        return False
    return True


def _require_gguf_library(gguf: Path) -> None:
    try:
        import gguf as _gguf  # noqa: F401
    except ImportError as exc:
        raise ModelError(
            f"{gguf} is a GGUF model, and reading one needs the `gguf` package: pip install gguf accelerate "
            "(or run `make venv`), or point [model] path at a Hugging Face model folder"
        ) from exc
    import transformers

    if int(transformers.__version__.split(".")[0]) < 5:
        raise ModelError(f"{gguf} is a GGUF model, and reading one needs transformers 5 or later (installed: "
                         f"{transformers.__version__}): pip install 'transformers>=5'")


def _read_direct(gguf: Path):
    """Read the GGUF once per part: its config (transformers' mapping of the metadata), its tokenizer, and each tensor
    dequantised and renamed.

    transformers' own GGUF loading parses the whole file (vocabulary included) three times and rebuilds gguf's name
    map once per module (about 400 times); this does each once, in a third of the time, with the same values.
    """
    import gguf as gguf_lib
    import numpy as np
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast
    from transformers.integrations.gguf import convert_gguf_tokenizer, get_gguf_tokenizer
    from transformers.integrations.gguf.dequant import GGML_BLOCK, dequantize
    from transformers.integrations.gguf.reader import GgufHeader, load_gguf_state_dict
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor, load_gguf_checkpoint

    config_dict = load_gguf_checkpoint(str(gguf), return_tensors=False)["config"]
    config = AutoConfig.for_model(**config_dict)
    architecture, tokenizer_dict, tokenizer_config = get_gguf_tokenizer(str(gguf))
    backend, extra = convert_gguf_tokenizer(architecture, tokenizer_dict)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **tokenizer_config, **extra)
    header = GgufHeader.from_file(str(gguf))
    with torch.device("meta"):  # only the parameter names are needed, not the weights
        skeleton = AutoModelForCausalLM.from_config(config)
    names = list(skeleton.state_dict())
    config.architectures = [type(skeleton).__name__]
    config.dtype = torch.float32
    arch = next((k for k, v in gguf_lib.MODEL_ARCH_NAMES.items() if v == header.architecture), None)
    if arch is None:
        raise ModelError(f"{gguf}: the installed gguf package does not know the architecture "
                         f"{header.architecture!r}; upgrade it (pip install -U gguf)")
    name_map = gguf_lib.get_tensor_name_map(arch, config.num_hidden_layers)
    to_hf = {}
    for name in names:
        module, _, suffix = name.rpartition(".")
        gguf_name = name_map.get_name(module)
        if gguf_name is not None:
            to_hf[f"{gguf_name}.{suffix}"] = name
    # architecture-specific fixes of the stored layout (Llama's q/k rows are permuted for llama.cpp's rotary)
    processor = TENSOR_PROCESSORS.get(header.architecture, TensorProcessor)(config=config_dict)
    lazy = load_gguf_state_dict(header)
    tensors = {}
    for info in header.tensors:
        raw = lazy[info.name][None]
        values = (dequantize(raw.reshape(-1), info.ggml_type).reshape(info.shape) if info.ggml_type in GGML_BLOCK
                  else raw.float())
        fixed = processor.process(weights=values.numpy(), name=info.name, tensor_key_mapping=to_hf,
                                  parsed_parameters={})
        if fixed.name in to_hf:
            tensors[to_hf[fixed.name]] = torch.from_numpy(np.ascontiguousarray(fixed.weights, dtype=np.float32))
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    missing = sorted(set(names) - set(tensors) - tied)
    if missing:
        raise ModelError(f"{gguf}: no tensor in the file for {len(missing)} parameters of the model "
                         f"({', '.join(missing[:4])}, …); the file does not match its own architecture's layout")
    return config, tokenizer, tensors


def _read_through_from_pretrained(gguf: Path):
    """The same three parts through transformers' public GGUF loading (needs accelerate)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import accelerate  # noqa: F401
    except ImportError as exc:
        raise ModelError(f"{gguf} is a GGUF model, and this transformers release reads one only with the "
                         "`accelerate` package: pip install accelerate (or run `make venv`)") from exc
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = model.config
    if hasattr(config, "quantization_config"):  # it describes the GGUF, not the float32 weights written here
        del config.quantization_config
    tensors = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    if getattr(config, "tie_word_embeddings", False):
        tensors.pop("lm_head.weight", None)
    return config, tokenizer, tensors
