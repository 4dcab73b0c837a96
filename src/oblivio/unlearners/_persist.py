"""The on-disk form of a saved unlearner: crash-proof writes, checked reads.

A save is a folder holding ``unlearner.json`` (options, history, method state, and the
name and SHA-256 of the arrays file) and one ``arrays-<token>.npz`` (parameters, model
state, the current training set). Guarantees:

* **One complete save at the path, always.** A first save is written to a staging folder
  beside the path and renamed into place. A later save writes a new arrays file under a
  fresh name, then replaces ``unlearner.json`` with one rename (atomic on POSIX and
  Windows), then deletes the old arrays file. A crash at any moment leaves the old save
  or the new one; never a missing or half-written one.
* **Nothing else survives.** Whatever a crashed save left (a staging folder, an arrays
  file no ``unlearner.json`` names, a temporary JSON) is deleted by the next save or load
  of the same path. Only the current state is stored, so a record forgotten before a
  completed save is in no file oblivio keeps.
* **Nothing loads unchecked.** :func:`read` names the file in every error; the arrays
  file must match the SHA-256 recorded in the JSON (truncation or corruption is refused).
* **A user's folder is never replaced.** Saving to a non-empty folder that is not an
  oblivio save raises an error and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from oblivio._io import fsync_folder
from oblivio.data import Dataset
from oblivio.models.base import Model
from oblivio.models.nets import rebuild_network

__all__ = [
    "LoadError",
    "META_FILE",
    "StateError",
    "check_array",
    "check_model",
    "cleanup",
    "dataset_arrays",
    "dataset_from",
    "read",
    "rebuild_model",
    "write",
]

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks (see _lock)
    fcntl = None

META_FILE = "unlearner.json"
_STAGING = ".oblivio-staging-"


@contextmanager
def _lock(folder: Path, *, wait: bool) -> Iterator[bool]:
    """Advisory lock on ``folder`` (``flock`` on its descriptor) while the block runs.

    Yields False when the lock is busy (``wait=False``) or the folder cannot be opened.
    A save holds it while it writes, so that a concurrent load's clean-up never deletes the
    arrays file a save is about to publish. Without ``fcntl`` (Windows) no lock is taken;
    saving and loading one path from two processes at once is then unsupported.
    """
    if fcntl is None:  # pragma: no cover - platform dependent
        yield True
        return
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(handle)


class LoadError(ValueError):
    """A saved unlearner that cannot be loaded: missing, corrupt, or inconsistent.

    The message names the file and, where one is to blame, the field.
    """

    def __init__(self, file: str | os.PathLike, message: str, field: str | None = None) -> None:
        self.file = os.fspath(file)
        self.field = field
        where = f"field {field!r}: " if field else ""
        super().__init__(f"cannot load {self.file}: {where}{message}")


class StateError(ValueError):
    """Raised by a method's ``_set_state`` for inconsistent saved state (becomes LoadError)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def check_array(file: Path, key: str, value: np.ndarray) -> None:
    """Saved arrays hold numbers (or text), and floating ones are finite."""
    if value.dtype.kind not in "biufU":
        raise LoadError(file, f"unexpected dtype {value.dtype}", key)
    if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
        raise LoadError(file, f"{int(np.sum(~np.isfinite(value)))} non-finite values", key)


def dataset_arrays(prefix: str, data: Dataset) -> dict[str, np.ndarray]:
    """A dataset's ``X`` (dense, or CSR parts), ``y`` and ``ids`` as named arrays."""
    arrays = {f"{prefix}y": np.asarray(data.y), f"{prefix}ids": np.asarray(data.ids)}
    if sp.issparse(data.X):
        arrays.update(
            {
                f"{prefix}X_data": data.X.data,
                f"{prefix}X_indices": data.X.indices,
                f"{prefix}X_indptr": data.X.indptr,
                f"{prefix}X_shape": np.asarray(data.X.shape),
            }
        )
    else:
        arrays[f"{prefix}X"] = np.asarray(data.X)
    return arrays


