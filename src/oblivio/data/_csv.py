"""Loaders of a file the user names, ``csv:<path>`` and ``libsvm:<path>``, and of Pima
diabetes (a CSV file): reading a CSV table, detecting a row-index column, encoding labels.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from oblivio.data._registry import (
    DataNotFoundError,
    _not_found,
    random_split,
    register_loader,
    search_folders,
)
from oblivio.data.dataset import Dataset, Split


# -- CSV, LIBSVM and Pima diabetes -----------------------------------------------------------
def _is_number(text: str) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def _encode_labels(*parts: np.ndarray) -> tuple[list[np.ndarray], tuple[Any, ...]]:
    """Map labels to ``0..k-1`` in sorted order; classes are the original values."""
    values = np.concatenate([np.asarray(p) for p in parts])
    if values.dtype.kind in "US" or values.dtype == object:
        if all(_is_number(v) for v in np.unique(values)):
            parts = tuple(np.asarray(p).astype(np.float64) for p in parts)
            values = np.concatenate(parts)
        else:
            parts = tuple(np.asarray(p).astype(str) for p in parts)
            values = np.concatenate(parts)
    classes = np.unique(values)
    if classes.dtype.kind == "f" and np.all(classes == np.round(classes)):
        names: tuple[Any, ...] = tuple(int(c) for c in classes)
    else:
        names = tuple(c.item() if isinstance(c, np.generic) else c for c in classes)
    return [np.searchsorted(classes, p).astype(np.int64) for p in parts], names


_INDEX_NAMES = ("", "unnamed: 0", "index")


def _index_column(
    path: Path, cells: np.ndarray, header: bool, candidates: list[int], index_col: Any
) -> int | None:
    """Which column (if any) is a row index to drop: ``index_col``, or detected when "auto".

    Detected: the first column when its header is empty, ``Unnamed: 0`` or ``index`` (what
    ``pandas.DataFrame.to_csv`` writes) and it holds the integers 0..n-1 or 1..n.
    """
    if index_col is None:
        return None
    first = [c.strip() for c in cells[0]] if header else None
    if index_col != "auto":
        if isinstance(index_col, str):
            if first is None or index_col not in first:
                raise ValueError(f"{path}: index_col={index_col!r} is not a column name")
            return first.index(index_col)
        if not -cells.shape[1] <= int(index_col) < cells.shape[1]:
            raise ValueError(f"{path}: index_col={index_col} out of range")
        return int(index_col) % cells.shape[1]
    if not header or not candidates or candidates[0] != 0:
        return None
    if first[0].lower() not in _INDEX_NAMES:
        return None
    values = cells[1:, 0]
    if not all(_is_number(v) for v in values):
        return None
    numbers = values.astype(np.float64)
    n = len(numbers)
    counting = np.array_equal(numbers, np.arange(n)) or np.array_equal(numbers, np.arange(n) + 1)
    if n and counting:
        warnings.warn(
            f"{path}: first column {first[0]!r} is a row index (0..n-1); it is dropped, not "
            "used as a feature (pass index_col=None to keep it)",
            UserWarning,
            stacklevel=4,
        )
        return 0
    return None


def _check_label_values(path: Path, labels: np.ndarray) -> None:
    """Refuse a label column of non-integer numbers (a regression target, not classes)."""
    if not labels.size or not all(_is_number(v) for v in labels[: min(len(labels), 1000)]):
        return
    try:
        values = labels.astype(np.float64)
    except ValueError:
        return
    fractional = np.unique(values[np.isfinite(values) & (values != np.round(values))])
    if fractional.size:
        distinct = np.unique(values).size
        raise ValueError(
            f"{path}: the label column holds {distinct} distinct numbers, some with fractions "
            f"(e.g. {', '.join(f'{v:g}' for v in fractional[:3])}): it looks like a regression "
            "target, and oblivio's models classify. Bin it into classes first, or choose the "
            "label column with label=<name or position>."
        )


def _read_csv_table(
    path: Path,
    label: int | str,
    header: bool | None,
    delimiter: str,
    index_col: Any = "auto",
) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """Features (float64), raw labels and feature names of one CSV file."""
    import pandas as pd

    if not path.is_file():
        raise DataNotFoundError(f"csv: file {path} not found")
    frame = pd.read_csv(
        path,
        header=None,
        sep=delimiter,
        dtype=str,
        keep_default_na=False,
        skipinitialspace=True,
    )
    cells = frame.to_numpy(dtype=str)
    if cells.shape[0] == 0 or cells.shape[1] < 2:
        raise ValueError(f"{path}: need at least one row and two columns, got {cells.shape}")
    if isinstance(label, str):
        if header is False:
            raise ValueError(f"label={label!r} names a column, but header=False")
        header = True
        first = [c.strip() for c in cells[0]]
        if label not in first:
            raise ValueError(f"{path}: no column named {label!r}; columns: {first}")
        column = first.index(label)
    else:
        column = int(label)
        if not -cells.shape[1] <= column < cells.shape[1]:
            raise ValueError(
                f"{path}: label column {label} out of range ({cells.shape[1]} columns)"
            )
        column %= cells.shape[1]
    feature_columns = [j for j in range(cells.shape[1]) if j != column]
    if header is None:  # a header when any feature cell of the first row is not a number
        header = not all(_is_number(cells[0, j]) for j in feature_columns)
    index = _index_column(path, cells, header, feature_columns, index_col)
    if index == column:
        raise ValueError(f"{path}: index_col and label are the same column ({column})")
    feature_columns = [j for j in feature_columns if j != index]
    if not feature_columns:
        raise ValueError(f"{path}: no feature columns left besides the label and the index")
    names = [cells[0, j].strip() for j in feature_columns] if header else None
    body = cells[1:] if header else cells
    try:
        X = body[:, feature_columns].astype(np.float64)
    except ValueError:
        bad = [
            (i, j) for i, row in enumerate(body) for j in feature_columns if not _is_number(row[j])
        ]
        i, j = bad[0]
        raise ValueError(
            f"{path}: non-numeric or missing feature value {str(body[i, j])!r} at line "
            f"{i + 1 + int(header)}, column {j + 1} ({len(bad)} such cells)"
        ) from None
    labels = np.char.strip(body[:, column])
    _check_label_values(path, labels)
    return X, labels, names


@register_loader("csv", "a CSV file: 'csv:<path>' (options label=, test=, test_size=, header=)")
def _load_csv(
    root: Path | None,
    seed: int | None,
    path: str,
    label: int | str = -1,
    test: str | None = None,
    test_size: float = 0.25,
    header: bool | None = None,
    delimiter: str = ",",
    name: str | None = None,
    index_col: int | str | None = "auto",
) -> Split:
    """A CSV file of numeric features and one label column.

    Parameters
    ----------
    path : str
        The file (relative paths are taken from ``root`` when given).
    label : int or str
        The label column, by position (default: the last) or by header name.
    test : str, optional
        A second file with the same columns used as the test split; otherwise a stratified
        random split of ``path`` with ``test_size`` and ``seed``.
    header : bool, optional
        Whether the first line is a header; by default, detected (a header has a
        non-numeric feature cell).
    delimiter : str
        Field separator.
    index_col : int, str, None or "auto"
        A row-index column to drop (never a feature). ``"auto"`` drops a first column headed
        ``""``, ``Unnamed: 0`` or ``index`` holding 0..n-1 or 1..n (as ``DataFrame.to_csv``
        writes it), with a warning; ``None`` keeps every column.

    Labels are mapped to ``0..k-1`` in sorted order (numbers numerically, otherwise as
    strings); ``classes`` holds the original values. Ids are the data-row numbers of the
    file (0-based, header excluded); rows of a separate ``test`` file continue after them.
    """
    train_path = _resolve(root, path)
    X, labels, names = _read_csv_table(train_path, label, header, delimiter, index_col)
    title = name or train_path.stem
    if test is None:
        (y,), classes = _encode_labels(labels)
        return random_split(
            X, y, test_size=test_size, seed=seed, name=title, classes=classes, feature_names=names
        )
    test_path = _resolve(root, test)
    X_test, labels_test, names_test = _read_csv_table(
        test_path, label, header, delimiter, index_col
    )
    if X_test.shape[1] != X.shape[1]:
        raise ValueError(
            f"{test_path} has {X_test.shape[1]} feature columns, {train_path} {X.shape[1]}"
        )
    (y, y_test), classes = _encode_labels(labels, labels_test)
    return Split(
        Dataset(X, y, None, names, classes, f"{title}-train"),
        Dataset(X_test, y_test, len(y) + np.arange(len(y_test)), names, classes, f"{title}-test"),
    )


def _resolve(root: Path | None, path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() or root is None else Path(root) / path


@register_loader(
    "libsvm", "a LIBSVM/svmlight file, sparse: 'libsvm:<path>' (options test=, test_size=)"
)
def _load_libsvm(
    root: Path | None,
    seed: int | None,
    path: str,
    test: str | None = None,
    test_size: float = 0.25,
    n_features: int | None = None,
    zero_based: bool | str = "auto",
    name: str | None = None,
) -> Split:
    """A LIBSVM / svmlight file as a sparse CSR dataset (read by scikit-learn).

    Labels are mapped to ``0..k-1`` in sorted order; ``classes`` holds the original label
    values (e.g. ``(-1, 1)``). Without ``test`` a stratified random split with ``test_size``
    and ``seed`` is made; ids are line numbers of the data (test file rows continue after the
    training rows).
    """
    from sklearn.datasets import load_svmlight_file, load_svmlight_files

    paths = [_resolve(root, path)] + ([_resolve(root, test)] if test is not None else [])
    for p in paths:
        if not p.is_file():
            raise DataNotFoundError(f"libsvm: file {p} not found")
    title = name or paths[0].stem
    try:
        if test is None:
            X, labels = load_svmlight_file(
                str(paths[0]), n_features=n_features, zero_based=zero_based
            )
            parts = [(X, labels)]
        else:
            X, labels, X_test, labels_test = load_svmlight_files(
                [str(p) for p in paths], n_features=n_features, zero_based=zero_based
            )
            parts = [(X, labels), (X_test, labels_test)]
    except ValueError as error:
        raise ValueError(
            f"{', '.join(map(str, paths))}: not a valid LIBSVM file ({error})"
        ) from error
    encoded, classes = _encode_labels(*(labels for _, labels in parts))
    matrices = [sp.csr_matrix(X, dtype=np.float64) for X, _ in parts]
    if test is None:
        return random_split(
            matrices[0], encoded[0], test_size=test_size, seed=seed, name=title, classes=classes
        )
    n_train = matrices[0].shape[0]
    return Split(
        Dataset(matrices[0], encoded[0], None, None, classes, f"{title}-train"),
        Dataset(
            matrices[1],
            encoded[1],
            n_train + np.arange(matrices[1].shape[0]),
            None,
            classes,
            f"{title}-test",
        ),
    )


def _diabetes_file(root: Path | None) -> tuple[Path | None, list[Path]]:
    looked = search_folders("diabetes", root)
    for folder in looked:
        if (folder / "diabetes.csv").is_file():
            return folder / "diabetes.csv", looked
    return None, looked


@register_loader(
    "diabetes",
    "Pima Indians diabetes, 768 x 8 (user-supplied diabetes.csv, Warnecke et al.)",
    is_present=lambda root: _diabetes_file(root)[0] is not None,
)
def _load_diabetes(root: Path | None, seed: int | None, test_size: float = 0.25) -> Split:
    """Pima Indians Diabetes (Smith et al., 1988): ``diabetes.csv`` with a header row and
    the label column ``Outcome`` (0/1); a stratified random split with ``test_size`` and
    ``seed``. Ids are the data-row numbers of the file."""
    path, looked = _diabetes_file(root)
    if path is None:
        raise _not_found(
            "diabetes",
            "diabetes.csv (8 feature columns and Outcome, with a header row)",
            looked,
            "It is the Kaggle/UCI 'Pima Indians Diabetes Database' CSV.",
        )
    X, labels, names = _read_csv_table(path, "Outcome", True, ",")
    (y,), classes = _encode_labels(labels)
    return random_split(
        X, y, test_size=test_size, seed=seed, name="diabetes", classes=classes, feature_names=names
    )
