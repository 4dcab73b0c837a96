"""A durable record of unlearning requests and the model versions they produced.

>>> ledger = ob.Ledger.create("requests.db", unlearner)          # doctest: +SKIP
>>> ledger.submit(ob.Remove(ids=[3, 17]), request_id="ticket-42")  # doctest: +SKIP
>>> ledger.status(3).forgotten                                    # doctest: +SKIP
True
"""

from oblivio.ledger.ledger import Ledger, RequestIdConflictError
from oblivio.ledger.records import LedgerEntry, RecordStatus, VerifyReport
from oblivio.ledger.snapshots import SnapshotError
from oblivio.ledger.storage import LedgerBusyError, SQLiteStorage, Storage

__all__ = [
    "Ledger",
    "LedgerBusyError",
    "LedgerEntry",
    "RecordStatus",
    "RequestIdConflictError",
    "SQLiteStorage",
    "SnapshotError",
    "Storage",
    "VerifyReport",
]
