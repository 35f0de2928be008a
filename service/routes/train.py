"""POST /train."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import orjson
from fastapi import FastAPI, Request
from numpy.typing import NDArray
from starlette.responses import Response
from starlette.routing import BaseRoute

from model import LoadedModel
from model.errors import ModelError, UpdateRejectedError

from ..body import parse_request_instances, read_json_object
from ..contract import TRAIN_EXAMPLES, Contract, Limits, TrainRequest
from ..deps import AppState, Authorized, guard_train, take_rows
from ..errors import ApiError, ForbiddenError
from ..keys import Caller
from ..runtime import Runtime
from ..schemas import TrainResponse, error_responses
from .predict import RawRoute

__all__ = ["apply_update", "check_force", "count_refusal", "install"]

T = TypeVar("T")

# Updates block (the store's lock, the group commit, a sync): each waits in a thread of its own.
# A pool of their own, not starlette's run_in_threadpool: anyio's hop adds a checkpoint (one
# more turn of the event loop), a capacity-limiter round and a cancel scope, each request
# (with the update stubbed out, this hop costs ~60 us of CPU less than anyio's per request).
# As many threads as anyio's default limiter (40) allows: concurrent updates are what the
# repository group-commits. Threads start when needed and stay.
_UPDATES = ThreadPoolExecutor(max_workers=40, thread_name_prefix="softmax-train")


async def _in_thread(call: Callable[[], T]) -> T:
    """``call()`` in an update thread, in a copy of this context (as ``run_in_threadpool``
    does). A cancelled request stops waiting; its update goes on, as under anyio."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_UPDATES, contextvars.copy_context().run, call)


def install(app: FastAPI, limits: Limits) -> None:
    """Register ``POST /train`` on the app's router, right behind ``/predict`` if that is
    installed (install this after it, and before any router that is included)."""
    contract = Contract(TrainRequest, limits, TRAIN_EXAMPLES)

    async def train(request: Request, state: AppState, caller: Caller) -> Response:
        """Apply one online SGD update to the active model; answers once it is durable."""
        try:
            data, raw = await read_json_object(request)
            body = contract.parse(data)
            check_force(body, caller)
            loaded = state.runtime.require()
            X = parse_request_instances(body.instances, loaded, limits, raw)
            answer = await apply_update(request, state, state.runtime, loaded, X, body, caller)
        except (ModelError, ApiError) as exc:
            count_refusal(state, state.runtime, exc)
            raise
        return Response(orjson.dumps(answer), media_type="application/json")

    _register(app, guard_train(train), contract)
    _behind_predict(app.router.routes)


def check_force(body: TrainRequest, caller: Caller) -> None:
    """``force`` overrides the guard: only a key with the admin permission may."""
    if body.force and not caller.may("admin"):
        raise ForbiddenError(
            f"force: overriding the guard needs the admin permission, which key "
            f"{caller.name!r} does not have",
            field="force",
        )


async def apply_update(
    request: Request,
    state: AppState,
    runtime: Runtime,
    loaded: LoadedModel,
    X: NDArray[np.float64],
    body: TrainRequest,
    caller: Caller,
) -> dict[str, Any]:
    """Take the rows from the caller's budget, apply the update in an update thread (durable
    when it returns), count it; the answer's fields (/train's, and V2 training's)."""
    take_rows(request, X.shape[0])
    result = await _in_thread(
        functools.partial(
            runtime.update,
            X,
            body.labels,
            learning_rate=body.learning_rate,
            passes=body.passes or 1,
            parsed_with=loaded,
            key=caller.name,
            force=bool(body.force),
        )
    )
    _publish_drift(state, runtime)
    report = result.report
    state.metrics.updates_applied.inc()
    state.metrics.rows_trained.inc(report.n - result.held_out)  # held-out rows: guard set
    return {
        "version": result.model.version,
        "previous_version": result.previous_version,
        "n": report.n,
        "loss_before": report.loss_before,
        "loss_after": report.loss_after,
        "held_out": result.held_out,
        "guard": result.verdict.to_json() if result.verdict is not None else None,
    }


def count_refusal(state: AppState, runtime: Runtime, exc: ModelError | ApiError) -> None:
    """A refused update, counted by error type (and, for the guard, by the signal)."""
    reason = exc.code
    if isinstance(exc, UpdateRejectedError):  # which signal refused it
        reason = f"{exc.code}:{exc.details.get('reason')}"
    state.metrics.updates_rejected.labels(reason).inc()
    if isinstance(exc, UpdateRejectedError):  # judged: the traffic's drift test saw it
        _publish_drift(state, runtime)


def _publish_drift(state: AppState, runtime: Runtime) -> None:
    """The traffic drift gauges describe the default model (the native routes'): an update
    of another model (V2 by name) leaves them as they are."""
    if runtime is state.runtime:
        state.metrics.set_traffic_drift(runtime.traffic_drift())


def _register(
    app: FastAPI,
    endpoint: Callable[[Request], Awaitable[Response]],
    contract: Contract[TrainRequest],
) -> None:
    """``POST /train`` as a raw route, documented from ``contract``."""
    # A RawRoute runs no dependencies: guard_train does what Authorized does, in the route;
    # Authorized is declared for the OpenAPI document (the bearer scheme).
    app.router.add_api_route(
        "/train",
        endpoint,
        methods=["POST"],
        name="train",
        tags=["train"],
        response_model=None,
        dependencies=[Authorized],
        responses={
            200: {"model": TrainResponse},
            **error_responses(400, 401, 403, 409, 413, 415, 422, 429, 500, 503),
        },
        openapi_extra=contract.openapi(),
        route_class_override=RawRoute,
    )


def _behind_predict(routes: list[BaseRoute]) -> None:
    """Move the route just added right behind ``/predict`` (first if there is none)."""
    # Routes match in order. Ahead of the docs routes FastAPI added (5 fewer path matches per
    # request); they are not in the OpenAPI document, so its order of paths stays the same.
    ahead = [i for i, route in enumerate(routes) if getattr(route, "path", None) == "/predict"]
    routes.insert(ahead[0] + 1 if ahead else 0, routes.pop())
