"""Minibatch SGD with classical momentum, L2 and learning-rate schedules, as pure functions.

The whole trainable state (weights, bias, momentum buffers, step count) lives in one frozen
:class:`TrainState`; :func:`sgd_step` returns a new one and never edits its input, so a reader
holding the old state always sees a consistent model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .maths import Float, Gradient, Index, loss_and_gradient
from .params import PARAMETERS, check_params

__all__ = ["SCHEDULES", "SGDSettings", "TrainState", "sgd_step"]

SCHEDULES = PARAMETERS["schedule"].choices


@dataclass(frozen=True)
class SGDSettings:
    """Optimizer settings.

    ``learning_rate`` is the step size ``eta0``. With ``schedule="invscaling"`` step ``t`` uses
    ``eta0 / (1 + t / decay_steps) ** power_t``. ``momentum`` is the classical (heavy-ball)
    coefficient ``mu``: ``v <- mu v - eta g``, ``w <- w + v``; 0 turns it off. ``l2`` weights the
    ``(l2/2)||W||^2`` penalty. Defaults and valid ranges are declared in :mod:`model.params`.
    """

    learning_rate: float = PARAMETERS["learning_rate"].default
    schedule: str = PARAMETERS["schedule"].default
    power_t: float = PARAMETERS["power_t"].default
    decay_steps: float = PARAMETERS["decay_steps"].default
    momentum: float = PARAMETERS["momentum"].default
    l2: float = PARAMETERS["l2"].default

    def __post_init__(self) -> None:
        check_params(self.__dict__)

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

    def with_velocities(self, weights: Float | None, bias: Float | None) -> TrainState:
        """This state with other momentum buffers (``dataclasses.replace``, made cheaper)."""
        if type(self) is not TrainState:
            return replace(self, velocity_weights=weights, velocity_bias=bias)
        return TrainState(self.weights, self.bias, weights, bias, self.step)

    def is_finite(self) -> bool:
        # A sum is non-finite as soon as one term is NaN or inf; cheaper than isfinite().all().
        # Only a non-finite sum (inf - inf, or huge finite terms overflowing) needs the exact,
        # slower check, and it must not warn: the caller turns the answer into an error.
        with np.errstate(over="ignore", invalid="ignore"):
            # Python's float addition: inf + -inf is NaN, and an overflow is inf, silently.
            if math.isfinite(float(self.weights.sum()) + float(self.bias.sum())):
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
