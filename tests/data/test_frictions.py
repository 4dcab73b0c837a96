"""Small frictions of the data layer (issue 16, point 8): ids, labels, CSV files, Dataset.n."""

import stat

import numpy as np
import pytest

import oblivio as ob
from oblivio._io import write_json
from oblivio.data.dataset import as_id_array


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return ob.Dataset(rng.normal(size=(30, 3)), rng.integers(0, 2, 30), classes=["cat", "dog"])


def test_dataset_n(data):
    assert data.n == len(data) == 30
    assert data.drop([0, 1]).n == 28


def test_uint64_ids_beyond_int64_are_refused_not_wrapped():
    big = np.array([2**63, 5], dtype=np.uint64)
    with pytest.raises(ob.RequestError, match=str(2**63)):
        as_id_array(big)
    with pytest.raises(ob.RequestError, match="int64"):
        ob.Remove(ids=big)
    assert as_id_array(np.array([2**63 - 1], dtype=np.uint64)).tolist() == [2**63 - 1]


def test_sets_generators_and_ranges_of_ids(data):
    assert as_id_array({5, 3, 4}).tolist() == [3, 4, 5]
    assert as_id_array(i for i in (7, 1)).tolist() == [7, 1]
    assert as_id_array(range(3)).tolist() == [0, 1, 2]
    assert as_id_array(np.array([1, 2], dtype=object)).tolist() == [1, 2]
    change = ob.Remove(ids={3, 4}).resolve(data)
    assert sorted(change.before.ids.tolist()) == [3, 4]
    with pytest.raises(ob.RequestError, match="integers"):
        as_id_array(["a", "b"])


def test_removing_twice_says_already_removed(data):
    u = ob.unlearners.create("retrain", ob.models.LogisticRegression(l2=1e-2)).fit(data)
    u.forget(ob.Remove(ids=[3, 4]))
    with pytest.raises(ob.RequestError, match=r"already removed by an earlier request: \[4\]"):
        u.forget(ob.Remove(ids=[4, 5]))
    assert len(u.train_) == 28 and len(u.history_) == 1  # nothing changed
    with pytest.raises(ob.RequestError, match=r"unknown ids .*\[99\]"):
        u.forget(ob.Remove(ids=[99]))


def test_relabel_with_class_names_gives_a_hint(data):
    with pytest.raises(ob.RequestError, match=r"class indices.*classes\)\.index\(name\)"):
        ob.Relabel(ids=[1], labels=["dog"])


def test_csv_index_column_is_dropped_not_a_feature(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=40), "b": rng.normal(size=40)})
    frame["label"] = rng.integers(0, 2, 40)
    path = tmp_path / "with_index.csv"
    frame.to_csv(path)  # writes an unnamed 0..n-1 index column first
    with pytest.warns(UserWarning, match="row index"):
        split = ob.datasets.load(f"csv:{path}", label="label")
    assert split.train.feature_names == ("a", "b")
    kept = ob.datasets.load(f"csv:{path}", label="label", index_col=None)
    assert kept.train.n_features == 3


def test_csv_float_label_column_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "regression.csv"
    rows = ["x,y,target"] + [f"{a},{b},{a + b:.3f}" for a, b in rng.normal(size=(50, 2))]
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=r"50 distinct numbers.*regression target"):
        ob.datasets.load(f"csv:{path}", label="target")
    whole = tmp_path / "whole.csv"
    whole.write_text("x,label\n" + "\n".join(f"{i},{float(i % 2)}" for i in range(20)) + "\n")
    assert ob.datasets.load(f"csv:{whole}", label="label").train.n_classes == 2


def test_reports_are_readable_by_others(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = write_json(tmp_path / "report.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
