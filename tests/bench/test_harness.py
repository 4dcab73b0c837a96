"""Experiment harness: config validation, an end-to-end run, resume, reports."""

import json

import pytest

from oblivio.bench import runner
from oblivio.bench.config import ConfigError, parse_config
from oblivio.bench.report import write_report

TINY = {
    "name": "tiny",
    "seeds": [0, 1],
    "datasets": [{"name": "breast-cancer", "options": {"normalize": "l2", "limit": 150}}],
    "models": [{"name": "logreg", "kind": "logistic", "options": {"l2": 1e-2}}],
    "unlearners": [
        {"name": "retrain"},
        {"name": "retrain", "label": "retrain-warm", "options": {"warm_start": True}},
    ],
    "requests": [{"kind": "remove", "count": 5}, {"kind": "relabel", "count": 4}],
}

TIMING = {"seconds", "retrain_seconds", "warm_retrain_seconds", "speedup", "speedup_vs_warm"}


def _comparable(records):
    return sorted(
        json.dumps({k: v for k, v in r.items() if k not in TIMING}, sort_keys=True) for r in records
    )


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"colour": 1}, "unknown key config.colour"),
        ({"seeds": ["a"]}, r"seeds\[0\] must be int"),
        ({"datasets": [{"name": "nope"}]}, r"datasets\[0\].name: unknown dataset 'nope'"),
        ({"models": [{"kind": "svm"}]}, r"models\[0\].kind must be one of"),
        ({"unlearners": [{"name": "magic"}]}, r"unlearners\[0\].name: unknown unlearner 'magic'"),
        (
            {"unlearners": [{"name": "retrain", "models": ["mlp"]}]},
            r"unlearners\[0\].models: no model named 'mlp'",
        ),
        (
            {"requests": [{"kind": "remove", "fraction": 2.0}]},
            r"requests\[0\].fraction must lie in",
        ),
        (
            {"requests": [{"kind": "remove", "count": 3, "fraction": 0.1}]},
            r"requests\[0\]: give exactly one",
        ),
        ({"requests": [{"kind": "remove", "size": 3}]}, r"unknown key requests\[0\].size"),
        ({"audit": {"mia": "yes"}}, r"audit.mia must be bool"),
        ({"requests": []}, "requests is empty"),
        (
            {"datasets": [{"name": "digits", "holdout": 1.0}]},
            r"datasets\[0\].holdout must lie in \[0, 1\), got 1.0",
        ),
    ],
)
def test_config_errors_name_the_bad_key(patch, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({**TINY, **patch})


def test_tiny_config_end_to_end_and_report(tmp_path):
    config = parse_config(TINY)
    records = runner.run_config(config, tmp_path)
    assert len(records) == len(config.cells()) == 8
    for record in records:
        assert record["distance"] <= 1e-6  # both are exact for logistic regression
        assert record["distance_original"] > 1e-4  # and the request changed the model
        assert 0.0 <= record["mia_auc"] <= 1.0
        assert record["retrain_seconds"] > 0 and record["seconds"] > 0
    assert (tmp_path / "config.json").exists() and (tmp_path / "environment.json").exists()
    markdown, page = write_report(tmp_path)
    text = markdown.read_text()
    assert "| breast-cancer | logreg | remove-5 | retrain-warm |" in text
    html = page.read_text()
    assert "data:image/png;base64," in html and "<table>" in html


def test_interrupted_run_resumes_without_recomputation(tmp_path, monkeypatch):
    config = parse_config(TINY)
    complete = runner.run_config(config, tmp_path / "complete")

    def interrupt_after_three(done, total, key):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.run_config(config, tmp_path / "resumed", progress=interrupt_after_three)
    assert len(runner.read_records(tmp_path / "resumed")) == 3

    calls = []
    original_run_cell = runner.run_cell

    def counting_run_cell(cell, out, mia=True):
        calls.append(cell.key)
        return original_run_cell(cell, out, mia)

    monkeypatch.setattr(runner, "run_cell", counting_run_cell)
    resumed = runner.run_config(config, tmp_path / "resumed")
    assert len(calls) == 5  # only the cells that had not finished
    assert _comparable(resumed) == _comparable(complete)


def test_torn_last_line_is_ignored(tmp_path):
    (tmp_path / "results.jsonl").write_text('{"cell": "a"}\n{"cell": ')
    assert runner.read_records(tmp_path) == [{"cell": "a"}]


def test_shipped_configs_are_valid():
    from pathlib import Path

    from oblivio.bench.config import load_config

    root = Path(__file__).resolve().parents[2] / "configs"
    names = sorted(p.name for p in root.glob("*.toml"))
    assert names == ["paper-linear.toml", "paper-neural.toml", "quick.toml"]
    for path in root.glob("*.toml"):
        config = load_config(path)
        assert config.cells(), path


def test_sequence_speedup_counts_one_retrain_per_request(tmp_path):
    """Honouring 6 requests by retraining costs 6 retrains, not one."""
    config = parse_config(
        {
            **TINY,
            "seeds": [0],
            "unlearners": [{"name": "retrain"}],
            "requests": [{"kind": "sequence", "count": 6, "batch": 1}],
        }
    )
    (record,) = runner.run_config(config, tmp_path)
    assert record["n_requests"] == 6
    expected = 6 * record["retrain_seconds"] / record["seconds"]
    assert record["speedup"] == pytest.approx(expected)


def test_another_config_is_not_mixed_into_a_results_folder(tmp_path):
    small = {
        **TINY,
        "seeds": [0],
        "unlearners": [{"name": "retrain"}],
        "requests": [{"kind": "remove", "count": 5}],
    }
    runner.run_config(parse_config(small), tmp_path)
    before = (tmp_path / "results.jsonl").read_text()
    other = parse_config({**small, "name": "other"})
    with pytest.raises(ValueError, match=r"holds 1 results of configuration 'tiny'.*'other'"):
        runner.run_config(other, tmp_path)
    assert (tmp_path / "results.jsonl").read_text() == before  # nothing written
    # the same configuration, edited: resumes, and says what stays from before
    edited = parse_config({**small, "requests": [{"kind": "remove", "count": 4}]})
    with pytest.warns(UserWarning, match="1 earlier result"):
        records = runner.run_config(edited, tmp_path)
    assert len(records) == 2


def test_a_reference_set_reaches_the_methods_that_take_one(tmp_path):
    """``holdout`` sets part of the test split aside; neural deletion gets it as its
    reference set (its target becomes known), and the rest is the test set."""
    base = {
        "name": "holdout",
        "seeds": [0],
        "models": [
            {"name": "mlp", "kind": "mlp", "options": {"hidden": [32], "epochs": 20, "lr": 3e-3}}
        ],
        "unlearners": [{"name": "salun"}],
        "requests": [{"kind": "remove", "count": 20}],
    }
    dataset = {"name": "digits", "options": {"normalize": "l2"}}
    (without,) = runner.run_config(parse_config({**base, "datasets": [dataset]}), tmp_path / "a")
    (with_holdout,) = runner.run_config(
        parse_config({**base, "datasets": [{**dataset, "holdout": 0.5}]}), tmp_path / "b"
    )
    assert without["n_holdout"] == 0 and without["diagnostics"]["target_known"] == 0.0
    assert with_holdout["n_holdout"] > 0 and with_holdout["diagnostics"]["target_known"] == 1.0
    assert with_holdout["diagnostics"]["holdout_accuracy"] > 0.5
