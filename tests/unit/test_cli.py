"""The console command: subcommands, exit codes and one-line errors without tracebacks."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from nkflow.cli import main

ROOT = Path(__file__).resolve().parents[2]
SUBCOMMANDS = [
    "validate",
    "plan",
    "inspect",
    "tube",
    "tubes",
    "collect",
    "merge",
    "endpoints",
    "readout",
    "report",
    "gates",
    "qualify",
    "users",
    "audit",
    "review",
    "sign",
]


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    # one help line per subcommand, exactly these (``tube`` must not pass on ``tubes``)
    listed = re.findall(r"^    ([a-z]+) +\S", out, flags=re.M)
    assert listed == SUBCOMMANDS, out


def test_validate_ok_on_the_sample_config(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["validate", "--config", "config/config.yaml"]) == 0
    assert "configuration OK" in capsys.readouterr().out


def test_config_error_exits_1_with_one_line_and_no_traceback(tmp_path):
    bad = tmp_path / "config.yaml"
    bad.write_text("sheets: {}\npanels: {}\ngating: {}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "nkflow.cli", "validate", "--config", str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("nkflow validate: error: ")
    assert "field 'gating': found {}; expected a non-empty mapping" in lines[0]


def test_missing_config_file_is_named(capsys):
    assert main(["validate", "--config", "/nonexistent/config.yaml"]) == 1
    assert "/nonexistent/config.yaml: config file not found" in capsys.readouterr().err


def test_config_json_that_is_not_json(capsys):
    assert main(["validate", "--config-json", "{nope"]) == 1
    assert "--config-json: not valid JSON" in capsys.readouterr().err
