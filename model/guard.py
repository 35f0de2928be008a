"""The guard: held-out labelled rows that judge an online update before it is committed.

**The guard set** of a version is a sample the model is never trained on: the offline
validation rows the training CLI split off (kept for good), plus a reservoir of online rows
that ``/train`` held out instead of training on (every ``holdout_every``-th row of the stream;
the oldest go first once the reservoir is full). It is part of the version's durable state:
stored with snapshots, grown by updates, rebuilt by replay, so every process judges the same
update the same way.

**The verdict** (:func:`judge`) compares the candidate model (the active one after the update)
with the active one, and combines four signals, because none alone separates honest batches
from harmful ones:

* *damage*: the candidate's log-loss on the guard set may rise by at most
  ``max_loss_increase`` over the active model's. A step that is too large for the data (a
  hostile learning rate, many passes, a row far from anything seen) fails this.
* *size*: an update may ask for at most ``max_rate_ratio`` times the model's own step (its
  learning rate times the passes), and may move the weights by at most ``max_step`` of their
  size. A hostile learning rate fails this even on a batch the model already fits.
* *surprise*: under the active model, each row of the batch has a loss; a row is surprising
  when its loss exceeds the ``surprise_quantile`` of the guard set's per-row losses. Honest
  rows from the same distribution are surprising with probability about
  ``1 - surprise_quantile`` (the upper confidence bound of the rate the guard set shows, so a
  small guard set judges leniently); the batch is refused when its count of surprising rows
  would happen by chance with probability below ``surprise_alpha`` (a binomial tail).
  Mislabelled batches (labels shifted,
  swapped) fail this long before they do measurable damage to the guard loss.

These judge one update; :mod:`model.guard_history` adds two tests across updates (pooled
surprise, damage since a reference version), for streams of updates each too small to refuse.

Both signals also refuse legitimate change: a real drift of the labels (the concept changed) is
surprising, and a new region of the input space may raise the guard loss. The service lets an
administrator force such an update through, or run the guard in ``log`` mode (judge, record,
never refuse); see README, "The guard".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from .errors import OutOfRangeError
from .maths import Float, Index, mean, row_cross_entropy
from .preprocessing import Standardizer

__all__ = [
    "GUARD_BYTES",
    "GuardFigures",
    "GuardPolicy",
    "GuardSet",
    "Verdict",
    "binomial_tail",
    "check_in_range",
    "extended_figures",
    "figures",
    "figures_of",
    "holdout_mask",
    "judge",
    "relative_step",
    "row_losses",
    "scored",
    "upper_rate",
]

GUARD_BYTES = 32 * 1024 * 1024  # at most this much float64 guard data per model version

Mode = Literal["enforce", "log", "off"]


@dataclass(frozen=True)
class GuardPolicy:
    """How updates are judged. ``mode``: ``enforce`` refuses, ``log`` judges and records but
    never refuses, ``off`` does not judge. Fewer than ``min_rows`` guard rows: no judgement."""

    mode: Mode = "enforce"
    max_loss_increase: float = 0.05
    max_step: float = 0.25
    max_rate_ratio: float = 10.0
    surprise_quantile: float = 0.95
    surprise_alpha: float = 1e-2
    min_rows: int = 10
    max_abs_z: float = 500.0
    # Across updates (model/guard_history.py): the pooled surprise test looks for a stream
    # whose rows are surprising at this rate or more; the updates since the reference version
    # may raise the guard-set log-loss by at most max_total_loss_increase (paired, times the
    # loss above 1), the reference moving to the active version after every reference_every
    # accepted updates.
    suspect_rate: float = 0.5
    max_total_loss_increase: float = 0.05
    reference_every: int = 25


@dataclass(frozen=True, eq=False)
class GuardSet:
    """Held-out rows ``X: (g, d)`` (raw, as sent) and class indices ``y: (g,)``; the first
    ``offline`` rows came from the offline validation split and are never evicted."""

    X: Float
    y: Index
    offline: int = 0
    _standardized: dict[int, tuple[Standardizer, Float]] = field(
        default_factory=dict, compare=False, repr=False
    )
    # Set by extended: the parent's cache above, the rows added and the online capacity, so
    # that this set is standardized from the parent's standardized rows once the parent has
    # them (an update extends the guard set before judging on the parent's).
    _grown_from: list[tuple[dict[int, tuple[Standardizer, Float]], Float, int]] = field(
        default_factory=list, compare=False, repr=False
    )

    def standardized(self, standardizer: Standardizer) -> Float:
        """``X`` standardized (computed once per standardizer: online versions share theirs)."""
        cached = self._standardized.get(id(standardizer))
        if cached is None or cached[0] is not standardizer:
            cached = (standardizer, self._standardize(standardizer))
            self._standardized[id(standardizer)] = cached
        return cached[1]

    def _standardize(self, standardizer: Standardizer) -> Float:
        """``standardizer.transform(self.X)``. Standardizing works value by value, so when the
        parent's rows are standardized already, its kept rows are taken from there and only
        the added ones are standardized: the same values, a copy instead of a pass."""
        if self._grown_from:
            parent, added, capacity = self._grown_from.pop()
            found = parent.get(id(standardizer))
            # (Standardizer's own transform: another one may not work value by value.)
            if (
                found is not None
                and found[0] is standardizer
                and type(standardizer) is Standardizer
                and self.X.dtype == added.dtype
            ):
                return _appended(found[1], self.offline, standardizer.transform(added), capacity)
        return standardizer.transform(self.X)

    @classmethod
    def empty(cls, n_features: int) -> GuardSet:
        return cls(np.empty((0, n_features)), np.empty(0, dtype=np.intp), 0)

    @property
    def rows(self) -> int:
        return int(self.y.shape[0])

    def extended(self, X: Float, y: Index, online_capacity: int) -> GuardSet:
        """These online rows added; the oldest online rows beyond ``online_capacity`` dropped."""
        if not y.shape[0]:
            return self
        X_all = _appended(self.X, self.offline, X, online_capacity)
        y_all = _appended(self.y, self.offline, y, online_capacity).astype(np.intp, copy=False)
        grown = GuardSet(X_all, y_all, self.offline)
        grown._grown_from.append((self._standardized, X, online_capacity))
        return grown


@dataclass(frozen=True)
class GuardFigures:
    """One model on one guard set: mean log-loss and accuracy, the per-row loss above which a
    row counts as surprising, and how often an honest row may be expected to exceed it: the
    99% upper confidence bound of the guard rows' own exceedance rate (Wilson), so that a
    small guard set makes the surprise test more lenient, never trigger-happy."""

    rows: int
    log_loss: float
    accuracy: float
    surprise_threshold: float
    surprise_rate: float
    losses: Float = field(compare=False, repr=False)  # (rows,) each row's loss
    correct: NDArray[np.bool_] = field(compare=False, repr=False)  # (rows,) predicted right

    def to_json(self) -> dict[str, float | int]:
        return {"rows": self.rows, "log_loss": self.log_loss, "accuracy": self.accuracy}


Reason = Literal["guard_loss", "surprise", "step", "rate", "guard_loss_total", "surprise_pooled"]


@dataclass(frozen=True)
class Verdict:
    """The guard's judgement of one update, with the figures behind it."""

    accepted: bool
    reason: Reason | None
    guard_rows: int
    loss_before: float
    loss_after: float
    accuracy_before: float
    accuracy_after: float
    surprising_rows: int
    batch_rows: int
    surprise_p_value: float
    step: float
    rate_ratio: float
    max_loss_increase: float
    surprise_alpha: float
    max_step: float
    max_rate_ratio: float
    surprise_quantile: float
    # Across updates (model/guard_history.py; zero when not judged that way): the pooled
    # surprise evidence after this update, overall and for the request's key, and its limit;
    # the reference version and its loss, this update's loss on the same rows, and the limit.
    pooled_surprise: float = 0.0
    key_pooled_surprise: float = 0.0
    pooled_limit: float = 0.0
    reference_version: int = 0
    reference_loss: float = 0.0
    loss_vs_reference: float = 0.0
    max_total_loss_increase: float = 0.0
    suspect_rate: float = 0.0

    @property
    def loss_increase(self) -> float:
        return self.loss_after - self.loss_before

    def to_json(self) -> dict[str, Any]:
        # What dataclasses.asdict gave (every field is a scalar: its deep copy is itself),
        # without its recursive copying.
        out = {name: getattr(self, name) for name in _VERDICT_FIELDS}
        out["loss_increase"] = self.loss_increase
        return out

    def explain(self) -> str:
        """One sentence for the refusal message."""
        if self.reason == "rate":
            return (
                f"it asks for {self.rate_ratio:.3g} times the model's own step (learning rate "
                f"x passes); at most {self.max_rate_ratio:g} times is accepted (lower the "
                "learning rate or the passes, or ask an administrator to force it)"
            )
        if self.reason == "step":
            return (
                f"it would move the weights by {self.step:.1%} of their size in one update (at "
                f"most {self.max_step:.1%} is accepted: lower the learning rate or the passes)"
            )
        if self.reason == "guard_loss_total":
            return (
                f"it would raise the log-loss on the held-out guard rows to "
                f"{self.loss_vs_reference:.4f}, "
                f"+{self.loss_vs_reference - self.reference_loss:.4f} over version "
                f"{self.reference_version}'s {self.reference_loss:.4f} (at most "
                f"+{self.max_total_loss_increase:g} since that reference is accepted): the "
                "updates since then add up to too much damage"
            )
        if self.reason == "surprise_pooled":
            return (
                f"its labels add to a run of surprising updates: the pooled evidence against "
                f"the recent stream (overall {self.pooled_surprise:.3g}, this key "
                f"{self.key_pooled_surprise:.3g}) would pass {self.pooled_limit:.3g} = "
                f"ln(1/{self.surprise_alpha:g}): mislabelled data sent a little at a time, or "
                "a real change that an administrator can force through"
            )
        if self.reason == "guard_loss":
            return (
                f"it would raise the log-loss on {self.guard_rows} held-out guard rows from "
                f"{self.loss_before:.4f} to {self.loss_after:.4f} (+{self.loss_increase:.4f}; "
                f"at most +{self.max_loss_increase:g} is accepted)"
            )
        return (
            f"{self.surprising_rows} of its {self.batch_rows} rows have labels the model finds "
            f"less likely than {self.surprise_quantile:.0%} of the held-out rows' (p = "
            f"{self.surprise_p_value:.2g} "
            f"by chance, below {self.surprise_alpha:g}): mislabelled data, or a real change "
            "that an administrator can force through"
        )


