"""The prequential (test-then-train) figures of an online stream over a rolling window of rows.

Each online update records how the model did on its minibatch *before* learning from it
(:class:`~model.artifact.OnlineStats`). :class:`PrequentialWindow` keeps the newest updates
covering at least ``rows`` rows (whole minibatches: the oldest one may straddle the edge) and
answers their row-weighted accuracy and log-loss. It is fed incrementally, so asking costs the
same whatever the window's size.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import NamedTuple, Protocol

__all__ = ["PrequentialFigures", "PrequentialWindow"]


class PrequentialFigures(NamedTuple):
    rows: int
    accuracy: float
    log_loss: float


class _Prequential(Protocol):
    """What an update reports about its minibatch before learning from it (an
    :class:`~model.artifact.OnlineStats` or a :class:`~model.softmax.StepReport`)."""

    @property
    def n(self) -> int: ...
    @property
    def loss_before(self) -> float: ...
    @property
    def accuracy_before(self) -> float: ...


class PrequentialWindow:
    """Row-weighted sums over the newest updates covering ``rows`` rows. Thread-safe."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self._lock = threading.Lock()
        self._updates: deque[tuple[int, float, float]] = deque()
        self._count = 0
        self._loss = 0.0
        self._correct = 0.0

    def add(self, stats: _Prequential) -> None:
        """Append the next update of the stream (oldest first)."""
        with self._lock:
            entry = (stats.n, stats.loss_before * stats.n, stats.accuracy_before * stats.n)
            self._updates.append(entry)
            self._count += entry[0]
            self._loss += entry[1]
            self._correct += entry[2]
            while len(self._updates) > 1 and self._count - self._updates[0][0] >= self.rows:
                n, loss, correct = self._updates.popleft()
                self._count -= n
                self._loss -= loss
                self._correct -= correct

    def figures(self) -> PrequentialFigures | None:
        """The window's figures, or None before the first update."""
        with self._lock:
            if not self._count:
                return None
            return PrequentialFigures(
                self._count, self._correct / self._count, self._loss / self._count
            )
