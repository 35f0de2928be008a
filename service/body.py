"""Request bodies: the size limit (before parsing) and fast, strict JSON to NumPy conversion.

``/predict`` is the hot path, so bodies are parsed with orjson and the rows go straight into a
NumPy array; :mod:`service.contract` declares the fields around them. Strictness is kept: a
boolean, string or null is never taken for a number.

A body is read as UTF-8 JSON whatever its ``Content-Type`` says (``curl -d`` sends
``application/x-www-form-urlencoded``; scripts that send ``text/plain`` keep working); a
compressed body (``Content-Encoding`` other than ``identity``) is refused with 415.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

import numpy as np
import orjson
from numpy.typing import NDArray
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model import LoadedModel
from model.errors import (
    EmptyInputError,
    FeatureCountError,
    NonFiniteError,
    NotANumberError,
    UnknownFeatureError,
)
from model.validation import check_matrix, describe_value

from .contract import Limits
from .errors import (
    BodyEncodingError,
    BodyTooLargeError,
    InvalidJsonError,
    InvalidRequestError,
    TooManyRowsError,
    UnsupportedMediaTypeError,
    error_response_for,
)

__all__ = [
    "BodyLimitMiddleware",
    "may_hold_booleans",
    "parse_instances",
    "read_body",
    "read_json_object",
]


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Answer 413 for bodies over ``limit`` bytes: at once for a declared Content-Length,
    and as soon as a chunked body crosses the limit."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _reject(self, scope: Scope) -> Any:
        return error_response_for(
            scope.get("path", ""),
            BodyTooLargeError(
                f"request body exceeds the limit of {self.limit} bytes (max_body_bytes)"
            ),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.limit:
                    await self._reject(scope)(scope, receive, send)
                    return
                if declared >= 0:
                    # The server delivers no more than the declared length: nothing to count.
                    await self.app(scope, receive, send)
                    return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(scope)(scope, receive, send)


async def read_body(request: Request) -> bytes:
    """The raw body; 415 for a compressed one."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMediaTypeError(
            f"Content-Encoding {encoding!r} is not supported: send the body uncompressed"
        )
    return await request.body()


async def read_json_object(request: Request) -> tuple[dict[str, Any], bytes]:
    """The body as a JSON object, and its raw bytes."""
    body = await read_body(request)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if exc.msg.startswith("number is infinity"):
            raise NonFiniteError(
                f"request body: expected finite numbers, got one beyond the float64 range "
                f"at line {exc.lineno}, column {exc.colno}"
            ) from None
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise BodyEncodingError(
                f"request body: expected UTF-8 encoded JSON, got a byte that is not UTF-8 at "
                f"offset {bad.start} (a UTF-16 or compressed body?)"
            ) from None
        raise InvalidJsonError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequestError(f"request body: expected a JSON object, got {_json_kind(data)}")
    if body.count(b":") != _key_count(data):
        _refuse_duplicate_keys(body)
    return data, body


def _key_count(data: dict[str, Any]) -> int:
    """Keys of the object and of objects directly inside its arrays (the rows)."""
    count = len(data)
    for value in data.values():
        if isinstance(value, list):
            count += sum(len(item) for item in value if isinstance(item, dict))
    return count


