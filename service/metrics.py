"""Prometheus metrics, correct with several worker processes.

``python -m service`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before any
worker starts; every worker then writes its samples there and ``/metrics`` aggregates all of
them. Without that variable (in-process tests) each app gets its own registry.
"""

from __future__ import annotations

import os
import time
from typing import Any, Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "MetricsMiddleware"]

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_GaugeMode = Literal["livemostrecent", "livemax", "livesum"]


class Metrics:
    """The service's metrics, registered in their own registry."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(_MULTIPROC_ENV))
        self.registry = CollectorRegistry()
        # Registered in this order (the exposition's): traffic, updates, the version's health.
        self._register_traffic()
        self._register_updates()
        self._register_version_health()

    def _gauge(self, name: str, doc: str, mode: _GaugeMode) -> Gauge:
        return Gauge(name, doc, registry=self.registry, multiprocess_mode=mode)

    def _register_traffic(self) -> None:
        """HTTP requests and their latency by route and status; rows answered by /predict."""
        r = self.registry
        self.requests = Counter(
            "softmax_http_requests_total",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "softmax_http_request_duration_seconds",
            "HTTP request latency by route and status",
            ["method", "route", "status"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.rows_predicted = Counter(
            "softmax_rows_predicted_total", "rows answered by /predict", registry=r
        )
        self.models_evicted = Counter(
            "softmax_models_evicted_total",
            "models unloaded by the /v2 routes' registry to keep to models_memory_bytes, by model",
            ["model"],
            registry=r,
        )

    def _register_updates(self) -> None:
        """Online updates: applied, refused, synced; the active version; the prequential window."""
        r = self.registry
        gauge = self._gauge
        self.updates_applied = Counter(
            "softmax_updates_applied_total", "online updates made durable by /train", registry=r
        )
        self.rows_trained = Counter(
            "softmax_rows_trained_total", "labelled rows applied by /train", registry=r
        )
        self.store_syncs = Counter(
            "softmax_store_syncs_total",
            "fsync and fdatasync calls made by the store, or COMMITs on a PostgreSQL store "
            "(under concurrency fewer than updates applied: one sync covers a batch)",
            registry=r,
        )
        self.updates_rejected = Counter(
            "softmax_updates_rejected_total",
            "/train requests refused, by error type",
            ["reason"],
            registry=r,
        )
        self.active_version = gauge(
            "softmax_active_version", "model version being served", "livemostrecent"
        )
        self.prequential_accuracy = gauge(
            "softmax_prequential_accuracy",
            "test-then-train accuracy of the online stream over the rolling window",
            "livemostrecent",
        )
        self.prequential_log_loss = gauge(
            "softmax_prequential_log_loss",
            "test-then-train log-loss of the online stream over the rolling window",
            "livemostrecent",
        )
        self.prequential_rows = gauge(
            "softmax_prequential_window_rows",
            "rows in the rolling prequential window",
            "livemostrecent",
        )

    def _register_version_health(self) -> None:
        """The active version's guard-set figures and drift state."""
        gauge = self._gauge
        self.guard_accuracy = gauge(
            "softmax_guard_accuracy",
            "accuracy of the active version on its guard set (held-out labels the online "
            "stream cannot poison)",
            "livemostrecent",
        )
        self.guard_log_loss = gauge(
            "softmax_guard_log_loss",
            "log-loss of the active version on its guard set",
            "livemostrecent",
        )
        self.guard_rows = gauge(
            "softmax_guard_rows", "rows in the active version's guard set", "livemostrecent"
        )
        self.drift_statistic = gauge(
            "softmax_drift_statistic",
            "Page-Hinkley statistic on the prequential loss, at the active version",
            "livemostrecent",
        )
        self.drift_detected = gauge(
            "softmax_drift_detected",
            "1 when drift was detected since the active version's last offline training",
            "livemostrecent",
        )
        self.drift_alarms = gauge(
            "softmax_drift_alarms",
            "drift alarms since the active version's last offline training",
            "livemostrecent",
        )

        # This process's own test over every /train batch it checked, refused ones included
        # (a refusal writes nothing any other process could replay): an alarm in any worker.
        self.traffic_drift_statistic = gauge(
            "softmax_traffic_drift_statistic",
            "Page-Hinkley statistic on the loss of every /train batch checked, refused ones "
            "included (the largest over worker processes)",
            "livemax",
        )
        self.traffic_drift_detected = gauge(
            "softmax_traffic_drift_detected",
            "1 when drift was detected in the /train traffic, refused batches included, by "
            "any worker process since the active version's offline training",
            "livemax",
        )
        self.traffic_drift_alarms = gauge(
            "softmax_traffic_drift_alarms",
            "drift alarms on the /train traffic, refused batches included (the most in one "
            "worker process)",
            "livemax",
        )

    def set_version_health(
        self, guard: dict[str, Any] | None, drift: dict[str, Any] | None
    ) -> None:
        """The active version's guard-set figures and drift state (from its metadata)."""
        if guard is not None:
            self.guard_rows.set(guard["rows"])
            self.guard_accuracy.set(guard["accuracy"])
            self.guard_log_loss.set(guard["log_loss"])
        drift = drift or {}
        self.drift_statistic.set(drift.get("statistic", 0.0))
        self.drift_detected.set(1 if drift.get("detected") else 0)
        self.drift_alarms.set(drift.get("alarms", 0))

    def set_traffic_drift(self, drift: dict[str, Any] | None) -> None:
        """This process's drift test over all /train traffic (None: no batch seen yet)."""
        drift = drift or {}
        self.traffic_drift_statistic.set(drift.get("statistic", 0.0))
        self.traffic_drift_detected.set(1 if drift.get("detected") else 0)
        self.traffic_drift_alarms.set(drift.get("alarms", 0))

    def set_prequential(self, rows: int, accuracy: float, log_loss: float) -> None:
        self.prequential_rows.set(rows)
        self.prequential_accuracy.set(accuracy)
        self.prequential_log_loss.set(log_loss)

    def exposition(self) -> bytes:
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped upstream
            return generate_latest(registry)
        return generate_latest(self.registry)

    def process_exit(self) -> None:
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]  # untyped upstream


class MetricsMiddleware:
    """Counts and times every HTTP request by route template (not raw path) and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # Resolving labels costs more than the observation: keep each (method, route,
        # status)'s children. Routes are templates, so this stays small.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            key = (scope["method"], getattr(route, "path", None) or "unmatched", status)
            children = self._children.get(key)
            if children is None:
                labels = (key[0], key[1], str(status))
                children = (
                    self.metrics.requests.labels(*labels),
                    self.metrics.latency.labels(*labels),
                )
                self._children[key] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - started)
