"""The SAE at the model's hook: loading both, picking the hook where the SAE leaves it open, and checking that the SAE
fits the activations it will read (width, reconstruction)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from atlas.lm.activations import sample_sequences, stream_from_model
from atlas.config import FVU_WARNING, Config
from atlas.errors import AtlasError, ConfigError, DimensionError
from atlas.stages.inputs import SharedInputs, sample_activations
from atlas.stages.run import Reporter, Status, VersionRun

if TYPE_CHECKING:
    from atlas.corpus import TokenizedCorpus
    from atlas.lm.adapter import ModelAdapter
    from atlas.saes import SaeWeights


@dataclass(frozen=True)
class HookChoice:
    """The model adapter at the hook the SAE reads, and each candidate hook's FVU when the hook was measured."""

    model: ModelAdapter
    hook: str
    scores: tuple[dict, ...] = ()


@dataclass(frozen=True)
class Fit:
    """The SAE as the reconstruction check picked it (loading convention, input scale) and its figures."""

    sae: SaeWeights
    recon: dict  # fvu, l0, dead_share, n_tokens, candidates


def load_candidates(cfg: Config) -> list[SaeWeights]:
    """The SAE of `[sae]`, once per loading convention its format leaves open."""
    from atlas.saes import load_sae_candidates

    return load_sae_candidates(cfg.resolve(cfg.sae.path), cfg.sae.format)


def model_folder(cfg: Config, report: Reporter) -> Config:
    """The config with [model] path at a Hugging Face folder: a GGUF file it names (or a folder holding only one) is
    converted into the cache folder once, keyed by the file's hash, and every later stage reads that folder."""
    from atlas.lm.gguf import converted_folder, gguf_file

    gguf = gguf_file(cfg.resolve(cfg.model.path))
    if gguf is None:
        return cfg
    t0 = time.perf_counter()
    folder, converted = converted_folder(gguf, cfg.resolve(cfg.atlas.cache_dir).resolve())
    report.stage("model-gguf", Status.COMPUTED if converted else Status.REUSED, t0,
                 f"{gguf.name} as float32 safetensors in {folder}")
    return replace(cfg, model=replace(cfg.model, path=str(folder)))


def load_model_at_hook(cfg: Config, candidates: list[SaeWeights], report: Reporter) -> HookChoice:
    """The model, stopped at the hook the config names, else the one the SAE's metadata names."""
    from atlas.lm.adapter import load_model

    t0 = time.perf_counter()
    sae_hook = candidates[0].hook if candidates else None
    hook = cfg.sae.hook or cfg.model.hook or sae_hook
    if not hook:
        raise ConfigError(
            f"{cfg.sae.path}: the SAE does not say which hook it was trained on; set [sae] hook "
            "(e.g. \"blocks.6.hook_resid_post\", an HF module path like \"model.layers.6\", or \"hidden_states.7\")"
        )
    model = load_model(cfg.resolve(cfg.model.path), hook, device=cfg.model.device)
    report.stage("model", Status.LOADED, t0, f"{model.name}, hook {hook}: {model.hook_spec.description}")
    return HookChoice(model, hook)


