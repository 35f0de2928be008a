"""The guard's memory across updates: what a stream of individually small updates adds up to.

:func:`model.guard.judge` looks at one update. A single row can never be improbable enough for
its surprise test (one surprising row happens by chance at the guard set's own rate, about
5 %), and one row's step rarely raises the guard-set loss by ``max_loss_increase``; yet an
online step is a whole step whatever the batch size, so a stream of single mislabelled rows
moves the model as far as a stream of mislabelled batches. Two tests across updates close that
gap. Their state, :class:`GuardHistory`, is written in every online version's metadata
(``guard_history``) by the writer, from its parent's state and the update's figures, so every
worker and every replay judges the next update the same way; a refused update writes nothing
and leaves it unchanged.

* **Pooled surprise** (reason ``surprise_pooled``): a CUSUM of the surprise flags, overall and
  per key. Each update adds the mean, over its rows, of the log-likelihood ratio between
  "surprising at the suspect rate ``suspect_rate``" and "at the honest rate the guard set
  shows" (the same flags and rate as the one-update test: :func:`surprise_evidence`); the sum
  never drops below 0. An update is refused when it would take either sum above
  ``ln(1 / surprise_alpha)``. Under honest data (rows surprising at most at the honest rate)
  the exponential of each run of the sum is a non-negative supermartingale (the mean of the
  rows' ratios is below their product's geometric mean: Jensen), so by Ville's inequality a
  run started by a surprising update reaches the limit with probability at most
  ``surprise_alpha``: an honest stream is refused at most about ``rate x alpha`` of the time
  (rate ~0.05 to 0.1, alpha 0.01), whatever its batch size. Each update counts once, whatever
  its size, because each is one step: a mislabelled single row weighs as much as a
  mislabelled batch, and a large honest batch does not pay for many small poisoned ones.
* **Damage since a reference** (reason ``guard_loss_total``): the log-loss the updates since
  the reference version added on the guard set's fixed rows (the offline validation rows,
  which no update evicts; all rows when fewer than ``min_rows`` are offline), with the
  candidate's, may be at most ``max_total_loss_increase`` (times the active model's loss on
  those rows when it is above 1: a relative budget at high loss, where an honest step's
  noise grows with the loss), unless the update lowers the loss.
  It is measured *paired*: each applied update adds its own increase, the candidate's loss
  minus the active model's on the same rows (``damage``). On fixed offline rows that sum is
  the candidate's loss minus the reference's, as it always was; on a guard set that the
  stream renews (a created model's: only held-out rows), comparing the candidate's loss on
  today's rows with the reference's on the rows of its day measured which rows were held out
  as much as what the updates did: with 200 rows at a log-loss near 1, the noise of that
  difference alone is larger than the budget, and it refused about 10 % of an honest stream
  (bench/guard_created.py). The reference is the offline version at first and moves to the
  active version after every ``reference_every`` accepted updates, so a lasting, legitimate
  change is let through at that pace, and damage at most at that pace too.

A forced update (an administrator's) adds no evidence: it is trusted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .guard import GuardFigures, GuardPolicy, Reason, Verdict
from .maths import Float

__all__ = ["GuardHistory", "fixed_loss", "judge_history", "surprise_evidence"]


@dataclass(frozen=True)
class GuardHistory:
    """The guard's state after a version: ``pooled`` surprise evidence (all keys) and
    ``keys`` (per key name, only those above 0); the ``reference_version``, its
    ``reference_loss`` on the fixed guard rows (as they were then), the accepted updates
    ``since_reference``, and the ``damage`` they did: the sum of their paired loss increases
    on the guard rows (see the module's docstring)."""

    pooled: float = 0.0
    keys: dict[str, float] = field(default_factory=dict)
    reference_version: int = 0
    reference_loss: float = 0.0
    since_reference: int = 0
    damage: float = 0.0
    fresh: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "pooled": self.pooled,
            "keys": dict(self.keys),
            "reference_version": self.reference_version,
            "reference_loss": self.reference_loss,
            "since_reference": self.since_reference,
            "damage": self.damage,
            "fresh": self.fresh,
        }

    @classmethod
    def of(cls, data: dict[str, Any] | None, version: int, loss: float) -> GuardHistory:
        """The stored state of a version; for one with none (an offline version, or one
        written before this state existed), a fresh one whose reference is that ``version``
        with its fixed-rows ``loss``. A state written before ``damage`` was kept counts the
        difference of ``loss`` and the reference's, as the test then did."""
        if not data:
            return cls(reference_version=version, reference_loss=loss)
        reference_loss = float(data["reference_loss"])
        return cls(
            pooled=float(data["pooled"]),
            keys={str(k): float(v) for k, v in data["keys"].items()},
            reference_version=int(data["reference_version"]),
            reference_loss=reference_loss,
            since_reference=int(data["since_reference"]),
            damage=float(data.get("damage", loss - reference_loss)),
            fresh=int(data.get("fresh", 0)),
        )

    def after(
        self,
        evidence: float,
        key: str | None,
        forced: bool,
        parent_version: int,
        parent_loss: float,
        reference_every: int,
        increase: float = 0.0,
        held: int = 0,
    ) -> GuardHistory:
        """The state after an applied update (pure) whose loss on the guard rows is
        ``increase`` above its parent's and which held ``held`` rows out for the guard set.
        A forced update adds no evidence (its damage and its rows count)."""
        pooled, keys = self.pooled, self.keys
        if not forced:
            pooled = max(0.0, pooled + evidence)
            if key is not None:
                keys = dict(keys)
                value = max(0.0, keys.get(key, 0.0) + evidence)
                if value > 0.0:
                    keys[key] = value
                else:
                    keys.pop(key, None)
        since = self.since_reference + 1
        if since >= reference_every:  # the parent (the version judged against) takes over
            return GuardHistory(pooled, keys, parent_version, parent_loss, 0, increase, held)
        return GuardHistory(
            pooled,
            keys,
            self.reference_version,
            self.reference_loss,
            since,
            self.damage + increase,
            self.fresh + held,
        )


