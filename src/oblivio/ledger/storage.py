"""Where a ledger keeps its rows: a small storage interface and its SQLite implementation.

The ledger logic (:mod:`oblivio.ledger.ledger`) talks only to :class:`Storage`, so another
database (e.g. PostgreSQL through SQLAlchemy) plugs in by implementing these methods with
the same transactional meaning. Only :class:`SQLiteStorage` exists today.

Rows hold record ids and request metadata only, never record features.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["LedgerBusyError", "SQLiteStorage", "Storage", "ENTRY_FIELDS"]

_SCHEMA_VERSION = "1"

#: Columns of an entry row, in order (JSON columns are decoded by the storage).
ENTRY_FIELDS = (
    "seq",
    "request_id",
    "status",
    "kind",
    "request",
    "fingerprint",
    "affected",
    "version",
    "method",
    "exact",
    "retrained",
    "seconds",
    "certificate",
    "diagnostics",
    "error",
    "submitted_at",
    "finished_at",
)
_JSON_FIELDS = ("request", "affected", "certificate", "diagnostics")

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    kind TEXT NOT NULL,
    request TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    affected TEXT,
    version INTEGER UNIQUE,
    method TEXT,
    exact INTEGER,
    retrained INTEGER,
    seconds REAL,
    certificate TEXT,
    diagnostics TEXT,
    error TEXT,
    submitted_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX entries_status ON entries (status);
CREATE TABLE snapshots (version INTEGER PRIMARY KEY, hash TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE records (record_id INTEGER PRIMARY KEY, state TEXT NOT NULL, seq INTEGER);
"""


class LedgerBusyError(TimeoutError):
    """Another process held the ledger's writer lock for longer than the timeout."""


