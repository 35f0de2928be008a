"""POST /predict."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ..body import (
    check_fields,
    may_hold_booleans,
    optional_int,
    parse_instances,
    read_json_object,
)
from ..deps import AppState
from ..schemas import (
    MAX_VERSION,
    PREDICT_EXAMPLE,
    PREDICT_OBJECT_EXAMPLE,
    PredictResponse,
    error_responses,
    predict_request_model,
    request_body,
)

__all__ = ["build_router"]

# Above this many multiply-adds, scoring leaves the event loop for a worker thread.
_INLINE_WORK = 2_000_000
_FIELDS = ("instances", "version")


def build_router(max_rows: int) -> APIRouter:
    router = APIRouter(tags=["predict"])

    @router.post(
        "/predict",
        response_model=None,
        responses={
            200: {"model": PredictResponse},
            **error_responses(400, 404, 413, 422, 500, 503),
        },
        openapi_extra=request_body(
            predict_request_model(max_rows),
            {"rows as lists": PREDICT_EXAMPLE, "rows as objects": PREDICT_OBJECT_EXAMPLE},
        ),
    )
    async def predict(request: Request) -> Response:
        """Class probabilities and predicted labels for one or many rows."""
        state: AppState = request.app.state.softmax
        data, raw = await read_json_object(request)
        check_fields(data, _FIELDS, ("instances",))
        version = optional_int(data, "version", 1, MAX_VERSION)
        runtime = state.runtime
        if runtime.is_cached(version):
            model = runtime.model_for(version)
        else:
            model = await run_in_threadpool(runtime.model_for, version)
        X = parse_instances(
            data["instances"],
            model,
            max_rows,
            may_hold_booleans=may_hold_booleans(raw),
        )
        if X.size * model.estimator.classes_.shape[0] > _INLINE_WORK:
            prediction = await run_in_threadpool(runtime.predict, model, X)
        else:
            prediction = runtime.predict(model, X)
        state.metrics.rows_predicted.inc(X.shape[0])
        body = {
            "model": model.name,
            "version": model.version,
            "classes": model.estimator.classes_.tolist(),
            "probabilities": prediction.probabilities,
            "predictions": prediction.predictions().tolist(),
        }
        return Response(
            orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
            media_type="application/json",
        )

    return router