def dataset_from(file: Path, prefix: str, arrays: Any, meta: Any) -> Dataset:
    """Inverse of :func:`dataset_arrays`, checked; errors name ``file`` and the field."""
    field = prefix.rstrip("_")
    if not isinstance(meta, dict):
        raise LoadError(file, f"expected a dict, got {meta!r}", field)
    try:
        if f"{prefix}X" in arrays:
            X = arrays[f"{prefix}X"]
            if X.dtype.kind not in "biuf":
                raise ValueError(f"X must be numeric, got dtype {X.dtype}")
        else:
            shape = tuple(int(v) for v in arrays[f"{prefix}X_shape"])
            X = sp.csr_matrix(
                (
                    arrays[f"{prefix}X_data"],
                    arrays[f"{prefix}X_indices"],
                    arrays[f"{prefix}X_indptr"],
                ),
                shape=shape,
            )
            X.check_format(full_check=True)
        ids = arrays[f"{prefix}ids"]
        if ids.dtype.kind not in "iu":
            raise ValueError(f"ids must be integers, got dtype {ids.dtype}")
        return Dataset(
            X=X,
            y=arrays[f"{prefix}y"],
            ids=ids,
            feature_names=meta.get("feature_names"),
            classes=meta.get("classes"),
            name=meta.get("name", "data"),
        )
    except KeyError as error:
        raise LoadError(file, f"array {error} is missing", field) from None
    except (ValueError, TypeError) as error:
        raise LoadError(file, str(error), field) from None


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return _sha256_stream(handle)


def _sha256_stream(handle: Any) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def _write_arrays(folder: Path, arrays: dict[str, np.ndarray]) -> tuple[str, str]:
    name = f"arrays-{secrets.token_hex(8)}.npz"
    try:
        with open(folder / name, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        return name, _sha256(folder / name)
    except BaseException:
        (folder / name).unlink(missing_ok=True)
        raise


def _write_meta(folder: Path, meta: dict[str, Any]) -> None:
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{META_FILE}.")
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(meta, stream, indent=2)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, folder / META_FILE)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_folder(folder)


