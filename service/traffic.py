"""Request rates, latency quantiles and refusal counts for the dashboard, from successive
readings of the service's own Prometheus exposition (aggregated over worker processes).

The counters only grow; a rate is the difference of two readings over the seconds between
them, and a latency quantile comes from the difference of two readings of the latency
histogram's buckets, interpolated as PromQL's ``histogram_quantile`` does.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from .metrics import Metrics

__all__ = ["TrafficSampler", "histogram_quantile"]

# Readings kept (one a second at most, taken when the dashboard asks); the rates' window.
TRAFFIC_SAMPLES = 300
RATE_WINDOW_SECONDS = 30.0
# The dashboard's own polling is left out of the traffic it shows.
_OWN_ROUTE_PREFIX = "/dashboard"
# The traffic chart's lines: the two routes that matter, and everything else.
_GROUPS = {"/predict": "predict", "/train": "train"}


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
