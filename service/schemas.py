"""The HTTP contract: request and response models, with worked examples for the docs.

``/predict`` and ``/train`` parse their bodies with orjson (see :mod:`service.body`) for speed;
these models describe exactly what that parser accepts, and :func:`request_body` puts them in
the OpenAPI document. Row limits come from the settings, so the schema is built per app.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, create_model

__all__ = [
    "ActivateResponse",
    "ErrorBody",
    "ErrorResponse",
    "HealthResponse",
    "MAX_VERSION",
    "ModelList",
    "PredictResponse",
    "TrainResponse",
    "VersionDetail",
    "VersionSummary",
    "error_responses",
    "predict_request_model",
    "request_body",
    "train_request_model",
]

# JSON Schema's "number" includes integers; StrictFloat takes ints too, never bools or strings.
Number = StrictFloat
Label = StrictInt | StrictStr
Row = list[Number] | dict[str, Number]
MAX_VERSION = 2**62  # version numbers a client may send (path or body)

_ROW_DOC = (
    "Rows to score: each a list of exactly n_features finite numbers in the model's feature "
    "order, or an object keyed by the model's feature names (all of them). Booleans, strings "
    "and nulls are refused. GET /models/{version} lists n_features and feature_names."
)

PREDICT_EXAMPLE = {
    "instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.1, 4.7, 1.5]],
}
PREDICT_OBJECT_EXAMPLE = {
    "instances": [
        {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
    ],
    "version": 1,
}
TRAIN_EXAMPLE = {
    "instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.1, 4.7, 1.5]],
    "labels": ["setosa", "versicolor"],
    "learning_rate": 0.01,
    "passes": 1,
}


def predict_request_model(max_rows: int) -> type[BaseModel]:
    return create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        instances=(
            list[Row],
            Field(..., min_length=1, max_length=max_rows, description=_ROW_DOC),
        ),
        version=(
            StrictInt | None,
            Field(
                None,
                ge=1,
                le=MAX_VERSION,
                description="score with this stored version instead of the active",
            ),
        ),
    )


def train_request_model(
    max_rows: int, max_learning_rate: float, max_passes: int
) -> type[BaseModel]:
    return create_model(
        "TrainRequest",
        __config__=ConfigDict(extra="forbid"),
        instances=(
            list[Row],
            Field(..., min_length=1, max_length=max_rows, description=_ROW_DOC),
        ),
        labels=(
            list[Label],
            Field(
                ...,
                min_length=1,
                max_length=max_rows,
                description="one label per instance, each one of the model's classes "
                "(integers or strings, as the model was trained)",
            ),
        ),
        learning_rate=(
            # The bounds sit on the number itself: on the union they would not reach the schema.
            Annotated[Number, Field(gt=0, le=max_learning_rate)] | None,
            Field(None, description="step size for this update (default: the model's schedule)"),
        ),
        passes=(
            StrictInt | None,
            Field(None, ge=1, le=max_passes, description="SGD steps over this minibatch"),
        ),
    )


def request_body(model: type[BaseModel], examples: dict[str, Any]) -> dict[str, Any]:
    """An ``openapi_extra`` entry documenting ``model`` as the JSON request body."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": schema,
                    "examples": {
                        name: {"summary": name, "value": value} for name, value in examples.items()
                    },
                }
            },
        }
    }


class ErrorBody(BaseModel):
    type: str = Field(description="stable error code, e.g. feature_count, unknown_label")
    message: str = Field(description="what was expected and what came")
    field: str | None = Field(None, description="the request field at fault")
    row: int | None = Field(None, description="the row index at fault")


class ErrorResponse(BaseModel):
    error: ErrorBody

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "error": {
                    "type": "feature_count",
                    "message": "instances: expected 64 features, got 63 (row 17)",
                    "field": "instances",
                    "row": 17,
                }
            }
        }
    )


_ERROR_TEXT = {
    400: "Body is not valid JSON",
    401: "Missing bearer credentials",
    403: "Wrong bearer credentials",
    404: "No such version",
    409: "The active model changed features or classes while the request was read; retry",
    413: "Body larger than max_body_bytes",
    422: "Invalid request: wrong shape, non-finite or non-numeric values, unknown labels, "
    "limits exceeded, or an update that would make a weight non-finite",
    500: "Server-side failure (e.g. a corrupt artifact in the store)",
    503: "No model loaded yet, or the store is busy",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorResponse, "description": _ERROR_TEXT[s]} for s in statuses}


class PredictResponse(BaseModel):
    model: str
    version: int
    classes: list[Label]
    probabilities: list[list[float]] = Field(description="one row per instance, per class")
    predictions: list[Label]

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "model": "iris",
                "version": 3,
                "classes": ["setosa", "versicolor", "virginica"],
                "probabilities": [[0.97, 0.03, 0.0]],
                "predictions": ["setosa"],
            }
        }
    )


class TrainResponse(BaseModel):
    version: int = Field(description="the new, durable, active version")
    previous_version: int = Field(description="the version the update was applied to")
    n: int = Field(description="rows in the minibatch")
    loss_before: float = Field(description="prequential log-loss of the minibatch")
    loss_after: float = Field(description="log-loss of the minibatch after the update")

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "version": 12,
                "previous_version": 11,
                "n": 2,
                "loss_before": 0.41,
                "loss_after": 0.37,
            }
        }
    )


class VersionSummary(BaseModel):
    version: int
    created_at: str = Field(description="UTC, ISO 8601")
    parent: int | None = Field(description="the version this one was derived from")
    source: str = Field(description="offline (training CLI) or online (/train)")
    kind: str = Field(description="snapshot (full model) or update (one stored minibatch)")
    active: bool
    kept: bool = Field(description="exempt from retention")
    metrics: dict[str, Any]


class ModelList(BaseModel):
    model: str
    active: int
    versions: list[VersionSummary] = Field(description="newest first")
    next_before: int | None = Field(description="pass as ?before= for the next page")


class VersionDetail(VersionSummary):
    model: str
    n_features: int
    classes: list[Label]
    feature_names: list[str] | None
    params: dict[str, Any] = Field(description="training settings of the estimator")
    training: dict[str, Any] = Field(description="how the offline ancestor was trained")
    fingerprint: str | None = Field(description="hash of the offline training data")


class ActivateResponse(BaseModel):
    model: str
    active: int


class HealthResponse(BaseModel):
    status: str
    model: str | None = None
    version: int | None = None
