"""Settings chosen from the data: what ``"auto"`` means for each hyper-parameter.

:meth:`~model.softmax.SoftmaxRegression.initialize` resolves every ``"auto"`` setting once,
from the training rows (and the validation rows when ``fit`` has them), into concrete values:
the fitted estimator keeps them in ``params_``, the store records them, and every later step
(``partial_fit``, an online update, a reload) uses them. So a fitted model never depends on
``"auto"`` again, and ``fit`` for N steps still equals N ``partial_fit`` calls bit for bit.

The rules (``n`` training rows):

* ``l2 = 1 / n``: the penalty of scikit-learn's ``LogisticRegression(C=1)`` on the mean loss
  (``C * sum(loss) + ||W||^2 / 2`` divided by ``C n``), so both minimize the same objective;
* ``batch_size``: ``n / 250`` rounded to a power of two, within [32, 1024] (and at most ``n``):
  a few hundred steps per epoch on large sets, enough gradient noise to generalize on small ones;
* ``epochs``: enough epochs for about :data:`STEP_BUDGET` steps, but no more than
  :data:`ROW_BUDGET` rows visited, within [5, 100] (a large set's rows repeat each other: a few
  passes reach lbfgs's accuracy there, and more only cost time);
* ``schedule = "linear"``: the rate falls linearly from ``learning_rate`` to 1% of it over
  ``decay_steps = epochs x steps per epoch`` (and stays there);
* ``learning_rate``: a short probe, as the lecture notes advise: from zero weights, each rate of
  a log-scale grid (10^-3 .. 10, a factor of sqrt(10) apart) takes :data:`PROBE_STEPS` steps on
  a seeded subsample of at most :data:`PROBE_ROWS` rows; the rate whose model has the lowest
  log-loss on held-out rows (the validation rows, or training rows outside the subsample) wins.
  Judging on held-out rows, not on the subsample, keeps a rate that only memorizes the
  subsample (many features, few rows) from winning;
* ``online_learning_rate``: for single online minibatches, plain SGD (the service's default):
  the learning rate, but at most ``1 / (1 + mean ||x||^2)`` over standardized rows. A step of
  rate ``eta`` on one row moves that row's logits by ``eta (1 + ||x||^2)`` times its residual
  ``p - y``; below the bound, one row's update cannot overshoot its own target, whatever the
  offline run's momentum or where its schedule ended. An estimator built from settings
  stored before 0.4, which have no such entry, keeps using its schedule's current rate (as it
  always did).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from .maths import Float, Index, cross_entropy
from .optimizer import SGDSettings, TrainState, sgd_step

__all__ = ["AUTO", "PROBE_RATES", "SAMPLE_ROWS", "resolve"]

AUTO = "auto"

STEP_BUDGET = 8000
ROW_BUDGET = 2_000_000  # rows visited: large sets need few passes (their rows repeat each other)
PROBE_ROWS = 2000
PROBE_HOLDOUT = 1000
PROBE_STEPS = 100
SAMPLE_ROWS = PROBE_ROWS + PROBE_HOLDOUT
PROBE_RATES = tuple(10.0 ** (k / 2) for k in range(-6, 1))
PROBE_SAFETY = 1.0  # the rate used, as a fraction of the probe's best
FALLBACK_RATE = 0.05  # too few rows to probe (fewer than MIN_PROBE_ROWS)
MIN_PROBE_ROWS = 20


def resolve(
    params: Mapping[str, Any],
    n: int,
    Xs: Float,
    y: Index,
    *,
    n_classes: int,
    validation: tuple[Float, Index] | None,
) -> dict[str, Any]:
    """``params`` with each ``"auto"`` value replaced by its value for this data.

    ``n`` is the number of training rows; ``Xs: (m, d)`` standardized training rows (all of
    them, or a sample of at least :data:`SAMPLE_ROWS`: the probe looks at no more) and
    ``y: (m,)`` their class indices; ``validation`` the standardized validation rows and
    their indices, if any. Settings that are not ``"auto"`` are kept as they are.
    """
    out = dict(params)
    if out["l2"] == AUTO:
        out["l2"] = 1.0 / n
    if out["batch_size"] == AUTO:
        out["batch_size"] = min(n, int(np.clip(_power_of_two(n / 250), 32, 1024)))
    steps_per_epoch = math.ceil(n / out["batch_size"])
    if out["epochs"] == AUTO:
        budget = min(math.ceil(STEP_BUDGET / steps_per_epoch), math.ceil(ROW_BUDGET / n))
        out["epochs"] = int(np.clip(budget, 5, 100))
    if out["schedule"] == AUTO:
        out["schedule"] = "linear"
        out["decay_steps"] = float(max(1, out["epochs"] * steps_per_epoch))
    if out["learning_rate"] == AUTO:
        out["learning_rate"] = probe_learning_rate(out, Xs, y, n_classes, validation)
    if out["online_learning_rate"] == AUTO:
        # 1 + ||x||^2 is what one row's logits move per unit of step and of residual.
        reach = 1.0 + float(np.einsum("ij,ij->i", Xs, Xs).mean())
        out["online_learning_rate"] = min(float(out["learning_rate"]), 1.0 / reach)
    return out


def probe_learning_rate(
    params: Mapping[str, Any],
    Xs: Float,
    y: Index,
    n_classes: int,
    validation: tuple[Float, Index] | None,
) -> float:
    """The grid rate whose short run from zero weights scores best on held-out rows."""
    n, d = Xs.shape
    if n < MIN_PROBE_ROWS:
        return FALLBACK_RATE
    rng = np.random.default_rng(params["seed"])
    order = rng.permutation(n)
    if validation is None or not validation[1].shape[0]:
        holdout = min(PROBE_HOLDOUT, n // 2)
        held, order = order[:holdout], order[holdout:]
        validation = (Xs[held], y[held])
    rows = order[:PROBE_ROWS]
    X_probe, y_probe = Xs[rows], y[rows]
    batch = min(int(params["batch_size"]), rows.shape[0])
    settings = SGDSettings(
        learning_rate=1.0, momentum=float(params["momentum"]), l2=float(params["l2"])
    )
    best = (math.inf, FALLBACK_RATE)
    with threadpool_limits(limits=1, user_api="blas"):  # small products (see softmax.fit)
        for rate in PROBE_RATES:
            loss = _probe_loss(settings, rate, X_probe, y_probe, batch, n_classes, validation, rng)
            if loss < best[0]:
                best = (loss, rate)
    return best[1] * PROBE_SAFETY


def _probe_loss(
    settings: SGDSettings,
    rate: float,
    X: Float,
    y: Index,
    batch: int,
    n_classes: int,
    validation: tuple[Float, Index],
    rng: np.random.Generator,
) -> float:
    """Held-out log-loss after :data:`PROBE_STEPS` steps at ``rate`` (inf if it diverged)."""
    state = TrainState.zeros(X.shape[1], n_classes, momentum=settings.momentum > 0)
    m = X.shape[0]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        while state.step < PROBE_STEPS:
            order = rng.permutation(m)
            for start in range(0, m, batch):
                rows = order[start : start + batch]
                state, _ = sgd_step(state, X[rows], y[rows], settings, rate)
                if state.step >= PROBE_STEPS:
                    break
            if not state.is_finite():
                return math.inf
        loss = cross_entropy(validation[0] @ state.weights + state.bias, validation[1])
    return loss if math.isfinite(loss) else math.inf


def _power_of_two(x: float) -> int:
    return int(2 ** round(math.log2(max(x, 1.0))))
