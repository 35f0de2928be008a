"""Online defaults chosen for single minibatches (not inherited from the offline run), and the
memory an SGD step and a fit allocate."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from model import SoftmaxRegression
from model.data import load_builtin
from model.optimizer import SGDSettings, TrainState, sgd_step
from model.repository import ModelRepository
from model.store import LocalArtifactStore
from model.validation import check_labels


def test_the_online_rate_is_recorded_and_bounded_for_one_row(tmp_path) -> None:
    data = load_builtin("iris")
    model = SoftmaxRegression().fit(data.X, data.y)
    params = model.resolved_params()
    Xs = model.standardizer_.transform(data.X)
    reach = 1.0 + float(np.mean(np.sum(Xs * Xs, axis=1)))
    assert params["online_learning_rate"] == min(params["learning_rate"], 1.0 / reach)
    assert model.online_rate == params["online_learning_rate"]
    stored = ModelRepository(LocalArtifactStore(tmp_path)).save(model, "iris")
    assert stored.meta.params["online_learning_rate"] == params["online_learning_rate"]


@pytest.mark.parametrize("momentum", [False])  # the service's default: plain SGD online
def test_a_smaller_learning_rate_never_takes_a_larger_step(tmp_path, momentum: bool) -> None:
    data = load_builtin("iris")
    repo = ModelRepository(LocalArtifactStore(tmp_path), online_momentum=momentum)
    base = SoftmaxRegression().fit(data.X, data.y)
    repo.save(base, "iris", guard=(data.X, data.y))
    row, label = data.X[:1], data.y[:1]  # a correctly classified setosa row
    sizes, losses = [], []
    for rate in (0.5, 0.1, 0.05, 0.01, 0.001, 0.0001):
        new, report = base.updated(
            row, check_labels(label, base.classes_), learning_rate=rate, momentum=momentum
        )
        sizes.append(np.abs(new.state_.weights - base.state_.weights).sum())
        losses.append(report.loss_after)
        assert report.loss_after <= report.loss_before  # a correct row's loss never rises
    assert sizes == sorted(sizes, reverse=True)
    assert losses == sorted(losses)  # a smaller step leaves the row's loss higher, not lower


def test_an_sgd_step_allocates_one_gradient_beside_the_new_state() -> None:
    d, k, m = 100_000, 100, 8
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(d, k)) * 0.01
    state = TrainState(weights, np.zeros(k), np.zeros((d, k)), np.zeros(k), 0)
    X, y = rng.normal(size=(m, d)), rng.integers(0, k, m)
    settings = SGDSettings(learning_rate=0.01, momentum=0.9, l2=1e-3)
    sgd_step(state, X, y, settings)  # warm-up (BLAS buffers)
    tracemalloc.start()
    new, _ = sgd_step(state, X, y, settings)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    full = weights.nbytes
    # The new weights and velocity (the new state) and one gradient; small arrays besides.
    assert peak < 3 * full + 4 * 1024 * 1024, peak / full
    assert new.weights is not state.weights and new.step == 1


def test_fit_makes_no_copy_of_the_training_rows() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200_000, 20))
    y = (X[:, 0] + 0.5 * rng.normal(size=200_000) > 0).astype(int)
    tracemalloc.start()
    SoftmaxRegression(epochs=2).fit(X, y)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 0.25 * X.nbytes, peak / X.nbytes  # no standardized or shuffled copy