_VERDICT_FIELDS = tuple(f.name for f in fields(Verdict))
_FLOAT64 = np.dtype(np.float64)
_BOOL = np.dtype(np.bool_)


def newest(rows: NDArray[Any], count: int) -> NDArray[Any]:
    """The last ``count`` rows (none for 0: ``rows[-0:]`` would be all of them)."""
    return rows[max(0, rows.shape[0] - count) :]


def _appended(rows: NDArray[Any], offline: int, new: NDArray[Any], capacity: int) -> NDArray[Any]:
    """``rows[:offline]`` followed by the newest ``capacity`` of ``rows[offline:]`` and then
    ``new``: what concatenating the online part with ``new``, keeping its :func:`newest`
    rows and putting the offline part back in front gives, copied once."""
    old = rows.shape[0] - offline
    drop = max(0, old + new.shape[0] - capacity)  # the oldest online rows that go
    if drop <= old:
        return np.concatenate([rows[:offline], rows[offline + drop :], new])
    return np.concatenate([rows[:offline], new[drop - old :]])


def scored(estimator: Any, X: Float, y: Index) -> tuple[Float, NDArray[np.bool_]]:
    """Each row's cross-entropy ``(m,)`` and whether the model predicts it right ``(m,)``:
    one forward pass over checked raw rows ``X: (m, d)``."""
    Z = estimator.decision_function_checked(X)
    losses = row_cross_entropy(Z, y)
    correct: NDArray[np.bool_] = Z.argmax(axis=1) == y
    return losses, correct


