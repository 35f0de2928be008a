"""What ``GET /dashboard`` shows, gathered in one JSON document (``GET /dashboard/state``).

:class:`Dashboard` reads only what the runtime and the metrics already hold: the served
model's stored versions (lineage, and each online update's test-then-train figures, from which
the prequential series is rebuilt with :class:`~model.prequential.PrequentialWindow`), the
drift tests, and the Prometheus exposition (aggregated over worker processes) for request
rates, latency and refusal counts (:mod:`service.traffic`). Two things no store records are
journalled here, in this process: which versions it started serving (activations, rollbacks)
and the updates its guard refused, with their reasons.
"""

from __future__ import annotations

import threading
from collections import deque
from datetime import datetime
from typing import Any

from model import LoadedModel, VersionInfo, VersionMeta
from model.errors import ModelError, UpdateRejectedError
from model.prequential import PrequentialWindow
from model.versions import now

from .metrics import Metrics
from .runtime import Runtime
from .traffic import TrafficSampler

__all__ = ["Dashboard", "Journal"]

# Versions read for the lineage table and the prequential series (retention keeps 100 by
# default); events kept in the journal, and shown.
SERIES_VERSIONS = 300
TABLE_VERSIONS = 12
JOURNAL_EVENTS = 200
SHOWN_EVENTS = 30


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
                    "at": now(),
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
                    "at": now(),
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


def _made(meta: VersionMeta) -> dict[str, Any]:
    """How a version was made (its lineage), as the page shows it."""
    return {
        "version": meta.version,
        "kind": meta.kind,
        "source": meta.source,
        "parent": meta.parent,
        "created_at": meta.created_at,
        "key": meta.key,
    }


def _version_row(info: VersionInfo) -> dict[str, Any]:
    meta = info.meta
    online = meta.online
    return {
        **_made(meta),
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
            "now": now(),
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
                **_made(meta),
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
