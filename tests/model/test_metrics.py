"""model.metrics against scikit-learn's implementations, plus edge cases and validation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from sklearn import metrics as sk

from model.errors import (
    EmptyInputError,
    FeatureCountError,
    InvalidInputError,
    InvalidParameterError,
    LengthMismatchError,
    NonFiniteError,
    NotANumberError,
    UnknownLabelError,
)
from model.metrics import (
    accuracy,
    calibration,
    classification_report,
    confusion_matrix,
    log_loss,
    precision_recall_f1,
)

TINY = np.finfo(np.float64).tiny


def random_case(
    seed: int, n_samples: int, n_classes: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, n_classes, n_samples)
    proba = rng.dirichlet(np.ones(n_classes), n_samples)
    # Mostly the argmax, sometimes a random class, so some classes go unpredicted.
    y_pred = np.where(rng.random(n_samples) < 0.7, proba.argmax(axis=1), y_true)
    return y_true, y_pred, proba


SEEDS = range(8)
# scikit-learn warns on a single class, so the one-class case is checked by hand below.
SHAPES = [(5, 2), (40, 3), (200, 10), (7, 12)]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("n_samples", "n_classes"), SHAPES)
def test_accuracy_matches_sklearn(seed: int, n_samples: int, n_classes: int) -> None:
    y_true, y_pred, _ = random_case(seed, n_samples, n_classes)
    assert accuracy(y_true, y_pred) == pytest.approx(sk.accuracy_score(y_true, y_pred), abs=1e-15)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("n_samples", "n_classes"), SHAPES)
def test_log_loss_matches_sklearn(seed: int, n_samples: int, n_classes: int) -> None:
    y_true, _, proba = random_case(seed, n_samples, n_classes)
    expected = sk.log_loss(y_true, proba, labels=list(range(n_classes)))
    assert log_loss(y_true, proba) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("n_samples", "n_classes"), SHAPES)
def test_confusion_matrix_matches_sklearn(seed: int, n_samples: int, n_classes: int) -> None:
    y_true, y_pred, _ = random_case(seed, n_samples, n_classes)
    ours = confusion_matrix(y_true, y_pred, n_classes)
    assert ours.dtype == np.int64
    expected = sk.confusion_matrix(y_true, y_pred, labels=list(range(n_classes)))
    np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("n_samples", "n_classes"), SHAPES)
def test_precision_recall_f1_matches_sklearn(seed: int, n_samples: int, n_classes: int) -> None:
    y_true, y_pred, _ = random_case(seed, n_samples, n_classes)
    precision, recall, f1, support = precision_recall_f1(
        confusion_matrix(y_true, y_pred, n_classes)
    )
    expected = sk.precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(n_classes)), zero_division=0
    )
    for ours, theirs in zip((precision, recall, f1), expected[:3], strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(support, expected[3])
    assert support.dtype == np.int64


@settings(max_examples=60, deadline=None)
@given(
    n_classes=st.integers(2, 6),
    pairs=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=40),
)
def test_scores_match_sklearn_on_any_labels(n_classes: int, pairs: list[tuple[int, int]]) -> None:
    y_true = np.array([t % n_classes for t, _ in pairs])
    y_pred = np.array([p % n_classes for _, p in pairs])
    labels = list(range(n_classes))
    confusion = confusion_matrix(y_true, y_pred, n_classes)
    np.testing.assert_array_equal(confusion, sk.confusion_matrix(y_true, y_pred, labels=labels))
    assert confusion.sum() == len(pairs)
    ours = precision_recall_f1(confusion)
    theirs = sk.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    for mine, reference in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(mine, reference, rtol=1e-12, atol=1e-15)


# --- edge cases ------------------------------------------------------------------------------


def test_a_single_class() -> None:
    y = np.zeros(4, dtype=np.int64)
    assert accuracy(y, y) == 1.0
    assert log_loss(y, np.ones((4, 1))) == 0.0
    confusion = confusion_matrix(y, y, 1)
    np.testing.assert_array_equal(confusion, [[4]])
    assert [scores.tolist() for scores in precision_recall_f1(confusion)] == [
        [1.0],
        [1.0],
        [1.0],
        [4],
    ]


def test_log_loss_of_a_zero_probability_is_finite_and_clipped_at_tiny() -> None:
    loss = log_loss([0, 1], [[0.0, 1.0], [0.0, 1.0]])
    assert math.isfinite(loss)
    assert loss == pytest.approx(-math.log(TINY) / 2)


def test_log_loss_of_perfect_predictions_is_zero() -> None:
    assert log_loss([0, 1, 2], np.eye(3)) == 0.0


def test_log_loss_accepts_a_class_absent_from_y_true() -> None:
    assert log_loss([0, 0], [[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]]) == pytest.approx(math.log(2))


def test_undefined_ratios_are_zero_without_warnings() -> None:
    # class 1: never true, never predicted; class 2: true but never predicted.
    confusion = np.array([[2, 0, 0], [0, 0, 0], [1, 0, 0]])
    precision, recall, f1, support = precision_recall_f1(confusion)
    np.testing.assert_allclose(precision, [2 / 3, 0.0, 0.0])
    np.testing.assert_allclose(recall, [1.0, 0.0, 0.0])
    np.testing.assert_allclose(f1, [0.8, 0.0, 0.0])
    np.testing.assert_array_equal(support, [2, 0, 1])


def test_all_zero_confusion_gives_zeros() -> None:
    precision, recall, f1, support = precision_recall_f1(np.zeros((2, 2), dtype=np.int64))
    for scores in (precision, recall, f1):
        np.testing.assert_array_equal(scores, [0.0, 0.0])
    np.testing.assert_array_equal(support, [0, 0])


def test_metrics_do_not_mutate_their_inputs() -> None:
    y_true, y_pred, proba = random_case(3, 30, 4)
    copies = (y_true.copy(), y_pred.copy(), proba.copy())
    classification_report(y_true, y_pred, proba, ["a", "b", "c", "d"])
    for original, copy in zip((y_true, y_pred, proba), copies, strict=True):
        np.testing.assert_array_equal(original, copy)


def test_classification_report_is_json_and_matches_the_parts() -> None:
    y_true, y_pred, proba = random_case(5, 60, 3)
    report = classification_report(y_true, y_pred, proba, ["setosa", "versicolor", "virginica"])
    assert json.loads(json.dumps(report)) == report
    assert set(report) == {"accuracy", "log_loss", "confusion_matrix", "per_class"}
    assert report["accuracy"] == accuracy(y_true, y_pred)
    assert report["log_loss"] == log_loss(y_true, proba)
    assert report["confusion_matrix"] == confusion_matrix(y_true, y_pred, 3).tolist()
    assert list(report["per_class"]) == ["setosa", "versicolor", "virginica"]
    precision, recall, f1, support = sk.precision_recall_fscore_support(
        y_true, y_pred, labels=[0, 1, 2], zero_division=0
    )
    for index, scores in enumerate(report["per_class"].values()):
        assert set(scores) == {"precision", "recall", "f1", "support"}
        assert scores["precision"] == pytest.approx(precision[index], rel=1e-12)
        assert scores["recall"] == pytest.approx(recall[index], rel=1e-12)
        assert scores["f1"] == pytest.approx(f1[index], rel=1e-12)
        assert scores["support"] == support[index]
        assert type(scores["support"]) is int
        assert type(scores["precision"]) is float


def test_classification_report_names_integer_and_numpy_classes_as_strings() -> None:
    report = classification_report(
        np.array([0, 1]), np.array([0, 1]), np.eye(2), np.array([3, 7], dtype=np.int64)
    )
    assert list(report["per_class"]) == ["3", "7"]
    assert report["accuracy"] == 1.0
    assert json.loads(json.dumps(report)) == report


# --- validation ------------------------------------------------------------------------------


def test_length_mismatch() -> None:
    with pytest.raises(LengthMismatchError, match=r"same length, got 3 and 2"):
        accuracy([0, 1, 1], [0, 1])
    with pytest.raises(LengthMismatchError, match=r"expected 2 rows, got 3"):
        log_loss([0, 1], np.full((3, 2), 0.5))
    with pytest.raises(LengthMismatchError, match=r"got 2 and 1"):
        confusion_matrix([0, 1], [0], 2)
    with pytest.raises(LengthMismatchError, match=r"expected 2 rows, got 1"):
        classification_report([0, 1], [0, 1], [[0.5, 0.5]], ["a", "b"])


def test_empty_inputs() -> None:
    with pytest.raises(EmptyInputError, match=r"empty; expected at least one label"):
        accuracy([], [])
    with pytest.raises(EmptyInputError, match=r"y_true is empty"):
        log_loss([], np.zeros((0, 2)))
    with pytest.raises(EmptyInputError, match=r"proba has no columns"):
        log_loss([0], np.zeros((1, 0)))
    with pytest.raises(EmptyInputError, match=r"confusion is empty"):
        precision_recall_f1(np.zeros((0, 0), dtype=np.int64))
    with pytest.raises(EmptyInputError, match=r"classes is empty"):
        classification_report([0], [0], [[1.0]], [])


def test_labels_must_be_integer_indices_in_range() -> None:
    with pytest.raises(InvalidInputError, match=r"y_true must hold integer class indices, got "):
        accuracy(np.array([0.0, 1.0]), np.array([0, 1]))
    with pytest.raises(InvalidInputError, match=r"y_pred must be 1-D \(n_samples,\), got shape"):
        accuracy([0, 1], [[0, 1]])
    with pytest.raises(UnknownLabelError, match=r"y_pred must hold class indices >= 0, got -1"):
        accuracy([0, 1], [0, -1])
    with pytest.raises(UnknownLabelError, match=r"y_true holds class index 2 \(row 1\)") as info:
        log_loss([0, 2], np.full((2, 2), 0.5))
    assert info.value.row == 1
    with pytest.raises(UnknownLabelError, match=r"y_pred holds class index 3 .* below 3"):
        confusion_matrix([0, 1], [0, 3], 3)
    with pytest.raises(UnknownLabelError, match=r"y_pred holds class index 2 .* 2 classes"):
        classification_report([0, 1], [0, 2], np.eye(2), ["a", "b"])


def test_invalid_parameters() -> None:
    with pytest.raises(InvalidParameterError, match=r"n_classes must be >= 1, got 0"):
        confusion_matrix([0], [0], 0)
    with pytest.raises(InvalidParameterError, match=r"n_classes must be an integer, got float"):
        confusion_matrix([0], [0], 2.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match=r"duplicates \['1'\]"):
        classification_report([0], [0], [[0.5, 0.5]], [1, "1"])
    with pytest.raises(InvalidParameterError, match=r"got the string 'ab'"):
        classification_report([0], [0], [[0.5, 0.5]], "ab")


def test_proba_checks() -> None:
    with pytest.raises(FeatureCountError, match=r"proba has 3 columns, expected 2"):
        classification_report([0], [0], [[0.2, 0.3, 0.5]], ["a", "b"])
    with pytest.raises(NonFiniteError, match=r"proba must be finite, got nan at row 1, column 0"):
        log_loss([0, 1], [[0.5, 0.5], [np.nan, 0.5]])
    with pytest.raises(InvalidInputError, match=r"probabilities in \[0, 1\], got -0.1 at row 0"):
        log_loss([0], [[-0.1, 1.1]])
    with pytest.raises(NotANumberError, match=r"proba must be a numeric"):
        log_loss([0], [["x", "y"]])
    with pytest.raises(InvalidInputError, match=r"proba must be 2-D .* got shape \(2,\)"):
        log_loss([0, 1], [0.5, 0.5])


def test_confusion_checks() -> None:
    with pytest.raises(InvalidInputError, match=r"square .* got shape \(2, 3\)"):
        precision_recall_f1(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(InvalidInputError, match=r"integer counts, got dtype float64"):
        precision_recall_f1(np.zeros((2, 2)))
    with pytest.raises(InvalidInputError, match=r"counts >= 0, got -1"):
        precision_recall_f1(np.array([[1, -1], [0, 1]]))


def test_calibration_bins_are_right_closed_and_weighted_by_count() -> None:
    # Top probabilities 0.5 (an inner edge: the bin below), 0.75 twice, 1.0 (the last bin).
    proba = [[0.5, 0.5], [0.75, 0.25], [0.25, 0.75], [1.0, 0.0]]
    result = calibration([1, 0, 0, 0], proba, n_bins=4)
    assert result.edges.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert result.count.tolist() == [0, 1, 2, 1]
    assert np.isnan(result.confidence[0]) and np.isnan(result.accuracy[0])
    assert result.confidence[1:].tolist() == [0.5, 0.75, 1.0]
    assert result.accuracy[1:].tolist() == [0.0, 0.5, 1.0]  # argmax of a tie is class 0
    assert result.expected_calibration_error == pytest.approx((1 * 0.5 + 2 * 0.25 + 0) / 4)


def test_calibration_checks() -> None:
    with pytest.raises(InvalidParameterError, match=r"n_bins must be an integer >= 1, got 0"):
        calibration([0], [[1.0]], n_bins=0)
    with pytest.raises(InvalidParameterError, match=r"got True"):
        calibration([0], [[1.0]], n_bins=True)
    with pytest.raises(UnknownLabelError, match=r"proba has only 2 columns"):
        calibration([2], [[0.5, 0.5]])
