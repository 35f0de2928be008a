"""The shared checkers: each raises the error class and field its caller names."""

from __future__ import annotations

import numpy as np
import pytest

from model.errors import (
    DataFileError,
    EmptyInputError,
    InvalidInputError,
    NonFiniteError,
)
from model.validation import check_1d, check_2d, check_finite


def test_check_2d_raises_the_given_error_with_the_given_field() -> None:
    check_2d(np.ones((2, 3)), "X", numeric=True)
    with pytest.raises(InvalidInputError) as caught:
        check_2d(np.ones(3), "proba", axes="n_samples, n_classes")
    assert caught.value.message == "proba must be 2-D (n_samples, n_classes), got shape (3,)"
    assert caught.value.field == "proba"
    with pytest.raises(DataFileError) as file_error:
        check_2d(
            np.array([["a"]]), "f.npz: array 'X'", field="X", error=DataFileError, numeric=True
        )
    assert file_error.value.message == "f.npz: array 'X' must be numeric, got dtype <U1"
    assert file_error.value.field == "X"


def test_check_finite_names_the_first_bad_cell() -> None:
    check_finite(np.ones((2, 2)), "X")
    bad = np.array([[1.0, 2.0], [np.inf, np.nan]])
    with pytest.raises(NonFiniteError) as caught:
        check_finite(bad, "X")
    assert caught.value.message == "X must be finite, got inf at row 1, column 0"
    assert (caught.value.field, caught.value.row) == ("X", 1)
    with pytest.raises(DataFileError, match="^a: array 'X' must be finite, got inf at row 1"):
        check_finite(bad, "a: array 'X'", field="X", error=DataFileError)


def test_check_1d_refuses_other_shapes_and_empty_labels() -> None:
    assert check_1d([1, 2], "y").tolist() == [1, 2]
    assert check_1d([], "y", allow_empty=True).shape == (0,)
    with pytest.raises(InvalidInputError, match=r"^y_pred must be 1-D \(n_samples,\), got shape"):
        check_1d([[1], [2]], "y_pred")
    with pytest.raises(EmptyInputError) as caught:
        check_1d([], "y_true")
    assert caught.value.message == "y_true is empty; expected at least one label"
    assert caught.value.field == "y_true"
