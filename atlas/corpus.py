"""Corpus readers (plain text, JSONL) and tokenisation into model-ready sequences."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from atlas.errors import CorpusError


def _read_lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        with path.open("r", encoding="utf-8", errors="strict") as fh:
            for n, line in enumerate(fh, 1):
                yield n, line
    except UnicodeDecodeError as exc:
        raise CorpusError(
            f"{path} is not UTF-8 text (byte {exc.start} of a line cannot be decoded); "
            "re-encode it as UTF-8, e.g. `iconv -f latin1 -t utf-8 in.txt > out.txt`"
        ) from exc


def iter_documents(files: list[Path], text_field: str = "text") -> Iterator[str]:
    """Documents from .txt (one per non-empty line) and .jsonl (the `text_field` of each row)."""
    for path in files:
        if not path.is_file():
            raise CorpusError(f"corpus file {path} does not exist; fix [corpus] files in the config")
        is_jsonl = path.suffix.lower() in (".jsonl", ".ndjson")
        for n, line in _read_lines(path):
            if not line.strip():
                continue
            if not is_jsonl:
                yield line.rstrip("\n")
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{path}:{n} is not valid JSON ({exc.msg}); each line must be one JSON object") from exc
            if not isinstance(row, dict) or text_field not in row:
                keys = ", ".join(sorted(row)) if isinstance(row, dict) else type(row).__name__
                raise CorpusError(
                    f"{path}:{n} has no {text_field!r} field (found: {keys}); "
                    "set [corpus] text_field to the field that holds the text"
                )
            text = row[text_field]
            if isinstance(text, str) and text.strip():
                yield text


def files_hash(files: list[Path]) -> str:
    """Content hash of the corpus files, in the order given."""
    h = hashlib.sha256()
    for path in files:
        if not path.is_file():
            raise CorpusError(f"corpus file {path} does not exist; fix [corpus] files in the config")
        h.update(path.name.encode())
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


@dataclass
class TokenizedCorpus:
    """Content tokens of every sequence, concatenated; the model input adds special tokens around them."""

    tokens: np.ndarray  # [N] int32, content tokens only
    seq_starts: np.ndarray  # [n_seq + 1] int64 offsets into tokens
    prefix: list[int]  # special tokens placed before each sequence's content (e.g. [CLS] or BOS)
    suffix: list[int]  # special tokens placed after it (e.g. [SEP])

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_sequences(self) -> int:
        return int(self.seq_starts.shape[0] - 1)

    def save(self, path: Path) -> None:
        np.savez(path, tokens=self.tokens, seq_starts=self.seq_starts,
                 prefix=np.asarray(self.prefix, np.int64), suffix=np.asarray(self.suffix, np.int64))

    @classmethod
    def load(cls, path: Path) -> "TokenizedCorpus":
        with np.load(path) as z:
            return cls(z["tokens"], z["seq_starts"], z["prefix"].tolist(), z["suffix"].tolist())

    def seq_of(self, token_index: np.ndarray) -> np.ndarray:
        """Sequence id of each global token index."""
        return np.searchsorted(self.seq_starts, token_index, side="right") - 1


def special_tokens(tokenizer, is_causal: bool, prepend_bos: bool) -> tuple[list[int], list[int]]:
    """What the model expects around a sequence's content tokens."""
    if is_causal:
        bos = tokenizer.bos_token_id
        return ([bos] if (prepend_bos and bos is not None) else []), []
    probe = "hello world"
    inner = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(inner) + 1):
        if full[i:i + len(inner)] == inner:
            return list(full[:i]), list(full[i + len(inner):])
    return [], []


def tokenize(
    documents: Iterator[str],
    tokenizer,
    seq_len: int,
    max_tokens: int,
    prefix: list[int],
    suffix: list[int],
    min_tokens: int = 1,
    batch_docs: int = 512,
) -> TokenizedCorpus:
    """Tokenize documents into sequences of at most `seq_len` model tokens, up to `max_tokens` content tokens."""
    room = seq_len - len(prefix) - len(suffix)
    if room < 1:
        raise CorpusError(f"[corpus] seq_len = {seq_len} leaves no room for text after special tokens")
    chunks: list[np.ndarray] = []
    total = 0
    pending: list[str] = []

    def flush() -> bool:
        nonlocal total
        enc = tokenizer(pending, add_special_tokens=False, truncation=False)["input_ids"]
        pending.clear()
        for ids in enc:
            for s in range(0, len(ids), room):
                piece = ids[s:s + room]
                if len(piece) < min_tokens:
                    continue
                piece = piece[: max_tokens - total]
                chunks.append(np.asarray(piece, dtype=np.int32))
                total += len(piece)
                if total >= max_tokens:
                    return True
        return False

    done = False
    for doc in documents:
        pending.append(doc)
        if len(pending) >= batch_docs and flush():
            done = True
            break
    if not done and pending:
        flush()
    if total == 0:
        raise CorpusError(
            "the corpus holds no text (every document was empty or shorter than "
            f"[corpus] min_tokens = {min_tokens} tokens); point [corpus] files at non-empty text"
        )
    lengths = np.array([len(c) for c in chunks], dtype=np.int64)
    seq_starts = np.concatenate([[0], np.cumsum(lengths)])
    return TokenizedCorpus(np.concatenate(chunks), seq_starts, list(prefix), list(suffix))


def model_batches(corpus: TokenizedCorpus, batch_tokens: int, pad_id: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Padded model inputs over whole sequences, in corpus order.

    Yields (input_ids [B,S], attention_mask [B,S], seq_ids [B]); content of sequence i sits at
    positions len(prefix) .. len(prefix)+len_i in its row.
    """
    starts = corpus.seq_starts
    n = corpus.n_sequences
    p, s = len(corpus.prefix), len(corpus.suffix)
    i = 0
    while i < n:
        j, longest = i, 0
        while j < n:
            cand = max(longest, int(starts[j + 1] - starts[j]) + p + s)
            if j > i and cand * (j - i + 1) > batch_tokens:
                break
            longest = cand
            j += 1
        ids = np.full((j - i, longest), pad_id, dtype=np.int64)
        mask = np.zeros((j - i, longest), dtype=np.int64)
        for r, q in enumerate(range(i, j)):
            content = corpus.tokens[starts[q]:starts[q + 1]]
            row = np.concatenate([corpus.prefix, content, corpus.suffix]).astype(np.int64)
            ids[r, : len(row)] = row
            mask[r, : len(row)] = 1
        yield ids, mask, np.arange(i, j, dtype=np.int64)
        i = j
