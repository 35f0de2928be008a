"""GET /models (pages), GET /models/{version}, activation, health, and hot reload."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
from starlette.requests import Request

from model.errors import InvalidParameterError
from service.errors import NoModelError, _Unavailable

from .helpers import (
    AUTH,
    AppFactory,
    TestClient,
    assert_error,
    dataset,
    fitted,
    repository,
    rows,
    save_model,
    wait_for,
)

SUMMARY_KEYS = {"version", "created_at", "parent", "source", "kind", "active", "kept", "metrics"}
SUMMARY_KEYS |= {"key", "verdict"}  # 0.2: who made the version, and the guard's verdict
SUMMARY_KEYS |= {"classes_added"}  # 0.5: the classes a version added (allow_new_classes)
DETAIL_KEYS = SUMMARY_KEYS | {
    "guard",  # 0.2: the version on its guard set
    "drift",  # 0.2: the drift test at this version
    "guard_history",  # the guard's state across updates at this version
    "raw_features",  # 0.3: what rows carry (numeric or categorical, categories, fill)
    "allow_new_classes",  # 0.5: whether a /train label may add a class
    "model",
    "n_features",
    "classes",
    "feature_names",
    "params",
    "training",
    "fingerprint",
}


def train_versions(client: TestClient, count: int) -> None:
    ds = dataset("iris")
    for i in range(count):
        X, y = ds.X[i::30].tolist(), ds.y[i::30].tolist()
        response = client.post("/train", json={"instances": X, "labels": y}, headers=AUTH)
        assert response.status_code == 200, response.text


def test_versions_newest_first_one_page_at_a_time(iris_client: TestClient) -> None:
    train_versions(iris_client, 4)
    full = iris_client.get("/models").json()
    assert set(full) == {"model", "active", "versions", "next_before"}
    assert full["model"] == "iris" and full["active"] == 5 and full["next_before"] is None
    assert [v["version"] for v in full["versions"]] == [5, 4, 3, 2, 1]
    assert all(set(v) == SUMMARY_KEYS for v in full["versions"])
    assert [v["source"] for v in full["versions"]] == ["online"] * 4 + ["offline"]
    assert [v["parent"] for v in full["versions"]] == [4, 3, 2, 1, None]
    assert [v["active"] for v in full["versions"]] == [True, False, False, False, False]
    assert full["versions"][-1]["kind"] == "snapshot"

    pages, before = [], None
    while True:
        params = {"limit": 2} if before is None else {"limit": 2, "before": before}
        page = iris_client.get("/models", params=params).json()
        pages.append([v["version"] for v in page["versions"]])
        before = page["next_before"]
        if before is None:
            break
    assert pages == [[5, 4], [3, 2], [1]]

    exact = iris_client.get("/models", params={"limit": 5}).json()
    assert exact["next_before"] is None and len(exact["versions"]) == 5
    assert iris_client.get("/models", params={"before": 3}).json()["versions"][0]["version"] == 2
    beyond = iris_client.get("/models", params={"before": 1}).json()
    assert beyond["versions"] == [] and beyond["next_before"] is None
    assert len(iris_client.get("/models", params={"before": 99}).json()["versions"]) == 5


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("limit=0", "limit", "greater than or equal to 1"),
        ("limit=1001", "limit", "less than or equal to 1000"),
        ("limit=abc", "limit", "valid integer"),
        ("limit=1.5", "limit", "valid integer"),
        ("before=0", "before", "greater than or equal to 1"),
        ("before=-3", "before", "greater than or equal to 1"),
        ("before=x", "before", "valid integer"),
    ],
)
def test_page_parameters_are_bounded(
    iris_client: TestClient, query: str, field: str, message: str
) -> None:
    response = iris_client.get(f"/models?{query}")
    assert_error(response, 422, "invalid_request", f"{field}: ", field=field)
    assert message in response.json()["error"]["message"]


def test_version_detail(iris_client: TestClient) -> None:
    train_versions(iris_client, 1)
    offline = iris_client.get("/models/1").json()
    assert set(offline) == DETAIL_KEYS
    assert offline["model"] == "iris" and offline["version"] == 1 and offline["parent"] is None
    assert offline["source"] == "offline" and offline["kind"] == "snapshot"
    assert offline["n_features"] == 4
    assert offline["raw_features"][0] == {
        "name": "sepal_length",
        "kind": "numeric",
        "categories": None,
        "fill": None,
    }
    assert offline["classes"] == ["setosa", "versicolor", "virginica"]
    assert offline["feature_names"] == list(dataset("iris").feature_names)
    assert offline["params"] == fitted("iris").resolved_params()
    assert offline["active"] is False

    online = iris_client.get("/models/2").json()
    assert set(online) == DETAIL_KEYS
    assert online["parent"] == 1 and online["source"] == "online" and online["active"] is True
    # Classes and features come from the snapshot the update descends from.
    assert online["classes"] == offline["classes"] and online["n_features"] == 4


@pytest.mark.parametrize(
    ("path", "status", "type_", "message"),
    [
        ("/models/9", 404, "version_not_found", "model 'iris' has no version 9"),
        ("/models/0", 422, "invalid_request", "version: Input should be greater than"),
        ("/models/abc", 422, "invalid_request", "version: Input should be a valid integer"),
        ("/models/99999999999999999999", 422, "invalid_request", "version: "),
    ],
)
def test_unknown_or_invalid_version(
    iris_client: TestClient, path: str, status: int, type_: str, message: str
) -> None:
    assert_error(iris_client.get(path), status, type_, message, field="version")
    assert_error(
        iris_client.post(path + "/activate", headers=AUTH), status, type_, message, field="version"
    )


def test_activate_changes_what_is_served(iris_client: TestClient, iris_store: Path) -> None:
    train_versions(iris_client, 2)
    X = rows("iris", slice(None, None, 9))
    response = iris_client.post("/models/2/activate", headers=AUTH)
    assert response.status_code == 200 and response.json() == {"model": "iris", "active": 2}

    listing = iris_client.get("/models").json()
    assert listing["active"] == 2
    assert [v["version"] for v in listing["versions"] if v["active"]] == [2]
    assert iris_client.get("/health/ready").json() == {
        "status": "ready",
        "model": "iris",
        "version": 2,
    }
    served = iris_client.post("/predict", json={"instances": X.tolist()}).json()
    assert served["version"] == 2
    expected = repository(iris_store).load("iris", 2).estimator.predict_proba(X)
    assert np.array_equal(np.array(served["probabilities"]), expected)
    # The store agrees, for every other process.
    assert repository(iris_store).store.head("iris").active == 2

    forward = iris_client.post("/models/3/activate", headers=AUTH)
    assert forward.json() == {"model": "iris", "active": 3}
    assert iris_client.post("/predict", json={"instances": X.tolist()}).json()["version"] == 3


# ------------------------------------------------------------------ health and hot reload
class _Collected(logging.Handler):
    """The messages of one logger, whether or not it propagates to the root's handlers."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.ERROR)
        self.logger = logging.getLogger(name)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> list[str]:
        self.logger.addHandler(self)
        return self.messages

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)


