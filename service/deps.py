"""Shared request dependencies: the app's runtime, settings, metrics, and bearer-key auth."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .config import Settings
from .errors import ForbiddenError, UnauthorizedError
from .metrics import Metrics
from .runtime import Runtime

__all__ = ["AppState", "Authorized", "State", "app_state", "require_api_key"]


@dataclass(frozen=True)
class AppState:
    settings: Settings
    runtime: Runtime
    metrics: Metrics


# Both dependencies are ``async def`` although they never await: FastAPI runs a plain ``def``
# dependency in the thread pool, a thread hop per request for a few attribute reads.
async def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.softmax
    return state


State = Annotated[AppState, Depends(app_state)]


# Declares the scheme in the OpenAPI document; the answers (401/403) are decided below.
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="api_key",
    description="the service's API key (SOFTMAX_API_KEY); unset means no key is required",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def require_api_key(state: State, credentials: Credentials) -> None:
    """401 without ``Authorization: Bearer <key>``, 403 with a wrong key (constant-time)."""
    secret = state.settings.api_key
    expected = secret.get_secret_value() if secret is not None else ""
    if not expected:
        return
    supplied = credentials.credentials.strip() if credentials is not None else ""
    if not supplied:
        raise UnauthorizedError(
            "this route requires an 'Authorization: Bearer <key>' header",
            headers={"WWW-Authenticate": "Bearer"},
        )
    # Compare digests: equal lengths, so not even the key's length leaks through timing.
    supplied_digest = hashlib.sha256(supplied.encode()).digest()
    if not hmac.compare_digest(supplied_digest, hashlib.sha256(expected.encode()).digest()):
        raise ForbiddenError("the bearer key is not valid")


Authorized = Depends(require_api_key)
