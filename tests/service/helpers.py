"""Helpers of the in-process service tests: small real models, store fingerprints, the error
body assertion, a bounded wait, and the test client."""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi import FastAPI
from starlette.exceptions import StarletteDeprecationWarning

from model import LocalArtifactStore, ModelRepository, SoftmaxRegression
from model.data import Dataset, load_builtin
from service.config import Settings

with warnings.catch_warnings():
    # starlette 1.x asks for its httpx2 fork; plain httpx (a declared dependency) still works.
    warnings.filterwarnings(
        "ignore", "Using `httpx` with `starlette.testclient`", StarletteDeprecationWarning
    )
    from starlette.testclient import TestClient

__all__ = [
    "API_KEY",
    "AppFactory",
    "AUTH",
    "TestClient",
    "assert_error",
    "dataset",
    "fitted",
    "repository",
    "rows",
    "save_model",
    "settings_for",
    "store_state",
    "wait_for",
]

API_KEY = "test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}

AppFactory = Callable[..., FastAPI]


@cache
def dataset(name: str) -> Dataset:
    return load_builtin(name)


def rows(name: str, index: slice | list[int]) -> np.ndarray:
    """Rows of a bundled data set as float64 ``(n, d)``."""
    return np.asarray(dataset(name).X[index], dtype=np.float64)


def fitted(name: str, *, epochs: int = 20, seed: int = 0) -> SoftmaxRegression:
    """A small real model of a bundled data set (iris: string classes; digits: 0-9)."""
    ds = dataset(name)
    return SoftmaxRegression(epochs=epochs, seed=seed).fit(
        ds.X, ds.y, feature_names=ds.feature_names
    )


def repository(store: Path) -> ModelRepository:
    """A fresh repository on ``store``: nothing cached from the app's own instance."""
    return ModelRepository(LocalArtifactStore(store))


def save_model(store: Path, name: str, *, epochs: int = 20, seed: int = 0) -> int:
    """Train ``name`` and store it as a new offline version; returns the version."""
    return repository(store).save(fitted(name, epochs=epochs, seed=seed), name).version


def store_state(store: Path, name: str) -> dict[str, Any]:
    """Everything a refused request must leave alone: head, versions, files, active weights."""
    repo = repository(store)
    files = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((store / name).iterdir())
        if p.name != ".lock"
    }
    state = repo.load(name).estimator.state_
    return {
        "head": repo.store.head(name),
        "versions": repo.store.versions(name),
        "files": files,
        "weights": state.weights.tobytes(),
        "bias": state.bias.tobytes(),
        "step": state.step,
    }


def assert_error(
    response: httpx.Response,
    status: int,
    type_: str,
    message: str | None = None,
    *,
    field: str | None = None,
    row: int | None = None,
) -> dict[str, Any]:
    """The response is the one error body with this status and type; ``message`` is part of
    its message; ``field`` and ``row`` are exactly as given (absent when None)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    # retry_after: a rate-limited request's wait, in seconds (a number).
    extra = {"retry_after"} if status == 429 else set()
    assert set(error) <= {"type", "message", "field", "row", *extra}, error
    assert error["type"] == type_, error
    assert isinstance(error["message"], str) and error["message"]
    if message is not None:
        assert message in error["message"], error["message"]
    assert error.get("field") == field, error
    assert error.get("row") == row, error
    return error


def wait_for(condition: Callable[[], bool], timeout: float = 5.0, interval: float = 0.02) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def settings_for(store: Path, **overrides: Any) -> Settings:
    """Test settings: the test API key, a fast reload, quiet logs; ``overrides`` win."""
    values: dict[str, Any] = {
        "store": store,
        "api_key": API_KEY,
        "reload_interval": 0.1,
        "log_level": "warning",
        # The update arithmetic is checked against the core's step on the whole minibatch,
        # momentum carried as partial_fit does: no row held out for the guard set unless a
        # test asks. The defaults are tested in tests/service/test_guard.py.
        "holdout_every": 0,
        "online_momentum": True,
    }
    values.update(overrides)
    return Settings(**values)