def _referenced(path: Path) -> str | None:
    """Name of the arrays file ``path/unlearner.json`` points to (None if unreadable)."""
    try:
        meta = json.loads((path / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    if meta.get("format_version") == 1:
        return "arrays.npz"
    name = (meta.get("arrays") or {}).get("file") if isinstance(meta.get("arrays"), dict) else None
    return name if isinstance(name, str) else None


def cleanup(path: str | os.PathLike) -> None:
    """Delete what a crashed save of ``path`` left behind (never anything else).

    Removed: staging folders ``.<name>.oblivio-staging-*`` beside ``path`` (and those of
    the format before, ``.<name>.*`` folders holding a save), arrays files inside ``path``
    that its ``unlearner.json`` does not name, and temporary JSON files. Folders a running
    save holds locked are left alone. Errors (a read-only location) are ignored: cleaning
    is best effort, loading still works.
    """
    path = Path(path)
    try:
        for sibling in path.parent.glob(f".{path.name}.*"):
            staging = sibling.name.startswith(f".{path.name}{_STAGING}")
            old_format = (sibling / META_FILE).is_file() or (sibling / "old" / META_FILE).is_file()
            if sibling.is_dir() and not sibling.is_symlink() and (staging or old_format):
                with _lock(sibling, wait=False) as free:
                    if free:
                        shutil.rmtree(sibling, ignore_errors=True)
        if (path / META_FILE).is_file():
            with _lock(path, wait=False) as free:
                if free:
                    _clean_inside(path)
    except OSError:
        pass


def _clean_inside(path: Path) -> None:
    keep = _referenced(path)
    if keep is None:
        return  # cannot tell which arrays file is current: delete nothing
    for item in path.iterdir():
        stale_arrays = item.name.startswith("arrays") and item.suffix == ".npz"
        stale_meta = item.name.startswith(f".{META_FILE}.")
        if item.is_file() and item.name != keep and (stale_arrays or stale_meta):
            item.unlink(missing_ok=True)


def write(path: str | os.PathLike, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    """Write a save of ``meta`` + ``arrays`` at folder ``path`` (see the module docstring)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"cannot save to {os.fspath(path)!r}: it is a file, not a folder")
    if path.is_dir() and any(path.iterdir()) and not (path / META_FILE).is_file():
        raise ValueError(
            f"cannot save to {os.fspath(path)!r}: the folder is not empty and holds no oblivio "
            f"save ({META_FILE}); choose a new folder (nothing was changed)"
        )
    cleanup(path)
    meta = dict(meta)
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}{_STAGING}", dir=path.parent))
        with _lock(staging, wait=True):
            try:
                name, digest = _write_arrays(staging, arrays)
                meta["arrays"] = {"file": name, "sha256": digest}
                _write_meta(staging, meta)
                os.replace(staging, path)  # fails, changing nothing, if path appeared meanwhile
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        fsync_folder(path.parent)
        return path
    with _lock(path, wait=True):
        old = _referenced(path)
        name, digest = _write_arrays(path, arrays)
        meta["arrays"] = {"file": name, "sha256": digest}
        try:
            _write_meta(path, meta)
        except BaseException:
            (path / name).unlink(missing_ok=True)
            raise
        if old is not None and old != name:
            (path / old).unlink(missing_ok=True)
        _clean_inside(path)
    return path


def read(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The JSON and arrays of the save at ``path``; every failure is a :class:`LoadError`."""
    path = Path(path)
    if not path.is_dir():
        raise LoadError(path, "no such folder (a save is a folder holding unlearner.json)")
    cleanup(path)
    for attempt in range(3):  # a save may replace the files between our two reads: retry
        try:
            return _read_once(path)
        except _ReplacedError:
            if attempt == 2:
                raise LoadError(path, "the save kept changing while it was read") from None
    raise AssertionError("unreachable")


class _ReplacedError(Exception):
    """The arrays file named by the JSON vanished: a concurrent save replaced it."""


def _read_once(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    meta_path = path / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise LoadError(meta_path, "missing; this folder holds no oblivio save") from None
    except (OSError, ValueError) as error:
        raise LoadError(meta_path, f"unreadable or not JSON ({error})") from None
    if not isinstance(meta, dict):
        raise LoadError(meta_path, f"expected a JSON object, got {type(meta).__name__}")
    version = meta.get("format_version")
    if version not in (1, 2):
        raise LoadError(meta_path, f"unsupported format version {version!r}", "format_version")
    if version == 1:
        arrays_path, expected = path / "arrays.npz", None
    else:
        spec = meta.get("arrays")
        if not (
            isinstance(spec, dict)
            and isinstance(spec.get("file"), str)
            and isinstance(spec.get("sha256"), str)
            and Path(spec["file"]).name == spec["file"]
        ):
            raise LoadError(
                meta_path, f"expected {{'file': name, 'sha256': hex}}, got {spec!r}", "arrays"
            )
        arrays_path, expected = path / spec["file"], spec["sha256"]
    try:
        # one descriptor for hash and parse: a concurrent save's unlink cannot take it away
        handle = open(arrays_path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        if _referenced(path) != arrays_path.name:
            raise _ReplacedError from None
        raise LoadError(arrays_path, "missing (the save is incomplete)") from None
    except OSError as error:
        raise LoadError(arrays_path, f"unreadable ({error})") from None
    with handle:
        if expected is not None and _sha256_stream(handle) != expected:
            raise LoadError(
                arrays_path,
                f"content does not match the SHA-256 recorded in {META_FILE} "
                "(truncated or corrupted)",
            )
        handle.seek(0)
        try:
            with np.load(handle, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
            raise LoadError(arrays_path, f"unreadable ({type(error).__name__}: {error})") from None
    return meta, arrays


def rebuild_model(file: Path, spec: Any, model: Model | None) -> Model:
    """The model template: rebuilt from the save, or ``model`` with the saved settings."""
    if not (
        isinstance(spec, dict)
        and isinstance(spec.get("class"), str)
        and isinstance(spec.get("params"), dict)
    ):
        raise LoadError(
            file, f"expected {{'class': name, 'params': {{...}}}}, got {spec!r}", "model"
        )
    unsaved = spec.get("unsaved")
    if unsaved is None:  # format 1 wrote None for what JSON cannot hold (the module, a loss)
        unsaved = [k for k, v in spec["params"].items() if v is None]
    saved = {k: v for k, v in spec["params"].items() if k not in unsaved}
    if model is None:
        from oblivio import models

        klass = getattr(models, spec["class"], None)
        network = _saved_network(file, spec, unsaved)
        if network is not None:
            params = {**saved, "module": network}
        elif spec["class"] == "LogisticRegression" and klass is not None:
            params = saved
        else:
            raise LoadError(
                file,
                f"cannot rebuild a {spec['class']} from its saved options; pass an untrained "
                "instance of the same architecture as load(path, model=...)",
                "model.class",
            )
    else:
        klass = type(model)
        if spec["class"] != klass.__name__:
            raise LoadError(
                file,
                f"the save holds a {spec['class']}, the model passed is a {klass.__name__}",
                "model.class",
            )
        module = getattr(model, "module", None)
        wanted = spec.get("module_class")
        if wanted is not None and type(module).__name__ != wanted:
            raise LoadError(
                file,
                f"the save holds a {wanted} network, the model passed wraps "
                f"a {type(module).__name__}",
                "model.module_class",
            )
        params = {**model.get_params(), **saved}
    try:
        rebuilt = klass(**params)
        check = getattr(rebuilt, "_check_params", None)
        if callable(check):
            check()
    except (TypeError, ValueError) as error:
        raise LoadError(file, str(error), "model.params") from None
    return rebuilt


def _saved_network(file: Path, spec: dict[str, Any], unsaved: list[str]) -> Any:
    """A fresh network for a saved :class:`~oblivio.models.TorchModel` that wraps one of
    oblivio's networks (saved with its ``module_args``), or None when the save cannot
    rebuild it alone (a user's network, or a setting JSON cannot hold, e.g. a loss
    function)."""
    args = spec.get("module_args")
    if spec["class"] != "TorchModel" or args is None or set(unsaved) - {"module"}:
        return None
    try:
        return rebuild_network(str(spec.get("module_class")), args)
    except ValueError as error:
        raise LoadError(file, str(error), "model.module_args") from None


def check_model(where: Path, unlearner: Any) -> None:
    """The restored model must be finite and predict the training data's classes."""
    try:
        theta = unlearner.model_.theta
        finite = bool(torch.isfinite(theta).all())
        rows = unlearner.train_.take(np.arange(min(len(unlearner.train_), 8)))
        probabilities = np.asarray(unlearner.model_.predict_proba(rows.X))
    except Exception as error:  # noqa: BLE001 - any failure means the state does not fit
        raise LoadError(
            where,
            f"the model state does not fit the model and data ({type(error).__name__}: {error})",
            "model",
        ) from None
    if not finite:
        raise LoadError(where, "the parameters contain non-finite values", "model")
    expected = (len(rows), unlearner.train_.n_classes)
    if probabilities.shape != expected or not np.all(np.isfinite(probabilities)):
        raise LoadError(
            where,
            f"the model predicts shape {probabilities.shape} (finite: "
            f"{bool(np.all(np.isfinite(probabilities)))}) for {expected[0]} "
            f"records of {expected[1]} classes",
            "model",
        )
