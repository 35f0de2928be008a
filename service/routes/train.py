"""POST /train."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from model.errors import ModelError
from model.validation import describe_value

from ..body import (
    check_fields,
    may_hold_booleans,
    optional_int,
    optional_number,
    parse_instances,
    read_json_object,
)
from ..deps import AppState, Authorized
from ..errors import ApiError
from ..schemas import (
    TRAIN_EXAMPLE,
    TrainResponse,
    error_responses,
    request_body,
    train_request_model,
)

__all__ = ["build_router"]

_FIELDS = ("instances", "labels", "learning_rate", "passes")


def build_router(max_rows: int, max_learning_rate: float, max_passes: int) -> APIRouter:
    router = APIRouter(tags=["train"])

    @router.post(
        "/train",
        response_model=None,
        dependencies=[Authorized],
        responses={
            200: {"model": TrainResponse},
            **error_responses(400, 401, 403, 409, 413, 422, 500, 503),
        },
        openapi_extra=request_body(
            train_request_model(max_rows, max_learning_rate, max_passes),
            {"one minibatch": TRAIN_EXAMPLE},
        ),
    )
    async def train(request: Request) -> Response:
        """Apply one online SGD update to the active model; answers once it is durable."""
        state: AppState = request.app.state.softmax
        try:
            data, raw = await read_json_object(request)
            check_fields(data, _FIELDS, ("instances", "labels"))
            learning_rate = optional_number(data, "learning_rate", 0.0, max_learning_rate)
            passes = optional_int(data, "passes", 1, max_passes) or 1
            labels = data["labels"]
            if not isinstance(labels, list):
                raise ApiError(
                    422,
                    "invalid_request",
                    f"labels: expected a list, got {describe_value(labels)}",
                    field="labels",
                )
            model = state.runtime.require()
            X = parse_instances(
                data["instances"],
                model,
                max_rows,
                may_hold_booleans=may_hold_booleans(raw),
            )
            result = await run_in_threadpool(
                state.runtime.train,
                X,
                labels,
                learning_rate=learning_rate,
                passes=passes,
                parsed_with=model,
            )
        except (ModelError, ApiError) as exc:
            reason = exc.code if isinstance(exc, ModelError) else exc.type
            state.metrics.updates_rejected.labels(reason).inc()
            raise
        report = result.report
        state.metrics.updates_applied.inc()
        state.metrics.rows_trained.inc(report.n)
        body = {
            "version": result.model.version,
            "previous_version": result.previous_version,
            "n": report.n,
            "loss_before": report.loss_before,
            "loss_after": report.loss_after,
        }
        return Response(orjson.dumps(body), media_type="application/json")

    return router
