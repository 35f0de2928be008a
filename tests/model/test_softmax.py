"""The estimator: scikit-learn's optimum as the oracle, partial_fit equal to fit bit for bit,
early stopping, schedules, robustness, and the exact error of every bad input."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from model import errors
from model.data import load_builtin
from model.maths import loss_and_gradient
from model.optimizer import TrainState
from model.softmax import SoftmaxRegression, epoch_permutations
from tests.model.synthetic import make_blobs


def assert_same_state(a: SoftmaxRegression, b: SoftmaxRegression) -> None:
    """Bit-for-bit equality of everything an update changes."""
    sa, sb = a.state_, b.state_
    assert np.array_equal(sa.weights, sb.weights)
    assert np.array_equal(sa.bias, sb.bias)
    for va, vb in (
        (sa.velocity_weights, sb.velocity_weights),
        (sa.velocity_bias, sb.velocity_bias),
    ):
        assert (va is None) == (vb is None)
        if va is not None:
            assert np.array_equal(va, vb)
    assert sa.step == sb.step


# --------------------------------------------------------------------------- the optimum


@pytest.mark.parametrize(
    ("name", "C", "learning_rate", "momentum", "epochs"),
    [
        ("iris", 1.0, 0.5, 0.9, 2000),
        ("iris", 10.0, 0.5, 0.95, 4000),
        ("digits", 0.1, 1.0, 0.9, 800),
        ("digits", 1.0, 1.0, 0.95, 2500),
    ],
)
def test_full_batch_training_reaches_the_sklearn_optimum(
    name: str, C: float, learning_rate: float, momentum: float, epochs: int
) -> None:
    data = load_builtin(name)
    X = StandardScaler().fit_transform(data.X)
    n = X.shape[0]
    reference = LogisticRegression(solver="lbfgs", C=C, tol=1e-10, max_iter=10000).fit(X, data.y)
    assert reference.n_iter_.max() < 10000

    model = SoftmaxRegression(
        learning_rate=learning_rate,
        momentum=momentum,
        l2=1.0 / (C * n),  # sklearn: C * sum(loss) + ||w||^2 / 2, ours: mean(loss) + l2/2 ||w||^2
        batch_size=n,
        epochs=epochs,
        standardize=False,
    ).fit(X, data.y)

    assert np.array_equal(model.classes_, reference.classes_)
    gap = np.abs(model.predict_proba(X) - reference.predict_proba(X)).max()
    assert gap < 1e-3


# --------------------------------------------------------------------------- partial_fit == fit


def manual_minibatches(model: SoftmaxRegression, X, y, epochs, batch_size, seed, skip=0):
    """partial_fit over the sequence fit uses: each epoch's permutation cut into batches."""
    n = X.shape[0]
    for epoch, order in enumerate(epoch_permutations(n, epochs, seed)):
        if epoch < skip:
            continue
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            model.partial_fit(X[rows], y[rows])


