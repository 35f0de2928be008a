"""Classification metrics on integer class indices.

Labels here are class indices ``0 .. n_classes - 1``; the estimator maps class names to indices
before calling these functions. Every public function validates its inputs once and raises the
package's own errors (:mod:`model.errors`); the private helpers trust what they are given.

Example::

    >>> report = classification_report([0, 1, 1], [0, 1, 0], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]],
    ...                                ["cat", "dog"])
    >>> report["accuracy"], report["confusion_matrix"]
    (0.6666666666666666, [[1, 0], [1, 1]])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import (
    EmptyInputError,
    FeatureCountError,
    InvalidInputError,
    InvalidParameterError,
    LengthMismatchError,
    NotANumberError,
    UnknownLabelError,
)
from .maths import cross_entropy
from .validation import check_1d, check_2d, check_finite

__all__ = [
    "Calibration",
    "accuracy",
    "calibration",
    "classification_report",
    "confusion_matrix",
    "log_loss",
    "precision_recall_f1",
]

# The smallest positive normal float64: -log of it is finite (about 708.4), -log(0) is not.
_TINY = float(np.finfo(np.float64).tiny)
# Softmax output never exceeds 1, but a caller's arithmetic may overshoot by a rounding error.
_PROBABILITY_SLACK = 1e-9


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of predictions equal to the true class.

    ``y_true``: (n_samples,) and ``y_pred``: (n_samples,) integer class indices.

    >>> accuracy([0, 1, 2, 2], [0, 1, 1, 2])
    0.75
    """
    truth, predicted = _label_pair(y_true, y_pred)
    return _accuracy(truth, predicted)


def log_loss(y_true: ArrayLike, proba: ArrayLike) -> float:
    """Mean negative log-probability of the true class (cross-entropy), in nats.

    ``y_true``: (n_samples,) integer class indices; ``proba``: (n_samples, n_classes) class
    probabilities. A probability of 0 is clipped to the smallest positive normal float64, so the
    loss is always finite.

    >>> round(log_loss([0, 1], [[0.5, 0.5], [0.25, 0.75]]), 6)
    0.490415
    """
    truth = _labels(y_true, "y_true")
    probabilities = _probabilities(proba, truth.shape[0])
    _check_label_range(truth, probabilities.shape[1], "y_true", "proba has only {k} columns")
    return _log_loss(truth, probabilities)


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int) -> NDArray[np.int64]:
    """Counts of (true class, predicted class) pairs.

    ``y_true``: (n_samples,) and ``y_pred``: (n_samples,) integer class indices below
    ``n_classes``. Returns (n_classes, n_classes): rows are true classes, columns predicted ones.

    >>> confusion_matrix([0, 1, 1], [0, 1, 0], 2).tolist()
    [[1, 0], [1, 1]]
    """
    truth, predicted = _label_pair(y_true, y_pred)
    _check_n_classes(n_classes)
    _check_label_range(truth, n_classes, "y_true", "n_classes is {k}")
    _check_label_range(predicted, n_classes, "y_pred", "n_classes is {k}")
    return _confusion_matrix(truth, predicted, n_classes)


