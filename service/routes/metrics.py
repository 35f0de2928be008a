"""GET /metrics."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ..deps import State
from ..metrics import CONTENT_TYPE_LATEST

__all__ = ["router"]

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
async def metrics(state: State) -> Response:
    """Prometheus text format, aggregated over all worker processes."""
    figures = await run_in_threadpool(state.runtime.prequential)
    if figures is not None:
        state.metrics.set_prequential(*figures)
    state.metrics.set_traffic_drift(state.runtime.traffic_drift())
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
