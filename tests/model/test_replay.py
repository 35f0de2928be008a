"""Replaying an update on another CPU: rounding is accepted, anything more is refused.

A replica on other hardware may round the replay's BLAS products differently, so its digest
of the replayed weights differs from the writer's; the update's recorded sample of weights
then decides, within ``REPLAY_RTOL`` of the largest sampled magnitude."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from model import ModelRepository, SoftmaxRegression, errors
from model.store import LocalArtifactStore
from model.versions import REPLAY_RTOL, LoadedModel, replay_matches, state_digest

NAME = "m"


def written(tmp_path: Path) -> tuple[ModelRepository, LoadedModel]:
    """A model with one online update (version 2) on version 1; version 1 loaded."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 6))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5).astype(int)
    repository = ModelRepository(LocalArtifactStore(tmp_path), snapshot_every=10)
    repository.save(SoftmaxRegression(epochs=3).fit(X, y), NAME)
    repository.update(NAME, X[:10], y[:10])
    return repository, repository.load(NAME, 1)


def nudged(loaded: LoadedModel, relative: float) -> LoadedModel:
    """``loaded`` with every weight moved by ``relative`` of the largest one (0: one ulp):
    the parent as another CPU's rounding (or a corruption) would leave it."""
    state = loaded.estimator.state_
    scale = np.abs(state.weights).max()
    weights = (
        np.nextafter(state.weights, np.inf) if relative == 0 else state.weights + relative * scale
    )
    estimator = loaded.estimator.with_state(dataclasses.replace(state, weights=weights))
    return dataclasses.replace(loaded, estimator=estimator)


def test_rounding_differences_are_accepted(tmp_path: Path) -> None:
    repository, parent = written(tmp_path)
    exact = repository.load(NAME, 2, base=parent)
    other_cpu = repository.load(NAME, 2, base=nudged(parent, 0))
    assert state_digest(other_cpu.estimator.state_) != exact.meta.digest  # digest alone: refused
    difference = np.abs(other_cpu.estimator.state_.weights - exact.estimator.state_.weights)
    assert 0 < difference.max() < 1e-12


@pytest.mark.parametrize("relative", [1e-7, 1e-4])
def test_more_than_rounding_is_refused(tmp_path: Path, relative: float) -> None:
    repository, parent = written(tmp_path)
    with pytest.raises(errors.CorruptArtifactError, match="not even within rounding"):
        repository.load(NAME, 2, base=nudged(parent, relative))


def test_the_bound_is_relative_to_the_largest_sampled_value(tmp_path: Path) -> None:
    repository, _ = written(tmp_path)
    loaded = repository.load(NAME, 2)
    state, meta = loaded.estimator.state_, loaded.meta
    assert meta.replay_sample is not None and len(meta.replay_sample) <= 32
    scale = max(abs(v) for v in meta.replay_sample)

    def shifted(by: float) -> object:
        weights = state.weights.copy()
        weights.reshape(-1)[0] += by  # the first sampled weight
        return dataclasses.replace(state, weights=weights)

    assert replay_matches(shifted(0.5 * REPLAY_RTOL * scale), meta)  # type: ignore[arg-type]
    assert not replay_matches(shifted(2 * REPLAY_RTOL * scale), meta)  # type: ignore[arg-type]
    assert not replay_matches(dataclasses.replace(state, step=state.step + 1), meta)
    legacy = dataclasses.replace(meta, replay_sample=None)  # written before 0.4: digest only
    assert not replay_matches(shifted(0.5 * REPLAY_RTOL * scale), legacy)  # type: ignore[arg-type]
    assert replay_matches(state, legacy)
