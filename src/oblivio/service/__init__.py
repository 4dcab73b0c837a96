"""An HTTP service over a ledger (FastAPI + uvicorn, the optional extra ``serve``).

``create_app(ledger, token=...)`` builds the application; ``oblivio serve LEDGER`` runs it.
FastAPI is imported only when the application is built.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def create_app(ledger: Any, *, token: str | None) -> Any:
    """The FastAPI application serving ``ledger`` (see :func:`oblivio.service.app.create_app`)."""
    from oblivio.service.app import create_app as build

    return build(ledger, token=token)
