"""Per-key token buckets on /train: requests per second and rows per second.

Each limited key has up to two buckets, refilled continuously at its rate on a monotonic clock
and holding at most ``burst_seconds`` of it. A request takes one request token when it is
authenticated (before its body is read) and ``len(instances)`` row tokens once its body is
parsed; a bucket that is short refuses with :class:`~service.errors.TooManyRequestsError` and
takes nothing. A batch larger than a full rows bucket is let through when the bucket is full
and leaves it in debt, so the long-run rate holds and no batch size is refused for ever.

The buckets live in one process: with N workers (or replicas) a key gets N times its rate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .errors import TooManyRequestsError
from .keys import Caller, RateLimit

__all__ = ["RateLimiter", "TokenBucket"]


class TokenBucket:
    """``rate`` tokens per second, at most ``capacity`` held; starts full."""

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate, self.capacity = rate, capacity
        self._tokens, self._at = capacity, now

    def wait(self, n: float, now: float) -> float:
        """Seconds until ``n`` tokens may be taken (0: now). Takes nothing."""
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        missing = min(n, self.capacity) - self._tokens
        return max(0.0, missing / self.rate)

    def take(self, n: float) -> None:
        """Take ``n`` tokens, after :meth:`wait` said 0 (may leave the bucket in debt)."""
        self._tokens -= n


class RateLimiter:
    """The buckets of every limited key; a key without limits is never throttled."""

    def __init__(
        self, limits: dict[str, RateLimit], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        now = clock()
        self._requests: dict[str, TokenBucket] = {}
        self._rows: dict[str, TokenBucket] = {}
        for name, limit in limits.items():
            if limit.requests_per_second is not None:
                rate = limit.requests_per_second
                # At least one request fits, however slow the rate.
                capacity = max(1.0, rate * limit.burst_seconds)
                self._requests[name] = TokenBucket(rate, capacity, now)
            if limit.rows_per_second is not None:
                rate = limit.rows_per_second
                self._rows[name] = TokenBucket(rate, max(1.0, rate * limit.burst_seconds), now)

    def __bool__(self) -> bool:
        return bool(self._requests or self._rows)

    def take_request(self, caller: Caller) -> None:
        """One request of ``caller``'s, or 429 (nothing taken)."""
        bucket = self._requests.get(caller.name)
        if bucket is not None:
            self._take(bucket, caller, 1, "requests")

    def take_rows(self, caller: Caller, n: int) -> None:
        """``n`` rows of ``caller``'s (a /train minibatch, once parsed), or 429 (nothing taken)."""
        bucket = self._rows.get(caller.name)
        if bucket is not None:
            self._take(bucket, caller, n, "rows")

    def _take(self, bucket: TokenBucket, caller: Caller, n: int, unit: str) -> None:
        with self._lock:
            wait = bucket.wait(n, self._clock())
            if wait == 0.0:
                bucket.take(n)
                return
        raise TooManyRequestsError(
            f"the key {caller.name!r} is over its rate limit of {bucket.rate:g} {unit} per "
            f"second (burst {bucket.capacity:g}); retry in {wait:.3f} s",
            retry_after=wait,
        )
