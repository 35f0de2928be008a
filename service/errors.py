"""Every error answer, in one place and one shape.

Body: ``{"error": {"type": "...", "message": "...", "field": "...", "row": 17}}``; ``type`` is
the error's ``code``, ``field`` and ``row`` are present when the error names them, a refused
update adds ``details`` (the figures behind the decision) and a rate-limited request
``retry_after`` (seconds, a number). The tree of
everything that becomes an error answer (status, code)::

    Exception
    ├── model.errors.ModelError              raised by model/; status by class, see STATUS
    │   ├── InvalidInputError (+ subclasses)   422  empty_input, feature_count, non_finite, ...
    │   ├── DivergenceError                    422  diverged
    │   ├── UpdateRejectedError                409  update_rejected (with "details")
    │   ├── NotFittedError                     503  not_fitted
    │   └── StoreError                         500  store_error
    │       ├── VersionNotFoundError           404  version_not_found
    │       ├── ModelChangedError              409  model_changed
    │       ├── ModelExistsError               409  model_exists
    │       ├── ModelNotFoundError             503  model_not_found
    │       ├── StoreBusyError                 503  store_busy
    │       ├── StoreUnavailableError          503  store_unavailable (a database outage)
    │       └── CorruptArtifactError           500  corrupt_artifact
    └── ApiError                             raised by service/; status and code on the class
        ├── BadRequestError                    400  bad_request
        │   ├── InvalidJsonError               400  invalid_json
        │   └── BodyEncodingError              400  invalid_encoding
        ├── UnauthorizedError                  401  unauthorized
        ├── ForbiddenError                     403  forbidden
        ├── RouteNotFoundError                 404  not_found
        ├── MethodNotAllowedError              405  method_not_allowed
        ├── ConflictError                      409  conflict
        ├── BodyTooLargeError                  413  body_too_large
        ├── UnsupportedMediaTypeError          415  unsupported_media_type
        ├── InvalidRequestError                422  invalid_request
        │   └── TooManyRowsError               422  too_many_rows
        ├── TooManyRequestsError               429  rate_limited
        ├── NoModelError                       503  no_model
        └── InternalError                      500  internal_error

On the Open Inference Protocol's routes (``/v2``) the same errors answer in that protocol's
shape, ``{"error": "<message>", "type": ..., "field": ...}``, with 400 for what is 422 here and
404 for an unknown model (:func:`v2_error_response`).

The framework's own errors (an unknown route, a wrong method, path and query validation) are
turned into the ApiError of their status, so they get the same body; anything unexpected is a
logged ``internal_error``. :func:`install_error_handlers` registers the one handler.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from model import errors as model_errors
from model.errors import ModelError

__all__ = [
    "STATUS",
    "ApiError",
    "BadRequestError",
    "BodyEncodingError",
    "BodyTooLargeError",
    "ConflictError",
    "ForbiddenError",
    "InternalError",
    "InvalidJsonError",
    "InvalidRequestError",
    "MethodNotAllowedError",
    "NoModelError",
    "RouteNotFoundError",
    "TooManyRequestsError",
    "TooManyRowsError",
    "UnauthorizedError",
    "UnsupportedMediaTypeError",
    "V2_PREFIX",
    "error_response",
    "error_response_for",
    "install_error_handlers",
    "status_of",
    "v2_error_response",
    "v2_status_of",
]

log = logging.getLogger("service.errors")


class ApiError(Exception):
    """An error the service itself decides on. Subclasses set ``status`` and ``code``."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        row: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message, self.field, self.row, self.headers = message, field, row, headers


class BadRequestError(ApiError):
    status, code = 400, "bad_request"


class InvalidJsonError(BadRequestError):
    code = "invalid_json"


class BodyEncodingError(BadRequestError):
    code = "invalid_encoding"


class UnauthorizedError(ApiError):
    status, code = 401, "unauthorized"


class ForbiddenError(ApiError):
    status, code = 403, "forbidden"


class RouteNotFoundError(ApiError):
    status, code = 404, "not_found"


class MethodNotAllowedError(ApiError):
    status, code = 405, "method_not_allowed"


class ConflictError(ApiError):
    status, code = 409, "conflict"


class BodyTooLargeError(ApiError):
    status, code = 413, "body_too_large"


class UnsupportedMediaTypeError(ApiError):
    status, code = 415, "unsupported_media_type"


class InvalidRequestError(ApiError):
    status, code = 422, "invalid_request"


class TooManyRowsError(InvalidRequestError):
    code = "too_many_rows"


class TooManyRequestsError(ApiError):
    """A key over its rate limit. ``retry_after``: the seconds to wait, given in the body as a
    number (to the millisecond, as the message says it) and in ``Retry-After`` rounded up to
    whole seconds (the header takes no fractions)."""

    status, code = 429, "rate_limited"

    def __init__(self, message: str, *, retry_after: float) -> None:
        self.retry_after = round(retry_after, 3)
        super().__init__(message, headers={"Retry-After": str(math.ceil(retry_after))})


class NoModelError(ApiError):
    """The service has no model to serve yet (an empty store)."""

    status, code = 503, "no_model"


class InternalError(ApiError):
    status, code = 500, "internal_error"


# model/ knows nothing of HTTP: its classes map here. Most specific first: the first class an
# error is an instance of decides.
STATUS: list[tuple[type[ModelError], int]] = [
    (model_errors.InvalidInputError, 422),
    (model_errors.DivergenceError, 422),
    (model_errors.VersionNotFoundError, 404),
    (model_errors.ModelChangedError, 409),
    (model_errors.ModelExistsError, 409),
    (model_errors.UpdateRejectedError, 409),
    (model_errors.ModelNotFoundError, 503),
    (model_errors.NotFittedError, 503),
    (model_errors.StoreBusyError, 503),
    (model_errors.StoreUnavailableError, 503),
    (model_errors.CorruptArtifactError, 500),
    (model_errors.StoreError, 500),
]

