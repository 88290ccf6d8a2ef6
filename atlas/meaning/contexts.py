"""Contexts embedded where they stand. Each sequence is read once by the sentence encoder; a context's vector is the
mean of the encoder's token vectors over its span plus `focus_weight` times the mean over its own token, normalised.
Any number of contexts in one sequence then costs one pass of the encoder over that sequence."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from atlas.meaning.encoder import SentenceEncoder


def sequence_text(strings: list[str]) -> tuple[str, np.ndarray]:
    """The text of a sequence's display strings and the character where each token starts."""
    lengths = np.array([len(s) for s in strings], np.int64)
    return "".join(strings), np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else lengths


class ContextCache:
    """The context vector of every token of the corpus (float16 [n_tokens, d] on disk), filled a sequence at a time
    and keyed by the tokens, the encoder and the span: SAE versions and later builds read it instead of running the
    encoder again, and a killed build resumes where it stopped. One is kept per folder."""

    def __init__(self, folder: Path, key: str, n_tokens: int, n_sequences: int, dim: int):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"contexts-{key}.npy"
        self.done_path = folder / f"contexts-{key}.done.npy"
        for old in folder.glob("contexts-*.npy"):
            if key not in old.name:
                old.unlink(missing_ok=True)
        vectors = np.load(self.path, mmap_mode="r+") if self.path.is_file() else None
        if vectors is None or vectors.shape != (n_tokens, dim) or not self.done_path.is_file():
            del vectors
            np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float16, shape=(n_tokens, dim)).flush()
            self.done = np.zeros(n_sequences, bool)
            self._save_done()
        else:
            self.done = np.load(self.done_path)
        self.vectors = np.load(self.path, mmap_mode="r+")

    @staticmethod
    def fits(n_tokens: int, dim: int, max_gb: float) -> bool:
        return n_tokens * dim * 2 <= max_gb * 2**30

    def mark(self, seqs: np.ndarray) -> None:
        """Record that these sequences' vectors are written."""
        self.vectors.flush()
        self.done[seqs] = True
        self._save_done()

    def _save_done(self) -> None:
        tmp = self.done_path.with_name(self.done_path.stem + ".tmp.npy")
        np.save(tmp, self.done)
        os.replace(tmp, self.done_path)


def embed_contexts(encoder: SentenceEncoder, tokens: np.ndarray, seq_starts: np.ndarray, centres: np.ndarray,
                   strings: Callable[[list[int]], list[str]], radius: int, focus_weight: float = 1.0,
                   batch_tokens: int = 8192, seqs_per_call: int = 512, cache: ContextCache | None = None,
                   progress: Callable[[int], object] | None = None) -> np.ndarray:
    """Unit vectors [n, d] (float16) of the contexts around the global token indices `centres`.

    `strings` gives the display text of token ids (a word-initial piece carries its leading space), so a
    sequence's strings joined read as its text. With a `cache`, every token of each sequence read is embedded
    and kept, and sequences already there are not read again. `progress` is told how many corpus tokens each
    call read."""
    centres = np.asarray(centres, np.int64)
    out = np.zeros((len(centres), encoder.dim), np.float16)
    if not len(centres):
        return out
    seq = np.searchsorted(seq_starts, centres, side="right") - 1
    needed = np.unique(seq)
    if cache is not None:
        for chunk, read in _read(encoder, tokens, seq_starts, needed[~cache.done[needed]], strings, batch_tokens,
                                 seqs_per_call, progress):
            for q, (states, starts) in zip(chunk, read):
                n_src = int(seq_starts[q + 1] - seq_starts[q])
                cache.vectors[seq_starts[q]:seq_starts[q + 1]] = _pooled(
                    states.offsets, states.states, starts, n_src, np.arange(n_src), radius, focus_weight)
            cache.mark(chunk)
        return np.asarray(cache.vectors[centres])
    order = np.argsort(seq, kind="stable")
    for chunk, read in _read(encoder, tokens, seq_starts, needed, strings, batch_tokens, seqs_per_call, progress):
        lo_row, hi_row = np.searchsorted(seq[order], [chunk[0], chunk[-1] + 1])
        rows = order[lo_row:hi_row]
        which = np.searchsorted(chunk, seq[rows])
        for k, (q, (states, starts)) in enumerate(zip(chunk, read)):
            mine = rows[which == k]
            if len(mine):
                out[mine] = _pooled(states.offsets, states.states, starts, int(seq_starts[q + 1] - seq_starts[q]),
                                    centres[mine] - seq_starts[q], radius, focus_weight)
    return out


def _read(encoder: SentenceEncoder, tokens: np.ndarray, seq_starts: np.ndarray, seqs: np.ndarray,
          strings: Callable[[list[int]], list[str]], batch_tokens: int, seqs_per_call: int,
          progress: Callable[[int], object] | None):
    """(sequence ids, [(their encoder states, where each source token starts)]) a call of the encoder at a time."""
    text_of = _Strings(strings)
    for a in range(0, len(seqs), seqs_per_call):
        chunk = seqs[a:a + seqs_per_call]
        texts, starts = zip(*(sequence_text(text_of(tokens[seq_starts[q]:seq_starts[q + 1]])) for q in chunk))
        yield chunk, list(zip(encoder.token_states(list(texts), batch_tokens), starts))
        if progress is not None:
            progress(int(sum(seq_starts[q + 1] - seq_starts[q] for q in chunk)))


def _pooled(offsets: np.ndarray, states: np.ndarray, char_starts: np.ndarray, n_src: int, local: np.ndarray,
            radius: int, focus_weight: float) -> np.ndarray:
    """Span means of one sequence's encoder states for the contexts centred on source positions `local`."""
    d = states.shape[1]
    if not len(states):
        return np.zeros((len(local), d), np.float16)
    src = np.searchsorted(char_starts, offsets[:, 0], side="right") - 1  # the source token each piece lies in
    order = np.argsort(src, kind="stable")
    src, states = src[order], states[order]
    cum = np.concatenate([np.zeros((1, d), np.float64), np.cumsum(states, axis=0, dtype=np.float64)])
    first = np.searchsorted(src, np.arange(n_src + 1))  # first piece of each source token
    lo = np.clip(local - radius, 0, n_src)
    hi = np.clip(local + radius + 1, 0, n_src)
    count = (first[hi] - first[lo])[:, None]
    span = (cum[first[hi]] - cum[first[lo]]) / np.maximum(count, 1)
    whole = cum[-1] / max(len(states), 1)
    span = np.where(count > 0, span, whole)  # a span the encoder read no piece of: the sequence's mean
    fc = (first[local + 1] - first[local])[:, None]
    focus = (cum[first[local + 1]] - cum[first[local]]) / np.maximum(fc, 1)
    vec = span + focus_weight * focus
    norm = np.linalg.norm(vec, axis=1, keepdims=True)
    return (vec / np.maximum(norm, 1e-9)).astype(np.float16)


class _Strings:
    """Display strings of token ids, looked up once per distinct id."""

    def __init__(self, strings: Callable[[list[int]], list[str]]):
        self.strings = strings
        self.known: dict[int, str] = {}

    def __call__(self, ids: np.ndarray) -> list[str]:
        new = sorted({int(i) for i in ids} - self.known.keys())
        if new:
            self.known.update(zip(new, self.strings(new)))
        return [self.known[int(i)] for i in ids]
