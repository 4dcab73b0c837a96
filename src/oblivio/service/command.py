"""``oblivio serve LEDGER``: run the HTTP service over a ledger.

Example::

    OBLIVIO_TOKEN=$(python -c "import secrets; print(secrets.token_urlsafe(32))") \\
        oblivio serve requests.db --host 0.0.0.0 --port 8000
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from pathlib import Path

__all__ = ["LOOPBACK", "add_arguments", "read_token", "run"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")
MIN_TOKEN_LENGTH = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``oblivio serve``."""
    parser.description = (
        "Serve a ledger over HTTP: POST /v1/requests, GET /v1/requests/{id}, "
        "GET /v1/records/{id}, POST /v1/predict, GET /healthz; docs at /docs. Every /v1 "
        "endpoint needs 'Authorization: Bearer TOKEN' (token from $OBLIVIO_TOKEN or "
        "--token-file). Needs the extra 'serve' (pip install 'oblivio[serve]')."
    )
    parser.add_argument("ledger", help="ledger (SQLite file or PostgreSQL URL)")
    parser.add_argument("--store", help="model store folder (default LEDGER.models)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--token-file", help="file holding the bearer token (else $OBLIVIO_TOKEN)")
    parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve without a token (only allowed on 127.0.0.1)",
    )
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default info)")


def read_token(token_file: str | None, insecure: bool, host: str) -> str | None:
    """The bearer token, or None when ``insecure`` on a loopback host; else ValueError."""
    if token_file is not None:
        path = Path(token_file)
        token = path.read_text().strip()
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            print(f"warning: {path} is readable by other users; chmod 600 it", file=sys.stderr)
    else:
        token = os.environ.get("OBLIVIO_TOKEN", "").strip()
    if token:
        if len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"the bearer token has {len(token)} characters; use at least "
                f"{MIN_TOKEN_LENGTH} (e.g. python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))')"
            )
        return token
    if not insecure:
        raise ValueError(
            "refusing to start without a bearer token: set OBLIVIO_TOKEN or pass --token-file "
            "(or --insecure-no-auth when serving on 127.0.0.1)"
        )
    if host not in LOOPBACK:
        raise ValueError(f"--insecure-no-auth is only allowed on 127.0.0.1, not on {host!r}")
    return None


def run(args: argparse.Namespace) -> int:
    """Open the ledger and serve it until interrupted."""
    token = read_token(args.token_file, args.insecure_no_auth, args.host)
    try:
        import uvicorn
    except ImportError:
        raise ValueError(
            "'oblivio serve' needs FastAPI and uvicorn: pip install 'oblivio[serve]'"
        ) from None
    from oblivio.ledger import Ledger
    from oblivio.service.app import create_app

    ledger = Ledger.open(args.ledger, store=args.store)
    if token is None:
        print("warning: serving WITHOUT authentication on 127.0.0.1", file=sys.stderr)
    uvicorn.run(
        create_app(ledger, token=token), host=args.host, port=args.port, log_level=args.log_level
    )
    return 0
