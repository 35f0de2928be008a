"""The pure maths: gradients against finite differences, stability at the float limits, and
softmax invariants as property tests. Oracles: central differences, SciPy, scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import log_loss as sklearn_log_loss

from model import maths

SHAPES = [(5, 3, 2), (20, 7, 4), (50, 10, 10)]  # (rows m, features d, classes k)


def random_problem(m: int, d: int, k: int, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, d))
    y = rng.integers(0, k, size=m)
    W = rng.normal(scale=0.5, size=(d, k))
    b = rng.normal(scale=0.5, size=k)
    return X, y, W, b


def central_differences(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Numerical gradient of the scalar ``f`` at ``x``, one coordinate at a time."""
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += h
        minus[index] -= h
        grad[index] = (f(plus) - f(minus)) / (2 * h)
    return grad


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-300))


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("l2", [0.0, 0.3])
@pytest.mark.parametrize(("m", "d", "k"), SHAPES)
def test_gradient_matches_central_differences(m: int, d: int, k: int, l2: float) -> None:
    X, y, W, b = random_problem(m, d, k, seed=m * 100 + k)
    grad = maths.loss_and_gradient(X, y, W, b, l2)

    numeric_w = central_differences(lambda w: maths.regularized_loss(X, y, w, b, l2), W)
    numeric_b = central_differences(lambda c: maths.regularized_loss(X, y, W, c, l2), b)

    assert grad.weights.shape == (d, k) and grad.bias.shape == (k,)
    assert relative_error(grad.weights, numeric_w) < 1e-6
    assert relative_error(grad.bias, numeric_b) < 1e-6


@pytest.mark.parametrize(("m", "d", "k"), SHAPES)
def test_loss_is_the_data_term_and_the_penalty_is_half_l2_norm(m: int, d: int, k: int) -> None:
    X, y, W, b = random_problem(m, d, k, seed=7)
    grad = maths.loss_and_gradient(X, y, W, b, l2=0.25)
    probabilities = scipy.special.softmax(X @ W + b, axis=1)

    expected = sklearn_log_loss(y, probabilities, labels=np.arange(k))
    assert grad.loss == pytest.approx(expected, rel=1e-12)
    assert maths.regularized_loss(X, y, W, b, 0.0) == pytest.approx(expected, rel=1e-12)
    penalty = maths.regularized_loss(X, y, W, b, 0.25) - maths.regularized_loss(X, y, W, b, 0.0)
    assert penalty == pytest.approx(0.125 * np.sum(W**2), rel=1e-10)
    assert grad.correct == int(np.sum(probabilities.argmax(axis=1) == y))


def test_gradient_does_not_modify_its_inputs() -> None:
    X, y, W, b = random_problem(20, 7, 4, seed=3)
    copies = [a.copy() for a in (X, y, W, b)]
    maths.loss_and_gradient(X, y, W, b, l2=0.1)
    maths.regularized_loss(X, y, W, b, l2=0.1)
    for original, copy in zip((X, y, W, b), copies, strict=True):
        assert np.array_equal(original, copy)


def test_one_hot() -> None:
    Y = maths.one_hot(np.array([2, 0, 2]), 3)
    assert np.array_equal(Y, [[0, 0, 1], [1, 0, 0], [0, 0, 1]])


# --------------------------------------------------------------------------- the float limits

EXTREME_LOGITS = [
    [[1e308, -1e308, 0.0]],
    [[-1e308, 1e308]],
    [[7e2, -7e2]],
    [[-7e2, -7e2, -7e2]],
    [[1.7976931348623157e308, 1.7976931348623157e308]],
    [[-1.7976931348623157e308, 1.7976931348623157e308, 5e-324]],
    [[1e308, 1e308, -1e308], [0.0, 7e2, -7e2], [-1e308, -1e308, -1e308]],
]


@pytest.mark.parametrize("logits", EXTREME_LOGITS)
def test_softmax_at_the_float_limits_is_finite_and_normalized(logits: list[list[float]]) -> None:
    Z = np.array(logits)
    P = maths.softmax(Z)
    assert np.isfinite(P).all()
    assert np.all((P >= 0) & (P <= 1))
    assert np.abs(P.sum(axis=1) - 1).max() <= 1e-12
    # The largest logit of each row wins (ties share).
    top = np.equal(Z, Z.max(axis=1, keepdims=True))
    assert np.allclose(P, np.where(top, 1 / top.sum(axis=1, keepdims=True), 0.0), atol=1e-300)

    lse = maths.logsumexp(Z)
    assert np.isfinite(lse).all()
    assert np.all(lse >= Z.max(axis=1))
    assert np.all(lse <= Z.max(axis=1) + np.log(Z.shape[1]) + 1e-12)

    log_p = maths.log_softmax(Z)
    assert not np.isnan(log_p).any()
    assert np.all(log_p <= 0)
    assert np.allclose(np.exp(log_p).sum(axis=1), 1.0, rtol=0, atol=1e-12)


