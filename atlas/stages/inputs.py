"""The inputs every SAE version reads alike: the corpus's tokens and the model's activations at the hook."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from atlas.lm.activations import ActivationCache, model_identity, sample_sequences, stream_from_model
from atlas.config import Config
from atlas.corpus import TokenizedCorpus, files_hash, iter_documents, special_tokens, tokenize
from atlas.errors import ConfigError, DimensionError
from atlas.stages.run import CacheLedger, Keyed, Outcome, Reporter, Status, input_key, run_keyed

if TYPE_CHECKING:
    import torch

    from atlas.lm.adapter import ModelAdapter
    from atlas.saes import SaeWeights


@dataclass(frozen=True)
class Tokens:
    """The tokenized corpus with its key, the hash of its files, and the activations when they came with it."""

    corpus: TokenizedCorpus
    key: str
    corpus_hash: str
    precomputed: np.ndarray | None = None


@dataclass(frozen=True)
class Activations:
    """Hook activations of every content token [n_tokens, d] (None: the harvest runs the model) and their key."""

    acts: np.ndarray | None
    key: str


@dataclass(frozen=True)
class SharedInputs:
    """What every SAE version of the atlas reads alike: the corpus, its activations, the model at the hook, and
    where the build keeps its cache and store."""

    corpus: TokenizedCorpus
    tokens_key: str
    corpus_hash: str
    corpus_description: str
    acts: np.ndarray | None
    acts_key: str
    model: ModelAdapter
    hook: str
    hook_choice: tuple[dict, ...]  # each candidate hook's FVU, when the SAE's format left the hook ambiguous
    cache_dir: Path
    store_path: Path


def require_inputs(cfg: Config) -> None:
    """Refuse a config that names no SAE, no model or no corpus, saying which setting to fill in."""
    if not cfg.sae.path:
        raise ConfigError(f"{cfg.source}: [sae] path is not set; point it at your SAE file or folder")
    if not cfg.model.path:
        raise ConfigError(f"{cfg.source}: [model] path is not set; point it at a Hugging Face model folder")
    if not cfg.corpus.files and not cfg.corpus.activations:
        raise ConfigError(f"{cfg.source}: [corpus] files is empty; list .txt or .jsonl files "
                          "(or give precomputed [corpus] activations)")


def prepend_bos(cfg: Config, candidates: list[SaeWeights]) -> bool:
    """Whether sequences start with BOS: as [model] prepend_bos says, or on auto as the SAE was trained."""
    choice = cfg.model.prepend_bos
    if choice != "auto":
        return choice == "yes"
    meta = candidates[0].metadata if candidates else {}
    return bool(meta.get("prepend_bos", True))


def tokens(cfg: Config, model: ModelAdapter, candidates: list[SaeWeights], cache_dir: Path,
           report: Reporter) -> Tokens:
    """The corpus as token sequences, cached by the files' contents, the tokenizer and the corpus settings."""
    if cfg.corpus.activations:
        return _precomputed(cfg, candidates, report)
    files = [cfg.resolve(f) for f in cfg.corpus.files]
    prefix, suffix = special_tokens(model.tokenizer, model.is_causal, prepend_bos(cfg, candidates))
    corpus_hash = files_hash(files)

    def path(key: str) -> Path:
        return cache_dir / f"tokens-{key}.npz"

    def described(corpus: TokenizedCorpus) -> Outcome[TokenizedCorpus]:
        return Outcome(corpus, f"{corpus.n_tokens:,} tokens in {corpus.n_sequences:,} sequences")

    def compute(key: str) -> Outcome[TokenizedCorpus]:
        corpus = tokenize(iter_documents(files, cfg.corpus.text_field), model.tokenizer, cfg.corpus.seq_len,
                          cfg.corpus.max_tokens, prefix, suffix, cfg.corpus.min_tokens)
        path(key).parent.mkdir(parents=True, exist_ok=True)
        tmp = path(key).with_name(path(key).stem + ".tmp.npz")
        corpus.save(tmp)
        os.replace(tmp, path(key))
        return described(corpus)

    done = run_keyed(Keyed(
        "tokens",
        # the files' contents count, not the paths they are named by
        inputs={"files": corpus_hash, "model": model_identity(cfg.resolve(cfg.model.path)),
                "settings": {k: v for k, v in cfg.section_dict("corpus").items() if k != "files"},
                "prefix": prefix, "suffix": suffix},
        ledger=CacheLedger(lambda key: path(key).is_file()),
        compute=compute,
        reuse=lambda key: described(TokenizedCorpus.load(path(key))),
    ), report)
    return Tokens(done.value, done.key, corpus_hash)


