"""Malformed SAE files fail with one SaeFormatError that names the file and the fix."""

import json
import pickle

import pytest
import torch

from atlas.errors import SaeFormatError
from atlas.saes import FORMATS, detect_format, load_sae
from sae_writers import save_safetensors, write_gemmascope1, write_openai, write_saelens


def weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "sae_weights.safetensors"))


def test_missing_path(tmp_path):
    with pytest.raises(SaeFormatError, match=r"does not exist.*\[sae\] path"):
        load_sae(tmp_path / "nope")


def test_unknown_format_lists_files_and_formats(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0" * 10)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(SaeFormatError) as e:
        detect_format(tmp_path)
    msg = str(e.value)
    assert "notes.txt" in msg and "weights.bin" in msg and '[sae] format = "..."' in msg
    assert all(name in msg for name in FORMATS)


def test_unknown_format_override(tmp_path):
    write_saelens(tmp_path / "s")
    with pytest.raises(SaeFormatError, match=r"Unknown SAE format 'saelenz'.*saelens"):
        load_sae(tmp_path / "s", format="saelenz")


def test_format_override_is_used(tmp_path):
    write_saelens(tmp_path / "s")
    assert load_sae(tmp_path / "s", format="saelens").format == "saelens"
    with pytest.raises(SaeFormatError, match="params.npz"):
        load_sae(tmp_path / "s", format="gemmascope")


def test_missing_tensor(tmp_path):
    write_saelens(tmp_path / "s")
    w = weights(tmp_path / "s")
    del w["W_dec"]
    save_safetensors(tmp_path / "s" / "sae_weights.safetensors", w)
    with pytest.raises(SaeFormatError,
                       match=r"sae_weights.safetensors has no tensor 'W_dec'.*holds: W_enc, b_dec, b_enc"):
        load_sae(tmp_path / "s")


def test_transposed_tensor(tmp_path):
    write_saelens(tmp_path / "s")
    w = weights(tmp_path / "s")
    w["W_dec"] = w["W_dec"].T.contiguous()
    save_safetensors(tmp_path / "s" / "sae_weights.safetensors", w)
    with pytest.raises(SaeFormatError, match=r"W_dec has shape \[16, 48\].*\[48, 16\].*transposed"):
        load_sae(tmp_path / "s")


def test_transposed_nn_linear_weight(tmp_path):
    path = tmp_path / "x.pt"
    t = write_openai(path, 16, 48)
    state = torch.load(path, weights_only=True)
    state["encoder.weight"] = t["encoder.weight"].T.contiguous()
    torch.save(state, path)
    with pytest.raises(SaeFormatError, match="encoder.weight.*transposed"):
        load_sae(path)


def test_config_contradicts_tensors(tmp_path):
    write_saelens(tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    cfg["d_sae"] = 64
    (tmp_path / "s" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(SaeFormatError, match=r"W_enc has shape \[16, 48\] but .*cfg.json.*d_sae=64.*contradicts"):
        load_sae(tmp_path / "s")


def test_square_shapes_refused_when_orientation_not_fixed(tmp_path):
    # a v1-era cfg carries no SAELens version, so a converter may have transposed the square W_enc
    write_saelens(tmp_path / "s", era="v1-v2", d_in=16, d_sae=16)
    with pytest.raises(SaeFormatError, match=r"W_enc is square \[16, 16\].*cannot be detected"):
        load_sae(tmp_path / "s")
    # the same shapes written by SAELens itself load
    write_saelens(tmp_path / "v6", d_in=16, d_sae=16)
    assert load_sae(tmp_path / "v6").d_sae == 16


@pytest.mark.parametrize("bad, expect", [(float("nan"), r"3 non-finite values \(3 NaN, 0 Inf\)"),
                                         (float("inf"), r"3 non-finite values \(0 NaN, 3 Inf\)")])
def test_non_finite_weights(tmp_path, bad, expect):
    write_saelens(tmp_path / "s")
    w = weights(tmp_path / "s")
    w["W_enc"][0, :3] = bad
    save_safetensors(tmp_path / "s" / "sae_weights.safetensors", w)
    with pytest.raises(SaeFormatError, match="W_enc holds " + expect):
        load_sae(tmp_path / "s")


def test_unknown_architecture(tmp_path):
    write_saelens(tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    cfg["architecture"] = "hypersparse"
    (tmp_path / "s" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(SaeFormatError, match=r"cfg.json: unknown SAELens architecture 'hypersparse'.*topk"):
        load_sae(tmp_path / "s")


def test_truncated_safetensors(tmp_path):
    write_saelens(tmp_path / "s")
    path = tmp_path / "s" / "sae_weights.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(SaeFormatError, match="sae_weights.safetensors is truncated or corrupt"):
        load_sae(tmp_path / "s")


def test_corrupt_json(tmp_path):
    write_saelens(tmp_path / "s")
    (tmp_path / "s" / "cfg.json").write_text('{"d_in": 16, ')
    with pytest.raises(SaeFormatError, match="cfg.json is not valid JSON"):
        load_sae(tmp_path / "s")


def test_truncated_pt(tmp_path):
    path = tmp_path / "6.pt"
    write_openai(path, 16, 48)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(SaeFormatError, match="6.pt is truncated or corrupt"):
        load_sae(path)


def test_truncated_npz(tmp_path):
    write_gemmascope1(tmp_path / "g", 16, 48)
    path = tmp_path / "g" / "params.npz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(SaeFormatError, match="params.npz is truncated or corrupt"):
        load_sae(tmp_path / "g")


class Pickled:
    """Stands in for a training-code class saved inside a checkpoint."""


def test_pt_with_pickled_code_is_never_unpickled(tmp_path):
    path = tmp_path / "sae.pt"
    torch.save({"cfg": Pickled(), "state_dict": {"W_enc": torch.zeros(2, 2)}}, path)
    with pytest.raises(SaeFormatError) as e:
        load_sae(path)
    msg = str(e.value)
    assert "sae.pt holds pickled Python objects" in msg and "weights_only=True" in msg
    assert "torch.save(model.state_dict()" in msg and "Pickled" in msg


def test_pickle_payload_does_not_run(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "x.pt").write_bytes(pickle.dumps({"a": Evil()}))
    with pytest.raises(SaeFormatError):
        load_sae(tmp_path / "x.pt")
    assert not marker.exists()