@pytest.mark.parametrize(("momentum", "batch_size"), [(0.9, 16), (0.0, 7), (0.5, 1000)])
def test_partial_fit_steps_equal_fit_bit_for_bit(momentum: float, batch_size: int) -> None:
    X, y = make_blobs(n=101, n_features=5, seed=1)  # 101 rows: the last batch is short
    settings = dict(
        learning_rate=0.1, momentum=momentum, l2=1e-3, batch_size=batch_size, epochs=3, seed=42
    )
    fitted = SoftmaxRegression(**settings).fit(X, y)

    stepped = SoftmaxRegression(**settings).initialize(X, y)
    manual_minibatches(stepped, X, y, epochs=3, batch_size=batch_size, seed=42)

    assert_same_state(fitted, stepped)
    expected_steps = 3 * -(-101 // batch_size)
    assert fitted.state_.step == expected_steps
    assert (fitted.state_.velocity_weights is None) == (momentum == 0)


def test_partial_fit_steps_equal_fit_bit_for_bit_with_every_default() -> None:
    """No settings at all: "auto" resolves the same way in fit and in initialize, so the
    online steps over fit's minibatches reproduce it (the linear schedule included)."""
    X, y = make_blobs(n=150, n_features=4, seed=5)
    fitted = SoftmaxRegression().fit(X, y)
    params = fitted.resolved_params()
    assert "auto" not in params.values()

    stepped = SoftmaxRegression().initialize(X, y)
    assert stepped.resolved_params() == params
    manual_minibatches(
        stepped, X, y, epochs=params["epochs"], batch_size=params["batch_size"], seed=0
    )
    assert_same_state(fitted, stepped)


def test_partial_fit_continues_exactly_where_fit_stopped() -> None:
    X, y = make_blobs(n=90, seed=2)
    settings = dict(learning_rate=0.05, schedule="invscaling", decay_steps=10.0, batch_size=8)
    four = SoftmaxRegression(**settings, epochs=4, seed=5).fit(X, y)

    two = SoftmaxRegression(**settings, epochs=2, seed=5).fit(X, y)
    manual_minibatches(two, X, y, epochs=4, batch_size=8, seed=5, skip=2)

    assert_same_state(four, two)


def test_passes_equal_repeated_partial_fit_calls() -> None:
    X, y = make_blobs(n=60, seed=3)
    base = SoftmaxRegression(epochs=2).fit(X, y)
    once = base.with_state(base.state_)
    once.partial_fit(X[:10], y[:10], passes=3, learning_rate=0.02)
    thrice = base.with_state(base.state_)
    for _ in range(3):
        thrice.partial_fit(X[:10], y[:10], learning_rate=0.02)
    assert_same_state(once, thrice)


def test_step_report_is_prequential() -> None:
    X, y = make_blobs(n=80, seed=4)
    model = SoftmaxRegression(epochs=1).fit(X[:60], y[:60])
    batch_X, batch_y = X[60:], y[60:]
    loss_before = model.log_loss(batch_X, batch_y)
    accuracy_before = float(np.mean(model.predict(batch_X) == batch_y))

    report = model.partial_fit(batch_X, batch_y)

    assert report.n == 20
    assert report.loss_before == pytest.approx(loss_before, rel=1e-12)
    assert report.accuracy_before == accuracy_before
    assert report.loss_after == pytest.approx(model.log_loss(batch_X, batch_y), rel=1e-12)
    assert report.loss_after < report.loss_before


def test_online_step_is_pure() -> None:
    X, y = make_blobs(n=50, seed=5)
    model = SoftmaxRegression(epochs=2).fit(X, y)
    state = model.state_
    weights = state.weights.copy()
    updated, _ = model.updated(X[:5], np.searchsorted(model.classes_, y[:5]))
    assert model.state_ is state and np.array_equal(state.weights, weights)
    assert updated.state_.step == state.step + 1
    assert not np.array_equal(updated.state_.weights, weights)


def test_same_seed_same_bits_other_seed_other_weights() -> None:
    X, y = make_blobs(n=100, seed=6)
    a = SoftmaxRegression(epochs=5, seed=3).fit(X, y)
    b = SoftmaxRegression(epochs=5, seed=3).fit(X, y)
    c = SoftmaxRegression(epochs=5, seed=4).fit(X, y)
    assert_same_state(a, b)
    assert [r.train_loss for r in a.history_] == [r.train_loss for r in b.history_]
    assert not np.array_equal(a.state_.weights, c.state_.weights)


def test_fit_and_partial_fit_leave_their_inputs_alone() -> None:
    X, y = make_blobs(n=40, seed=7)
    X_copy, y_copy = X.copy(), y.copy()
    model = SoftmaxRegression(epochs=2).fit(X, y)
    model.partial_fit(X, y)
    model.predict_proba(X)
    assert np.array_equal(X, X_copy) and np.array_equal(y, y_copy)


# --------------------------------------------------------------------------- early stopping


def test_early_stopping_restores_the_best_epoch() -> None:
    X, y = make_blobs(n=300, spread=3.0, seed=8)  # overlapping classes: the loss plateaus
    X_val, y_val = make_blobs(n=200, spread=3.0, seed=9)
    settings = dict(
        learning_rate=0.3, schedule="constant", momentum=0.9, batch_size=16, l2=0.0, seed=1
    )
    model = SoftmaxRegression(**settings, epochs=300, patience=4, tol=1e-4)
    model.fit(X, y, validation=(X_val, y_val))

    best = model.best_epoch_
    assert best is not None
    assert model.n_epochs_run_ < 300, "the setup should stop early"
    assert model.n_epochs_run_ == best + model.patience
    assert len(model.history_) == model.n_epochs_run_
    best_loss = model.history_[best - 1].val_loss
    assert best_loss is not None
    # Nothing after the best epoch improved on it by more than tol.
    later = [r.val_loss for r in model.history_[best:]]
    assert all(loss is not None and loss >= best_loss - model.tol for loss in later)
    # The final model is the best epoch's: its validation loss, and the weights training
    # for exactly that many epochs (no validation) gives.
    assert model.log_loss(X_val, y_val) == pytest.approx(best_loss, rel=1e-12, abs=0)
    replay = SoftmaxRegression(**settings, epochs=best).fit(X, y)
    assert_same_state(model, replay)


# --------------------------------------------------------------------------- schedules


def observed_rate(model: SoftmaxRegression, X, y) -> float:
    """The step size one momentum-free partial_fit actually took, from the bias change."""
    Xs = model.standardizer_.transform(X)
    y_index = np.searchsorted(model.classes_, y)
    old = model.state_
    grad = loss_and_gradient(Xs, y_index, old.weights, old.bias, model.params_["l2"])
    model.partial_fit(X, y)
    largest = np.argmax(np.abs(grad.bias))
    return float((old.bias[largest] - model.state_.bias[largest]) / grad.bias[largest])


def test_invscaling_rate_decreases_every_step_as_documented() -> None:
    X, y = make_blobs(n=64, seed=10)
    eta0, decay, power = 0.2, 3.0, 0.75
    model = SoftmaxRegression(
        learning_rate=eta0, schedule="invscaling", decay_steps=decay, power_t=power, momentum=0.0
    ).initialize(X, y)
    rates = []
    for t in range(8):
        rows = slice(8 * t, 8 * t + 8)
        rate = observed_rate(model, X[rows], y[rows])
        assert rate == pytest.approx(eta0 / (1 + t / decay) ** power, rel=1e-9)
        rates.append(rate)
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))

    fitted = SoftmaxRegression(learning_rate=eta0, schedule="invscaling", epochs=5).fit(X, y)
    epoch_rates = [r.learning_rate for r in fitted.history_]
    assert all(a > b for a, b in zip(epoch_rates, epoch_rates[1:], strict=False))


