"""The `atlas` command's own behaviour: version, and failures turned into one message and an exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import atlas
from atlas import cli

ROOT = Path(__file__).resolve().parents[1]


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"atlas {atlas.__version__}"


def test_an_os_error_is_one_message_naming_the_file(monkeypatch, capsys):
    def fail(_args):
        raise PermissionError(13, "Permission denied", "/srv/atlas/site")

    monkeypatch.setattr(cli, "_search", fail)
    assert cli.main(["search", "x.duckdb", "q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Permission denied (/srv/atlas/site)")
    assert "Traceback" not in err


def test_a_closed_pipe_ends_quietly():
    # `atlas search … | head -1`: the reader leaves after one line; no BrokenPipeError traceback.
    code = ("import sys; from atlas import cli\n"
            "def many(_a):\n"
            "    for i in range(200000): print('line', i)\n"
            "    return 0\n"
            "cli._search = many\n"
            "sys.exit(cli.main(['search', 'x.duckdb', 'q']))\n")
    proc = subprocess.run(f'"{sys.executable}" -c "{code}" | head -1', shell=True, capture_output=True, text=True,
                          cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.stdout == "line 0\n"
    assert proc.stderr == ""
