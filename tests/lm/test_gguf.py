"""A GGUF [model] path: which paths name one, the conversion into a cached Hugging Face folder (exact, once, complete
or not at all), and the errors for what is not a usable GGUF."""

import sys

import pytest
import torch

from atlas.errors import ModelError
from atlas.lm import gguf

pytest.importorskip("gguf")
from tiny_gguf import write_tiny_gguf  # noqa: E402

TEXTS = ["the quick brown fox jumps over the lazy dog", "Hello world, this is a tiny text."]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    model, tokenizer = write_tiny_gguf(path)
    return path, model, tokenizer


def _same_model(folder, model, tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    converted = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert tok(TEXTS)["input_ids"] == tokenizer(TEXTS)["input_ids"]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (tokenizer.bos_token_id,
                                                                      tokenizer.eos_token_id, tokenizer.pad_token_id)
    ids = torch.tensor([tokenizer(TEXTS[0])["input_ids"]])
    with torch.no_grad():
        assert torch.equal(converted(ids).logits, model(ids).logits)


def test_conversion_reproduces_the_model_exactly_and_is_reused(tiny, tmp_path):
    path, model, tokenizer = tiny
    folder, converted = gguf.converted_folder(path, tmp_path)
    assert converted
    assert folder.name == "tiny-llama" and folder.parent.parent == tmp_path / "models"
    assert folder.parent.name == gguf.sha256_file(path)[:16]  # keyed by the file's contents
    _same_model(folder, model, tokenizer)
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    again, converted = gguf.converted_folder(path, tmp_path)
    assert again == folder and not converted
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in folder.parent.iterdir()] == ["tiny-llama"]  # no temporary folder left behind


def test_public_loader_gives_the_same_folder(tiny, tmp_path, monkeypatch):
    """transformers releases without their own GGUF reader go through from_pretrained: same weights, same tokens."""
    pytest.importorskip("accelerate")
    path, model, tokenizer = tiny
    monkeypatch.setattr(gguf, "_read", gguf._read_through_from_pretrained)
    folder, _ = gguf.converted_folder(path, tmp_path)
    _same_model(folder, model, tokenizer)


def test_a_killed_conversion_leaves_no_folder(tiny, tmp_path, monkeypatch):
    path, _, _ = tiny

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("safetensors.torch.save_file", fail)
    with pytest.raises(KeyboardInterrupt):
        gguf.converted_folder(path, tmp_path)
    assert list((tmp_path / "models").rglob("*")) == [(tmp_path / "models" / gguf.sha256_file(path)[:16])]


def test_which_paths_name_a_gguf(tiny, tmp_path):
    path, _, _ = tiny
    assert gguf.gguf_file(path) == path
    folder = tmp_path / "only"
    folder.mkdir()
    (folder / path.name).write_bytes(path.read_bytes())
    (folder / "README.md").write_text("a model")
    assert gguf.gguf_file(folder) == folder / path.name
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    (hf / "extra.gguf").write_bytes(b"GGUF")
    assert gguf.gguf_file(hf) is None  # a Hugging Face folder is loaded as it is
    assert gguf.gguf_file(tmp_path / "missing") is None


@pytest.mark.parametrize("case", ["not-gguf-file", "fake-gguf", "two-ggufs", "gguf-and-safetensors"])
def test_unusable_paths_are_refused_with_the_file_and_the_fix(tiny, tmp_path, case):
    path, _, _ = tiny
    if case == "not-gguf-file":
        target = tmp_path / "model.safetensors"
        target.write_bytes(b"\x00" * 64)
        expect = "not a GGUF"
    else:
        target = tmp_path / "models"
        target.mkdir()
        if case == "fake-gguf":
            (target / "model.gguf").write_text("not really")
            expect = "not a GGUF"
        else:
            (target / "a.gguf").write_bytes(path.read_bytes())
            other = "b.gguf" if case == "two-ggufs" else "model.safetensors"
            (target / other).write_bytes(path.read_bytes())
            expect = "several model files"
    with pytest.raises(ModelError, match=expect) as err:
        gguf.gguf_file(target)
    assert str(target) in str(err.value)


def test_missing_gguf_package_is_named(tiny, tmp_path, monkeypatch):
    path, _, _ = tiny
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf now raises ImportError
    with pytest.raises(ModelError, match=r"pip install gguf") as err:
        gguf.converted_folder(path, tmp_path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("keep", [0.01, 0.9])
def test_truncated_gguf_is_refused(tiny, tmp_path, keep):
    """Cut in the metadata, or in the tensors."""
    path, _, _ = tiny
    broken = tmp_path / "broken.gguf"
    data = path.read_bytes()
    broken.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelError, match="broken.gguf"):
        gguf.converted_folder(broken, tmp_path / "cache")