def test_constant_rate_and_momentum_off() -> None:
    X, y = make_blobs(n=64, seed=11)
    model = SoftmaxRegression(learning_rate=0.07, schedule="constant", momentum=0.0, epochs=30).fit(
        X, y
    )
    assert model.state_.velocity_weights is None and model.state_.velocity_bias is None
    assert np.mean(model.predict(X) == y) > 0.9
    assert [observed_rate(model, X[:8], y[:8]) for _ in range(3)] == pytest.approx([0.07] * 3)
    assert model.state_.velocity_weights is None


# --------------------------------------------------------------------------- robustness


def test_features_of_magnitude_1e6() -> None:
    X, y = make_blobs(n=200, seed=12)
    X = X * 1e5 + 1e6
    model = SoftmaxRegression(epochs=20).fit(X, y)
    P = model.predict_proba(X)
    assert np.isfinite(P).all()
    assert np.abs(P.sum(axis=1) - 1).max() <= 1e-12
    assert np.mean(model.predict(X) == y) > 0.9
    # Far outside the training range the logits are huge; probabilities stay proper.
    far = np.concatenate([X * 1e6, -X * 1e6])
    P_far = model.predict_proba(far)
    assert np.isfinite(P_far).all() and np.all((P_far >= 0) & (P_far <= 1))
    assert np.abs(P_far.sum(axis=1) - 1).max() <= 1e-12


