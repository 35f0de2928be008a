"""The guard through the API, in-process: refusals change nothing, rows far outside the
training data are refused, the holdout grows the guard set, administrators can force, the
guard can log instead of refusing, and its figures are visible."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from model import LocalArtifactStore, ModelRepository, SoftmaxRegression
from model.splits import train_val_test_split

from .helpers import API_KEY, AppFactory, TestClient, assert_error, dataset, store_state

KEYS = {
    "ops": {"key": "ops-key", "permissions": ["admin"]},
    "trainer": {"key": "trainer-key", "permissions": ["train"]},
}
OPS = {"Authorization": "Bearer ops-key"}
TRAINER = {"Authorization": "Bearer trainer-key"}
DEFAULTS = {"holdout_every": 10, "online_momentum": False}  # the service's own defaults


def guarded_model(store: Path, name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train ``name`` as the CLI does (70/10/20, validation rows kept as the guard set);
    return the test split's rows and labels."""
    ds = dataset(name)
    X, y = np.asarray(ds.X), np.asarray(ds.y)
    train, val, test = train_val_test_split(y, 0.1, 0.2, seed)
    estimator = SoftmaxRegression(seed=seed).fit(
        X[train], y[train], validation=(X[val], y[val]), feature_names=ds.feature_names
    )
    repo = ModelRepository(LocalArtifactStore(store))
    repo.save(estimator, name, guard=(X[val], y[val]))
    return X[test], y[test]


@pytest.fixture
def iris(store: Path) -> tuple[np.ndarray, np.ndarray]:
    return guarded_model(store, "iris")


@pytest.fixture
def client(
    store: Path, iris: tuple[np.ndarray, np.ndarray], make_app: AppFactory
) -> Iterator[TestClient]:
    app = make_app(store, api_keys=orjson.dumps(KEYS).decode(), api_key=None, **DEFAULTS)
    with TestClient(app) as client:
        yield client


def shifted(labels: np.ndarray) -> list[str]:
    classes = sorted(set(dataset("iris").y.tolist()))
    return [classes[(classes.index(label) + 1) % len(classes)] for label in labels]


def refusal(response: Any) -> dict[str, Any]:
    assert response.status_code == 409, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "update_rejected"
    assert error["message"].startswith("update refused: ")
    assert error["message"].endswith("; the model is unchanged")
    return error


