"""Minibatch SGD with classical momentum, L2 and learning-rate schedules, as pure functions.

The whole trainable state (weights, bias, momentum buffers, step count) lives in one frozen
:class:`TrainState`; :func:`sgd_step` returns a new one and never edits its input, so a reader
holding the old state always sees a consistent model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InvalidParameterError
from .maths import Float, Gradient, Index, loss_and_gradient

__all__ = ["SCHEDULES", "SGDSettings", "TrainState", "sgd_step"]

SCHEDULES = ("constant", "invscaling")


@dataclass(frozen=True)
class SGDSettings:
    """Optimizer settings.

    ``learning_rate`` is the step size ``eta0``. With ``schedule="invscaling"`` step ``t`` uses
    ``eta0 / (1 + t / decay_steps) ** power_t``. ``momentum`` is the classical (heavy-ball)
    coefficient ``mu``: ``v <- mu v - eta g``, ``w <- w + v``; 0 turns it off. ``l2`` weights the
    ``(l2/2)||W||^2`` penalty.
    """

    learning_rate: float = 0.05
    schedule: str = "constant"
    power_t: float = 0.5
    decay_steps: float = 1000.0
    momentum: float = 0.9
    l2: float = 1e-3

    def __post_init__(self) -> None:
        for name in ("learning_rate", "power_t", "decay_steps", "momentum", "l2"):
            value = getattr(self, name)
            # Without this, a string would fail the range checks below with a bare TypeError.
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise InvalidParameterError(f"{name} must be a number, got {value!r}", field=name)
        checks = [
            ("learning_rate", self.learning_rate > 0 and np.isfinite(self.learning_rate), "> 0"),
            ("power_t", 0 <= self.power_t <= 10, "in [0, 10]"),
            ("decay_steps", self.decay_steps > 0 and np.isfinite(self.decay_steps), "> 0"),
            ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
            ("l2", 0 <= self.l2 < np.inf, ">= 0 and finite"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise InvalidParameterError(
                    f"{name} must be {expected}, got {getattr(self, name)!r}", field=name
                )
        if self.schedule not in SCHEDULES:
            raise InvalidParameterError(
                f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}",
                field="schedule",
            )

    def rate(self, step: int) -> float:
        """Learning rate for the ``step``-th update (0-based)."""
        if self.schedule == "invscaling":
            return float(self.learning_rate / (1.0 + step / self.decay_steps) ** self.power_t)
        return self.learning_rate


@dataclass(frozen=True)
class TrainState:
    """Everything an update changes. ``weights: (d, k)``, ``bias: (k,)``; the velocities have
    the same shapes, or are ``None`` when momentum is off."""

    weights: Float
    bias: Float
    velocity_weights: Float | None
    velocity_bias: Float | None
    step: int

    @classmethod
    def zeros(cls, n_features: int, n_classes: int, momentum: bool) -> TrainState:
        def buffers() -> tuple[Float, Float]:
            return np.zeros((n_features, n_classes)), np.zeros(n_classes)

        weights, bias = buffers()
        velocity_weights, velocity_bias = buffers() if momentum else (None, None)
        return cls(weights, bias, velocity_weights, velocity_bias, 0)

    def is_finite(self) -> bool:
        # A sum is non-finite as soon as one term is NaN or inf; cheaper than isfinite().all().
        # Only a non-finite sum (inf - inf, or huge finite terms overflowing) needs the exact,
        # slower check, and it must not warn: the caller turns the answer into an error.
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(np.sum(self.weights)) and np.isfinite(np.sum(self.bias)):
                return True
        return bool(np.isfinite(self.weights).all() and np.isfinite(self.bias).all())


def sgd_step(
    state: TrainState,
    X: Float,
    y: Index,
    settings: SGDSettings,
    learning_rate: float | None = None,
) -> tuple[TrainState, Gradient]:
    """One SGD step on the minibatch ``X: (m, d)``, ``y: (m,)``.

    Returns the new state and the :class:`Gradient` taken at the *old* parameters, whose loss
    and correct count are the minibatch's prequential (test-then-train) figures.
    ``learning_rate`` overrides the schedule for this step only; the step count advances either
    way so the schedule continues where it was.
    """
    eta = settings.rate(state.step) if learning_rate is None else learning_rate
    grad = loss_and_gradient(X, y, state.weights, state.bias, settings.l2)
    grad_w, grad_b = grad.weights, grad.bias
    if state.velocity_weights is not None and state.velocity_bias is not None:
        velocity_weights = settings.momentum * state.velocity_weights - eta * grad_w
        velocity_bias = settings.momentum * state.velocity_bias - eta * grad_b
        weights = state.weights + velocity_weights
        bias = state.bias + velocity_bias
        return TrainState(weights, bias, velocity_weights, velocity_bias, state.step + 1), grad
    weights = state.weights - eta * grad_w
    bias = state.bias - eta * grad_b
    return TrainState(weights, bias, None, None, state.step + 1), grad
