"""A PostgreSQL store's outages: telling one from a mistake, and failing fast while it lasts.

**Transient or a mistake.** A failed connection is *transient* when the server could not be
reached or does not accept connections yet: refused, timed out, a host name that does not
resolve (yet), a network that is unreachable, a connection reset, or the server saying it is
starting up, shutting down, in recovery or out of connection slots (:data:`TRANSIENT`, matched
in the driver's message). Anything else said at connection time — a wrong password, no such
role or database, no ``pg_hba.conf`` entry, SSL required, an invalid option — and a schema
newer than this release's is a *configuration mistake*: waiting will not fix it.
:func:`connection_failure` turns a driver error into :class:`~model.errors.StoreUnavailableError`
(transient) or :class:`~model.errors.StoreError` (a mistake), each in one line.

**The short circuit.** Once a connection attempt fails, :class:`Outage` marks the database down:
:meth:`Outage.check` then raises ``StoreUnavailableError`` at once (no wait for the pool) and a
thread probes the database every ``interval`` seconds until it answers, then calls ``on_back``.
Nothing is written while the database is marked down, so nothing acknowledged can be lost by
the short circuit: a request it refuses was refused before it started.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg
from psycopg_pool import PoolTimeout

from .errors import StoreError, StoreUnavailableError

__all__ = ["TRANSIENT", "Outage", "connection_failure", "is_transient"]

log = logging.getLogger("model.pgstore")

# Lower-case fragments of the messages of transient connection failures (libpq's, psycopg's,
# the server's): anything else at connection time is a configuration mistake.
TRANSIENT = (
    "connection refused",
    "timeout expired",
    "timed out",
    "failed to resolve host",
    "could not translate host name",
    "name or service not known",
    "temporary failure in name resolution",
    "nodename nor servname",
    "no address associated with hostname",
    "no route to host",
    "network is unreachable",
    "connection reset",
    "server closed the connection unexpectedly",
    "no such file or directory",  # a Unix socket the server has not created yet
    "the database system is starting up",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "too many clients",
    "remaining connection slots are reserved",
    "terminating connection due to administrator command",
)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()).removeprefix("connection failed: ")
    return text or type(exc).__name__


def is_transient(exc: BaseException) -> bool:
    """True if ``exc`` (a failure to connect) may go away by itself (see the module doc)."""
    if isinstance(exc, PoolTimeout | StoreUnavailableError):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    text = str(exc).lower()
    return any(fragment in text for fragment in TRANSIENT)


def connection_failure(shown: str, exc: BaseException) -> StoreError:
    """The store's error for a failed connection to ``shown`` (an address without password):
    ``StoreUnavailableError`` if transient, else ``StoreError`` naming the mistake."""
    detail = _one_line(exc)
    if is_transient(exc):
        return StoreUnavailableError(
            f"the PostgreSQL store {shown} is unreachable ({detail}); retry shortly"
        )
    return StoreError(f"the PostgreSQL store {shown} refused the connection: {detail}")


class Outage:
    """Whether the database is known to be down, and a thread probing it while it is.

    ``probe()`` connects once and returns, or raises a :class:`StoreError` saying why not;
    ``on_back()`` runs (on the probing thread) when the database answers again."""

    def __init__(
        self, probe: Callable[[], None], on_back: Callable[[], None], *, interval: float = 0.25
    ) -> None:
        self.interval = interval
        self._probe = probe
        self._on_back = on_back
        self._reason: StoreError | None = None
        self._answered = 0.0  # time.monotonic() of the last probe the database answered
        self._lock = threading.Lock()  # one probe at a time; guards _reason and _thread
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def reason(self) -> StoreError | None:
        """Why the database is marked down (None while it is not)."""
        return self._reason

    def check(self) -> None:
        """Raise StoreUnavailableError at once while the database is marked down."""
        reason = self._reason
        if reason is not None:
            raise StoreUnavailableError(reason.message)

    def failed(self, reason: StoreError) -> None:
        """Mark the database down (a connection attempt failed) and start probing it."""
        with self._lock:
            self._mark_down(reason)

    def confirm(self) -> bool:
        """Whether the database answers: probed now, unless it answered a probe within
        ``interval`` (True) or is already marked down (False). A failed probe marks it
        down."""
        with self._lock:
            if self._reason is not None:
                return False
            if time.monotonic() - self._answered < self.interval:
                return True
            try:
                self._probe()
            except StoreError as exc:
                self._mark_down(exc)
                return False
            self._answered = time.monotonic()
            return True

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _mark_down(self, reason: StoreError) -> None:
        if self._reason is None or self._reason.message != reason.message:
            log.info("store down, calls fail at once until it answers: %s", reason.message)
        self._reason = reason
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._watch, name="store-probe", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                try:
                    self._probe()
                except StoreError as exc:
                    self._mark_down(exc)
                    continue
                self._reason = None
                self._answered = time.monotonic()
                self._thread = None
            log.info("the store answers again")
            self._on_back()
            return
        with self._lock:
            self._thread = None