def test_a_label_shifted_batch_is_refused_and_changes_nothing(
    client: TestClient, store: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = iris
    before = store_state(store, "iris")
    response = client.post(
        "/train", json={"instances": X[:16].tolist(), "labels": shifted(y[:16])}, headers=TRAINER
    )
    error = refusal(response)
    details = error["details"]
    assert details["reason"] == "surprise" and details["accepted"] is False
    assert details["surprising_rows"] >= 12 and details["batch_rows"] == 16
    assert details["surprise_p_value"] < details["surprise_alpha"]
    assert (
        "of its 16 rows have labels the model finds less likely than 95% of the"
        in (error["message"])
    )
    assert store_state(store, "iris") == before  # bitwise: files, head, weights


def test_a_hostile_learning_rate_is_refused(
    client: TestClient, store: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = iris
    before = store_state(store, "iris")
    body = {
        "instances": X[:16].tolist(),
        "labels": y[:16].tolist(),
        "learning_rate": 1.0,
        "passes": 10,
    }
    own = ModelRepository(LocalArtifactStore(store)).load("iris").estimator.online_rate
    error = refusal(client.post("/train", json=body, headers=TRAINER))
    details = error["details"]
    assert details["reason"] == "rate" and details["rate_ratio"] == pytest.approx(10 / own)
    assert f"{10 / own:.3g} times the model's own step" in error["message"]
    assert store_state(store, "iris") == before


def test_an_honest_batch_is_accepted_with_its_verdict(
    client: TestClient, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = iris
    answer = client.post(
        "/train", json={"instances": X[:16].tolist(), "labels": y[:16].tolist()}, headers=TRAINER
    ).json()
    assert answer["version"] == 2 and answer["n"] == 16
    assert answer["held_out"] == 1  # the 10th row of the stream went to the guard set
    guard = answer["guard"]
    assert guard["accepted"] is True and guard["reason"] is None and guard["guard_rows"] == 15
    detail = client.get("/models/2").json()
    assert detail["key"] == "trainer" and detail["verdict"]["accepted"] is True
    assert detail["guard"]["rows"] == 16  # 15 validation rows + the held-out one
    assert detail["drift"]["n"] == 1 and detail["drift"]["detected"] is False


def test_a_row_far_outside_the_training_data_is_refused(client: TestClient, store: Path) -> None:
    before = store_state(store, "iris")
    response = client.post(
        "/train", json={"instances": [[1e3, 0, 0, 0]], "labels": ["setosa"]}, headers=TRAINER
    )
    assert_error(
        response,
        422,
        "out_of_range",
        "instances: row 0, column 0 is",
        field="instances",
        row=0,
    )
    assert (
        "standard deviations from the training data's mean" in response.json()["error"]["message"]
    )
    assert store_state(store, "iris") == before
    # It may still be predicted.
    assert client.post("/predict", json={"instances": [[1e3, 0, 0, 0]]}).status_code == 200


def test_an_administrator_can_force_a_refused_update_and_a_trainer_cannot(
    client: TestClient, store: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = iris
    body = {"instances": X[:16].tolist(), "labels": shifted(y[:16]), "force": True}
    before = store_state(store, "iris")
    assert_error(
        client.post("/train", json=body, headers=TRAINER),
        403,
        "forbidden",
        "force: overriding the guard needs the admin permission, which key 'trainer'",
        field="force",
    )
    assert store_state(store, "iris") == before
    answer = client.post("/train", json=body, headers=OPS).json()
    assert answer["version"] == 2 and answer["guard"]["accepted"] is False
    verdict = client.get("/models/2").json()["verdict"]
    assert verdict["forced"] is True and verdict["reason"] == "surprise"
    assert client.get("/models/2").json()["key"] == "ops"


def test_in_log_mode_the_guard_judges_but_never_refuses(
    store: Path, iris: tuple[np.ndarray, np.ndarray], make_app: AppFactory
) -> None:
    X, y = iris
    app = make_app(store, guard_mode="log", **DEFAULTS)
    with TestClient(app) as client:
        body = {"instances": X[:16].tolist(), "labels": shifted(y[:16])}
        answer = client.post("/train", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
        assert answer.status_code == 200
        assert answer.json()["guard"]["reason"] == "surprise"
        assert client.get("/models/2").json()["verdict"]["mode"] == "log"


def test_the_guard_figures_and_refusals_are_in_metrics(
    client: TestClient, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = iris
    body = {"instances": X[:16].tolist(), "labels": shifted(y[:16])}
    assert client.post("/train", json=body, headers=TRAINER).status_code == 409
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
    }
    assert samples[("softmax_guard_rows", ())] == 15
    assert 0.9 <= samples[("softmax_guard_accuracy", ())] <= 1.0
    assert samples[("softmax_guard_log_loss", ())] > 0
    assert samples[("softmax_drift_detected", ())] == 0
    refused = ("softmax_updates_rejected_total", (("reason", "update_rejected:surprise"),))
    assert samples[refused] == 1


def test_the_holdout_is_replayed_exactly(
    client: TestClient, store: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = iris
    for start in range(0, 30, 6):
        body = {"instances": X[start : start + 6].tolist(), "labels": y[start : start + 6].tolist()}
        assert client.post("/train", json=body, headers=TRAINER).status_code == 200
    served = client.get("/models").json()["active"]
    fresh = ModelRepository(LocalArtifactStore(store)).load("iris")
    assert fresh.version == served
    assert fresh.guard is not None and fresh.guard.rows == 15 + 3  # rows 10, 20, 30 held out
    assert np.array_equal(fresh.guard.X[15:], X[[9, 19, 29]])
    assert fresh.meta.rows_seen == 30


def test_every_guard_setting_reaches_the_guard(
    store: Path, iris: tuple[np.ndarray, np.ndarray], make_app: AppFactory
) -> None:
    X, y = iris
    auth = {"Authorization": f"Bearer {API_KEY}"}
    settings = {
        "guard_max_loss_increase": 0.5,
        "guard_max_step": 0.9,
        "guard_max_rate_ratio": 3.0,
        "guard_surprise_quantile": 0.9,
        "guard_surprise_alpha": 0.002,
        "drift_delta": 0.01,
        "drift_threshold": 9.0,
        "holdout_every": 1,  # every row to the guard set...
        "guard_online_rows": 2,  # ...which keeps only the newest two online rows
        "online_momentum": True,
        "guard_suspect_rate": 0.6,
        "guard_max_total_loss_increase": 0.4,
        "guard_reference_every": 1,
    }
    with TestClient(make_app(store, **settings)) as client:
        for start in (0, 3):
            body = {
                "instances": X[start : start + 3].tolist(),
                "labels": y[start : start + 3].tolist(),
            }
            answer = client.post("/train", json=body, headers=auth).json()
            assert answer["held_out"] == 3
        verdict = answer["guard"]
        assert (verdict["max_loss_increase"], verdict["max_step"]) == (0.5, 0.9)
        assert (verdict["max_rate_ratio"], verdict["surprise_quantile"]) == (3.0, 0.9)
        assert verdict["surprise_alpha"] == 0.002
        assert (verdict["suspect_rate"], verdict["max_total_loss_increase"]) == (0.6, 0.4)
        assert verdict["pooled_limit"] == pytest.approx(math.log(1 / 0.002))
        # The reference moves after every accepted update: to version 2, judged against.
        history = client.get("/models/3").json()["guard_history"]
        assert (history["reference_version"], history["since_reference"]) == (2, 0)
        detail = client.get("/models/3").json()
        assert (detail["drift"]["delta"], detail["drift"]["threshold"]) == (0.01, 9.0)
        assert detail["guard"]["rows"] == 15 + 2
        replayed = ModelRepository(LocalArtifactStore(store)).load("iris")  # no row trained on
        assert replayed.version == 3 and replayed.guard is not None and replayed.guard.rows == 17
        assert "momentum" not in detail["metrics"]  # carried (the default before 0.2)
        rate = 4 * replayed.estimator.online_rate  # 4 times the model's own step: over 3
        body = {"instances": X[:3].tolist(), "labels": y[:3].tolist(), "learning_rate": rate}
        refused = client.post("/train", json=body, headers=auth).json()["error"]
        assert refused["details"]["reason"] == "rate"
    body = {"instances": X[6:9].tolist(), "labels": y[6:9].tolist()}
    with TestClient(make_app(store, guard_min_rows=1000)) as client:
        answer = client.post("/train", json=body, headers=auth).json()
        assert answer["version"] == 4 and answer["guard"] is None  # too few rows to judge
    with TestClient(make_app(store, guard_max_abs_z=0.5)) as client:
        error = client.post("/train", json=body, headers=auth).json()["error"]
        assert error["type"] == "out_of_range" and "at most 0.5 are accepted" in error["message"]


def test_v2_training_meets_the_same_guard(
    client: TestClient, store: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    """POST /v2/models/{name}/train: the label-shifted batch /train refuses is refused the
    same way (409, the guard's figures), in the protocol's error shape; nothing changes."""
    X, y = iris
    before = store_state(store, "iris")
    tensors = [
        {"name": "input", "shape": [16, 4], "datatype": "FP64", "data": X[:16].tolist()},
        {"name": "label", "shape": [16], "datatype": "BYTES", "data": shifted(y[:16])},
    ]
    response = client.post("/v2/models/iris/train", json={"inputs": tensors}, headers=TRAINER)
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["type"] == "update_rejected"
    assert body["error"].startswith("update refused: ")
    assert body["details"]["reason"] == "surprise" and body["details"]["accepted"] is False
    assert store_state(store, "iris") == before
    metrics = client.get("/metrics", headers=OPS).text
    assert 'softmax_updates_rejected_total{reason="update_rejected:surprise"} 1.0' in metrics
