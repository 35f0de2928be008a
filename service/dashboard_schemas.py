"""The document ``GET /dashboard/state`` answers (built by :mod:`service.dashboard`), for the
OpenAPI document; the fuzzing test checks every answer against it. Kept apart from
:mod:`service.schemas` (the prediction and training contract): only the dashboard reads it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = ["DashboardState"]


class DashboardEvent(BaseModel):
    at: str = Field(description="when this process saw it (UTC, ISO 8601)")
    kind: Literal["serving", "activation", "rollback", "refused"]
    version: int | None = Field(description="the version served (for a refusal: unchanged)")
    previous: int | None = Field(None, description="the version served before")
    source: str | None = Field(None, description="offline or online: how the version was made")
    key: str | None = Field(None, description="the key that made the version, or sent the batch")
    by: str | None = Field(None, description="the key that asked for the activation")
    reason: str | None = Field(None, description="refused: error type[:guard signal]")
    message: str | None = Field(None, description="refused: the refusal's message")


class RouteTraffic(BaseModel):
    route: str = Field(description="method and route template, e.g. 'POST /predict'")
    requests: float = Field(description="requests since start, all workers")
    rate: float | None = Field(description="requests per second over the window")
    error_rate: float | None = Field(description="4xx and 5xx answers per second")
    p50_ms: float | None
    p95_ms: float | None


class TrafficSeries(BaseModel):
    time: list[float] = Field(description="seconds since the epoch")
    predict: list[float]
    train: list[float]
    other: list[float]
    p95_ms: list[float | None]


class Traffic(BaseModel):
    window_seconds: float
    routes: list[RouteTraffic]
    series: TrafficSeries
    totals: dict[str, float] = Field(description="rows_predicted, updates_applied, rows_trained")
    refused: dict[str, float] = Field(description="refused /train requests by reason")


class VersionMade(BaseModel):
    """How a version was made: its lineage."""

    version: int
    kind: str = Field(description="snapshot or update")
    source: str = Field(description="offline (the training CLI) or online (/train)")
    parent: int | None
    created_at: str
    key: str | None = Field(description="the key that made it")


class ActiveVersion(VersionMade):
    classes: int
    n_features: int
    guard: dict[str, Any] | None = Field(description="the version on its guard set")


class VersionRow(VersionMade):
    active: bool
    kept: bool
    rows: int | None = Field(description="an online update's rows")
    accuracy_before: float | None = Field(description="its prequential accuracy")
    test_accuracy: float | None = Field(description="an offline version's test accuracy")
    forced: bool = Field(description="applied although the guard refused it")


class PrequentialSeries(BaseModel):
    time: list[float]
    version: list[int]
    accuracy: list[float] = Field(description="the rolling window after each update")
    log_loss: list[float]
    batch_accuracy: list[float] = Field(description="each update's own minibatch")
    batch_log_loss: list[float]


class Prequential(BaseModel):
    window_rows: int
    rows: int
    accuracy: float | None
    log_loss: float | None
    series: PrequentialSeries


class Drift(BaseModel):
    stream: dict[str, Any] | None = Field(description="the committed stream's test")
    traffic: dict[str, Any] | None = Field(description="this process's, refusals included")


class DashboardState(BaseModel):
    now: str
    refresh_seconds: float
    model: str | None
    guard_mode: str
    events: list[DashboardEvent] = Field(description="newest first, this process's")
    traffic: Traffic
    active: ActiveVersion | None = Field(description="None: no model loaded yet")
    newest: int | None = None
    versions: list[VersionRow] = Field(description="newest first")
    prequential: Prequential | None
    drift: Drift | None
