"""Clients that keep a server busy, recording what it acknowledged."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from .checks import Minibatch

__all__ = ["TrainStream"]


class Served(Protocol):
    """What the clients need of a server: a server subprocess or a container."""

    def client(self, **kwargs: Any) -> httpx.Client: ...


@dataclass
class TrainStream:
    """Clients posting distinct minibatches to /train until told to stop (or the server dies).

    Use it as a context manager, so that its threads end even when the test fails.
    """

    server: Served
    batches: list[Minibatch]
    reconnect: bool = False  # on a dropped connection: go on (else: the server is gone)
    # On a 503: wait its Retry-After and send the same minibatch again, as a client of a
    # store outage does (else: go on with the next one).
    resend_after_503: bool = False
    acknowledged: dict[int, Minibatch] = field(default_factory=dict)  # version -> minibatch
    per_client: list[list[int]] = field(default_factory=list)  # acknowledged, in order
    sent: list[Minibatch] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # answers other than 200 and rejected
    # Refused by the guard (409 update_rejected): stored nowhere. An honest stream meets this
    # rarely, by design (the surprise test's false alarms, at most its alpha per batch).
    rejected: list[Minibatch] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _next(self) -> Minibatch | None:
        with self._lock:
            if self._stop.is_set() or len(self.sent) == len(self.batches):
                return None
            batch = self.batches[len(self.sent)]
            self.sent.append(batch)
            return batch

    def _client(self, order: list[int]) -> None:
        with self.server.client(timeout=15.0) as client:
            batch = self._next()
            while batch is not None:
                try:
                    response = client.post("/train", json=batch.payload())
                except httpx.TransportError:
                    # This update is in flight, not acknowledged: it may or may not be stored.
                    if self.reconnect:
                        batch = self._next()
                        continue
                    return
                if response.status_code == 409 and '"update_rejected"' in response.text:
                    with self._lock:
                        self.rejected.append(batch)
                    batch = self._next()
                    continue
                if response.status_code != 200:
                    with self._lock:
                        self.refused.append(f"{response.status_code} {response.text}")
                    if not (self.resend_after_503 and response.status_code == 503):
                        batch = self._next()
                    elif self._stop.wait(float(response.headers.get("Retry-After", "1"))):
                        return
                    continue
                version = int(response.json()["version"])
                with self._lock:
                    self.acknowledged[version] = batch
                    order.append(version)
                batch = self._next()

    def start(self, clients: int) -> None:
        for _ in range(clients):
            order: list[int] = []
            self.per_client.append(order)
            thread = threading.Thread(target=self._client, args=(order,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def __enter__(self) -> TrainStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
            assert not thread.is_alive(), "a client thread hung"
