"""Every error answer, in one place and one shape.

Body: ``{"error": {"type": "...", "message": "...", "field": "...", "row": 17}}``.
``model/`` raises its own exception classes; :data:`STATUS` maps each to an HTTP status.
The framework's own errors (404, 405 with ``Allow``, validation) get the same body.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from model.errors import (
    CorruptArtifactError,
    DivergenceError,
    InvalidInputError,
    ModelChangedError,
    ModelError,
    ModelNotFoundError,
    NotFittedError,
    StoreBusyError,
    StoreError,
    VersionNotFoundError,
)

from .runtime import NoModelError

__all__ = ["STATUS", "ApiError", "error_response", "install_error_handlers"]

log = logging.getLogger("service.errors")

# Most specific first: the first class an error is an instance of decides.
STATUS: list[tuple[type[ModelError], int]] = [
    (InvalidInputError, 422),
    (DivergenceError, 422),
    (VersionNotFoundError, 404),
    (ModelChangedError, 409),
    (NoModelError, 503),
    (ModelNotFoundError, 503),
    (NotFittedError, 503),
    (StoreBusyError, 503),
    (CorruptArtifactError, 500),
    (StoreError, 500),
]

_HTTP_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
}


class ApiError(Exception):
    """An error the service itself decides on (auth, body limits, malformed JSON)."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        field: str | None = None,
        row: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.type, self.message = status, type_, message
        self.field, self.row, self.headers = field, row, headers


def error_response(
    status: int,
    type_: str,
    message: str,
    *,
    field: str | None = None,
    row: int | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {"type": type_, "message": message}
    if field is not None:
        body["field"] = field
    if row is not None:
        body["row"] = row
    return Response(
        orjson.dumps({"error": body}),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def status_of(exc: ModelError) -> int:
    return next((status for cls, status in STATUS if isinstance(exc, cls)), 500)


def _field_from_location(loc: tuple[Any, ...]) -> tuple[str | None, int | None]:
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    field = ".".join(str(p) for p in parts if isinstance(p, str)) or None
    row = next((p for p in parts if isinstance(p, int)), None)
    return field, row


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ModelError)
    async def model_error(request: Request, exc: ModelError) -> Response:
        status = status_of(exc)
        if status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc.message)
        headers = {"Retry-After": "1"} if status == 503 else None
        return error_response(
            status, exc.code, exc.message, field=exc.field, row=exc.row, headers=headers
        )

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return error_response(
            exc.status, exc.type, exc.message, field=exc.field, row=exc.row, headers=exc.headers
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        type_ = _HTTP_TYPES.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.status_code, type_, message, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        field, row = _field_from_location(tuple(first.get("loc", ())))
        where = f"{field}: " if field else ""
        message = f"{where}{first['msg']}"
        return error_response(422, "invalid_request", message, field=field, row=row)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal server error (see the logs)")