def test_constant_features_do_not_divide_by_zero() -> None:
    X, y = make_blobs(n=60, n_features=2, seed=13)
    constant = np.column_stack([np.full(60, 5.0), np.full(60, 0.1), np.full(60, 1e6 + 0.1)])
    X = np.hstack([X, constant])
    model = SoftmaxRegression(epochs=10).fit(X, y)
    assert np.array_equal(model.standardizer_.scale[2:], [1.0, 1.0, 1.0])
    assert np.isfinite(model.state_.weights).all()
    assert np.abs(model.state_.weights[2:]).max() < 1e-9
    # A later row with a different value in a constant column is still fine.
    odd = X[:3].copy()
    odd[:, 2:] = [[6.0, 0.2, 0.0]] * 3
    model.partial_fit(odd, y[:3])
    assert np.isfinite(model.predict_proba(odd)).all()


@pytest.mark.parametrize(
    "labels", [("ant", "bee", "cat"), (3, 7, 10), ("-1", "x y", "zz"), (-5, 0, 2**40)]
)
def test_predict_returns_the_original_labels(labels: tuple[Any, ...]) -> None:
    X, y = make_blobs(n=90, labels=labels, seed=14)
    model = SoftmaxRegression(epochs=30).fit(X, y)
    assert model.classes_.tolist() == sorted(labels)
    predicted = model.predict(X)
    assert predicted.dtype.kind == np.asarray(labels).dtype.kind
    assert set(predicted.tolist()) <= set(labels)
    assert np.mean(predicted == y) > 0.9
    model.partial_fit(X[:5], list(y[:5]))  # a plain list of the original labels works too


def test_unsigned_integer_labels_become_int64_classes() -> None:
    X, y = make_blobs(n=40, labels=(1, 2), seed=15)
    model = SoftmaxRegression(epochs=3).fit(X, y.astype(np.uint8))
    assert model.classes_.dtype == np.int64
    model.partial_fit(X[:2], [1, 2])


def test_object_array_labels_are_checked_like_a_list() -> None:
    X, y = make_blobs(n=40, seed=16)
    model = SoftmaxRegression(epochs=3).fit(X, y)
    model.partial_fit(X[:2], np.array(y[:2], dtype=object))
    with pytest.raises(errors.UnknownLabelError, match="got 3 at row 1"):
        model.partial_fit(X[:2], np.array([y[0], 3], dtype=object))


@pytest.mark.parametrize("fitted_first", [False, True])
def test_divergence_is_refused_and_leaves_the_model_unchanged(fitted_first: bool) -> None:
    # From zero weights the step overflows the weights themselves; from a fitted model
    # (P close to Y) the weights stay finite near 1e304 but overflow the batch's logits.
    X, y = make_blobs(n=50, seed=17)
    model = SoftmaxRegression(epochs=3)
    if fitted_first:
        model.fit(X, y)
    else:
        model.initialize(X, y)
    state = model.state_
    weights = state.weights.copy()
    with pytest.raises(errors.DivergenceError) as caught:
        model.partial_fit(X[:10] * 1e150, y[:10], learning_rate=1e308)
    assert caught.value.field == "learning_rate"
    assert "the model is unchanged" in caught.value.message
    assert model.state_ is state
    assert np.array_equal(model.state_.weights, weights)
    model.partial_fit(X[:10], y[:10])  # still usable
    assert np.isfinite(model.predict_proba(X)).all()


def test_finiteness_check_is_exact_and_silent() -> None:
    def state(weights: list[list[float]], bias: list[float]) -> TrainState:
        return TrainState(np.array(weights), np.array(bias), None, None, 0)

    huge = 1.7e308
    assert state([[huge, huge], [huge, huge]], [huge, 0.0]).is_finite()  # the sum overflows
    assert not state([[np.inf, -np.inf], [0.0, 0.0]], [0.0, 0.0]).is_finite()  # sum is nan
    assert not state([[0.0, 0.0], [0.0, 0.0]], [np.nan, 0.0]).is_finite()


