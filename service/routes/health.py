"""GET /health/live, GET /health/ready."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ..deps import State
from ..errors import NoModelError
from ..schemas import HealthResponse, ReadyResponse, error_responses

__all__ = ["router"]

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", response_model=HealthResponse)
async def live() -> dict[str, Any]:
    """The process is up and answering."""
    return {"status": "live"}


@router.get(
    "/ready",
    response_model=ReadyResponse,
    response_model_exclude_none=True,
    responses=error_responses(503),
)
async def ready(state: State) -> Any:
    """Ready only when a model is loaded (else 503 saying why: no model yet, or the store not
    reachable yet); "degraded" (still 200: /predict serves the model in memory) while the
    store cannot be reached, saying why."""
    loaded = state.runtime.current
    if loaded is None:  # saying why: no model yet, or the store not reachable yet
        why = state.runtime.problem
        raise NoModelError("not ready: no model is loaded yet" + (f": {why}" if why else ""))
    problem = state.runtime.store_problem
    if problem is not None:
        return {
            "status": "degraded",
            "model": loaded.name,
            "version": loaded.version,
            "store": f"unavailable: {problem}",
        }
    return {"status": "ready", "model": loaded.name, "version": loaded.version}
