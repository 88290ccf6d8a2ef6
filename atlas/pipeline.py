"""The build: the order of the stages and what flows between them. Each stage lives in `atlas/stages/`; a stage
whose inputs' key is already recorded is reused instead of computed (`atlas.stages.run.run_keyed`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from atlas.config import Config
from atlas.stages import analysis, compare, explain, harvest, inputs, logits, provenance, sae_fit, site, versions
from atlas.stages.inputs import SharedInputs
from atlas.stages.run import BuildReport, Reporter, SaeResult, Status, VersionRun
from atlas.store import Store

if TYPE_CHECKING:
    from atlas.demo.prepare import DemoInputs
    from atlas.saes import SaeWeights


def sae_stages(shared: SharedInputs, run: VersionRun, candidates: list[SaeWeights],
               against: Callable[[], compare.Against | None]) -> SaeResult:
    """The stages of one SAE version, in order: the main SAE's and each [[versions]] entry's alike."""
    fit = sae_fit.fit(shared, run, candidates)
    harvest_key = harvest.harvest(shared, run, fit.sae)
    logits.logits(shared, run, fit.sae)
    analysis_key = analysis.analysis(run, fit.sae, harvest_key)
    explain_key = explain.explain(shared, run, fit.sae, analysis_key)
    compare_key = compare.compare(run, fit.sae, analysis_key, against)
    return SaeResult(fit.sae, fit.recon, harvest_key, analysis_key, compare_key, explain_key)


def build(cfg: Config, log=print, progress: bool | None = None) -> BuildReport:
    """Build the atlas described by `cfg`: store and site."""
    report = Reporter(log, progress)
    started = time.time()
    demo = None
    if cfg.demo.enabled:
        from atlas.demo.prepare import prepare_demo_inputs

        t0 = time.perf_counter()
        demo = prepare_demo_inputs(cfg, log)
        cfg = demo.cfg
        report.stage("demo-inputs", Status.READY, t0, demo.note())
    inputs.require_inputs(cfg)
    store_path, site_dir = cfg.resolve(cfg.atlas.store), cfg.resolve(cfg.atlas.out_dir)
    store_path.parent.mkdir(parents=True, exist_ok=True)
    with Store(store_path) as store:
        shared, candidates = _shared_inputs(cfg, demo, report)
        main = VersionRun(cfg, versions.version_entries(cfg)[0], store, report, site_dir)
        result = sae_stages(shared, main, candidates, lambda: compare.configured(cfg, store_path, site_dir))
        _train_demo_versions(cfg, demo, shared, report)
        versions_key = versions.build_versions(shared, main, result, started, sae_stages)
        provenance.record_run(shared, main, result, started)
    site.site(cfg, {"analysis": result.analysis_key, "harvest": result.harvest_key, "compare": result.compare_key,
                    "explain": result.explain_key, "versions": versions_key}, report)
    return report.finish(store_path, site_dir)


def _shared_inputs(cfg: Config, demo: DemoInputs | None, report: Reporter) -> tuple[SharedInputs, list[SaeWeights]]:
    """The model at the hook, the tokens and their activations (with the demo's SAE trained on them when it has
    none yet); returns them with the main SAE's candidates."""
    cache_dir = cfg.resolve(cfg.atlas.cache_dir)
    candidates = [] if demo and not cfg.resolve(cfg.sae.path).exists() else sae_fit.load_candidates(cfg)
    at = sae_fit.load_model_at_hook(cfg, candidates, report)
    toks = inputs.tokens(cfg, at.model, candidates, cache_dir, report)
    at = sae_fit.pick_hook(cfg, candidates, at, toks.corpus, report)
    acts = inputs.activations(cfg, at.model, at.hook, toks, cache_dir, report)
    if not candidates:
        from atlas.demo.prepare import train_demo_sae

        t0 = time.perf_counter()
        size = demo.sae_sizes.get(cfg.sae.path, cfg.demo.d_sae) if demo else cfg.demo.d_sae
        note = train_demo_sae(cfg, acts.acts, at.model, size, cfg.sae.path, report.log)
        report.stage("demo-sae", Status.COMPUTED, t0, note)
        candidates = sae_fit.load_candidates(cfg)
    shared = SharedInputs(
        corpus=toks.corpus, tokens_key=toks.key, corpus_hash=toks.corpus_hash,
        corpus_description=provenance.corpus_description(cfg, demo.corpus_note if demo else ""),
        acts=acts.acts, acts_key=acts.key, model=at.model, hook=at.hook, hook_choice=at.scores,
        cache_dir=cache_dir, store_path=cfg.resolve(cfg.atlas.store),
    )
    return shared, candidates


def _train_demo_versions(cfg: Config, demo: DemoInputs | None, shared: SharedInputs, report: Reporter) -> None:
    """The demo's further SAEs ([demo] version_sizes), trained like its main one when not there yet."""
    from atlas.demo.prepare import train_demo_sae

    for v in cfg.versions if demo else []:
        if not cfg.resolve(v.path).exists():
            t0 = time.perf_counter()
            note = train_demo_sae(cfg, shared.acts, shared.model, demo.sae_sizes.get(v.path, cfg.demo.d_sae), v.path,
                                  report.log)
            report.stage("demo-sae", Status.COMPUTED, t0, f"{v.name}: {note}")
