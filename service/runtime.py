"""The live model holder: an immutable version swapped by reference, online updates, reload.

Readers (``/predict``) take ``runtime.current`` once and use that :class:`LoadedModel` for the
whole request: updates never edit it, they build a new one and swap the reference, so a
prediction never sees a half-updated model and never waits for training.

Writers (``/train``, activation) go through :class:`~model.repository.ModelRepository`, which
holds the store's cross-process lock and always starts from the store's active version, so
several workers and replicas sharing one store serialize their updates. Every process swaps in
whatever version became active elsewhere: told by the store where it can (PostgreSQL's
LISTEN/NOTIFY), else by polling it (``reload_interval``).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model import LoadedModel, ModelRepository, UpdateResult
from model.errors import (
    InvalidParameterError,
    ModelChangedError,
    ModelError,
    ModelNotFoundError,
    NonFiniteError,
    OutOfRangeError,
    StoreUnavailableError,
    UpdateRejectedError,
)
from model.growth import create_estimator
from model.prequential import PrequentialFigures
from model.repository import VersionDetail, VersionPage, check_model_name

from .errors import NoModelError

__all__ = ["Poller", "Runtime", "Scores", "batch_digest"]

log = logging.getLogger("service.runtime")

# While the store's change notifications arrive, reload polls only this many intervals apart.
NOTIFIED_POLL_FACTOR = 20


def batch_digest(X: NDArray[np.float64], labels: Sequence[Any]) -> str:
    """A short fingerprint of a minibatch, for logs: the same batch, the same digest."""
    digest = hashlib.blake2b(X.tobytes(), digest_size=8)
    digest.update(repr(list(labels)).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Scores:
    """What one model made of some rows: ``probabilities: (n, k)``, columns in the order of
    ``loaded.classes``."""

    loaded: LoadedModel
    probabilities: NDArray[np.float64]

    def predictions(self) -> NDArray[Any]:
        """The most probable class of each row."""
        # The estimator's array, not LoadedModel.classes (a list of Python scalars): an array
        # picks every row's label in one fancy index, and the route calls .tolist() on it.
        classes = self.loaded.estimator.classes_
        if not classes.shape[0]:  # a model created with no classes: no prediction (null)
            return np.full(self.probabilities.shape[0], None, dtype=object)
        labels: NDArray[Any] = classes[self.probabilities.argmax(axis=1)]
        return labels


class Poller:
    """A daemon thread calling ``refresh`` every ``interval`` seconds until :meth:`stop`, or
    sooner after :meth:`wake` (a store's change notification); while ``live()`` says
    notifications arrive, only every :data:`NOTIFIED_POLL_FACTOR` intervals. A failure is
    logged and the next round comes (whatever is served keeps being served). The runtime and
    the registry each own one."""

    def __init__(self, name: str, refresh: Callable[[], object]) -> None:
        self.name = name
        self._refresh = refresh
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, interval: float, live: Callable[[], bool] | None = None) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                notified = live is not None and live()
                self._wake.wait(interval * NOTIFIED_POLL_FACTOR if notified else interval)
                self._wake.clear()
                if self._stop.is_set():
                    break
                try:
                    self._refresh()
                except ModelError as exc:
                    log.warning("reload failed: %s", exc.message)
                except Exception:  # keep serving what is loaded, whatever happens
                    log.exception("reload failed")

        self._thread = threading.Thread(target=loop, name=self.name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


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
        self.requested_name = check_model_name(model_name) if model_name else None
        self.current: LoadedModel | None = None
        self.metrics_window = metrics_window
        self._swap_listeners: list[Callable[[LoadedModel], None]] = []
        self._refusal_listeners: list[Callable[[ModelError, str | None], None]] = []
        self._activation_listeners: list[Callable[[LoadedModel, str | None], None]] = []
        self._swap_lock = threading.Lock()
        self._pinned: OrderedDict[int, LoadedModel] = OrderedDict()
        self._pinned_lock = threading.Lock()
        self._pinned_size = pinned_cache_size
        # Why the store could not be read at the last reload (None: it could): /health/ready
        # reports it while /predict goes on serving the model in memory.
        self.store_problem: str | None = None
        # Why the last reload loaded nothing although the store answered (None: it did not
        # fail): several models and no --model, a version that does not load.
        self.load_problem: str | None = None
        self._poller = Poller("store-poller", self.reload)

    # ------------------------------------------------------------------ naming
    def resolve_name(self) -> str | None:
        """The model this process serves: the configured one, or the store's only model.

        Raises InvalidParameterError when the store holds several models and none was named.
        """
        if self.requested_name:
            return self.requested_name
        names = self.repository.models()
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
        """The version being served; NoModelError (503) while there is none."""
        loaded = self.current
        if loaded is None:
            raise NoModelError(f"no model is loaded: {self.unready_reason()}")
        return loaded

    def unready_reason(self) -> str:
        """Why no model is served yet, for the 503s meanwhile."""
        if self.problem is not None:
            return self.problem
        wanted = f"model {self.requested_name!r}" if self.requested_name else "model"
        return (
            f"{self.repository} holds no {wanted} yet (create one with POST /models, or "
            "train one with python -m model.train)"
        )

    @property
    def problem(self) -> str | None:
        """Why the last reload failed (the store unreachable, or a model that did not load),
        None if it did not."""
        return self.store_problem or self.load_problem

    # ------------------------------------------------------------------ reload
    def refresh(self) -> bool:
        """Swap in the store's active version if it differs from ours. True if it swapped."""
        current = self.current  # before reading the head: see the swap below
        name = current.name if current else self.resolve_name()
        if name is None:
            return False
        try:
            head = self.repository.head(name)
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
        """Reload in the background: at once when the store notifies a change (PostgreSQL),
        else every ``interval`` seconds (the local directory; a database whose notification
        connection is down). While notifications arrive, a poll every
        :data:`NOTIFIED_POLL_FACTOR` intervals is only a safety net."""
        self._poller.start(interval, live=self.repository.watch(self._notified))

    def reload(self) -> None:
        """One reload that never raises a ModelError: a store outage is remembered in
        ``store_problem`` (health says degraded, or why not ready) and what is loaded keeps
        being served; another failure to load is remembered in ``load_problem``. Each is
        logged when it changes."""
        try:
            self.refresh()
        except StoreUnavailableError as exc:
            if self.store_problem is None:
                serving = "serving what is loaded" if self.current else "not ready until it is"
                log.warning("store unavailable, %s: %s", serving, exc.message)
            self.store_problem = exc.message
            return
        except ModelError as exc:
            if exc.message != self.load_problem:
                log.error("could not load the active model: %s (retrying)", exc.message)
            self.store_problem, self.load_problem = None, exc.message
            return
        if self.store_problem is not None:
            log.warning("store available again")
        self.store_problem = self.load_problem = None

    def _notified(self, model: str) -> None:
        if not model or model == self.name:
            self._poller.wake()

    def stop_polling(self) -> None:
        self._poller.stop()
        self.repository.close()

    def on_swap(self, listener: Callable[[LoadedModel], None]) -> None:
        """Call ``listener`` with every model this process starts serving."""
        self._swap_listeners.append(listener)

    def on_refusal(self, listener: Callable[[ModelError, str | None], None]) -> None:
        """Call ``listener(error, key)`` with every update the guard refuses in this process
        (an :class:`UpdateRejectedError` or :class:`OutOfRangeError`): a refusal writes
        nothing to the store, so only the process that refused it knows."""
        self._refusal_listeners.append(listener)

    def on_activation(self, listener: Callable[[LoadedModel, str | None], None]) -> None:
        """Call ``listener(loaded, key)`` after every activation made through this runtime
        (after the swap listeners have seen the version), with the key that asked for it."""
        self._activation_listeners.append(listener)

    def _swap(self, loaded: LoadedModel) -> None:
        with self._swap_lock:
            self.current = loaded
        for listener in self._swap_listeners:
            listener(loaded)

    def prequential(self) -> PrequentialFigures | None:
        """(rows, accuracy, log-loss) of the online stream over the newest ``metrics_window``
        rows, read from the store: the same figures in every worker and replica, whichever
        of them applied the updates; each call reads only what is new since the last."""
        loaded = self.current
        if loaded is None:
            return None
        return self.repository.online_window(loaded.name, self.metrics_window)

    def traffic_drift(self) -> dict[str, Any] | None:
        """This process's drift test over every /train minibatch it checked, refused ones
        included (None before the first)."""
        loaded = self.current
        found = self.repository.traffic_drift(loaded.name) if loaded is not None else None
        return found.to_json() if found is not None else None

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

    def loaded_models(self) -> list[LoadedModel]:
        """Every version this runtime holds in memory: the served one and the pinned ones."""
        with self._pinned_lock:
            pinned = list(self._pinned.values())
        current = self.current
        return [current, *pinned] if current is not None else pinned

    def is_cached(self, version: int | None) -> bool:
        current = self.current
        return (
            version is None
            or (current is not None and current.version == version)
            or (version in self._pinned)
        )

    @staticmethod
    def predict(loaded: LoadedModel, X: NDArray[np.float64]) -> Scores:
        """Probabilities ``(n, k)`` from ``model`` (the one ``X`` was validated against).

        Raises NonFiniteError for finite rows too large for the model (their standardized
        values or scores overflow): an answer of NaN probabilities would be no answer.
        """
        if not loaded.estimator.classes_.shape[0]:  # created with no classes: none to score
            return Scores(loaded, np.empty((X.shape[0], 0)))
        with np.errstate(over="ignore", invalid="ignore"):
            probabilities = loaded.estimator.predict_proba_checked(X)
            finite = np.isfinite(probabilities).all(axis=1)
        if not finite.all():
            row = int(np.argmin(finite))
            raise NonFiniteError(
                "instances: expected values the model can score, got values so large that "
                f"the model's scores overflow (row {row})",
                field="instances",
                row=row,
            )
        return Scores(loaded, probabilities)

    def update(
        self,
        X: NDArray[np.float64],
        labels: Sequence[Any],
        *,
        learning_rate: float | None = None,
        passes: int = 1,
        parsed_with: LoadedModel | None = None,
        key: str | None = None,
        force: bool = False,
    ) -> UpdateResult:
        """One durable online update (blocking: call from a worker thread).

        ``parsed_with`` is the model the request's rows were read against; if the served
        model has since changed its features or classes, the update is refused (409).
        ``key`` names the client (recorded and logged), ``force`` overrides the guard.
        A refusal by the guard is logged with the batch's digest.
        """
        current = self.require()
        if parsed_with is not None and parsed_with.layout != current.layout:
            raise ModelChangedError(
                f"model {current.name!r} changed features or classes while this request "
                f"was read (version {parsed_with.version} -> {current.version}); retry"
            )
        # Concurrent writers of this process are group-committed by the repository: each is
        # applied to the version the previous one made, and one sync covers a whole batch.
        # Huge finite rows overflow the input checks' sums (harmless: they fall back to an
        # exact check) and the update itself (refused with DivergenceError): no warnings.
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                return self.repository.update(
                    current.name,
                    X,
                    labels,
                    learning_rate=learning_rate,
                    passes=passes,
                    base=parsed_with or current,
                    on_commit=self._swap,
                    key=key,
                    force=force,
                )
        except (UpdateRejectedError, OutOfRangeError) as exc:
            log.warning(
                "model %r: update refused for key %s (batch %s, %d rows): %s",
                current.name,
                key or "-",
                batch_digest(X, labels),
                X.shape[0],
                exc.message,
            )
            for listener in self._refusal_listeners:
                listener(exc, key)
            raise

    def create(
        self,
        name: str,
        feature_names: Sequence[str],
        classes: Sequence[Any] = (),
        *,
        params: dict[str, Any] | None = None,
        standardize: bool = True,
        allow_new_classes: bool = False,
        key: str | None = None,
    ) -> tuple[LoadedModel, bool]:
        """Create model ``name`` with zero weights (:mod:`model.growth`) as its version 1 in
        the store, and whether this process now serves it: it does when it served no model
        yet and was started for that name or for none (an empty store); otherwise the model
        is in the store for whoever serves it by name."""
        check_model_name(name)
        estimator = create_estimator(
            feature_names,
            classes,
            params=params,
            standardize=standardize,
            allow_new_classes=allow_new_classes,
        )
        training = {"created": "POST /models", "key": key}
        loaded = self.repository.create(estimator, name, training=training)
        served = self.current is None and self.requested_name in (None, name)
        if served:
            self._swap(loaded)
            log.info("created model %r (version 1) and serving it", name)
        else:
            log.info("created model %r (version 1) in %s", name, self.repository)
        return loaded, served

    def page(self, limit: int, before: int | None) -> VersionPage:
        """One page of the served model's versions, newest first."""
        return self.repository.page(self.require().name, limit, before)

    def detail(self, version: int) -> VersionDetail:
        """One version of the served model, without materializing its weights."""
        return self.repository.detail(self.require().name, version)

    def activate(self, version: int, key: str | None = None) -> LoadedModel:
        """Make a stored version active (``key``: the client that asked, for listeners)."""
        current = self.require()
        loaded = self.repository.activate(current.name, version, on_commit=self._swap)
        for listener in self._activation_listeners:
            listener(loaded, key)
        return loaded
