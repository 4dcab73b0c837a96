"""Command line: --set overrides of the experiment settings, errors, a quick run."""

import re
from pathlib import Path

import pytest

from oblivio.bench.canary import CanarySettings
from oblivio.bench.poison import PoisonSettings
from oblivio.cli import _settings, main

ALICE = Path("../shared/data/alice/alice_in_wonderland.txt")


def test_set_parses_each_field_type():
    settings = _settings(
        CanarySettings,
        True,
        {},
        [
            "first_order_taus=1e-3, 3e-3",
            "damping=3",
            "max_chars=none",
            "refit=yes",
            "methods=retrain,finetune",
            "cg-iterations=7",
        ],
    )
    assert settings.first_order_taus == (1e-3, 3e-3) and settings.damping == 3.0
    assert settings.max_chars is None and settings.refit is True
    assert settings.methods == ("retrain", "finetune") and settings.cg_iterations == 7
    assert settings.epochs == CanarySettings.quick().epochs  # quick() sizes stay
    poison = _settings(PoisonSettings, False, {"root": "/data"}, ["shards=7"])
    assert poison.root == "/data" and poison.shards == 7 and poison.epochs == 20


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("nope=1", r"--set nope: unknown setting; known: .*damping"),
        ("damping=abc", r"--set damping='abc': expected float"),
        ("refit=maybe", r"--set refit='maybe': expected bool"),
        ("shards", r"--set needs KEY=VALUE"),
    ],
)
def test_bad_set_names_the_bad_value(assignment, message, capsys):
    command = "canary" if "shards" not in assignment else "poison-repair"
    assert main([command, "--quick", "--set", assignment]) == 2
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.skipif(not ALICE.exists(), reason="needs ../shared/data/alice")
def test_canary_command_applies_set(tmp_path, capsys):
    out = tmp_path / "canary"
    code = main(
        ["canary", "--quick", "--corpus", str(ALICE), "--out", str(out), "--set", "methods=retrain"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "retrain" in printed and "second-order" not in printed
    assert any(out.iterdir())
