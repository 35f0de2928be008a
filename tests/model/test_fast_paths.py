"""The cheaper computations of an online update against the plain ones they replace: each must
give the same bits (stored updates are replayed and their weights checked against a digest,
and the guard's figures are recorded), so each is compared with exact equality."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any

import numpy as np
import pytest

from model import maths
from model.artifact import OnlineStats, VersionMeta
from model.drift import DriftState
from model.errors import InvalidParameterError, OutOfRangeError, UnknownLabelError
from model.guard import (
    GuardFigures,
    GuardPolicy,
    GuardSet,
    binomial_tail,
    check_in_range,
    extended_figures,
    figures,
    figures_of,
    holdout_mask,
    judge,
    relative_step,
)
from model.optimizer import TrainState
from model.preprocessing import Standardizer
from model.softmax import SoftmaxRegression
from model.validation import check_labels
from model.versions import state_digest
from tests.model.synthetic import make_blobs


def same_bits(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# --------------------------------------------------------------------------- the maths


def plain_logsumexp(Z: np.ndarray) -> np.ndarray:
    zmax = Z.max(axis=1)
    with np.errstate(over="ignore"):
        out: np.ndarray = zmax + np.log(np.exp(Z - zmax[:, None]).sum(axis=1))
    return out


def plain_loss_and_gradient(
    X: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray, l2: float
) -> tuple[float, int, np.ndarray, np.ndarray]:
    m = y.shape[0]
    rows = np.arange(m)
    Z = X @ W + b
    correct = int(np.count_nonzero(Z.argmax(axis=1) == y))
    lse = plain_logsumexp(Z)
    ce = float(np.mean(lse - Z[np.arange(m), y]))
    G = np.exp(Z - lse[:, None])
    G[rows, y] -= 1.0
    G /= m
    dW = X.T @ G
    if l2:
        dW += l2 * W
    return ce, correct, dW, G.sum(axis=0)


@pytest.mark.parametrize("shape", [(1, 2), (7, 3), (32, 10), (63, 10), (64, 10), (500, 10)])
@pytest.mark.parametrize("scale", [1.0, 1e3, 1e300])
def test_logsumexp_and_mean_give_the_plain_bits(shape: tuple[int, int], scale: float) -> None:
    rng = np.random.default_rng(shape[0])
    Z = rng.normal(size=shape) * scale
    Z[0, -1] = Z[0, 0]  # a tie for the row maximum
    assert same_bits(maths.logsumexp(Z), plain_logsumexp(Z))
    values = rng.normal(size=shape[0] * shape[1]) * scale
    assert maths.mean(values) == float(np.mean(values))
    assert maths.mean(values[::3]) == float(np.mean(values[::3]))


def test_logsumexp_of_integer_logits_is_computed_as_before() -> None:
    Z = np.arange(12).reshape(4, 3)
    assert same_bits(maths.logsumexp(Z), plain_logsumexp(Z))


@pytest.mark.parametrize(
    ("m", "d", "k", "l2"), [(1, 3, 2, 0.0), (32, 64, 10, 1e-3), (70, 5, 4, 0.1)]
)
def test_loss_and_gradient_give_the_plain_bits(m: int, d: int, k: int, l2: float) -> None:
    rng = np.random.default_rng(m)
    X, y = rng.normal(size=(m, d)), rng.integers(0, k, size=m)
    W, b = rng.normal(size=(d, k)), rng.normal(size=k)
    found = maths.loss_and_gradient(X, y, W, b, l2)
    loss, correct, dW, db = plain_loss_and_gradient(X, y, W, b, l2)
    assert found.loss == loss and found.correct == correct
    assert same_bits(found.weights, dW) and same_bits(found.bias, db)


def test_standardizing_gives_the_plain_bits() -> None:
    rng = np.random.default_rng(5)
    standardizer = Standardizer(mean=rng.normal(size=4), scale=rng.uniform(0.1, 3.0, size=4))
    X = rng.normal(size=(9, 4)) * 100
    for rows in (X, X[:, ::-1].T.T, X[0], X.astype(np.float32), np.round(X).astype(np.int64)):
        plain = (rows - standardizer.mean) / standardizer.scale
        assert same_bits(standardizer.transform(rows), plain)
    assert same_bits(standardizer.transform(X), (X - standardizer.mean) / standardizer.scale)
    single = Standardizer(mean=np.float32([1.0, 2.0]), scale=np.float32([2.0, 4.0]))
    assert same_bits(single.transform(X[:, :2]), (X[:, :2] - single.mean) / single.scale)


# --------------------------------------------------------------------------- the guard


@pytest.mark.parametrize("n", [1, 2, 3, 19, 20, 21, 100, 276, 380])
@pytest.mark.parametrize("quantile", [0.0, 0.5, 0.9, 0.95, 0.99, 1.0])
def test_the_surprise_threshold_is_numpys_higher_quantile(n: int, quantile: float) -> None:
    rng = np.random.default_rng(n)
    for losses in (rng.exponential(size=n), np.round(rng.exponential(size=n), 1)):
        expected = float(np.quantile(losses, quantile, method="higher"))
        found = figures_of(losses, losses < 1.0, quantile)
        assert found.surprise_threshold == expected
        assert found.log_loss == float(losses.mean())
        assert found.accuracy == float((losses < 1.0).mean())
        # Python floats, as before (a NumPy float is no JSON to orjson).
        assert {type(found.log_loss), type(found.accuracy), type(found.surprise_threshold)} == {
            float
        }


def test_the_surprise_threshold_of_losses_holding_nan_or_inf_is_numpys() -> None:
    for bad in (np.nan, np.inf):
        losses = np.array([0.1, bad, 0.3, 0.2, 0.5])
        expected = float(np.quantile(losses, 0.5, method="higher"))
        found = figures_of(losses, losses < 1.0, 0.5).surprise_threshold
        assert found == expected or (math.isnan(found) and math.isnan(expected))
    float32 = np.array([0.25, 0.5, 0.75], dtype=np.float32)
    assert figures_of(float32, float32 > 0, 0.5).surprise_threshold == 0.5


def plain_extended(guard: GuardSet, X: np.ndarray, y: np.ndarray, capacity: int) -> GuardSet:
    def newest(rows: np.ndarray) -> np.ndarray:
        return rows[max(0, rows.shape[0] - capacity) :]

    online_X = newest(np.concatenate([guard.X[guard.offline :], X]))
    online_y = newest(np.concatenate([guard.y[guard.offline :], y]))
    X_all = np.concatenate([guard.X[: guard.offline], online_X])
    y_all = np.concatenate([guard.y[: guard.offline], online_y]).astype(np.intp)
    return GuardSet(X_all, y_all, guard.offline)


@pytest.mark.parametrize("capacity", [0, 1, 4, 7, 100])
@pytest.mark.parametrize("judged", ["before", "after", "never"])
def test_a_grown_guard_set_and_its_standardized_rows_are_the_plain_ones(
    capacity: int, judged: str
) -> None:
    rng = np.random.default_rng(capacity)
    standardizer = Standardizer(mean=rng.normal(size=3), scale=rng.uniform(0.5, 2.0, size=3))
    guard = GuardSet(rng.normal(size=(5, 3)), rng.integers(0, 2, size=5), offline=5)
    plain = guard
    for count in [1, 3, 0, 2, 5, 1, 4]:
        X, y = rng.normal(size=(count, 3)) * 10, rng.integers(0, 2, size=count)
        if judged == "before":  # the parent standardized before it grows
            guard.standardized(standardizer)
        grown, plain = guard.extended(X, y, capacity), plain_extended(plain, X, y, capacity)
        if judged == "after":  # ... or after (what an update does)
            guard.standardized(standardizer)
        assert same_bits(grown.X, plain.X) and same_bits(grown.y, plain.y)
        assert grown.offline == plain.offline
        if judged != "never":
            assert same_bits(grown.standardized(standardizer), standardizer.transform(plain.X))
        guard = grown
    other = Standardizer(mean=np.zeros(3), scale=np.full(3, 3.0))
    assert same_bits(guard.standardized(other), other.transform(guard.X))


def test_extended_figures_are_the_figures_of_the_grown_guard_set() -> None:
    X, y = make_blobs(n=180, seed=1)
    model = SoftmaxRegression(epochs=5).fit(X[:100], y[:100])
    guard = GuardSet(X[100:130], model_index(model, y[100:130]), offline=10)
    found = figures(model, guard, 0.95)
    assert found is not None
    new_X, new_y = X[130:150], model_index(model, y[130:150])
    losses = maths.logsumexp(Z := model.decision_function(new_X)) - Z[np.arange(20), new_y]
    correct = Z.argmax(axis=1) == new_y
    for capacity in (0, 5, 30, 100):
        direct = figures(model, guard.extended(new_X, new_y, capacity), 0.95)
        grown = extended_figures(found, guard.offline, losses, correct, capacity, 0.95)
        assert direct is not None and direct == grown  # rows, loss, accuracy, threshold, rate
        assert same_bits(direct.losses, grown.losses) and same_bits(direct.correct, grown.correct)


def model_index(model: SoftmaxRegression, labels: np.ndarray) -> np.ndarray:
    return check_labels(labels, model.classes_)


def plain_binomial_tail(k: int, n: int, p: float) -> float:
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for j in range(k, n + 1):
        term = math.exp(
            math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1)
            + j * log_p + (n - j) * log_q
        )  # fmt: skip
        total += term
        if j > n * p and term < total * 1e-15:
            break
    return min(total, 1.0)


def test_the_binomial_tail_gives_the_plain_bits() -> None:
    rng = np.random.default_rng(0)
    cases = [(int(k), int(n), float(p)) for n in rng.integers(1, 400, 300)
             for k, p in [(rng.integers(-1, n + 2), rng.uniform(1e-4, 0.99))]]  # fmt: skip
    cases += [(k, n, 0.05) for n in (70_000, 100_000) for k in (1, 5, 5000)]
    for k, n, p in cases:
        assert binomial_tail(k, n, p) == plain_binomial_tail(k, n, p)


def test_the_holdout_mask_and_relative_step_are_the_plain_ones() -> None:
    for seen in range(25):
        for rows in range(12):
            for every in range(-1, 8):
                position = seen + np.arange(1, rows + 1)
                plain = position % every == 0 if every > 0 else np.zeros(rows, dtype=bool)
                assert same_bits(holdout_mask(seen, rows, every), plain)
    rng = np.random.default_rng(3)
    before, after = rng.normal(size=(64, 10)), rng.normal(size=(64, 10))
    plain_step = float(np.linalg.norm(after - before)) / float(np.linalg.norm(before))
    assert relative_step(before, after) == plain_step
    assert relative_step(before.T, after.T) == plain_step  # not contiguous


def test_a_far_row_is_refused_even_beside_a_nan() -> None:
    standardizer = Standardizer(mean=np.array([0.0, np.inf]), scale=np.ones(2))
    check_in_range(standardizer, np.array([[1.0, np.inf]]), 500)  # inf - inf: NaN, not far
    with pytest.raises(OutOfRangeError, match="row 1, column 0"):
        check_in_range(standardizer, np.array([[1.0, np.inf], [600.0, np.inf]]), 500)
    check_in_range(standardizer, np.empty((0, 2)), 500)


def test_the_stored_forms_are_what_asdict_gave() -> None:
    figures_ = GuardFigures(10, 0.3, 0.9, 1.0, 0.05, np.zeros(10), np.zeros(10) > 0)
    verdict = judge(figures_, figures_, np.full(4, 2.0), 0.1, 1.0, GuardPolicy())
    assert verdict.to_json() == {
        **dataclasses.asdict(verdict),
        "loss_increase": verdict.loss_increase,
    }
    assert list(verdict.to_json()) == [*dataclasses.asdict(verdict), "loss_increase"]
    state = DriftState(delta=0.1, threshold=1.0)
    for loss in [0.2, 0.3, 5.0, 0.1, 0.2]:
        after = state.observe(loss)
        n = state.n + 1
        mean = state.mean + (loss - state.mean) / n
        cumulative = state.cumulative + loss - mean - state.delta
        minimum = min(state.minimum, cumulative)
        plain = (
            dataclasses.replace(
                state, n=0, mean=0.0, cumulative=0.0, minimum=0.0,
                alarms=state.alarms + 1, last_alarm_at=state.total + 1,
            )
            if cumulative - minimum > state.threshold
            else dataclasses.replace(
                state, n=n, mean=mean, cumulative=cumulative, minimum=minimum
            )
        )  # fmt: skip
        assert after == plain
        expected = {**dataclasses.asdict(after), "statistic": after.statistic, "detected": True}
        assert after.to_json() == {**expected, "detected": after.detected}
        assert list(after.to_json()) == list(expected)
        state = after
    assert state.alarms == 1
    for momentum in (True, False):
        online = OnlineStats(3, None, 1, 0.5, 1.0, 0.4, momentum=momentum)
        meta = VersionMeta("update", "online", 1, "now", 2, online=online)
        plain_online = dataclasses.asdict(online)
        if momentum:
            del plain_online["momentum"]
        assert meta.to_json()["online"] == plain_online
        assert list(meta.to_json()["online"]) == list(plain_online)


# --------------------------------------------------------------------------- the estimator


def test_the_weight_digest_is_the_plain_one() -> None:
    rng = np.random.default_rng(0)
    for shape in [(64, 10), (100, 50), (3000, 7)]:
        weights = rng.normal(size=shape)
        state = TrainState(weights, rng.normal(size=shape[1]), None, None, 12)
        flat = weights.reshape(-1)
        digest = hashlib.blake2b(digest_size=16)
        digest.update(np.ascontiguousarray(flat[:: max(1, flat.shape[0] // 4096)]).tobytes())
        digest.update(state.bias.tobytes())
        digest.update(b"12")
        assert state_digest(state) == digest.hexdigest()


def test_optimizer_settings_are_checked_again_once_a_setting_changes() -> None:
    X, y = make_blobs(n=40, n_features=3, labels=(0, 1), seed=0)
    model = SoftmaxRegression(epochs=2).fit(X, y)
    assert model.sgd_settings is model.sgd_settings  # validated once
    model.momentum = 0.5
    assert model.sgd_settings.momentum == 0.5
    model.learning_rate = -1.0
    with pytest.raises(InvalidParameterError, match="learning_rate"):
        model.sgd_settings  # noqa: B018
    model.learning_rate = True  # equal to 1.0, but refused
    with pytest.raises(InvalidParameterError, match="learning_rate"):
        model.sgd_settings  # noqa: B018


def test_an_update_copies_the_estimator_as_copy_copy_would() -> None:
    class Custom(SoftmaxRegression):
        pass

    X, y = make_blobs(n=40, n_features=3, labels=(0, 1), seed=0)
    for cls in (SoftmaxRegression, Custom):
        model = cls(epochs=2).fit(X, y, feature_names=["a", "b", "c"])
        updated, _ = model.updated(X[:4], check_labels(y[:4], model.classes_))
        assert type(updated) is cls and updated.state_ is not model.state_
        assert updated.standardizer_ is model.standardizer_
        assert updated.to_arrays()["feature_names"].tolist() == ["a", "b", "c"]
        assert not updated.to_arrays()["feature_names"].flags.writeable  # shared: read-only


def test_integer_and_string_labels_are_checked_as_before() -> None:
    ints = np.array([0, 1, 2])
    assert check_labels([0, np.int64(2), 1], ints).tolist() == [0, 2, 1]
    with pytest.raises(UnknownLabelError, match="a boolean"):
        check_labels([0, True], ints)
    strings = np.array(["a", "b"])
    assert check_labels(["b", np.str_("a")], strings).tolist() == [1, 0]
    with pytest.raises(UnknownLabelError, match="NUL character"):
        check_labels(["a", "b\x00"], strings)
