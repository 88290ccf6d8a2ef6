"""The harvest stage: one pass of the SAE over the corpus (or over shards of it), written to the store's feature,
example, interval, histogram, co-activation and vocab tables."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from atlas.lm.activations import length_order, stream_from_array, stream_from_model
from atlas.corpus import TokenizedCorpus
from atlas.stages.inputs import SharedInputs
from atlas.stages.run import Keyed, Outcome, StoreLedger, VersionRun, input_key, run_keyed
from atlas.store import Store, frames

if TYPE_CHECKING:
    from atlas.harvest import Harvester
    from atlas.lm.adapter import ModelAdapter
    from atlas.saes import SaeWeights


def harvest(shared: SharedInputs, run: VersionRun, sae: SaeWeights) -> str:
    """Harvest the corpus with `sae` into the version's store; returns the stage's key."""
    from atlas.store.partials import drop_partials

    cfg = run.cfg

    def ckpt(key: str) -> Path:
        return shared.cache_dir / f"harvest-{key}.ckpt.npz"

    def compute(key: str) -> Outcome[None]:
        t0 = time.perf_counter()
        if cfg.harvest.shards > 1:
            harvester = _sharded_pass(shared, run, sae, key)
        else:
            harvester = _single_pass(shared, run, sae, ckpt(key))
        res = harvester.finalize()
        seconds = time.perf_counter() - t0
        n_alive = _write_harvest(shared, run, sae, res)
        rate = res.n_tokens / max(seconds, 1e-9)
        return Outcome(note=f"{res.n_tokens:,} tokens at {rate:,.0f}/s; {n_alive:,} alive, "
                            f"{res.n_features - n_alive:,} dead", details={"tokens": int(res.n_tokens)})

    def tidy(key: str) -> None:
        ckpt(key).unlink(missing_ok=True)
        drop_partials(run.store)  # also those left behind when a build stopped right after recording the stage

    return run_keyed(Keyed(
        "harvest",
        # Sharding changes how the pass runs, never what it computes, so it is left out of the key.
        inputs={"activations": shared.acts_key, "sae": sae.content_hash(),
                "settings": {k: v for k, v in cfg.section_dict("harvest").items() if k != "shards"},
                "seed": cfg.atlas.seed},
        ledger=StoreLedger(run.store),
        compute=compute,
        tidy=tidy,
    ), run.report).key


def _write_harvest(shared: SharedInputs, run: VersionRun, sae: SaeWeights, res) -> int:
    """Write the harvest's tables and facts; returns the number of live features."""
    store, window = run.store, run.cfg.harvest.window
    corpus = shared.corpus
    W_dec = sae.W_dec.float().numpy()
    store.replace_table("features", frames.feature_stats(res, np.linalg.norm(W_dec, axis=1)))
    store.replace_table("examples", frames.examples_table(res, corpus.tokens, corpus.seq_starts, window))
    store.replace_table("intervals", frames.intervals_table(res))
    store.replace_table("histograms", frames.histograms_table(res))
    store.replace_table("coactivation", frames.coact_table(res))
    store.replace_rows("neighbours", frames.neighbour_rows("coact", res.coact_top_idx, res.coact_top_score),
                       kind="coact")
    write_vocab(store, shared.model, store.example_token_ids())
    n_alive = int((res.count > 0).sum())
    store.set_info(n_tokens=int(res.n_tokens), n_alive=n_alive, n_dead=int(res.n_features - n_alive),
                   coact_exact=bool(res.coact_exact))
    return n_alive


def write_vocab(store: Store, model: ModelAdapter, new_ids: np.ndarray) -> None:
    """Add the display text of token ids the vocab table does not hold yet."""
    import pandas as pd

    ids = np.setdiff1d(np.asarray(new_ids, dtype=np.int64), store.vocab_ids())
    if len(ids):
        store.append_rows("vocab", pd.DataFrame(
            {"token_id": ids.astype(np.int32), "token": model.token_strings([int(i) for i in ids])}))


def _encoded_batches(shared: SharedInputs, batch_tokens: int, start_seq: int):
    corpus = shared.corpus
    if shared.acts is not None:
        yield from stream_from_array(shared.acts, corpus, batch_tokens, start_seq)
        return
    # Without a cache, sequences go through the model shortest first (little padding); the checkpoint
    # position counts sequences in that order.
    remaining = length_order(corpus)[start_seq:]
    done = start_seq
    for batch in stream_from_model(shared.model, corpus, batch_tokens, remaining):
        done += len(np.unique(batch.seq_id))
        yield done, batch


