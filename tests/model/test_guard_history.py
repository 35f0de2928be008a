"""The guard across updates (model/guard_history.py): pooled surprise and the damage budget."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from model import LocalArtifactStore, ModelRepository, SoftmaxRegression
from model.data import load_builtin
from model.errors import UpdateRejectedError
from model.guard import GuardPolicy, figures_of, judge
from model.guard_history import GuardHistory, judge_history, surprise_evidence
from model.splits import train_val_test_split

POLICY = GuardPolicy()
# A guard set whose surprise threshold is its 95th percentile and honest rate 0.05 exactly.
BEFORE = figures_of(np.linspace(0.0, 1.0, 2001), np.ones(2001, bool), 0.95)


def test_the_evidence_of_a_batch_is_the_mean_log_likelihood_ratio_of_its_rows() -> None:
    rate = BEFORE.surprise_rate
    flagged, ordinary = math.log(0.5 / rate), math.log(0.5 / (1 - rate))
    assert surprise_evidence(np.array([5.0]), BEFORE, 0.5) == pytest.approx(flagged)
    assert surprise_evidence(np.array([0.1]), BEFORE, 0.5) == pytest.approx(ordinary)
    mixed = surprise_evidence(np.array([5.0, 0.1, 0.1, 0.1]), BEFORE, 0.5)
    assert mixed == pytest.approx((flagged + 3 * ordinary) / 4)
    # A guard set too small to tell the suspect rate from chance gives no evidence.
    tiny = figures_of(np.linspace(0.0, 1.0, 5), np.ones(5, bool), 0.95)
    assert tiny.surprise_rate >= 0.5
    assert surprise_evidence(np.array([5.0]), tiny, 0.5) == 0.0


def one_update(batch_losses: np.ndarray) -> object:
    return judge(BEFORE, BEFORE, batch_losses, 0.0, 1.0, POLICY)


def test_a_run_of_surprising_single_rows_is_refused_once_the_evidence_passes_the_limit() -> None:
    history = GuardHistory.of(None, version=1, loss=0.3)
    surprising = np.array([5.0])
    decisions = []
    for _ in range(5):
        verdict = one_update(surprising)
        assert verdict.accepted  # one row can never be refused by the one-update test
        judged = judge_history(verdict, history, 2.3, "feeder", 0.3, 0.3, POLICY)
        decisions.append(judged.reason)
        if judged.accepted:
            history = history.after(2.3, "feeder", False, 1, 0.3, POLICY.reference_every)
    # ln(1/0.01) = 4.6: two updates of 2.3 reach it, the third would pass it.
    assert decisions == [None, None, "surprise_pooled", "surprise_pooled", "surprise_pooled"]
    assert history.keys == {"feeder": pytest.approx(4.6)}
    # An ordinary update (negative evidence) still goes through, and lowers the sums.
    judged = judge_history(one_update(np.array([0.1])), history, -0.6, "feeder", 0.3, 0.3, POLICY)
    assert judged.accepted
    after = history.after(-0.6, "feeder", False, 1, 0.3, POLICY.reference_every)
    assert after.pooled == pytest.approx(4.0) and after.keys["feeder"] == pytest.approx(4.0)
    # Another key's evidence is its own; the overall sum is shared.
    other = judge_history(one_update(surprising), after, 2.3, "other", 0.3, 0.3, POLICY)
    assert other.reason == "surprise_pooled"
    assert other.key_pooled_surprise == pytest.approx(2.3)
    assert other.pooled_surprise == pytest.approx(6.3)


def test_the_state_never_drops_below_zero_forgets_quiet_keys_and_trusts_forced_updates() -> None:
    history = GuardHistory.of(None, version=3, loss=0.2)
    quiet = history.after(-1.0, "k", False, 3, 0.2, 100)
    assert quiet.pooled == 0.0 and quiet.keys == {}
    forced = history.after(3.0, "k", True, 3, 0.2, 100)
    assert forced.pooled == 0.0 and forced.keys == {} and forced.since_reference == 1
    assert GuardHistory.of(forced.to_json(), 9, 9.9) == forced


def test_the_damage_budget_is_measured_from_a_reference_that_moves_every_so_often() -> None:
    history = GuardHistory.of(None, version=1, loss=0.20)
    fine = one_update(np.array([0.1]))
    # An update from the reference (0.20 -> 0.24 on the guard rows) leaves 0.04 of damage.
    history = history.after(-0.5, None, False, 1, 0.20, POLICY.reference_every, 0.04)
    assert history.damage == pytest.approx(0.04)
    # 0.26 is 0.06 over the reference's loss: refused when it makes things worse ...
    worse = judge_history(fine, history, -0.5, None, 0.24, 0.26, POLICY)
    assert worse.reason == "guard_loss_total" and worse.reference_version == 1
    assert "over version 1's 0.2000" in worse.explain()
    # ... but an update that lowers the loss is let through, however far above it is.
    assert judge_history(fine, history, -0.5, None, 0.27, 0.26, POLICY).accepted
    # The reference moves to the version judged against after reference_every updates.
    for _ in range(POLICY.reference_every - 2):
        history = history.after(-0.5, None, False, 7, 0.25, POLICY.reference_every)
    assert history.reference_version == 1 and history.since_reference == 24
    history = history.after(-0.5, None, False, 7, 0.25, POLICY.reference_every, 0.01)
    assert (history.reference_version, history.reference_loss) == (7, 0.25)
    assert history.damage == pytest.approx(0.01)  # this update's, from its parent, version 7
    assert judge_history(fine, history, -0.5, None, 0.24, 0.26, POLICY).accepted


def test_the_damage_is_paired_so_a_renewed_guard_set_is_not_read_as_damage() -> None:
    """A created model's guard set is renewed by the stream: the loss of the reference on the
    rows of its day says nothing about the rows of today. Only the updates' own increases,
    each on the rows it was judged on, add up."""
    history = GuardHistory.of(None, version=1, loss=0.80)
    fine = one_update(np.array([0.1]))
    # New held-out rows are harder (1.00 for the active model), the update lowers the loss on
    # them: no damage, although 0.99 is 0.19 above the reference's 0.80 on older rows.
    judged = judge_history(fine, history, -0.5, None, 1.00, 0.99, POLICY)
    assert judged.accepted
    history = history.after(-0.5, None, False, 1, 1.00, POLICY.reference_every, -0.01)
    # Small honest increases pass; increases that add up past the budget are refused.
    for step in range(6):
        judged = judge_history(fine, history, -0.5, None, 1.0, 1.025, POLICY)
        if not judged.accepted:
            break
        history = history.after(-0.5, None, False, 2 + step, 1.0, POLICY.reference_every, 0.025)
    assert judged.reason == "guard_loss_total" and step == 2  # -0.01 + 3 x 0.025 > 0.05
    assert judged.loss_vs_reference - judged.reference_loss == pytest.approx(0.065)
    # A state stored before the damage was kept: the difference of the losses, as it was.
    old = {"pooled": 0.0, "keys": {}, "reference_version": 1, "reference_loss": 0.2,
           "since_reference": 3}  # fmt: skip
    assert GuardHistory.of(old, 4, 0.23).damage == pytest.approx(0.03)


def test_an_honest_stream_is_seldom_refused_whatever_its_batch_size() -> None:
    """Ville's inequality: a run of the pooled sum started by a surprising update reaches
    ln(1/alpha) with probability at most alpha, so at most about rate x alpha of an honest
    stream's updates are refused (here rate 0.05, alpha 0.01: 5 in 10,000)."""
    rng = np.random.default_rng(0)
    for rows in (1, 4, 16):
        history, refused, updates = GuardHistory.of(None, 1, 0.3), 0, 20_000 // rows
        for _ in range(updates):
            # Honest rows: surprising at the guard set's own rate, 0.05.
            losses = np.where(rng.random(rows) < 0.05, 5.0, 0.1)
            evidence = surprise_evidence(losses, BEFORE, POLICY.suspect_rate)
            judged = judge_history(one_update(losses), history, evidence, "k", 0.3, 0.3, POLICY)
            if judged.reason == "surprise_pooled":
                refused += 1
            else:
                history = history.after(evidence, "k", False, 1, 0.3, 10**9)
        assert refused / updates <= 0.05 * 0.01 * 2, (rows, refused, updates)