# The framework raises HTTPException with a bare status: each becomes the ApiError of its status.
_BY_STATUS: dict[int, type[ApiError]] = {
    cls.status: cls
    for cls in (
        BadRequestError,
        UnauthorizedError,
        ForbiddenError,
        RouteNotFoundError,
        MethodNotAllowedError,
        ConflictError,
        BodyTooLargeError,
        UnsupportedMediaTypeError,
        InvalidRequestError,
        TooManyRequestsError,
    )
}


def status_of(exc: ModelError | ApiError) -> int:
    if isinstance(exc, ApiError):
        return exc.status
    return next((status for cls, status in STATUS if isinstance(exc, cls)), 500)


def _fields(exc: ModelError | ApiError) -> dict[str, Any]:
    """What an error answer says beyond its message: ``field``, ``row``, ``details``,
    ``retry_after`` when the error has them."""
    body: dict[str, Any] = {}
    if exc.field is not None:
        body["field"] = exc.field
    if exc.row is not None:
        body["row"] = exc.row
    if isinstance(exc, model_errors.UpdateRejectedError):
        body["details"] = exc.details
    if isinstance(exc, TooManyRequestsError):
        body["retry_after"] = exc.retry_after
    return body


def _answer(body: dict[str, Any], status: int, exc: ModelError | ApiError) -> Response:
    headers = exc.headers if isinstance(exc, ApiError) else None
    if status == 503:
        headers = {"Retry-After": "1", **(headers or {})}
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def error_response(exc: ModelError | ApiError) -> Response:
    """The one error answer: the body above, ``Retry-After`` on 503s, the error's headers."""
    body = {"type": exc.code, "message": exc.message, **_fields(exc)}
    return _answer({"error": body}, status_of(exc), exc)


V2_PREFIX = "/v2"


def v2_status_of(exc: ModelError | ApiError) -> int:
    """The status of an error on the Open Inference Protocol's routes: the protocol answers a
    client's mistake with 400 (not 422), and an unknown model with 404."""
    if isinstance(exc, model_errors.ModelNotFoundError):
        return 404
    status = status_of(exc)
    return 400 if status == 422 else status


def v2_error_response(exc: ModelError | ApiError) -> Response:
    """The same error on a ``/v2`` route, in the protocol's shape: ``{"error": message}``,
    then the error's ``type`` and the other fields of the native body beside it."""
    body = {"error": exc.message, "type": exc.code, **_fields(exc)}
    return _answer(body, v2_status_of(exc), exc)


def error_response_for(path: str, exc: ModelError | ApiError) -> Response:
    """The error answer for a request to ``path``: the protocol's shape under ``/v2``."""
    if path == V2_PREFIX or path.startswith(V2_PREFIX + "/"):
        return v2_error_response(exc)
    return error_response(exc)


def _from_http_exception(request: Request, exc: StarletteHTTPException) -> ApiError:
    headers = dict(exc.headers) if exc.headers else None
    cls = _BY_STATUS.get(exc.status_code, ApiError)
    if cls is RouteNotFoundError:
        message = f"no route {request.method} {request.url.path}"
    elif cls is MethodNotAllowedError:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    error = cls(message, headers=headers)
    if cls is ApiError:  # a status the service never raises itself: keep it as it came
        error.status, error.code = exc.status_code, "http_error"
    return error


def _from_validation_error(exc: RequestValidationError) -> InvalidRequestError:
    """Path and query parameters (bodies are parsed by service.contract)."""
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    parts = [p for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    field = ".".join(str(p) for p in parts if isinstance(p, str)) or None
    row = next((p for p in parts if isinstance(p, int)), None)
    where = f"{field}: " if field else ""
    return InvalidRequestError(f"{where}{first['msg']}", field=field, row=row)


class _Unavailable:
    """Logs 503s (the store down, no model yet) once per error type and route every
    ``every`` seconds, with how many like it were not logged since: an outage answers every
    request at once, and one line per request would bury the log. Other 5xx are all logged."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], tuple[float, int]] = {}  # when logged, unlogged since

    def log(self, request: Request, exc: ModelError | ApiError) -> None:
        key = (exc.code, request.url.path)
        now = time.monotonic()
        with self._lock:
            when, unlogged = self._last.get(key, (-math.inf, 0))
            if now - when < self.every:
                self._last[key] = (when, unlogged + 1)
                return
            self._last[key] = (now, 0)
        more = f" ({unlogged} more like it in the last {self.every:g} s)" if unlogged else ""
        log.error("%s %s: %s%s", request.method, request.url.path, exc.message, more)


def install_error_handlers(app: FastAPI) -> None:
    unavailable = _Unavailable()

    async def known(request: Request, exc: Exception) -> Response:
        if isinstance(exc, StarletteHTTPException):
            exc = _from_http_exception(request, exc)
        elif isinstance(exc, RequestValidationError):
            exc = _from_validation_error(exc)
        assert isinstance(exc, ModelError | ApiError)  # the classes registered below
        response = error_response_for(request.url.path, exc)
        if response.status_code == 503:
            unavailable.log(request, exc)
        elif response.status_code >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc.message)
        return response

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response_for(
            request.url.path, InternalError("internal server error (see the logs)")
        )

    for cls in (ModelError, ApiError, StarletteHTTPException, RequestValidationError):
        app.add_exception_handler(cls, known)
    app.add_exception_handler(Exception, unexpected)
