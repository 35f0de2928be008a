"""The estimator's own codec: to_arrays / from_arrays round-trip bit for bit, and a damaged
set of arrays is refused with a message that names the problem."""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from model import errors
from model.errors import InvalidParameterError
from model.params import LEGACY_DEFAULTS
from model.softmax import SoftmaxRegression
from tests.model.synthetic import make_blobs
from tests.model.test_softmax import assert_same_state

FEATURES = ("a", "b", "c", "d")


def trained(momentum: float = 0.9, named: bool = True, labels: Any = ("ant", "bee", "cat")):
    X, y = make_blobs(n=60, labels=labels, seed=30)
    names = FEATURES if named else None
    model = SoftmaxRegression(epochs=3, momentum=momentum).fit(X, y, feature_names=names)
    return model, X, y


def rebuilt(model: SoftmaxRegression, arrays: dict[str, NDArray[Any]] | None = None):
    return SoftmaxRegression.from_arrays(
        model.to_arrays() if arrays is None else arrays,
        params=model.resolved_params(),
        step=model.state_.step,
        epochs_run=model.n_epochs_run_,
    )


def through_npz(arrays: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
    """What a file gives back: the arrays saved and loaded without pickle."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("named", [False, True])
@pytest.mark.parametrize("labels", [("ant", "bee", "cat"), (3, 7, 10)])
def test_round_trip_predicts_and_continues_bit_for_bit(
    momentum: float, named: bool, labels: Any
) -> None:
    model, X, y = trained(momentum, named, labels)
    copy = SoftmaxRegression.from_arrays(
        through_npz(model.to_arrays()),
        params=model.resolved_params(),
        step=model.state_.step,
        epochs_run=model.n_epochs_run_,
    )

    assert copy.resolved_params() == model.resolved_params()
    assert np.array_equal(copy.classes_, model.classes_)
    assert copy.classes_.dtype == model.classes_.dtype
    assert copy.feature_names_ == model.feature_names_
    assert copy.n_epochs_run_ == model.n_epochs_run_ == 3
    assert copy.history_ == [] and copy.best_epoch_ is None
    assert_same_state(copy, model)
    assert np.array_equal(copy.predict_proba(X), model.predict_proba(X))
    assert np.array_equal(copy.predict(X), model.predict(X))

    for start in (0, 10, 20):
        rows = slice(start, start + 10)
        assert copy.partial_fit(X[rows], y[rows]) == model.partial_fit(X[rows], y[rows])
    assert_same_state(copy, model)


def test_arrays_have_the_snapshot_names_and_dtypes() -> None:
    model, _, _ = trained(momentum=0.9, named=True)
    arrays = model.to_arrays()
    assert list(arrays) == [
        "weights",
        "bias",
        "mean",
        "scale",
        "classes",
        "velocity_weights",
        "velocity_bias",
        "feature_names",
    ]
    shapes = {name: array.shape for name, array in arrays.items()}
    assert shapes == {
        "weights": (4, 3),
        "bias": (3,),
        "mean": (4,),
        "scale": (4,),
        "classes": (3,),
        "velocity_weights": (4, 3),
        "velocity_bias": (3,),
        "feature_names": (4,),
    }
    floats = ("weights", "bias", "mean", "scale", "velocity_weights", "velocity_bias")
    assert all(arrays[name].dtype == np.float64 for name in floats)
    assert arrays["classes"].dtype.kind == "U" and arrays["feature_names"].dtype.kind == "U"

    plain, _, _ = trained(momentum=0.0, named=False, labels=(3, 7, 10))
    assert sorted(plain.to_arrays()) == ["bias", "classes", "mean", "scale", "weights"]
    assert plain.to_arrays()["classes"].dtype == np.int64


def test_an_unfitted_model_has_no_arrays() -> None:
    with pytest.raises(errors.NotFittedError):
        SoftmaxRegression().to_arrays()


def changed(arrays: dict[str, NDArray[Any]], **replace: Any) -> dict[str, NDArray[Any]]:
    out = dict(arrays)
    for name, value in replace.items():
        if value is None:
            del out[name]
        else:
            out[name] = value
    return out


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        (dict(weights=None), "missing array(s): weights"),
        (dict(mean=None, classes=None), "missing array(s): mean, classes"),
        (dict(weights=np.zeros(4)), "weights: expected shape (d, k), got (4,)"),
        (dict(bias=np.zeros(2)), "bias: expected shape (3,) to match weights (4, 3), got (2,)"),
        (dict(mean=np.zeros(3)), "mean: expected shape (4,) to match weights (4, 3), got (3,)"),
        (
            dict(scale=np.ones((4, 1))),
            "scale: expected shape (4,) to match weights (4, 3), got (4, 1)",
        ),
        (
            dict(classes=np.array(["x", "y"])),
            "classes: expected shape (3,) to match weights (4, 3), got (2,)",
        ),
        (
            dict(feature_names=np.array(["a", "b"])),
            "feature_names: expected shape (4,) to match weights (4, 3), got (2,)",
        ),
        (
            dict(velocity_weights=np.zeros((3, 4))),
            "velocity_weights: expected shape (4, 3) to match weights (4, 3), got (3, 4)",
        ),
        (
            dict(velocity_bias=None),
            "velocity_weights and velocity_bias: expected both or neither",
        ),
    ],
)
def test_damaged_arrays_are_refused_by_name(replace: dict[str, Any], message: str) -> None:
    model, _, _ = trained()
    with pytest.raises(ValueError, match=re.escape(message) + "$"):
        rebuilt(model, changed(model.to_arrays(), **replace))


@pytest.mark.parametrize(
    ("params", "step", "error", "message"),
    [
        (dict(momentum=1.0), 0, InvalidParameterError, "momentum must be in [0, 1), got 1.0"),
        (dict(batch_size=0), 0, InvalidParameterError, "batch_size must be an integer >= 1"),
        (dict(epoch=3), 0, ValueError, "params: "),
        ([("epochs", 3)], 0, ValueError, "params: expected a mapping of settings"),
        ({}, -1, ValueError, "step must be an integer >= 0, got -1"),
        ({}, 1.5, ValueError, "step must be an integer >= 0, got 1.5"),
        ({}, True, ValueError, "step must be an integer >= 0, got True"),
    ],
)
def test_invalid_params_or_step_are_value_errors(
    params: Any, step: Any, error: type[Exception], message: str
) -> None:
    model, _, _ = trained()
    with pytest.raises(error, match="^" + re.escape(message)):
        SoftmaxRegression.from_arrays(model.to_arrays(), params=params, step=step)


def test_missing_params_take_the_defaults() -> None:
    model, X, _ = trained()
    copy = SoftmaxRegression.from_arrays(model.to_arrays(), params={}, step=5)
    assert copy.resolved_params() == dict(LEGACY_DEFAULTS, online_learning_rate="auto")
    assert copy.state_.step == 5 and copy.n_epochs_run_ == 0
    assert np.array_equal(copy.predict_proba(X), model.predict_proba(X))
