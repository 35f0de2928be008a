"""The live model holder: an immutable snapshot swapped by reference, online updates, reload.

Readers (``/predict``) take ``runtime.current`` once and use that :class:`LoadedModel` for the
whole request: updates never edit it, they build a new one and swap the reference, so a
prediction never sees a half-updated model and never waits for training.

Writers (``/train``, activation) go through :class:`~model.repository.ModelRepository`, which
holds the store's cross-process lock and always starts from the store's active version, so
several workers and replicas sharing one store serialize their updates. Every process polls
the store (``reload_interval``) and swaps in whatever version became active elsewhere.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model import LoadedModel, ModelRepository, StepReport, UpdateResult
from model.errors import (
    InvalidParameterError,
    ModelChangedError,
    ModelError,
    ModelNotFoundError,
    NonFiniteError,
    VersionNotFoundError,
)
from model.repository import describe, layout_of
from model.store import ArtifactStore, check_model_name

__all__ = ["NoModelError", "Prediction", "RollingMetrics", "Runtime"]

log = logging.getLogger("service.runtime")


class NoModelError(ModelError):
    """The service has no model to serve yet (empty store)."""

    code = "no_model"


@dataclass(frozen=True)
class Prediction:
    model: LoadedModel
    probabilities: NDArray[np.float64]

    def predictions(self) -> NDArray[Any]:
        labels: NDArray[Any] = self.model.estimator.classes_[self.probabilities.argmax(axis=1)]
        return labels


class RollingMetrics:
    """Prequential accuracy and log-loss over the most recent ``window`` online rows."""

    def __init__(self, window: int) -> None:
        self.window = window
        self._lock = threading.Lock()
        self._batches: deque[tuple[int, float, float]] = deque()
        self._rows = 0
        self._loss = 0.0
        self._correct = 0.0

    def add(self, report: StepReport) -> None:
        with self._lock:
            batch = (report.n, report.loss_before * report.n, report.accuracy_before * report.n)
            self._batches.append(batch)
            self._rows += batch[0]
            self._loss += batch[1]
            self._correct += batch[2]
            while len(self._batches) > 1 and self._rows - self._batches[0][0] >= self.window:
                n, loss, correct = self._batches.popleft()
                self._rows -= n
                self._loss -= loss
                self._correct -= correct

    def snapshot(self) -> tuple[int, float, float] | None:
        """(rows, accuracy, log-loss) over the window, or None before the first update."""
        with self._lock:
            if not self._rows:
                return None
            return self._rows, self._correct / self._rows, self._loss / self._rows


class Runtime:
    """Serves one model name from a store. Usable without HTTP (the unit tests do)."""

    def __init__(
        self,
        repository: ModelRepository,
        model_name: str | None = None,
        *,
        metrics_window: int = 1000,
        pinned_cache_size: int = 4,
    ) -> None:
        self.repository = repository
        self.store: ArtifactStore = repository.store
        self.requested_name = check_model_name(model_name) if model_name else None
        self.current: LoadedModel | None = None
        self.metrics_window = metrics_window
        self._swap_listeners: list[Callable[[LoadedModel], None]] = []
        self._swap_lock = threading.Lock()
        self._train_lock = threading.Lock()
        self._pinned: OrderedDict[int, LoadedModel] = OrderedDict()
        self._pinned_lock = threading.Lock()
        self._pinned_size = pinned_cache_size
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # ------------------------------------------------------------------ naming
    def resolve_name(self) -> str | None:
        """The model this process serves: the configured one, or the store's only model.

        Raises InvalidParameterError when the store holds several models and none was named.
        """
        if self.requested_name:
            return self.requested_name
        names = self.store.models()
        if len(names) > 1:
            raise InvalidParameterError(
                f"the store holds several models ({', '.join(names)}); choose one with --model",
                field="model",
            )
        return names[0] if names else None

    @property
    def name(self) -> str | None:
        return self.current.name if self.current else self.requested_name

    def require(self) -> LoadedModel:
        model = self.current
        if model is None:
            raise NoModelError(
                f"no model is loaded: the store {getattr(self.store, 'root', '')} holds no "
                f"{'model ' + repr(self.requested_name) if self.requested_name else 'model'} "
                "yet (train one with python -m model.train)"
            )
        return model

    # ------------------------------------------------------------------ reload
    def refresh(self) -> bool:
        """Swap in the store's active version if it differs from ours. True if it swapped."""
        current = self.current  # before reading the head: see the swap below
        name = current.name if current else self.resolve_name()
        if name is None:
            return False
        try:
            head = self.store.head(name)
        except ModelNotFoundError:
            return False
        if head.newest == 0:
            return False
        if current is not None and current.version == head.active:
            return False
        loaded = self.repository.load(name, head.active, base=current)
        with self._swap_lock:
            # A local update or activation swapped in its own version while this one loaded:
            # keep that one. If only other processes moved the store on, swap anyway: the
            # version loaded was active when the head was read, and the next poll catches up
            # (refusing it would leave a server starting during a stream of writes not ready).
            if self.current is not current:
                return False
            self.current = loaded
        for listener in self._swap_listeners:
            listener(loaded)
        log.info("serving %s version %d", name, loaded.version)
        return True

    def start_polling(self, interval: float) -> None:
        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.refresh()
                except ModelError as exc:
                    log.warning("reload failed: %s", exc.message)
                except Exception:  # keep serving the current model whatever happens
                    log.exception("reload failed")

        self._poller = threading.Thread(target=loop, name="store-poller", daemon=True)
        self._poller.start()

    def stop_polling(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)

    def on_swap(self, listener: Callable[[LoadedModel], None]) -> None:
        """Call ``listener`` with every model this process starts serving."""
        self._swap_listeners.append(listener)

    def _swap(self, loaded: LoadedModel) -> None:
        with self._swap_lock:
            self.current = loaded
        for listener in self._swap_listeners:
            listener(loaded)

    def prequential(self) -> tuple[int, float, float] | None:
        """(rows, accuracy, log-loss) of the online stream over the newest ``metrics_window``
        rows, read from the store's versions: the same figures in every worker and replica,
        whichever of them applied the updates."""
        model = self.current
        if model is None:
            return None
        rolling = RollingMetrics(self.metrics_window)
        recent: list[StepReport] = []
        rows = 0
        for number in reversed(self.store.versions(model.name)):
            if rows >= self.metrics_window:
                break
            try:
                online = self.store.read_meta(model.name, number).get("online")
            except ModelError:  # removed by retention meanwhile, or unreadable: skip it
                continue
            if online:
                report = StepReport(
                    online["n"], online["loss_before"], online["accuracy_before"], 0.0
                )
                recent.append(report)
                rows += report.n
        for report in reversed(recent):
            rolling.add(report)
        return rolling.snapshot()

    # ------------------------------------------------------------------ serving
    def model_for(self, version: int | None) -> LoadedModel:
        """The active model, or a pinned stored version (cached, a few at a time)."""
        current = self.require()
        if version is None or version == current.version:
            return current
        with self._pinned_lock:
            cached = self._pinned.get(version)
            if cached is not None:
                self._pinned.move_to_end(version)
                return cached
        loaded = self.repository.load(current.name, version)
        with self._pinned_lock:
            self._pinned[version] = loaded
            while len(self._pinned) > self._pinned_size:
                self._pinned.popitem(last=False)
        return loaded

    def is_cached(self, version: int | None) -> bool:
        current = self.current
        return (
            version is None
            or (current is not None and current.version == version)
            or (version in self._pinned)
        )

    @staticmethod
    def predict(model: LoadedModel, X: NDArray[np.float64]) -> Prediction:
        """Probabilities ``(n, k)`` from ``model`` (the one ``X`` was validated against).

        Raises NonFiniteError for finite rows too large for the model (their standardized
        values or scores overflow): an answer of NaN probabilities would be no answer.
        """
        with np.errstate(over="ignore", invalid="ignore"):
            probabilities = model.estimator.predict_proba_checked(X)
            finite = np.isfinite(probabilities).all(axis=1)
        if not finite.all():
            row = int(np.argmin(finite))
            raise NonFiniteError(
                "instances: expected values the model can score, got values so large that "
                f"the model's scores overflow (row {row})",
                field="instances",
                row=row,
            )
        return Prediction(model, probabilities)

    def train(
        self,
        X: NDArray[np.float64],
        labels: Sequence[Any],
        *,
        learning_rate: float | None = None,
        passes: int = 1,
        parsed_with: LoadedModel | None = None,
    ) -> UpdateResult:
        """One durable online update (blocking: call from a worker thread).

        ``parsed_with`` is the model the request's rows were read against; if the served
        model has since changed its features or classes, the update is refused (409).
        """
        # This process's writers queue here, before choosing their base: each then starts
        # from the version the previous one committed, instead of re-reading it from disk.
        with self._train_lock:
            current = self.require()
            if parsed_with is not None and layout_of(parsed_with) != layout_of(current):
                raise ModelChangedError(
                    f"model {current.name!r} changed features or classes while this request "
                    f"was read (version {parsed_with.version} -> {current.version}); retry"
                )
            # Huge finite rows overflow the input checks' sums (harmless: they fall back to an
            # exact check) and the update itself (refused with DivergenceError): no warnings.
            with np.errstate(over="ignore", invalid="ignore"):
                return self.repository.update(
                    current.name,
                    X,
                    labels,
                    learning_rate=learning_rate,
                    passes=passes,
                    base=current,
                    on_commit=self._swap,
                )

    def list_versions(self, limit: int, before: int | None) -> dict[str, Any]:
        """One page of version summaries, newest first (``before`` excludes newer ones)."""
        name = self.require().name
        head = self.store.head(name)
        kept = self.store.kept(name)
        numbers = [v for v in reversed(self.store.versions(name)) if before is None or v < before]
        page: list[dict[str, Any]] = []
        for number in numbers:
            if len(page) == limit:
                break
            try:
                meta = self.store.read_meta(name, number)
            except VersionNotFoundError:  # removed by retention meanwhile
                continue
            page.append(describe(meta, active=number == head.active, kept=number in kept))
        more = bool(page) and numbers[-1] < page[-1]["version"]
        return {
            "model": name,
            "active": head.active,
            "versions": page,
            "next_before": page[-1]["version"] if more else None,
        }

    def version_detail(self, version: int) -> dict[str, Any]:
        """Everything known about one version without materializing its weights."""
        name = self.require().name
        head = self.store.head(name)
        meta = self.store.read_meta(name, version)
        root = self.repository.snapshot_meta(name, version)
        kept = version in self.store.kept(name)
        detail = describe(meta, active=version == head.active, kept=kept)
        detail.update(
            model=name,
            n_features=root["n_features"],
            classes=root["classes"],
            feature_names=root.get("feature_names"),
            params=root.get("params", {}),
            training=root.get("training") or {},
            fingerprint=root.get("fingerprint"),
        )
        return detail

    def activate(self, version: int) -> LoadedModel:
        current = self.require()
        return self.repository.activate(current.name, version, on_commit=self._swap)