def test_fit_that_diverges_raises_divergence_error() -> None:
    X, y = make_blobs(n=50, seed=18)
    model = SoftmaxRegression(learning_rate=1e300, standardize=False, epochs=3)
    with pytest.raises(errors.DivergenceError, match="diverged in epoch 1"):
        model.fit(X * 1e6, y)


# --------------------------------------------------------------------------- bad input

X4, Y4 = make_blobs(n=30, seed=19)


@pytest.fixture(scope="module")
def fitted() -> SoftmaxRegression:
    return SoftmaxRegression(epochs=3).fit(X4, Y4)


ROWS = [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]


def with_cell(row: int, column: int, value: Any) -> list[list[Any]]:
    rows: list[list[Any]] = [list(r) for r in ROWS * 2]
    rows[row][column] = value
    return rows


BAD_INSTANCES = [
    # (instances, error class, exact message, row)
    (
        np.ones((3, 3)),
        errors.FeatureCountError,
        "instances: expected 4 features, got 3 (row 0)",
        0,
    ),
    (
        [[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0]],
        errors.FeatureCountError,
        "instances: expected 4 features, got 3 (row 2)",
        2,
    ),
    (
        with_cell(2, 1, float("nan")),
        errors.NonFiniteError,
        "instances: expected finite numbers, got nan at row 2, column 1",
        2,
    ),
    (
        with_cell(3, 3, -float("inf")),
        errors.NonFiniteError,
        "instances: expected finite numbers, got -inf at row 3, column 3",
        3,
    ),
    (
        with_cell(1, 0, True),
        errors.NotANumberError,
        "instances: expected a number at row 1, column 0, got True (a boolean)",
        1,
    ),
    (
        with_cell(2, 2, "3.5"),
        errors.NotANumberError,
        "instances: expected a number at row 2, column 2, got '3.5' (a string)",
        2,
    ),
    (
        with_cell(0, 3, None),
        errors.NotANumberError,
        "instances: expected a number at row 0, column 3, got null",
        0,
    ),
    (
        [ROWS[0], 7.0],
        errors.NotANumberError,
        "instances: expected each row to be a list of numbers, got 7.0 at row 1",
        1,
    ),
    (
        np.array([[True] * 4]),
        errors.NotANumberError,
        "instances: expected numbers, got booleans",
        None,
    ),
    ([], errors.EmptyInputError, "instances: expected at least one row, got none", None),
    (
        np.empty((0, 4)),
        errors.EmptyInputError,
        "instances: expected at least one row, got none",
        None,
    ),
    (
        np.ones((2, 2, 4)),
        errors.FeatureCountError,
        "instances: expected a 2-D array (rows of features), got 3 dimension(s)",
        None,
    ),
]


@pytest.mark.parametrize(("instances", "error", "message", "row"), BAD_INSTANCES)
@pytest.mark.parametrize("entry", ["predict_proba", "predict", "decision_function", "partial_fit"])
def test_bad_instances_raise_the_exact_error(
    fitted: SoftmaxRegression, entry: str, instances, error, message: str, row
) -> None:
    call: Callable[[Any], Any] = getattr(fitted, entry)
    state = fitted.state_
    with pytest.raises(errors.ModelError) as caught:
        if entry == "partial_fit":
            call(instances, ["ant"] * (len(instances) if len(instances) else 1))
        else:
            call(instances)
    assert type(caught.value) is error
    assert caught.value.message == message == str(caught.value)
    assert caught.value.row == row
    assert caught.value.field == "instances"
    assert fitted.state_ is state


