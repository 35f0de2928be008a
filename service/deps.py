"""Shared request dependencies: the app's runtime, settings, metrics, and bearer-key auth.

Auth: :data:`Authorized` (the ``train`` permission, and the key's request bucket) is what
guards /train: :func:`guard_train` runs it in the route itself (/train is a raw route, which
runs no dependencies; it declares :data:`Authorized` for its OpenAPI document).
:data:`Admin` guards activation, and :func:`close_route` puts a permission on a raw route
(``/predict`` when ``predict_requires_key`` is set). Each stores the :class:`Caller` on
``request.state.caller``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, Counter
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from model.errors import ModelError

from .config import Settings
from .errors import ApiError, ForbiddenError, UnauthorizedError
from .keys import ANONYMOUS, Caller, Keyring, Permission
from .metrics import Metrics
from .ratelimit import RateLimiter
from .registry import ModelRegistry
from .runtime import Runtime

__all__ = [
    "Access",
    "Admin",
    "AppState",
    "Authorized",
    "Predictor",
    "State",
    "Viewer",
    "app_state",
    "authenticate",
    "close_route",
    "guard_train",
    "take_rows",
]

log = logging.getLogger("service.auth")


@dataclass(frozen=True)
class Access:
    """Who may call what (keys), how fast (limiter), and /train's requests counted by key."""

    keyring: Keyring
    limiter: RateLimiter
    train_requests: Counter
    # (key, outcome) -> its child of train_requests: resolving labels costs more than the
    # increment. Few entries: the configured names, two more, times the error types.
    _counted: dict[tuple[str, str], Counter] = field(
        default_factory=dict, repr=False, compare=False
    )

    @classmethod
    def build(cls, keyring: Keyring, registry: CollectorRegistry) -> Access:
        # Labels stay few: the configured names, "anonymous" (no key configured) and
        # "unauthenticated" (refused before a key was recognised); outcomes are error types.
        counter = Counter(
            "softmax_train_requests_total",
            "/train requests by API key name and outcome (applied, or the error type)",
            ["key", "outcome"],
            registry=registry,
        )
        return cls(keyring, RateLimiter(keyring.limits()), counter)

    def count_train(self, key: str, outcome: str) -> None:
        """One /train request of ``key``'s, ended with ``outcome``."""
        child = self._counted.get((key, outcome))
        if child is None:
            child = self._counted[(key, outcome)] = self.train_requests.labels(key, outcome)
        child.inc()


@dataclass(frozen=True)
class AppState:
    settings: Settings
    runtime: Runtime
    metrics: Metrics
    access: Access
    registry: ModelRegistry  # every model of the store by name (the /v2 routes)


# The dependencies are ``async def`` although they never await: FastAPI runs a plain ``def``
# dependency in the thread pool, a thread hop per request for a few attribute reads.
async def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.softmax
    return state


State = Annotated[AppState, Depends(app_state)]


