"""Offline oracles for the integration tests: what the store must hold after the server ran.

The server is checked against the project's own offline path (``ModelRepository.load`` and
``SoftmaxRegression.updated``), run here in the test process on the store the server wrote.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model import LoadedModel, LocalArtifactStore, ModelRepository
from model.data import load_builtin
from model.validation import check_labels

__all__ = [
    "Minibatch",
    "StoreOracle",
    "assert_same_state",
    "digits_minibatches",
    "train_payload",
]


@dataclass(frozen=True, eq=False)
class Minibatch:
    """One labelled minibatch as a client sends it (compared by identity)."""

    X: NDArray[np.float64]
    labels: tuple[Any, ...]

    def payload(self) -> dict[str, Any]:
        return train_payload(self.X, self.labels)


def train_payload(X: NDArray[Any], labels: Sequence[Any]) -> dict[str, Any]:
    return {"instances": X.tolist(), "labels": [np.asarray(v).item() for v in labels]}


def digits_minibatches(count: int, rows: int = 8, seed: int = 0) -> list[Minibatch]:
    """``count`` distinct minibatches of real digits rows with their true labels."""
    data = load_builtin("digits")
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        index = rng.choice(data.n_samples, size=rows, replace=False)
        batches.append(Minibatch(np.array(data.X[index]), tuple(int(v) for v in data.y[index])))
    return batches


def assert_same_state(actual: LoadedModel, expected: LoadedModel, what: str) -> None:
    """Bit-for-bit equal learned state (weights, bias, momentum buffers, step count)."""
    a, e = actual.estimator.state_, expected.estimator.state_
    assert a.step == e.step, f"{what}: step {a.step} != {e.step}"
    assert np.array_equal(a.weights, e.weights), f"{what}: weights differ"
    assert np.array_equal(a.bias, e.bias), f"{what}: bias differs"
    for name in ("velocity_weights", "velocity_bias"):
        av, ev = getattr(a, name), getattr(e, name)
        assert (av is None) == (ev is None), f"{what}: {name} present on one side only"
        if av is not None:
            assert np.array_equal(av, ev), f"{what}: {name} differs"


class StoreOracle:
    """A read-only view of the store a server wrote, with the offline model's answers."""

    def __init__(self, root: Path, name: str) -> None:
        self.store = LocalArtifactStore(root)
        self.repository = ModelRepository(self.store)
        self.name = name
        self._loaded: dict[int, LoadedModel] = {}

    def versions(self) -> list[int]:
        return self.store.versions(self.name)

    def meta(self, version: int) -> dict[str, Any]:
        return self.store.read_meta(self.name, version)

    def load(self, version: int) -> LoadedModel:
        """Materialize ``version`` (reusing its parent when already loaded: cheap chains)."""
        loaded = self._loaded.get(version)
        if loaded is None:
            parent = self.meta(version).get("parent")
            base = self._loaded.get(int(parent)) if parent is not None else None
            loaded = self.repository.load(self.name, version, base=base)
            self._loaded[version] = loaded
        return loaded

    def load_all(self) -> None:
        """Read and verify every version file and materialize every version, oldest first."""
        for version in self.versions():
            self.store.read(self.name, version)  # checksum-verified
            self.load(version)

    def predict_proba(self, version: int, X: NDArray[Any]) -> NDArray[np.float64]:
        return self.load(version).estimator.predict_proba(X)

    def apply(self, parent: LoadedModel, batch: Minibatch, online: Mapping[str, Any]) -> Any:
        """The estimator ``batch`` makes of ``parent``, computed here, as the server should."""
        y_index = check_labels(list(batch.labels), parent.estimator.classes_)
        updated, _ = parent.estimator.updated(
            batch.X,
            y_index,
            # None: the model's default online rate, as the server uses it.
            learning_rate=online.get("learning_rate") or parent.estimator.online_rate_given,
            passes=int(online.get("passes", 1)),
            momentum=bool(online.get("momentum", True)),  # as the update recorded it
        )
        return updated

    def matches(self, version: int, batch: Minibatch) -> bool:
        """Whether online ``version`` is exactly ``batch`` applied to its parent version."""
        meta = self.meta(version)
        if meta.get("source") != "online":
            return False
        parent = self.load(int(meta["parent"]))
        model = self.load(version)
        if meta["kind"] == "update":
            arrays = self.store.read(self.name, version).arrays
            y_index = check_labels(list(batch.labels), parent.estimator.classes_)
            if not (np.array_equal(arrays["X"], batch.X) and np.array_equal(arrays["y"], y_index)):
                return False
        expected = self.apply(parent, batch, meta["online"])
        try:
            assert_same_state(model, LoadedModel(self.name, version, expected, meta), "")
        except AssertionError:
            return False
        return True

    def assert_update(self, version: int, batch: Minibatch, parent: int | None = None) -> None:
        """Online ``version`` is ``batch`` applied to ``parent`` (default: whatever its
        recorded parent is), bit for bit, and an update-kind file stores exactly ``batch``."""
        meta = self.meta(version)
        assert meta["source"] == "online", f"version {version} is {meta['source']}"
        if parent is not None:
            assert meta["parent"] == parent, f"version {version}: parent {meta['parent']}"
        assert meta["online"]["n"] == len(batch.labels)
        assert self.matches(version, batch), (
            f"version {version} ({meta['kind']}) is not the acknowledged minibatch applied to "
            f"version {meta['parent']}"
        )