def row_losses(estimator: Any, X: Float, y: Index) -> Float:
    """Per-row cross-entropy ``(m,)`` of a fitted estimator on checked raw rows ``X: (m, d)``."""
    if not X.shape[0]:
        return np.empty(0)
    Z = estimator.decision_function_checked(X)
    return row_cross_entropy(Z, y)


def figures(estimator: Any, guard: GuardSet, quantile: float) -> GuardFigures | None:
    """How ``estimator`` does on ``guard`` (None for an empty guard set): one forward pass."""
    if not guard.rows:
        return None
    state = estimator.state_
    Z = guard.standardized(estimator.standardizer_) @ state.weights + state.bias
    losses = row_cross_entropy(Z, guard.y)
    return figures_of(losses, Z.argmax(axis=1) == guard.y, quantile)


def figures_of(losses: Float, correct: NDArray[np.bool_], quantile: float) -> GuardFigures:
    """The figures of per-row ``losses`` and ``correct`` flags (``(g,)`` each, ``g >= 1``)."""
    rows = len(losses)
    threshold = _higher_quantile(losses, quantile)
    exceeding = int(np.count_nonzero(losses > threshold))
    return GuardFigures(
        rows=rows,
        log_loss=mean(losses),
        accuracy=_mean_of_flags(correct),
        surprise_threshold=threshold,
        surprise_rate=max(1.0 - quantile, upper_rate(exceeding, rows)),
        losses=losses,
        correct=correct,
    )


