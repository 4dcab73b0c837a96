"""Requests: what each resolves to, and every way a request is rejected (names the values)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import oblivio as ob
from oblivio.data import Dataset, Relabel, Remove, Replace, ReplaceFeatures, RequestError


def make(sparse=False) -> Dataset:
    X = np.array(
        [
            [1.0, 0.0, 2.0, 0.0],
            [0.0, 0.0, 3.0, 1.0],
            [0.0, 4.0, 0.0, 0.0],
            [5.0, 0.0, 0.0, 2.0],
            [0.0, 0.0, 0.0, 6.0],
        ]
    )
    names = ["age", "url::a", "url::b", "zip"]
    return Dataset(
        sp.csr_matrix(X) if sparse else X,
        [0, 1, 2, 1, 0],
        [10, 11, 12, 13, 14],
        names,
        ("cat", "dog", "owl"),
        "toy",
    )


def snapshot(data: Dataset):
    X = data.X.toarray() if sp.issparse(data.X) else data.X.copy()
    return X, data.y.copy(), data.ids.copy()


# -- Remove ---------------------------------------------------------------------------------------
def test_remove_resolves_to_before_empty_after_and_result():
    train = make()
    change = Remove([13, 10]).resolve(train)
    assert change.is_removal and not change.is_empty and len(change) == 2
    np.testing.assert_array_equal(change.ids, [13, 10])
    np.testing.assert_array_equal(change.before.X, train.X[[3, 0]])
    assert len(change.after) == 0 and change.after.X.shape == (0, 4)
    np.testing.assert_array_equal(change.result.ids, [11, 12, 14])
    np.testing.assert_array_equal(change.result.X, train.X[[1, 2, 4]])
    assert isinstance(change.request, Remove) and "13, 10" in repr(change.request)


def test_empty_remove_is_an_empty_change():
    change = Remove([]).resolve(make())
    assert change.is_empty and len(change) == 0 and len(change.result) == 5


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (lambda: Remove([10, 99, 98]), r"unknown ids .*\[99, 98\]"),
        (lambda: Remove([11, 12, 11]), r"duplicate ids in request: \[11\]"),
        (lambda: Remove([10, 11, 12, 13, 14]), "removing all 5 records would leave"),
        (lambda: Remove([1.5]), r"ids must be integers, got \[1\.5\]"),
        (lambda: Remove([[10, 11]]), r"one-dimensional, got shape \(1, 2\)"),
        (lambda: Remove(["x"]), "must be integers"),
    ],
)
def test_bad_removals_are_refused_and_change_nothing(request_, message):
    train = make()
    before = snapshot(train)
    with pytest.raises(RequestError, match=message):
        request_().resolve(train)
    for old, new in zip(before, snapshot(train), strict=True):
        np.testing.assert_array_equal(old, new)


def test_already_removed_ids_are_unknown():
    result = Remove([12]).resolve(make()).result
    with pytest.raises(RequestError, match=r"unknown ids.*\[12\]"):
        Remove([12]).resolve(result)


def test_request_error_is_a_value_error_exported_at_top_level():
    assert issubclass(ob.RequestError, ValueError) and ob.RequestError is RequestError


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_remove_result_is_drop_and_before_is_select(draw):
    n = draw.draw(st.integers(2, 25))
    rng = np.random.default_rng(draw.draw(st.integers(0, 2**16)))
    ids = rng.permutation(10 * n)[:n]
    sparse = draw.draw(st.booleans())
    X = rng.normal(size=(n, 3)) * (rng.random((n, 3)) < 0.5)
    train = Dataset(sp.csr_matrix(X) if sparse else X, rng.integers(0, 3, n), ids)
    chosen = draw.draw(st.lists(st.sampled_from(ids.tolist()), unique=True, max_size=n - 1))
    change = Remove(chosen).resolve(train)
    expected, picked = train.drop(chosen), train.select(chosen)
    np.testing.assert_array_equal(change.result.ids, expected.ids)
    np.testing.assert_array_equal(change.result.dense(), expected.dense())
    np.testing.assert_array_equal(change.result.y, expected.y)
    np.testing.assert_array_equal(change.before.ids, chosen)
    np.testing.assert_array_equal(change.before.dense(), picked.dense())
    assert change.is_empty == (len(chosen) == 0)
    assert len(change.result) + len(change.before) == n


# -- Relabel --------------------------------------------------------------------------------------
def test_relabel_changes_only_the_labels_of_those_ids():
    train = make()
    change = Relabel([14, 11], [2, 0]).resolve(train)
    assert not change.is_removal and not change.is_empty
    np.testing.assert_array_equal(change.before.y, [0, 1])
    np.testing.assert_array_equal(change.after.y, [2, 0])
    np.testing.assert_array_equal(change.after.ids, [14, 11])
    np.testing.assert_array_equal(change.after.X, change.before.X)
    np.testing.assert_array_equal(change.result.y, [0, 0, 2, 1, 2])
    np.testing.assert_array_equal(change.result.X, train.X)
    np.testing.assert_array_equal(change.result.ids, train.ids)


def test_relabel_to_the_same_labels_is_empty():
    assert Relabel([10, 12], [0, 2]).resolve(make()).is_empty
    assert Relabel(11, 1).resolve(make()).is_empty


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (lambda: Relabel([10, 11], [3, -1]), r"outside the 3 classes of 'toy'.*\[-1, 3\]"),
        (lambda: Relabel([10, 77], [0, 1]), r"unknown ids.*\[77\]"),
        (lambda: Relabel([10, 10], [0, 1]), r"duplicate ids in request: \[10\]"),
        (lambda: Relabel([10, 11], [1]), r"one label per id: 2 ids, labels of shape \(1,\)"),
        (lambda: Relabel([10], [0.5]), r"labels must be integers, got \[0\.5\]"),
        (lambda: Relabel([10], [np.inf]), r"labels must be integers, got \[inf\]"),
        (lambda: Relabel([10], ["dog"]), "labels must be class indices"),
    ],
)
def test_bad_relabels_are_refused(request_, message):
    train = make()
    before = snapshot(train)
    with pytest.raises(RequestError, match=message):
        request_().resolve(train)
    np.testing.assert_array_equal(before[1], train.y)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_relabel_property(draw):
    train = make()
    chosen = draw.draw(st.lists(st.sampled_from(train.ids.tolist()), unique=True))
    labels = draw.draw(st.lists(st.integers(0, 2), min_size=len(chosen), max_size=len(chosen)))
    change = Relabel(chosen, labels).resolve(train)
    expected = train.y.copy()
    expected[train.positions(chosen)] = labels
    np.testing.assert_array_equal(change.result.y, expected)
    np.testing.assert_array_equal(change.after.y, labels)
    assert change.is_empty == bool(np.array_equal(train.select(chosen).y, labels))


# -- ReplaceFeatures ------------------------------------------------------------------------------
@pytest.mark.parametrize("sparse", [False, True])
def test_replace_features_default_rows_are_those_with_a_non_zero(sparse):
    train = make(sparse)
    change = ReplaceFeatures(["url::a", 2]).resolve(train)
    np.testing.assert_array_equal(change.ids, [10, 11, 12])  # rows where url::a or url::b != 0
    expected = make().X.copy()
    expected[:3, [1, 2]] = 0.0
    np.testing.assert_array_equal(change.result.dense(), expected)
    np.testing.assert_array_equal(change.after.dense(), expected[:3])
    np.testing.assert_array_equal(change.before.dense(), make().X[:3])
    np.testing.assert_array_equal(change.result.y, train.y)
    assert change.result.is_sparse == sparse and not change.is_removal
    if sparse:  # the zeroed columns hold no stored entries
        assert change.result.X[:, [1, 2]].nnz == 0
        assert change.result.X.nnz == train.X.nnz - 3


@pytest.mark.parametrize("sparse", [False, True])
def test_replace_features_with_value_and_explicit_ids(sparse):
    train = make(sparse)
    change = ReplaceFeatures([3, "age"], value=0.5, ids=[14, 12]).resolve(train)
    np.testing.assert_array_equal(change.ids, [14, 12])
    expected = make().X.copy()
    expected[np.ix_([4, 2], [0, 3])] = 0.5
    np.testing.assert_array_equal(change.result.dense(), expected)
    np.testing.assert_array_equal(change.after.dense(), expected[[4, 2]])
    assert not change.is_empty


def test_replace_features_no_rows_affected_is_empty():
    train = make()
    only_zero = Dataset(np.zeros((3, 2)), [0, 1, 0])
    change = ReplaceFeatures([1]).resolve(only_zero)
    assert change.is_empty and len(change) == 0 and change.result is only_zero
    same = ReplaceFeatures(["url::a"], value=4.0, ids=[12]).resolve(train)
    assert same.is_empty


def test_replace_features_on_a_float32_matrix_keeps_the_dtype():
    train = Dataset(np.ones((3, 2), dtype=np.float32), [0, 1, 0])
    change = ReplaceFeatures([0]).resolve(train)
    assert change.result.X.dtype == np.float32
    np.testing.assert_array_equal(change.result.X[:, 0], 0)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (lambda: ReplaceFeatures([4, 1]), r"features out of range .*4 columns: \[4\]"),
        (lambda: ReplaceFeatures([-1]), r"4 columns: \[-1\]"),
        (lambda: ReplaceFeatures(["url::zzz"]), r"\[url::zzz\]"),
        (lambda: ReplaceFeatures([1, "url::a"]), r"duplicate features: \[1\]"),
        (lambda: ReplaceFeatures([]), "at least one feature"),
        (lambda: ReplaceFeatures([0], value=np.nan), "finite number, got nan"),
        (lambda: ReplaceFeatures([0], value=np.inf), "finite number, got inf"),
        (lambda: ReplaceFeatures([0], value="x"), "finite number, got 'x'"),
        (lambda: ReplaceFeatures([0], ids=[10, 55]), r"unknown ids.*\[55\]"),
        (lambda: ReplaceFeatures([0], ids=[10, 10]), r"duplicate ids in request: \[10\]"),
    ],
)
def test_bad_feature_requests_are_refused(request_, message):
    for sparse in (False, True):
        train = make(sparse)
        before = snapshot(train)
        with pytest.raises(RequestError, match=message):
            request_().resolve(train)
        np.testing.assert_array_equal(before[0], snapshot(train)[0])


def test_replace_features_needs_two_dimensional_X():
    images = Dataset(np.ones((2, 1, 2, 2)), [0, 1])
    with pytest.raises(RequestError, match=r"need 2-d X .*\(2, 1, 2, 2\)"):
        ReplaceFeatures([0]).resolve(images)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_replace_features_sparse_matches_dense(draw):
    rng = np.random.default_rng(draw.draw(st.integers(0, 2**16)))
    n, d = draw.draw(st.integers(1, 12)), draw.draw(st.integers(1, 6))
    X = np.round(rng.normal(size=(n, d)), 1) * (rng.random((n, d)) < 0.4)
    y = rng.integers(0, 2, n)
    features = draw.draw(st.lists(st.integers(0, d - 1), unique=True, min_size=1))
    value = draw.draw(st.sampled_from([0.0, 1.0, -2.5]))
    dense = ReplaceFeatures(features, value=value).resolve(Dataset(X, y))
    sparse = ReplaceFeatures(features, value=value).resolve(Dataset(sp.csr_matrix(X), y))
    np.testing.assert_array_equal(dense.ids, np.flatnonzero((X[:, features] != 0).any(axis=1)))
    np.testing.assert_array_equal(sparse.ids, dense.ids)
    np.testing.assert_array_equal(sparse.result.dense(), dense.result.X)
    np.testing.assert_array_equal(sparse.after.dense(), dense.after.X)
    untouched = np.setdiff1d(np.arange(d), features)
    np.testing.assert_array_equal(dense.result.X[:, untouched], X[:, untouched])
    assert np.all(dense.after.X[:, features] == value)
    others = np.setdiff1d(np.arange(n), dense.ids)
    np.testing.assert_array_equal(dense.result.X[others], X[others])


# -- Replace --------------------------------------------------------------------------------------
def test_replace_rows_and_labels():
    train = make()
    new_rows = np.array([[9.0, 9.0, 9.0, 9.0], [7.0, 0.0, 0.0, 7.0]])
    change = Replace([12, 10], new_rows, y=[0, 2]).resolve(train)
    np.testing.assert_array_equal(change.after.X, new_rows)
    np.testing.assert_array_equal(change.after.y, [0, 2])
    np.testing.assert_array_equal(change.before.X, train.X[[2, 0]])
    np.testing.assert_array_equal(change.result.select([12, 10]).X, new_rows)
    np.testing.assert_array_equal(change.result.drop([12, 10]).X, train.drop([12, 10]).X)
    keep_labels = Replace([11], [[0.0, 0.0, 0.0, 0.0]]).resolve(train)
    np.testing.assert_array_equal(keep_labels.result.y, train.y)
    assert Replace([11], train.select([11]).X).resolve(train).is_empty


def test_replace_sparse_rows_into_sparse_and_dense_training_sets():
    rows = sp.csr_matrix(np.array([[0.0, 1.0, 0.0, 0.0]]))
    for train in (make(sparse=True), make()):
        change = Replace([13], rows).resolve(train)
        assert change.result.is_sparse == train.is_sparse
        np.testing.assert_array_equal(change.result.select([13]).dense(), rows.toarray())
        np.testing.assert_array_equal(change.result.drop([13]).dense(), make().drop([13]).X)
    coo = Replace([13], sp.coo_matrix(rows)).resolve(make(sparse=True))
    np.testing.assert_array_equal(coo.after.dense(), rows.toarray())


def test_replace_image_rows():
    images = Dataset(np.zeros((3, 1, 2, 2)), [0, 1, 0])
    change = Replace([1], np.ones((1, 1, 2, 2))).resolve(images)
    assert change.result.X[1].sum() == 4 and change.result.X[[0, 2]].sum() == 0
    with pytest.raises(RequestError, match=r"shape \(4,\), training records have \(1, 2, 2\)"):
        Replace([1], np.ones((1, 4))).resolve(images)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (lambda: Replace([10], np.ones((1, 3))), r"rows have shape \(3,\).*have \(4,\)"),
        (lambda: Replace([10, 11], np.ones((1, 4))), r"one row of X per id: 2 ids, X \(1, 4\)"),
        (lambda: Replace([10], np.ones(4)), r"one row per id, got shape \(4,\)"),
        (lambda: Replace([10], 3.0), r"one row per id, got shape \(\)"),
        (
            lambda: Replace([10, 11, 12], [[0, 0, 0, 0], [np.nan, 0, 0, 0], [0, 0, np.inf, 0]]),
            r"non-finite values .*ids \[11, 12\]",
        ),
        (
            lambda: Replace([10, 11], sp.csr_matrix([[0, 0, 1, 0], [0, np.nan, 0, 0]])),
            r"non-finite values .*ids \[11\]",
        ),
        (lambda: Replace([10], [["a", "b", "c", "d"]]), "must be numeric, got dtype <U1"),
        (lambda: Replace([10], np.ones((1, 4)), y=[5]), r"outside the 3 classes.*\[5\]"),
        (lambda: Replace([10], np.ones((1, 4)), y=[0, 1]), r"one label per id: 1 ids"),
        (lambda: Replace([10, 66], np.ones((2, 4))), r"unknown ids.*\[66\]"),
        (lambda: Replace([10, 10], np.ones((2, 4))), r"duplicate ids in request: \[10\]"),
    ],
)
def test_bad_replacements_are_refused(request_, message):
    train = make()
    before = snapshot(train)
    with pytest.raises(RequestError, match=message):
        request_().resolve(train)
    for old, new in zip(before, snapshot(train), strict=True):
        np.testing.assert_array_equal(old, new)
