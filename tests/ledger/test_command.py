"""``oblivio ledger ...`` from the command line (in process)."""

import json

import numpy as np
import pytest

from oblivio.cli import main
from oblivio.ledger import snapshots
from oblivio.ledger.storage import SQLiteStorage


def test_ledger_commands_end_to_end(tmp_path, capsys, binary_data):
    db = str(tmp_path / "l.db")
    record, other = (str(int(i)) for i in binary_data.ids[:2])
    assert (
        main(
            [
                "ledger",
                "init",
                db,
                "--dataset",
                "digits",
                "--classes",
                "3,8",
                "--method",
                "certified",
                "--set",
                "epsilon=1",
                "--set",
                "sigma=1",
                "--set",
                "seed=0",
            ]
        )
        == 0
    )
    assert "268 records, version 0" in capsys.readouterr().out
    assert main(["ledger", "submit", db, "--id", "t1", "--remove", f"{record},{other}"]) == 0
    entry = json.loads(capsys.readouterr().out)
    assert entry["status"] == "applied" and entry["version"] == 1
    assert entry["affected_ids"] == [int(record), int(other)]

    assert main(["ledger", "submit", db, "--id", "t2", "--remove", "999999"]) == 2
    assert "999999" in capsys.readouterr().err
    assert main(["ledger", "submit", db, "--id", "t3", "--relabel", record]) == 2
    assert "--labels" in capsys.readouterr().err

    assert main(["ledger", "status", db, record]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["state"] == "forgotten" and status["request_id"] == "t1"
    assert main(["ledger", "history", db, "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["request_id"], e["status"]) for e in lines] == [
        ("t1", "applied"),
        ("t2", "rejected"),
    ]
    assert main(["ledger", "history", db]) == 0
    assert "t2" in capsys.readouterr().out
    # pruned by default: only version 1 is stored, so verify checks it and replays nothing
    (stored,) = SQLiteStorage(db).snapshots()
    assert stored[0] == 1
    kept = snapshots.load(tmp_path / "l.db.models", stored[1])
    assert not np.isin([int(record), int(other)], kept.train_.ids).any()
    assert main(["ledger", "verify", db]) == 0
    assert "ledger verify: ok; replayed 0 requests from version 1" in capsys.readouterr().out
    assert main(["ledger", "prune", db]) == 0
    assert "pruned versions none" in capsys.readouterr().out
    assert main(["ledger", "init", db, "--dataset", "digits"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_ledger_init_keep_history_warns_and_keeps_every_version(tmp_path, capsys, binary_data):
    db = str(tmp_path / "h.db")
    init = ["ledger", "init", db, "--dataset", "digits", "--classes", "3,8", "--method", "retrain"]
    with pytest.raises(SystemExit):  # one or the other
        main([*init, "--prune", "--keep-history"])
    assert "not allowed with" in capsys.readouterr().err
    assert main([*init, "--checkpoint-every", "2"]) == 2  # pruning stores every version
    assert "needs --keep-history" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="older versions retain"):
        assert main([*init, "--keep-history", "--checkpoint-every", "2"]) == 0
    for k in range(2):
        assert main(["ledger", "submit", db, "--remove", str(int(binary_data.ids[k]))]) == 0
    assert [v for v, _ in SQLiteStorage(db).snapshots()] == [0, 2]
    assert SQLiteStorage(db).meta()["checkpoint_every"] == "2"
    capsys.readouterr()
    assert main(["ledger", "verify", db]) == 0
    assert "ledger verify: ok; replayed 2 requests from version 0" in capsys.readouterr().out
    assert main(["ledger", "prune", db]) == 0
    assert "pruned versions [0]" in capsys.readouterr().out


def test_warnings_print_as_one_line_in_the_commands_voice(tmp_path):
    """Off pytest's recorder, a library warning reaches the terminal as one line naming the
    command, not as the library's file, line and source."""
    import subprocess
    import sys

    probe = (
        "import sys; from oblivio.cli import main; "
        f"sys.exit(main(['ledger', 'init', {str(tmp_path / 'h.db')!r}, '--dataset', 'digits', "
        "'--classes', '3,8', '--method', 'retrain', '--keep-history']))"
    )
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if "warning" in line.lower()]
    assert warned == [
        "oblivio ledger: warning: this ledger keeps every model version (prune=False): older "
        "versions retain the records later requests remove or edit, until Ledger.prune()"
    ], done.stderr


def test_a_saved_neural_unlearner_runs_a_ledger_from_the_command_line(tmp_path, capsys):
    """oblivio's networks are rebuilt from the save, so the command line, which cannot pass a
    template, keeps a ledger of a neural unlearner."""
    import oblivio as ob
    from oblivio.models import MLP, TorchModel

    split = ob.datasets.load("digits")
    train = split.train.take(np.arange(300))
    model = TorchModel(MLP(64, (16,), 10), epochs=5, lr=1e-2, batch_size=32, seed=0)
    unlearner = ob.unlearners.create("salun", model, on_failure="ignore")
    saved = unlearner.fit(train, holdout=split.test).save(tmp_path / "salun")
    db = str(tmp_path / "n.db")
    assert main(["ledger", "init", db, "--from", str(saved)]) == 0
    assert "created" in capsys.readouterr().out
    removed = [int(i) for i in train.ids[:3]]
    assert main(["ledger", "submit", db, "--remove", ",".join(map(str, removed))]) == 0
    assert '"status": "applied"' in capsys.readouterr().out
    assert main(["ledger", "verify", db]) == 0
    assert "ledger verify: ok" in capsys.readouterr().out
    current = ob.Ledger.open(db).unlearner()  # no template here either
    assert type(current.model_.module) is MLP
    assert not np.isin(removed, current.train_.ids).any()
