"""The Python client (service.client) against the real server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from model import LocalArtifactStore, ModelRepository
from model.data import load_builtin
from service.client import AsyncClient, Client, ServiceError

from .conftest import LiveServerFactory
from .server import train_offline

KEY = "client-test-key"


@pytest.fixture
def iris_store(live_store: Path) -> Path:
    assert train_offline(live_store, "iris", name="iris") == 1
    return live_store


def test_sync_client_round_trip(live_server: LiveServerFactory, iris_store: Path) -> None:
    server = live_server(iris_store, "--api-key", KEY)
    iris = load_builtin("iris")
    rows = iris.X[:5]
    with Client(server.base_url, api_key=KEY) as client:
        assert client.health() == {"status": "ready", "model": "iris", "version": 1}
        result = client.predict(rows)
        offline = ModelRepository(LocalArtifactStore(iris_store)).load("iris", 1)
        assert result.version == 1
        assert result.classes == ["setosa", "versicolor", "virginica"]
        np.testing.assert_array_equal(result.probabilities, offline.estimator.predict_proba(rows))
        assert result.predictions == offline.estimator.predict(rows).tolist()

        named = [dict(zip(iris.feature_names, map(float, row), strict=True)) for row in rows]
        assert client.predict(named).predictions == result.predictions

        # Versicolor rows near virginica: their loss is well above the L2 term's pull, so two
        # small steps lower it (on rows the model is sure of, shrinking weights can raise it).
        update = client.train(iris.X[70:74], iris.y[70:74], learning_rate=0.01, passes=2)
        assert (update.version, update.previous_version, update.n) == (2, 1, 4)
        assert update.loss_after < update.loss_before

        listing = client.models(limit=1)
        assert listing["active"] == 2
        assert [v["version"] for v in listing["versions"]] == [2]
        assert listing["next_before"] == 2
        assert client.version(2)["parent"] == 1
        assert client.activate(1) == {"model": "iris", "active": 1}
        assert client.predict(rows, version=2).version == 2
        assert client.predict(rows).version == 1


def test_client_errors_carry_the_server_message(
    live_server: LiveServerFactory, iris_store: Path
) -> None:
    server = live_server(iris_store, "--api-key", KEY)
    with Client(server.base_url, api_key=KEY) as client:
        with pytest.raises(ServiceError) as wrong_width:
            client.predict([[1.0, 2.0]])
        err = wrong_width.value
        assert (err.status, err.type, err.field, err.row) == (422, "feature_count", "instances", 0)
        assert err.message == "instances: expected 4 features, got 2 (row 0)"

        with pytest.raises(ServiceError) as missing:
            client.version(99)
        assert (missing.value.status, missing.value.type) == (404, "version_not_found")

    with Client(server.base_url, api_key="wrong") as intruder:
        with pytest.raises(ServiceError) as forbidden:
            intruder.train([[5.1, 3.5, 1.4, 0.2]], ["setosa"])
        assert (forbidden.value.status, forbidden.value.type) == (403, "forbidden")
    assert ModelRepository(LocalArtifactStore(iris_store)).store.versions("iris") == [1]


def test_async_client(live_server: LiveServerFactory, iris_store: Path) -> None:
    server = live_server(iris_store, "--api-key", KEY)
    iris = load_builtin("iris")

    async def scenario() -> tuple[int, int, list[object]]:
        async with AsyncClient(server.base_url, api_key=KEY) as client:
            update = await client.train(iris.X[50:52], iris.y[50:52])
            prediction = await client.predict(iris.X[:2])
            return update.version, prediction.version, prediction.predictions

    version, served, predictions = asyncio.run(scenario())
    assert version == served == 2
    assert predictions == ["setosa", "setosa"]


def test_v2_calls_serve_any_model_by_name(live_server: LiveServerFactory, iris_store: Path) -> None:
    assert train_offline(iris_store, "digits", name="digits", epochs=3) == 1
    server = live_server(iris_store, "--api-key", KEY, "--model", "iris")
    digits = load_builtin("digits")
    offline = ModelRepository(LocalArtifactStore(iris_store)).load("digits", 1).estimator
    with Client(server.base_url, api_key=KEY) as client:
        result = client.infer("digits", digits.X[:6])
        assert (result.model, result.version) == ("digits", 1)
        np.testing.assert_array_equal(result.probabilities, offline.predict_proba(digits.X[:6]))
        assert result.labels == [str(label) for label in offline.predict(digits.X[:6])]
        update = client.train_model("digits", digits.X[:8], digits.y[:8], learning_rate=0.01)
        assert (update.version, update.previous_version, update.n) == (2, 1, 8)
        assert client.infer("digits", digits.X[:6], version=1).version == 1
        assert client.infer("digits", digits.X[:6]).version == 2
        with pytest.raises(ServiceError) as raised:
            client.infer("nope", digits.X[:1])
        assert (raised.value.status, raised.value.type) == (404, "model_not_found")
        assert raised.value.message.startswith("no model named 'nope'")

    async def run() -> None:
        async with AsyncClient(server.base_url, api_key=KEY) as client:
            result = await client.infer("iris", load_builtin("iris").X[:2])
            assert result.labels == ["setosa", "setosa"]
            update = await client.train_model("iris", load_builtin("iris").X[:2], ["setosa"] * 2)
            assert update.version == 2

    asyncio.run(run())
