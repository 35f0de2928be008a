"""GET /models, GET /models/{version}, POST /models/{version}/activate."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool

from model import VersionInfo
from model.encoding import describe_raw_features

from ..contract import MAX_VERSION
from ..deps import Admin, State
from ..keys import Caller
from ..schemas import ActivateResponse, ModelList, VersionDetail, error_responses

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
    page = await run_in_threadpool(state.runtime.page, limit, before)
    return {
        "model": page.name,
        "active": page.active,
        "versions": [_summary(info) for info in page.versions],
        "next_before": page.next_before,
    }


@router.get(
    "/{version}", response_model=VersionDetail, responses=error_responses(404, 422, 500, 503)
)
async def get_version(state: State, version: VersionPath) -> dict[str, Any]:
    """One version's metadata: lineage, classes, features (raw_features: what rows carry),
    training settings, metrics."""
    detail = await run_in_threadpool(state.runtime.detail, version)
    snapshot = detail.snapshot
    return {
        **_summary(detail.info),
        "model": detail.info.meta.model,
        "n_features": snapshot.n_features,
        "classes": snapshot.classes,
        "feature_names": snapshot.feature_names,
        "raw_features": describe_raw_features(
            snapshot.encoder, snapshot.feature_names, snapshot.n_features
        ),
        "params": snapshot.params,
        "training": snapshot.training,
        "fingerprint": snapshot.fingerprint,
        "guard": detail.info.meta.guard,
        "drift": detail.info.meta.drift,
        "guard_history": detail.info.meta.guard_history,
    }


@router.post(
    "/{version}/activate",
    response_model=ActivateResponse,
    responses=error_responses(401, 403, 404, 422, 500, 503),
)
async def activate(
    state: State, version: VersionPath, caller: Annotated[Caller, Admin]
) -> dict[str, Any]:
    """Make a stored version active (rollback or promotion); every process follows."""
    loaded = await run_in_threadpool(state.runtime.activate, version, caller.name)
    return {"model": loaded.name, "active": loaded.version}


def _summary(info: VersionInfo) -> dict[str, Any]:
    """A version as ``GET /models`` lists it: an online version's metrics are its update's
    prequential figures, an offline one's its test metrics."""
    meta = info.meta
    metrics = meta["online"] if meta.online is not None else meta.metrics
    return {
        "version": meta.version,
        "created_at": meta.created_at,
        "parent": meta.parent,
        "source": meta.source,
        "kind": meta.kind,
        "active": info.active,
        "kept": info.kept,
        "metrics": metrics,
        "key": meta.key,
        "verdict": meta.verdict,
    }