def _mean_of_flags(flags: NDArray[np.bool_]) -> float:
    """``float(flags.mean())``: for booleans, their count over their number (NumPy sums them
    as float64 0s and 1s, exactly, and divides once), without the generic mean's overhead."""
    if flags.dtype is not _BOOL or not flags.size:
        return float(flags.mean())
    return int(np.count_nonzero(flags)) / flags.size


def _higher_quantile(values: Float, quantile: float) -> float:
    """``np.quantile(values, quantile, method="higher")`` for 1-D float64 ``values``: the same
    order statistic, found the way NumPy finds it (one partition at the same positions, the
    index computed with the same arithmetic), without its general-purpose overhead."""
    if (
        values.ndim != 1
        or values.dtype is not _FLOAT64
        or not isinstance(quantile, float)
        or not 0.0 <= quantile <= 1.0
        or not len(values)
    ):
        return float(np.quantile(values, quantile, method="higher"))
    index = math.ceil((len(values) - 1) * quantile)
    ordered = values.copy()  # np.partition(values, ...), without its dispatch
    ordered.partition((index, -1))
    # NumPy's answer for values holding NaN (which sorts last) is NaN.
    last = ordered[-1]
    return float(last if last != last else ordered[index])


def extended_figures(
    found: GuardFigures,
    offline: int,
    losses: Float,
    correct: NDArray[np.bool_],
    online_capacity: int,
    quantile: float,
) -> GuardFigures:
    """The figures of the same model on its guard set after :meth:`GuardSet.extended` with
    rows whose ``losses`` and ``correct`` flags are given: no second forward pass."""
    return figures_of(
        _appended(found.losses, offline, losses, online_capacity),
        _appended(found.correct, offline, correct, online_capacity),
        quantile,
    )


def upper_rate(successes: int, trials: int, z: float = 2.3263) -> float:
    """An upper confidence bound of a rate seen ``successes`` times in ``trials``: Wilson's
    score bound, one-sided 99% (``z``); it costs nothing and, at the small counts that matter
    here, agrees with the exact (Clopper-Pearson) bound to within a few percent.

    >>> round(upper_rate(0, 15), 3)
    0.265
    """
    if successes >= trials:
        return 1.0
    rate = successes / trials
    z2 = z * z
    centre = rate + z2 / (2 * trials)
    spread = z * math.sqrt(rate * (1 - rate) / trials + z2 / (4 * trials * trials))
    return min(1.0, (centre + spread) / (1 + z2 / trials))


def judge(
    before: GuardFigures,
    after: GuardFigures,
    batch_losses: Float,
    step: float,
    rate_ratio: float,
    policy: GuardPolicy,
) -> Verdict:
    """The verdict on an update, from the active model's figures (``before``), the candidate's
    (``after``), the batch's per-row losses under the active model, the update's ``step`` (how
    far it moves the weights, relative to their size: :func:`relative_step`) and its
    ``rate_ratio`` (learning rate x passes asked for, over the model's own learning rate)."""
    surprising = int(np.count_nonzero(batch_losses > before.surprise_threshold))
    m = int(batch_losses.shape[0])
    p_value = binomial_tail(surprising, m, before.surprise_rate)
    reason: Reason | None = None
    if rate_ratio > policy.max_rate_ratio:
        reason = "rate"
    elif after.log_loss - before.log_loss > policy.max_loss_increase:
        reason = "guard_loss"
    elif p_value < policy.surprise_alpha:
        reason = "surprise"
    elif step > policy.max_step:
        reason = "step"
    return Verdict(
        accepted=reason is None,
        reason=reason,
        guard_rows=before.rows,
        loss_before=before.log_loss,
        loss_after=after.log_loss,
        accuracy_before=before.accuracy,
        accuracy_after=after.accuracy,
        surprising_rows=surprising,
        batch_rows=m,
        surprise_p_value=p_value,
        step=step,
        rate_ratio=rate_ratio,
        max_loss_increase=policy.max_loss_increase,
        surprise_alpha=policy.surprise_alpha,
        max_step=policy.max_step,
        max_rate_ratio=policy.max_rate_ratio,
        surprise_quantile=policy.surprise_quantile,
    )