def surprise_evidence(batch_losses: Float, before: GuardFigures, suspect_rate: float) -> float:
    """The mean over the batch's rows of ``log(P(flag | suspect) / P(flag | honest))``, where a
    row is flagged when its loss under the active model exceeds the guard set's surprise
    threshold, and the honest rate is the guard set's (bounded above): negative for a batch
    like the guard set, up to ``log(suspect_rate / honest_rate)`` for one all surprising.
    0 when the honest rate is already at or above the suspect rate (a tiny guard set).

    >>> from model.guard import figures_of
    >>> before = figures_of(np.linspace(0.0, 1.0, 100), np.ones(100, bool), 0.95)
    >>> round(surprise_evidence(np.array([5.0]), before, 0.5), 3)
    1.479
    """
    honest = before.surprise_rate
    if honest >= suspect_rate:
        return 0.0
    flagged = int(np.count_nonzero(batch_losses > before.surprise_threshold))
    rows = int(batch_losses.shape[0])
    surprising = math.log(suspect_rate / honest)
    ordinary = math.log1p(-suspect_rate) - math.log1p(-honest)
    return (flagged * surprising + (rows - flagged) * ordinary) / rows


def fixed_loss(found: GuardFigures, offline: int, min_rows: int, fresh: int = 0) -> float:
    """The mean loss over the guard set's fixed rows: its first ``offline`` rows (the offline
    validation split, which no update evicts) when there are ``min_rows`` of them; else the
    rows held out before the reference (all but the newest ``fresh``) when there are
    ``min_rows`` of them; else all."""
    if offline >= min_rows:
        return float(found.losses[:offline].mean())
    older = found.losses.shape[0] - fresh
    if fresh > 0 and older >= min_rows:
        return float(found.losses[:older].mean())
    return found.log_loss


def judge_history(
    verdict: Verdict,
    history: GuardHistory,
    evidence: float,
    key: str | None,
    loss_before: float,
    loss_after: float,
    policy: GuardPolicy,
) -> Verdict:
    """``verdict`` (one update's) completed with the tests across updates: refused for
    ``surprise_pooled`` or ``guard_loss_total`` if it was accepted and fails one of them.
    ``loss_before`` and ``loss_after`` are the active and the candidate model's loss on the
    fixed guard rows (:func:`fixed_loss`), on the same rows: the damage since the reference is
    ``history.damage`` plus their difference. The verdict's ``reference_loss`` is the
    reference's loss carried to these rows: ``loss_after`` minus that damage; its
    ``max_total_loss_increase`` the budget that applied (``policy``'s, times ``loss_before``
    when that is above 1)."""
    limit = math.log(1.0 / policy.surprise_alpha)
    pooled = max(0.0, history.pooled + evidence)
    mine = max(0.0, history.keys.get(key, 0.0) + evidence) if key is not None else 0.0
    damage = history.damage + (loss_after - loss_before)
    budget = policy.max_total_loss_increase * max(1.0, loss_before)
    reason: Reason | None = verdict.reason
    if reason is None:
        if evidence > 0 and max(pooled, mine) > limit:
            reason = "surprise_pooled"
        elif damage > budget and loss_after > loss_before:
            reason = "guard_loss_total"
    return replace(
        verdict,
        accepted=reason is None,
        reason=reason,
        pooled_surprise=pooled,
        key_pooled_surprise=mine,
        pooled_limit=limit,
        reference_version=history.reference_version,
        reference_loss=loss_after - damage,
        loss_vs_reference=loss_after,
        max_total_loss_increase=budget,
        suspect_rate=policy.suspect_rate,
    )
