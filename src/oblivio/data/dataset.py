"""Immutable datasets whose records carry stable ids."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import FrozenInstanceError, dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

ArrayLike = Any


class RequestError(ValueError):
    """An unlearning request (or a dataset operation) that cannot be applied.

    Raised before anything changes: a rejected request leaves the unlearner, its model and
    its training set exactly as they were. The message names the offending values.
    """


def _freeze(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _is_chunked(X: Any) -> bool:
    """A :class:`~oblivio.data.blocked.ChunkedRows` view (read-only, read by blocks)."""
    from oblivio.data.blocked import ChunkedRows  # blocked.py builds on this module

    return isinstance(X, ChunkedRows)


def _freeze_matrix(X: np.ndarray | sp.csr_matrix) -> np.ndarray | sp.csr_matrix:
    if _is_chunked(X):
        return X  # has no way to write
    if sp.issparse(X):
        if not X.has_canonical_format:
            # scipy sorts indices / sums duplicates in place in many operations (tolil,
            # slicing, ...), which fails on read-only arrays: canonicalise a copy first.
            X = X.copy()
            X.sum_duplicates()
        for part in (X.data, X.indices, X.indptr):
            part.setflags(write=False)
        return X
    return _freeze(X)


def _preview(values: Iterable[Any], limit: int = 10) -> str:
    values = list(values)
    shown = ", ".join(str(v) for v in values[:limit])
    if len(values) > limit:
        shown += f", ... ({len(values)} in all)"
    return f"[{shown}]"


def as_id_array(ids: ArrayLike, what: str = "ids") -> np.ndarray:
    """Convert ``ids`` to a 1-d int64 array, refusing floats with fractions and other junk.

    Lists, arrays, ranges, sets (taken in sorted order) and other iterables (generators) are
    accepted; unsigned ids beyond the int64 range are refused rather than wrapped around.
    """
    if isinstance(ids, (set, frozenset)):
        ids = sorted(ids)
    elif (
        isinstance(ids, Iterable)
        and not isinstance(ids, (np.ndarray, list, tuple, range, str, bytes))
        and not hasattr(ids, "__array__")
    ):
        ids = list(ids)  # generators and other one-shot iterables
    array = np.asarray(ids)
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim != 1:
        raise RequestError(f"{what} must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            bad = array[~np.isfinite(array) | (array != np.round(array))]
            raise RequestError(f"{what} must be integers, got {_preview(bad)}")
    elif array.dtype.kind == "u" and array.dtype.itemsize == 8:
        too_big = array[array > np.iinfo(np.int64).max]
        if too_big.size:
            raise RequestError(
                f"{what} must fit in int64 (<= 2**63 - 1), got {_preview(too_big.tolist())}"
            )
    elif array.dtype.kind == "O":
        try:
            return as_id_array(np.asarray(array.tolist(), dtype=np.int64), what)
        except (TypeError, ValueError, OverflowError):
            raise RequestError(f"{what} must be integers, got {_preview(array.tolist())}") from None
    elif array.dtype.kind not in "iu":
        raise RequestError(f"{what} must be integers, got dtype {array.dtype}")
    return array.astype(np.int64)


class Dataset:
    """A labelled dataset whose records keep their ids for life.

    Parameters
    ----------
    X : ndarray of shape (n, ...) or scipy CSR matrix of shape (n, d)
        Features. Images keep their shape, e.g. (n, 1, 28, 28).
    y : ndarray of shape (n,)
        Integer labels in ``0 .. len(classes) - 1``.
    ids : ndarray of shape (n,), optional
        Unique int64 record ids. Defaults to ``0 .. n-1``. Ids never change when other
        records are removed, so a deletion request can name records long after training.
    feature_names : sequence of str, optional
        Names of the columns of a 2-d ``X``.
    classes : sequence, optional
        Class names; label ``j`` means ``classes[j]``. Defaults to the sorted labels present.
    name : str
        A short name used in reports.

    Notes
    -----
    Instances are immutable (arrays are marked read-only, attributes cannot be set); every
    operation returns a new dataset that shares memory with this one where it can.

    Row selections (:meth:`take`, :meth:`drop`, :meth:`select`) are lazy: the new dataset
    remembers its source matrix and row positions and gathers ``X`` on first access. A
    stream of deletion requests therefore costs ``O(n)`` per request (labels and ids) and
    not a copy of ``X`` each time, and unlearners that keep their own copy of the design
    matrix never pay for it. Ids are looked up with a binary search over the (cached) sorted
    ids, ``O(k log n)`` for ``k`` ids.
    """

    __slots__ = ("_X", "_source", "_rows", "y", "ids", "feature_names", "classes", "name", "_order")

    def __init__(
        self,
        X: np.ndarray | sp.csr_matrix,
        y: ArrayLike,
        ids: ArrayLike | None = None,
        feature_names: Sequence[str] | None = None,
        classes: Sequence[Any] | None = None,
        name: str = "data",
    ) -> None:
        if sp.issparse(X):
            X = sp.csr_matrix(X)
        elif not _is_chunked(X):
            X = np.asarray(X)
            if X.ndim < 2:
                raise ValueError(f"X must have shape (n, ...) with at least 2 dims, got {X.shape}")
        y = np.asarray(y)
        n = X.shape[0]
        if y.shape != (n,):
            raise ValueError(f"y must have shape ({n},) to match X, got {y.shape}")
        if y.size and y.dtype.kind not in "iu":
            if y.dtype.kind == "f" and np.all(y == np.round(y)):
                y = y.astype(np.int64)
            else:
                raise ValueError(f"y must hold integer labels, got dtype {y.dtype}")
        y = y.astype(np.int64, copy=False)
        ids = np.arange(n, dtype=np.int64) if ids is None else as_id_array(ids)
        if ids.shape != (n,):
            raise ValueError(f"ids must have shape ({n},), got {ids.shape}")
        unique, counts = np.unique(ids, return_counts=True)
        if unique.size != n:
            raise ValueError(f"ids must be unique; repeated: {_preview(unique[counts > 1])}")
        if classes is None:
            classes = tuple(range(int(y.max()) + 1)) if y.size else ()
        classes = tuple(classes)
        if y.size and (y.min() < 0 or y.max() >= len(classes)):
            bad = np.unique(y[(y < 0) | (y >= len(classes))])
            raise ValueError(
                f"labels must lie in 0..{len(classes) - 1} (one per class), got {_preview(bad)}"
            )
        if feature_names is not None:
            feature_names = tuple(str(f) for f in feature_names)
            if X.ndim != 2 or len(feature_names) != X.shape[1]:
                raise ValueError(
                    f"feature_names has {len(feature_names)} entries for X of shape {X.shape}"
                )
        self._init(
            _freeze_matrix(X), None, None, _freeze(y), _freeze(ids), feature_names, classes, name
        )

    def _init(
        self,
        X: Any,
        source: Any,
        rows: np.ndarray | None,
        y: np.ndarray,
        ids: np.ndarray,
        feature_names: tuple[str, ...] | None,
        classes: tuple[Any, ...],
        name: str,
    ) -> None:
        for slot, value in (
            ("_X", X),
            ("_source", source),
            ("_rows", rows),
            ("y", y),
            ("ids", ids),
            ("feature_names", feature_names),
            ("classes", classes),
            ("name", name),
            ("_order", None),
        ):
            object.__setattr__(self, slot, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}: Dataset is immutable")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}: Dataset is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        # pickling (joblib, dask workers) and deepcopy: rebuild through the checked constructor
        return (Dataset, (self.X, self.y, self.ids, self.feature_names, self.classes, self.name))

    @property
    def X(self) -> np.ndarray | sp.csr_matrix:
        """Features (gathered from the source matrix on first access after a selection)."""
        if self._X is None:
            object.__setattr__(self, "_X", _freeze_matrix(self._source[self._rows]))
            object.__setattr__(self, "_source", None)
            object.__setattr__(self, "_rows", None)
        return self._X

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of ``X`` (without gathering a lazy selection)."""
        if self._X is not None:
            return tuple(self._X.shape)
        return (int(self._rows.size),) + tuple(self._source.shape[1:])

    # -- basic facts -------------------------------------------------------------------
    @property
    def n(self) -> int:
        """Number of records (``len(data)``)."""
        return self.shape[0]

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def n_features(self) -> int:
        """Number of columns of a 2-d ``X`` (product of trailing dims otherwise)."""
        return int(np.prod(self.shape[1:]))

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self._X if self._X is not None else self._source)

    def __repr__(self) -> str:
        kind = "sparse " if self.is_sparse else ""
        return (
            f"Dataset(name={self.name!r}, n={len(self)}, X={kind}{self.shape}, "
            f"classes={len(self.classes)})"
        )

    # -- ids ---------------------------------------------------------------------------
    def _sorted_ids(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Ids in increasing order and the permutation that sorts them (None if sorted)."""
        if self._order is None:
            ids = self.ids
            if ids.size < 2 or bool(np.all(ids[1:] > ids[:-1])):
                order = False  # already sorted (the usual case: loaders and drops keep order)
            else:
                order = np.argsort(ids, kind="stable")
            object.__setattr__(self, "_order", order)
        if self._order is False:
            return self.ids, None
        return self.ids[self._order], self._order

    def _find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of ``ids`` (garbage where absent) and a mask of which are present."""
        sorted_ids, order = self._sorted_ids()
        if sorted_ids.size == 0:
            return np.zeros(ids.size, dtype=np.int64), np.zeros(ids.size, dtype=bool)
        where = np.minimum(np.searchsorted(sorted_ids, ids), sorted_ids.size - 1)
        found = sorted_ids[where] == ids
        return (where if order is None else order[where]).astype(np.int64), found

    def positions(self, ids: ArrayLike) -> np.ndarray:
        """Row positions of ``ids`` in this dataset, in the order given.

        Raises
        ------
        RequestError
            If any id is not in the dataset (the message lists them).
        """
        ids = as_id_array(ids)
        positions, found = self._find(ids)
        if not found.all():
            missing = ids[~found].tolist()
            raise RequestError(f"unknown ids (not in dataset {self.name!r}): {_preview(missing)}")
        return positions

    def contains(self, ids: ArrayLike) -> np.ndarray:
        """Boolean mask: which of ``ids`` are in this dataset."""
        return self._find(as_id_array(ids))[1]

    def take(self, positions: ArrayLike) -> Dataset:
        """Rows at the given positions (not ids), as a new dataset (``X`` gathered lazily)."""
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size > 1 and not bool(np.all(positions[1:] > positions[:-1])):
            unique, counts = np.unique(positions, return_counts=True)
            if unique.size != positions.size:  # ids must stay unique
                repeated = self.ids[unique[counts > 1]]
                raise ValueError(f"ids must be unique; repeated: {_preview(repeated)}")
        if self._X is not None:
            source, rows = self._X, positions
        else:  # compose with this dataset's own pending selection: one gather in the end
            source, rows = self._source, self._rows[positions]
        selected = object.__new__(Dataset)
        selected._init(
            None,
            source,
            rows,
            _freeze(self.y[positions]),
            _freeze(self.ids[positions]),
            self.feature_names,
            self.classes,
            self.name,
        )
        return selected

    def select(self, ids: ArrayLike) -> Dataset:
        """The records with ``ids``, in the order given."""
        return self.take(self.positions(ids))

    def drop(self, ids: ArrayLike) -> Dataset:
        """All records except ``ids`` (order preserved)."""
        keep = np.ones(len(self), dtype=bool)
        keep[self.positions(ids)] = False
        return self.take(np.flatnonzero(keep))

    def update(
        self, ids: ArrayLike, X: ArrayLike | None = None, y: ArrayLike | None = None
    ) -> Dataset:
        """Copy with the rows of ``ids`` given new features and/or labels."""
        positions = self.positions(ids)
        new_X = self.X
        if X is not None:
            if sp.issparse(self.X):
                # Stack the new rows under the old ones and pick rows: O(nnz), no LIL copy.
                rows = sp.csr_matrix(X if sp.issparse(X) else np.atleast_2d(np.asarray(X)))
                order = np.arange(len(self))
                order[positions] = len(self) + np.arange(len(positions))
                new_X = sp.vstack([self.X, rows], format="csr")[order]
            else:
                new_X = np.array(self.X, copy=True)
                new_X[positions] = np.asarray(X, dtype=new_X.dtype).reshape(
                    (len(positions),) + new_X.shape[1:]
                )
        new_y = self.y
        if y is not None:
            new_y = np.array(self.y, copy=True)
            new_y[positions] = np.asarray(y, dtype=np.int64)
        return self._with(new_X, new_y, self.ids)

    def concat(self, other: Dataset) -> Dataset:
        """Records of this dataset followed by those of ``other`` (ids must not clash)."""
        if sp.issparse(self.X) or sp.issparse(other.X):
            X = sp.vstack([sp.csr_matrix(self.X), sp.csr_matrix(other.X)], format="csr")
        else:
            X = np.concatenate([self.X, other.X])
        return self._with(
            X, np.concatenate([self.y, other.y]), np.concatenate([self.ids, other.ids])
        )

    def with_name(self, name: str) -> Dataset:
        renamed = object.__new__(Dataset)
        renamed._init(
            self._X,
            self._source,
            self._rows,
            self.y,
            self.ids,
            self.feature_names,
            self.classes,
            name,
        )
        return renamed

    def _with(self, X: Any, y: Any, ids: Any, name: str | None = None) -> Dataset:
        return Dataset(
            X=X,
            y=y,
            ids=ids,
            feature_names=self.feature_names,
            classes=self.classes,
            name=self.name if name is None else name,
        )

    # -- views ---------------------------------------------------------------------------
    def dense(self) -> np.ndarray:
        """``X`` as a dense float array (sparse matrices are densified)."""
        return self.X.toarray() if sp.issparse(self.X) else np.asarray(self.X)

    def empty(self) -> Dataset:
        """A dataset with no rows but the same columns and classes."""
        return self.take(np.zeros(0, dtype=np.int64))


@dataclass(frozen=True)
class Split:
    """A train/test pair returned by loaders."""

    train: Dataset
    test: Dataset

    def __iter__(self):
        return iter((self.train, self.test))


def feature_index(data: Dataset, features: Sequence[int | str]) -> np.ndarray:
    """Column indices for ``features`` given as indices or names."""
    if data.X.ndim != 2:
        raise RequestError(
            f"feature requests need 2-d X (n, d); {data.name!r} has X of shape {data.X.shape}"
        )
    d = data.X.shape[1]
    columns = []
    unknown = []
    for feature in features:
        if isinstance(feature, str):
            if data.feature_names is None or feature not in data.feature_names:
                unknown.append(feature)
            else:
                columns.append(data.feature_names.index(feature))
        elif isinstance(feature, (int, np.integer)) and not isinstance(feature, bool):
            if 0 <= int(feature) < d:
                columns.append(int(feature))
            else:
                unknown.append(int(feature))
        else:
            unknown.append(feature)
    if unknown:
        raise RequestError(
            f"features out of range or unknown for X with {d} columns: {_preview(unknown)}"
        )
    columns_array = np.asarray(columns, dtype=np.int64)
    unique, counts = np.unique(columns_array, return_counts=True)
    if unique.size != columns_array.size:
        raise RequestError(f"duplicate features: {_preview(unique[counts > 1])}")
    return columns_array