def _precomputed(cfg: Config, candidates: list[SaeWeights], report: Reporter) -> Tokens:
    """Tokens and activations a user computed elsewhere: the model is never run on the corpus."""
    from atlas.lm.activations import load_precomputed

    t0 = time.perf_counter()
    path = cfg.resolve(cfg.corpus.activations)
    if not path.exists():
        raise ConfigError(f"[corpus] activations: {path} does not exist")
    acts, toks, starts = load_precomputed(path)
    d_in = candidates[0].d_in if candidates else acts.shape[1]
    if acts.shape[1] != d_in:
        raise DimensionError(f"{path}: activations are {acts.shape[1]} wide but the SAE reads {d_in}; "
                             "they come from another layer or model")
    starts = np.array([0, len(toks)], dtype=np.int64) if starts is None else starts
    corpus = TokenizedCorpus(toks.astype(np.int32), starts.astype(np.int64), [], [])
    key = files_hash([p for p in sorted(path.rglob("*")) if p.is_file()] if path.is_dir() else [path])
    report.stage("tokens", Status.READ, t0, f"{corpus.n_tokens:,} precomputed tokens in {corpus.n_sequences:,} sequences")
    return Tokens(corpus, key, key, acts)


def activations(cfg: Config, model: ModelAdapter, hook: str, toks: Tokens, cache_dir: Path,
                report: Reporter) -> Activations:
    """Cache hook activations on disk when allowed, so a retrained SAE skips the model."""
    corpus = toks.corpus
    if toks.precomputed is not None:
        t0 = time.perf_counter()
        acts = toks.precomputed
        report.stage("activations", Status.READ, t0, f"precomputed, {acts.shape[0]:,} x {acts.shape[1]}")
        return Activations(acts, input_key(toks.key, "precomputed"))
    need = corpus.n_tokens * model.d_hook * 4
    limit = int(cfg.atlas.cache_max_gb * 2**30)

    def compute(key: str) -> Outcome[np.ndarray | None]:
        if need > limit:
            return Outcome(None, f"{need / 2**30:.1f} GiB exceeds [atlas] cache_max_gb = {cfg.atlas.cache_max_gb}; "
                                 "the harvest runs the model itself", status=Status.SKIPPED)
        t0 = time.perf_counter()
        ActivationCache.prune(cache_dir, key, max(limit - need, 0))
        with report.bar(corpus.n_tokens, "model") as bar:
            acts = ActivationCache(cache_dir, key).write(model, corpus, cfg.model.batch_tokens, model.d_hook,
                                                         bar.update)
        rate = corpus.n_tokens / max(time.perf_counter() - t0, 1e-9)
        return Outcome(acts, f"{need / 2**20:,.0f} MiB, {rate:,.0f} tokens/s")

    done = run_keyed(Keyed(
        "activations",
        inputs={"tokens": toks.key, "model": model_identity(cfg.resolve(cfg.model.path)), "hook": hook},
        ledger=CacheLedger(lambda key: ActivationCache(cache_dir, key).exists()),
        compute=compute,
        reuse=lambda key: Outcome(ActivationCache(cache_dir, key).open(), f"{need / 2**20:,.0f} MiB cached"),
    ), report)
    return Activations(done.value, done.key)


def sample_activations(shared: SharedInputs, cfg: Config, n_tokens: int) -> torch.Tensor:
    """Encoder inputs of a seeded sample of whole sequences (about `n_tokens`), for the reconstruction check."""
    import torch

    corpus = shared.corpus
    seqs = sample_sequences(corpus, n_tokens, cfg.atlas.seed)
    if shared.acts is not None:
        rows = np.concatenate([np.arange(corpus.seq_starts[q], corpus.seq_starts[q + 1]) for q in seqs])
        return torch.from_numpy(np.asarray(shared.acts[rows], dtype=np.float32))
    return torch.cat([b.x for b in stream_from_model(shared.model, corpus, cfg.model.batch_tokens, seqs)])
