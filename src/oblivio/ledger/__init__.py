"""A durable record of unlearning requests and the model versions they produced.

>>> ledger = ob.Ledger.create("requests.db", unlearner)          # doctest: +SKIP
>>> ledger.submit(ob.Remove(ids=[3, 17]), request_id="ticket-42")  # doctest: +SKIP
>>> ledger.status(3).forgotten                                    # doctest: +SKIP
True
"""

from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use (PEP 562): ``oblivio ledger --help`` must not pay for torch.
_NAMES = {
    "Ledger": "oblivio.ledger.ledger",
    "RequestIdConflictError": "oblivio.ledger.ledger",
    "LedgerEntry": "oblivio.ledger.records",
    "RecordStatus": "oblivio.ledger.records",
    "VerifyReport": "oblivio.ledger.records",
    "SnapshotError": "oblivio.ledger.snapshots",
    "LedgerBusyError": "oblivio.ledger.storage",
    "SQLiteStorage": "oblivio.ledger.storage",
    "Storage": "oblivio.ledger.storage",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'oblivio.ledger' has no attribute {name!r}")
    value = getattr(importlib.import_module(_NAMES[name]), name)
    globals()[name] = value
    return value
