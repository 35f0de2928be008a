"""GET /models, POST /models, GET /models/{version}, POST /models/{version}/activate."""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from model import VersionInfo
from model.encoding import describe_raw_features

from ..body import read_json_object
from ..contract import MAX_VERSION
from ..deps import Admin, State
from ..keys import Caller
from ..schemas import (
    ActivateResponse,
    CreateModelRequest,
    CreateModelResponse,
    ModelList,
    VersionDetail,
    error_responses,
)

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


_CREATE_SCHEMA = CreateModelRequest.model_json_schema()


@router.post(
    "",
    response_model=CreateModelResponse,
    status_code=201,
    dependencies=[Admin],
    responses=error_responses(400, 401, 403, 409, 413, 415, 422, 500, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _CREATE_SCHEMA}},
        }
    },
)
async def create_model(state: State, request: Request) -> dict[str, Any]:
    """Create a model with zero weights (version 1), learned online from the first /train."""
    # Read as every body is (UTF-8 JSON whatever the Content-Type says: curl -d sends a form
    # type), then checked against the declared schema.
    data, _ = await read_json_object(request)
    try:
        body = CreateModelRequest.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    caller = getattr(request.state, "caller", None)
    loaded, served = await run_in_threadpool(
        functools.partial(
            state.runtime.create,
            body.name,
            body.feature_names,
            list(body.classes),
            params=body.params,
            standardize=body.standardize,
            allow_new_classes=body.allow_new_classes,
            key=caller.name if caller is not None else None,
        )
    )
    estimator = loaded.estimator
    return {
        "model": loaded.name,
        "version": loaded.version,
        "classes": loaded.classes,
        "feature_names": list(loaded.feature_names or ()),
        "allow_new_classes": estimator.allow_new_classes,
        "standardize": "running" if body.standardize else "none",
        "params": loaded.meta.params,
        "served": served,
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
        "allow_new_classes": snapshot.allow_new_classes,
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
        "classes_added": meta.classes_added,
    }
