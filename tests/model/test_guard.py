"""The guard's pieces: its statistics against scipy, the guard set's reservoir, the holdout
schedule, each signal of the verdict, and the drift test."""

from __future__ import annotations

from pathlib import Path

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import beta

from model import LocalArtifactStore, ModelRepository
from model.drift import DriftState
from model.errors import OutOfRangeError, UpdateRejectedError
from model.guard import (
    GuardFigures,
    GuardPolicy,
    GuardSet,
    binomial_tail,
    check_in_range,
    figures,
    holdout_mask,
    judge,
    relative_step,
    upper_rate,
)
from model.preprocessing import Standardizer
from tests.model.store_writer import NAME, base_data, initial_model, update_batch


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 400), data=st.data(), p=st.floats(1e-4, 0.99))
def test_the_binomial_tail_is_exact(n: int, data: st.DataObject, p: float) -> None:
    # The oracle is the sum in 40-digit arithmetic (scipy's ``binom.sf`` itself is off by
    # ~1e-9 relative deep in the tail, e.g. k=305, n=319, p=0.09375).
    k = data.draw(st.integers(0, n + 1))
    with mpmath.workdps(40):
        exact = mpmath.fsum(
            mpmath.binomial(n, j) * mpmath.mpf(p) ** j * (1 - mpmath.mpf(p)) ** (n - j)
            for j in range(max(k, 0), n + 1)
        )
    assert binomial_tail(k, n, p) == pytest.approx(float(exact), rel=1e-10, abs=1e-300)


@pytest.mark.parametrize(("successes", "trials"), [(0, 15), (3, 15), (9, 180), (50, 2000)])
def test_the_upper_rate_is_close_to_the_exact_bound_and_above_the_rate(
    successes: int, trials: int
) -> None:
    exact = beta.ppf(0.99, successes + 1, trials - successes)  # Clopper-Pearson
    bound = upper_rate(successes, trials)
    assert bound > successes / trials
    assert bound == pytest.approx(exact, rel=0.15)


def test_the_reservoir_keeps_the_offline_rows_and_the_newest_online_ones() -> None:
    guard = GuardSet(np.zeros((3, 2)), np.array([0, 1, 2]), offline=3)
    for start in range(0, 10, 2):
        rows = np.arange(start, start + 2, dtype=float)[:, None] * np.ones((1, 2))
        guard = guard.extended(rows, np.array([start % 3, (start + 1) % 3]), online_capacity=5)
    assert guard.offline == 3 and guard.rows == 8
    assert guard.X[:3].tolist() == [[0, 0]] * 3  # the offline rows, kept
    assert guard.X[3:, 0].tolist() == [5, 6, 7, 8, 9]  # the newest five online rows


def test_the_holdout_takes_every_kth_row_of_the_stream_whoever_sends_it() -> None:
    picked = np.concatenate([holdout_mask(seen, 4, 3) for seen in range(0, 12, 4)])
    assert np.flatnonzero(picked).tolist() == [2, 5, 8, 11]
    assert not holdout_mask(0, 10, 0).any()


def made_up(loss: float, rows: int = 100, rate: float = 0.05) -> GuardFigures:
    none = np.zeros(rows)
    return GuardFigures(rows, loss, 0.9, 1.0, rate, losses=none, correct=none > 0)


@pytest.mark.parametrize(
    ("after", "losses", "step", "rate", "reason"),
    [
        (0.30, np.full(16, 0.1), 0.01, 1.0, None),
        (0.40, np.full(16, 0.1), 0.01, 1.0, "guard_loss"),  # +0.10 > 0.05
        (0.30, np.full(16, 5.0), 0.01, 1.0, "surprise"),  # 16 of 16 above the threshold
        (0.30, np.r_[np.full(2, 5.0), np.full(14, 0.1)], 0.01, 1.0, None),  # 2 of 16: chance
        (0.30, np.full(16, 0.1), 0.30, 1.0, "step"),
        (0.30, np.full(16, 0.1), 0.01, 20.0, "rate"),
    ],
)
def test_each_signal_refuses_on_its_own(
    after: float, losses: np.ndarray, step: float, rate: float, reason: str | None
) -> None:
    verdict = judge(made_up(0.30), made_up(after), losses, step, rate, GuardPolicy())
    assert verdict.reason == reason and verdict.accepted is (reason is None)
    if reason is not None:
        assert verdict.explain()


def test_relative_step() -> None:
    before = np.ones((2, 2))
    assert relative_step(before, before * 1.1) == pytest.approx(0.1)
    assert relative_step(np.zeros((2, 2)), np.full((2, 2), 0.5)) == pytest.approx(1.0)


