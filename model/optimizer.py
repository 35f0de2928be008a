"""Minibatch SGD with classical momentum, L2 and learning-rate schedules, as pure functions.

The whole trainable state (weights, bias, momentum buffers, step count) lives in one frozen
:class:`TrainState`; :func:`sgd_step` returns a new one and never edits its input, so a reader
holding the old state always sees a consistent model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from .errors import InvalidParameterError
from .maths import Float, Index, cross_entropy, loss_and_gradient
from .params import PARAMETERS, check_params

__all__ = [
    "LINEAR_END",
    "SCHEDULES",
    "SGDSettings",
    "StepFigures",
    "TrainState",
    "linear_rate",
    "row_steps",
    "sgd_step",
]

SCHEDULES = tuple(c for c in PARAMETERS["schedule"].choices if c != "auto")


@dataclass(frozen=True)
class SGDSettings:
    """Optimizer settings.

    ``learning_rate`` is the step size ``eta0``. With ``schedule="invscaling"`` step ``t`` uses
    ``eta0 / (1 + t / decay_steps) ** power_t``; with ``schedule="linear"`` it falls linearly
    from ``eta0`` to ``eta0 / 100`` at step ``decay_steps`` and stays there. ``momentum`` is
    the classical (heavy-ball) coefficient ``mu``: ``v <- mu v - eta g``, ``w <- w + v``; 0
    turns it off. ``l2`` weights the ``(l2/2)||W||^2`` penalty. Valid ranges are declared in
    :mod:`model.params`; the values are concrete (an estimator resolves ``"auto"`` first, see
    :mod:`model.autotune`). The defaults are the estimator's fixed defaults before 0.4.
    """

    learning_rate: float = 0.05
    schedule: str = "constant"
    power_t: float = PARAMETERS["power_t"].default
    decay_steps: float = PARAMETERS["decay_steps"].default
    momentum: float = PARAMETERS["momentum"].default
    l2: float = 1e-3

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if isinstance(value, str) and value == "auto":
                raise InvalidParameterError(
                    f"{name}: 'auto' is chosen from the data by SoftmaxRegression.fit; "
                    "SGDSettings needs the value",
                    field=name,
                )
        check_params(self.__dict__)

    def rate(self, step: int) -> float:
        """Learning rate for the ``step``-th update (0-based)."""
        if self.schedule == "invscaling":
            return float(self.learning_rate / (1.0 + step / self.decay_steps) ** self.power_t)
        if self.schedule == "linear":
            return linear_rate(self.learning_rate, step, self.decay_steps)
        return self.learning_rate


LINEAR_END = 0.01  # the linear schedule's last rate, as a fraction of its first


def linear_rate(start: float, step: float, steps: float) -> float:
    """``start`` falling linearly to ``start * LINEAR_END`` over ``steps`` steps, then flat."""
    return float(start * max(1.0 - step / steps * (1.0 - LINEAR_END), LINEAR_END))


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


class StepFigures(NamedTuple):
    """What a step learned about its minibatch before changing the model: the prequential
    (test-then-train) log-loss and the number of rows already classified correctly."""

    loss: float
    correct: int


def sgd_step(
    state: TrainState,
    X: Float,
    y: Index,
    settings: SGDSettings,
    learning_rate: float | None = None,
) -> tuple[TrainState, StepFigures]:
    """One SGD step on the minibatch ``X: (m, d)``, ``y: (m,)``.

    Returns the new state and the minibatch's figures at the *old* parameters.
    ``learning_rate`` overrides the schedule for this step only; the step count advances either
    way so the schedule continues where it was.

    The input state is never edited (a reader may hold it). Besides the new state's own
    arrays, a step allocates one weight-sized array, the gradient, which it then scales in
    place: ``v' = mu v - eta g`` is computed as ``mu v`` into the new velocity, minus
    ``eta g`` scaled in the gradient's buffer, so the result is bit for bit the textbook
    expression's.
    """
    eta = settings.rate(state.step) if learning_rate is None else learning_rate
    grad = loss_and_gradient(X, y, state.weights, state.bias, 0.0)
    grad_w, grad_b = grad.weights, grad.bias  # fresh arrays, ours to scale in place
    momentum = state.velocity_weights is not None and state.velocity_bias is not None
    # The new velocity's buffer (or the new weights', without momentum) holds l2 * W first.
    buffer = np.empty_like(state.weights)
    if settings.l2:
        np.multiply(state.weights, settings.l2, out=buffer)
        grad_w += buffer  # the penalty's gradient, as loss_and_gradient adds it
    grad_w *= eta
    grad_b *= eta
    figures = StepFigures(grad.loss, grad.correct)
    if momentum:
        assert state.velocity_weights is not None and state.velocity_bias is not None
        velocity_weights = np.multiply(state.velocity_weights, settings.momentum, out=buffer)
        velocity_weights -= grad_w
        velocity_bias = settings.momentum * state.velocity_bias - grad_b
        weights = state.weights + velocity_weights
        bias = state.bias + velocity_bias
        return TrainState(weights, bias, velocity_weights, velocity_bias, state.step + 1), figures
    weights = np.subtract(state.weights, grad_w, out=buffer)
    bias = state.bias - grad_b
    return TrainState(weights, bias, None, None, state.step + 1), figures


def row_steps(
    state: TrainState,
    X: Float,
    y: Index,
    rates: Float,
    passes: int,
    *,
    by_row: bool = True,
    lead: bool = False,
    l2: float = 0.0,
) -> tuple[TrainState, StepFigures]:
    """Plain SGD steps on the minibatch ``X: (m, d)``, ``y: (m,)`` with a step size per
    class, ``rates: (k,)``: class ``c``'s column moves by ``rates[c]`` times its gradient.

    ``by_row``: one step per row, in order, ``passes`` times over the rows; row ``i``'s
    gradient is taken at the weights the earlier rows left (what River's ``learn_one`` does
    row after row, here on the whole minibatch in one call). With ``lead``, one step on the
    rows' summed gradient at the old weights comes first (one more pass over the minibatch,
    at the cost of one matrix product). Without ``by_row``: ``passes`` steps on the rows'
    summed gradient (``lead`` adds one). Momentum buffers are carried over unchanged; the
    step count advances by the steps taken over the minibatch (passes, plus the lead).

    Returns the new state and the minibatch's figures at the *old* parameters. The input
    state is never edited: the steps work on one copy of the weights.
    """
    m = y.shape[0]
    summed_steps = lead + (0 if by_row else passes)
    if summed_steps:  # the first summed step's pass gives the figures at the old weights too
        first = loss_and_gradient(X, y, state.weights, state.bias, 0.0)
        figures = StepFigures(first.loss, first.correct)
    else:
        Z = X @ state.weights + state.bias
        figures = StepFigures(cross_entropy(Z, y), int(np.count_nonzero(Z.argmax(axis=1) == y)))
    weights, bias = state.weights.copy(), state.bias.copy()
    # The penalty's step, per class: a row step's, and a summed step's (the m rows' added up,
    # as for their gradients), so that l2 weighs the same whichever way the rows are learnt.
    shrink = 1.0 - l2 * rates if l2 else None
    summed_rates = m * rates  # loss_and_gradient's gradient is the rows' mean
    for summed in range(summed_steps):
        grad = first if not summed else loss_and_gradient(X, y, weights, bias, 0.0)
        if l2:
            weights *= 1.0 - l2 * summed_rates
        step_w, step_b = grad.weights, grad.bias  # fresh arrays, ours to scale in place
        step_w *= summed_rates
        step_b *= summed_rates
        weights -= step_w
        bias -= step_b
    if by_row:
        _steps_by_row(weights, bias, X, y, rates, passes, shrink)
    step = state.step + passes + lead
    return TrainState(weights, bias, state.velocity_weights, state.velocity_bias, step), figures


def _steps_by_row(
    weights: Float,
    bias: Float,
    X: Float,
    y: Index,
    rates: Float,
    passes: int,
    shrink: Float | None,
) -> None:
    """:func:`row_steps`' steps one row at a time, in place in ``weights`` and ``bias``."""
    # The ufuncs' own methods: ndarray.max and .sum add a Python wrapper each, per row.
    outer, largest, total, exp = np.multiply.outer, np.maximum.reduce, np.add.reduce, np.exp
    for _ in range(passes):
        for i in range(y.shape[0]):
            x = X[i]
            p = x @ weights
            p += bias
            p -= largest(p)
            exp(p, out=p)
            p /= total(p)
            p[y[i]] -= 1.0
            p *= rates
            if shrink is not None:
                weights *= shrink
            weights -= outer(x, p)
            bias -= p