# Declares the scheme in the OpenAPI document; the answers (401/403) are decided below.
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="api_key",
    description="an API key (SOFTMAX_API_KEY, or a named one of SOFTMAX_API_KEYS or "
    "SOFTMAX_API_KEYS_FILE); none configured means no key is required",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def authenticate(
    keyring: Keyring, credentials: HTTPAuthorizationCredentials | None, permission: Permission
) -> Caller:
    """The caller of ``Authorization: Bearer <key>``, allowed ``permission``; or 401/403.

    401 without a key, and for an unknown key once named keys are configured; 403 for a key
    without the permission. With only the single ``api_key`` a wrong key stays 403, as before.
    """
    if not keyring:
        return ANONYMOUS
    supplied = credentials.credentials.strip() if credentials is not None else ""
    if not supplied:
        raise UnauthorizedError(
            "this route requires an 'Authorization: Bearer <key>' header",
            headers={"WWW-Authenticate": "Bearer"},
        )
    caller = keyring.identify(supplied)
    if caller is None:
        if keyring.legacy_only:
            raise ForbiddenError("the bearer key is not valid")
        raise UnauthorizedError(
            "the bearer key is not valid",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    if not caller.may(permission):
        raise ForbiddenError(
            f"the key {caller.name!r} lacks the {permission!r} permission this route needs",
            headers={
                "WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{permission}"'
            },
        )
    return caller


def _logged(request: HTTPConnection, error: ApiError, caller: Caller | None = None) -> ApiError:
    """Log a refusal with the key's name (never the key), then hand the error back."""
    who = f"key {caller.name!r}" if caller is not None else "caller"
    level = logging.INFO if error.status in (401, 429) else logging.WARNING
    log.log(level, "refused %s %s (%s): %s", who, request.url.path, error.code, error.message)
    return error


async def _require_train(
    request: Request, state: State, credentials: Credentials
) -> AsyncIterator[Caller]:
    """Authenticate, take a request token, then count the request's outcome by key."""
    access = state.access
    name, outcome = "unauthenticated", "internal_error"
    try:
        caller = _authenticated(request, access.keyring, credentials, "train")
        name = caller.name
        _take_request(request, access, caller)
        yield caller  # the route runs here; its errors come back through this yield
        outcome = "applied"
    except (ApiError, ModelError) as exc:
        outcome = exc.code
        raise
    finally:
        access.count_train(name, outcome)


def _take_request(request: HTTPConnection, access: Access, caller: Caller) -> None:
    """One token of the caller's request bucket, or 429 (logged)."""
    try:
        access.limiter.take_request(caller)
    except ApiError as exc:
        raise _logged(request, exc, caller) from None


TrainEndpoint = Callable[[Request, AppState, Caller], Awaitable[Response]]


def guard_train(endpoint: TrainEndpoint) -> Callable[[Request], Awaitable[Response]]:
    """What :data:`Authorized` does, for a :class:`~service.routes.predict.RawRoute` (which
    runs no dependencies): authenticate, take a request token, call ``endpoint`` with the
    caller, count the outcome by key. The route still declares ``dependencies=[Authorized]``,
    for its OpenAPI document only. Spares FastAPI's request handler (dependency resolution,
    a yield dependency's exit stacks, query parsing): with the route on the app's own router,
    about a quarter of the CPU a /train request cost outside the model."""

    async def guarded(request: Request) -> Response:
        state: AppState = request.app.state.softmax
        access = state.access
        credentials = await _bearer(request)  # resolved first, as a dependency of Authorized
        name, outcome = "unauthenticated", "internal_error"
        try:
            caller = _authenticated(request, access.keyring, credentials, "train")
            name = caller.name  # a refusal from here on is counted under the key's name
            _take_request(request, access, caller)
            response = await endpoint(request, state, caller)
            outcome = "applied"
            return response
        except (ApiError, ModelError) as exc:
            outcome = exc.code
            raise
        finally:
            access.count_train(name, outcome)

    guarded.__doc__ = endpoint.__doc__
    return guarded


async def _require_admin(request: Request, state: State, credentials: Credentials) -> Caller:
    return _authenticated(request, state.access.keyring, credentials, "admin")


async def _require_predict(request: Request, state: State, credentials: Credentials) -> Caller:
    return _authenticated(request, state.access.keyring, credentials, "predict")


def _authenticated(
    request: HTTPConnection,
    keyring: Keyring,
    credentials: HTTPAuthorizationCredentials | None,
    permission: Permission,
) -> Caller:
    """:func:`authenticate`, refusals logged, the caller stored on ``request.state.caller``."""
    try:
        caller = authenticate(keyring, credentials, permission)
    except ApiError as exc:
        raise _logged(request, exc) from None
    request.state.caller = caller
    return caller


Authorized = Depends(_require_train)
"""/train: a key with the ``train`` permission, within its request rate."""
Admin = Depends(_require_admin)
"""Activation: a key with the ``admin`` permission."""
Predictor = Depends(_require_predict)
"""Inference routes when ``predict_requires_key`` is set: a key with the ``predict``
permission (or train, admin)."""
Viewer = Depends(_require_predict)
"""Read-only views (the dashboard's data when ``dashboard_requires_key`` is set): any key
(every key may predict)."""


def take_rows(request: Request, n: int) -> None:
    """Take ``n`` rows from the caller's rows bucket (/train, once its body is parsed), or
    429 (logged, nothing taken). Needs the caller on ``request.state.caller``
    (:func:`guard_train` or :data:`Authorized` puts it there)."""
    caller: Caller = request.state.caller
    state: AppState = request.app.state.softmax
    try:
        state.access.limiter.take_rows(caller, n)
    except ApiError as exc:
        raise _logged(request, exc, caller) from None


def close_route(app: FastAPI, path: str, permission: Permission) -> None:
    """Put ``permission`` on a route that skips FastAPI's dependencies (``RawRoute``).

    The check wraps that one route's ASGI app, after routing: other routes pay nothing, and
    nothing at all is installed while the route is open.
    """
    route = next(r for r in app.router.routes if isinstance(r, APIRoute) and r.path == path)
    inner = route.app

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        connection = HTTPConnection(scope)
        state: AppState = connection.app.state.softmax
        credentials = await _bearer(connection)
        _authenticated(connection, state.access.keyring, credentials, permission)
        await inner(scope, receive, send)

    route.app = guarded