def test_moderate_overflow_values_match_scipy() -> None:
    Z = np.array([[7e2, -7e2, 0.0], [7e2, 7e2, 6.99e2]])
    assert np.allclose(maths.softmax(Z), scipy.special.softmax(Z, axis=1), rtol=1e-14, atol=0)
    assert np.allclose(maths.logsumexp(Z), scipy.special.logsumexp(Z, axis=1), rtol=1e-15)
    expected = scipy.special.log_softmax(Z, axis=1)
    assert np.allclose(maths.log_softmax(Z), expected, rtol=1e-14, atol=1e-12)


def test_log_softmax_keeps_the_log_sum_for_huge_equal_logits() -> None:
    # Z - logsumexp(Z) would round the log 2 away once |Z| > 1e16.
    log_p = maths.log_softmax(np.array([[1e17, 1e17], [-3e300, -3e300]]))
    assert np.allclose(log_p, np.log(0.5), rtol=1e-15)


# --------------------------------------------------------------------------- property tests

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
# Row-shift invariance only holds up to rounding of Z + c, which scales with |Z| + |c|.
moderate_floats = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False)


def logit_matrices(elements: st.SearchStrategy[float]) -> st.SearchStrategy[np.ndarray]:
    shapes = st.tuples(st.integers(1, 8), st.integers(1, 7))
    return arrays(np.float64, shapes, elements=elements)


@settings(max_examples=300, deadline=None)
@given(logit_matrices(finite_floats))
def test_softmax_rows_are_distributions_and_input_untouched(Z: np.ndarray) -> None:
    before = Z.copy()
    P = maths.softmax(Z)
    assert np.array_equal(Z, before)
    assert P.shape == Z.shape
    assert np.all((P >= 0) & (P <= 1))
    assert np.abs(P.sum(axis=1) - 1).max() <= 1e-12
    # Order-preserving within a row: a larger logit never gets a smaller probability.
    larger = Z[:, :, None] > Z[:, None, :]
    assert np.all(P[:, :, None] >= P[:, None, :], where=larger)


@settings(max_examples=300, deadline=None)
@given(logit_matrices(moderate_floats), st.data())
def test_softmax_ignores_a_per_row_shift(Z: np.ndarray, data: st.DataObject) -> None:
    shift = data.draw(arrays(np.float64, (Z.shape[0], 1), elements=moderate_floats))
    assert np.allclose(maths.softmax(Z + shift), maths.softmax(Z), rtol=1e-9, atol=1e-12)
    assert np.allclose(maths.log_softmax(Z + shift), maths.log_softmax(Z), rtol=0, atol=1e-9)
    expected_lse = maths.logsumexp(Z) + shift[:, 0]
    assert np.allclose(maths.logsumexp(Z + shift), expected_lse, rtol=1e-12, atol=1e-9)


@settings(max_examples=300, deadline=None)
@given(logit_matrices(finite_floats))
def test_log_softmax_agrees_with_log_of_softmax(Z: np.ndarray) -> None:
    before = Z.copy()
    log_p = maths.log_softmax(Z)
    lse = maths.logsumexp(Z)
    assert np.array_equal(Z, before)
    assert not np.isnan(log_p).any() and np.all(log_p <= 0)
    assert np.isfinite(lse).all()
    P = maths.softmax(Z)
    visible = np.greater(P, np.finfo(np.float64).tiny)
    assert np.allclose(log_p[visible], np.log(P[visible]), rtol=1e-12, atol=1e-12)


@settings(max_examples=200, deadline=None)
@given(logit_matrices(st.floats(min_value=-700, max_value=700)))
def test_softmax_matches_scipy(Z: np.ndarray) -> None:
    assert np.allclose(maths.softmax(Z), scipy.special.softmax(Z, axis=1), rtol=1e-12, atol=1e-300)
    assert np.allclose(maths.logsumexp(Z), scipy.special.logsumexp(Z, axis=1), rtol=1e-13)


# --------------------------------------------------------------------------- cross-entropy


@pytest.mark.parametrize(("m", "d", "k"), SHAPES)
def test_cross_entropy_is_sklearns_log_loss_and_the_unpenalized_loss(
    m: int, d: int, k: int
) -> None:
    X, y, W, b = random_problem(m, d, k, seed=m + k)
    Z = X @ W + b
    loss = maths.cross_entropy(Z, y)
    assert loss == pytest.approx(
        sklearn_log_loss(y, maths.softmax(Z), labels=np.arange(k)), rel=1e-12
    )
    assert loss == maths.regularized_loss(X, y, W, b, 0.0)
    assert loss == maths.cross_entropy(Z, y, maths.logsumexp(Z))
    assert loss == maths.loss_and_gradient(X, y, W, b, 0.3).loss
    # Given log-probabilities, the normalizer is 0: the same loss up to rounding.
    assert maths.cross_entropy(maths.log_softmax(Z), y, 0.0) == pytest.approx(loss, rel=1e-12)
