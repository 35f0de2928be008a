"""The per-name model registry without HTTP: load on first use, least recently used evicted
under the memory budget (the resident model never), reload per model, models written while
it runs found, unknown names refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.errors import InvalidParameterError, ModelNotFoundError
from service.registry import ModelRegistry, footprint
from service.runtime import Runtime

from .helpers import fitted, repository, rows, save_model


@pytest.fixture
def three_models(store: Path) -> Path:
    for name in ("iris", "digits"):
        save_model(store, name)
    repository(store).save(fitted("iris", epochs=3), "flowers")
    return store


def test_models_load_on_first_use_and_answer_as_stored(three_models: Path) -> None:
    registry = ModelRegistry(repository(three_models), memory_budget=10**9)
    assert registry.held("digits") is None
    runtime = registry.get("digits")
    assert registry.held("digits") is runtime
    X = rows("digits", slice(0, 5))
    expected = repository(three_models).load("digits", 1).estimator.predict_proba(X)
    np.testing.assert_array_equal(Runtime.predict(runtime.require(), X).probabilities, expected)
    assert registry.get("digits") is runtime  # held: not loaded again
    assert registry.held_names() == ["digits"]


def test_least_recently_used_evicted_past_the_budget(three_models: Path) -> None:
    repo = repository(three_models)
    sizes = {name: footprint([repo.load(name)]) for name in ("iris", "digits", "flowers")}
    resident = Runtime(repo, "iris")
    resident.refresh()
    # Room for the resident iris and digits and flowers, then for one byte less.
    budget = sizes["iris"] + sizes["digits"] + sizes["flowers"]
    registry = ModelRegistry(repo, memory_budget=budget, resident=resident)
    evicted: list[str] = []
    registry.on_evict(evicted.append)
    assert registry.get("iris") is resident  # answers for its own name
    registry.get("digits")
    registry.get("flowers")
    assert evicted == []
    assert registry.memory_used() == budget
    registry.memory_budget = budget - 1
    registry.get("digits")  # a hit: used, nothing loaded, nothing evicted
    assert evicted == []
    repo.save(fitted("iris", epochs=2), "flowers")  # a new version of flowers: reloaded,
    assert registry.refresh() == ["flowers"]
    assert evicted == ["flowers"]  # past the budget: the least recently used goes
    assert registry.held("flowers") is None
    assert registry.held_names() == ["iris", "digits"]
    # A budget below any model: the one asked for stays, alone beside the resident.
    registry.memory_budget = 1
    assert registry.get("flowers").require().version == 2
    assert evicted == ["flowers", "digits"]
    assert registry.held_names() == ["iris", "flowers"]
    assert registry.held("iris") is resident  # never evicted


def test_a_model_saved_while_running_is_found_and_reloads_per_model(store: Path) -> None:
    save_model(store, "iris")
    registry = ModelRegistry(repository(store), memory_budget=10**9)
    for name in ("digits", "nope"):
        with pytest.raises(ModelNotFoundError, match=f"no model named '{name}'"):
            registry.get(name)
    assert registry._loading == {}  # names asked for in vain leave nothing behind
    save_model(store, "digits")  # another process writes it (the CLI, or POST /models)
    digits = registry.get("digits")
    iris = registry.get("iris")
    assert digits.require().version == 1
    save_model(store, "digits", epochs=2)  # a new active version of one model
    assert registry.refresh() == ["digits"]
    assert digits.require().version == 2
    assert iris.require().version == 1


def test_names_no_store_could_hold_are_refused(store: Path) -> None:
    registry = ModelRegistry(repository(store), memory_budget=10**9)
    with pytest.raises(InvalidParameterError, match="model name must be"):
        registry.get("../etc")
    assert registry.names() == []


def test_the_default_model_trained_after_start_is_the_resident_runtime(store: Path) -> None:
    resident = Runtime(repository(store), "iris")
    resident.refresh()
    assert resident.current is None  # nothing in the store yet
    registry = ModelRegistry(repository(store), memory_budget=10**9, resident=resident)
    save_model(store, "iris")
    assert registry.get("iris") is resident
    assert resident.require().version == 1
    assert registry.held_names() == ["iris"]
