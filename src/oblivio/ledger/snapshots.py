"""Content-addressed model store: each saved unlearner lives in a folder named by its hash.

A snapshot is what :meth:`Unlearner.save` writes (``unlearner.json`` + its arrays file),
moved to ``<store>/<sha256>`` where the hash covers every file's name and bytes. Loading
recomputes the hash, so a corrupted or edited snapshot is refused instead of served.
Saving is crash safe: files are written and fsynced under a temporary name (``.tmp-*``)
and renamed; names that match neither pattern are never touched.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

from oblivio.models.base import Model
from oblivio.unlearners import Unlearner

__all__ = ["SnapshotError", "delete", "load", "save", "sweep"]

_HASH = re.compile(r"^[0-9a-f]{64}$")
_TEMPORARY = (".tmp-", "..tmp-")  # ours, and the staging folders Unlearner.save makes


class SnapshotError(RuntimeError):
    """A snapshot is missing or its content does not match its hash."""


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(folder.iterdir()):
        digest.update(file.name.encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):  # noqa: B023
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def save(unlearner: Unlearner, store: Path) -> str:
    """Save ``unlearner`` into ``store``; return its content hash (the snapshot's name)."""
    store.mkdir(parents=True, exist_ok=True)
    staging = store / f".tmp-{uuid.uuid4().hex}"
    try:
        unlearner.save(staging)
        for file in staging.iterdir():
            _fsync(file)
        name = _digest(staging)
        target = store / name
        if target.exists():  # same bytes already stored
            shutil.rmtree(staging)
        else:
            os.replace(staging, target)
        _fsync(store)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return name


def load(store: Path, name: str, model: Model | None = None) -> Unlearner:
    """Load snapshot ``name`` after checking its hash.

    The one place the ledger reads a saved unlearner (``Unlearner.load``); ``model`` is the
    untrained template torch models need.
    """
    folder = store / name
    if not _HASH.match(name) or not folder.is_dir():
        raise SnapshotError(f"snapshot {name} is missing from {store}")
    if _digest(folder) != name:
        raise SnapshotError(f"snapshot {folder} does not match its hash: corrupted or edited")
    return Unlearner.load(folder, model=model)


def delete(store: Path, names: Iterable[str]) -> None:
    """Delete snapshots (only folders named by a hash)."""
    for name in names:
        if _HASH.match(name) and (store / name).is_dir():
            shutil.rmtree(store / name)


def sweep(store: Path, keep: set[str]) -> list[str]:
    """Delete what a crash left: temporary folders and snapshots no version references."""
    removed = []
    if not store.is_dir():
        return removed
    for path in store.iterdir():
        ours = path.name.startswith(_TEMPORARY) or bool(_HASH.match(path.name))
        if path.is_dir() and ours and path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed
