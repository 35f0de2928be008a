"""What ``GET /dashboard`` shows, gathered in one JSON document (``GET /dashboard/state``).

:class:`Dashboard` reads only what the runtime and the metrics already hold: the served
model's stored versions (lineage, and each online update's test-then-train figures, from which
the prequential series is rebuilt with :class:`~model.prequential.PrequentialWindow`), the
drift tests, and the Prometheus exposition (aggregated over worker processes) for request
rates, latency and refusal counts. Two things no store records are journalled here, in this
process: which versions it started serving (activations, rollbacks) and the updates its guard
refused, with their reasons.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from model import LoadedModel, VersionInfo
from model.errors import ModelError, UpdateRejectedError
from model.prequential import PrequentialWindow

from .metrics import Metrics
from .runtime import Runtime

__all__ = ["Dashboard", "Journal", "TrafficSampler", "histogram_quantile"]

# Versions read for the lineage table and the prequential series (retention keeps 100 by
# default); events kept in the journal; traffic samples (one a second at most) kept.
SERIES_VERSIONS = 300
TABLE_VERSIONS = 12
JOURNAL_EVENTS = 200
SHOWN_EVENTS = 30
TRAFFIC_SAMPLES = 300
RATE_WINDOW_SECONDS = 30.0
# The dashboard's own polling is left out of the traffic it shows.
_OWN_ROUTE_PREFIX = "/dashboard"
# The traffic chart's lines: the two routes that matter, and everything else.
_GROUPS = {"/predict": "predict", "/train": "train"}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _epoch(iso: str) -> float | None:
    """Seconds since the epoch of a stored ``created_at`` (None if it is not a timestamp)."""
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Journal:
    """This process's record of versions it started serving and updates its guard refused.

    Fed by :meth:`Runtime.on_swap` and :meth:`Runtime.on_refusal`; newest events last.
    """

    def __init__(self, size: int = JOURNAL_EVENTS) -> None:
        self._lock = threading.Lock()
        self._events: deque[dict[str, Any]] = deque(maxlen=size)
        self._serving: int | None = None

    def swapped(self, loaded: LoadedModel) -> None:
        """A version this process now serves: an activation unless it is an online update
        of the version served until now (those are the lineage's own steps)."""
        meta = loaded.meta
        with self._lock:
            previous, self._serving = self._serving, loaded.version
            if loaded.version == previous or (meta.kind == "update" and meta.parent == previous):
                return  # the same version again, or the lineage's next online step
            if previous is None:
                kind = "serving"
            elif loaded.version < previous:
                kind = "rollback"
            else:
                kind = "activation"
            self._events.append(
                {
                    "at": _now_iso(),
                    "kind": kind,
                    "version": loaded.version,
                    "previous": previous,
                    "source": meta.source,
                    "key": meta.key,  # the key that made the version
                    "by": None,  # the key that activated it, when asked of this process
                }
            )

    def activated(self, loaded: LoadedModel, key: str | None) -> None:
        """An activation asked of this process by ``key``: named on its event (the newest,
        which :meth:`swapped` has just written; none when the version was served already)."""
        with self._lock:
            newest = self._events[-1] if self._events else {}
            if newest.get("kind") in ("activation", "rollback") and (
                newest["version"] == loaded.version and newest["by"] is None
            ):
                newest["by"] = key

    def refused(self, error: ModelError, key: str | None) -> None:
        """An update the guard refused (the model unchanged), with its reason."""
        reason = error.code
        if isinstance(error, UpdateRejectedError) and error.details.get("reason"):
            reason = f"{error.code}:{error.details['reason']}"
        with self._lock:
            self._events.append(
                {
                    "at": _now_iso(),
                    "kind": "refused",
                    "version": self._serving,
                    "reason": reason,
                    "message": error.message,
                    "key": key,
                }
            )

    def events(self, limit: int = SHOWN_EVENTS) -> list[dict[str, Any]]:
        """The newest ``limit`` events, newest first."""
        with self._lock:
            return list(reversed(self._events))[:limit]


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The ``q``-quantile of a Prometheus histogram's cumulative ``{le: count}`` buckets,
    interpolated linearly inside its bucket as PromQL's ``histogram_quantile`` does (None
    when empty; the highest finite bound when it falls in the ``+Inf`` bucket).

    >>> histogram_quantile(0.5, {0.1: 2.0, 0.2: 4.0, math.inf: 4.0})
    0.1
    """
    bounds = sorted(buckets)
    total = buckets.get(math.inf, 0.0)
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


@dataclass(frozen=True)
class _Sample:
    """One reading of the exposition's cumulative counters."""

    at: float  # time.monotonic()
    wall: float  # time.time()
    requests: dict[str, float] = field(default_factory=dict)  # "POST /predict" -> count
    errors: dict[str, float] = field(default_factory=dict)  # the same, status >= 400
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)  # route -> le -> n
    totals: dict[str, float] = field(default_factory=dict)  # other counters by sample name
    refused: dict[str, float] = field(default_factory=dict)  # reason -> count


