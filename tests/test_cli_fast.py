"""The command line answers --help and argument errors without importing torch; progress
goes to stderr as plain lines when stderr is not a terminal."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from oblivio.cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")
PROBE = """
import sys
from oblivio.cli import main
try:
    main({argv!r})
except SystemExit as exit:
    code = exit.code
print("CODE", code, "TORCH", "torch" in sys.modules, "SKLEARN", "sklearn" in sys.modules)
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["run", "--help"],
        ["audit", "--help"],
        ["run"],  # missing argument
        ["nope"],  # unknown command
        ["audit", "--model", "svm"],  # bad choice
        ["--quiet", "--verbose", "datasets"],
    ],
)
def test_help_and_argument_errors_do_not_import_torch(argv):
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert "TORCH False SKLEARN False" in done.stdout, done.stderr
    expected = "CODE 0" if "--help" in argv else "CODE 2"
    assert expected in done.stdout


TINY = """
name = "tiny-cli"
seeds = [0]
[[datasets]]
name = "breast-cancer"
options = { normalize = "l2", limit = 120 }
[[models]]
name = "logreg"
kind = "logistic"
options = { l2 = 1e-2 }
[[unlearners]]
name = "retrain"
[[unlearners]]
name = "second-order"
[[requests]]
kind = "remove"
count = 3
"""


def test_run_reports_plain_progress_lines_off_a_terminal(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    out = tmp_path / "results"
    assert main(["run", str(config), "--out", str(out), "--verbose"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("[oblivio] tiny-cli: cells")]
    assert any("2/2 (100%)" in line for line in lines), err
    assert all("elapsed" in line for line in lines)
    assert any("ETA" in line for line in lines)
    assert "\x1b[" not in err  # no terminal control codes in a log
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["method"] for r in records} == {"retrain", "second-order"}
