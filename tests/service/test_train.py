"""POST /train: one durable version per call, numbered in order, exactly the model/ update."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.validation import check_labels

from .helpers import AUTH, TestClient, dataset, repository

KEYS = {"version", "previous_version", "n", "loss_before", "loss_after", "held_out", "guard"}


def batch(name: str, start: int, size: int, step: int = 1) -> tuple[list[list[float]], list]:
    ds = dataset(name)
    index = slice(start, start + size * step, step)
    return ds.X[index].tolist(), ds.y[index].tolist()


@pytest.mark.parametrize(
    ("learning_rate", "passes"), [(None, None), (0.01, None), (None, 3), (0.2, 2), (1, 1)]
)
def test_each_update_is_the_model_cores_online_step_made_durable(
    iris_client: TestClient, iris_store: Path, learning_rate: float | None, passes: int | None
) -> None:
    for call in range(3):
        X, labels = batch("iris", 5 + 40 * call, 12, step=3)
        before = repository(iris_store).load("iris")
        y_index = check_labels(labels, before.estimator.classes_)
        expected, report = before.estimator.updated(
            np.array(X),
            y_index,
            learning_rate=learning_rate or before.estimator.online_rate,  # the server's default
            passes=passes or 1,
        )
        prequential = before.estimator.log_loss(X, labels)  # the pre-update model on the batch

        payload: dict[str, object] = {"instances": X, "labels": labels}
        if learning_rate is not None:
            payload["learning_rate"] = learning_rate
        if passes is not None:
            payload["passes"] = passes
        response = iris_client.post("/train", json=payload, headers=AUTH)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == KEYS
        assert body["version"] == before.version + 1 == call + 2
        assert body["previous_version"] == before.version
        assert body["n"] == len(X) == 12
        assert body["loss_before"] == prequential == report.loss_before
        assert body["loss_after"] == report.loss_after
        assert body["loss_after"] == repository(iris_store).load("iris").estimator.log_loss(
            X, labels
        )

        after = repository(iris_store).load("iris")
        assert after.version == body["version"]
        assert after.estimator.state_.step == expected.state_.step
        assert np.array_equal(after.estimator.state_.weights, expected.state_.weights)
        assert np.array_equal(after.estimator.state_.bias, expected.state_.bias)
        # The app serves it at once, no reload needed.
        served = iris_client.post("/predict", json={"instances": X}).json()
        assert served["version"] == body["version"]
        assert np.array_equal(
            np.array(served["probabilities"]), after.estimator.predict_proba(np.array(X))
        )


def test_online_versions_are_listed_with_their_figures(
    iris_client: TestClient,
) -> None:
    X, labels = batch("iris", 0, 6, step=25)
    body = iris_client.post(
        "/train", json={"instances": X, "labels": labels, "learning_rate": 0.05}, headers=AUTH
    ).json()
    detail = iris_client.get(f"/models/{body['version']}").json()
    assert detail["source"] == "online" and detail["parent"] == 1 and detail["active"]
    metrics = detail["metrics"]
    assert metrics["n"] == 6 and metrics["learning_rate"] == 0.05 and metrics["passes"] == 1
    assert metrics["loss_before"] == body["loss_before"]
    assert metrics["loss_after"] == body["loss_after"]
    assert 0 <= metrics["accuracy_before"] <= 1


def test_integer_classes(digits_client: TestClient, digits_store: Path) -> None:
    X, labels = batch("digits", 100, 20)
    assert all(type(label) is int for label in labels)
    before = repository(digits_store).load("digits").estimator
    response = digits_client.post("/train", json={"instances": X, "labels": labels}, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["loss_before"] == before.log_loss(X, labels)
    assert response.json()["version"] == 2


def test_after_a_rollback_the_next_update_builds_on_the_active_version(
    iris_client: TestClient, iris_store: Path
) -> None:
    for call in range(2):
        X, labels = batch("iris", call, 10, step=15)
        assert (
            iris_client.post(
                "/train", json={"instances": X, "labels": labels}, headers=AUTH
            ).json()["version"]
            == call + 2
        )
    assert iris_client.get("/models").json()["active"] == 3

    rollback = iris_client.post("/models/1/activate", headers=AUTH)
    assert rollback.status_code == 200 and rollback.json() == {"model": "iris", "active": 1}

    X, labels = batch("iris", 7, 10, step=14)
    v1 = repository(iris_store).load("iris", 1).estimator
    expected, _ = v1.updated(
        np.array(X), check_labels(labels, v1.classes_), learning_rate=v1.online_rate
    )
    response = iris_client.post("/train", json={"instances": X, "labels": labels}, headers=AUTH)
    assert response.status_code == 200
    assert response.json()["version"] == 4
    assert response.json()["previous_version"] == 1
    assert response.json()["loss_before"] == v1.log_loss(X, labels)

    detail = iris_client.get("/models/4").json()
    assert detail["parent"] == 1 and detail["active"] and detail["source"] == "online"
    assert iris_client.get("/models").json()["active"] == 4
    stored = repository(iris_store).load("iris", 4).estimator
    assert np.array_equal(stored.state_.weights, expected.state_.weights)
    # Version 3 is still stored, not active, and unchanged.
    assert iris_client.get("/models/3").json()["active"] is False
