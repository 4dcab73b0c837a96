"""The harness runs each method on the goal it serves and reports how it is judged."""

import numpy as np
import pytest

from oblivio.bench import runner
from oblivio.bench.config import parse_config
from oblivio.bench.report import summary_frame, write_report
from oblivio.models import MLP, TorchModel
from oblivio.unlearners import L2UL, FineTune, Retrain

CONFIG = {
    "name": "goals",
    "seeds": [0],
    "datasets": [{"name": "digits", "options": {"normalize": "l2", "limit": 300}}],
    "models": [
        {
            "name": "mlp",
            "kind": "mlp",
            "options": {"hidden": [16], "epochs": 10, "lr": 1e-2, "batch_size": 64},
        }
    ],
    "unlearners": [
        {"name": "retrain"},
        {"name": "finetune", "options": {"epochs": 1}},
        {"name": "l2ul", "options": {"lr": 0.1, "n_adv": 4, "pgd_steps": 5}},
    ],
    "requests": [{"kind": "remove", "count": 4}],
}


def test_goal_of_reads_the_declared_goal():
    model = TorchModel(MLP(4, (4,), 2))
    assert runner.goal_of(L2UL(model)) == "correction"
    assert runner.goal_of(Retrain(model)) == "deletion"
    assert runner.goal_of(FineTune(model)) == "deletion"

    class Both(FineTune):  # serves both goals, as part A's methods do, chosen per instance
        goals = ("deletion", "correction")

    both = Both(model)
    assert runner.goal_of(both) == "deletion"
    both.goal = "correction"
    assert runner.goal_of(both) == "correction"


def test_a_method_serving_both_goals_runs_on_deletion_unless_told(monkeypatch):
    from oblivio import unlearners

    class Both(FineTune):
        goals = ("deletion", "correction")

    monkeypatch.setattr(unlearners, "get", lambda name: Both if name == "both" else L2UL)
    assert runner.method_options("both", {"lr": 0.1}) == {"lr": 0.1, "goal": "deletion"}
    assert runner.method_options("both", {"goal": "correction"}) == {"goal": "correction"}
    assert runner.method_options("l2ul", {"lr": 0.1}) == {"lr": 0.1}


def test_avg_gap_is_the_mean_absolute_difference_in_points():
    own = {"acc_forget": 0.5, "acc_retain": 0.9, "acc_test": 0.8, "mia_efficacy": 0.2}
    ref = {"acc_forget": 0.7, "acc_retain": 1.0, "acc_test": 0.8, "mia_efficacy": 0.1}
    assert runner.avg_gap(own, ref) == pytest.approx(100 * (0.2 + 0.1 + 0.0 + 0.1) / 4)
    assert runner.avg_gap({**own, "mia_efficacy": float("nan")}, ref) == pytest.approx(10.0)


def test_records_and_report_carry_the_goal(tmp_path):
    records = runner.run_config(parse_config(CONFIG), tmp_path)
    by_method = {r["method"]: r for r in records}
    assert by_method["l2ul"]["goal"] == "correction"
    assert by_method["finetune"]["goal"] == by_method["retrain"]["goal"] == "deletion"
    assert by_method["retrain"]["avg_gap"] == 0.0
    for record in records:
        assert np.isfinite(record["avg_gap"]) and np.isfinite(record["test_drop"])
        assert 0.0 <= record["mia_efficacy"] <= 1.0
    l2ul = by_method["l2ul"]
    assert l2ul["diagnostics"]["goal_reached"] == 1.0 and l2ul["acc_forget"] == 0.0
    # non-vacuity: retraining still classifies some forget records correctly
    assert by_method["retrain"]["acc_forget"] > 0.0
    markdown, _ = write_report(tmp_path)
    text = markdown.read_text()
    assert "| method | goal |" in text
    assert f"({l2ul['avg_gap']:.3g})" in text  # a correction's avg gap is bracketed
    assert "correction methods (L2UL)" in text


def test_old_records_without_a_goal_count_as_deletion():
    frame = summary_frame(
        [
            {"dataset": "d", "model": "m", "request": "r", "method": "x", "acc_test": 0.5},
            {"dataset": "d", "model": "m", "request": "r", "method": "y", "acc_test": 0.6},
        ]
    )
    assert list(frame["goal"]) == ["deletion", "deletion"]


def test_demo_clears_only_its_own_files(tmp_path):
    from oblivio._io import MARKER, prepare_output

    (tmp_path / MARKER).write_text("")
    (tmp_path / "cache" / "originals").mkdir(parents=True)
    (tmp_path / "cache" / "originals" / "abc.npz").write_bytes(b"x")
    for name in ("results.jsonl", "report.md", "report.html", "config.json"):
        (tmp_path / name).write_text("old")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "cache" / "keep.txt").write_text("mine")
    prepare_output(tmp_path, fresh=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [MARKER, "cache", "notes.txt"]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["keep.txt"]
    prepare_output(tmp_path / "absent", fresh=True)  # a fresh folder: nothing to do
