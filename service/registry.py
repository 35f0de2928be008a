"""Every model of a store, by name: one :class:`~service.runtime.Runtime` per model name.

The native routes serve one model (the resident :class:`Runtime` the app builds); the Open
Inference Protocol addresses models by name (``/v2/models/{name}``). :class:`ModelRegistry`
holds a runtime for each name asked for: loaded from the store on first use, evicted least
recently used once the models held exceed a memory budget, and reloaded per model when the
store's active version moves (one poller for all of them). A model written into the store
while the service runs (by the training CLI, or over HTTP) is found on its first request: a
name is looked up in the store whenever it is not held, so nothing needs a restart.

The registry talks to the :class:`~model.repository.ModelRepository` only (never to files), so
any store back end behind it serves the same way. Usable without HTTP (the unit tests do).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from model import LoadedModel, ModelRepository
from model.errors import ModelError, ModelNotFoundError
from model.repository import check_model_name

from .runtime import Poller, Runtime

__all__ = ["ModelRegistry", "footprint"]

log = logging.getLogger("service.registry")


def footprint(models: Iterable[LoadedModel]) -> int:
    """Bytes of the NumPy arrays ``models`` hold (weights, optimizer state, standardizer,
    guard set): what keeping them in memory costs, near enough for a budget. Arrays shared
    between models (a replayed version keeps its parent's guard rows) count once."""
    seen: set[int] = set()
    total = 0

    def walk(value: Any, depth: int) -> None:
        nonlocal total
        if isinstance(value, np.ndarray):
            if id(value) not in seen:
                seen.add(id(value))
                total += value.nbytes
            return
        if depth == 0 or isinstance(value, str | bytes | int | float | type(None)):
            return
        if isinstance(value, dict):
            items: Iterable[Any] = value.values()
        elif isinstance(value, list | tuple):
            items = value
        elif dataclasses.is_dataclass(value) or hasattr(value, "__dict__"):
            items = vars(value).values() if hasattr(value, "__dict__") else ()
        else:
            return
        for item in items:
            walk(item, depth - 1)

    for loaded in models:
        walk(loaded.estimator, 4)
        walk(loaded.guard, 3)
    return total


class ModelRegistry:
    """Runtimes by model name, loaded on demand, least recently used evicted past
    ``memory_budget`` bytes. ``resident`` (the runtime the native routes serve) is held
    whatever the budget and answers for its own name."""

    def __init__(
        self,
        repository: ModelRepository,
        *,
        memory_budget: int,
        resident: Runtime | None = None,
        metrics_window: int = 1000,
    ) -> None:
        self.repository = repository
        self.memory_budget = memory_budget
        self.resident = resident
        self.metrics_window = metrics_window
        self._held: OrderedDict[str, Runtime] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()  # guards _held and _loading
        self._loading: dict[str, threading.Lock] = {}  # one load per name at a time
        self._poller = Poller("registry-poller", self.refresh)
        self._evict_listeners: list[Callable[[str], None]] = []

    # ------------------------------------------------------------------ lookup
    def held(self, name: str) -> Runtime | None:
        """The runtime of ``name`` if it is in memory (marked as used), else None. Never
        blocks on the store: the routes call it on the event loop."""
        resident = self.resident
        if resident is not None and resident.current is not None and resident.name == name:
            return resident
        with self._lock:
            runtime = self._held.get(name)
            if runtime is not None:
                self._held.move_to_end(name)
            return runtime

    def get(self, name: str) -> Runtime:
        """The runtime serving ``name``, loading its active version if it is not held
        (blocking: call from a worker thread).

        Raises InvalidParameterError for a name no store could hold, ModelNotFoundError for a
        name the store does not hold (or holds no version of yet).
        """
        runtime = self.held(name)
        if runtime is not None:
            return runtime
        check_model_name(name)
        resident = self.resident
        if resident is not None and resident.name == name:
            resident.refresh()  # the default model, not loaded yet: one runtime for it
            if resident.current is not None:
                return resident
        with self._lock:
            loading = self._loading.setdefault(name, threading.Lock())
        with loading:  # a second request for the same name waits for the first one's load
            runtime = self.held(name)
            if runtime is not None:
                return runtime
            try:
                runtime = Runtime(self.repository, name, metrics_window=self.metrics_window)
                runtime.refresh()
                if runtime.current is None:
                    known = ", ".join(self.repository.models()) or "none"
                    raise ModelNotFoundError(
                        f"no model named {name!r} in {self.repository} (models: {known})",
                        field="model_name",
                    )
                with self._lock:
                    self._held[name] = runtime
            finally:  # loaded or not: no lock left behind per name asked for (unknown ones too)
                with self._lock:
                    self._loading.pop(name, None)
            log.info("loaded model %r version %d", name, runtime.current.version)
        self._evict(keep=name)
        return runtime

    def names(self) -> list[str]:
        """Every model the store holds (blocking)."""
        return self.repository.models()

    def held_names(self) -> list[str]:
        """The models in memory, least recently used first (the resident one first of all)."""
        with self._lock:
            names = list(self._held)
        resident = self.resident.name if self.resident is not None else None
        return [resident, *names] if resident and resident not in names else names

    def memory_used(self) -> int:
        """Bytes the held models (every version each holds) take, the resident one included."""
        return footprint(self._all_loaded())

    def _all_loaded(self) -> list[LoadedModel]:
        with self._lock:
            runtimes = list(self._held.values())
        if self.resident is not None:
            runtimes.append(self.resident)
        return [loaded for runtime in runtimes for loaded in runtime.loaded_models()]

    def _evict(self, keep: str) -> None:
        """Drop least recently used runtimes until the held models fit the budget; ``keep``
        (the one just asked for) and the resident one stay, even alone over it."""
        while self.memory_used() > self.memory_budget:
            with self._lock:
                victim = next((name for name in self._held if name != keep), None)
                if victim is None:
                    return
                del self._held[victim]
            log.info("evicted model %r (memory budget %d bytes)", victim, self.memory_budget)
            for listener in self._evict_listeners:
                listener(victim)

    def on_evict(self, listener: Callable[[str], None]) -> None:
        """Call ``listener`` with the name of every model evicted to keep to the budget."""
        self._evict_listeners.append(listener)

    # ------------------------------------------------------------------ reload
    def refresh(self) -> list[str]:
        """Swap in each held model's new active version, if it moved; the names that did.
        A model deleted from the store is dropped (its next request is a 404)."""
        with self._lock:
            runtimes = list(self._held.items())
        swapped = []
        for name, runtime in runtimes:
            try:
                if runtime.refresh():
                    swapped.append(name)
            except ModelNotFoundError:
                with self._lock:
                    if self._held.get(name) is runtime:
                        del self._held[name]
            except ModelError as exc:
                log.warning("reload of model %r failed: %s", name, exc.message)
        if swapped:
            self._evict(keep="")
        return swapped

    def start_polling(self, interval: float) -> None:
        """Reload held models every ``interval`` seconds, and at once when the store notifies
        a change to one of them (PostgreSQL)."""
        self._poller.start(interval, live=self.repository.watch(self._notified))

    def _notified(self, model: str) -> None:
        with self._lock:
            concerned = not model or model in self._held
        if concerned:
            self._poller.wake()

    def stop_polling(self) -> None:
        self._poller.stop()
