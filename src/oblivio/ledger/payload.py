"""Requests as JSON payloads (ids and metadata only) and back.

The ledger stores what it needs to replay a request: record ids, new labels, feature
columns and a fill value. It never stores record features, so a :class:`Replace` request
(which carries new feature rows) is refused.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from oblivio.data import Relabel, Remove, Replace, ReplaceFeatures, Request, RequestError

__all__ = ["KINDS", "fingerprint", "from_payload", "to_payload"]

KINDS = ("remove", "relabel", "replace-features")


def _ints(values: Any) -> list[int]:
    return [int(v) for v in np.asarray(values).ravel()]


def to_payload(request: Request) -> dict[str, Any]:
    """The JSON form of ``request`` (validated by the request's own constructor)."""
    if isinstance(request, Remove):
        return {"kind": "remove", "ids": _ints(request.ids)}
    if isinstance(request, Relabel):
        return {"kind": "relabel", "ids": _ints(request.ids), "labels": _ints(request.labels)}
    if isinstance(request, ReplaceFeatures):
        return {
            "kind": "replace-features",
            "features": [f if isinstance(f, str) else int(f) for f in request.features],
            "value": float(request.value),
            "ids": None if request.ids is None else _ints(request.ids),
        }
    if isinstance(request, Replace):
        raise RequestError(
            "the ledger does not accept Replace requests: it stores record ids and request "
            "metadata, never record features (use Remove, Relabel or ReplaceFeatures)"
        )
    raise TypeError(
        f"submit() takes Remove, Relabel or ReplaceFeatures, got {type(request).__name__}"
    )


def from_payload(payload: dict[str, Any]) -> Request:
    """Inverse of :func:`to_payload`; bad payloads raise :class:`RequestError`."""
    kind = payload.get("kind")
    if kind == "remove":
        return Remove(ids=payload["ids"])
    if kind == "relabel":
        return Relabel(ids=payload["ids"], labels=payload["labels"])
    if kind == "replace-features":
        return ReplaceFeatures(
            features=payload["features"], value=payload.get("value", 0.0), ids=payload.get("ids")
        )
    raise RequestError(f"unknown request kind {kind!r}; known: {', '.join(KINDS)}")


def fingerprint(payload: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``payload`` (detects a reused request id)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