def test_unavailable_answers_are_logged_once_per_route_and_type_not_per_request(
    store: Path, make_app: AppFactory
) -> None:
    with _Collected("service.errors") as messages, TestClient(make_app(store)) as client:
        for _ in range(20):
            response = client.post("/predict", json={"instances": [[1, 2, 3, 4]]})
            assert response.status_code == 503
        for _ in range(5):
            assert client.get("/health/ready").status_code == 503
    assert len(messages) == 2, messages
    assert messages[0].startswith("POST /predict: no model is loaded")
    assert messages[1] == "GET /health/ready: not ready: no model is loaded yet"


def test_an_unavailable_answer_logged_later_says_how_many_were_not() -> None:
    request = Request({"type": "http", "method": "POST", "path": "/train", "headers": []})
    unavailable = _Unavailable(every=1.0)
    with _Collected("service.errors") as messages:
        for _ in range(3):
            unavailable.log(request, NoModelError("no model is loaded"))
        time.sleep(1.05)
        unavailable.log(request, NoModelError("no model is loaded"))
    assert messages == [
        "POST /train: no model is loaded",
        "POST /train: no model is loaded (2 more like it in the last 1 s)",
    ]


def test_empty_store_is_live_not_ready_then_reloads_a_new_model(
    store: Path, make_app: AppFactory
) -> None:
    with TestClient(make_app(store, reload_interval=0.05)) as client:
        assert client.get("/health/live").json() == {
            "status": "live",
            "model": None,
            "version": None,
        }
        ready = client.get("/health/ready")
        assert_error(ready, 503, "no_model", "not ready: no model is loaded yet")
        assert ready.headers["retry-after"] == "1"
        predict = client.post("/predict", json={"instances": [[1, 2, 3, 4]]})
        assert_error(predict, 503, "no_model", "no model is loaded")
        assert predict.headers["retry-after"] == "1"
        train = client.post(
            "/train", json={"instances": [[1, 2, 3, 4]], "labels": ["setosa"]}, headers=AUTH
        )
        assert_error(train, 503, "no_model", "no model is loaded")
        assert_error(client.get("/models"), 503, "no_model")
        assert_error(client.get("/models/1"), 503, "no_model")
        assert_error(client.post("/models/1/activate", headers=AUTH), 503, "no_model")

        assert save_model(store, "iris") == 1  # another process trains one meanwhile
        assert wait_for(lambda: client.get("/health/ready").status_code == 200, timeout=5)
        assert client.get("/health/ready").json() == {
            "status": "ready",
            "model": "iris",
            "version": 1,
        }
        X = rows("iris", slice(0, 5))
        served = client.post("/predict", json={"instances": X.tolist()})
        assert served.status_code == 200
        expected = repository(store).load("iris").estimator.predict_proba(X)
        assert np.array_equal(np.array(served.json()["probabilities"]), expected)


def test_a_version_written_elsewhere_is_picked_up(iris_store: Path, make_app: AppFactory) -> None:
    X = rows("iris", slice(0, 150, 13))
    with TestClient(make_app(iris_store, reload_interval=0.05)) as client:
        assert client.post("/predict", json={"instances": X.tolist()}).json()["version"] == 1
        assert save_model(iris_store, "iris", epochs=5, seed=3) == 2
        assert wait_for(lambda: client.get("/health/ready").json()["version"] == 2, timeout=5)
        served = client.post("/predict", json={"instances": X.tolist()}).json()
        assert served["version"] == 2
        expected = repository(iris_store).load("iris", 2).estimator.predict_proba(X)
        assert np.array_equal(np.array(served["probabilities"]), expected)
        # An activation by another process is followed too.
        repository(iris_store).activate("iris", 1)
        assert wait_for(lambda: client.get("/health/ready").json()["version"] == 1, timeout=5)


def test_several_models_without_a_name_refuse_to_start(
    iris_store: Path, make_app: AppFactory
) -> None:
    save_model(iris_store, "digits")
    refused = pytest.raises(InvalidParameterError, match=r"several models \(digits, iris\)")
    with refused, TestClient(make_app(iris_store)):
        pass

    with TestClient(make_app(iris_store, model="digits")) as client:
        assert client.get("/health/ready").json()["model"] == "digits"
