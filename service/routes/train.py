"""POST /train."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from model.errors import ModelError, UpdateRejectedError

from ..body import may_hold_booleans, parse_instances, read_json_object
from ..contract import TRAIN_EXAMPLES, Contract, Limits, TrainRequest
from ..deps import AppState, Authorized, take_rows
from ..errors import ApiError, ForbiddenError
from ..keys import Caller
from ..schemas import TrainResponse, error_responses

__all__ = ["build_router"]


def build_router(limits: Limits) -> APIRouter:
    router = APIRouter(tags=["train"])
    contract = Contract(TrainRequest, limits, TRAIN_EXAMPLES)

    @router.post(
        "/train",
        response_model=None,
        dependencies=[Authorized],
        responses={
            200: {"model": TrainResponse},
            **error_responses(400, 401, 403, 409, 413, 415, 422, 429, 500, 503),
        },
        openapi_extra=contract.openapi(),
    )
    async def train(request: Request) -> Response:
        """Apply one online SGD update to the active model; answers once it is durable."""
        state: AppState = request.app.state.softmax
        try:
            data, raw = await read_json_object(request)
            body = contract.parse(data)
            caller: Caller = request.state.caller  # set by Authorized
            if body.force and not caller.may("admin"):
                raise ForbiddenError(
                    f"force: overriding the guard needs the admin permission, which key "
                    f"{caller.name!r} does not have",
                    field="force",
                )
            loaded = state.runtime.require()
            X = parse_instances(
                body.instances, loaded, limits.max_rows, may_hold_booleans=may_hold_booleans(raw)
            )
            take_rows(request, X.shape[0])
            result = await run_in_threadpool(
                state.runtime.update,
                X,
                body.labels,
                learning_rate=body.learning_rate,
                passes=body.passes or 1,
                parsed_with=loaded,
                key=caller.name,
                force=bool(body.force),
            )
        except (ModelError, ApiError) as exc:
            reason = exc.code
            if isinstance(exc, UpdateRejectedError):  # which signal refused it
                reason = f"{exc.code}:{exc.details.get('reason')}"
            state.metrics.updates_rejected.labels(reason).inc()
            raise
        report = result.report
        state.metrics.updates_applied.inc()
        state.metrics.rows_trained.inc(report.n - result.held_out)  # held-out rows: guard set
        answer = {
            "version": result.model.version,
            "previous_version": result.previous_version,
            "n": report.n,
            "loss_before": report.loss_before,
            "loss_after": report.loss_after,
            "held_out": result.held_out,
            "guard": result.verdict.to_json() if result.verdict is not None else None,
        }
        return Response(orjson.dumps(answer), media_type="application/json")

    return router
