"""Datasets backed by Zarr and Dask arrays, read by blocks like a memory map."""

import numpy as np
import pytest

from oblivio.data import Dataset, Relabel, Remove, blocked
from oblivio.data.blocked import BlockedRows, ChunkedRows, chunked_dataset
from oblivio.models import LogisticRegression
from oblivio.unlearners import CertifiedRemoval


class Counting:
    """A sliceable source that records what it was asked for (only row ranges allowed)."""

    def __init__(self, array):
        self.array, self.shape, self.dtype, self.calls = array, array.shape, array.dtype, []

    def __getitem__(self, index):
        assert isinstance(index, slice) and index.step is None
        self.calls.append((index.start, index.stop))
        return self.array[index]


def source(kind, array):
    if kind == "zarr":
        zarr = pytest.importorskip("zarr")
        return zarr.array(array, chunks=(37, array.shape[1]))
    if kind == "dask":
        da = pytest.importorskip("dask.array")
        return da.from_array(array, chunks=(41, array.shape[1]))
    return Counting(array)


@pytest.mark.parametrize("kind", ["plain", "zarr", "dask"])
def test_chunked_rows_read_ranges_and_select_lazily(kind, monkeypatch):
    monkeypatch.setattr(blocked, "ROWS", 16)
    array = np.arange(200 * 3, dtype=np.float32).reshape(200, 3)
    view = ChunkedRows(source(kind, array))
    assert view.shape == (200, 3) and view.dtype == np.float32
    np.testing.assert_array_equal(view[5:9], array[5:9])
    positions = np.array([150, 3, 77, 4, 199])
    picked = view[positions]
    assert isinstance(picked, ChunkedRows)  # a view, nothing read yet
    np.testing.assert_array_equal(np.asarray(picked), array[positions])
    np.testing.assert_array_equal(picked[1:4], array[positions[1:4]])
    np.testing.assert_array_equal(np.asarray(view[view.shape[0] * [False]]), array[:0])
    np.testing.assert_array_equal(view[-1], array[-1])
    for bad in ([200], 200, -201):
        with pytest.raises(IndexError, match="out of range"):
            view[bad]
    if kind == "plain":  # reads of a sparse selection stay within blocks of ROWS rows
        view.source.calls.clear()
        np.asarray(view[[0, 190]])
        assert all(stop - start <= 16 for start, stop in view.source.calls)


@pytest.mark.parametrize("kind", ["zarr", "dask"])
def test_chunked_dataset_gives_exactly_the_in_memory_certified_removal(kind, monkeypatch):
    monkeypatch.setattr(blocked, "ROWS", 64)  # many blocks
    rng = np.random.default_rng(4)
    y = np.arange(400) % 3
    X = rng.standard_normal((3, 6))[y] + rng.standard_normal((400, 6))
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    in_memory = Dataset(X=X, y=y)  # float32: the same BlockedRows path, data in memory
    chunked = chunked_dataset(source(kind, X), y)
    assert isinstance(chunked.X, ChunkedRows)
    units = []
    for train in (in_memory, chunked):
        model = LogisticRegression(l2=1e-2, multi_class="ovr")
        u = CertifiedRemoval(model, sigma=1.0, epsilon=50.0, seed=0, verify=True).fit(train)
        for record in (3, 10, 11):
            u.forget(Remove(ids=[record]))
        u.forget(Relabel(ids=[20], labels=[(y[20] + 1) % 3]))  # compacts the rows: a lazy view
        units.append(u)
    assert isinstance(units[1]._X, BlockedRows) and isinstance(units[1]._X.data, ChunkedRows)
    assert isinstance(units[1].train_.X, ChunkedRows)  # the rows left were never gathered
    np.testing.assert_array_equal(units[0].model_.coef_, units[1].model_.coef_)
    assert units[0].budget_used_ == units[1].budget_used_
    assert units[1].gradient_residual() <= units[1].budget_used_
    fits = [LogisticRegression(l2=1e-2, multi_class="ovr").fit(d) for d in (in_memory, chunked)]
    np.testing.assert_array_equal(fits[0].coef_, fits[1].coef_)
