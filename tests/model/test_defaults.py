"""Defaults that adapt to the data: with no settings at all, test accuracy within 0.5 point of
scikit-learn's ``LogisticRegression`` (lbfgs, standardized, C=1) on data sets of different
shapes, split as the training CLI splits them (70% train, 10% validation, 20% test, seed 0).

lbfgs fits the 80% that is not test (it needs no validation rows); ours trains on the 70% and
stops on the 10%. Wall time is compared in ``bench/bench_training.py``, not here.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sklearn import datasets
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from model import SoftmaxRegression
from model.data import load_builtin
from model.splits import train_val_test_split

MARGIN = 0.005  # half a point of accuracy


def builtin(name: str) -> Callable[[], tuple[Any, Any]]:
    def load() -> tuple[Any, Any]:
        data = load_builtin(name)
        return data.X, data.y

    return load


DATA_SETS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "iris": builtin("iris"),
    "digits": builtin("digits"),
    "wine": lambda: datasets.load_wine(return_X_y=True),
    "breast_cancer": lambda: datasets.load_breast_cancer(return_X_y=True),
    "synthetic 1000 x 2, 2 classes": lambda: datasets.make_classification(
        1000, 2, n_informative=2, n_redundant=0, random_state=3
    ),
    "synthetic 5000 x 20, 3 classes": lambda: datasets.make_classification(
        5000, 20, n_informative=10, n_redundant=2, n_classes=3, random_state=4
    ),
    "synthetic 6000 x 300, 30 classes": lambda: datasets.make_classification(
        6000, 300, n_informative=40, n_redundant=2, n_classes=30, class_sep=3.0, random_state=5
    ),
}


@pytest.mark.parametrize("name", list(DATA_SETS))
def test_defaults_are_within_half_a_point_of_lbfgs(name: str) -> None:
    X, y = DATA_SETS[name]()
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
    train, val, test = train_val_test_split(y, 0.1, 0.2, seed=0)

    ours = SoftmaxRegression().fit(X[train], y[train], validation=(X[val], y[val]))
    ours_accuracy = float(np.mean(ours.predict(X[test]) == y[test]))

    both = np.concatenate([train, val])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        lbfgs = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        lbfgs.fit(X[both], y[both])
    lbfgs_accuracy = float(np.mean(lbfgs.predict(X[test]) == y[test]))

    assert ours_accuracy >= lbfgs_accuracy - MARGIN, (
        f"{name}: ours {ours_accuracy:.4f}, lbfgs {lbfgs_accuracy:.4f}, "
        f"settings {ours.resolved_params()}"
    )