def _read_sample(exposition: str) -> _Sample:
    sample = _Sample(time.monotonic(), time.time())
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            labels = s.labels
            route = f"{labels.get('method', '')} {labels.get('route', '')}"
            if s.name == "softmax_http_requests_total":
                if labels["route"].startswith(_OWN_ROUTE_PREFIX):
                    continue
                sample.requests[route] = sample.requests.get(route, 0.0) + s.value
                if int(labels["status"]) >= 400:
                    sample.errors[route] = sample.errors.get(route, 0.0) + s.value
            elif s.name == "softmax_http_request_duration_seconds_bucket":
                if labels["route"].startswith(_OWN_ROUTE_PREFIX):
                    continue
                per_route = sample.buckets.setdefault(route, {})
                bound = float(labels["le"])
                per_route[bound] = per_route.get(bound, 0.0) + s.value
            elif s.name == "softmax_updates_rejected_total":
                sample.refused[labels["reason"]] = s.value
            elif s.name in (
                "softmax_rows_predicted_total",
                "softmax_updates_applied_total",
                "softmax_rows_trained_total",
            ):
                sample.totals[s.name] = s.value
    return sample


def _minus(new: dict[Any, float], old: dict[Any, float]) -> dict[Any, float]:
    return {key: value - old.get(key, 0.0) for key, value in new.items()}


class TrafficSampler:
    """Request rates and latency from successive readings of the Prometheus exposition
    (one a second at most, taken when the dashboard asks)."""

    def __init__(self, metrics: Metrics, size: int = TRAFFIC_SAMPLES) -> None:
        self.metrics = metrics
        self._lock = threading.Lock()
        self._samples: deque[_Sample] = deque(maxlen=size)

    def read(self) -> dict[str, Any]:
        sample = _read_sample(self.metrics.exposition().decode())
        with self._lock:  # the series keeps one sample a second; the figures use this one
            if not self._samples or sample.at - self._samples[-1].at >= 1.0:
                self._samples.append(sample)
            samples = list(self._samples)
        oldest = next((s for s in samples if sample.at - s.at <= RATE_WINDOW_SECONDS), samples[0])
        return {
            "window_seconds": round(sample.at - oldest.at, 1),
            "routes": self._routes(oldest, sample),
            "series": self._series(samples),
            "totals": {
                name.removeprefix("softmax_").removesuffix("_total"): value
                for name, value in sample.totals.items()
            },
            "refused": dict(sorted(sample.refused.items(), key=lambda item: -item[1])),
        }

    @staticmethod
    def _routes(old: _Sample, new: _Sample) -> list[dict[str, Any]]:
        """Each route's rate, error rate and latency quantiles between two samples."""
        seconds = new.at - old.at
        requests = _minus(new.requests, old.requests)
        errors = _minus(new.errors, old.errors)
        rows = []
        for route, total in sorted(new.requests.items(), key=lambda item: -item[1]):
            buckets = _minus(new.buckets.get(route, {}), old.buckets.get(route, {}))
            quantiles = {
                name: histogram_quantile(q, buckets) for name, q in (("p50", 0.5), ("p95", 0.95))
            }
            rows.append(
                {
                    "route": route,
                    "requests": total,
                    "rate": requests[route] / seconds if seconds > 0 else None,
                    "error_rate": errors.get(route, 0.0) / seconds if seconds > 0 else None,
                    **{
                        f"{name}_ms": value * 1000 if value is not None else None
                        for name, value in quantiles.items()
                    },
                }
            )
        return rows

    @staticmethod
    def _series(samples: list[_Sample]) -> dict[str, Any]:
        """Requests per second of /predict, /train and the rest, between successive
        samples, and the p95 latency of all of them, for the chart."""
        series: dict[str, list[Any]] = {
            "time": [],
            "predict": [],
            "train": [],
            "other": [],
            "p95_ms": [],
        }
        for old, new in zip(samples, samples[1:], strict=False):
            seconds = new.at - old.at
            groups = {"predict": 0.0, "train": 0.0, "other": 0.0}
            merged: dict[float, float] = {}
            for route, count in _minus(new.requests, old.requests).items():
                path = route.partition(" ")[2]
                groups[_GROUPS.get(path, "other")] += count
                moved = _minus(new.buckets.get(route, {}), old.buckets.get(route, {}))
                for bound, n in moved.items():
                    merged[bound] = merged.get(bound, 0.0) + n
            series["time"].append(new.wall)
            for group, count in groups.items():
                series[group].append(count / seconds)
            p95 = histogram_quantile(0.95, merged)
            series["p95_ms"].append(p95 * 1000 if p95 is not None else None)
        return series


