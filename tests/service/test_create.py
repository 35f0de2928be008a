"""``POST /models`` (issue 16): a model created with zero weights, served from a cold start,
its refusals; new classes online and what a model without them still refuses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from .helpers import AUTH, AppFactory, TestClient, assert_error, save_model, store_state

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.1, 4.7, 1.5], [6.3, 3.3, 6.0, 2.5]]


def body(**fields: Any) -> dict[str, Any]:
    return {"name": "flowers", "feature_names": FEATURES, **fields}


@pytest.fixture
def cold(store: Path, make_app: AppFactory) -> Iterator[TestClient]:
    """A service started on an empty store for a model it does not hold yet."""
    with TestClient(make_app(store, model="flowers")) as client:
        yield client


def test_a_cold_start_serves_the_model_once_created(cold: TestClient, store: Path) -> None:
    assert_error(cold.post("/predict", json={"instances": ROWS}), 503, "no_model")
    # Read as JSON whatever the Content-Type says, as every body (curl -d sends a form type).
    form = {**AUTH, "Content-Type": "application/x-www-form-urlencoded"}
    answer = cold.post("/models", content=orjson.dumps(body(classes=["setosa"])), headers=form)
    assert answer.status_code == 201, answer.text
    created = answer.json()
    assert created["model"] == "flowers" and created["version"] == 1
    assert created["served"] is True and created["allow_new_classes"] is False
    assert created["params"]["online_learning_rate"] == pytest.approx(1 / 5)
    assert cold.get("/health/ready").json()["version"] == 1
    # One class: the softmax of one score, that class with probability 1.
    one = cold.post("/predict", json={"instances": ROWS}).json()
    assert one["classes"] == ["setosa"] and one["predictions"] == ["setosa"] * 3
    assert one["probabilities"] == [[1.0]] * 3
    detail = cold.get("/models/1").json()
    assert detail["classes"] == ["setosa"] and detail["feature_names"] == FEATURES
    assert detail["training"]["created"] == "POST /models"
    trained = cold.post("/train", json={"instances": ROWS[:1], "labels": ["setosa"]}, headers=AUTH)
    assert trained.status_code == 200 and trained.json()["version"] == 2


def test_creation_refusals_change_nothing(cold: TestClient, store: Path) -> None:
    cases: list[tuple[dict[str, Any], int, str, str, str | None]] = [
        (
            body(feature_names=["a", "b", "a"]),
            422,
            "unknown_feature",
            "'a' is named twice",
            "feature_names",
        ),
        (body(feature_names=[]), 422, "invalid_request", "feature_names", "feature_names"),
        (body(classes=[1, "b"]), 422, "unknown_label", "all integers or all", "classes"),
        (body(classes=["b", "b"]), 422, "unknown_label", "listed twice", "classes"),
        (body(name="no spaces"), 422, "invalid_request", "name", "name"),
        (
            body(params={"momentum": 1.0}),
            422,
            "invalid_parameter",
            "momentum must be in [0, 1)",
            "params",
        ),
        (
            body(params={"colour": 1}),
            422,
            "invalid_parameter",
            "unknown setting 'colour'",
            "params",
        ),
        (body(extra=1), 422, "invalid_request", "extra", "extra"),
    ]
    for request, status, type_, message, field in cases:
        answer = cold.post("/models", json=request, headers=AUTH)
        error = assert_error(
            answer, status, type_, message, field=field, row=answer.json()["error"].get("row")
        )
        assert error["type"] == type_
    assert not list(store.iterdir()) or not list((store / "flowers").glob("v*"))
    assert_error(cold.post("/models", json=body()), 401, "unauthorized")
    assert_error(
        cold.post("/models", json=body(), headers={"Authorization": "Bearer x"}), 403, "forbidden"
    )
    assert cold.post("/models", json=body(), headers=AUTH).status_code == 201
    before = store_state(store, "flowers")
    again = cold.post("/models", json=body(classes=["x"]), headers=AUTH)
    assert_error(again, 409, "model_exists", "model 'flowers' exists already", field="name")
    assert store_state(store, "flowers") == before


def test_only_admins_create(store: Path, make_app: AppFactory) -> None:
    keys = {
        "feeder": {"key": "feed", "permissions": ["train"]},
        "ops": {"key": "op", "permissions": ["admin"]},
    }
    app = make_app(store, api_key=None, api_keys=orjson.dumps(keys).decode())
    with TestClient(app) as client:
        answer = client.post("/models", json=body(), headers={"Authorization": "Bearer feed"})
        assert_error(answer, 403, "forbidden", "lacks the 'admin' permission")
        created = client.post("/models", json=body(), headers={"Authorization": "Bearer op"})
        assert created.status_code == 201
        assert client.get("/models/1").json()["training"]["key"] == "ops"


def test_no_classes_yet_predicts_null_and_learns_the_first(cold: TestClient, store: Path) -> None:
    cold.post("/models", json=body(allow_new_classes=True), headers=AUTH)
    empty = cold.post("/predict", json={"instances": ROWS[:2]}).json()
    assert empty["classes"] == [] and empty["predictions"] == [None, None]
    assert empty["probabilities"] == [[], []]
    first = cold.post("/train", json={"instances": ROWS[:2], "labels": ["b", "a"]}, headers=AUTH)
    assert first.status_code == 200, first.text
    detail = cold.get("/models/2").json()
    assert detail["classes"] == ["a", "b"] and detail["classes_added"] == ["a", "b"]
    assert detail["allow_new_classes"] is True
    # Labels keep the kind the first ones gave.
    answer = cold.post("/train", json={"instances": ROWS[:1], "labels": [3]}, headers=AUTH)
    assert_error(answer, 422, "unknown_label", "expected strings", field="labels", row=0)
    third = cold.post("/train", json={"instances": ROWS, "labels": ["c", "a", "b"]}, headers=AUTH)
    assert third.status_code == 200
    assert cold.get("/models/3").json()["classes_added"] == ["c"]
    assert cold.get("/models/2").json()["classes"] == ["a", "b"]
    pinned = cold.post("/predict", json={"instances": ROWS, "version": 2}).json()
    assert pinned["classes"] == ["a", "b"] and len(pinned["probabilities"][0]) == 2
    assert cold.post("/predict", json={"instances": ROWS}).json()["classes"] == ["a", "b", "c"]


def test_without_allow_new_classes_an_unknown_label_changes_nothing(
    cold: TestClient, store: Path
) -> None:
    cold.post("/models", json=body(classes=["a", "b"]), headers=AUTH)
    before = store_state(store, "flowers")
    answer = cold.post("/train", json={"instances": ROWS[:2], "labels": ["a", "c"]}, headers=AUTH)
    assert_error(answer, 422, "unknown_label", "got 'c' at row 1", field="labels", row=1)
    assert store_state(store, "flowers") == before


def test_a_second_model_is_created_beside_the_one_served(store: Path, make_app: AppFactory) -> None:
    save_model(store, "iris")
    with TestClient(make_app(store)) as client:
        created = client.post("/models", json=body(), headers=AUTH).json()
        assert created["served"] is False  # the process keeps serving iris
        assert client.get("/health/ready").json()["model"] == "iris"
    assert sorted(p.name for p in store.iterdir()) == ["flowers", "iris"]