def precision_recall_f1(
    confusion: ArrayLike,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """Per-class precision, recall, F1 and support from a confusion matrix.

    ``confusion``: (n_classes, n_classes) non-negative integer counts, rows true, columns
    predicted. Returns four (n_classes,) arrays ``(precision, recall, f1, support)``; a ratio
    with a zero denominator is 0.0 (as scikit-learn's ``zero_division=0``), without warnings.

    >>> precision, recall, f1, support = precision_recall_f1([[1, 0], [1, 1]])
    >>> precision.tolist(), recall.tolist(), support.tolist()
    ([0.5, 1.0], [1.0, 0.5], [1, 2])
    """
    counts = np.asarray(confusion)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise InvalidInputError(
            f"confusion must be a square (n_classes, n_classes) matrix, got shape {counts.shape}",
            field="confusion",
        )
    if counts.size == 0:
        raise EmptyInputError("confusion is empty; expected at least one class", field="confusion")
    if counts.dtype.kind not in "iu":
        raise InvalidInputError(
            f"confusion must hold integer counts, got dtype {counts.dtype}", field="confusion"
        )
    if (counts < 0).any():
        raise InvalidInputError(
            f"confusion must hold counts >= 0, got {counts.min()}", field="confusion"
        )
    return _precision_recall_f1(counts.astype(np.int64, copy=False))


@dataclass(frozen=True)
class Calibration:
    """Top-label calibration in equal-width confidence bins ``(edges[i], edges[i + 1]]``.

    ``edges``: (n_bins + 1,) from 0 to 1; ``count``: (n_bins,) rows whose top probability falls
    in each bin; ``confidence`` and ``accuracy``: (n_bins,) their mean top probability and the
    fraction predicted right, NaN for an empty bin. ``expected_calibration_error`` is the
    count-weighted mean of ``|accuracy - confidence|`` over the bins (Guo et al., 2017).
    """

    edges: NDArray[np.float64]
    count: NDArray[np.int64]
    confidence: NDArray[np.float64]
    accuracy: NDArray[np.float64]
    expected_calibration_error: float


def calibration(y_true: ArrayLike, proba: ArrayLike, n_bins: int = 15) -> Calibration:
    """How far the probability of the predicted class is from how often that class is right.

    ``y_true``: (n_samples,) integer class indices; ``proba``: (n_samples, n_classes). The
    predicted class is each row's argmax (as ``predict``) and its probability the row's
    confidence; rows are binned by confidence into ``n_bins`` equal-width bins.

    >>> result = calibration([0, 1, 1], [[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]], n_bins=2)
    >>> result.count.tolist(), round(result.expected_calibration_error, 4)
    ([0, 3], 0.0667)
    """
    truth = _labels(y_true, "y_true")
    probabilities = _probabilities(proba, truth.shape[0])
    _check_label_range(truth, probabilities.shape[1], "y_true", "proba has only {k} columns")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise InvalidParameterError(
            f"n_bins must be an integer >= 1, got {n_bins!r}", field="n_bins"
        )
    return _calibration(truth, probabilities, int(n_bins))


def classification_report(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    proba: ArrayLike,
    classes: Sequence[str | int] | NDArray[Any],
) -> dict[str, Any]:
    """Accuracy, log loss, confusion matrix and per-class scores in one JSON-serializable dict.

    Keys: ``accuracy`` (float), ``log_loss`` (float), ``confusion_matrix`` (list of lists of
    int, rows true, columns predicted), ``per_class`` (``{str(class): {"precision", "recall",
    "f1", "support"}}``, 0.0 where a ratio is undefined).

    ``y_true``: (n_samples,) and ``y_pred``: (n_samples,) integer class indices;
    ``proba``: (n_samples, n_classes) probabilities; ``classes``: (n_classes,) class names, where
    index ``i`` names class ``i``. Names become strings in ``per_class``.

    >>> report = classification_report([0, 1], [0, 0], [[0.8, 0.2], [0.6, 0.4]], ["a", "b"])
    >>> report["per_class"]["a"]
    {'precision': 0.5, 'recall': 1.0, 'f1': 0.6666666666666666, 'support': 1}
    """
    names = _class_names(classes)
    truth, predicted = _label_pair(y_true, y_pred)
    probabilities = _probabilities(proba, truth.shape[0])
    n_classes = len(names)
    if probabilities.shape[1] != n_classes:
        raise FeatureCountError(
            f"proba has {probabilities.shape[1]} columns, expected {n_classes} (one per class)",
            field="proba",
        )
    _check_label_range(truth, n_classes, "y_true", "there are {k} classes")
    _check_label_range(predicted, n_classes, "y_pred", "there are {k} classes")

    confusion = _confusion_matrix(truth, predicted, n_classes)
    precision, recall, f1, support = _precision_recall_f1(confusion)
    per_class: dict[str, dict[str, float | int]] = {
        name: {
            "precision": float(precision[index]),
            "recall": float(recall[index]),
            "f1": float(f1[index]),
            "support": int(support[index]),
        }
        for index, name in enumerate(names)
    }
    return {
        "accuracy": _accuracy(truth, predicted),
        "log_loss": _log_loss(truth, probabilities),
        "confusion_matrix": confusion.tolist(),
        "per_class": per_class,
    }


# --- validation (public entry points only) --------------------------------------------------


def _class_names(classes: Sequence[str | int] | NDArray[Any]) -> list[str]:
    """``classes`` as the distinct, non-empty list of strings ``per_class`` is keyed by."""
    if isinstance(classes, str):
        raise InvalidParameterError(
            f"classes must be a sequence of class names, got the string {classes!r}",
            field="classes",
        )
    names = [str(name) for name in np.asarray(classes).ravel().tolist()]
    if not names:
        raise EmptyInputError("classes is empty; expected at least one class name", field="classes")
    if len(set(names)) != len(names):
        duplicates = sorted({name for name in names if names.count(name) > 1})
        raise InvalidParameterError(
            f"classes must be distinct as strings, got duplicates {duplicates}", field="classes"
        )
    return names


def _labels(values: ArrayLike, name: str) -> NDArray[np.int64]:
    return _as_indices(check_1d(values, name), name)


def _label_pair(
    y_true: ArrayLike, y_pred: ArrayLike
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    truth = check_1d(y_true, "y_true", allow_empty=True)
    predicted = check_1d(y_pred, "y_pred", allow_empty=True)
    if truth.shape[0] != predicted.shape[0]:
        raise LengthMismatchError(
            f"y_true and y_pred must have the same length, got {truth.shape[0]} and "
            f"{predicted.shape[0]}",
            field="y_pred",
        )
    if truth.shape[0] == 0:
        raise EmptyInputError("y_true and y_pred are empty; expected at least one label")
    return _as_indices(truth, "y_true"), _as_indices(predicted, "y_pred")


def _as_indices(labels: NDArray[Any], name: str) -> NDArray[np.int64]:
    if labels.dtype.kind not in "iu":
        raise InvalidInputError(
            f"{name} must hold integer class indices, got dtype {labels.dtype}", field=name
        )
    if labels.dtype.kind == "i" and labels.min() < 0:
        row = int(np.argmax(labels < 0))
        raise UnknownLabelError(
            f"{name} must hold class indices >= 0, got {labels[row]} (row {row})",
            field=name,
            row=row,
        )
    return labels.astype(np.int64, copy=False)


def _check_label_range(labels: NDArray[np.int64], n_classes: int, name: str, limit: str) -> None:
    if labels.max() >= n_classes:
        row = int(np.argmax(labels >= n_classes))
        raise UnknownLabelError(
            f"{name} holds class index {labels[row]} (row {row}), expected indices below "
            f"{n_classes}: {limit.format(k=n_classes)}",
            field=name,
            row=row,
        )


def _check_n_classes(n_classes: int) -> None:
    if isinstance(n_classes, bool) or not isinstance(n_classes, int | np.integer):
        raise InvalidParameterError(
            f"n_classes must be an integer, got {type(n_classes).__name__}", field="n_classes"
        )
    if n_classes < 1:
        raise InvalidParameterError(f"n_classes must be >= 1, got {n_classes}", field="n_classes")


def _probabilities(proba: ArrayLike, n_samples: int) -> NDArray[np.float64]:
    try:
        probabilities = np.asarray(proba, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise NotANumberError(
            f"proba must be a numeric (n_samples, n_classes) array: {error}", field="proba"
        ) from None
    check_2d(probabilities, "proba", axes="n_samples, n_classes")
    if probabilities.shape[0] != n_samples:
        raise LengthMismatchError(
            f"proba must have one row per label, expected {n_samples} rows, got "
            f"{probabilities.shape[0]}",
            field="proba",
        )
    if probabilities.shape[1] == 0:
        raise EmptyInputError("proba has no columns; expected one per class", field="proba")
    check_finite(probabilities, "proba")
    outside = (probabilities < 0.0) | (probabilities > 1.0 + _PROBABILITY_SLACK)
    if outside.any():
        row, column = (int(index) for index in np.argwhere(outside)[0])
        raise InvalidInputError(
            f"proba must hold probabilities in [0, 1], got {probabilities[row, column]} at row "
            f"{row}, column {column}",
            field="proba",
            row=row,
        )
    return probabilities


# --- maths (inputs already validated) --------------------------------------------------------


def _accuracy(truth: NDArray[np.int64], predicted: NDArray[np.int64]) -> float:
    return float(np.mean(truth == predicted))


def _log_loss(truth: NDArray[np.int64], probabilities: NDArray[np.float64]) -> float:
    # Rows of log-probabilities: their log-normalizer is 0.
    return cross_entropy(np.log(np.clip(probabilities, _TINY, 1.0)), truth, lse=0.0)


def _confusion_matrix(
    truth: NDArray[np.int64], predicted: NDArray[np.int64], n_classes: int
) -> NDArray[np.int64]:
    # Each (true, predicted) pair gets one cell number; bincount counts them all at once.
    cells = truth * n_classes + predicted
    counts = np.bincount(cells, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes).astype(np.int64, copy=False)


def _precision_recall_f1(
    confusion: NDArray[np.int64],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    true_positives = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    precision = _divide_or_zero(true_positives, predicted)
    recall = _divide_or_zero(true_positives, support)
    # 2tp / (2tp + fp + fn) is the harmonic mean of precision and recall, and stays defined
    # (as 0) when either of them is not.
    f1 = _divide_or_zero(2.0 * true_positives, predicted + support)
    return precision, recall, f1, support.astype(np.int64, copy=False)


def _calibration(
    truth: NDArray[np.int64], probabilities: NDArray[np.float64], n_bins: int
) -> Calibration:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(truth.shape[0]), predicted]
    correct = (predicted == truth).astype(np.float64)
    # Right-closed bins: a confidence equal to an inner edge belongs to the bin below it.
    # Comparing with the edges themselves avoids the rounding of confidence * n_bins.
    bins = np.searchsorted(edges[1:-1], confidence, side="left")
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore"):  # an empty bin's mean is NaN, by design
        mean_confidence = np.bincount(bins, confidence, n_bins) / count
        mean_accuracy = np.bincount(bins, correct, n_bins) / count
    filled = count > 0
    gap = np.abs(mean_accuracy[filled] - mean_confidence[filled])
    error = float(np.sum(count[filled] * gap) / truth.shape[0])
    return Calibration(edges, count.astype(np.int64), mean_confidence, mean_accuracy, error)


def _divide_or_zero(
    numerator: NDArray[np.float64], denominator: NDArray[np.int64]
) -> NDArray[np.float64]:
    quotient = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=quotient, where=denominator > 0)
    return quotient