def _single_pass(shared: SharedInputs, run: VersionRun, sae: SaeWeights, ckpt: Path) -> Harvester:
    """The whole corpus in one pass, checkpointed to `ckpt` every `checkpoint_every` batches."""
    import torch

    from atlas.harvest import Harvester

    cfg, corpus = run.cfg, shared.corpus
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    harvester, start = Harvester(sae.d_sae, cfg.harvest, seed=cfg.atlas.seed), 0
    if ckpt.is_file():
        with np.load(ckpt, allow_pickle=False) as z:
            state = {k: z[k] for k in z.files}
        start = int(state.pop("_next_seq"))
        harvester = Harvester.from_state(state, cfg.harvest)
        run.report.log(f"  harvest: resuming from a checkpoint at sequence {start:,} of {corpus.n_sequences:,}")
    n_batches = 0
    with run.report.bar(corpus.n_tokens, "harvest") as bar, torch.inference_mode():
        lengths = np.diff(corpus.seq_starts)
        bar.update(int(lengths[:start].sum() if shared.acts is not None else lengths[length_order(corpus)[:start]].sum()))
        for next_seq, batch in _encoded_batches(shared, cfg.model.batch_tokens, start):
            harvester.update(sae.encode_sparse(batch.x), batch.token_index, batch.seq_id)
            bar.update(len(batch.token_index))
            n_batches += 1
            if cfg.harvest.checkpoint_every and n_batches % cfg.harvest.checkpoint_every == 0 \
                    and next_seq < corpus.n_sequences:
                tmp = ckpt.with_name(ckpt.name + ".tmp.npz")
                np.savez(tmp, _next_seq=np.int64(next_seq), **harvester.state_dict())
                os.replace(tmp, ckpt)
    return harvester


def _sharded_pass(shared: SharedInputs, run: VersionRun, sae: SaeWeights, key: str) -> Harvester:
    """The pass as `[harvest] shards` contiguous runs of sequences, one after another. Each finished shard's
    partial goes to the store, which is what a killed build resumes from; the store merges them exactly."""
    import torch

    from atlas.harvest import Harvester
    from atlas.store.partials import HarvestPartials

    cfg, corpus = run.cfg, shared.corpus
    n_shards = cfg.harvest.shards
    # Sequences in the order the pass reads them: the cache's, or shortest first through the model.
    order = np.arange(corpus.n_sequences) if shared.acts is not None else length_order(corpus)
    bounds = np.linspace(0, corpus.n_sequences, n_shards + 1).round().astype(np.int64)
    shard_tokens = np.diff(np.concatenate([[0], np.cumsum(np.diff(corpus.seq_starts)[order])])[bounds])
    partials = HarvestPartials(run.store, input_key(key, bounds.tolist()))
    done = set(partials.finished())
    if done:
        first = min(set(range(n_shards)) - done, default=n_shards)
        run.report.log(f"  harvest: resuming at shard {first + 1} of {n_shards} ({len(done)} already in the store)")
    with run.report.bar(corpus.n_tokens, "harvest") as bar, torch.inference_mode():
        bar.update(int(shard_tokens[sorted(done)].sum()))
        for shard in range(n_shards):
            if shard in done:
                continue
            harvester = Harvester(sae.d_sae, cfg.harvest, seed=cfg.atlas.seed)
            for batch in _shard_batches(shared, cfg.model.batch_tokens, order[bounds[shard]:bounds[shard + 1]]):
                harvester.update(sae.encode_sparse(batch.x), batch.token_index, batch.seq_id)
                bar.update(len(batch.token_index))
            partials.write(shard, harvester.partial_frames())
            del harvester
    return Harvester.from_partial(partials.merge(), cfg.harvest, seed=cfg.atlas.seed)


def _shard_batches(shared: SharedInputs, batch_tokens: int, seqs: np.ndarray):
    """Encoder-input batches of the listed sequences (a contiguous run of the pass's order)."""
    if len(seqs) == 0:
        return
    corpus = shared.corpus
    if shared.acts is not None:
        # Ending the corpus after the run's last sequence makes the cache stream stop there.
        head = TokenizedCorpus(corpus.tokens, corpus.seq_starts[: seqs[-1] + 2], corpus.prefix, corpus.suffix)
        for _, batch in stream_from_array(shared.acts, head, batch_tokens, int(seqs[0])):
            yield batch
    else:
        yield from stream_from_model(shared.model, corpus, batch_tokens, seqs)
