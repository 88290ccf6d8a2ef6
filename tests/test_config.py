"""The config: what a TOML file may hold, and one clear ConfigError naming the file, the setting and the fix
for everything it may not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from atlas.cli import main as cli_main
from atlas.config import CHOICES, Config, config_from_dict, load_config
from atlas.errors import ConfigError
from atlas.saes.names import AUTO, FORMAT_CHOICES, FORMATS
from atlas_fixtures import write_config

ROOT = Path(__file__).resolve().parents[1]


def _toml(tmp_path: Path, text: str, name: str = "atlas.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---- what loads --------------------------------------------------------------------------------------------------


def test_an_empty_file_gives_the_defaults(tmp_path):
    cfg = load_config(_toml(tmp_path, ""))
    assert cfg == Config()
    assert cfg.hash() == Config().hash()
    assert cfg.base_dir == tmp_path.resolve() and cfg.source == str(tmp_path / "atlas.toml")


def test_values_are_typed_and_paths_resolve_against_the_config_folder(tmp_path):
    cfg = load_config(_toml(tmp_path, '[atlas]\ncache_max_gb = 3\n[corpus]\nfiles = "one.txt"\n'
                                      '[analysis]\ncluster_levels = [2, 5]\nshared_layout = true\n'))
    assert cfg.atlas.cache_max_gb == 3.0 and isinstance(cfg.atlas.cache_max_gb, float)
    assert cfg.corpus.files == ["one.txt"]  # a single file may be written as a string
    assert cfg.analysis.cluster_levels == [2, 5] and cfg.analysis.shared_layout is True
    assert cfg.resolve("one.txt") == tmp_path.resolve() / "one.txt"
    assert cfg.resolve("/abs/x") == Path("/abs/x")


def test_the_hash_follows_the_settings(tmp_path):
    a = config_from_dict({"harvest": {"top_k": 5}})
    b = config_from_dict({"harvest": {"top_k": 6}})
    assert a.hash() != b.hash()
    assert a.section_hash("analysis") == b.section_hash("analysis")
    assert a.section_hash("harvest") != b.section_hash("harvest")


# ---- one source for the SAE format names ------------------------------------------------------------------------


def test_every_format_the_registry_loads_is_a_config_choice():
    from atlas.saes import registry

    assert registry.FORMATS is FORMATS
    assert FORMAT_CHOICES == (AUTO, *FORMATS)
    assert CHOICES[("sae", "format")] == CHOICES[("versions", "format")] == FORMAT_CHOICES
    for name in FORMATS:  # each name is a loader module
        assert (ROOT / "atlas" / "saes" / f"{name}.py").is_file(), name


@pytest.mark.parametrize("fmt", FORMAT_CHOICES)
def test_sae_and_versions_accept_every_format(fmt):
    cfg = config_from_dict({"sae": {"format": fmt}, "versions": [{"path": "other", "format": fmt}]})
    assert cfg.sae.format == fmt and cfg.versions[0].format == fmt


def test_the_config_loads_without_torch():
    code = "import sys, atlas.config; bad = [m for m in ('torch', 'transformers') if m in sys.modules]; assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ---- what is refused --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, match", [
    ('[harvest]\ntop_k = "five"', r"atlas\.toml: \[harvest\] top_k = 'five' must be a whole number"),
    ("[harvest]\ntop_k = 2.5", r"\[harvest\] top_k = 2\.5 must be a whole number"),
    ("[harvest]\ntop_k = true", r"\[harvest\] top_k = True must be a whole number"),
    ("[harvest]\ntop_k = -1", r"\[harvest\] top_k = -1 must not be negative"),
    ('[atlas]\ncache_max_gb = "lots"', r"\[atlas\] cache_max_gb = 'lots' must be a number"),
    ('[analysis]\nshared_layout = "yes"', r"\[analysis\] shared_layout = 'yes' must be true or false"),
    ("[atlas]\ntitle = 3", r"\[atlas\] title = 3 must be a string"),
    ("[analysis]\nexplanations = 3", r"\[analysis\] explanations = 3 must be a list"),
    ('[analysis]\ncluster_levels = [3, "x"]', r"\[analysis\] cluster_levels = 'x' must be a whole number"),
    ("harvest = 3", r"\[harvest\] must be a table of settings"),
    ('[versions]\npath = "x"', r"write \[\[versions\]\] \(an array of tables\)"),
])
def test_a_value_of_the_wrong_type_names_the_file_the_key_and_the_type(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match) as info:
        load_config(_toml(tmp_path, text))
    assert str(tmp_path / "atlas.toml") in str(info.value)


def test_an_unknown_section_lists_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"atlas\.toml: unknown section \[harvester\]; valid sections: atlas, sae"):
        load_config(_toml(tmp_path, "[harvester]\ntop_k = 3"))


def test_a_setting_outside_any_section_says_so(tmp_path):
    with pytest.raises(ConfigError, match=r"atlas\.toml: title = 'x' is outside any section.*\[section\] header"):
        load_config(_toml(tmp_path, 'title = "x"\n[atlas]\nseed = 1'))


def test_an_unknown_key_lists_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"atlas\.toml: unknown key \[harvest\] topk; valid keys: top_k, window"):
        load_config(_toml(tmp_path, "[harvest]\ntopk = 3"))
    with pytest.raises(ConfigError, match=r"unknown key \[versions\] weights; valid keys: name, path, format"):
        load_config(_toml(tmp_path, '[[versions]]\npath = "x"\nweights = "y"'))


def test_a_toml_syntax_error_names_the_file_and_the_line(tmp_path):
    with pytest.raises(ConfigError, match=r"atlas\.toml is not valid TOML: .*line 2"):
        load_config(_toml(tmp_path, "[harvest]\n[analysis\nneighbours = 3"))
    with pytest.raises(ConfigError, match=r"atlas\.toml is not valid TOML"):
        load_config(_toml(tmp_path, "[harvest]\ntop_k = 3\ntop_k = 4"))  # a key given twice


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin.toml"
    path.write_bytes('[atlas]\ntitle = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin\.toml is not UTF-8 text"):
        load_config(path)


def test_a_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"config file .*nowhere\.toml does not exist; pass the path of a \.toml"):
        load_config(tmp_path / "nowhere.toml")
    (tmp_path / "folder.toml").mkdir()
    with pytest.raises(ConfigError, match=r"config file .*folder\.toml is a folder; pass the path of a \.toml"):
        load_config(tmp_path / "folder.toml")


def test_an_unreadable_config_file_is_named(tmp_path, monkeypatch):
    path = _toml(tmp_path, "[atlas]\n")

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(ConfigError, match=r"cannot read the config file .*atlas\.toml: Permission denied"):
        load_config(path)


@pytest.mark.parametrize("section, key, value", [
    ("sae", "format", "safetensors"),
    ("versions", "format", "pt"),
    ("model", "prepend_bos", "maybe"),
    ("analysis", "cluster_basis", "pca"),
])
def test_an_invalid_choice_lists_the_valid_ones(section, key, value):
    raw = {section: [{"path": "x", key: value}]} if section == "versions" else {section: {key: value}}
    with pytest.raises(ConfigError, match=rf"\[{section}\] {key} = '{value}' is not valid; choose one of: auto, "):
        config_from_dict(raw, source="my.toml")
    try:
        config_from_dict(raw, source="my.toml")
    except ConfigError as exc:
        assert str(exc).startswith("my.toml: ")
        assert all(choice in str(exc) for choice in CHOICES[(section, key)])


def test_bad_config_value_lists_the_choices(tmp_path):
    with pytest.raises(ConfigError, match="choose one of"):
        load_config(write_config(tmp_path, analysis__cluster_basis="nonsense"))
    with pytest.raises(ConfigError, match="valid keys"):
        load_config(write_config(tmp_path, harvest__topk=3))


@pytest.mark.parametrize("raw, match", [
    ({"corpus": {"seq_len": 0}}, r"\[corpus\] seq_len must be at least 1"),
    ({"harvest": {"shards": 0}}, r"\[harvest\] shards must be at least 1"),
    ({"corpus": {"seq_len": 4}}, r"\[corpus\] seq_len is too short"),
    ({"analysis": {"cluster_levels": []}}, r"\[analysis\] cluster_levels must be a list of positive"),
    ({"analysis": {"cluster_levels": [0, 4]}}, r"\[analysis\] cluster_levels must be a list of positive"),
    ({"compare": {"name": "old"}}, r"\[compare\] name is set but with_store is empty"),
    ({"versions": [{"name": "b"}]}, r"\[\[versions\]\] entry 1 has no path"),
    ({"versions": [{"path": "x", "name": "!!"}]}, r"entry 1: name '!!' needs at least one letter or digit"),
    ({"sae": {"path": "a/v1"}, "versions": [{"path": "b/V1"}]}, r"entry 1: name 'V1' is already used by \[sae\]"),
    ({"explain": {"explainer": "openai"}}, r'\[explain\] explainer = "openai" needs base_url'),
    ({"explain": {"explainer": "openai", "base_url": "127.0.0.1:11434"}}, r"needs base_url, the endpoint's address"),
    ({"explain": {"explainer": "openai", "base_url": "http://127.0.0.1:8080/v1"}}, r"needs model"),
    ({"explain": {"n_score": 0}}, r"\[explain\] n_score must be at least 1"),
])
def test_values_that_cannot_work_together_are_refused(raw, match):
    with pytest.raises(ConfigError, match=match) as info:
        config_from_dict(raw, source="my.toml")
    assert str(info.value).startswith("my.toml: ")


@pytest.mark.parametrize("key, value, choices", [
    ("explainer", "gpt", "offline, openai"), ("llm_scorers", ["detection", "simulation"], "detection, fuzzing"),
])
def test_an_invalid_explainer_or_scorer_lists_the_valid_ones(key, value, choices):
    with pytest.raises(ConfigError, match=rf"\[explain\] {key} = .* is not valid; choose one of: {choices}"):
        config_from_dict({"explain": {key: value}}, source="my.toml")


def test_a_version_without_a_name_is_called_after_its_folder():
    cfg = config_from_dict({"versions": [{"path": "saes/second-run/"}]})
    assert cfg.versions[0].name == "second-run"


# ---- through the command line -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, needle", [
    ("[harvest]\ntopk = 3", "unknown key [harvest] topk; valid keys:"),
    ('[harvest]\ntop_k = "five"', "[harvest] top_k = 'five' must be a whole number"),
    ("[harvest\n", "is not valid TOML"),
    ('[sae]\nformat = "nonsense"', "choose one of: auto, saelens"),
])
def test_the_cli_reports_a_bad_config_in_one_line_with_a_nonzero_exit(tmp_path, capsys, text, needle):
    path = _toml(tmp_path, text)
    for argv in (["build", str(path)], ["search", str(path), "anything"]):
        assert cli_main(argv) == ConfigError.exit_code != 0
        err = capsys.readouterr().err
        assert err.startswith(f"error: {path}") and needle in err and err.count("\n") == 1
        assert "Traceback" not in err


def test_the_cli_names_a_missing_config_file(tmp_path, capsys):
    assert cli_main(["build", str(tmp_path / "nowhere.toml")]) == 2
    err = capsys.readouterr().err
    assert "nowhere.toml does not exist" in err and "Traceback" not in err
