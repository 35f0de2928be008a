"""Numerically stable softmax-regression maths: pure functions, inputs never modified.

Notation: ``X: (m, d)`` a minibatch of (standardized) rows, ``W: (d, k)`` weights,
``b: (k,)`` bias, ``y: (m,)`` integer class indices in ``[0, k)``. Logits ``Z = XW + b``.

The loss is the mean cross-entropy plus ``(l2 / 2) * ||W||^2`` (the bias is not penalized);
its gradient is ``dL/dW = X^T (P - Y) / m + l2 * W`` and ``dL/db = mean over rows of (P - Y)``,
where ``P = softmax(Z)`` and ``Y`` is the one-hot encoding of ``y``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "Float",
    "Gradient",
    "Index",
    "cross_entropy",
    "log_softmax",
    "logsumexp",
    "loss_and_gradient",
    "mean",
    "one_hot",
    "regularized_loss",
    "row_cross_entropy",
    "softmax",
]

Float = NDArray[np.float64]
Index = NDArray[np.intp]

_FLOAT64 = np.dtype(np.float64)


def logsumexp(Z: Float) -> Float:
    """Row-wise ``log(sum(exp(Z)))`` without overflow. ``Z: (m, k)`` -> ``(m,)``.

    >>> logsumexp(np.array([[1000.0, 1000.0]]))
    array([1000.69314718])
    """
    zmax = _row_max(Z)
    # A row of -inf would give inf - inf; logits here are always finite, so zmax is too.
    # Logits of opposite sign near the float limit give Z - zmax = -inf: exp makes that an
    # exact 0, so the overflow is harmless and not worth a warning.
    with np.errstate(over="ignore"):
        shifted = Z - zmax[:, None]
        if shifted.dtype.kind != "f":
            out: Float = zmax + np.log(np.exp(shifted).sum(axis=1))
            return out
        # The same operations, in place in the temporaries.
        np.exp(shifted, out=shifted)
        out = shifted.sum(axis=1)
        np.log(out, out=out)
        out += zmax
    return out


def _row_max(Z: Float) -> Float:
    """``Z.max(axis=1)``. NumPy reduces short rows slowly (one inner loop per row): for many
    rows of few columns, the columns of a transposed copy are reduced instead (a maximum is
    exact, whatever the order)."""
    if Z.ndim == 2 and Z.shape[0] >= 64 and Z.shape[1] <= 64:
        out: Float = Z.T.copy().max(axis=0)
        return out
    row_max: Float = Z.max(axis=1)
    return row_max


def log_softmax(Z: Float) -> Float:
    """Row-wise log-probabilities ``Z - logsumexp(Z)``. ``Z: (m, k)`` -> ``(m, k)``."""
    # Computed as (Z - max) - log(sum): subtracting logsumexp(Z) itself would lose the
    # log-sum (<= log k) to rounding once |Z| passes ~1e16.
    with np.errstate(over="ignore"):
        shifted = Z - Z.max(axis=1, keepdims=True)
    out: Float = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return out


def softmax(Z: Float) -> Float:
    """Row-wise probabilities. ``Z: (m, k)`` -> ``(m, k)``, rows sum to 1, never NaN for finite Z.

    Subtracting the row maximum keeps every exponent <= 0, so nothing overflows, and the
    largest term is exactly 1, so the denominator is never 0.

    >>> softmax(np.array([[0.0, 0.0]]))
    array([[0.5, 0.5]])
    """
    with np.errstate(over="ignore"):  # -inf from Z - max near the float limit: exp gives 0
        E: Float = np.exp(Z - Z.max(axis=1, keepdims=True))
    E /= E.sum(axis=1, keepdims=True)
    return E


def row_cross_entropy(Z: Float, y: Index, lse: Float | float | None = None) -> Float:
    """Each row's cross-entropy of ``softmax(Z)`` against ``y``: ``logsumexp(Z) - Z[i, y_i]``.

    ``Z: (m, k)`` logits, ``y: (m,)`` class indices -> ``(m,)``. ``lse: (m,)`` is
    ``logsumexp(Z)`` when the caller has it already; for rows of log-probabilities it is ``0.0``.

    >>> row_cross_entropy(np.array([[0.0, 0.0], [0.0, 0.0]]), np.array([1, 0]))
    array([0.69314718, 0.69314718])
    """
    if lse is None:
        lse = logsumexp(Z)
    losses: Float = lse - Z[np.arange(y.shape[0]), y]
    return losses


def cross_entropy(Z: Float, y: Index, lse: Float | float | None = None) -> float:
    """Mean cross-entropy of ``softmax(Z)`` against ``y``: the mean of :func:`row_cross_entropy`.

    ``Z: (m, k)`` logits, ``y: (m,)`` class indices, ``lse`` as for :func:`row_cross_entropy`.

    >>> cross_entropy(np.array([[0.0, 0.0]]), np.array([1]))
    0.6931471805599453
    """
    return mean(row_cross_entropy(Z, y, lse))


def mean(values: Float) -> float:
    """``float(np.mean(values))``: for a non-empty 1-D float64 array, the same sum (NumPy's
    pairwise ``add.reduce``) over the same count, without the generic mean's overhead."""
    if values.ndim == 1 and values.dtype is _FLOAT64 and len(values):
        return float(values.sum()) / len(values)
    return float(np.mean(values))


def one_hot(y: Index, n_classes: int) -> Float:
    """``y: (m,)`` class indices -> ``(m, n_classes)`` indicator matrix, built without a loop."""
    Y = np.zeros((y.shape[0], n_classes))
    Y[np.arange(y.shape[0]), y] = 1.0
    return Y


def regularized_loss(X: Float, y: Index, W: Float, b: Float, l2: float) -> float:
    """Mean cross-entropy of ``softmax(XW + b)`` against ``y`` plus ``(l2/2)||W||^2``."""
    ce = cross_entropy(X @ W + b, y)
    return ce + 0.5 * l2 * float(np.vdot(W, W)) if l2 else ce


class Gradient(NamedTuple):
    """What one pass over a minibatch yields: the data loss (mean cross-entropy, without the
    penalty), the number of rows already classified correctly, and the objective's gradients
    ``weights: (d, k)``, ``bias: (k,)``."""

    loss: float
    correct: int
    weights: Float
    bias: Float


def loss_and_gradient(X: Float, y: Index, W: Float, b: Float, l2: float) -> Gradient:
    """Loss and gradients at ``(W, b)`` in one pass over the minibatch.

    The gradient is that of the regularized objective; the loss reported is the data term only
    (the minibatch's log-loss), which is what a prequential evaluation wants. One ``exp`` per
    logit: the probabilities are ``exp(Z - logsumexp(Z))``, and ``P - Y`` subtracts 1 at each
    row's true class instead of materializing ``Y``.
    """
    m = y.shape[0]
    rows = np.arange(m)
    Z = X @ W + b
    correct = int(np.count_nonzero(Z.argmax(axis=1) == y))
    lse = logsumexp(Z)
    ce = mean(lse - Z[rows, y])  # cross_entropy(Z, y, lse)
    G = Z - lse[:, None]
    np.exp(G, out=G)
    G[rows, y] -= 1.0
    G /= m
    dW = X.T @ G
    if l2:
        dW += l2 * W
    return Gradient(ce, correct, dW, G.sum(axis=0))
