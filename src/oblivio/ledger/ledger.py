"""A durable, idempotent record of deletion requests and the model versions they produced."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from oblivio.data import Relabel, Remove, ReplaceFeatures, Request, RequestError
from oblivio.ledger import snapshots
from oblivio.ledger.payload import fingerprint, from_payload, to_payload
from oblivio.ledger.records import LedgerEntry, RecordStatus, VerifyReport, guarantee
from oblivio.ledger.storage import SQLiteStorage, Storage
from oblivio.ledger.verify import replay
from oblivio.models.base import Model
from oblivio.unlearners import Unlearner

__all__ = ["Ledger", "RequestIdConflictError"]

log = logging.getLogger("oblivio.ledger")


def _is_url(path: str | os.PathLike) -> bool:
    return "://" in str(path)


def _create_sqlite(path: Path, meta: dict[str, str], ids: Any, snapshot: str) -> None:
    """Build the database under a temporary name and rename it: never half a ledger."""
    staging = path.with_name(f".{path.name}.creating-{uuid.uuid4().hex[:8]}")
    try:
        fresh = SQLiteStorage(staging, create=True)
        fresh.initialize(meta, ids, snapshot, meta["created_at"])
        fresh.close()
        for suffix in ("-wal", "-shm"):
            Path(str(staging) + suffix).unlink(missing_ok=True)
        if path.exists():
            raise FileExistsError(f"{path} already exists")
        os.replace(staging, path)
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(str(staging) + suffix).unlink(missing_ok=True)


class RequestIdConflictError(RequestError):
    """A request id that was already used for a different request."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class Ledger:
    """Every deletion request durable, idempotent and traceable to a model version.

    A ledger is one SQLite file (WAL mode) plus a content-addressed model store beside it
    (``<path>.models/``); or its rows live in PostgreSQL (a SQLAlchemy URL, see
    :mod:`oblivio.ledger.sql`) with the model store in a folder you name. Version 0 is the
    unlearner passed to :meth:`create`; each applied request makes the next version. Rows
    hold record ids and request metadata, never record features.

    A submit (1) writes the entry as ``pending``, (2) runs ``forget`` and saves the new
    version to the store, (3) commits the entry, the new head and the record states in one
    transaction. Only then is it acknowledged. On open (and before each submit) a
    ``pending`` entry left by a dead writer is marked ``interrupted`` and its unreferenced
    snapshot deleted: it was never acknowledged, so resubmitting its id applies it once.
    A writer lock (``flock``) serialises submits across threads and processes.

    Stored versions hold the training set as it was then, so a version older than a
    request still holds the records it removed (and the old values of those it edited).
    By default (``prune=True`` at creation) every older snapshot is deleted after each
    request, so only the current version is stored. ``prune=False`` keeps every version
    for replay audits, and warns that older versions retain forgotten records;
    :meth:`prune` deletes them later. A ledger opened again keeps the setting it was
    created with, and :meth:`open` warns while versions older than the current one are
    stored (also for ledgers created before pruning became the default).

    Use :meth:`create` or :meth:`open`, not the constructor.
    """

    def __init__(
        self, storage: Storage, store: Path, *, model: Model | None, lock_timeout: float
    ) -> None:
        self._storage = storage
        self._store = store
        self._model = model
        self._lock_timeout = lock_timeout
        self._lock = threading.RLock()
        meta = storage.meta()
        self.method: str = meta["method"]
        self.checkpoint_every: int = int(meta["checkpoint_every"])
        self.auto_prune: bool = meta["prune"] == "1"
        self._unlearner: Unlearner | None = None
        self._version = -1

    # -- construction ----------------------------------------------------------------------
    @staticmethod
    def _store_for(path: str | os.PathLike, store: str | os.PathLike | None) -> Path:
        if store is not None:
            return Path(store)
        if _is_url(path):
            raise ValueError("a ledger in a database URL needs store= (the model store folder)")
        return Path(path).with_name(Path(path).name + ".models")

    @staticmethod
    def _storage_for(path: str | os.PathLike, create: bool = False) -> Storage:
        if _is_url(path):
            from oblivio.ledger.sql import SQLAlchemyStorage

            return SQLAlchemyStorage(str(path), create=create)
        return SQLiteStorage(path, create=create)

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        unlearner: Unlearner,
        *,
        store: str | os.PathLike | None = None,
        checkpoint_every: int = 1,
        prune: bool = True,
        lock_timeout: float = 60.0,
    ) -> Ledger:
        """Start a ledger at ``path`` with ``unlearner`` (fitted) as version 0.

        Parameters
        ----------
        path : path or str
            The SQLite file to create (must not exist), or a PostgreSQL SQLAlchemy URL
            (``postgresql+psycopg://user@host/db``; needs ``store`` and the extra
            ``postgres``).
        unlearner : Unlearner
            A fitted unlearner; the ledger keeps its own copy (saved in the store).
        store : path, optional
            Model store folder (default ``<path>.models``; required with a URL).
        checkpoint_every : int
            Save a snapshot every this many versions (default 1: every version). Versions
            in between are rebuilt on open by replaying their requests from the last
            snapshot; for approximate methods the rebuilt parameters can differ from the
            ones served before (exact methods rebuild them exactly). Above 1 only with
            ``prune=False`` (replays start from an older snapshot, which holds what later
            requests forgot).
        prune : bool
            Keep only the current version (default): after every request every older
            snapshot is deleted, so no stored version holds a removed record or an edited
            record's old values, and :meth:`verify` checks the current version instead of
            replaying earlier requests. ``prune=False`` keeps every version (full history
            for replay audits); older versions then retain forgotten records, so it warns
            (``UserWarning``).
        lock_timeout : float
            Seconds to wait for another writer before raising ``LedgerBusyError``.
        """
        if not isinstance(unlearner, Unlearner):
            raise TypeError(f"Ledger.create needs an Unlearner, got {type(unlearner).__name__}")
        unlearner._check_fitted()
        if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be an integer >= 1, got {checkpoint_every!r}")
        if prune and checkpoint_every != 1:
            raise ValueError(
                f"checkpoint_every={checkpoint_every} keeps versions older than the current "
                "one, which hold forgotten records; pass prune=False to keep history"
            )
        store_path = cls._store_for(path, store)
        storage = cls._storage_for(path, create=True)  # refuses an existing ledger first
        name = snapshots.save(unlearner, store_path)
        meta = {
            "method": unlearner.name,
            "created_at": _now(),
            "checkpoint_every": str(checkpoint_every),
            "prune": "1" if prune else "0",
        }
        if _is_url(path):  # one transaction, DDL included
            storage.initialize(meta, unlearner.train_.ids, name, meta["created_at"])
            storage.close()
        else:
            _create_sqlite(Path(path), meta, unlearner.train_.ids, name)
        if not prune:
            warnings.warn(
                "this ledger keeps every model version (prune=False): older versions "
                "retain the records later requests remove or edit, until Ledger.prune()",
                UserWarning,
                stacklevel=2,
            )
        return cls.open(path, store=store, model=unlearner.model, lock_timeout=lock_timeout)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        *,
        model: Model | None = None,
        store: str | os.PathLike | None = None,
        lock_timeout: float = 60.0,
    ) -> Ledger:
        """Open a ledger, finish crash recovery and load the current version.

        ``model`` is an untrained template of the same architecture, needed for torch
        models on a network of your own (logistic regression and oblivio's networks are
        rebuilt from the save).
        """
        ledger = cls(
            cls._storage_for(path),
            cls._store_for(path, store),
            model=model,
            lock_timeout=lock_timeout,
        )
        with ledger._writing():
            pass  # recovery and loading happen on entering the writer section
        ledger._warn_of_history()
        return ledger

    def _warn_of_history(self) -> None:
        """Warn on open when versions older than the current one are stored: they hold
        records that later requests removed or edited (a ledger created with
        ``prune=False``, or before pruning became the default)."""
        if self.auto_prune:
            return
        older = [v for v, _ in self._storage.snapshots() if v < self._version]
        if older:
            warnings.warn(
                f"this ledger stores {len(older)} model version(s) older than the current "
                f"one ({self._version}); they retain the records later requests removed or "
                "edited, until Ledger.prune() (oblivio ledger prune) deletes them",
                UserWarning,
                stacklevel=3,
            )

    # -- recovery and loading -----------------------------------------------------------------
    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Thread and process writer lock; recovers dead writers and syncs the head."""
        with self._lock, self._storage.writer_lock(self._lock_timeout):
            self._recover()
            head = int(self._storage.meta()["head"])
            if self._unlearner is None or head != self._version:
                self._rebuild(head)
            yield

    def _recover(self) -> None:
        pending = self._storage.entries(["pending"])
        for row in pending:  # we hold the writer lock: their writer is gone
            log.warning("request %s was interrupted before commit; not applied", row["request_id"])
            self._storage.finish(
                row["request_id"],
                {
                    "status": "interrupted",
                    "finished_at": _now(),
                    "error": "the writer stopped before committing; not applied (resubmit it)",
                },
            )
        if self._unlearner is not None and not pending:
            return  # orphans appear only when a writer dies or a commit fails
        removed = self._sweep()
        if removed:
            log.warning(
                "removed %d unreferenced snapshot folders from %s", len(removed), self._store
            )

    def _sweep(self) -> list[str]:
        return snapshots.sweep(self._store, {name for _, name in self._storage.snapshots()})

    def _load_snapshot(self, name: str) -> Unlearner:
        return snapshots.load(self._store, name, model=self._model)

    def _rebuild(self, head: int) -> None:
        stored = [(v, name) for v, name in self._storage.snapshots() if v <= head]
        if not stored:
            raise snapshots.SnapshotError(f"no stored version at or before head {head}")
        base, name = stored[-1]
        unlearner = self._load_snapshot(name)
        for row in self._applied_after(base):
            unlearner.forget(from_payload(row["request"]))
        self._unlearner, self._version = unlearner, head

    def _applied_after(self, version: int) -> list[dict[str, Any]]:
        rows = [r for r in self._storage.entries(["applied"]) if r["version"] > version]
        return sorted(rows, key=lambda r: r["version"])

    # -- reading ---------------------------------------------------------------------------
    @property
    def version(self) -> int:
        """The current model version (0 before any request)."""
        return self._version

    @contextmanager
    def _current(self) -> Iterator[Unlearner]:
        with self._lock:
            if int(self._storage.meta()["head"]) != self._version:
                with self._writing():
                    pass
            assert self._unlearner is not None
            yield self._unlearner

    def unlearner(self) -> Unlearner:
        """A copy of the current version's unlearner (changing it does not touch the ledger)."""
        with self._current() as current:
            return copy.deepcopy(current)

    def predict_proba(self, X: Any) -> tuple[int, np.ndarray]:
        """(version, class probabilities) of the current model for rows ``X``.

        ``X`` is (n, d) or the training records' shape; flat rows are reshaped.
        """
        with self._current() as current:
            shape = current.train_.X.shape[1:]
            if sp.issparse(X):
                X = sp.csr_matrix(X, dtype=np.float64)
            else:
                X = np.asarray(X, dtype=np.float64)
                if X.ndim == 1:
                    X = X.reshape(1, -1)
                if X.shape[1:] != shape:
                    if X.ndim != 2 or X.shape[1] != int(np.prod(shape)):
                        raise ValueError(
                            f"rows must have {int(np.prod(shape))} features (or shape "
                            f"{tuple(shape)}), got shape {X.shape[1:]}"
                        )
                    X = X.reshape((X.shape[0],) + tuple(shape))
                if not np.all(np.isfinite(X)):
                    raise ValueError("rows contain non-finite values (nan or inf)")
            if sp.issparse(current.train_.X) and not sp.issparse(X):
                X = sp.csr_matrix(X)
            return self._version, np.asarray(current.model_.predict_proba(X))

    def entry(self, request_id: str) -> LedgerEntry | None:
        """The entry of ``request_id``, or None if the ledger never saw it."""
        row = self._storage.entry(str(request_id))
        return None if row is None else LedgerEntry.from_row(row)

    def history(self) -> list[LedgerEntry]:
        """Every entry (applied, rejected, interrupted, failed) in arrival order."""
        return [LedgerEntry.from_row(row) for row in self._storage.entries()]

    def status(self, record_id: int) -> RecordStatus:
        """Whether ``record_id`` is present, forgotten, edited or unknown, and by what."""
        record_id = int(record_id)
        found = self._storage.record(record_id)
        if found is None:
            return RecordStatus(record_id=record_id, state="unknown")
        state, seq = found
        if seq is None:
            return RecordStatus(record_id=record_id, state=state)
        entry = LedgerEntry.from_row(self._storage.entry_at(seq))
        return RecordStatus(
            record_id=record_id,
            state=state,
            request_id=entry.request_id,
            version=entry.version,
            time=entry.finished_at,
            method=entry.method,
            guarantee=guarantee(entry),
            certificate=entry.certificate,
        )

    # -- writing ---------------------------------------------------------------------------
    def submit(self, request: Request, request_id: str | None = None) -> LedgerEntry:
        """Apply ``request`` once and record it; return its entry.

        A ``request_id`` seen before returns its entry and applies nothing (a rejected
        one raises its ``RequestError`` again; reusing an id for a different request raises
        :class:`RequestIdConflictError`). An interrupted or failed attempt may be resubmitted.

        Raises
        ------
        RequestError
            The request is invalid for the current training set; it is recorded as
            ``rejected`` and nothing else changes.
        """
        request_id = uuid.uuid4().hex if request_id is None else str(request_id)
        if not request_id or len(request_id) > 200:
            raise RequestError(f"request_id must have 1 to 200 characters, got {request_id!r}")
        with self._writing():
            start = time.perf_counter()
            try:
                payload, refusal = to_payload(request), None
            except RequestError as error:
                payload, refusal = {"kind": type(request).__name__.lower()}, str(error)
            existing = self._storage.entry(request_id)
            if existing is not None and existing["status"] in ("applied", "rejected"):
                if existing["fingerprint"] != fingerprint(payload):
                    raise RequestIdConflictError(
                        f"request id {request_id!r} was already used for a different request "
                        f"({existing['kind']} of {len(existing['request'].get('ids') or [])} "
                        "ids)"
                    )
                if existing["status"] == "rejected":
                    raise RequestError(existing["error"])
                return LedgerEntry.from_row(existing)
            self._begin(request_id, payload)
            if refusal is not None:
                self._reject(request_id, refusal)
                raise RequestError(refusal)
            log.info(
                "request %s: %s of %d ids",
                request_id,
                payload["kind"],
                len(payload.get("ids") or []),
            )
            return self._apply(request_id, request, payload, start)

    def _begin(self, request_id: str, payload: dict[str, Any]) -> None:
        self._storage.begin(
            {
                "request_id": request_id,
                "kind": payload["kind"],
                "request": payload,
                "fingerprint": fingerprint(payload),
                "submitted_at": _now(),
            }
        )

    def _reject(self, request_id: str, error: str) -> None:
        log.info("request %s rejected: %s", request_id, error)
        self._storage.finish(
            request_id, {"status": "rejected", "error": error, "finished_at": _now()}
        )

    def _apply(
        self, request_id: str, request: Request, payload: dict[str, Any], start: float
    ) -> LedgerEntry:
        assert self._unlearner is not None
        unlearner = self._unlearner
        affected = self._affected(request, unlearner)
        try:
            result = unlearner.forget(request)
        except RequestError as error:
            self._reject(request_id, str(error))
            raise
        except BaseException as error:  # forget() restored the unlearner; record and re-raise
            self._storage.finish(
                request_id,
                {
                    "status": "failed",
                    "finished_at": _now(),
                    "error": f"{type(error).__name__}: {error}",
                },
            )
            raise
        version = self._version + 1
        try:
            name = None
            if version % self.checkpoint_every == 0:
                name = snapshots.save(unlearner, self._store)
            fields = {
                "version": version,
                "affected": affected,
                "method": result.method,
                "exact": result.exact,
                "retrained": result.retrained,
                "seconds": result.seconds,
                "certificate": None
                if result.certificate is None
                else result.to_dict()["certificate"],
                "diagnostics": result.diagnostics,
                "finished_at": _now(),
            }
            state = "forgotten" if payload["kind"] == "remove" else "edited"
            unreferenced = self._storage.commit(
                request_id, fields, name, state, drop_older=self.auto_prune
            )
        except BaseException:
            # The in-memory unlearner is ahead of the database: rebuild it on next use.
            self._unlearner, self._version = None, -1
            with contextlib.suppress(Exception):
                self._sweep()  # the snapshot this commit would have referenced
            raise
        self._version = version
        snapshots.delete(self._store, unreferenced)
        log.info(
            "request %s applied as version %d in %.3f s",
            request_id,
            version,
            time.perf_counter() - start,
        )
        return LedgerEntry.from_row(self._storage.entry(request_id))

    @staticmethod
    def _affected(request: Request, unlearner: Unlearner) -> list[int]:
        if isinstance(request, (Remove, Relabel)) or (
            isinstance(request, ReplaceFeatures) and request.ids is not None
        ):
            return [int(i) for i in np.asarray(request.ids)]
        try:
            return [int(i) for i in request.resolve(unlearner.train_).ids]
        except RequestError:
            return []  # forget() raises the same error and the entry is rejected

    def prune(self) -> list[int]:
        """Keep only the current version; delete every older snapshot. Returns their versions.

        Older versions hold the training set as it was, forgotten records included, so
        none is kept (a ledger created with the default ``prune=True`` does this after
        every request). The history (ids and metadata) stays; :meth:`verify` then replays
        only requests after the current version.
        """
        with self._writing():
            stored = self._storage.snapshots()
            if self._version not in {v for v, _ in stored}:
                assert self._unlearner is not None
                self._storage.add_snapshot(
                    self._version, snapshots.save(self._unlearner, self._store), _now()
                )
            dropped = [v for v, _ in stored if v < self._version]
            snapshots.delete(self._store, self._storage.drop_snapshots_before(self._version))
            return dropped

    # -- verification ----------------------------------------------------------------------
    def verify(self) -> VerifyReport:
        """Replay the ledger from its oldest stored version and check every step.

        See :func:`oblivio.ledger.verify.replay` for the checks (``forgotten`` is every id
        an applied request removed). Only requests after the oldest stored version can be
        replayed: under the default pruning that is the current version, so nothing is
        replayed and the report checks that the current snapshot is intact (hash), loads,
        equals the model served and holds no removed record, not how earlier requests
        were applied (the versions they started from were deleted with the records they
        forgot). A ledger created with ``prune=False`` replays every request after its
        oldest stored version (version 0 until :meth:`prune`). Holds the writer lock
        (submits wait) while it runs.
        """
        with self._writing():
            assert self._unlearner is not None
            applied = self._storage.entries(["applied"])
            removed = [i for row in applied if row["kind"] == "remove" for i in row["affected"]]
            rows = self._applied_after(min(v for v, _ in self._storage.snapshots()))
            return replay(
                dict(self._storage.snapshots()),
                [LedgerEntry.from_row(row) for row in rows],
                self._load_snapshot,
                self._unlearner,
                forgotten=removed,
            )

    def close(self) -> None:
        """Close the database connections (the ledger can be opened again)."""
        with self._lock:
            self._storage.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Ledger({str(getattr(self._storage, 'path', ''))!r}, method={self.method!r}, "
            f"version={self._version})"
        )
