"""POST /predict."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import request_response

from ..body import parse_request_instances, read_json_object
from ..contract import PREDICT_EXAMPLES, Contract, Limits, PredictRequest
from ..deps import AppState
from ..schemas import PredictResponse, error_responses

__all__ = ["RawRoute", "install"]

# Above this many multiply-adds, scoring leaves the event loop for a worker thread.
_INLINE_WORK = 2_000_000


class RawRoute(APIRoute):
    """An API route documented like any other, whose endpoint takes the Request and returns the
    Response itself: FastAPI's per-request dependency resolution and query parsing (about a
    fifth of a 1-row prediction, bench/bench_serving.py) are skipped, the contract is not."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        # Starlette's own request/response wrapper: FastAPI's adds per-request work (an exit
        # stack, its body limit) for features this endpoint does not use.
        self.app = request_response(endpoint)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return handler


def install(app: FastAPI, limits: Limits) -> None:
    """Register ``POST /predict`` first among the app's routes (it is the hot path)."""
    contract = Contract(PredictRequest, limits, PREDICT_EXAMPLES)

    async def predict(request: Request) -> Response:
        """Class probabilities and predicted labels for one or many rows."""
        state: AppState = request.app.state.softmax
        data, raw = await read_json_object(request)
        body = contract.parse(data)
        runtime = state.runtime
        if runtime.is_cached(body.version):
            loaded = runtime.model_for(body.version)
        else:
            loaded = await run_in_threadpool(runtime.model_for, body.version)
        X = parse_request_instances(body.instances, loaded, limits, raw)
        if X.size * len(loaded.classes) > _INLINE_WORK:
            scores = await run_in_threadpool(runtime.predict, loaded, X)
        else:
            scores = runtime.predict(loaded, X)
        state.metrics.rows_predicted.inc(X.shape[0])
        answer = {
            "model": loaded.name,
            "version": loaded.version,
            "classes": loaded.classes,
            "probabilities": scores.probabilities,
            "predictions": scores.predictions().tolist(),
        }
        return Response(
            orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY),
            media_type="application/json",
        )

    app.router.add_api_route(
        "/predict",
        predict,
        methods=["POST"],
        tags=["predict"],
        response_model=None,
        responses={
            200: {"model": PredictResponse},
            **error_responses(400, 404, 413, 415, 422, 500, 503),
        },
        openapi_extra=contract.openapi(),
        route_class_override=RawRoute,
    )
    # Routes match in order: the hot one goes first.
    app.router.routes.insert(0, app.router.routes.pop())