def digits_repository(root: Path) -> tuple[ModelRepository, np.ndarray, np.ndarray, np.ndarray]:
    digits = load_builtin("digits")
    X, y = np.asarray(digits.X, dtype=np.float64), np.asarray(digits.y)
    train, val, test = train_val_test_split(y, 0.1, 0.2, 0)
    model = SoftmaxRegression(seed=0).fit(X[train], y[train], validation=(X[val], y[val]))
    repo = ModelRepository(
        LocalArtifactStore(root), guard=GuardPolicy(), holdout_every=10, online_momentum=False
    )
    repo.save(model, "digits", guard=(X[val], y[val]))
    return repo, X, y, test


def test_single_mislabelled_rows_are_refused_after_a_few_and_the_state_replays(
    tmp_path: Path,
) -> None:
    repo, X, y, test = digits_repository(tmp_path)
    rows = test[:40]
    decisions = []
    for row in rows:
        try:
            repo.update("digits", X[row : row + 1], [(int(y[row]) + 1) % 10], key="feeder")
            decisions.append(True)
        except UpdateRejectedError as refused:
            decisions.append(False)
            assert refused.details["reason"] in ("surprise_pooled", "guard_loss")
    assert sum(decisions) <= 4 and not any(decisions[4:]), decisions
    # Another process reads the state from the store and judges the next row the same.
    reader = ModelRepository(
        LocalArtifactStore(tmp_path), guard=GuardPolicy(), holdout_every=10, online_momentum=False
    )
    assert reader.load("digits").meta.guard_history == repo.load("digits").meta.guard_history
    row = test[50]
    details = []
    for each in (repo, reader):
        with pytest.raises(UpdateRejectedError) as refused:
            each.update("digits", X[row : row + 1], [(int(y[row]) + 1) % 10], key="feeder")
        details.append(refused.value.details)
    assert details[0] == details[1] and details[0]["reason"] == "surprise_pooled"
    # The same key's honest rows still go through.
    honest = test[60:76]
    assert repo.update("digits", X[honest], y[honest].tolist(), key="feeder").verdict is not None


def test_the_traffic_drift_test_sees_refused_batches(tmp_path: Path) -> None:
    repo, X, y, test = digits_repository(tmp_path)
    assert repo.traffic_drift("digits") is None
    for start in range(0, 160, 16):  # honest traffic: both tests see it, neither alarms
        rows = test[start : start + 16]
        repo.update("digits", X[rows], y[rows].tolist())
    before = repo.head("digits")
    # Then a lasting change of the labels' meaning: every batch refused, nothing stored ...
    for start in range(160, 240, 16):
        rows = test[start : start + 16]
        with pytest.raises(UpdateRejectedError):
            repo.update("digits", X[rows], ((y[rows] + 3) % 10).tolist())
    assert repo.head("digits") == before
    # ... so the committed stream's test saw none of it, while the traffic's raised its alarm.
    committed = repo.load("digits").meta.drift
    assert committed is not None and not committed["detected"] and committed["n"] == 10
    traffic = repo.traffic_drift("digits")
    assert traffic is not None and traffic.detected and traffic.alarms == 1, traffic