def relative_step(before: Float, after: Float) -> float:
    """``||after - before|| / ||before||`` (Frobenius): how far an update moves the weights,
    relative to their size (against a zero matrix: the absolute size of the move)."""
    size = _frobenius(before)
    moved = _frobenius(after - before)
    return moved / size if size > 0 else moved


def _frobenius(matrix: Float) -> float:
    """``float(np.linalg.norm(matrix))``: for float64 it is the square root of the flattened
    matrix's dot product with itself, computed here the same way without the dispatch."""
    if not (isinstance(matrix, np.ndarray) and matrix.dtype == np.float64):
        return float(np.linalg.norm(matrix))
    flat = matrix.ravel(order="K")
    return math.sqrt(flat.dot(flat))


def binomial_tail(k: int, n: int, p: float) -> float:
    """``P(X >= k)`` for ``X ~ Binomial(n, p)``, summed in log space (no overflow for any n).

    >>> round(binomial_tail(5, 16, 0.05), 5)
    0.00086
    """
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    # log(j!) from a table kept between calls (the same values as math.lgamma(j + 1)),
    # computed at each term for batches too large to tabulate.
    log_factorial = _log_factorials(n) if n <= _TABLE_LIMIT else None
    total = 0.0
    for j in range(k, n + 1):
        if log_factorial is not None:
            log_j, log_rest, log_n = log_factorial[j], log_factorial[n - j], log_factorial[n]
        else:
            log_j, log_rest, log_n = math.lgamma(j + 1), math.lgamma(n - j + 1), math.lgamma(n + 1)
        term = math.exp(log_n - log_j - log_rest + j * log_p + (n - j) * log_q)
        total += term
        if j > n * p and term < total * 1e-15:  # past the mode the terms only shrink
            break
    return min(total, 1.0)


_LOG_FACTORIALS: list[float] = [0.0]  # math.lgamma(i + 1) at i, for the first few i
_TABLE_LIMIT = 1 << 16


def _log_factorials(n: int) -> list[float]:
    """At least ``[math.lgamma(i + 1) for i in range(n + 1)]``, kept between calls (the same
    values, computed once): replaced whole when it grows, so a reader never sees it partly
    extended."""
    global _LOG_FACTORIALS
    table = _LOG_FACTORIALS
    if len(table) <= n:
        table = table + [math.lgamma(i + 1) for i in range(len(table), n + 1)]
        _LOG_FACTORIALS = table
    return table


def holdout_mask(rows_seen: int, n_rows: int, every: int) -> NDArray[np.bool_]:
    """Which of the next ``n_rows`` rows of the stream go to the guard set: the stream's
    ``every``-th, ``2 * every``-th, ... row (counting from 1), whoever sends them. ``every``
    of 0 holds nothing out."""
    mask: NDArray[np.bool_] = np.zeros(n_rows, dtype=bool)
    if every > 0:  # row i (from 0) is the stream's (rows_seen + i + 1)-th
        mask[(-rows_seen - 1) % every :: every] = True
    return mask


def check_in_range(standardizer: Standardizer, X: Float, limit: float) -> None:
    """Refuse rows whose standardized features lie beyond ``limit`` standard deviations of
    the training data (:class:`OutOfRangeError` naming the first row and column)."""
    with np.errstate(over="ignore", invalid="ignore"):
        z = np.abs(standardizer.transform(X))
        # The largest first (fmax passes over NaN, which compares false below too): only a
        # refusal needs the comparison of every value.
        if z.size and not np.fmax.reduce(z, axis=None) > limit:
            return
        far = z > limit
    if far.any():
        row, column = (int(v) for v in np.argwhere(far)[0])
        raise OutOfRangeError(
            f"instances: row {row}, column {column} is {z[row, column]:.3g} standard deviations "
            f"from the training data's mean (at most {limit:g} are accepted for training; such "
            "a row may still be predicted)",
            field="instances",
            row=row,
        )
