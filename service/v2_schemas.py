"""The Open Inference Protocol's bodies, as pydantic models: what the OpenAPI document shows
for ``/v2`` and where :mod:`service.tensors` takes each object's field names from."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BINARY_CONTENT",
    "REQUEST_DOC",
    "V2_ERROR_TEXT",
    "V2ErrorResponse",
    "V2InferRequest",
    "V2InferResponse",
    "V2Live",
    "V2ModelMetadata",
    "V2ModelReady",
    "V2Ready",
    "V2RequestInput",
    "V2RequestOutput",
    "V2ServerMetadata",
    "V2TrainResponse",
    "v2_error_responses",
]


class V2RequestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="input (rows) or, for training, label")
    shape: list[int] = Field(description="input: [n, n_features]; label: [n] or [n, 1]")
    datatype: str = Field(
        description="input: FP64, FP32 or an integer type; label: BYTES (labels as text; for "
        'integer classes the integer in decimal, "7") or an integer type (class indices, '
        "0..n_classes-1)"
    )
    parameters: dict[str, Any] | None = Field(
        None, description="binary_data_size: the tensor's bytes after the JSON (binary data)"
    )
    data: list[Any] | None = Field(
        None, description="the elements, flat or nested, row major (absent for binary data)"
    )


class V2RequestOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="probabilities or label")
    parameters: dict[str, Any] | None = Field(
        None,
        description="binary_data: true for binary data; classification: k, the top k "
        'classes of each row as "score:index:label" (BYTES [n, min(k, n_classes)])',
    )


class V2InferRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "id": "42",
                "inputs": [
                    {
                        "name": "input",
                        "shape": [1, 4],
                        "datatype": "FP64",
                        "data": [5.1, 3.5, 1.4, 0.2],
                    }
                ],
                "outputs": [{"name": "probabilities"}, {"name": "label"}],
            }
        },
    )

    id: str | None = Field(None, description="echoed in the answer")
    parameters: dict[str, Any] | None = Field(
        None,
        description="binary_data_output: all outputs as binary data; for training: "
        "learning_rate, passes, force (as POST /train's fields)",
    )
    inputs: list[V2RequestInput] = Field(min_length=1)
    outputs: list[V2RequestOutput] | None = Field(None, description="default: every output")


class V2ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class V2InferResponse(BaseModel):
    model_name: str
    model_version: str = Field(description="the version that answered")
    id: str | None = None
    outputs: list[V2ResponseOutput]


class V2TrainResponse(BaseModel):
    model_name: str
    model_version: str = Field(description="the new, durable, active version")
    id: str | None = None
    version: int
    previous_version: int
    n: int
    loss_before: float
    loss_after: float
    held_out: int
    guard: dict[str, Any] | None = None


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class V2Live(BaseModel):
    live: bool


class V2Ready(BaseModel):
    ready: bool


class V2ModelReady(BaseModel):
    name: str
    ready: bool


class V2Tensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str] = Field(description="the stored versions (any may be pinned)")
    platform: str
    inputs: list[V2Tensor]
    outputs: list[V2Tensor]
    parameters: dict[str, Any] = Field(description="version, classes, feature_names")


class V2ErrorResponse(BaseModel):
    error: str = Field(description="what was expected and what came")
    type: str = Field(description="the error code, as in the native error body")
    field: str | None = None
    row: int | None = None
    details: dict[str, Any] | None = None
    retry_after: float | None = None


V2_ERROR_TEXT = {
    400: "A malformed request: JSON, tensors, shapes, datatypes, values, or binary data "
    "shorter or longer than declared",
    401: "Missing bearer credentials, or a key that is not configured",
    403: "A key that lacks the route's permission",
    404: "No such model, version or route",
    409: "The guard refused the update, or the model changed while the request was read",
    413: "Body larger than max_body_bytes",
    415: "A compressed body (Content-Encoding)",
    429: "The key's rate limit",
    500: "Server-side failure",
    503: "The store is busy, or no model is loaded yet",
}


def v2_error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": V2ErrorResponse, "description": V2_ERROR_TEXT[s]} for s in statuses}


def _inlined(schema: Any, definitions: dict[str, Any]) -> Any:
    """``schema`` with each ``$ref`` to its ``$defs`` replaced by the definition: a request
    body's nested models are in no component of the document."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inlined(definitions[schema["$ref"].rsplit("/", 1)[-1]], definitions)
        return {k: _inlined(v, definitions) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inlined(item, definitions) for item in schema]
    return schema


_REQUEST_SCHEMA = V2InferRequest.model_json_schema()
BINARY_CONTENT = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
"""A body of JSON then binary tensor data (Inference-Header-Content-Length)."""
REQUEST_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": _inlined(_REQUEST_SCHEMA, _REQUEST_SCHEMA.get("$defs", {}))
            },
            **BINARY_CONTENT,
        },
    }
}
"""The ``openapi_extra`` of the infer and train routes: the request body, JSON or binary."""