def test_rows_far_from_the_training_data_are_refused_naming_row_and_column() -> None:
    standardizer = Standardizer(mean=np.zeros(3), scale=np.ones(3))
    check_in_range(standardizer, np.full((2, 3), 499.0), 500)
    with pytest.raises(OutOfRangeError, match=r"row 1, column 2 is 600 standard deviations") as e:
        check_in_range(standardizer, np.array([[0.0, 0, 0], [0, 0, -600]]), 500)
    assert e.value.row == 1 and e.value.field == "instances"


def test_page_hinkley_stays_quiet_on_a_stationary_stream_and_alarms_on_a_shift() -> None:
    rng = np.random.default_rng(0)
    state = DriftState()
    for loss in rng.gamma(2.0, 0.1, size=500):  # mean 0.2, noisy
        state = state.observe(float(loss))
    assert state.alarms == 0 and not state.detected
    seen = 0
    for loss in rng.gamma(2.0, 1.0, size=20):  # mean 2.0
        state = state.observe(float(loss))
        seen += 1
        if state.detected:
            break
    assert state.detected and seen <= 8, seen
    assert state.to_json()["detected"] is True
    again = DriftState.from_json(state.to_json(), delta=0.05, threshold=5.0)
    assert again == state


def test_the_guard_state_is_replayed_and_judges_the_same_everywhere(tmp_path: Path) -> None:
    X, y = base_data()
    policy = GuardPolicy()
    writer = ModelRepository(LocalArtifactStore(tmp_path), guard=policy, holdout_every=3)
    writer.save(initial_model(), NAME, guard=(X[:40], y[:40]))
    for op in range(8):
        writer.update(NAME, *update_batch(worker=1, op=op))
    reader = ModelRepository(LocalArtifactStore(tmp_path), guard=policy, holdout_every=3)
    mine, theirs = writer.load(NAME), reader.load(NAME)
    assert mine.guard is not None and theirs.guard is not None
    assert theirs.guard.rows > 40 and np.array_equal(mine.guard.X, theirs.guard.X)
    assert theirs.meta.drift is not None and theirs.meta.drift["n"] == 8
    # A shifted batch gets the same verdict from both repositories (two "processes").
    classes = np.unique(y)
    batch_X, batch_y = X[40:56], classes[(np.searchsorted(classes, y[40:56]) + 1) % len(classes)]
    verdicts = []
    for repo in (writer, reader):
        with pytest.raises(UpdateRejectedError) as refused:
            repo.update(NAME, batch_X, batch_y)
        verdicts.append(refused.value.details)
    assert verdicts[0] == verdicts[1]


def test_a_new_versions_guard_figures_match_a_fresh_pass(tmp_path: Path) -> None:
    X, y = base_data()
    policy = GuardPolicy()
    repo = ModelRepository(
        LocalArtifactStore(tmp_path), guard=policy, holdout_every=2, guard_online_rows=5
    )
    repo.save(initial_model(), NAME, guard=(X[:30], y[:30]))
    for op in range(6):  # enough held-out rows to fill the reservoir and evict
        result = repo.update(NAME, *update_batch(worker=3, op=op))
    loaded = result.model
    assert loaded.guard is not None and loaded.guard.rows == 30 + 5
    seeded = loaded.guard_figures(policy.surprise_quantile)
    fresh = figures(loaded.estimator, loaded.guard, policy.surprise_quantile)
    assert seeded is not None and fresh is not None
    assert seeded.rows == fresh.rows
    assert seeded.log_loss == pytest.approx(fresh.log_loss, rel=1e-12)
    assert seeded.accuracy == fresh.accuracy
    assert seeded.surprise_threshold == pytest.approx(fresh.surprise_threshold, rel=1e-12)
    assert loaded.meta.guard == pytest.approx(fresh.to_json())


def test_a_reservoir_of_zero_keeps_no_online_row() -> None:
    guard = GuardSet(np.zeros((2, 2)), np.array([0, 1]), offline=2)
    grown = guard.extended(np.ones((3, 2)), np.array([0, 1, 0]), online_capacity=0)
    assert grown.rows == 2 and grown.X.tolist() == [[0, 0], [0, 0]]


def test_an_online_snapshot_keeps_the_offline_training_record(tmp_path: Path) -> None:
    repo = ModelRepository(LocalArtifactStore(tmp_path), snapshot_every=1)
    repo.save(initial_model(), NAME, training={"epochs_run": 3, "data": "memory"})
    for op in range(4):  # update, snapshot, update, snapshot: each from an update's child
        result = repo.update(NAME, *update_batch(worker=4, op=op))
    snapshots = [i for i in repo.versions(NAME) if i.meta.kind == "snapshot"]
    assert len(snapshots) >= 2
    assert all(info.meta.training == {"epochs_run": 3, "data": "memory"} for info in snapshots)
    assert ModelRepository(LocalArtifactStore(tmp_path)).load(NAME).estimator.n_epochs_run_ == 3
    assert result.model.version == 5
