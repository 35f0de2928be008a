"""Models created with no data learn with a rate per class that decays with the rows learnt since
the class was added (model.optimizer.row_steps): row by row at first, then by summed steps, led
by one more summed step while data is scarce; models created before 0.6 keep their batch
steps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from model import LocalArtifactStore, ModelRepository
from model.growth import create_estimator
from model.maths import softmax
from model.optimizer import TrainState, row_steps

FIXTURE = Path(__file__).parents[1] / "fixtures" / "store-0.5-created"


def textbook(
    W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray, rates: np.ndarray, lead: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row SGD written out plainly: p = softmax(xW + b), W -= rates * x (p - onehot)."""
    W, b = W.copy(), b.copy()
    if lead:
        W, b = summed(W, b, X, y, rates)
    for x, label in zip(X, y, strict=True):
        p = softmax((x @ W + b)[None, :])[0]
        p[label] -= 1
        W = W - np.outer(x, p * rates)
        b = b - p * rates
    return W, b


def summed(
    W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray, rates: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One step on the rows' summed gradient, each class at its rate."""
    P = softmax(X @ W + b)
    P[np.arange(len(y)), y] -= 1
    return W - X.T @ (P * rates), b - (P * rates).sum(axis=0)


@pytest.mark.parametrize("lead", [False, True])
def test_row_steps_are_per_row_sgd_at_the_rates_per_class(lead: bool) -> None:
    rng = np.random.default_rng(1)
    W, b = rng.normal(size=(5, 3)), rng.normal(size=3)
    X, y, rates = rng.normal(size=(7, 5)), rng.integers(0, 3, 7), np.array([0.1, 0.02, 0.3])
    state = TrainState(W.copy(), b.copy(), None, None, 4)
    new, figures = row_steps(state, X, y, rates, 1, lead=lead)
    expected_W, expected_b = textbook(W, b, X, y, rates, lead)
    np.testing.assert_allclose(new.weights, expected_W, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(new.bias, expected_b, rtol=1e-12, atol=1e-14)
    assert new.step == 4 + 1 + lead
    assert np.array_equal(state.weights, W) and np.array_equal(state.bias, b)  # not edited
    P = softmax(X @ W + b)
    assert figures.loss == pytest.approx(-np.log(P[np.arange(7), y]).mean())
    assert figures.correct == int((P.argmax(axis=1) == y).sum())


@pytest.mark.parametrize("lead", [False, True])
def test_summed_steps_take_every_rows_gradient_at_the_same_weights(lead: bool) -> None:
    rng = np.random.default_rng(6)
    W, b = rng.normal(size=(4, 3)), rng.normal(size=3)
    X, y, rates = rng.normal(size=(9, 4)), rng.integers(0, 3, 9), np.array([0.05, 0.2, 0.1])
    new, _ = row_steps(TrainState(W, b, None, None, 0), X, y, rates, 2, by_row=False, lead=lead)
    expected = W, b
    for _ in range(2 + lead):
        expected = summed(*expected, X, y, rates)
    np.testing.assert_allclose(new.weights, expected[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(new.bias, expected[1], rtol=1e-12, atol=1e-14)
    assert new.step == 2 + lead


def test_an_update_of_m_rows_at_rate_r_is_m_one_row_updates_at_rate_r_over_m() -> None:
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(12, 4)), rng.integers(0, 3, 12)
    batch = create_estimator(["a", "b", "c", "d"], [0, 1, 2], standardize=False)
    rows = create_estimator(["a", "b", "c", "d"], [0, 1, 2], standardize=False)
    batch.partial_fit(X, y, learning_rate=0.6)
    for i in range(12):
        rows.partial_fit(X[i : i + 1], y[i : i + 1], learning_rate=0.05)
    np.testing.assert_allclose(batch.state_.weights, rows.state_.weights, rtol=1e-12)
    np.testing.assert_allclose(batch.state_.bias, rows.state_.bias, rtol=1e-12, atol=1e-15)


def test_a_class_met_late_starts_at_the_full_rate() -> None:
    rng = np.random.default_rng(3)
    model = create_estimator(["a", "b"], [0, 1], allow_new_classes=True)
    assert model.data_is_scarce  # nothing learnt yet
    for _ in range(10):
        model.partial_fit(rng.normal(size=(40, 2)), rng.integers(0, 2, 40))
    assert model.rows_learnt == 400 and not model.data_is_scarce  # 400 >= 20 x 2 features
    model.partial_fit(rng.normal(size=(4, 2)), [0, 1, 2, 2])  # class 2 is new
    assert model.class_born_ is not None and model.class_born_.tolist() == [0, 0, 400]
    rates = model.own_rates(1)  # one row: under the cap (learning_rate 0.5 / rows)
    full = 1 / 3  # 1 / (1 + d)
    assert rates[2] == pytest.approx(full / np.sqrt(1 + 4 / 20))
    assert rates[0] == rates[1] == pytest.approx(full / np.sqrt(1 + 404 / 20))


def test_class_births_survive_the_store_and_the_replay_is_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    repository = ModelRepository(LocalArtifactStore(tmp_path), keep_last=None)
    repository.create(create_estimator(["a", "b", "c"], ["x"], allow_new_classes=True), "m")
    labels = np.array(["x", "y", "z"])
    for start in range(6):
        classes = 1 + min(start, 2)  # y from the 2nd update on, z from the 3rd
        y = labels[rng.integers(0, classes, 8)].tolist()
        result = repository.update("m", rng.normal(size=(8, 3)), y)
    served = result.model.estimator
    reloaded = ModelRepository(LocalArtifactStore(tmp_path), keep_last=None).load("m")
    assert reloaded.version == result.model.version and reloaded.estimator.online_row_steps
    assert reloaded.estimator.class_born_ is not None and served.class_born_ is not None
    assert np.array_equal(reloaded.estimator.class_born_, served.class_born_)
    assert served.class_born_[0] == 0 and served.class_born_[1] > 0
    rows = rng.normal(size=(5, 3))
    assert np.array_equal(
        reloaded.estimator.predict_proba(rows), served.predict_proba(rows)
    )  # bit for bit


@pytest.fixture
def created_before(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURE / "store", tmp_path, dirs_exist_ok=True)
    return tmp_path


def test_a_model_created_before_row_steps_loads_to_the_same_numbers(created_before: Path) -> None:
    expected = json.loads((FIXTURE / "expected.json").read_text())
    repository = ModelRepository(LocalArtifactStore(created_before), keep_last=None)
    rows = np.array(expected["rows"])
    for version, probabilities in expected["probabilities"].items():
        loaded = repository.load("grow", int(version))
        assert [str(c) for c in loaded.estimator.classes_] == expected["classes"][version]
        assert np.array_equal(loaded.estimator.predict_proba(rows), np.array(probabilities))
    assert repository.load("grow").version == expected["active"]


def test_a_model_created_before_keeps_its_batch_steps(created_before: Path) -> None:
    repository = ModelRepository(LocalArtifactStore(created_before), keep_last=None)
    before = repository.load("grow")
    assert not before.estimator.online_row_steps and before.estimator.class_born_ is None
    X = np.random.default_rng(5).normal(size=(6, 13)) * 10 + 50
    result = repository.update("grow", X, ["c0", "c1", "c2", "c0", "c1", "c2"], force=True)
    # one batch step at the per-row rate times the rows, as this model always learnt
    expected, _ = before.estimator.updated(
        X, np.array([0, 1, 2, 0, 1, 2]), learning_rate=before.estimator.online_rate_for(6)
    )
    assert np.array_equal(result.model.estimator.state_.weights, expected.state_.weights)
    again = ModelRepository(LocalArtifactStore(created_before), keep_last=None).load("grow")
    assert again.version == result.model.version
    assert np.array_equal(again.estimator.state_.weights, expected.state_.weights)


def test_a_created_model_learns_row_by_row_then_by_summed_steps_led_while_data_is_scarce() -> None:
    rng = np.random.default_rng(7)
    X, y = rng.normal(size=(12, 3)) * 4 + 1, rng.integers(0, 3, 12)
    # 3 features: row by row under 2 x 3 rows learnt, a lead step under 20 x 3
    for learnt, by_row, lead in ((0, True, True), (6, False, True), (60, False, False)):
        model = create_estimator(["a", "b", "c"], [0, 1, 2])
        if learnt:
            model.partial_fit(rng.normal(size=(learnt, 3)), rng.integers(0, 3, learnt))
        assert (model.learns_by_row, model.data_is_scarce) == (by_row, lead)
        rates = model.own_rates(12)
        state = model.state_
        model.partial_fit(X, y)
        Xs = model.standardizer_.transform(X)  # the batch is folded in before the steps
        if by_row:
            W, b = textbook(state.weights, state.bias, Xs, y, rates, lead=True)
        else:
            W, b = summed(state.weights, state.bias, Xs, y, rates)
            if lead:
                W, b = summed(W, b, Xs, y, rates)
        np.testing.assert_allclose(model.state_.weights, W, rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(model.state_.bias, b, rtol=1e-11, atol=1e-13)


def test_l2_weighs_the_same_in_row_steps_and_summed_steps() -> None:
    # Rows of zeros: only the penalty moves the weights (and the softmax gradient the bias).
    W, b = np.ones((3, 2)), np.zeros(2)
    X, y, rates = np.zeros((8, 3)), np.array([0, 1] * 4), np.array([0.1, 0.1])
    state = TrainState(W, b, None, None, 0)
    by_row, _ = row_steps(state, X, y, rates, 1, by_row=True, l2=0.5)
    summed_step, _ = row_steps(state, X, y, rates, 1, by_row=False, l2=0.5)
    np.testing.assert_allclose(by_row.weights, (1 - 0.05) ** 8)  # eight row steps' shrinks
    np.testing.assert_allclose(summed_step.weights, 1 - 8 * 0.05)  # the eight rows' added up
    # A request's own rate r, summed: the penalty of one batch step of r, as before row steps.
    model = create_estimator(["a", "b", "c"], [0, 1], standardize=False, params={"l2": 0.5})
    model.partial_fit(np.ones((60, 3)), [0, 1] * 30)  # past the row-step phase
    before = model.state_.weights.copy()
    model.partial_fit(np.zeros((8, 3)), [0, 1] * 4, learning_rate=0.1)
    np.testing.assert_allclose(model.state_.weights, before * (1 - 0.5 * 0.1))


def test_a_created_model_with_momentum_learns_by_the_rule_that_uses_it() -> None:
    model = create_estimator(["a", "b"], [0, 1], params={"momentum": 0.9})
    assert not model.online_row_steps and model.class_born_ is None
    assert not model.steps_per_class and model.online_rate_for(4) is not None
    model.partial_fit(np.array([[1.0, 0.0], [0.0, 1.0]]), [0, 1])
    assert model.state_.velocity_weights is not None
    assert np.abs(model.state_.velocity_weights).sum() > 0  # momentum is used, not ignored


def test_fit_on_a_created_model_leaves_it_one_consistent_rule() -> None:
    rng = np.random.default_rng(8)
    model = create_estimator(["a", "b"], [0, 1])
    assert model.steps_per_class and model.online_rate_for(4) is None
    model.fit(rng.normal(size=(40, 2)), rng.integers(0, 2, 40))
    assert model.class_born_ is None and not model.steps_per_class
    assert model.online_rate_for(4) is not None  # the per-row rate of 0.5's rule
    model.partial_fit(rng.normal(size=(4, 2)), [0, 1, 0, 1])


@pytest.mark.parametrize(
    "labels", [[2**63], [2**70], [-(2**63) - 1], np.array([2**63], dtype=np.uint64)]
)
@pytest.mark.parametrize("grow", [False, True])
def test_an_integer_label_beyond_64_bits_is_a_precise_error(labels: object, grow: bool) -> None:
    from model.errors import UnknownLabelError

    model = create_estimator(["a", "b"], [0, 1], allow_new_classes=grow)
    before = model.state_.weights.copy()
    with pytest.raises(UnknownLabelError, match="at row 0") as raised:
        model.partial_fit(np.zeros((1, 2)), labels)  # type: ignore[arg-type]
    assert raised.value.field == "labels"
    assert "-9223372036854775808" not in str(raised.value)  # no wrapped phantom class
    assert model.classes_.tolist() == [0, 1] and np.array_equal(model.state_.weights, before)
