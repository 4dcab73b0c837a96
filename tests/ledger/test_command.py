"""``oblivio ledger ...`` from the command line (in process)."""

import json

from oblivio.cli import main


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
    assert main(["ledger", "verify", db]) == 0
    assert "ledger verify: ok; replayed 1" in capsys.readouterr().out
    assert main(["ledger", "prune", db]) == 0
    assert "pruned versions [0]" in capsys.readouterr().out
    assert main(["ledger", "init", db, "--dataset", "digits"]) == 2
    assert "already exists" in capsys.readouterr().err
