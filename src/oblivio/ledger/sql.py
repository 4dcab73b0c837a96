"""Ledger rows in PostgreSQL through SQLAlchemy (optional extra ``postgres``).

For a team that outgrows one SQLite file: ``Ledger.create("postgresql+psycopg://...",
unlearner, store="/shared/models")``. Tables are prefixed ``oblivio_``; the writer lock is a
PostgreSQL advisory lock, so writers on several hosts are serialised (the model store must
then be a folder all of them see).
"""

from __future__ import annotations

import contextlib
import time
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

from oblivio.ledger.storage import ENTRY_FIELDS, LedgerBusyError, Storage, _decode, _encode

__all__ = ["SQLAlchemyStorage"]

_SCHEMA_VERSION = "1"


class SQLAlchemyStorage(Storage):
    """:class:`Storage` on a PostgreSQL database given by a SQLAlchemy URL."""

    def __init__(self, url: str, *, create: bool = False) -> None:
        try:
            import sqlalchemy as sa
        except ImportError:
            raise ValueError(
                "a database URL needs SQLAlchemy and psycopg: pip install 'oblivio[postgres]'"
            ) from None
        self.url = url
        self._sa = sa
        self.engine = sa.create_engine(url, pool_pre_ping=True)
        if self.engine.dialect.name != "postgresql":
            raise ValueError(
                f"database URLs must be PostgreSQL (got {self.engine.dialect.name!r}); "
                "for SQLite pass a file path"
            )
        md = sa.MetaData()
        col, text = sa.Column, sa.Text
        self.meta_table = sa.Table(
            "oblivio_meta",
            md,
            col("key", sa.String(200), primary_key=True),
            col("value", text, nullable=False),
        )
        self.entries_table = sa.Table(
            "oblivio_entries",
            md,
            col("seq", sa.BigInteger, sa.Identity(), primary_key=True),
            col("request_id", sa.String(200), nullable=False, unique=True),
            col("status", sa.String(20), nullable=False, index=True),
            col("kind", sa.String(40), nullable=False),
            col("request", text, nullable=False),
            col("fingerprint", sa.String(64), nullable=False),
            col("affected", text),
            col("version", sa.BigInteger, unique=True),
            col("method", sa.String(100)),
            col("exact", sa.Boolean),
            col("retrained", sa.Boolean),
            col("seconds", sa.Float),
            col("certificate", text),
            col("diagnostics", text),
            col("error", text),
            col("submitted_at", sa.String(40), nullable=False),
            col("finished_at", sa.String(40)),
        )
        self.snapshots_table = sa.Table(
            "oblivio_snapshots",
            md,
            col("version", sa.BigInteger, primary_key=True),
            col("hash", sa.String(64), nullable=False),
            col("created_at", sa.String(40)),
        )
        self.records_table = sa.Table(
            "oblivio_records",
            md,
            col("record_id", sa.BigInteger, primary_key=True),
            col("state", sa.String(20), nullable=False),
            col("seq", sa.BigInteger),
        )
        self._metadata = md
        exists = sa.inspect(self.engine).has_table("oblivio_meta")
        if create and exists:
            raise FileExistsError(f"a ledger already exists in {self._safe_url()}")
        if not create and not exists:
            raise FileNotFoundError(f"no ledger in {self._safe_url()}")
        # advisory lock key: one per database, stable across processes
        self._lock_key = zlib.crc32(b"oblivio-ledger-writer")

    def _safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @contextlib.contextmanager
    def _begin(self, durable: bool = True) -> Iterator[Any]:
        with self.engine.begin() as connection:
            if not durable:  # see SQLiteStorage._connect: a pending row need not be durable
                connection.execute(self._sa.text("SET LOCAL synchronous_commit = off"))
            yield connection

    def initialize(
        self, meta: dict[str, str], record_ids: Sequence[int], snapshot: str, now: str
    ) -> None:
        with self._begin() as connection:  # DDL is transactional in PostgreSQL
            self._metadata.create_all(connection)
            rows = {**meta, "schema": _SCHEMA_VERSION, "head": "0"}
            connection.execute(
                self.meta_table.insert(), [{"key": k, "value": v} for k, v in rows.items()]
            )
            if len(record_ids):
                connection.execute(
                    self.records_table.insert(),
                    [{"record_id": int(i), "state": "present", "seq": None} for i in record_ids],
                )
            connection.execute(
                self.snapshots_table.insert(),
                {"version": 0, "hash": snapshot, "created_at": now},
            )

    def meta(self) -> dict[str, str]:
        with self.engine.connect() as connection:
            rows = connection.execute(self._sa.select(self.meta_table)).all()
        meta = {key: value for key, value in rows}
        if meta.get("schema") != _SCHEMA_VERSION:
            raise ValueError(f"unsupported or incomplete ledger (schema {meta.get('schema')!r})")
        return meta

    def _one(self, where: Any) -> dict[str, Any] | None:
        with self.engine.connect() as connection:
            row = connection.execute(self._sa.select(self.entries_table).where(where)).first()
        return None if row is None else _decode(row._mapping)

    def entry(self, request_id: str) -> dict[str, Any] | None:
        return self._one(self.entries_table.c.request_id == request_id)

    def entry_at(self, seq: int) -> dict[str, Any] | None:
        return self._one(self.entries_table.c.seq == seq)

    def entries(self, statuses: Sequence[str] | None = None) -> list[dict[str, Any]]:
        query = self._sa.select(self.entries_table).order_by(self.entries_table.c.seq)
        if statuses is not None:
            query = query.where(self.entries_table.c.status.in_(list(statuses)))
        with self.engine.connect() as connection:
            return [_decode(row._mapping) for row in connection.execute(query)]

    def begin(self, row: dict[str, Any]) -> None:
        table = self.entries_table
        row = _encode({**row, "status": "pending"})
        with self._begin(durable=False) as connection:
            old = connection.execute(
                self._sa.select(table.c.status).where(table.c.request_id == row["request_id"])
            ).first()
            if old is not None:
                if old[0] not in ("interrupted", "failed"):
                    raise RuntimeError(f"request {row['request_id']!r} is {old[0]}")
                connection.execute(table.delete().where(table.c.request_id == row["request_id"]))
            connection.execute(
                table.insert(), {k: row[k] for k in ENTRY_FIELDS if k in row and k != "seq"}
            )

    def _update(self, connection: Any, request_id: str, fields: dict[str, Any]) -> None:
        table = self.entries_table
        result = connection.execute(
            table.update()
            .where(table.c.request_id == request_id, table.c.status == "pending")
            .values(**_encode(fields))
        )
        if result.rowcount != 1:
            raise RuntimeError(f"request {request_id!r} is not pending")

    def _close(self, request_id: str, fields: dict[str, Any]) -> None:
        with self._begin() as connection:
            self._update(connection, request_id, fields)

    def commit(
        self,
        request_id: str,
        fields: dict[str, Any],
        snapshot: str | None,
        record_state: str,
        drop_older: bool,
    ) -> list[str]:
        sa, meta, records = self._sa, self.meta_table, self.records_table
        version = int(fields["version"])
        with self._begin() as connection:
            head = int(
                connection.execute(
                    sa.select(meta.c.value).where(meta.c.key == "head").with_for_update()
                ).scalar_one()
            )
            if version != head + 1:
                raise RuntimeError(f"ledger moved on: head is {head}, commit of {version}")
            seq = connection.execute(
                sa.select(self.entries_table.c.seq).where(
                    self.entries_table.c.request_id == request_id
                )
            ).scalar_one()
            self._update(connection, request_id, {**fields, "status": "applied"})
            connection.execute(meta.update().where(meta.c.key == "head").values(value=str(version)))
            if fields["affected"]:
                connection.execute(
                    records.update()
                    .where(records.c.record_id == sa.bindparam("rid"))
                    .values(state=record_state, seq=seq),
                    [{"rid": int(i)} for i in fields["affected"]],
                )
            if snapshot is not None:
                connection.execute(
                    self.snapshots_table.insert(),
                    {"version": version, "hash": snapshot, "created_at": fields["finished_at"]},
                )
            return self._drop_before(connection, version) if drop_older else []

    def _drop_before(self, connection: Any, version: int) -> list[str]:
        table = self.snapshots_table
        old = {
            r[0]
            for r in connection.execute(
                self._sa.select(table.c.hash).where(table.c.version < version)
            )
        }
        connection.execute(table.delete().where(table.c.version < version))
        kept = {r[0] for r in connection.execute(self._sa.select(table.c.hash))}
        return sorted(old - kept)

    def snapshots(self) -> list[tuple[int, str]]:
        table = self.snapshots_table
        with self.engine.connect() as connection:
            rows = connection.execute(
                self._sa.select(table.c.version, table.c.hash).order_by(table.c.version)
            ).all()
        return [(int(v), str(h)) for v, h in rows]

    def add_snapshot(self, version: int, snapshot: str, now: str) -> None:
        table = self.snapshots_table
        with self._begin() as connection:
            connection.execute(table.delete().where(table.c.version == version))
            connection.execute(
                table.insert(), {"version": version, "hash": snapshot, "created_at": now}
            )

    def drop_snapshots_before(self, version: int) -> list[str]:
        with self._begin() as connection:
            return self._drop_before(connection, version)

    def record(self, record_id: int) -> tuple[str, int | None] | None:
        table = self.records_table
        with self.engine.connect() as connection:
            row = connection.execute(
                self._sa.select(table.c.state, table.c.seq).where(
                    table.c.record_id == int(record_id)
                )
            ).first()
        return None if row is None else (str(row[0]), row[1])

    @contextlib.contextmanager
    def writer_lock(self, timeout: float) -> Iterator[None]:
        sa = self._sa
        with self.engine.connect() as connection:
            deadline = time.monotonic() + timeout
            while not connection.execute(
                sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": self._lock_key}
            ).scalar():
                connection.rollback()
                if time.monotonic() > deadline:
                    raise LedgerBusyError(
                        f"another writer held the ledger lock for more than {timeout:g} s"
                    )
                time.sleep(0.01)
            connection.commit()  # session-level lock: outlives this transaction
            try:
                yield
            finally:
                connection.execute(
                    sa.text("SELECT pg_advisory_unlock(:key)"), {"key": self._lock_key}
                )
                connection.commit()

    def close(self) -> None:
        self.engine.dispose()