BAD_LABELS = [
    (
        ["ant", "zebra", "bee"],
        errors.UnknownLabelError,
        "labels: expected one of the classes ('ant', 'bee', 'cat'), got 'zebra' at row 1",
        1,
    ),
    (
        ["ant", "bee", 1],
        errors.UnknownLabelError,
        "labels: expected one of the classes (strings: 'ant', 'bee', 'cat'), got 1 at row 2",
        2,
    ),
    (
        [True, "ant", "bee"],
        errors.UnknownLabelError,
        "labels: expected one of the classes (strings: 'ant', 'bee', 'cat'), "
        "got True (a boolean) at row 0",
        0,
    ),
    (
        ["ant", "bee"],
        errors.LengthMismatchError,
        "labels: expected 3 labels (one per instance), got 2",
        None,
    ),
    ([], errors.EmptyInputError, "labels: expected at least one label, got none", None),
]


@pytest.mark.parametrize(("labels", "error", "message", "row"), BAD_LABELS)
def test_bad_labels_raise_the_exact_error(
    fitted: SoftmaxRegression, labels, error, message: str, row
) -> None:
    state = fitted.state_
    with pytest.raises(errors.ModelError) as caught:
        fitted.partial_fit(X4[:3], labels)
    assert type(caught.value) is error
    assert str(caught.value) == message
    assert caught.value.row == row and caught.value.field == "labels"
    assert fitted.state_ is state


def test_unknown_integer_label() -> None:
    X, y = make_blobs(n=30, labels=(0, 1, 2), seed=20)
    model = SoftmaxRegression(epochs=1).fit(X, y)
    with pytest.raises(errors.UnknownLabelError) as caught:
        model.partial_fit(X[:3], [0, 2, 5])
    assert str(caught.value) == "labels: expected one of the classes (0, 1, 2), got 5 at row 2"
    with pytest.raises(errors.UnknownLabelError, match=re.escape("got 'a' (a string) at row 0")):
        model.partial_fit(X[:1], ["a"])


BAD_SETTINGS = [
    (dict(learning_rate=0.0), "learning_rate must be > 0, got 0.0"),
    (dict(learning_rate=float("inf")), "learning_rate must be > 0, got inf"),
    (dict(learning_rate=float("nan")), "learning_rate must be > 0, got nan"),
    (dict(learning_rate="0.1"), "learning_rate must be a number, got '0.1'"),
    (dict(momentum=1.0), "momentum must be in [0, 1), got 1.0"),
    (dict(momentum=-0.1), "momentum must be in [0, 1), got -0.1"),
    (dict(l2=-1e-3), "l2 must be >= 0 and finite, got -0.001"),
    (dict(l2=float("inf")), "l2 must be >= 0 and finite, got inf"),
    (dict(power_t=-1.0), "power_t must be in [0, 10], got -1.0"),
    (dict(decay_steps=0.0), "decay_steps must be > 0, got 0.0"),
    (
        dict(schedule="cosine"),
        "schedule must be one of constant, invscaling, linear, auto, got 'cosine'",
    ),
    (dict(batch_size=0), "batch_size must be an integer >= 1, got 0"),
    (dict(batch_size=2.5), "batch_size must be an integer >= 1, got 2.5"),
    (dict(batch_size=True), "batch_size must be an integer >= 1, got True"),
    (dict(epochs=-1), "epochs must be an integer >= 0, got -1"),
    (dict(patience=0), "patience must be an integer >= 1, got 0"),
    (dict(seed=-1), "seed must be an integer >= 0, got -1"),
    (dict(tol=float("nan")), "tol must be >= 0 and finite, got nan"),
    (dict(tol=-1.0), "tol must be >= 0 and finite, got -1.0"),
]


