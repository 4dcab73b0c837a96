"""``benchmarks/neural_deletion.py``: seeds run side by side (``--first-seed``) and merged."""

import importlib.util
import json
from pathlib import Path

import pytest

FASHION = Path("/usr/share/datasets/fashion-mnist")
SCRIPT = Path(__file__).parents[2] / "benchmarks" / "neural_deletion.py"


def _benchmark():
    spec = importlib.util.spec_from_file_location("bench_neural_deletion", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY = [
    "--root", str(FASHION), "--n", "300", "--n-test", "200", "--holdout", "100",
    "--epoch-step", "2", "--max-epochs", "2", "--retain-eval", "100", "--seeds", "1",
    "--methods", "retrain", "no update", "finetune", "--requests", "class 0",
]  # fmt: skip


@pytest.mark.skipif(not FASHION.is_dir(), reason="needs apt-get install dataset-fashion-mnist")
def test_seeds_run_side_by_side_and_merge_into_one_table(tmp_path, capsys):
    bench = _benchmark()
    for seed in (0, 1):
        out = tmp_path / f"s{seed}"
        assert bench.main([*TINY, "--first-seed", str(seed), "--out", str(out)]) == 0
        rows = json.loads((out / "neural_deletion.json").read_text())
        assert {r["seed"] for r in rows} == {seed}
        assert f"seed(s) [{seed}]" in (out / "neural_deletion.md").read_text()
    (tmp_path / "s1" / "notes.txt").write_text("mine")

    merged = tmp_path / "all"
    assert (
        bench.main(["--merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(merged)])
        == 0
    )
    rows = json.loads((merged / "neural_deletion.json").read_text())
    assert sorted(r["seed"] for r in rows if r["method"] == "retrain") == [0, 1]
    # the references run whatever --methods says (retrain-warm too)
    assert {r["method"] for r in rows} == {"retrain", "retrain-warm", "no update", "finetune"}
    text = (merged / "neural_deletion.md").read_text()
    assert "Merged from 2 runs (seeds [0, 1])" in text and "| class 0 | finetune |" in text
    assert (merged / "neural_deletion.png").read_bytes()[:4] == b"\x89PNG"
    # merging reads the runs and writes only its own three files
    assert (tmp_path / "s1" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in merged.iterdir()) == [
        "neural_deletion.json",
        "neural_deletion.md",
        "neural_deletion.png",
    ]
    capsys.readouterr()

    with pytest.raises(SystemExit, match="nowhere.*neural_deletion.json does not exist"):
        bench.main(["--merge", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
