"""`atlas inspect` on a causal LM: the text is framed and cut as the build framed and cut its corpus, the BOS position
is left out, and the plain-torch trunk gives what the model run through transformers gives."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atlas.commands import open_atlas
from atlas.commands.inspect import inspect_text
from atlas.config import load_config
from atlas.lm.adapter import load_model
from atlas.pipeline import build
from atlas.saes import load_sae
from atlas.store import Store
from atlas_fixtures import workspace, write_config, write_sae  # noqa: F401  (workspace: a fixture)
from tiny_models import save_tiny

HOOK = "blocks.1.hook_resid_post"
SEQ_LEN = 24
SHORT = "the quick brown fox reads every token"
LONG = " ".join(["a feature atlas explains every feature of a sparse autoencoder"] * 4)


@pytest.fixture(scope="module")
def llama_atlas(workspace, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("llama-atlas")
    save_tiny("llama", root / "model")
    write_sae(root / "sae", load_model(root / "model", HOOK).d_hook, seed=1, hook=HOOK)
    (root / "corpus.jsonl").symlink_to(workspace / "corpus.jsonl")
    build(load_config(write_config(root, model__prepend_bos="yes", corpus__seq_len=SEQ_LEN, corpus__max_tokens=1500,
                                   analysis__cluster_levels=[2, 4])), log=lambda *a: None, progress=False)
    return root


def direct(root: Path, text: str) -> dict[int, tuple[float, str, int]]:
    """feature → (max, token, firing tokens) from the model run through transformers, sequence by sequence, each
    with BOS in front and its position left out."""
    model = load_model(root / "model", HOOK)
    sae = load_sae(root / "sae")
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    room = SEQ_LEN - 1
    acts = []
    for s in range(0, len(ids), room):
        row = torch.tensor([[model.bos_token_id, *ids[s : s + room]]])
        acts.append(model.activations(row, torch.ones_like(row))[0, 1:])
    f = sae.encode(torch.cat(acts))
    tokens = model.token_strings(ids)
    peak, where = f.max(dim=0)
    return {i: (float(peak[i]), tokens[int(where[i])], int((f[:, i] > 0).sum())) for i in range(f.shape[1])
            if float(peak[i]) > 0}


def rows_of(root: Path, text: str, top: int = 48) -> list[dict]:
    with open_atlas(root / "atlas.duckdb") as store:
        return inspect_text(store, text, top=top)


def _no_transformers_model(*_a, **_k):
    raise AssertionError("inspect loaded the model through transformers")


@pytest.mark.parametrize("text", [SHORT, LONG])
def test_inspect_runs_the_trunk_and_agrees_with_transformers(llama_atlas, monkeypatch, text):
    expected = direct(llama_atlas, text)
    monkeypatch.setattr("atlas.lm.adapter.load_model", _no_transformers_model)
    rows = rows_of(llama_atlas, text)
    assert rows and len(rows) == min(48, len(expected))
    for r in rows:
        peak, token, n = expected[r["feature"]]
        assert r["max"] == pytest.approx(peak, rel=1e-4, abs=1e-5)
        assert (r["token"], r["n_tokens"]) == (token, n)
        assert r["page"].startswith("features/") and isinstance(r["label"], str)
    assert [r["max"] for r in rows] == sorted((r["max"] for r in rows), reverse=True)


def test_the_bos_position_is_never_reported(llama_atlas):
    with Store(llama_atlas / "atlas.duckdb", read_only=True) as s:
        info = s.info()
    assert info["token_prefix"] == [1] and info["token_suffix"] == []
    bos_text = load_model(llama_atlas / "model", HOOK).token_strings([1])[0]
    tokens = {r["token"] for r in rows_of(llama_atlas, SHORT)}
    assert bos_text not in tokens
    assert sum(r["n_tokens"] > 0 for r in rows_of(llama_atlas, SHORT)) > 0


def test_a_store_that_does_not_record_the_framing_derives_it(llama_atlas, tmp_path):
    """Stores written before the build recorded its special tokens and hook module: the adapter path, same rows."""
    old = tmp_path / "old.duckdb"
    old.write_bytes((llama_atlas / "atlas.duckdb").read_bytes())
    with Store(old) as s:
        s.set_info(token_prefix=None, token_suffix=None, hook_module=None, hook_io=None, tokenizer_file=None)
    with open_atlas(old) as store:
        derived = inspect_text(store, SHORT, top=48)
    current = rows_of(llama_atlas, SHORT)
    assert [(r["feature"], r["token"], r["n_tokens"]) for r in derived] == [
        (r["feature"], r["token"], r["n_tokens"]) for r in current]
    assert [r["max"] for r in derived] == pytest.approx([r["max"] for r in current], rel=1e-4, abs=1e-5)
