"""POST /predict: the answer is exactly what the stored model computes, for every row shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model import SoftmaxRegression

from .helpers import AUTH, AppFactory, TestClient, assert_error, dataset, repository, rows

KEYS = {"model", "version", "classes", "probabilities", "predictions"}


def expected_probabilities(store: Path, name: str, X: np.ndarray, version: int | None = None):
    """The oracle: the stored version, loaded by a fresh repository, scoring ``X``."""
    return repository(store).load(name, version).estimator.predict_proba(X)


def test_list_rows_give_the_stored_models_probabilities_bit_for_bit(
    iris_client: TestClient, iris_store: Path
) -> None:
    X = rows("iris", slice(None, None, 7))
    response = iris_client.post("/predict", json={"instances": X.tolist()})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == KEYS
    assert body["model"] == "iris" and body["version"] == 1
    assert body["classes"] == ["setosa", "versicolor", "virginica"]
    probabilities = np.array(body["probabilities"], dtype=np.float64)
    assert probabilities.shape == (X.shape[0], 3)
    assert np.array_equal(probabilities, expected_probabilities(iris_store, "iris", X))
    assert np.allclose(probabilities.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert (probabilities >= 0).all()
    estimator = repository(iris_store).load("iris").estimator
    assert body["predictions"] == estimator.predict(X).tolist()
    classes = np.array(body["classes"])
    assert body["predictions"] == classes[probabilities.argmax(axis=1)].tolist()


def test_object_rows_give_the_same_answer_as_list_rows(
    iris_client: TestClient, iris_store: Path
) -> None:
    X = rows("iris", [0, 60, 120, 149])
    names = dataset("iris").feature_names
    # Keys in a shuffled order: objects are matched by name, not position.
    objects = [{name: row[i] for i, name in reversed(list(enumerate(names)))} for row in X]
    by_name = iris_client.post("/predict", json={"instances": objects})
    by_position = iris_client.post("/predict", json={"instances": X.tolist()})
    assert by_name.status_code == by_position.status_code == 200
    assert by_name.json() == by_position.json()
    probabilities = np.array(by_name.json()["probabilities"])
    assert np.array_equal(probabilities, expected_probabilities(iris_store, "iris", X))


def test_integer_classes_and_64_features(digits_client: TestClient, digits_store: Path) -> None:
    X = rows("digits", slice(0, 40))
    response = digits_client.post("/predict", json={"instances": X.astype(int).tolist()})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["classes"] == list(range(10))
    assert all(type(p) is int for p in body["predictions"])
    probabilities = np.array(body["probabilities"])
    assert np.array_equal(probabilities, expected_probabilities(digits_store, "digits", X))
    assert np.allclose(probabilities.sum(axis=1), 1.0, rtol=0, atol=1e-12)


def test_one_row_and_integer_cells(iris_client: TestClient, iris_store: Path) -> None:
    response = iris_client.post("/predict", content=b'{"instances": [[5, 3, 1, 0]]}')
    assert response.status_code == 200, response.text
    X = np.array([[5.0, 3.0, 1.0, 0.0]])
    assert np.array_equal(
        np.array(response.json()["probabilities"]), expected_probabilities(iris_store, "iris", X)
    )


def test_version_pins_an_older_stored_version(iris_client: TestClient, iris_store: Path) -> None:
    X = rows("iris", slice(None, None, 10))
    train = iris_client.post(
        "/train",
        json={"instances": X.tolist(), "labels": dataset("iris").y[::10].tolist()},
        headers=AUTH,
    )
    assert train.status_code == 200 and train.json()["version"] == 2

    active = iris_client.post("/predict", json={"instances": X.tolist()}).json()
    pinned = iris_client.post("/predict", json={"instances": X.tolist(), "version": 1}).json()
    again = iris_client.post("/predict", json={"instances": X.tolist(), "version": 1}).json()
    explicit = iris_client.post("/predict", json={"instances": X.tolist(), "version": 2}).json()
    assert active["version"] == 2 and pinned["version"] == 1 and explicit == active
    assert again == pinned  # second time from the pinned-version cache
    assert np.array_equal(
        np.array(active["probabilities"]), expected_probabilities(iris_store, "iris", X, 2)
    )
    assert np.array_equal(
        np.array(pinned["probabilities"]), expected_probabilities(iris_store, "iris", X, 1)
    )
    assert not np.array_equal(np.array(active["probabilities"]), np.array(pinned["probabilities"]))


def test_unknown_version_is_404(iris_client: TestClient) -> None:
    response = iris_client.post("/predict", json={"instances": [[1, 2, 3, 4]], "version": 7})
    assert_error(
        response, 404, "version_not_found", "model 'iris' has no version 7", field="version"
    )


def test_rows_that_overflow_the_model_are_refused_not_answered_with_nulls(
    iris_client: TestClient,
) -> None:
    # Finite input whose standardized value overflows: no NaN probabilities, no 500.
    response = iris_client.post("/predict", json={"instances": [[1, 2, 3, 4], [1e308] * 4]})
    assert_error(response, 422, "non_finite", "row 1", field="instances", row=1)


def test_large_batches_score_off_the_event_loop_identically(
    digits_client: TestClient, digits_store: Path
) -> None:
    # 1000 rows x 64 features x 10 classes crosses the inline-work threshold.
    X = np.tile(rows("digits", slice(0, 500)), (2, 1))
    response = digits_client.post("/predict", json={"instances": X.tolist()})
    assert response.status_code == 200
    probabilities = np.array(response.json()["probabilities"])
    assert np.array_equal(probabilities, expected_probabilities(digits_store, "digits", X))


def test_object_rows_need_a_model_with_feature_names(store: Path, make_app: AppFactory) -> None:
    ds = dataset("iris")
    anonymous = SoftmaxRegression(epochs=5).fit(ds.X, ds.y)  # no feature names
    assert repository(store).save(anonymous, "anonymous").version == 1
    with TestClient(make_app(store)) as client:
        response = client.post("/predict", json={"instances": [{"sepal_length": 1.0}]})
        assert_error(
            response,
            422,
            "unknown_feature",
            "this model has no feature names; send rows as lists of numbers",
            field="instances",
            row=0,
        )
        assert client.post("/predict", json={"instances": [[1, 2, 3, 4]]}).status_code == 200
