"""Drift, observed: a Page-Hinkley test on the prequential loss of the online stream.

Each online update reports its minibatch's loss under the model *before* learning from it. When
the data change (new patterns, a changed labelling), that loss rises and stays up. The
Page-Hinkley statistic accumulates how far each loss lies above the running mean (less a
tolerance ``delta``) and raises an alarm once the accumulated rise exceeds ``threshold``; the
accumulation then starts again. An alarm changes nothing by itself: it is for operators
(``/metrics``, ``GET /models/{version}``).

The state is part of each online version's metadata, computed by the writer from its parent's
state, so every process reports the same figures and a restart loses nothing. A new offline
version starts afresh.

>>> state = DriftState()
>>> for loss in [0.2] * 20 + [3.0] * 3:
...     state = state.observe(loss)
>>> state.alarms, state.detected
(1, True)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["DriftState"]


@dataclass(frozen=True)
class DriftState:
    """Page-Hinkley for an increase of the mean: ``n`` losses seen, their running ``mean``,
    the cumulative deviation ``cumulative`` and its minimum so far; ``statistic`` is
    ``cumulative - minimum``. ``alarms`` counts alarms since the last offline version;
    ``last_alarm_at`` is the loss count at the latest one."""

    delta: float = 0.05
    threshold: float = 5.0
    n: int = 0
    mean: float = 0.0
    cumulative: float = 0.0
    minimum: float = 0.0
    alarms: int = 0
    last_alarm_at: int | None = None

    @property
    def statistic(self) -> float:
        return self.cumulative - self.minimum

    @property
    def detected(self) -> bool:
        """Whether drift was detected since the last offline version."""
        return self.alarms > 0

    def observe(self, loss: float) -> DriftState:
        """The state after one more minibatch loss (pure: this state is unchanged)."""
        n = self.n + 1
        mean = self.mean + (loss - self.mean) / n
        cumulative = self.cumulative + loss - mean - self.delta
        minimum = min(self.minimum, cumulative)
        # Built directly rather than with dataclasses.replace, which costs more than the test.
        if cumulative - minimum > self.threshold:  # alarm: count it, then start again
            return type(self)(
                delta=self.delta,
                threshold=self.threshold,
                alarms=self.alarms + 1,
                last_alarm_at=self.total + 1,
            )
        return type(self)(
            delta=self.delta,
            threshold=self.threshold,
            n=n,
            mean=mean,
            cumulative=cumulative,
            minimum=minimum,
            alarms=self.alarms,
            last_alarm_at=self.last_alarm_at,
        )

    @property
    def total(self) -> int:
        """Losses observed since the last alarm or the start, plus those before it."""
        return self.n + (self.last_alarm_at or 0)

    def to_json(self) -> dict[str, Any]:
        # What dataclasses.asdict gave (the fields are scalars), without its deep copies.
        out = {name: getattr(self, name) for name in _FIELDS}
        out["statistic"] = self.statistic
        out["detected"] = self.detected
        return out

    @classmethod
    def from_json(
        cls, data: dict[str, Any] | None, *, delta: float, threshold: float
    ) -> DriftState:
        """The stored state (a fresh one for None), with the current settings."""
        if not data:
            return cls(delta=delta, threshold=threshold)
        fields = {k: data[k] for k in ("n", "mean", "cumulative", "minimum", "alarms") if k in data}
        return cls(
            delta=delta,
            threshold=threshold,
            last_alarm_at=data.get("last_alarm_at"),
            **fields,
        )


_FIELDS = tuple(f.name for f in dataclasses.fields(DriftState))
