"""Run the stages in order, skipping a stage whose inputs' hash is already recorded in the store."""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import atlas
from atlas import tables
from atlas.activations import (ActivationCache, length_order, model_identity, sample_sequences, stream_from_array,
                               stream_from_model)
from atlas.config import Config
from atlas.corpus import TokenizedCorpus, files_hash, iter_documents, special_tokens, tokenize
from atlas.errors import AtlasError, ConfigError, DimensionError
from atlas.store import Store, fixed_build_time

FVU_WARNING = 0.5
# Bumped when a stage's code changes what it computes, so old results are not reused.
STAGE_VERSIONS = {"tokens": 1, "activations": 1, "harvest": 1, "logits": 1, "analysis": 1, "compare": 1,
                  "site": 1}


def _hash(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class StageReport:
    name: str
    status: str  # computed | reused
    seconds: float
    note: str = ""


@dataclass
class BuildReport:
    stages: list[StageReport] = field(default_factory=list)
    store: Path | None = None
    site: Path | None = None
    warnings: list[str] = field(default_factory=list)

    def times(self) -> dict[str, float]:
        return {s.name: round(s.seconds, 2) for s in self.stages}


class Build:
    """One atlas build from a validated config."""

    def __init__(self, cfg: Config, log=print, progress: bool | None = None):
        self.cfg = cfg
        self.log = log
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.report = BuildReport()
        self.cache_dir = cfg.resolve(cfg.atlas.cache_dir)
        self.store_path = cfg.resolve(cfg.atlas.store)
        self.site_dir = cfg.resolve(cfg.atlas.out_dir)
        self.model = None
        self.sae = None
        self.acts: np.ndarray | None = None
        self.acts_key = ""

    # ---- bookkeeping --------------------------------------------------------------------
    def _stage(self, name: str, status: str, t0: float, note: str = "") -> None:
        rep = StageReport(name, status, time.perf_counter() - t0, note)
        self.report.stages.append(rep)
        self.log(f"  {name:<12} {status:<8} {rep.seconds:7.1f} s  {note}".rstrip())

    def _warn(self, msg: str) -> None:
        self.report.warnings.append(msg)
        self.log(f"WARNING: {msg}")

    def _bar(self, total: int, desc: str):
        from tqdm import tqdm

        return tqdm(total=total, desc=f"  {desc}", unit="tok", unit_scale=True, disable=not self.progress,
                    leave=False, dynamic_ncols=True)

    # ---- stages -------------------------------------------------------------------------
    def run(self) -> BuildReport:
        cfg = self.cfg
        started = time.time()
        if cfg.demo.enabled:
            from atlas.demo.prepare import prepare_demo_inputs

            t0 = time.perf_counter()
            note = prepare_demo_inputs(cfg, self.cache_dir, self.log)
            self._stage("demo-inputs", "ready", t0, note)
        self._check_inputs()
        self.store_path.parent.mkdir(parents=True, exist_ok=True)
        with Store(self.store_path) as store:
            self.store = store
            self.sae_candidates = []
            if not (cfg.demo.enabled and not cfg.resolve(cfg.sae.path).exists()):
                self._load_sae()
            self._load_model()
            corpus = self._tokens()
            self._pick_hook(corpus)
            self._activations(corpus)
            if not self.sae_candidates:
                from atlas.demo.prepare import train_demo_sae

                t0 = time.perf_counter()
                note = train_demo_sae(cfg, self.acts, self.model, self.log)
                self._stage("demo-sae", "computed", t0, note)
                self._load_sae()
            self._check_sae_fits()
            self._reconstruction(corpus)
            harvest_hash = self._harvest(corpus)
            self._logits()
            analysis_hash = self._analysis(harvest_hash)
            compare_hash = self._compare(analysis_hash)
            from atlas.versions_stage import build_versions

            self._train_demo_versions()
            versions_hash = build_versions(self, corpus, started, analysis_hash)
            self._record_run(started, corpus)
            self.store = None
        site_hash = _hash(analysis_hash, harvest_hash, compare_hash, versions_hash,
                          self.cfg.section_dict("site"), STAGE_VERSIONS["site"])
        self._site(site_hash)
        self.report.store = self.store_path
        self.report.site = self.site_dir
        return self.report

    def _train_demo_versions(self) -> None:
        """The demo's further SAEs ([demo] version_sizes), trained like its main one when not there yet."""
        from atlas.demo.prepare import train_demo_sae

        for v in self.cfg.versions if self.cfg.demo.enabled else []:
            if not self.cfg.resolve(v.path).exists():
                t0 = time.perf_counter()
                note = train_demo_sae(self.cfg, self.acts, self.model, self.log, path=v.path)
                self._stage("demo-sae", "computed", t0, f"{v.name}: {note}")

    def _check_inputs(self) -> None:
        cfg = self.cfg
        if not cfg.sae.path:
            raise ConfigError(f"{cfg.source}: [sae] path is not set; point it at your SAE file or folder")
        if not cfg.model.path:
            raise ConfigError(f"{cfg.source}: [model] path is not set; point it at a Hugging Face model folder")
        if not cfg.corpus.files and not cfg.corpus.activations:
            raise ConfigError(f"{cfg.source}: [corpus] files is empty; list .txt or .jsonl files "
                              "(or give precomputed [corpus] activations)")

    def _load_sae(self) -> None:
        from atlas.saes import load_sae_candidates

        cfg = self.cfg
        self.sae_candidates = load_sae_candidates(cfg.resolve(cfg.sae.path), cfg.sae.format)

    def _load_model(self) -> None:
        from atlas.models import load_model

        cfg = self.cfg
        t0 = time.perf_counter()
        sae_hook = self.sae_candidates[0].hook if self.sae_candidates else None
        hook = cfg.sae.hook or cfg.model.hook or sae_hook
        if not hook:
            raise ConfigError(
                f"{cfg.sae.path}: the SAE does not say which hook it was trained on; set [sae] hook "
                "(e.g. \"blocks.6.hook_resid_post\", an HF module path like \"model.layers.6\", or \"hidden_states.7\")"
            )
        self.hook = hook
        self.model = load_model(cfg.resolve(cfg.model.path), hook, device=cfg.model.device)
        self._stage("model", "loaded", t0, f"{self.model.name}, hook {hook}: {self.model.hook_spec.description}")

    def _pick_hook(self, corpus: TokenizedCorpus) -> None:
        """Where the SAE's format leaves its hook ambiguous, measure FVU at each candidate and keep the best.

        Only when neither [sae] hook nor [model] hook names one: a hook the user gave is never second-guessed.
        """
        import torch

        from atlas.hooks import resolve_hook
        from atlas.models import ModelAdapter
        from atlas.saes.check import pick_by_fvu

        cfg = self.cfg
        if not self.sae_candidates or cfg.sae.hook or cfg.model.hook or cfg.corpus.activations:
            return
        others = [h for h in self.sae_candidates[0].hook_candidates if h != self.hook]
        if not others:
            return
        t0 = time.perf_counter()
        seqs = sample_sequences(corpus, cfg.harvest.recon_tokens, cfg.atlas.seed)
        m = self.model
        scores = []
        for hook in [self.hook, *others]:
            try:
                adapter = m if hook == self.hook else ModelAdapter(m.tokenizer, m.model, resolve_hook(m.model, hook),
                                                                   m.is_causal, m.name)
            except AtlasError:
                continue  # a candidate this model family does not have
            if adapter.d_hook != self.sae_candidates[0].d_in:
                continue
            x = torch.cat([b.x for b in stream_from_model(adapter, corpus, cfg.model.batch_tokens, seqs)])
            _, fvus = pick_by_fvu(self.sae_candidates, x)
            scores.append((min(f for _, f in fvus if math.isfinite(f)) if any(math.isfinite(f) for _, f in fvus)
                           else math.inf, hook, adapter))
        if not scores:
            return
        best = min(scores, key=lambda t: t[0])
        self.hook, self.model = best[1], best[2]
        self.hook_choice = [{"hook": h, "fvu": f} for f, h, _ in scores]
        listing = ", ".join(f"{h} FVU {f:.3f}" for f, h, _ in scores)
        self._stage("hook-pick", "computed", t0, f"the SAE's format leaves its hook ambiguous: {listing}; using {self.hook}")

    def _check_sae_fits(self) -> None:
        cfg = self.cfg
        sae = self.sae_candidates[0]
        if self.model.d_hook != sae.d_in:
            raise DimensionError(
                f"{cfg.sae.path}: the SAE reads {sae.d_in}-wide activations but {self.hook} of "
                f"{cfg.model.path} is {self.model.d_hook} wide; the SAE was trained on another layer "
                "or model: fix [sae] hook / [model] path"
            )
        if sae.metadata.get("tl_processed_activations"):
            self._warn("this SAE was trained on TransformerLens-processed activations (weights folded and "
                       "centred); the atlas feeds raw Hugging Face activations, so reconstruction may be worse")

    def _prepend_bos(self) -> bool:
        choice = self.cfg.model.prepend_bos
        if choice != "auto":
            return choice == "yes"
        meta = self.sae_candidates[0].metadata if self.sae_candidates else {}
        return bool(meta.get("prepend_bos", True))

    def _tokens(self) -> TokenizedCorpus:
        cfg = self.cfg
        t0 = time.perf_counter()
        if cfg.corpus.activations:
            return self._precomputed(t0)
        files = [cfg.resolve(f) for f in cfg.corpus.files]
        prefix, suffix = special_tokens(self.model.tokenizer, self.model.is_causal, self._prepend_bos())
        # the files' contents count, not the paths they are named by
        settings = {k: v for k, v in cfg.section_dict("corpus").items() if k != "files"}
        key = _hash(files_hash(files), model_identity(cfg.resolve(cfg.model.path)), settings,
                    prefix, suffix, STAGE_VERSIONS["tokens"])
        path = self.cache_dir / f"tokens-{key}.npz"
        self.tokens_key = key
        if path.is_file():
            corpus = TokenizedCorpus.load(path)
            status = "reused"
        else:
            corpus = tokenize(iter_documents(files, cfg.corpus.text_field), self.model.tokenizer,
                              cfg.corpus.seq_len, cfg.corpus.max_tokens, prefix, suffix, cfg.corpus.min_tokens)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.stem + ".tmp.npz")
            corpus.save(tmp)
            os.replace(tmp, path)
            status = "computed"
        self.corpus_hash = files_hash(files)
        self._stage("tokens", status, t0, f"{corpus.n_tokens:,} tokens in {corpus.n_sequences:,} sequences")
        return corpus

    def _precomputed(self, t0: float) -> TokenizedCorpus:
        """Tokens and activations a user computed elsewhere: the model is never run on the corpus."""
        from atlas.activations import load_precomputed

        path = self.cfg.resolve(self.cfg.corpus.activations)
        if not path.exists():
            raise ConfigError(f"[corpus] activations: {path} does not exist")
        acts, toks, starts = load_precomputed(path)
        d_in = self.sae_candidates[0].d_in if self.sae_candidates else acts.shape[1]
        if acts.shape[1] != d_in:
            raise DimensionError(f"{path}: activations are {acts.shape[1]} wide but the SAE reads {d_in}; "
                                 "they come from another layer or model")
        starts = np.array([0, len(toks)], dtype=np.int64) if starts is None else starts
        corpus = TokenizedCorpus(toks.astype(np.int32), starts.astype(np.int64), [], [])
        self.acts = acts
        self.tokens_key = self.corpus_hash = files_hash([p for p in sorted(path.rglob("*")) if p.is_file()] if path.is_dir() else [path])
        self._stage("tokens", "read", t0, f"{corpus.n_tokens:,} precomputed tokens in {corpus.n_sequences:,} sequences")
        return corpus

    def _activations(self, corpus: TokenizedCorpus) -> None:
        """Cache hook activations on disk when allowed, so a retrained SAE skips the model."""
        cfg = self.cfg
        t0 = time.perf_counter()
        if cfg.corpus.activations:
            self.acts_key = _hash(self.tokens_key, "precomputed")
            self._stage("activations", "read", t0, f"precomputed, {self.acts.shape[0]:,} x {self.acts.shape[1]}")
            return
        self.acts_key = _hash(self.tokens_key, model_identity(cfg.resolve(cfg.model.path)), self.hook,
                              STAGE_VERSIONS["activations"])
        need = corpus.n_tokens * self.model.d_hook * 4
        limit = int(cfg.atlas.cache_max_gb * 2**30)
        cache = ActivationCache(self.cache_dir, self.acts_key)
        if cache.exists():
            self.acts = cache.open()
            self._stage("activations", "reused", t0, f"{need / 2**20:,.0f} MiB cached")
            return
        if need > limit:
            self._stage("activations", "skipped", t0,
                        f"{need / 2**30:.1f} GiB exceeds [atlas] cache_max_gb = {cfg.atlas.cache_max_gb}; "
                        "the harvest runs the model itself")
            return
        ActivationCache.prune(self.cache_dir, self.acts_key, max(limit - need, 0))
        with self._bar(corpus.n_tokens, "model") as bar:
            self.acts = cache.write(self.model, corpus, cfg.model.batch_tokens, self.model.d_hook, bar.update)
        rate = corpus.n_tokens / max(time.perf_counter() - t0, 1e-9)
        self._stage("activations", "computed", t0, f"{need / 2**20:,.0f} MiB, {rate:,.0f} tokens/s")

    def _sample_acts(self, corpus: TokenizedCorpus, n_tokens: int):
        import torch

        seqs = sample_sequences(corpus, n_tokens, self.cfg.atlas.seed)
        if self.acts is not None:
            rows = np.concatenate([np.arange(corpus.seq_starts[q], corpus.seq_starts[q + 1]) for q in seqs])
            return torch.from_numpy(np.asarray(self.acts[rows], dtype=np.float32))
        return torch.cat([b.x for b in stream_from_model(self.model, corpus, self.cfg.model.batch_tokens, seqs)])

    def _reconstruction(self, corpus: TokenizedCorpus) -> None:
        from atlas.saes.check import estimate_input_scale, pick_by_fvu, reconstruction_stats

        t0 = time.perf_counter()
        x = self._sample_acts(corpus, self.cfg.harvest.recon_tokens)
        for cand in self.sae_candidates:
            if cand.metadata.get("input_scale_unknown"):
                cand.input_norm.scale = estimate_input_scale(x)
                cand.convention += f"; input scale estimated on the corpus as {cand.input_norm.scale:.4g}"
        best, scores = pick_by_fvu(self.sae_candidates, x)
        self.sae = best
        stats = reconstruction_stats(best, x)
        self.recon = {**stats, "candidates": [{"convention": c, "fvu": f} for c, f in scores]}
        note = f"FVU {stats['fvu']:.3f}, L0 {stats['l0']:.1f}, dead on sample {stats['dead_share']:.1%}"
        if len(scores) > 1:
            note += f"; picked '{best.convention}' of {len(scores)} conventions by FVU"
        self._stage("recon-check", "computed", t0, note)
        if not math.isfinite(stats["fvu"]) or stats["fvu"] > FVU_WARNING:
            self._warn(
                f"the SAE reconstructs this layer poorly (FVU {stats['fvu']:.2f} > {FVU_WARNING}): this almost "
                "always means a wrong layer/hook, a wrong input normalisation or a mis-detected format; "
                "check [sae] hook and [sae] format"
            )

    def _encoded_batches(self, corpus: TokenizedCorpus, start_seq: int):
        if self.acts is not None:
            yield from stream_from_array(self.acts, corpus, self.cfg.model.batch_tokens, start_seq)
            return
        # Without a cache, sequences go through the model shortest first (little padding); the checkpoint
        # position counts sequences in that order.
        remaining = length_order(corpus)[start_seq:]
        done = start_seq
        for batch in stream_from_model(self.model, corpus, self.cfg.model.batch_tokens, remaining):
            done += len(np.unique(batch.seq_id))
            yield done, batch

    def _harvest(self, corpus: TokenizedCorpus) -> str:
        from atlas.store.partials import drop_partials

        cfg = self.cfg
        t0 = time.perf_counter()
        # Sharding changes how the pass runs, never what it computes, so it is left out of the key.
        settings = {k: v for k, v in cfg.section_dict("harvest").items() if k != "shards"}
        key = _hash(self.acts_key, self.sae.content_hash(), settings, cfg.atlas.seed, STAGE_VERSIONS["harvest"])
        if self.store.stage_hash("harvest") == key:
            drop_partials(self.store)  # left behind when a build stopped right after recording the stage
            self._stage("harvest", "reused", t0)
            return key
        ckpt = self.cache_dir / f"harvest-{key}.ckpt.npz"
        if cfg.harvest.shards > 1:
            harvester = self._harvest_shards(corpus, key)
        else:
            harvester = self._harvest_pass(corpus, ckpt)
        res = harvester.finalize()
        seconds = time.perf_counter() - t0
        W_dec = self.sae.W_dec.float().numpy()
        store = self.store
        store.replace_table("features", tables.feature_stats(res, np.linalg.norm(W_dec, axis=1)))
        store.replace_table("examples", tables.examples_table(res, corpus.tokens, corpus.seq_starts, cfg.harvest.window))
        store.replace_table("intervals", tables.intervals_table(res))
        store.replace_table("histograms", tables.histograms_table(res))
        store.replace_table("coactivation", tables.coact_table(res))
        store.replace_where("neighbours", "kind = 'coact'",
                            tables.neighbour_rows("coact", res.coact_top_idx, res.coact_top_score))
        self._write_vocab(store.query("SELECT DISTINCT unnest(token_ids) AS t FROM examples")["t"].to_numpy())
        n_alive = int((res.count > 0).sum())
        store.set_info(n_tokens=int(res.n_tokens), n_alive=n_alive, n_dead=int(res.n_features - n_alive),
                       coact_exact=bool(res.coact_exact))
        store.record_stage("harvest", key, seconds, {"tokens": int(res.n_tokens)})
        ckpt.unlink(missing_ok=True)
        drop_partials(store)
        rate = res.n_tokens / max(seconds, 1e-9)
        self._stage("harvest", "computed", t0,
                    f"{res.n_tokens:,} tokens at {rate:,.0f}/s; {n_alive:,} alive, {res.n_features - n_alive:,} dead")
        return key

    def _harvest_pass(self, corpus: TokenizedCorpus, ckpt: Path):
        """The whole corpus in one pass, checkpointed to `ckpt` every `checkpoint_every` batches."""
        from atlas.harvest import Harvester

        cfg = self.cfg
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        harvester, start = Harvester(self.sae.d_sae, cfg.harvest, seed=cfg.atlas.seed), 0
        if ckpt.is_file():
            with np.load(ckpt, allow_pickle=False) as z:
                state = {k: z[k] for k in z.files}
            start = int(state.pop("_next_seq"))
            harvester = Harvester.from_state(state, cfg.harvest)
            self.log(f"  harvest: resuming from a checkpoint at sequence {start:,} of {corpus.n_sequences:,}")
        import torch

        n_batches = 0
        with self._bar(corpus.n_tokens, "harvest") as bar, torch.inference_mode():
            lengths = np.diff(corpus.seq_starts)
            bar.update(int(lengths[:start].sum() if self.acts is not None else lengths[length_order(corpus)[:start]].sum()))
            for next_seq, batch in self._encoded_batches(corpus, start):
                harvester.update(self.sae.encode_sparse(batch.x), batch.token_index, batch.seq_id)
                bar.update(len(batch.token_index))
                n_batches += 1
                if cfg.harvest.checkpoint_every and n_batches % cfg.harvest.checkpoint_every == 0 \
                        and next_seq < corpus.n_sequences:
                    tmp = ckpt.with_name(ckpt.name + ".tmp.npz")
                    np.savez(tmp, _next_seq=np.int64(next_seq), **harvester.state_dict())
                    os.replace(tmp, ckpt)
        return harvester

    def _harvest_shards(self, corpus: TokenizedCorpus, key: str):
        """The pass as `[harvest] shards` contiguous runs of sequences, one after another. Each finished shard's
        partial goes to the store, which is what a killed build resumes from; the store merges them exactly."""
        import torch

        from atlas.harvest import Harvester
        from atlas.store.partials import HarvestPartials

        cfg = self.cfg
        n_shards = cfg.harvest.shards
        # Sequences in the order the pass reads them: the cache's, or shortest first through the model.
        order = np.arange(corpus.n_sequences) if self.acts is not None else length_order(corpus)
        bounds = np.linspace(0, corpus.n_sequences, n_shards + 1).round().astype(np.int64)
        shard_tokens = np.diff(np.concatenate([[0], np.cumsum(np.diff(corpus.seq_starts)[order])])[bounds])
        partials = HarvestPartials(self.store, _hash(key, bounds.tolist()))
        done = set(partials.finished())
        if done:
            first = min(set(range(n_shards)) - done, default=n_shards)
            self.log(f"  harvest: resuming at shard {first + 1} of {n_shards} ({len(done)} already in the store)")
        with self._bar(corpus.n_tokens, "harvest") as bar, torch.inference_mode():
            bar.update(int(shard_tokens[sorted(done)].sum()))
            for shard in range(n_shards):
                if shard in done:
                    continue
                harvester = Harvester(self.sae.d_sae, cfg.harvest, seed=cfg.atlas.seed)
                for batch in self._shard_batches(corpus, order[bounds[shard]:bounds[shard + 1]]):
                    harvester.update(self.sae.encode_sparse(batch.x), batch.token_index, batch.seq_id)
                    bar.update(len(batch.token_index))
                partials.write(shard, harvester.partial_frames())
                del harvester
        return Harvester.from_partial(partials.merge(), cfg.harvest, seed=cfg.atlas.seed)

    def _shard_batches(self, corpus: TokenizedCorpus, seqs: np.ndarray):
        """Encoder-input batches of the listed sequences (a contiguous run of the pass's order)."""
        if len(seqs) == 0:
            return
        if self.acts is not None:
            # Ending the corpus after the run's last sequence makes the cache stream stop there.
            head = TokenizedCorpus(corpus.tokens, corpus.seq_starts[: seqs[-1] + 2], corpus.prefix, corpus.suffix)
            for _, batch in stream_from_array(self.acts, head, self.cfg.model.batch_tokens, int(seqs[0])):
                yield batch
        else:
            yield from stream_from_model(self.model, corpus, self.cfg.model.batch_tokens, seqs)

    def _write_vocab(self, new_ids: np.ndarray) -> None:
        import pandas as pd

        known = self.store.query("SELECT token_id FROM vocab")["token_id"].to_numpy()
        ids = np.setdiff1d(np.asarray(new_ids, dtype=np.int64), known)
        if len(ids):
            self.store.replace_where("vocab", "false", pd.DataFrame(
                {"token_id": ids.astype(np.int32), "token": self.model.token_strings([int(i) for i in ids])}))

    def _logits(self) -> None:
        t0 = time.perf_counter()
        key = _hash(self.sae.content_hash(), model_identity(self.cfg.resolve(self.cfg.model.path)),
                    STAGE_VERSIONS["logits"])
        if self.store.stage_hash("logits") == key:
            self._stage("logits", "reused", t0)
            return
        effects = self.model.logit_effects(self.sae.W_dec.float(), k=10) if self.sae.d_out == self.model.d_hook else None
        has = effects is not None and self._hook_feeds_residual()
        if has:
            frame = tables.logits_table([t.numpy() if hasattr(t, "numpy") else t for t in effects])
            self.store.replace_table("logits", frame)
            self._write_vocab(frame["token_id"].unique())
        else:
            self.store.replace_table("logits", tables.logits_table([np.zeros((0, 10))] * 4))
        self.store.set_info(has_unembedding=bool(has))
        self.store.record_stage("logits", key, time.perf_counter() - t0)
        self._stage("logits", "computed", t0, "top 10 promoted/suppressed tokens" if has else
                    "no unembedding: this model has no LM head")

    def _hook_feeds_residual(self) -> bool:
        return self.model.is_causal

    def _analysis(self, harvest_hash: str) -> str:
        from atlas.analysis_stage import run_analysis

        cfg = self.cfg
        t0 = time.perf_counter()
        labels_file = cfg.resolve(cfg.analysis.labels_file) if cfg.analysis.labels_file else None
        labels_hash = files_hash([labels_file]) if labels_file and labels_file.is_file() else ""
        key = _hash(harvest_hash, self.sae.content_hash(), cfg.section_dict("analysis"), cfg.atlas.seed, labels_hash,
                    STAGE_VERSIONS["analysis"])
        if self.store.stage_hash("analysis") == key:
            self._stage("analysis", "reused", t0)
            return key
        note, timings = run_analysis(self.store, self.sae.W_dec.float().numpy(), cfg, labels_file, self.log)
        self.store.record_stage("analysis", key, time.perf_counter() - t0, timings)
        self._stage("analysis", "computed", t0, note)
        return key

    def _compare(self, analysis_hash: str) -> str:
        """Match features against the previous atlas's SAE when [compare] names one."""
        from atlas.compare_stage import clear_comparison, read_previous, run_compare

        cfg = self.cfg
        t0 = time.perf_counter()
        if not cfg.compare.with_store:
            if self.store.stage_hash("compare") is not None:
                clear_comparison(self.store)
                self.store.con.execute("DELETE FROM stages WHERE stage = 'compare'")
            return ""
        prev = read_previous(cfg.resolve(cfg.compare.with_store), self.store_path, self.site_dir)
        key = _hash(prev.fingerprint(), self.sae.content_hash(), analysis_hash, cfg.section_dict("compare"),
                    STAGE_VERSIONS["compare"])
        if self.store.stage_hash("compare") == key:
            self._stage("compare", "reused", t0)
            return key
        note, warnings = run_compare(self.store, prev, self.sae.W_dec.float().numpy(), self.sae.d_in,
                                     cfg.compare.name)
        for w in warnings:
            self._warn(w)
        self.store.record_stage("compare", key, time.perf_counter() - t0)
        self._stage("compare", "computed", t0, note)
        return key

    def _record_run(self, started: float, corpus: TokenizedCorpus) -> None:
        import importlib.metadata as md

        cfg = self.cfg
        fixed = fixed_build_time()
        versions = {"atlas": atlas.__version__, "python": platform.python_version()}
        for pkg in ("torch", "transformers", "duckdb", "umap-learn", "scikit-learn", "plotly", "jinja2"):
            try:
                versions[pkg] = md.version(pkg)
            except md.PackageNotFoundError:
                pass
        sae = self.sae
        self.store.set_info(
            title=cfg.atlas.title, model=self.model.name, model_path=str(cfg.model.path), hook=self.hook,
            model_path_abs=str(cfg.resolve(cfg.model.path).resolve()), sae_path_abs=str(cfg.resolve(cfg.sae.path).resolve()),
            site_dir_abs=str(self.site_dir.resolve()), sae_input_scale=float(sae.input_norm.scale),
            hook_description=self.model.hook_spec.description, sae_path=str(cfg.sae.path), sae_hash=sae.content_hash(),
            sae_format=sae.format, sae_convention=sae.convention, d_in=sae.d_in, d_sae=sae.d_sae,
            corpus=self.corpus_description(), corpus_hash=self.corpus_hash, n_sequences=corpus.n_sequences,
            fvu=self.recon["fvu"], l0=self.recon["l0"], dead_share=self.recon["dead_share"],
            recon_tokens=self.recon["n_tokens"], recon_candidates=self.recon["candidates"],
            hook_candidates=getattr(self, "hook_choice", []),
            warnings=self.report.warnings, config=cfg.to_dict(), versions=versions,
            stage_times=self.report.times() if fixed is None else {},
            built_at=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started if fixed is None else fixed)),
        )
        self.store.con.execute("DELETE FROM runs")
        self.store.con.execute(
            "INSERT INTO runs VALUES (1, to_timestamp(?), coalesce(to_timestamp(?), now()), ?, ?, ?, ?)",
            [started if fixed is None else fixed, fixed, json.dumps(cfg.to_dict(), sort_keys=True), cfg.hash(), atlas.__version__,
             json.dumps(versions, sort_keys=True)],
        )

    def corpus_description(self) -> str:
        if self.cfg.demo.enabled and getattr(self.cfg, "_demo_corpus_note", ""):
            return self.cfg._demo_corpus_note
        return ", ".join(str(f) for f in self.cfg.corpus.files)

    def _site(self, key: str) -> None:
        """Render the site, or keep it when it was rendered from the same inputs and is still intact.

        The key covers the stages' results and the site settings; render_site adds the store's facts the
        pages show (not the build time and stage timings, which change on every run), the templates and
        its own code."""
        from atlas.site import render_site

        t0 = time.perf_counter()
        # Feature-page pieces and the replaced site are kept beside the activations, unless the config keeps
        # nothing on disk.
        cache = self.cache_dir if self.cfg.atlas.cache_max_gb > 0 else None
        stats = render_site(self.store_path, self.site_dir, short_window=self.cfg.site.short_window, key=key,
                            cache_dir=cache)
        note = f"{stats['n_pages']:,} pages, {stats['bytes'] / 2**20:,.1f} MiB"
        if not stats["reused"]:
            note += f", {stats['n_files'] - stats['kept']:,} files written"
        self._stage("site", "reused" if stats["reused"] else "computed", t0, note)


def build(cfg: Config, log=print, progress: bool | None = None) -> BuildReport:
    """Build the atlas described by `cfg`: store and site."""
    return Build(cfg, log, progress).run()
