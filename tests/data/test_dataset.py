"""Dataset: immutability, stable ids, selection by id, dense/sparse/image X, validation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from oblivio.data import Dataset, RequestError, Split
from oblivio.data.dataset import as_id_array, feature_index


def make(n=6, d=3, ids=None, sparse=False, classes=("a", "b", "c")) -> Dataset:
    X = np.arange(n * d, dtype=np.float64).reshape(n, d)
    X[::2, 0] = 0.0
    y = np.arange(n) % len(classes)
    if ids is None:
        ids = 100 + 10 * np.arange(n)
    names = [f"f{j}" for j in range(d)]
    return Dataset(sp.csr_matrix(X) if sparse else X, y, ids, names, classes, "toy")


# -- construction and immutability -------------------------------------------------------------
def test_defaults_and_basic_facts():
    data = Dataset(np.zeros((4, 2)), np.array([0, 2, 1, 2]))
    np.testing.assert_array_equal(data.ids, np.arange(4))
    assert data.ids.dtype == np.int64 and data.y.dtype == np.int64
    assert data.classes == (0, 1, 2) and data.n_classes == 3
    assert data.n_features == 2 and len(data) == 4 and not data.is_sparse
    assert data.feature_names is None and data.name == "data"
    assert "n=4" in repr(data) and "(4, 2)" in repr(data)
    floats = Dataset(np.zeros((2, 1)), np.array([1.0, 0.0]))
    assert floats.y.dtype == np.int64


def test_arrays_are_read_only_and_fields_frozen():
    data = make()
    for array in (data.X, data.y, data.ids):
        assert not array.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.name = "other"
    sparse = make(sparse=True)
    for part in (sparse.X.data, sparse.X.indices, sparse.X.indptr):
        with pytest.raises(ValueError, match="read-only"):
            part[0] = 1


def test_operations_leave_the_original_unchanged():
    data = make()
    X, y, ids = data.X.copy(), data.y.copy(), data.ids.copy()
    data.drop([100, 120])
    data.update([110], X=np.full((1, 3), -1.0), y=[0])
    data.select([150, 100])
    np.testing.assert_array_equal(data.X, X)
    np.testing.assert_array_equal(data.y, y)
    np.testing.assert_array_equal(data.ids, ids)


def test_non_canonical_csr_is_canonicalised_on_a_copy():
    # Unsorted column indices and a duplicate entry: scipy would sort/sum them in place
    # (e.g. in tolil or slicing), which must not fail on the read-only arrays.
    indptr = np.array([0, 3, 4])
    indices = np.array([2, 0, 2, 1])
    values = np.array([1.0, 2.0, 3.0, 4.0])
    X = sp.csr_matrix((values, indices, indptr), shape=(2, 3))
    X.has_canonical_format = False
    data = Dataset(X, [0, 1])
    np.testing.assert_array_equal(data.dense(), [[2.0, 0.0, 4.0], [0.0, 4.0, 0.0]])
    np.testing.assert_array_equal(X.indices, [2, 0, 2, 1])  # caller's matrix untouched
    assert X.indices.flags.writeable
    assert data.X.tolil().nnz == 3 and data.select([0, 1]).X.tolil().nnz == 3
    assert data.X.has_sorted_indices
    updated = data.update([0], X=np.array([[0.0, 0.0, 7.0]]))
    np.testing.assert_array_equal(updated.dense(), [[0.0, 0.0, 7.0], [0.0, 4.0, 0.0]])


# -- ids: select, drop, positions ---------------------------------------------------------------
def test_select_and_positions_follow_the_given_order():
    data = make()
    np.testing.assert_array_equal(data.positions([150, 100, 130]), [5, 0, 3])
    picked = data.select([150, 100])
    np.testing.assert_array_equal(picked.ids, [150, 100])
    np.testing.assert_array_equal(picked.X, data.X[[5, 0]])
    np.testing.assert_array_equal(picked.y, data.y[[5, 0]])
    assert picked.classes == data.classes and picked.feature_names == data.feature_names
    np.testing.assert_array_equal(data.contains([100, 101, 150]), [True, False, True])
    assert len(data.select([])) == 0 and data.select(np.int64(110)).ids.tolist() == [110]


def test_unknown_ids_raise_request_error_naming_them():
    data = make()
    for operation in (data.positions, data.select, data.drop):
        with pytest.raises(RequestError, match=r"unknown ids .*'toy'.*\[7, 999\]"):
            operation([100, 7, 999])
    with pytest.raises(RequestError, match=r"\[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, \.\.\. \(20 in all\)"):
        data.drop(np.arange(20))
    with pytest.raises(RequestError, match=r"unknown ids.*\[105\]"):
        data.update([105], y=[0])


def test_select_with_repeated_ids_is_refused():
    with pytest.raises(ValueError, match=r"repeated: \[110\]"):
        make().select([110, 110])


def test_drop_keeps_order_and_ids_stay_stable():
    data = make()
    rest = data.drop([110, 140])
    np.testing.assert_array_equal(rest.ids, [100, 120, 130, 150])
    again = rest.drop([100])
    for record in (120, 130, 150):  # the same id names the same record after any drop
        np.testing.assert_array_equal(again.select([record]).X, data.select([record]).X)
        assert again.select([record]).y[0] == data.select([record]).y[0]
    with pytest.raises(RequestError, match=r"\[110\]"):
        rest.select([110])  # an already removed id is unknown


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_drop_and_select_partition_the_records(draw):
    n = draw.draw(st.integers(1, 30))
    ids = np.asarray(draw.draw(st.permutations(list(range(0, 3 * n, 3)))), dtype=np.int64)
    data = Dataset(np.arange(n * 2, dtype=float).reshape(n, 2), np.arange(n) % 2, ids)
    chosen = draw.draw(st.lists(st.sampled_from(ids.tolist()), unique=True, max_size=n))
    kept, picked = data.drop(chosen), data.select(chosen)
    assert sorted(kept.ids.tolist() + picked.ids.tolist()) == sorted(ids.tolist())
    np.testing.assert_array_equal(picked.ids, chosen)
    np.testing.assert_array_equal(kept.ids, [i for i in ids if i not in set(chosen)])
    for part in (kept, picked):
        np.testing.assert_array_equal(part.X, data.X[data.positions(part.ids)])
        np.testing.assert_array_equal(part.y, data.y[data.positions(part.ids)])


# -- take, empty, concat, update ------------------------------------------------------------
def test_take_empty_concat_and_with_name():
    data = make()
    first = data.take([0, 1])
    np.testing.assert_array_equal(first.ids, [100, 110])
    empty = data.empty()
    assert len(empty) == 0 and empty.X.shape == (0, 3) and empty.classes == data.classes
    both = first.concat(data.take([5]))
    np.testing.assert_array_equal(both.ids, [100, 110, 150])
    with pytest.raises(ValueError, match=r"ids must be unique; repeated: \[100\]"):
        first.concat(data.take([0]))
    assert data.with_name("renamed").name == "renamed"
    mixed = make(sparse=True).take([0]).concat(data.take([1]))
    assert mixed.is_sparse
    np.testing.assert_array_equal(mixed.dense(), data.X[:2])


def test_update_features_and_labels():
    data = make()
    new = data.update([150, 110], X=[[1, 2, 3], [4, 5, 6]], y=[2, 0])
    np.testing.assert_array_equal(new.select([150, 110]).X, [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(new.select([150, 110]).y, [2, 0])
    np.testing.assert_array_equal(new.drop([150, 110]).X, data.drop([150, 110]).X)
    np.testing.assert_array_equal(new.ids, data.ids)
    only_y = data.update([100], y=[1])
    np.testing.assert_array_equal(only_y.X, data.X)
    assert only_y.y[0] == 1
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.2.*\[5\]"):
        data.update([100], y=[5])


def test_sparse_select_drop_update():
    data = make(sparse=True)
    dense = make()
    assert data.is_sparse and sp.isspmatrix_csr(data.X)
    np.testing.assert_array_equal(data.select([130, 100]).dense(), dense.select([130, 100]).X)
    np.testing.assert_array_equal(data.drop([130]).dense(), dense.drop([130]).X)
    rows = sp.csr_matrix(np.array([[0.0, 9.0, 0.0], [1.0, 0.0, 0.0]]))
    for new_rows in (rows, rows.toarray()):
        updated = data.update([120, 150], X=new_rows)
        assert updated.is_sparse
        expected = dense.X.copy()
        expected[[2, 5]] = rows.toarray()
        np.testing.assert_array_equal(updated.dense(), expected)


def test_image_shaped_X():
    images = np.arange(5 * 16, dtype=np.float32).reshape(5, 1, 4, 4)
    data = Dataset(images, [0, 1, 0, 1, 0], classes=("x", "y"))
    assert data.n_features == 16 and data.select([3]).X.shape == (1, 1, 4, 4)
    assert data.drop([0, 1]).X.shape == (3, 1, 4, 4)
    updated = data.update([2], X=np.zeros(16))
    assert updated.X.dtype == np.float32 and updated.X[2].sum() == 0
    np.testing.assert_array_equal(updated.X[[0, 1, 3, 4]], images[[0, 1, 3, 4]])
    with pytest.raises(RequestError, match=r"need 2-d X.*\(5, 1, 4, 4\)"):
        feature_index(data, [0])


# -- validation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"X": np.zeros(3), "y": [0, 0, 0]}, r"at least 2 dims, got \(3,\)"),
        ({"X": np.zeros((3, 2)), "y": [0, 1]}, r"y must have shape \(3,\).*\(2,\)"),
        ({"X": np.zeros((2, 2)), "y": [0.5, 1.0]}, "integer labels, got dtype float64"),
        ({"X": np.zeros((2, 2)), "y": ["a", "b"]}, "integer labels"),
        ({"X": np.zeros((2, 2)), "y": [0, 1], "ids": [4, 4]}, r"unique; repeated: \[4\]"),
        ({"X": np.zeros((2, 2)), "y": [0, 1], "ids": [1, 2, 3]}, r"ids must have shape \(2,\)"),
        ({"X": np.zeros((2, 2)), "y": [0, 1], "ids": [1.5, 2]}, r"integers, got \[1\.5\]"),
        ({"X": np.zeros((2, 2)), "y": [0, 3], "classes": ("a", "b")}, r"0\.\.1.*\[3\]"),
        ({"X": np.zeros((2, 2)), "y": [-1, 0]}, r"got \[-1\]"),
        ({"X": np.zeros((2, 2)), "y": [0, 1], "feature_names": ["a"]}, "1 entries"),
        ({"X": np.zeros((2, 1, 2)), "y": [0, 1], "feature_names": ["a", "b"]}, "2 entries"),
    ],
)
def test_validation_errors_name_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Dataset(**kwargs)


def test_as_id_array_refuses_junk():
    np.testing.assert_array_equal(as_id_array([3.0, 4.0]), [3, 4])
    assert as_id_array([]).dtype == np.int64 and as_id_array(7).tolist() == [7]
    with pytest.raises(RequestError, match=r"one-dimensional, got shape \(1, 2\)"):
        as_id_array([[1, 2]])
    with pytest.raises(RequestError, match="dtype <U1"):
        as_id_array(["a"])
    with pytest.raises(RequestError, match=r"\[nan\]"):
        as_id_array([1.0, np.nan])


def test_feature_index_by_name_and_position():
    data = make()
    np.testing.assert_array_equal(feature_index(data, ["f2", 0]), [2, 0])
    with pytest.raises(RequestError, match=r"3 columns: \[7, 'zz'\]|3 columns: \[7, zz\]"):
        feature_index(data, [7, "zz"])
    with pytest.raises(RequestError, match=r"\[True\]"):
        feature_index(data, [True])
    with pytest.raises(RequestError, match=r"duplicate features: \[1\]"):
        feature_index(data, [1, "f1"])
    nameless = Dataset(np.zeros((2, 2)), [0, 1])
    with pytest.raises(RequestError, match="f0"):
        feature_index(nameless, ["f0"])


def test_split_unpacks():
    data = make()
    train, test = Split(data, data.empty())
    assert train is data and len(test) == 0


# -- lazy selection and id lookup ----------------------------------------------------------------
@pytest.mark.parametrize("sparse", [False, True])
def test_chained_selections_gather_x_once_and_match_eager_indexing(sparse):
    data = make(n=12, sparse=sparse)
    rest = data.drop([110, 150]).drop([100]).select([200, 120, 130]).drop([120])
    assert rest._X is None  # nothing gathered yet: the drops only composed row positions
    assert rest.shape == (2, 3) and len(rest) == 2 and rest.n_features == 3
    assert rest.is_sparse == sparse
    expected = data.dense()[data.positions([200, 130])]
    np.testing.assert_array_equal(rest.dense(), expected)
    assert not (rest.X.data if sparse else rest.X).flags.writeable
    np.testing.assert_array_equal(rest.ids, [200, 130])
    np.testing.assert_array_equal(rest.y, data.y[data.positions([200, 130])])
    np.testing.assert_array_equal(data.dense(), make(n=12).X)  # the source is untouched


def test_lookup_with_unsorted_ids_and_pickle_round_trip():
    import pickle

    data = make(ids=[50, 10, 40, 30, 20, 60])
    np.testing.assert_array_equal(data.positions([20, 50, 60]), [4, 0, 5])
    np.testing.assert_array_equal(data.contains([20, 25, 60, 5]), [True, False, True, False])
    rest = data.drop([10])
    np.testing.assert_array_equal(rest.positions([30, 60]), [2, 4])
    copy = pickle.loads(pickle.dumps(rest))
    np.testing.assert_array_equal(copy.X, rest.X)
    np.testing.assert_array_equal(copy.ids, rest.ids)
    assert copy.classes == rest.classes and copy.name == rest.name
    assert Dataset(np.zeros((0, 2)), np.zeros(0)).contains([1]).tolist() == [False]
