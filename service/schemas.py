"""The response models, with worked examples for the docs.

Request bodies are declared in :mod:`service.contract`, which also documents them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from model.classes import MAX_CLASSES
from model.growth import MAX_FEATURES

from .contract import Label

__all__ = [
    "ActivateResponse",
    "CreateModelRequest",
    "CreateModelResponse",
    "ErrorBody",
    "ErrorResponse",
    "HealthResponse",
    "ReadyResponse",
    "ModelList",
    "PredictResponse",
    "TrainResponse",
    "VersionDetail",
    "VersionSummary",
    "error_responses",
]


class ErrorBody(BaseModel):
    type: str = Field(description="stable error code, e.g. feature_count, unknown_label")
    message: str = Field(description="what was expected and what came")
    field: str | None = Field(
        None, description="the request field at fault (absent when the error is not about one)"
    )
    details: dict[str, Any] | None = Field(
        None, description="update_rejected only: the guard's figures behind the decision"
    )
    row: int | None = Field(
        None, description="the row index at fault (absent when the error is not about one)"
    )
    retry_after: float | None = Field(
        None,
        description="rate_limited only: seconds to wait before retrying, to the millisecond "
        "(the Retry-After header rounds it up to whole seconds)",
    )


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
    400: "Body is not valid UTF-8 JSON",
    401: "Missing bearer credentials, or a key that is not configured",
    403: "A wrong key (single-key setup), or a key that lacks the route's permission",
    404: "No such version",
    409: "A model of that name exists already (model_exists; POST /models), the guard "
    "refused the update (update_rejected, with the figures in details), or the "
    "active model changed features or classes while the request was read (retry)",
    413: "Body larger than max_body_bytes",
    415: "A compressed body (Content-Encoding): send it uncompressed",
    429: "The key's rate limit on /train (rate_limited): retry after Retry-After seconds",
    422: "Invalid request: wrong shape, non-finite or non-numeric values, unknown labels, "
    "limits exceeded, rows far outside the training data (for /train), or an update that "
    "would make a weight non-finite",
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
    predictions: list[Label | None] = Field(
        description="the most probable class of each row; null only for a model created "
        "with no classes that has not learnt one yet (its probabilities are empty)"
    )

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
    held_out: int = Field(
        0, description="rows of the minibatch that joined the guard set instead of training"
    )
    guard: dict[str, Any] | None = Field(
        None,
        description="the guard's verdict and the figures behind it (null: not judged, e.g. "
        "the guard is off or its set too small)",
    )

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
    key: str | None = Field(None, description="name of the API key that made this version")
    verdict: dict[str, Any] | None = Field(
        None,
        description="online versions: the guard's verdict on the update that made it "
        "(figures, mode, whether an administrator forced it); null when not judged",
    )
    classes_added: list[Label] | None = Field(
        None,
        description="the classes this version added (a /train label new to a model that "
        "allows new classes); null when it added none",
    )


class ModelList(BaseModel):
    model: str
    active: int
    versions: list[VersionSummary] = Field(description="newest first")
    next_before: int | None = Field(description="pass as ?before= for the next page")


class RawFeature(BaseModel):
    """One column of the rows a client sends (model.encoding)."""

    name: str
    kind: Literal["numeric", "categorical"]
    categories: list[str] | None = Field(
        None,
        description="categorical: its categories, one one-hot feature each, in this order; a "
        "value not listed sets none of them (or is refused, setting unknown_categories)",
    )
    fill: float | str | None = Field(
        description="what a missing value (null) becomes: the training mean or median of a "
        "numeric feature, the missing category of a categorical one; null: refused"
    )


class VersionDetail(VersionSummary):
    model: str
    n_features: int
    classes: list[Label]
    feature_names: list[str] | None = Field(
        description="the estimator's features (one-hot ones named column=category)"
    )
    raw_features: list[RawFeature] = Field(
        description="the raw feature schema: what /predict and /train rows carry, in the "
        "order of list rows"
    )
    params: dict[str, Any] = Field(description="training settings of the estimator")
    training: dict[str, Any] = Field(description="how the offline ancestor was trained")
    fingerprint: str | None = Field(description="hash of the offline training data")
    guard: dict[str, Any] | None = Field(
        description="this version on its guard set (rows, accuracy, log_loss): held-out "
        "labels the online stream cannot poison; null when it has none"
    )
    drift: dict[str, Any] | None = Field(
        description="Page-Hinkley drift test on the prequential loss at this version "
        "(statistic, detected, alarms); null for offline versions"
    )
    guard_history: dict[str, Any] | None = Field(
        None,
        description="the guard's state across updates after this version (pooled surprise "
        "overall and per key name, the damage budget's reference version and loss, the damage "
        "since it and the guard rows held out since it); null for "
        "offline versions and updates not judged",
    )
    allow_new_classes: bool = Field(
        False, description="a /train label outside the classes adds a class (POST /models)"
    )


class ActivateResponse(BaseModel):
    model: str
    active: int


class HealthResponse(BaseModel):
    status: str
    model: str | None = None
    version: int | None = None


class ReadyResponse(HealthResponse):
    """/health/ready: ``status`` is ``ready``, or ``degraded`` while the store cannot be
    reached (``store`` says why; predictions go on from the model in memory)."""

    store: str | None = Field(
        None, description="present when degraded: why the store cannot be reached"
    )


Setting = StrictFloat | StrictInt | StrictStr | StrictBool


class CreateModelRequest(BaseModel):
    """``POST /models``: a model with zero weights, learned online from the first /train."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "name": "tickets",
                "feature_names": ["length", "links", "hour"],
                "classes": ["billing", "bug"],
                "allow_new_classes": True,
            }
        },
    )

    name: StrictStr = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="the model's name in the store: 1-64 letters, digits, '.', '_' or '-'",
    )
    feature_names: list[StrictStr] = Field(
        min_length=1,
        max_length=MAX_FEATURES,
        description="the features, distinct, in the order of list rows",
    )
    classes: list[Label] = Field(
        default_factory=list,
        max_length=MAX_CLASSES,
        description="the classes known from the start (all integers or all strings), any "
        "number: "
        "with one, /predict answers it with probability 1; with none, null predictions "
        "until /train has taught one (needs allow_new_classes)",
    )
    allow_new_classes: StrictBool = Field(
        False,
        description="a /train label outside the classes adds a class (a new version whose "
        "lineage records it) instead of 422 unknown_label",
    )
    standardize: StrictBool = Field(
        True,
        description="true: features standardized by a running mean and variance that each "
        "acknowledged update folds in; false: raw features",
    )
    params: dict[StrictStr, Setting] | None = Field(
        None,
        max_length=32,
        description="hyper-parameters (as GET /models/{version} shows them: learning_rate, "
        "online_learning_rate, l2, momentum, ...); the defaults suit learning from zero",
    )


class CreateModelResponse(BaseModel):
    model: str
    version: int = Field(description="always 1: the created model's first version")
    classes: list[Label]
    feature_names: list[str]
    allow_new_classes: bool
    standardize: Literal["running", "none"]
    params: dict[str, Any]
    served: bool = Field(
        description="whether this process's /predict and /train now serve it (it served no "
        "model yet); else it is in the store for a process started with --model NAME"
    )