@pytest.mark.parametrize(("settings", "message"), BAD_SETTINGS)
def test_invalid_settings_raise_invalid_parameter(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(errors.ModelError) as caught:
        SoftmaxRegression(**settings).fit(X4, Y4)
    assert type(caught.value) is errors.InvalidParameterError
    assert str(caught.value) == message
    assert caught.value.field == next(iter(settings))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(learning_rate=0.0), "learning_rate must be > 0 and finite, got 0.0"),
        (dict(learning_rate=float("inf")), "learning_rate must be > 0 and finite, got inf"),
        (dict(learning_rate="0.1"), "learning_rate must be > 0 and finite, got '0.1'"),
        (dict(passes=0), "passes must be an integer >= 1, got 0"),
        (dict(passes=2.0), "passes must be an integer >= 1, got 2.0"),
        (dict(passes=True), "passes must be an integer >= 1, got True"),
    ],
)
def test_invalid_update_settings(
    fitted: SoftmaxRegression, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(errors.InvalidParameterError) as caught:
        fitted.partial_fit(X4[:2], Y4[:2], **kwargs)
    assert str(caught.value) == message


def test_bad_training_data() -> None:
    cases: list[tuple[Callable[[], Any], type[errors.ModelError], str]] = [
        (
            lambda: SoftmaxRegression().fit(X4[:10], Y4[:9]),
            errors.LengthMismatchError,
            "labels: expected 10 labels (one per instance), got 9",
        ),
        (
            lambda: SoftmaxRegression().fit([], []),
            errors.EmptyInputError,
            "instances: expected at least one row, got none",
        ),
        (
            lambda: SoftmaxRegression().fit(X4[:4], ["a"] * 4),
            errors.InvalidParameterError,
            "expected at least 2 classes, got 1",
        ),
        (
            lambda: SoftmaxRegression().fit(X4[:4], [0.0, 1.0, 0.0, 1.0]),
            errors.InvalidParameterError,
            "labels must be integers or strings, got dtype float64",
        ),
        (
            lambda: SoftmaxRegression().fit(X4, Y4, validation=(X4[:, :2], Y4)),
            errors.FeatureCountError,
            "instances: expected 4 features, got 2 (row 0)",
        ),
        (
            lambda: SoftmaxRegression().fit(X4, Y4, validation=(X4[:5], Y4[:4])),
            errors.LengthMismatchError,
            "labels: expected 5 labels (one per instance), got 4",
        ),
        (
            lambda: SoftmaxRegression().fit(X4, Y4, validation=(X4[:2], ["ant", "emu"])),
            errors.UnknownLabelError,
            "labels: expected one of the classes ('ant', 'bee', 'cat'), got 'emu' at row 1",
        ),
        (
            lambda: SoftmaxRegression().fit(X4, Y4, feature_names=["a", "b", "c", "a"]),
            errors.UnknownFeatureError,
            "feature_names: expected 4 distinct names, got 4 (3 distinct)",
        ),
    ]
    for call, error, message in cases:
        with pytest.raises(errors.ModelError) as caught:
            call()
        assert type(caught.value) is error
        assert str(caught.value) == message


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.predict(X4),
        lambda m: m.predict_proba(X4),
        lambda m: m.decision_function(X4),
        lambda m: m.partial_fit(X4, Y4),
        lambda m: m.log_loss(X4, Y4),
        lambda m: m.n_features_in_,
    ],
)
def test_unfitted_model_raises_not_fitted(call: Callable[[SoftmaxRegression], Any]) -> None:
    with pytest.raises(errors.NotFittedError) as caught:
        call(SoftmaxRegression())
    assert str(caught.value) == "this model has not been trained: call fit or initialize first"


def test_the_kept_epoch_is_the_one_whose_weights_the_model_holds() -> None:
    X, y = make_blobs(n=400, spread=3.0, seed=21)
    X_val, y_val = make_blobs(n=200, spread=3.0, seed=22)
    for schedule in ("linear", "constant"):
        model = SoftmaxRegression(schedule=schedule, learning_rate=0.3, epochs=60, patience=3)
        model.fit(X, y, validation=(X_val, y_val))
        kept = model.kept_epoch_
        assert kept in (model.best_epoch_, model.n_epochs_run_)
        assert kept is not None and model.history_[kept - 1].val_loss == pytest.approx(
            model.log_loss(X_val, y_val), rel=1e-12, abs=0
        )
