"""The loader registry and what every loader shares.

``register_loader`` fills the registry that ``available``, ``describe`` and
:func:`oblivio.data.loaders.load` read; the helpers below it are shared by the loader
modules: ``data_root``, ``random_split`` (a stratified split with ids = row numbers), and
finding files (``search_folders``, ``_first_file``, ``_not_found``, ``_read_bytes``).
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from oblivio.data.dataset import Dataset, Split


class DataNotFoundError(FileNotFoundError):
    """The files a loader needs are not where it looked."""


@dataclass(frozen=True)
class LoaderInfo:
    name: str
    function: Callable[..., Split]
    description: str
    is_present: Callable[[Path | None], bool]


_LOADERS: dict[str, LoaderInfo] = {}


def register_loader(
    name: str, description: str, is_present: Callable[[Path | None], bool] | None = None
) -> Callable[[Callable[..., Split]], Callable[..., Split]]:
    """Register ``function(root, seed, **options) -> Split`` under ``name``."""

    def decorate(function: Callable[..., Split]) -> Callable[..., Split]:
        if name in _LOADERS:
            raise ValueError(f"a loader named {name!r} is already registered")
        _LOADERS[name] = LoaderInfo(name, function, description, is_present or (lambda _: True))
        return function

    return decorate


def available() -> list[str]:
    """Names ``load`` accepts (``csv:<path>`` and ``libsvm:<path>`` take a path)."""
    return sorted(_LOADERS)


def describe() -> list[tuple[str, str, bool]]:
    """(name, description, data present?) for every loader."""
    rows = []
    for info in sorted(_LOADERS.values(), key=lambda i: i.name):
        try:
            present = bool(info.is_present(None))
        except Exception:
            present = False
        rows.append((info.name, info.description, present))
    return rows


def data_root(root: str | os.PathLike | None, default: str | os.PathLike | None = None) -> Path:
    """``root`` if given, else ``$OBLIVIO_DATA``, else ``default``, else ``~/.oblivio/data``."""
    if root is not None:
        return Path(root)
    if os.environ.get("OBLIVIO_DATA"):
        return Path(os.environ["OBLIVIO_DATA"])
    if default is not None:
        return Path(default)
    return Path.home() / ".oblivio" / "data"


def random_split(
    X: Any,
    y: np.ndarray,
    *,
    test_size: float,
    seed: int | None,
    name: str,
    classes: Sequence[Any] | None = None,
    feature_names: Sequence[str] | None = None,
) -> Split:
    """Stratified random train/test split with ids = row numbers of the source file.

    Falls back to an unstratified split when some class has fewer than two records.
    """
    from sklearn.model_selection import train_test_split

    if not 0 < test_size < 1:
        raise ValueError(f"test_size must lie strictly between 0 and 1, got {test_size!r}")
    positions = np.arange(X.shape[0])
    _, counts = np.unique(y, return_counts=True)
    n_test = int(np.ceil(test_size * len(y)))
    # Stratify when every class can appear on both sides; otherwise a plain random split.
    stratify = y if counts.min() >= 2 and counts.size <= min(n_test, len(y) - n_test) else None
    train_pos, test_pos = train_test_split(
        positions, test_size=test_size, random_state=seed, stratify=stratify
    )
    train_pos.sort()
    test_pos.sort()

    def part(rows: np.ndarray, suffix: str) -> Dataset:
        return Dataset(X[rows], y[rows], rows, feature_names, classes, f"{name}-{suffix}")

    return Split(part(train_pos, "train"), part(test_pos, "test"))


# -- finding files ---------------------------------------------------------------------------
def search_folders(
    name: str,
    root: Path | None,
    defaults: Iterable[str | os.PathLike] = (),
    subfolders: Iterable[str] = (),
) -> list[Path]:
    """Folders a loader looks in, in order.

    With ``root``: ``root`` and ``root/<name>`` only (an explicit root never falls back to
    other places). Without: ``$OBLIVIO_DATA/<name>``, ``$OBLIVIO_DATA``, the loader's
    ``defaults`` and ``~/.oblivio/data/<name>``. Each folder is followed by its
    ``subfolders`` (e.g. ``cifar-10-batches-py``).
    """
    if root is not None:
        bases = [Path(root), Path(root) / name]
    else:
        bases = []
        if os.environ.get("OBLIVIO_DATA"):
            env = Path(os.environ["OBLIVIO_DATA"]).expanduser()
            bases += [env / name, env]
        bases += [Path(d).expanduser() for d in defaults]
        bases.append(Path.home() / ".oblivio" / "data" / name)
    subfolders = tuple(subfolders)
    folders: list[Path] = []
    for base in bases:
        for folder in (base, *(base / s for s in subfolders)):
            if folder not in folders:
                folders.append(folder)
    return folders


def _first_file(folder: Path, names: Iterable[str]) -> Path | None:
    for file_name in names:
        if (folder / file_name).is_file():
            return folder / file_name
    return None


def _not_found(dataset: str, wanted: str, looked: Sequence[Path], how: str) -> DataNotFoundError:
    places = "\n".join(f"  - {folder}" for folder in looked)
    return DataNotFoundError(
        f"{dataset}: {wanted} not found. Looked in:\n{places}\n{how}\n"
        "Pass root=<folder> or set OBLIVIO_DATA=<folder> (files in <folder>/"
        f"{dataset} or directly in <folder>). Nothing is downloaded at run time."
    )


def _read_bytes(path: Path) -> bytes:
    """File contents, gunzipped when the file starts with the gzip magic bytes."""
    with open(path, "rb") as handle:
        raw = handle.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise ValueError(f"{path}: corrupt gzip file ({error})") from error
    return raw
