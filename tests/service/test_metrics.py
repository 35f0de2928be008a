"""GET /metrics: Prometheus text with request, prediction, update and prequential figures."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .helpers import AUTH, AppFactory, TestClient, dataset


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def requests(method: str, route: str, status: int) -> tuple[str, tuple[tuple[str, str], ...]]:
    labels = {"method": method, "route": route, "status": str(status)}
    return "softmax_http_requests_total", tuple(sorted(labels.items()))


def plain(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def test_counters_by_route_template_and_status(iris_store: Path, make_app: AppFactory) -> None:
    ds = dataset("iris")
    with TestClient(make_app(iris_store, metrics_window=1000)) as client:
        for size in (1, 3, 5):
            assert client.post("/predict", json={"instances": ds.X[:size].tolist()}).is_success
        assert client.post("/predict", json={"instances": [[1, 2, 3]]}).status_code == 422
        trained = []
        for start in range(3):
            X, y = ds.X[start::25].tolist(), ds.y[start::25].tolist()
            response = client.post("/train", json={"instances": X, "labels": y}, headers=AUTH)
            assert response.status_code == 200
            trained.append(response.json())
        refusals = [
            ({"instances": [[1, 2, 3, 4]], "labels": ["rose"]}, "unknown_label"),
            ({"instances": [[1, 2, 3, 4]], "labels": ["setosa"], "passes": 0}, "invalid_parameter"),
            ({"instances": [[1, 2, 3, 4]], "labels": ["setosa", "setosa"]}, "length_mismatch"),
            ({"instances": [[1, 2, 3, 4]], "labels": ["rose"]}, "unknown_label"),
        ]
        for payload, _ in refusals:
            assert client.post("/train", json=payload, headers=AUTH).status_code == 422
        assert client.get("/models/1").status_code == 200
        assert client.get("/models/2").status_code == 200
        assert client.get("/models/77").status_code == 404
        assert client.get("/no/such/route").status_code == 404

        found = samples(client)
        assert found[requests("POST", "/predict", 200)] == 3
        assert found[requests("POST", "/predict", 422)] == 1
        assert found[requests("POST", "/train", 200)] == 3
        assert found[requests("POST", "/train", 422)] == 4
        # Templates, not raw paths: both versions count under one label set.
        assert found[requests("GET", "/models/{version}", 200)] == 2
        assert found[requests("GET", "/models/{version}", 404)] == 1
        assert found[requests("GET", "unmatched", 404)] == 1
        assert not any("/models/1" in str(key) for key in found)

        assert found[plain("softmax_rows_predicted_total")] == 1 + 3 + 5
        assert found[plain("softmax_updates_applied_total")] == 3
        assert found[plain("softmax_rows_trained_total")] == sum(t["n"] for t in trained)
        assert found[plain("softmax_updates_rejected_total", reason="unknown_label")] == 2
        assert found[plain("softmax_updates_rejected_total", reason="invalid_parameter")] == 1
        assert found[plain("softmax_updates_rejected_total", reason="length_mismatch")] == 1
        assert found[plain("softmax_active_version")] == 4
        # Each of the three updates was made durable by at least one sync; /metrics counts
        # exactly the syncs the store made.
        store = client.app.state.softmax.runtime.repository.store
        assert found[plain("softmax_store_syncs_total")] == store.syncs >= 3

        # Prequential figures over the window (all 3 updates fit in it).
        rows = sum(t["n"] for t in trained)
        log_loss = sum(t["loss_before"] * t["n"] for t in trained) / rows
        accuracy = (
            sum(
                client.get(f"/models/{t['version']}").json()["metrics"]["accuracy_before"] * t["n"]
                for t in trained
            )
            / rows
        )
        assert found[plain("softmax_prequential_window_rows")] == rows
        assert found[plain("softmax_prequential_log_loss")] == pytest.approx(log_loss, rel=1e-12)
        assert found[plain("softmax_prequential_accuracy")] == pytest.approx(accuracy, rel=1e-12)

        # The gauge follows an activation too.
        assert client.post("/models/2/activate", headers=AUTH).status_code == 200
        found = samples(client)
        assert found[plain("softmax_active_version")] == 2
        assert found[requests("POST", "/models/{version}/activate", 200)] == 1
        assert found[requests("GET", "/metrics", 200)] >= 1


def test_a_fresh_app_has_no_prequential_figures_yet(iris_client: TestClient) -> None:
    found = samples(iris_client)
    assert found[plain("softmax_active_version")] == 1
    assert found[plain("softmax_updates_applied_total")] == 0
    assert found[plain("softmax_prequential_window_rows")] == 0


def test_the_window_keeps_only_recent_rows(iris_store: Path, make_app: AppFactory) -> None:
    ds = dataset("iris")
    with TestClient(make_app(iris_store, metrics_window=10)) as client:
        trained = []
        for start in range(4):  # 6 rows each: the window keeps the newest 2 batches
            X, y = ds.X[start::25].tolist(), ds.y[start::25].tolist()
            trained.append(
                client.post("/train", json={"instances": X, "labels": y}, headers=AUTH).json()
            )
        found = samples(client)
    assert [t["n"] for t in trained] == [6, 6, 6, 6]
    assert found[plain("softmax_prequential_window_rows")] == 12
    expected = (trained[2]["loss_before"] + trained[3]["loss_before"]) / 2
    assert found[plain("softmax_prequential_log_loss")] == pytest.approx(expected, rel=1e-9)
