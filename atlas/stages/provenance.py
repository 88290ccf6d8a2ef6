"""Provenance: what the store records about a build (config, inputs, software, figures) and the corpus's
description."""

from __future__ import annotations

import platform
import time

import atlas
from atlas.config import Config
from atlas.stages.inputs import SharedInputs
from atlas.stages.run import SaeResult, VersionRun
from atlas.store import fixed_build_time

LIBRARIES = ("torch", "transformers", "duckdb", "umap-learn", "scikit-learn", "plotly", "jinja2")


def corpus_description(cfg: Config, demo_note: str = "") -> str:
    """What the site says the corpus is: the demo's own description, else the corpus files."""
    if cfg.demo.enabled and demo_note:
        return demo_note
    return ", ".join(str(f) for f in cfg.corpus.files)


def library_versions() -> dict[str, str]:
    """The versions of Python, feature-atlas and the libraries whose results the store holds."""
    import importlib.metadata as md

    found = {"atlas": atlas.__version__, "python": platform.python_version()}
    for pkg in LIBRARIES:
        try:
            found[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return found


def _saved_tokenizer(model, cache_dir) -> str | None:
    """Where the build's tokenizer pipeline is saved for `atlas inspect`, which tokenizes without transformers."""
    from atlas.lm.trunk import save_tokenizer

    path = save_tokenizer(model.tokenizer, cache_dir)
    return str(path.resolve()) if path is not None else None


def record_run(shared: SharedInputs, run: VersionRun, result: SaeResult, started: float) -> None:
    """Record the build's facts in the version's store: the model, the SAE, the corpus, the reconstruction
    figures, the warnings so far, the config, the software, and when it was built."""
    cfg = run.cfg
    fixed = fixed_build_time()
    software = library_versions()
    sae, recon, model = result.sae, result.recon, shared.model
    run.store.set_info(
        title=cfg.atlas.title, model=model.name, model_path=str(cfg.model.path), hook=shared.hook,
        model_path_abs=str(cfg.resolve(cfg.model.path).resolve()), sae_path_abs=str(cfg.resolve(cfg.sae.path).resolve()),
        site_dir_abs=str(run.site_dir.resolve()), sae_input_scale=float(sae.input_norm.scale),
        hook_description=model.hook_spec.description, sae_path=str(cfg.sae.path), sae_hash=sae.content_hash(),
        hook_module=model.hook_spec.module, hook_io=model.hook_spec.io,
        token_prefix=list(shared.corpus.prefix), token_suffix=list(shared.corpus.suffix),
        tokenizer_file=_saved_tokenizer(model, shared.cache_dir),
        sae_format=sae.format, sae_convention=sae.convention, d_in=sae.d_in, d_sae=sae.d_sae,
        corpus=shared.corpus_description, corpus_hash=shared.corpus_hash, n_sequences=shared.corpus.n_sequences,
        fvu=recon["fvu"], l0=recon["l0"], dead_share=recon["dead_share"],
        recon_tokens=recon["n_tokens"], recon_candidates=recon["candidates"],
        hook_candidates=list(shared.hook_choice),
        warnings=run.report.warnings, config=cfg.to_dict(), versions=software,
        stage_times=run.report.times() if fixed is None else {},
        built_at=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started if fixed is None else fixed)),
    )
    run.store.record_run(started, cfg.to_dict(), cfg.hash(), atlas.__version__, software)
