"""The estimator's hyper-parameters, each declared once (as scikit-learn's
``_parameter_constraints``): name, default, type, valid range and a one-line help.

From :data:`HYPER_PARAMETERS` derive :meth:`~model.softmax.SoftmaxRegression.get_params` and the
estimator's checks, the checks of :class:`~model.optimizer.SGDSettings`, and the flags of the
training CLI (``python -m model.train``). A new hyper-parameter is a new entry here plus its
keyword in ``SoftmaxRegression.__init__`` (a test holds the two together).

>>> PARAMETERS["momentum"].expected
'in [0, 1)'
>>> check_params({"momentum": 1.0})
Traceback (most recent call last):
    ...
model.errors.InvalidParameterError: momentum must be in [0, 1), got 1.0
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .errors import InvalidParameterError

__all__ = [
    "HYPER_PARAMETERS",
    "LEGACY_DEFAULTS",
    "PARAMETERS",
    "HyperParameter",
    "check_params",
]


@dataclass(frozen=True)
class HyperParameter:
    """One setting. ``kind`` is ``float``, ``int``, ``str`` (one of ``choices``) or ``bool``.

    Numbers must be finite and lie between ``low`` and ``high`` (``None``: unbounded), the ends
    included as ``closed`` says. ``flags`` are the CLI spellings (default ``--name-with-dashes``).
    """

    name: str
    default: Any
    kind: type
    help: str
    low: float | None = None
    high: float | None = None
    closed: Literal["neither", "left", "both"] = "left"
    choices: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    auto: bool = False  # also accepts "auto": chosen from the data (model.autotune)

    @property
    def expected(self) -> str:
        """What a valid value is, as error messages say it."""
        if self.kind is bool:
            return "a boolean"
        if self.kind is str:
            return f"one of {', '.join(self.choices)}"
        if self.kind is int:
            return f"an integer >= {self.low}"
        if self.high is None:
            return f"> {self.low}" if self.closed == "neither" else f">= {self.low} and finite"
        left = "(" if self.closed == "neither" else "["
        right = "]" if self.closed == "both" else ")"
        return f"in {left}{self.low}, {self.high}{right}"

    @property
    def cli_flags(self) -> tuple[str, ...]:
        return self.flags or (f"--{self.name.replace('_', '-')}",)

    def check(self, value: Any) -> None:
        """Raise :class:`InvalidParameterError` (``field`` = the name) unless ``value`` is valid."""
        if self.auto and isinstance(value, str) and value == "auto":
            return
        if self.kind is float and (
            isinstance(value, bool) or not isinstance(value, int | float | np.number)
        ):
            # Without this, a string would fail the range check with a bare TypeError.
            self._refuse("a number", value)
        if not self._accepts(value):
            self._refuse(self.expected, value)

    def _accepts(self, value: Any) -> bool:
        if self.kind is bool:
            return isinstance(value, bool | np.bool_)
        if self.kind is str:
            return value in self.choices
        if self.kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            return False
        if not np.isfinite(value):
            return False
        low_ok = self.low is None or (
            value > self.low if self.closed == "neither" else value >= self.low
        )
        high_ok = self.high is None or (
            value <= self.high if self.closed == "both" else value < self.high
        )
        return bool(low_ok and high_ok)

    def _refuse(self, expected: str, value: Any) -> None:
        raise InvalidParameterError(
            f"{self.name} must be {expected}, got {value!r}", field=self.name
        )


HYPER_PARAMETERS: tuple[HyperParameter, ...] = (
    HyperParameter(
        "learning_rate",
        "auto",
        float,
        "SGD step size eta0 (auto: the best of a short probe over a log-scale grid)",
        low=0,
        closed="neither",
        flags=("--learning-rate", "--lr"),
        auto=True,
    ),
    HyperParameter(
        "schedule",
        "auto",
        str,
        "learning-rate schedule: constant; invscaling: eta0 / (1 + t / decay_steps) ** power_t; "
        "linear: eta0 falling linearly to eta0 / 100 at step decay_steps; auto: linear over "
        "the planned epochs",
        choices=("constant", "invscaling", "linear", "auto"),
    ),
    HyperParameter(
        "power_t", 0.5, float, "exponent of the invscaling schedule", low=0, high=10, closed="both"
    ),
    HyperParameter(
        "decay_steps",
        1000.0,
        float,
        "step scale of invscaling, length of linear",
        low=0,
        closed="neither",
    ),
    HyperParameter(
        "momentum", 0.9, float, "classical momentum coefficient (0: off)", low=0, high=1
    ),
    HyperParameter(
        "l2",
        "auto",
        float,
        "L2 penalty (l2/2)||W||^2, the bias not penalized (auto: 1 / training rows, "
        "scikit-learn's C=1)",
        low=0,
        auto=True,
    ),
    HyperParameter(
        "batch_size",
        "auto",
        int,
        "rows per minibatch (auto: training rows / 250 as a power of two in [32, 1024])",
        low=1,
        auto=True,
    ),
    HyperParameter(
        "epochs",
        "auto",
        int,
        "most passes over the training rows (auto: about 8000 steps, in [5, 100])",
        low=0,
        auto=True,
    ),
    HyperParameter(
        "patience",
        10,
        int,
        "early stopping: epochs without a validation gain of tol (linear schedule: then the "
        "rate anneals to its end over a few epochs before stopping)",
        low=1,
    ),
    HyperParameter(
        "tol", 1e-4, float, "early stopping: the least validation log-loss gain that counts", low=0
    ),
    HyperParameter("seed", 0, int, "seed of each epoch's row order", low=0),
    HyperParameter("standardize", True, bool, "scale features by the training rows' statistics"),
    HyperParameter(
        "online_learning_rate",
        "auto",
        float,
        "default step size of a service's online update (/train: single minibatches, plain "
        "SGD unless the service carries momentum; auto: the learning rate, at most "
        "1 / (1 + mean squared norm of a standardized row))",
        low=0,
        closed="neither",
        auto=True,
    ),
)

PARAMETERS: dict[str, HyperParameter] = {p.name: p for p in HYPER_PARAMETERS}

# The fixed defaults before "auto" (0.4): what a stored version's missing setting meant.
LEGACY_DEFAULTS: dict[str, Any] = {
    "learning_rate": 0.05,
    "schedule": "constant",
    "power_t": 0.5,
    "decay_steps": 1000.0,
    "momentum": 0.9,
    "l2": 1e-3,
    "batch_size": 32,
    "epochs": 100,
    "patience": 10,
    "tol": 1e-4,
    "seed": 0,
    "standardize": True,
}


def check_params(values: Mapping[str, Any]) -> None:
    """Check each setting in ``values`` (names from :data:`PARAMETERS`), in declaration order;
    raise :class:`InvalidParameterError` for the first invalid one."""
    for parameter in HYPER_PARAMETERS:
        if parameter.name in values:
            parameter.check(values[parameter.name])
