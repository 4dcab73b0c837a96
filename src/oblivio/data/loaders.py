"""Dataset loaders behind one registry: ``load(name, root=None, **options) -> Split``.

Nothing is downloaded: loaders read data that a package ships or standard files the user
supplies, and fail with a message naming where they looked and how to get the files.

=================  ===============================================  =========================
name               files                                            options
=================  ===============================================  =========================
digits             bundled with scikit-learn                        (random split: seed)
breast-cancer      bundled with scikit-learn                        (random split: seed)
fashion-mnist      IDX, /usr/share/datasets/fashion-mnist (Debian)  flatten
mnist              IDX (user-supplied)                              flatten
cifar10            python pickle batches or binary .bin batches     flatten
adult              adult.data, adult.test                           missing,
                                                                    standardize_numeric
drebin             x_*.npz, y_*.npy, features.json                  -
diabetes           diabetes.csv                                     test_size (seed)
csv:<path>         a CSV file                                       label, test, test_size,
                                                                    header, delimiter
libsvm:<path>      a LIBSVM / svmlight file (sparse)                test, test_size,
                                                                    n_features, zero_based
=================  ===============================================  =========================

Every loader also takes ``root``, ``classes``, ``limit``, ``normalize`` and ``seed`` (see
:func:`load`). Without ``root``, user-supplied files are looked for in
``$OBLIVIO_DATA/<name>``, ``$OBLIVIO_DATA`` and ``~/.oblivio/data/<name>``.

The registry and shared helpers are in ``_registry``, the loaders in ``_bundled`` (digits,
breast-cancer), ``_images`` (IDX, CIFAR-10), ``_tables`` (Adult, Drebin) and ``_csv`` (CSV,
LIBSVM, diabetes); this module holds :func:`load` and the transformations it applies
(``classes``, ``limit``, ``normalize``), and re-exports the public names.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

# importing the loader modules registers their loaders (every listing sorts them by name)
from oblivio.data import _bundled, _csv, _images, _tables  # noqa: F401
from oblivio.data._images import (
    CIFAR10_CLASSES,
    FASHION_MNIST_CLASSES,
    read_cifar_batch,
    read_idx,
)
from oblivio.data._registry import (
    _LOADERS,
    DataNotFoundError,
    LoaderInfo,
    available,
    data_root,
    describe,
    random_split,
    register_loader,
    search_folders,
)
from oblivio.data._tables import ADULT_COLUMNS, ADULT_NUMERIC
from oblivio.data.dataset import Dataset, Split

__all__ = [
    "ADULT_COLUMNS",
    "ADULT_NUMERIC",
    "CIFAR10_CLASSES",
    "FASHION_MNIST_CLASSES",
    "DataNotFoundError",
    "LoaderInfo",
    "available",
    "data_root",
    "describe",
    "load",
    "random_split",
    "read_cifar_batch",
    "read_idx",
    "register_loader",
    "search_folders",
]


def load(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    classes: Sequence[int] | None = None,
    limit: int | None = None,
    normalize: str | None = None,
    seed: int | None = 0,
    **options: Any,
) -> Split:
    """Load a dataset by name.

    Parameters
    ----------
    name : str
        A registered loader (see :func:`available`), or ``"csv:<path>"`` / ``"libsvm:<path>"``.
    root : path, optional
        Folder with the files (default: the loader's standard location or ``$OBLIVIO_DATA``).
    classes : sequence of int, optional
        Keep only these original labels, relabelled ``0..k-1`` in the order given.
    limit : int, optional
        Keep the first ``limit`` rows of each split (after ``classes``), for quick runs.
    normalize : {None, "l2", "standard"}
        ``"l2"`` scales each row to unit Euclidean norm (needed by certified removal);
        ``"standard"`` centres and scales columns with the *training* mean and std.
    seed : int, optional
        Seed of the train/test split, where the loader makes one.
    **options
        Loader-specific options.
    """
    scheme, _, path = name.partition(":")
    key = scheme if path else name
    if key not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(available())}")
    if normalize not in (None, "l2", "standard"):
        raise ValueError(f"normalize must be None, 'l2' or 'standard', got {normalize!r}")
    if limit is not None and (not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    function = _LOADERS[key].function
    if path:
        options["path"] = path
    _check_options(name, function, options)
    split = function(root=None if root is None else Path(root), seed=seed, **options)
    if classes is not None:
        split = Split(_keep_classes(split.train, classes), _keep_classes(split.test, classes))
    if limit is not None:
        split = Split(_first(split.train, limit), _first(split.test, limit))
    if normalize == "l2":
        split = Split(_l2_rows(split.train), _l2_rows(split.test))
    elif normalize == "standard":
        split = _standardize(split)
    return split


def _check_options(name: str, function: Callable[..., Split], options: dict[str, Any]) -> None:
    """Refuse options a loader does not take, and a missing ``<path>``, with a clear message."""
    parameters = inspect.signature(function).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    known = [p for p in parameters if p not in ("root", "seed")]
    unknown = sorted(set(options) - set(parameters))
    if unknown and not accepts_any:
        raise ValueError(
            f"dataset {name!r} does not take option(s) {unknown}; "
            f"it takes: {', '.join(['root', 'classes', 'limit', 'normalize', 'seed', *known])}"
        )
    needs_path = "path" in parameters and parameters["path"].default is inspect.Parameter.empty
    if needs_path and "path" not in options:
        raise ValueError(f"dataset {name!r} needs a file: use '{name}:<path>'")


def _keep_classes(data: Dataset, classes: Sequence[int]) -> Dataset:
    classes = [int(c) for c in classes]
    unknown = [c for c in classes if not 0 <= c < data.n_classes]
    if unknown or len(set(classes)) != len(classes) or len(classes) < 1:
        raise ValueError(
            f"classes must be distinct labels of {data.name!r} in 0..{data.n_classes - 1}, "
            f"got {classes}"
        )
    mapping = np.full(data.n_classes, -1, dtype=np.int64)
    mapping[classes] = np.arange(len(classes))
    positions = np.flatnonzero(mapping[data.y] >= 0)
    X = data.X[positions]
    return Dataset(
        X=X,
        y=mapping[data.y[positions]],
        ids=data.ids[positions],
        feature_names=data.feature_names,
        classes=tuple(data.classes[c] for c in classes),
        name=data.name,
    )


def _first(data: Dataset, limit: int) -> Dataset:
    return data.take(np.arange(min(limit, len(data))))


def _replace_X(data: Dataset, X: Any) -> Dataset:
    return Dataset(X, data.y, data.ids, data.feature_names, data.classes, data.name)


def _l2_rows(data: Dataset) -> Dataset:
    if sp.issparse(data.X):
        X = sp.csr_matrix(data.X, dtype=np.float64, copy=True)
        norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        X = sp.csr_matrix(sp.diags(1.0 / norms) @ X)
        return _replace_X(data, X)
    X = np.asarray(data.X, dtype=np.float64)
    flat = X.reshape(len(X), -1)
    norms = np.linalg.norm(flat, axis=1)
    norms[norms == 0] = 1.0
    return _replace_X(data, (flat / norms[:, None]).reshape(X.shape))


def _standardize(split: Split) -> Split:
    train, test = split.train, split.test
    if sp.issparse(train.X):
        # Centring would destroy sparsity: scale columns only.
        squares = train.X.multiply(train.X).mean(axis=0)
        mean = np.asarray(train.X.mean(axis=0)).ravel()
        std = np.sqrt(np.maximum(np.asarray(squares).ravel() - mean**2, 0))
        std[std == 0] = 1.0
        scale = sp.diags(1.0 / std)
        return Split(
            _replace_X(train, sp.csr_matrix(train.X @ scale)),
            _replace_X(test, sp.csr_matrix(test.X @ scale)),
        )
    X_train = np.asarray(train.X, dtype=np.float64)
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    std[std == 0] = 1.0
    return Split(
        _replace_X(train, (X_train - mean) / std),
        _replace_X(test, (np.asarray(test.X, dtype=np.float64) - mean) / std),
    )
