"""Unlearning requests: edits of the training set.

Every request is an edit of the training set D: a set Z of affected records and their
replacements Z~ (empty for a removal). ``request.resolve(train)`` validates the request
against ``train`` and returns a :class:`Change` with the affected rows as they were
(``before`` = Z), as they become (``after`` = Z~) and the whole edited training set
(``result`` = D~). Unlearners consume only ``Change`` objects, which is what makes records,
features and labels one problem (Warnecke et al., NDSS 2023, Sec. 3).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from oblivio.data.dataset import (
    ArrayLike,
    Dataset,
    RequestError,
    _preview,
    as_id_array,
    feature_index,
)

__all__ = [
    "Change",
    "Relabel",
    "Remove",
    "Replace",
    "ReplaceFeatures",
    "Request",
    "RequestError",
]


@dataclass(frozen=True, eq=False)
class Change:
    """A resolved request.

    Attributes
    ----------
    before : Dataset
        The affected records Z as they are in the current training set.
    after : Dataset
        Their replacements Z~ (same ids, same order as ``before``); empty for removals.
    result : Dataset
        The edited training set D~ (what exact retraining would train on).
    request : Request
        The request this change came from.
    """

    before: Dataset
    after: Dataset
    result: Dataset
    request: Request

    @property
    def is_removal(self) -> bool:
        return len(self.after) == 0

    @property
    def is_empty(self) -> bool:
        """True when the change does not alter the training set at all."""
        if len(self.before) == 0:
            return True
        if self.is_removal:
            return False
        same_y = np.array_equal(self.before.y, self.after.y)
        if sp.issparse(self.before.X):
            same_X = (self.before.X != self.after.X).nnz == 0
        else:
            same_X = np.array_equal(self.before.X, self.after.X)
        return bool(same_y and same_X)

    @property
    def ids(self) -> np.ndarray:
        return self.before.ids

    def __len__(self) -> int:
        return len(self.before)


def _check_ids(train: Dataset, ids: np.ndarray) -> None:
    unique, counts = np.unique(ids, return_counts=True)
    if unique.size != ids.size:
        raise RequestError(f"duplicate ids in request: {_preview(unique[counts > 1])}")
    train.positions(ids)  # raises on unknown ids


class Request(ABC):
    """Base class of all requests."""

    @abstractmethod
    def resolve(self, train: Dataset) -> Change:
        """Validate against ``train`` and return the :class:`Change` it makes.

        Raises
        ------
        RequestError
            If the request cannot be applied to ``train``; nothing is changed.
        """


@dataclass(frozen=True, eq=False)
class Remove(Request):
    """Remove the records with ``ids`` (right to be forgotten)."""

    ids: ArrayLike

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", as_id_array(self.ids))

    def resolve(self, train: Dataset) -> Change:
        _check_ids(train, self.ids)
        if self.ids.size >= len(train) and len(train) > 0:
            raise RequestError(
                f"removing all {len(train)} records would leave the training set empty"
            )
        return Change(
            before=train.select(self.ids),
            after=train.empty(),
            result=train.drop(self.ids),
            request=self,
        )

    def __repr__(self) -> str:
        return f"Remove(ids={_preview(self.ids.tolist())})"


def _check_labels(train: Dataset, labels: np.ndarray) -> None:
    k = len(train.classes)
    bad = labels[(labels < 0) | (labels >= k)]
    if bad.size:
        raise RequestError(
            f"labels outside the {k} classes of {train.name!r} (valid: 0..{k - 1}): "
            f"{_preview(np.unique(bad))}"
        )


def _as_labels(labels: ArrayLike) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim == 0:
        array = array.reshape(1)
    if array.size and array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise RequestError(f"labels must be integers, got {_preview(array)}")
    elif array.size and array.dtype.kind not in "iu":
        raise RequestError(
            f"labels must be class indices (integers into Dataset.classes), got dtype "
            f"{array.dtype}: {_preview(array.ravel().tolist())}; to relabel by class name use "
            "labels=[list(train.classes).index(name) for name in names]"
        )
    return array.astype(np.int64)


@dataclass(frozen=True, eq=False)
class Relabel(Request):
    """Give the records ``ids`` new ``labels`` (fix wrong or poisoned labels)."""

    ids: ArrayLike
    labels: ArrayLike

    def __post_init__(self) -> None:
        ids = as_id_array(self.ids)
        labels = _as_labels(self.labels)
        if labels.shape != ids.shape:
            raise RequestError(
                f"Relabel needs one label per id: {ids.size} ids, labels of shape {labels.shape}"
            )
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "labels", labels)

    def resolve(self, train: Dataset) -> Change:
        _check_ids(train, self.ids)
        _check_labels(train, self.labels)
        before = train.select(self.ids)
        result = train.update(self.ids, y=self.labels)
        return Change(before=before, after=result.select(self.ids), result=result, request=self)


@dataclass(frozen=True, eq=False)
class ReplaceFeatures(Request):
    """Overwrite feature columns with ``value`` (unlearn a leaked or sensitive feature).

    Parameters
    ----------
    features : sequence of int or str
        Column indices or names (from ``Dataset.feature_names``).
    value : float
        The value written into those columns.
    ids : array-like, optional
        Records to edit. By default, every record where any of the features is non-zero,
        the records the feature actually influenced (Warnecke et al., Sec. 3.1).
    """

    features: Sequence[int | str]
    value: float = 0.0
    ids: ArrayLike | None = None

    def __post_init__(self) -> None:
        features = self.features
        if isinstance(features, (str, int, np.integer)):
            features = [features]
        features = tuple(f.item() if isinstance(f, np.generic) else f for f in features)
        if not features:
            raise RequestError("ReplaceFeatures needs at least one feature")
        if not isinstance(self.value, (int, float, np.integer, np.floating)) or not np.isfinite(
            self.value
        ):
            raise RequestError(f"value must be a finite number, got {self.value!r}")
        object.__setattr__(self, "features", features)
        if self.ids is not None:
            object.__setattr__(self, "ids", as_id_array(self.ids))

    def resolve(self, train: Dataset) -> Change:
        columns = feature_index(train, self.features)
        if self.ids is None:
            block = train.X[:, columns]
            nonzero = np.asarray((block != 0).sum(axis=1)).ravel() > 0
            ids = train.ids[nonzero]
        else:
            ids = self.ids
            _check_ids(train, ids)
        before = train.select(ids)
        if sp.issparse(train.X):
            # Zero the columns with a diagonal mask, then add ``value`` there (CSR throughout).
            keep = np.ones(before.X.shape[1])
            keep[columns] = 0.0
            new_rows = sp.csr_matrix(before.X @ sp.diags(keep), dtype=np.float64)
            if self.value != 0:
                k, n = columns.size, len(before)
                filled = sp.csr_matrix(
                    (
                        np.full(n * k, float(self.value)),
                        np.tile(np.sort(columns), n),
                        np.arange(0, n * k + 1, k),
                    ),
                    shape=before.X.shape,
                )
                new_rows = sp.csr_matrix(new_rows + filled)
            new_rows.eliminate_zeros()
        else:
            new_rows = np.array(before.X, dtype=np.result_type(before.X.dtype, np.float64))
            new_rows[:, columns] = self.value
        result = train.update(ids, X=new_rows) if ids.size else train
        return Change(before=before, after=result.select(ids), result=result, request=self)


@dataclass(frozen=True, eq=False)
class Replace(Request):
    """Replace the records ``ids`` with new features ``X`` (and optionally labels ``y``)."""

    ids: ArrayLike
    X: Any
    y: ArrayLike | None = None

    def __post_init__(self) -> None:
        ids = as_id_array(self.ids)
        X = sp.csr_matrix(self.X) if sp.issparse(self.X) else np.asarray(self.X)
        if X.ndim < 2:
            raise RequestError(
                f"Replace needs X of shape (n_ids, ...) with one row per id, got shape {X.shape}"
            )
        if X.shape[0] != ids.size:
            raise RequestError(f"Replace needs one row of X per id: {ids.size} ids, X {X.shape}")
        values = X.data if sp.issparse(X) else X
        if values.dtype.kind not in "biuf":
            raise RequestError(f"X must be numeric, got dtype {values.dtype}")
        if not np.all(np.isfinite(values)):
            if sp.issparse(X):
                rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))[~np.isfinite(X.data)]
            else:
                rows = np.flatnonzero((~np.isfinite(X.reshape(X.shape[0], -1))).any(axis=1))
            raise RequestError(
                f"X contains non-finite values (nan or inf) in the rows of ids "
                f"{_preview(np.unique(ids[rows]))}"
            )
        y = None if self.y is None else _as_labels(self.y)
        if y is not None and y.shape != ids.shape:
            raise RequestError(f"Replace needs one label per id: {ids.size} ids, y {y.shape}")
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "y", y)

    def resolve(self, train: Dataset) -> Change:
        _check_ids(train, self.ids)
        if tuple(self.X.shape[1:]) != tuple(train.X.shape[1:]):
            raise RequestError(
                f"replacement rows have shape {tuple(self.X.shape[1:])}, "
                f"training records have {tuple(train.X.shape[1:])}"
            )
        if self.y is not None:
            _check_labels(train, self.y)
        before = train.select(self.ids)
        X = self.X
        if sp.issparse(X) and not sp.issparse(train.X):
            X = X.toarray().reshape((X.shape[0],) + train.X.shape[1:])
        result = train.update(self.ids, X=X, y=self.y)
        return Change(before=before, after=result.select(self.ids), result=result, request=self)