class Storage(ABC):
    """Rows of one ledger: metadata, entries, model snapshots and record states.

    Every method is one transaction. :meth:`writer_lock` serialises writers across
    processes for a whole submit (forget + save + commit), so at most one request is in
    flight per ledger and an entry found ``pending`` while holding the lock belongs to a
    writer that died.
    """

    @abstractmethod
    def initialize(
        self, meta: dict[str, str], record_ids: Sequence[int], snapshot: str, now: str
    ) -> None:
        """Create the tables: ``meta``, every record ``present``, snapshot of version 0."""

    @abstractmethod
    def meta(self) -> dict[str, str]:
        """Key/value metadata (``head`` is the current version)."""

    @abstractmethod
    def entry(self, request_id: str) -> dict[str, Any] | None:
        """The entry row of ``request_id``, or None."""

    @abstractmethod
    def entry_at(self, seq: int) -> dict[str, Any] | None:
        """The entry row with arrival number ``seq``, or None."""

    @abstractmethod
    def entries(self, statuses: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Entry rows in arrival order (``seq``), optionally only some statuses."""

    @abstractmethod
    def begin(self, row: dict[str, Any]) -> None:
        """Insert ``row`` as ``pending`` (or reuse the row of an interrupted attempt)."""

    def finish(self, request_id: str, fields: dict[str, Any]) -> None:
        """Close a pending entry as ``rejected``/``failed``/``interrupted`` (no version)."""
        if fields.get("status") not in ("rejected", "failed", "interrupted"):
            raise ValueError(f"finish() closes entries without a version, not {fields!r}")
        self._close(request_id, fields)

    @abstractmethod
    def _close(self, request_id: str, fields: dict[str, Any]) -> None:
        """Write ``fields`` to the pending entry ``request_id`` in one transaction."""

    @abstractmethod
    def commit(
        self,
        request_id: str,
        fields: dict[str, Any],
        snapshot: str | None,
        record_state: str,
        drop_older: bool,
    ) -> list[str]:
        """Apply a pending entry in one transaction.

        Sets the entry ``applied`` with ``fields`` (including ``version``, which must be
        ``head + 1``), moves ``head``, records the snapshot hash of the new version (if
        any), sets the affected records to ``record_state`` and, with ``drop_older``, drops
        every older snapshot row. Returns the hashes no remaining snapshot row references.
        """

    @abstractmethod
    def snapshots(self) -> list[tuple[int, str]]:
        """(version, hash) of the stored model versions, oldest first."""

    @abstractmethod
    def add_snapshot(self, version: int, snapshot: str, now: str) -> None:
        """Record a snapshot of an already committed version."""

    @abstractmethod
    def drop_snapshots_before(self, version: int) -> list[str]:
        """Drop snapshot rows older than ``version``; return now unreferenced hashes."""

    @abstractmethod
    def record(self, record_id: int) -> tuple[str, int | None] | None:
        """(state, seq of the last entry that touched it) or None for an unknown id."""

    @abstractmethod
    def writer_lock(self, timeout: float) -> contextlib.AbstractContextManager[None]:
        """Exclusive writer lock across processes; raises :class:`LedgerBusyError` on timeout."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""


def _encode(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for key in _JSON_FIELDS:
        if key in out and out[key] is not None:
            out[key] = json.dumps(out[key], sort_keys=True)
    return out


def _decode(row: sqlite3.Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    out = {key: row[key] for key in row.keys()}  # noqa: SIM118 - sqlite3.Row is not a dict
    for key in _JSON_FIELDS:
        if out.get(key) is not None:
            out[key] = json.loads(out[key])
    for key in ("exact", "retrained"):
        if out.get(key) is not None:
            out[key] = bool(out[key])
    return out


class SQLiteStorage(Storage):
    """One SQLite file in WAL mode (``synchronous=FULL``: a commit survives power loss).

    The writer lock is an ``flock`` on ``<file>-lock`` beside the database (POSIX).
    Each thread has its own connection, so threads may read while a writer works.
    """

    def __init__(self, path: str | os.PathLike, *, create: bool = False) -> None:
        self.path = Path(path)
        if create:
            if self.path.exists():
                raise FileExistsError(f"{self.path} already exists; open it with Ledger.open")
        elif not self.path.is_file():
            raise FileNotFoundError(f"no ledger database at {self.path}")
        self._lock_path = self.path.with_name(self.path.name + "-lock")
        self._local = threading.local()  # one connection per thread, reused
        self._open: list[sqlite3.Connection] = []

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA journal_mode=WAL")
            self._local.connection = connection
            self._open.append(connection)
        return connection

    @contextlib.contextmanager
    def _connect(self, write: bool = False, durable: bool = True) -> Iterator[sqlite3.Connection]:
        connection = self._connection()
        if not write:
            yield connection
            return
        # FULL syncs the WAL at commit (survives power loss). A pending row need not be
        # durable: losing it loses only an unacknowledged request, and orphan snapshots
        # are found without it, so its commit skips the sync (NORMAL).
        connection.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def initialize(
        self, meta: dict[str, str], record_ids: Sequence[int], snapshot: str, now: str
    ) -> None:
        with self._connect() as connection:
            connection.executescript(_SCHEMA)
        with self._connect(write=True) as connection:
            rows = {**meta, "schema": _SCHEMA_VERSION, "head": "0"}
            connection.executemany("INSERT INTO meta VALUES (?, ?)", sorted(rows.items()))
            connection.executemany(
                "INSERT INTO records VALUES (?, 'present', NULL)",
                ((int(i),) for i in record_ids),
            )
            connection.execute("INSERT INTO snapshots VALUES (0, ?, ?)", (snapshot, now))

    def meta(self) -> dict[str, str]:
        try:
            with self._connect() as connection:
                rows = connection.execute("SELECT key, value FROM meta").fetchall()
        except sqlite3.DatabaseError as error:
            raise ValueError(f"{self.path} is not an oblivio ledger ({error})") from None
        meta = dict(rows)
        if meta.get("schema") != _SCHEMA_VERSION:
            raise ValueError(
                f"{self.path}: unsupported or incomplete ledger (schema {meta.get('schema')!r})"
            )
        return meta

    def entry(self, request_id: str) -> dict[str, Any] | None:
        with self._connect() as connection:
            row = connection.execute(
                "SELECT * FROM entries WHERE request_id = ?", (request_id,)
            ).fetchone()
        return _decode(row)

    def entry_at(self, seq: int) -> dict[str, Any] | None:
        with self._connect() as connection:
            row = connection.execute("SELECT * FROM entries WHERE seq = ?", (seq,)).fetchone()
        return _decode(row)

    def entries(self, statuses: Sequence[str] | None = None) -> list[dict[str, Any]]:
        query, args = "SELECT * FROM entries", ()
        if statuses is not None:
            query += f" WHERE status IN ({','.join('?' * len(statuses))})"
            args = tuple(statuses)
        with self._connect() as connection:
            rows = connection.execute(query + " ORDER BY seq", args).fetchall()
        return [_decode(row) for row in rows]

    def begin(self, row: dict[str, Any]) -> None:
        row = _encode({**row, "status": "pending"})
        with self._connect(write=True, durable=False) as connection:
            old = connection.execute(
                "SELECT status FROM entries WHERE request_id = ?", (row["request_id"],)
            ).fetchone()
            if old is not None:
                if old["status"] not in ("interrupted", "failed"):
                    raise RuntimeError(f"request {row['request_id']!r} is {old['status']}")
                connection.execute("DELETE FROM entries WHERE request_id = ?", (row["request_id"],))
            columns = [key for key in ENTRY_FIELDS if key in row and key != "seq"]
            connection.execute(
                f"INSERT INTO entries ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' * len(columns))})",
                [row[key] for key in columns],
            )

    def _update(
        self, connection: sqlite3.Connection, request_id: str, fields: dict[str, Any]
    ) -> None:
        fields = _encode(fields)
        assignments = ", ".join(f"{key} = ?" for key in fields)
        cursor = connection.execute(
            f"UPDATE entries SET {assignments} WHERE request_id = ? AND status = 'pending'",
            [*fields.values(), request_id],
        )
        if cursor.rowcount != 1:
            raise RuntimeError(f"request {request_id!r} is not pending")

    def _close(self, request_id: str, fields: dict[str, Any]) -> None:
        with self._connect(write=True) as connection:
            self._update(connection, request_id, fields)

    def commit(
        self,
        request_id: str,
        fields: dict[str, Any],
        snapshot: str | None,
        record_state: str,
        drop_older: bool,
    ) -> list[str]:
        version = int(fields["version"])
        with self._connect(write=True) as connection:
            head = int(connection.execute("SELECT value FROM meta WHERE key='head'").fetchone()[0])
            if version != head + 1:
                raise RuntimeError(f"ledger moved on: head is {head}, commit of {version}")
            seq = connection.execute(
                "SELECT seq FROM entries WHERE request_id = ?", (request_id,)
            ).fetchone()[0]
            self._update(connection, request_id, {**fields, "status": "applied"})
            connection.execute("UPDATE meta SET value = ? WHERE key = 'head'", (str(version),))
            connection.executemany(
                "UPDATE records SET state = ?, seq = ? WHERE record_id = ?",
                ((record_state, seq, int(i)) for i in fields["affected"]),
            )
            if snapshot is not None:
                connection.execute(
                    "INSERT INTO snapshots VALUES (?, ?, ?)",
                    (version, snapshot, fields["finished_at"]),
                )
            return self._drop_before(connection, version) if drop_older else []

    @staticmethod
    def _drop_before(connection: sqlite3.Connection, version: int) -> list[str]:
        old = {
            row[0]
            for row in connection.execute(
                "SELECT hash FROM snapshots WHERE version < ?", (version,)
            )
        }
        connection.execute("DELETE FROM snapshots WHERE version < ?", (version,))
        kept = {row[0] for row in connection.execute("SELECT hash FROM snapshots")}
        return sorted(old - kept)

    def snapshots(self) -> list[tuple[int, str]]:
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT version, hash FROM snapshots ORDER BY version"
            ).fetchall()
        return [(int(v), str(h)) for v, h in rows]

    def add_snapshot(self, version: int, snapshot: str, now: str) -> None:
        with self._connect(write=True) as connection:
            connection.execute(
                "INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?)", (version, snapshot, now)
            )

    def drop_snapshots_before(self, version: int) -> list[str]:
        with self._connect(write=True) as connection:
            return self._drop_before(connection, version)

    def record(self, record_id: int) -> tuple[str, int | None] | None:
        with self._connect() as connection:
            row = connection.execute(
                "SELECT state, seq FROM records WHERE record_id = ?", (int(record_id),)
            ).fetchone()
        return None if row is None else (str(row[0]), row[1])

    @contextlib.contextmanager
    def writer_lock(self, timeout: float) -> Iterator[None]:
        import fcntl

        handle = open(self._lock_path, "a+")  # noqa: SIM115 - held for the whole block
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LedgerBusyError(
                            f"another process held the writer lock {self._lock_path} "
                            f"for more than {timeout:g} s"
                        ) from None
                    time.sleep(0.005)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            handle.close()

    def close(self) -> None:
        """Close every connection this object opened."""
        while self._open:
            self._open.pop().close()
        self._local = threading.local()
