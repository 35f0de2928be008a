"""Fixtures of the in-process service tests: real models trained into a store in ``tmp_path``,
the app built from :class:`~service.config.Settings` and used inside its lifespan.

Settings are overridden per test (``make_app(store, max_rows=5)``), never monkeypatched.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from service.app import create_app

from .helpers import AppFactory, TestClient, save_model, settings_for


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """An empty store directory."""
    path = tmp_path / "store"
    path.mkdir()
    return path


@pytest.fixture
def iris_store(store: Path) -> Path:
    """A store holding ``iris`` version 1 (4 named features, string classes)."""
    assert save_model(store, "iris") == 1
    return store


@pytest.fixture
def digits_store(store: Path) -> Path:
    """A store holding ``digits`` version 1 (64 features, integer classes 0-9)."""
    assert save_model(store, "digits") == 1
    return store


@pytest.fixture
def make_app() -> AppFactory:
    """``make_app(store, **settings)``: an app with the test API key and a fast reload."""

    def build(store: Path, **overrides: Any) -> FastAPI:
        return create_app(settings_for(store, **overrides))

    return build


@pytest.fixture
def iris_client(iris_store: Path, make_app: AppFactory) -> Iterator[TestClient]:
    with TestClient(make_app(iris_store)) as client:
        yield client


@pytest.fixture
def digits_client(digits_store: Path, make_app: AppFactory) -> Iterator[TestClient]:
    with TestClient(make_app(digits_store)) as client:
        yield client