def _refuse_duplicate_keys(body: bytes) -> None:
    """Exact check, run only when the quick colon count does not match the keys parsed (a
    duplicate key, a colon inside a string, or deeper objects): JSON parsers keep the last
    of duplicate keys, which would silently drop data."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in items:
            if key in seen:
                raise InvalidRequestError(f"request body: duplicate key {key!r}", field=key)
            seen.add(key)
        return dict(items)

    json.loads(body, object_pairs_hook=pairs)


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    return "a string" if isinstance(value, str) else "null"


def may_hold_booleans(raw: bytes) -> bool:
    """Whether a body may contain ``true``/``false`` literals (then rows are parsed cell by
    cell). The first test is a cheap necessary condition: both literals contain a 'u' or an
    'f', which no JSON number or field name of ours does."""
    return (b"u" in raw or b"f" in raw) and (b"true" in raw or b"false" in raw)


def parse_instances(
    value: Any,
    loaded: LoadedModel,
    max_rows: int,
    *,
    may_hold_booleans: bool = True,
    refuse_unknown_categories: bool = False,
) -> NDArray[np.float64]:
    """JSON ``instances`` -> validated float64 ``(n, d)`` for ``loaded``.

    Rows are lists of ``d`` numbers, or objects keyed by the model's feature names; for a model
    with a feature encoding (categorical features, imputation), lists or objects of its raw
    features' values, encoded here (``refuse_unknown_categories``: 422 for a category unseen
    in training instead of all zeros). ``may_hold_booleans=False`` (the raw body contains no
    ``true``/``false``) allows the fast conversion; anything odd falls back to the precise
    per-cell checks.
    """
    n_features = loaded.n_features
    if not isinstance(value, list):
        raise InvalidRequestError(
            f"instances: expected a list of rows, got {describe_value(value)}", field="instances"
        )
    if not value:
        raise EmptyInputError("instances: expected at least one row, got none", field="instances")
    if len(value) > max_rows:
        raise TooManyRowsError(
            f"instances: expected at most {max_rows} rows (max_rows), got {len(value)}",
            field="instances",
        )
    if loaded.encoder is not None:
        return _encoded(value, loaded, refuse_unknown_categories)
    # Huge finite values overflow check_matrix's quick sum; it then checks cell by cell.
    with np.errstate(over="ignore", invalid="ignore"):
        if isinstance(value[0], dict):
            return check_matrix(_rows_from_objects(value, loaded.feature_names), n_features)
        if not may_hold_booleans:
            try:
                arr = np.array(value)
            except ValueError:  # ragged
                arr = None
            if arr is not None and arr.dtype.kind in "fi" and arr.ndim == 2:
                return check_matrix(arr, n_features)
        for row, item in enumerate(value):
            if isinstance(item, dict):  # say what it is, not what it holds
                raise NotANumberError(
                    f"instances: expected each row to be a list of numbers like row 0, got an "
                    f"object at row {row}",
                    field="instances",
                    row=row,
                )
            if isinstance(item, list) and len(item) != n_features:
                _refuse_nested(item, row)  # a 3-D array is not a feature count problem
                raise FeatureCountError(
                    f"instances: expected {n_features} features, got {len(item)} (row {row})",
                    field="instances",
                    row=row,
                )
        return check_matrix(value, n_features)


def parse_request_instances(
    instances: Any, loaded: LoadedModel, limits: Limits, raw: bytes
) -> NDArray[np.float64]:
    """:func:`parse_instances` as the routes call it: the request's limits, and the fast
    conversion when the raw body holds no boolean."""
    return parse_instances(
        instances,
        loaded,
        limits.max_rows,
        may_hold_booleans=may_hold_booleans(raw),
        refuse_unknown_categories=limits.refuse_unknown_categories,
    )


def _encoded(value: list[Any], loaded: LoadedModel, refuse_unknown: bool) -> NDArray[np.float64]:
    """Rows of raw feature values (a model with a feature encoding), encoded and checked."""
    encoder = loaded.encoder
    assert encoder is not None
    rows = _rows_from_objects(value, encoder.names) if isinstance(value[0], dict) else _lists(value)
    encoded = encoder.encode_rows(rows, refuse_unknown=refuse_unknown)
    with np.errstate(over="ignore", invalid="ignore"):
        return check_matrix(encoded, loaded.n_features)


def _refuse_nested(item: list[Any], row: int) -> None:
    """A row holding a list where a number belongs: said as check_matrix says it."""
    for column, cell in enumerate(item):
        if isinstance(cell, list):
            shown = str(cell)
            raise NotANumberError(
                f"instances: expected a number at row {row}, column {column}, got "
                f"{shown if len(shown) <= 60 else shown[:57] + '...'}",
                field="instances",
                row=row,
            )


def _lists(rows: list[Any]) -> list[list[Any]]:
    for row, item in enumerate(rows):
        if not isinstance(item, list):
            _refuse_row_shape("a list", item, row)
    return rows


def _refuse_row_shape(shape: str, item: Any, row: int) -> NoReturn:
    """Rows must all have row 0's shape (``shape``: "a list" or "an object")."""
    raise InvalidRequestError(
        f"instances: expected every row to be {shape} like row 0, "
        f"got {describe_value(item)} at row {row}",
        field="instances",
        row=row,
    )


def _rows_from_objects(rows: list[Any], names: tuple[str, ...] | None) -> list[list[Any]]:
    if names is None:
        raise UnknownFeatureError(
            "instances: this model has no feature names; send rows as lists of numbers",
            field="instances",
            row=0,
        )
    position = {name: i for i, name in enumerate(names)}
    out: list[list[Any]] = []
    for row, item in enumerate(rows):
        if not isinstance(item, dict):
            _refuse_row_shape("an object", item, row)
        unknown = [key for key in item if key not in position]
        if unknown:
            raise UnknownFeatureError(
                f"instances: unknown feature {unknown[0]!r} at row {row} "
                f"(the model's features: {', '.join(names[:8])}"
                f"{', ...' if len(names) > 8 else ''})",
                field="instances",
                row=row,
            )
        if len(item) != len(names):
            missing = next(name for name in names if name not in item)
            raise UnknownFeatureError(
                f"instances: missing feature {missing!r} at row {row}",
                field="instances",
                row=row,
            )
        out.append([item[name] for name in names])
    return out
