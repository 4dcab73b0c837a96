"""The HTTP API over a ledger (FastAPI).

Endpoints: ``GET /healthz`` (no token), ``POST /v1/requests``, ``GET /v1/requests/{id}``,
``GET /v1/records/{id}``, ``POST /v1/predict``; OpenAPI docs at ``/docs``. Every ``/v1``
endpoint needs the bearer token: record status reveals membership in the training set, so
reads are protected like writes. Requests are applied one at a time, in the order they
arrive, by a single writer thread.
"""

# No "from __future__ import annotations": FastAPI reads the closures' annotations at runtime.

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from oblivio.data import Relabel, Remove, ReplaceFeatures, RequestError
from oblivio.data import Request as UnlearningRequest
from oblivio.ledger import Ledger, RequestIdConflictError

__all__ = ["MAX_BODY_BYTES", "MAX_PREDICT_ROWS", "create_app"]

log = logging.getLogger("oblivio.service")

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_PREDICT_ROWS = 10_000


class RelabelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[int] = Field(description="record ids to relabel")
    labels: list[int] = Field(description="one new label (class index) per id")


class ReplaceFeaturesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    features: list[int | str] = Field(min_length=1, description="column indices or names")
    value: float = Field(0.0, description="value written into those columns")
    ids: list[int] | None = Field(
        None, description="records to edit (default: every record where a feature is non-zero)"
    )


class DeletionRequest(BaseModel):
    """One request: exactly one of ``remove``, ``relabel``, ``replace_features``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"request_id": "ticket-42", "remove": [3, 17]}]},
    )
    request_id: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9._:\-]+$",
        description="idempotency key: a request id seen before is answered, not re-applied",
    )
    remove: list[int] | None = Field(None, description="record ids to forget")
    relabel: RelabelBody | None = None
    replace_features: ReplaceFeaturesBody | None = None

    def to_request(self) -> UnlearningRequest:
        given = [name for name in ("remove", "relabel", "replace_features") if getattr(self, name)]
        if len(given) != 1:
            raise RequestError(
                "give exactly one of remove, relabel, replace_features "
                f"(got {', '.join(given) or 'none'})"
            )
        if self.remove:
            return Remove(ids=self.remove)
        if self.relabel:
            return Relabel(ids=self.relabel.ids, labels=self.relabel.labels)
        body = self.replace_features
        assert body is not None
        return ReplaceFeatures(features=body.features, value=body.value, ids=body.ids)


class PredictBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: list[list[float]] = Field(
        min_length=1, max_length=MAX_PREDICT_ROWS, description="feature rows (flattened)"
    )


def create_app(ledger: Ledger, *, token: str | None) -> FastAPI:
    """The FastAPI application serving ``ledger``.

    Parameters
    ----------
    ledger : Ledger
        The ledger to serve (the app owns writes to it while running).
    token : str or None
        Bearer token every ``/v1`` endpoint requires (compared in constant time). ``None``
        disables authentication: only for a service bound to 127.0.0.1.
    """
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="oblivio-writer")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        writer.shutdown(wait=True)  # finish the request in flight before exiting

    app = FastAPI(
        title="oblivio deletion service",
        summary="Durable, idempotent deletion requests against a deployed model.",
        lifespan=lifespan,
    )
    bearer = HTTPBearer(auto_error=False)
    expected = None if token is None else token.encode()

    def authorize(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if expected is None:
            return
        given = b"" if credentials is None else credentials.credentials.encode()
        if not hmac.compare_digest(given, expected):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing or wrong bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    secured = [Depends(authorize)]

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Any:
        # Bodies are read whole: refuse big ones (and unsized streams) before reading them.
        length = request.headers.get("content-length")
        if request.method == "POST" and length is None:
            return JSONResponse({"detail": "Content-Length required"}, status_code=411)
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse(
                {"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413
            )
        return await call_next(request)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        """Liveness: the method and the current model version."""
        return {"status": "ok", "method": ledger.method, "version": ledger.version}

    @app.post("/v1/requests", dependencies=secured)
    async def submit(body: DeletionRequest) -> dict[str, Any]:
        """Apply a request once (idempotent by ``request_id``); returns its ledger entry.

        400: invalid request (recorded as rejected, nothing changed); 409: the request id
        was used for a different request.
        """
        try:
            request = body.to_request()
        except RequestError as error:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from None
        loop = asyncio.get_running_loop()
        try:
            entry = await loop.run_in_executor(writer, ledger.submit, request, body.request_id)
        except RequestIdConflictError as error:
            raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from None
        except RequestError as error:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from None
        return entry.to_dict()

    @app.get("/v1/requests/{request_id}", dependencies=secured)
    def get_request(request_id: str) -> dict[str, Any]:
        """The ledger entry of ``request_id`` (404 if never seen)."""
        entry = ledger.entry(request_id)
        if entry is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no request {request_id!r}")
        return entry.to_dict()

    @app.get("/v1/records/{record_id}", dependencies=secured)
    def get_record(record_id: int) -> dict[str, Any]:
        """Whether a record is present, forgotten, edited or unknown, and by which request."""
        return ledger.status(record_id).to_dict()

    @app.post("/v1/predict", dependencies=secured)
    def predict(body: PredictBody) -> dict[str, Any]:
        """Class probabilities and labels of the current model version."""
        try:
            version, proba = ledger.predict_proba(body.rows)
        except ValueError as error:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from None
        return {
            "version": version,
            "labels": [int(k) for k in proba.argmax(axis=1)],
            "probabilities": proba.tolist(),
        }

    return app