def _prequential_series(versions: list[VersionInfo], window_rows: int) -> dict[str, list[Any]]:
    """The rolling prequential accuracy and log-loss after each stored online update, oldest
    first, and each update's own minibatch figures."""
    window = PrequentialWindow(window_rows)
    series: dict[str, list[Any]] = {
        "time": [],
        "version": [],
        "accuracy": [],
        "log_loss": [],
        "batch_accuracy": [],
        "batch_log_loss": [],
    }
    for info in reversed(versions):
        online = info.meta.online
        at = _epoch(info.meta.created_at)
        if online is None or at is None:
            continue
        window.add(online)
        figures = window.figures()
        assert figures is not None  # an update was just added
        series["time"].append(at)
        series["version"].append(info.meta.version)
        series["accuracy"].append(figures.accuracy)
        series["log_loss"].append(figures.log_loss)
        series["batch_accuracy"].append(online.accuracy_before)
        series["batch_log_loss"].append(online.loss_before)
    return series


def _version_row(info: VersionInfo) -> dict[str, Any]:
    meta = info.meta
    online = meta.online
    return {
        "version": meta.version,
        "kind": meta.kind,
        "source": meta.source,
        "parent": meta.parent,
        "created_at": meta.created_at,
        "key": meta.key,
        "active": info.active,
        "kept": info.kept,
        "rows": online.n if online is not None else None,
        "accuracy_before": online.accuracy_before if online is not None else None,
        "test_accuracy": meta.metrics.get("accuracy") if online is None else None,
        "forced": bool(meta.verdict and not meta.verdict.get("accepted", True)),
    }


class Dashboard:
    """Builds the dashboard's document from the runtime, the metrics and the journal."""

    def __init__(
        self, runtime: Runtime, metrics: Metrics, *, guard_mode: str, refresh_seconds: float
    ) -> None:
        self.runtime = runtime
        self.guard_mode = guard_mode
        self.refresh_seconds = refresh_seconds
        self.journal = Journal()
        self.traffic = TrafficSampler(metrics)
        runtime.on_swap(self.journal.swapped)
        runtime.on_refusal(self.journal.refused)
        runtime.on_activation(self.journal.activated)

    def state(self) -> dict[str, Any]:
        """Everything the page shows (blocking: it reads the store; call from a thread)."""
        runtime = self.runtime
        loaded = runtime.current
        document: dict[str, Any] = {
            "now": _now_iso(),
            "refresh_seconds": self.refresh_seconds,
            "model": runtime.name,
            "guard_mode": self.guard_mode,
            "events": self.journal.events(),
            "traffic": self.traffic.read(),
        }
        if loaded is None:
            return {
                **document,
                "active": None,
                "versions": [],
                "prequential": None,
                "drift": None,
            }
        page = runtime.page(SERIES_VERSIONS, None)
        window = runtime.prequential()
        meta = loaded.meta
        return {
            **document,
            "active": {
                "version": loaded.version,
                "kind": meta.kind,
                "source": meta.source,
                "parent": meta.parent,
                "created_at": meta.created_at,
                "key": meta.key,
                "classes": len(loaded.classes),
                "n_features": loaded.n_features,
                "guard": meta.guard,
            },
            "newest": page.versions[0].meta.version if page.versions else None,
            "versions": [_version_row(info) for info in page.versions[:TABLE_VERSIONS]],
            "prequential": {
                "window_rows": runtime.metrics_window,
                "rows": window.rows if window is not None else 0,
                "accuracy": window.accuracy if window is not None else None,
                "log_loss": window.log_loss if window is not None else None,
                "series": _prequential_series(page.versions, runtime.metrics_window),
            },
            "drift": {"stream": meta.drift, "traffic": runtime.traffic_drift()},
        }