def pick_hook(cfg: Config, candidates: list[SaeWeights], at: HookChoice, corpus: TokenizedCorpus,
              report: Reporter) -> HookChoice:
    """Where the SAE's format leaves its hook ambiguous, measure FVU at each candidate and keep the best.

    Only when neither [sae] hook nor [model] hook names one: a hook the user gave is never second-guessed.
    """
    import torch

    from atlas.lm.hooks import resolve_hook
    from atlas.lm.adapter import ModelAdapter
    from atlas.saes.check import pick_by_fvu

    if not candidates or cfg.sae.hook or cfg.model.hook or cfg.corpus.activations:
        return at
    others = [h for h in candidates[0].hook_candidates if h != at.hook]
    if not others:
        return at
    t0 = time.perf_counter()
    seqs = sample_sequences(corpus, cfg.harvest.recon_tokens, cfg.atlas.seed)
    m = at.model
    scores = []
    for hook in [at.hook, *others]:
        try:
            adapter = m if hook == at.hook else ModelAdapter(m.tokenizer, m.model, resolve_hook(m.model, hook),
                                                             m.is_causal, m.name)
        except AtlasError:
            continue  # a candidate this model family does not have
        if adapter.d_hook != candidates[0].d_in:
            continue
        x = torch.cat([b.x for b in stream_from_model(adapter, corpus, cfg.model.batch_tokens, seqs)])
        _, fvus = pick_by_fvu(candidates, x)
        finite = [f for _, f in fvus if math.isfinite(f)]
        scores.append((min(finite) if finite else math.inf, hook, adapter))
    if not scores:
        return at
    best = min(scores, key=lambda t: t[0])
    listing = ", ".join(f"{h} FVU {f:.3f}" for f, h, _ in scores)
    report.stage("hook-pick", Status.COMPUTED, t0,
                 f"the SAE's format leaves its hook ambiguous: {listing}; using {best[1]}")
    return HookChoice(best[2], best[1], tuple({"hook": h, "fvu": f} for f, h, _ in scores))


def check_fits(shared: SharedInputs, run: VersionRun, candidates: list[SaeWeights]) -> None:
    """Refuse an SAE of another width than the hook's activations; warn about one trained on processed ones."""
    cfg = run.cfg
    sae = candidates[0]
    if shared.model.d_hook != sae.d_in:
        raise DimensionError(
            f"{cfg.sae.path}: the SAE reads {sae.d_in}-wide activations but {shared.hook} of "
            f"{cfg.model.path} is {shared.model.d_hook} wide; the SAE was trained on another layer "
            "or model: fix [sae] hook / [model] path"
        )
    if sae.metadata.get("tl_processed_activations"):
        run.report.warn("this SAE was trained on TransformerLens-processed activations (weights folded and "
                        "centred); the atlas feeds raw Hugging Face activations, so reconstruction may be worse")


def reconstruction(shared: SharedInputs, run: VersionRun, candidates: list[SaeWeights]) -> Fit:
    """Pick the loading convention that reconstructs a corpus sample best; warn when even that one is poor."""
    from atlas.saes.check import estimate_input_scale, pick_by_fvu, reconstruction_stats

    t0 = time.perf_counter()
    x = sample_activations(shared, run.cfg, run.cfg.harvest.recon_tokens)
    for cand in candidates:
        if cand.metadata.get("input_scale_unknown"):
            cand.input_norm.scale = estimate_input_scale(x)
            cand.convention += f"; input scale estimated on the corpus as {cand.input_norm.scale:.4g}"
    best, scores = pick_by_fvu(candidates, x)
    stats = reconstruction_stats(best, x)
    note = f"FVU {stats['fvu']:.3f}, L0 {stats['l0']:.1f}, dead on sample {stats['dead_share']:.1%}"
    if len(scores) > 1:
        note += f"; picked '{best.convention}' of {len(scores)} conventions by FVU"
    run.report.stage("recon-check", Status.COMPUTED, t0, note)
    if not math.isfinite(stats["fvu"]) or stats["fvu"] > FVU_WARNING:
        run.report.warn(
            f"the SAE reconstructs this layer poorly (FVU {stats['fvu']:.2f} > {FVU_WARNING}): this almost "
            "always means a wrong layer/hook, a wrong input normalisation or a mis-detected format; "
            "check [sae] hook and [sae] format"
        )
    return Fit(best, {**stats, "candidates": [{"convention": c, "fvu": f} for c, f in scores]})


def fit(shared: SharedInputs, run: VersionRun, candidates: list[SaeWeights]) -> Fit:
    """The fit check of one version's SAE: its width, then its reconstruction of the corpus."""
    check_fits(shared, run, candidates)
    return reconstruction(shared, run, candidates)
