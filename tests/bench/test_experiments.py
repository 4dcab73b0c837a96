"""Small versions of the canary and label-repair experiments (Warnecke et al., Sec. 6)."""

from pathlib import Path

import numpy as np
import pytest

from oblivio.bench.canary import CanarySettings, run_canary, save_report
from oblivio.bench.poison import PoisonSettings, flip_labels, run_poison_repair
from oblivio.bench.poison import save_report as save_repair
from oblivio.data import Dataset

ALICE = Path("../shared/data/alice/alice_in_wonderland.txt")
FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not ALICE.exists(), reason="needs ../shared/data/alice")
def test_canary_quick_run(tmp_path):
    report = run_canary(CanarySettings.quick(corpus=str(ALICE)))
    rows = {row["method"]: row for row in report["rows"]}
    assert set(rows) == {"first-order (tau=0.01)", "second-order-cg", "retrain"}
    # window + secret length windows per insertion (no shared characters).
    assert report["n_affected"] == 4 * (12 + 10)
    original = report["original"]["exposure"]
    assert 0 <= original <= report["space_bits"] + 1e-9
    # Retraining on the cleaned text never saw the number: non-vacuity of what follows.
    assert rows["retrain"]["exposure"] <= original - 3.0
    # Both influence updates were applied (not skipped) and remove most of the exposure.
    for name in ("first-order (tau=0.01)", "second-order-cg"):
        row = rows[name]
        assert row["diagnostics"]["steps"] == 1.0 and row["diagnostics"]["steps_skipped"] == 0.0
        assert row["exposure"] <= rows["retrain"]["exposure"] + 0.5 * (
            original - rows["retrain"]["exposure"]
        )
    second = rows["second-order-cg"]
    assert second["layers"] == "last" and "CG" in second["note"]
    assert second["accuracy"] >= report["original"]["accuracy"] - 0.05
    path = save_report(report, tmp_path)
    text = path.read_text()
    assert "| retrain |" in text and "| second-order-cg | last |" in text


def test_flip_labels_maps_s_to_k_minus_1_minus_s():
    y = np.repeat(np.arange(4), 5)
    data = Dataset(np.zeros((20, 1)), y)
    poisoned, flipped = flip_labels(data, 2, seed=0)
    assert len(flipped) == 8
    before, after = data.select(flipped).y, poisoned.select(flipped).y
    np.testing.assert_array_equal(after, 3 - before)
    np.testing.assert_array_equal(np.bincount(before), [2, 2, 2, 2])
    untouched = np.setdiff1d(data.ids, flipped)
    np.testing.assert_array_equal(poisoned.select(untouched).y, data.select(untouched).y)
    with pytest.raises(ValueError, match="fewer than flips_per_class"):
        flip_labels(data, 6, seed=0)


@pytest.mark.slow
@pytest.mark.skipif(not FASHION.exists(), reason="needs dataset-fashion-mnist")
def test_poison_repair_quick_run(tmp_path):
    report = run_poison_repair(PoisonSettings.quick())
    rows = {row["method"]: row for row in report["rows"]}
    assert rows["retrain"]["restored"] == pytest.approx(1.0)
    assert report["accuracy_clean"] > report["accuracy_poisoned"]
    for name in ("first-order", "second-order"):
        diagnostics = rows[name]["diagnostics"]
        assert diagnostics["steps"] >= 1 and diagnostics["steps_skipped"] == 0.0
        assert rows[name]["layers"] == "last"
    assert rows["second-order"]["diagnostics"]["objective_change"] < 0
    assert rows["first-order"]["restored"] > 0
    assert "| second-order | last |" in save_repair(report, tmp_path).read_text()
