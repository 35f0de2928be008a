"""The Open Inference Protocol (KServe V2) REST API, for every model in the store, by name.

Health, server and model metadata, readiness, ``infer`` (JSON or binary tensors, output
selection, the classification extension, a pinned version) and ``train`` (our extension:
/train over tensors). Errors answer ``{"error": "..."}`` (service.errors).
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, FastAPI, Path, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from model import LoadedModel
from model.errors import ModelError

from ..body import read_body
from ..contract import MAX_VERSION, Contract, Limits, TrainRequest
from ..deps import AppState, Authorized, Predictor, State
from ..errors import ApiError, NoModelError
from ..keys import Caller
from ..runtime import Runtime
from ..tensors import decode_request, encode_response
from ..v2 import (
    EXTENSIONS,
    SERVER_NAME,
    TrainTensors,
    infer_outputs,
    model_metadata,
    rows_of,
    train_tensors,
)
from ..v2_schemas import (
    BINARY_CONTENT,
    REQUEST_DOC,
    V2InferResponse,
    V2Live,
    V2ModelMetadata,
    V2ModelReady,
    V2Ready,
    V2ServerMetadata,
    V2TrainResponse,
    v2_error_responses,
)
from .train import apply_update, check_force, count_refusal

__all__ = ["install"]

# Above this many multiply-adds, scoring leaves the event loop for a worker thread.
_INLINE_WORK = 2_000_000
_HEADER = "inference-header-content-length"

ModelName = Annotated[str, Path(description="a model in the store", max_length=64)]
ModelVersion = Annotated[
    int, Path(ge=1, le=MAX_VERSION, description="a stored version of the model")
]


async def _runtime(state: AppState, name: str) -> Runtime:
    """The runtime of model ``name``, loaded on its first request."""
    runtime = state.registry.held(name)
    if runtime is None:
        runtime = await run_in_threadpool(state.registry.get, name)
    return runtime


async def _model(state: AppState, name: str, version: int | None) -> LoadedModel:
    runtime = await _runtime(state, name)
    if runtime.is_cached(version):
        return runtime.model_for(version)
    return await run_in_threadpool(runtime.model_for, version)


def _answer(header: dict[str, Any], outputs: list[Any]) -> Response:
    body, json_length = encode_response(header, outputs)
    if json_length is None:
        return Response(body, media_type="application/json")
    return Response(
        body,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(json_length)},
    )


def _header(loaded: LoadedModel, request_id: str | None) -> dict[str, Any]:
    header: dict[str, Any] = {"model_name": loaded.name, "model_version": str(loaded.version)}
    if request_id is not None:
        header["id"] = request_id
    return header


def install(app: FastAPI, limits: Limits, *, predict_requires_key: bool) -> None:
    """Register the ``/v2`` routes; ``infer`` needs the predict permission when /predict
    does."""
    router = APIRouter(prefix="/v2", tags=["v2"])
    train_contract = Contract(TrainRequest, limits, {})

    @router.get("", response_model=V2ServerMetadata)
    async def server_metadata(request: Request) -> dict[str, Any]:
        """Server metadata: name, version, the protocol extensions supported."""
        return {"name": SERVER_NAME, "version": request.app.version, "extensions": EXTENSIONS}

    @router.get("/health/live", response_model=V2Live)
    async def live() -> dict[str, Any]:
        """The process is up and answering."""
        return {"live": True}

    @router.get("/health/ready", response_model=V2Ready, responses=v2_error_responses(503))
    async def ready(state: State) -> dict[str, Any]:
        """Ready once the default model (the one the native routes serve) is loaded."""
        if state.runtime.current is None:
            raise NoModelError("not ready: no model is loaded yet")
        return {"ready": True}

    metadata_errors = v2_error_responses(400, 404, 500, 503)

    async def metadata(state: AppState, name: str, version: int | None) -> dict[str, Any]:
        loaded = await _model(state, name, version)
        runtime = await _runtime(state, name)
        page = await run_in_threadpool(runtime.page, 1000, None)
        return model_metadata(loaded, [info.meta.version for info in page.versions])

    @router.get("/models/{model_name}", response_model=V2ModelMetadata, responses=metadata_errors)
    async def get_model(state: State, model_name: ModelName) -> dict[str, Any]:
        """A model's input and outputs (names, datatypes, shapes) and stored versions."""
        return await metadata(state, model_name, None)

    @router.get(
        "/models/{model_name}/versions/{model_version}",
        response_model=V2ModelMetadata,
        responses=metadata_errors,
    )
    async def get_model_version(
        state: State, model_name: ModelName, model_version: ModelVersion
    ) -> dict[str, Any]:
        """The metadata of one stored version of a model."""
        return await metadata(state, model_name, model_version)

    @router.get(
        "/models/{model_name}/ready", response_model=V2ModelReady, responses=metadata_errors
    )
    async def model_ready(state: State, model_name: ModelName) -> dict[str, Any]:
        """200 once the model is loaded (it loads on this request if it is not)."""
        loaded = await _model(state, model_name, None)
        return {"name": loaded.name, "ready": True}

    @router.get(
        "/models/{model_name}/versions/{model_version}/ready",
        response_model=V2ModelReady,
        responses=metadata_errors,
    )
    async def model_version_ready(
        state: State, model_name: ModelName, model_version: ModelVersion
    ) -> dict[str, Any]:
        """200 once this version of the model can answer."""
        loaded = await _model(state, model_name, model_version)
        return {"name": loaded.name, "ready": True}

    infer_doc: dict[str, Any] = {
        "dependencies": [Predictor] if predict_requires_key else [],
        "response_model": None,
        "responses": {
            200: {"model": V2InferResponse, "content": BINARY_CONTENT},
            **v2_error_responses(400, 401, 403, 404, 413, 415, 500, 503),
        },
        "openapi_extra": REQUEST_DOC,
    }

    async def infer(request: Request, state: AppState, name: str, version: int | None) -> Response:
        body = await read_body(request)
        decoded = decode_request(body, request.headers.get(_HEADER))
        loaded = await _model(state, name, version)
        X = rows_of(decoded, loaded, limits)
        if X.size * len(loaded.classes) > _INLINE_WORK:
            scores = await run_in_threadpool(Runtime.predict, loaded, X)
        else:
            scores = Runtime.predict(loaded, X)
        state.metrics.rows_predicted.inc(X.shape[0])
        outputs = infer_outputs(decoded, scores, decoded.binary_output)
        return _answer(_header(loaded, decoded.id), outputs)

    @router.post("/models/{model_name}/infer", **infer_doc)
    async def infer_model(request: Request, state: State, model_name: ModelName) -> Response:
        """Class probabilities and labels of the rows of the input tensor."""
        return await infer(request, state, model_name, None)

    @router.post("/models/{model_name}/versions/{model_version}/infer", **infer_doc)
    async def infer_model_version(
        request: Request, state: State, model_name: ModelName, model_version: ModelVersion
    ) -> Response:
        """Inference with one stored version of the model (pinned)."""
        return await infer(request, state, model_name, model_version)

    @router.post(
        "/models/{model_name}/train",
        response_model=None,
        dependencies=[Authorized],
        responses={
            200: {"model": V2TrainResponse},
            **v2_error_responses(400, 401, 403, 404, 409, 413, 415, 429, 500, 503),
        },
        openapi_extra=REQUEST_DOC,
    )
    async def train(request: Request, state: State, model_name: ModelName) -> Response:
        """One durable online update from an input tensor and a label tensor (our extension:
        POST /train's guard, durability and answer fields)."""
        caller: Caller = request.state.caller
        runtime = state.runtime
        tensors: TrainTensors | None = None
        try:
            body = await read_body(request)
            decoded = decode_request(body, request.headers.get(_HEADER))
            runtime = await _runtime(state, model_name)
            loaded = runtime.require()
            tensors = train_tensors(decoded, loaded, limits)
            parsed = train_contract.parse(
                {"instances": [], "labels": tensors.labels, **tensors.parameters}
            )
            check_force(parsed, caller)
            answer = await apply_update(request, state, runtime, loaded, tensors.X, parsed, caller)
        except (ModelError, ApiError) as exc:
            count_refusal(state, runtime, exc)
            if tensors is not None:
                tensors.told_of_tensors(exc)
            raise
        answer = {**_header(loaded, decoded.id), **answer}
        answer["model_version"] = str(answer["version"])
        return Response(orjson.dumps(answer), media_type="application/json")

    app.include_router(router)
