"""GET /models, GET /models/{version}, POST /models/{version}/activate."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool

from ..deps import Authorized, State
from ..schemas import MAX_VERSION, ActivateResponse, ModelList, VersionDetail, error_responses

__all__ = ["router"]

router = APIRouter(prefix="/models", tags=["models"])

VersionPath = Annotated[int, Path(ge=1, le=MAX_VERSION, description="a stored version number")]


@router.get("", response_model=ModelList, responses=error_responses(422, 500, 503))
async def list_versions(
    state: State,
    limit: Annotated[int, Query(ge=1, le=1000, description="versions per page")] = 50,
    before: Annotated[
        int | None, Query(ge=1, le=MAX_VERSION, description="only versions older than this")
    ] = None,
) -> dict[str, Any]:
    """The served model's versions, newest first, one page at a time."""
    return await run_in_threadpool(state.runtime.list_versions, limit, before)


@router.get(
    "/{version}", response_model=VersionDetail, responses=error_responses(404, 422, 500, 503)
)
async def get_version(state: State, version: VersionPath) -> dict[str, Any]:
    """One version's metadata: lineage, classes, features, training settings, metrics."""
    return await run_in_threadpool(state.runtime.version_detail, version)


@router.post(
    "/{version}/activate",
    response_model=ActivateResponse,
    dependencies=[Authorized],
    responses=error_responses(401, 403, 404, 422, 500, 503),
)
async def activate(state: State, version: VersionPath) -> dict[str, Any]:
    """Make a stored version active (rollback or promotion); every process follows."""
    loaded = await run_in_threadpool(state.runtime.activate, version)
    return {"model": loaded.name, "active": loaded.version}
