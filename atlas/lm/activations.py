"""Model activations at the hook for every content token: computed once, cached on disk, or streamed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from atlas.corpus import TokenizedCorpus, model_batches
from atlas.errors import AtlasError, DimensionError


def model_identity(path: Path) -> str:
    """A cheap, stable identity of a model folder: its config, tokenizer files and weight-file sizes."""
    h = hashlib.sha256()
    for f in sorted(path.iterdir()) if path.is_dir() else []:
        if f.is_file():
            h.update(f.name.encode())
            if f.suffix in (".json", ".txt", ".model") and f.stat().st_size < 50_000_000:
                h.update(f.read_bytes())
            else:
                h.update(str(f.stat().st_size).encode())
    return h.hexdigest()[:16]


@dataclass
class Batch:
    """Activations of whole sequences: rows [T, d] with their global token index and sequence id."""

    x: torch.Tensor
    token_index: np.ndarray
    seq_id: np.ndarray


def _content_rows(corpus: TokenizedCorpus, hidden: torch.Tensor, seq_ids: np.ndarray) -> Batch:
    p = len(corpus.prefix)
    starts = corpus.seq_starts
    rows, tix, sid = [], [], []
    for r, q in enumerate(seq_ids):
        a, b = int(starts[q]), int(starts[q + 1])
        rows.append(hidden[r, p:p + (b - a)])
        tix.append(np.arange(a, b, dtype=np.int64))
        sid.append(np.full(b - a, q, dtype=np.int64))
    return Batch(torch.cat(rows).float(), np.concatenate(tix), np.concatenate(sid))


def length_order(corpus: TokenizedCorpus) -> np.ndarray:
    """Sequence ids sorted by length (stable), so batches hold sequences of one length and pad little."""
    return np.argsort(np.diff(corpus.seq_starts), kind="stable")


def stream_from_model(model, corpus: TokenizedCorpus, batch_tokens: int, seq_subset: np.ndarray | None = None) -> Iterator[Batch]:
    """Run the model over the corpus (or the listed sequences, in that order), yielding hook activations per batch."""
    pad = model.tokenizer.pad_token_id
    if pad is None:
        pad = model.tokenizer.eos_token_id if model.tokenizer.eos_token_id is not None else 0
    sub = corpus if seq_subset is None else _subset(corpus, seq_subset)
    for ids, mask, seqs in model_batches(sub, batch_tokens, pad):
        hidden = model.activations(torch.from_numpy(ids), torch.from_numpy(mask))
        batch = _content_rows(sub, hidden, seqs)
        if seq_subset is not None:
            # back from positions in the subset to global token indices and sequence ids
            global_seq = seq_subset[batch.seq_id]
            offset = batch.token_index - sub.seq_starts[batch.seq_id]
            batch = Batch(batch.x, corpus.seq_starts[global_seq] + offset, global_seq)
        yield batch


def _subset(corpus: TokenizedCorpus, seqs: np.ndarray) -> TokenizedCorpus:
    pieces = [corpus.tokens[corpus.seq_starts[q]:corpus.seq_starts[q + 1]] for q in seqs]
    lengths = np.array([len(p) for p in pieces], dtype=np.int64)
    return TokenizedCorpus(np.concatenate(pieces), np.concatenate([[0], np.cumsum(lengths)]),
                           corpus.prefix, corpus.suffix)


class ActivationCache:
    """Hook activations of a whole corpus as one float32 .npy on disk, keyed by model, hook and tokens."""

    def __init__(self, folder: Path, key: str):
        self.folder = folder
        self.key = key
        self.path = folder / f"acts-{key}.npy"
        self.meta = folder / f"acts-{key}.json"

    def exists(self) -> bool:
        return self.path.is_file() and self.meta.is_file()

    def open(self) -> np.ndarray:
        return np.load(self.path, mmap_mode="r")

    def write(self, model, corpus: TokenizedCorpus, batch_tokens: int, d: int, progress=None) -> np.ndarray:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".npy.tmp")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(corpus.n_tokens, d))
        for batch in stream_from_model(model, corpus, batch_tokens, length_order(corpus)):
            out[batch.token_index] = batch.x.numpy()
            if progress:
                progress(len(batch.token_index))
        out.flush()
        del out
        os.replace(tmp, self.path)
        self.meta.write_text(json.dumps({"n_tokens": corpus.n_tokens, "d": d}))
        return self.open()

    @staticmethod
    def prune(folder: Path, keep: str, max_bytes: int) -> None:
        """Delete the oldest other cached activation files until the folder fits in max_bytes."""
        files = sorted(folder.glob("acts-*.npy"), key=lambda f: f.stat().st_mtime)
        total = sum(f.stat().st_size for f in files)
        for f in files:
            if total <= max_bytes:
                break
            if keep in f.name:
                continue
            total -= f.stat().st_size
            f.unlink()
            f.with_suffix(".json").unlink(missing_ok=True)


def stream_from_array(acts: np.ndarray, corpus: TokenizedCorpus, batch_tokens: int, start_seq: int = 0) -> Iterator[tuple[int, Batch]]:
    """Whole-sequence batches of cached activations; yields (next sequence id, batch)."""
    starts = corpus.seq_starts
    n = corpus.n_sequences
    q = start_seq
    while q < n:
        r = int(np.searchsorted(starts, starts[q] + batch_tokens, side="right")) - 1
        r = max(r, q + 1)
        r = min(r, n)
        a, b = int(starts[q]), int(starts[r])
        seq_id = np.repeat(np.arange(q, r, dtype=np.int64), np.diff(starts[q:r + 1]))
        yield r, Batch(torch.from_numpy(np.array(acts[a:b], dtype=np.float32)), np.arange(a, b, dtype=np.int64), seq_id)
        q = r


def sample_sequences(corpus: TokenizedCorpus, n_tokens: int, seed: int) -> np.ndarray:
    """A seeded random set of sequence ids holding about n_tokens content tokens, sorted."""
    order = np.random.default_rng(seed).permutation(corpus.n_sequences)
    lengths = np.diff(corpus.seq_starts)[order]
    take = int(np.searchsorted(np.cumsum(lengths), n_tokens)) + 1
    return np.sort(order[:take])


def load_precomputed(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """User-supplied activations: (acts [N, d], token ids [N], seq_starts or None).

    Accepts a .npz / .safetensors holding `activations` and `tokens` (and optionally `seq_starts`),
    or a folder of such shards (concatenated in name order).
    """
    if path.is_dir():
        shards = sorted([p for p in path.iterdir() if p.suffix in (".npz", ".safetensors")])
        if not shards:
            raise AtlasError(f"{path} holds no .npz or .safetensors activation shards")
        parts = [load_precomputed(p) for p in shards]
        acts = np.concatenate([p[0] for p in parts])
        toks = np.concatenate([p[1] for p in parts])
        offs, starts = 0, [np.array([0])]
        for a, t, s in parts:
            s = np.array([0, len(t)]) if s is None else s
            starts.append(s[1:] + offs)
            offs += len(t)
        return acts, toks, np.concatenate(starts)
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        data = load_file(str(path))
    elif path.suffix == ".npz":
        with np.load(path) as z:
            data = {k: z[k] for k in z.files}
    else:
        raise AtlasError(f"{path}: precomputed activations must be .npz, .safetensors or a folder of them")
    for key in ("activations", "tokens"):
        if key not in data:
            raise AtlasError(f"{path} has no {key!r} array (found: {', '.join(sorted(data))}); "
                             "save activations [N, d] and tokens [N] under those names")
    acts, toks = np.asarray(data["activations"], dtype=np.float32), np.asarray(data["tokens"]).astype(np.int32)
    if acts.ndim != 2 or toks.shape[0] != acts.shape[0]:
        raise DimensionError(f"{path}: activations {acts.shape} and tokens {toks.shape} must be [N, d] and [N]")
    starts = np.asarray(data["seq_starts"], dtype=np.int64) if "seq_starts" in data else None
    return acts, toks, starts


def free_bytes(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(folder).free
