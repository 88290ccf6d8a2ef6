"""The logits stage: logit effects where the SAE's decoder lives in the residual stream, and one recorded sentence
saying why not where it does not (attention heads' z, MLP hidden layers, encoders without an LM head)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from atlas.config import load_config
from atlas.lm.adapter import load_model
from atlas.pipeline import build
from atlas.saes import load_sae
from atlas.saes.record import SaeWeights
from atlas.stages import logits as stage
from atlas.stages.run import Reporter, VersionRun
from atlas.stages.versions import version_entries
from atlas.store import Store, queries
from atlas_fixtures import workspace, write_config, write_sae  # noqa: F401  (workspace: a fixture)
from logit_checks import check_logit_effects
from sae_writers import write_kissane
from tiny_models import N_LAYERS, save_tiny


def run_stage(root: Path, model, sae) -> dict:
    """The stage alone, writing into a fresh store beside `root`'s config; returns the store's info."""
    cfg = load_config(write_config(root))
    with Store(root / "stage.duckdb") as store:
        run = VersionRun(cfg, version_entries(cfg)[0], store, Reporter(lambda *a: None, False), root / "site")
        stage.logits(SimpleNamespace(model=model), run, sae)
        info = store.info()
        info["rows"] = queries.logit_effects(store)
    return info


def sae_of(W_dec: torch.Tensor, **metadata) -> SaeWeights:
    d_sae, d_out = W_dec.shape
    return SaeWeights(W_enc=torch.randn(d_out, d_sae), b_enc=torch.zeros(d_sae), W_dec=W_dec, b_dec=torch.zeros(d_out),
                      metadata=metadata)


def test_a_residual_sae_on_a_causal_model_gets_the_direct_logit_effects(workspace, tmp_path):
    (tmp_path / "model").symlink_to(workspace / "model")
    model = load_model(workspace / "model", "blocks.1.hook_resid_post")
    sae = load_sae(workspace / "sae")
    info = run_stage(tmp_path, model, sae)
    assert info["has_unembedding"] is True and info["logits_note"] is None
    rows = info["rows"]
    assert len(rows) == sae.d_sae * 2 * stage.TOP
    check_logit_effects(model, sae.W_dec, k=stage.TOP)
    pos_ids, pos_vals, _, _ = model.logit_effects(sae.W_dec, k=stage.TOP)
    first = rows[(rows.feature == 3) & (rows.sign == "pos")]
    assert first["token_id"].tolist() == pos_ids[3].tolist()
    assert first["value"].tolist() == pytest.approx(pos_vals[3].tolist(), rel=1e-5)


@pytest.mark.parametrize("hook, space", [
    ("blocks.1.attn.hook_z", "attention heads' outputs before the output projection"),
    ("transformer.h.1.attn.c_proj.input", "attention heads' outputs before the output projection"),
    ("blocks.1.mlp.hook_post", "the MLP's hidden layer"),
    ("blocks.1.ln2.hook_normalized", "a layer norm's normalised input, without the norm's gain"),
])
def test_a_decoder_outside_the_residual_stream_gets_a_sentence_instead(workspace, tmp_path, hook, space):
    (tmp_path / "model").symlink_to(workspace / "model")
    model = load_model(workspace / "model", hook)
    info = run_stage(tmp_path, model, sae_of(torch.randn(8, model.d_hook)))
    assert info["has_unembedding"] is False and len(info["rows"]) == 0
    assert info["logits_note"] == (f"This SAE reads {space} ({hook}); its decoder does not live in the residual "
                                   "stream, so it has no direct effect on the logits.")


def test_a_transcoder_is_judged_by_the_hook_it_writes(workspace):
    model = load_model(workspace / "model", "blocks.1.ln2.hook_normalized")
    to_residual = sae_of(torch.randn(8, 16), hook_name_out="blocks.1.hook_mlp_out")
    assert stage.decoder_space(model, to_residual)[1] is None
    to_hidden = sae_of(torch.randn(8, 64), hook_name_out="blocks.1.mlp.hook_post")
    assert "This SAE writes the MLP's hidden layer (blocks.1.mlp.hook_post)" in stage.decoder_space(model, to_hidden)[1]


def test_a_decoder_of_another_width_or_an_encoder_gets_its_own_sentence(workspace, tmp_path):
    model = load_model(workspace / "model", "blocks.1.hook_resid_post")
    narrow = sae_of(torch.randn(4, 12))
    assert "decoder has 12 dimensions and the residual stream 16" in stage.decoder_space(model, narrow)[1]
    bert = load_model(save_tiny("bert", tmp_path / "bert"), "hidden_states.1")
    assert stage.decoder_space(bert, sae_of(torch.randn(4, 16)))[1] == stage.NO_HEAD


def test_a_kissane_hook_z_atlas_says_why_on_its_feature_pages(workspace, tmp_path):
    for name in ("model", "corpus.jsonl"):
        (tmp_path / name).symlink_to(workspace / name)
    write_kissane(tmp_path / "sae-files", n_heads=4, d_head=4, layer=1)
    build(load_config(write_config(tmp_path, sae__path="sae-files", sae__format="kissane", corpus__max_tokens=800,
                                   analysis__cluster_levels=[2, 4])), log=lambda *a: None, progress=False)
    with Store(tmp_path / "atlas.duckdb", read_only=True) as s:
        note = s.info()["logits_note"]
        assert s.count("logits") == 0
        alive = int(s.query("SELECT min(feature) AS f FROM features WHERE alive")["f"][0])
    assert "(blocks.1.attn.hook_z); its decoder does not live in the residual stream" in note
    page = (tmp_path / "site" / "features" / "0" / f"{alive}.html").read_text()
    section = page[page.index("<h2>Logit effects</h2>"):]
    section = section[: section.index("</section>")]
    assert note.replace("'", "&#39;") in section
    assert "promoted" not in section and "<table" not in section


def test_an_sae_after_the_final_norm_reads_its_effects_without_the_norm(workspace):
    from atlas.lm.hooks import Space

    model = load_model(workspace / "model", f"hidden_states.{N_LAYERS}")  # after the tiny GPT-2's ln_f
    assert model.hook_spec.space is Space.FINAL_NORM
    assert stage.decoder_space(model, sae_of(torch.randn(4, 16))) == (Space.FINAL_NORM, None)
