"""The real server (``python -m service`` in a subprocess) against the offline model.

Each test starts its own server on a free port with its own store, so the tests are
independent; a server starts in about half a second.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from model.data import load_builtin

from .checks import StoreOracle, digits_minibatches
from .conftest import LiveServerFactory
from .server import train_offline, wait_until

ROW = [1.0] * 64
PREDICTS = 16
MAX_ROUNDS = 10


@pytest.fixture(scope="module")
def digits_rows() -> np.ndarray:
    """Ten real digits rows, one of each class."""
    data = load_builtin("digits")
    return np.array(data.X[[int(np.flatnonzero(data.y == c)[0]) for c in range(10)]])


def predict(client: httpx.Client, X: np.ndarray, **extra: Any) -> dict[str, Any]:
    response = client.post("/predict", json={"instances": X.tolist(), **extra})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_matches_offline(body: dict[str, Any], oracle: StoreOracle, X: np.ndarray) -> None:
    """Exactly the offline probabilities of the version the response names (orjson writes
    the shortest round-trip repr, so parsing gives back the very same doubles)."""
    expected = oracle.predict_proba(body["version"], X)
    probabilities = np.array(body["probabilities"], dtype=np.float64)
    assert probabilities.shape == expected.shape
    assert np.array_equal(probabilities, expected), (
        f"version {body['version']}: max |diff| {np.abs(probabilities - expected).max()}"
    )
    classes = oracle.load(body["version"]).classes
    assert body["classes"] == classes
    assert body["predictions"] == [classes[i] for i in expected.argmax(axis=1)]


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    return error


def test_predict_matches_the_offline_model(
    live_server: LiveServerFactory, live_digits_store: Path, digits_rows: np.ndarray
) -> None:
    server = live_server(live_digits_store)
    oracle = StoreOracle(live_digits_store, "digits")
    with server.client() as client:
        body = predict(client, digits_rows)
        assert body["model"] == "digits"
        assert body["version"] == 1
        assert body["classes"] == list(range(10))
        assert_matches_offline(body, oracle, digits_rows)
        assert predict(client, digits_rows, version=1) == body
        # Rows as objects keyed by feature name give the same answer.
        names = oracle.load(1).estimator.feature_names_
        assert names is not None
        objects = [dict(zip(names, row, strict=True)) for row in digits_rows.tolist()]
        response = client.post("/predict", json={"instances": objects})
        assert response.status_code == 200, response.text
        assert response.json() == body


def test_train_rollback_and_branch(
    live_server: LiveServerFactory, live_digits_store: Path, digits_rows: np.ndarray
) -> None:
    server = live_server(live_digits_store)
    oracle = StoreOracle(live_digits_store, "digits")
    first, second, third = digits_minibatches(3, seed=1)
    with server.client() as client:
        response = client.post("/train", json=first.payload())
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["version"] == 2 and body["previous_version"] == 1 and body["n"] == 8
        assert np.isfinite(body["loss_before"]) and np.isfinite(body["loss_after"])
        assert body["loss_after"] < body["loss_before"]
        assert server.get("/health/ready").json()["version"] == 2
        oracle.assert_update(2, first, parent=1)
        assert_matches_offline(predict(client, digits_rows), oracle, digits_rows)

        assert client.post("/train", json=second.payload()).json()["version"] == 3
        oracle.assert_update(3, second, parent=2)

        # Roll back to 1: served at once, and the next update branches from it.
        response = client.post("/models/1/activate")
        assert response.status_code == 200, response.text
        assert response.json() == {"model": "digits", "active": 1}
        assert server.get("/health/ready").json() == {
            "status": "ready",
            "model": "digits",
            "version": 1,
        }
        body = predict(client, digits_rows)
        assert body["version"] == 1
        assert_matches_offline(body, oracle, digits_rows)
        listing = client.get("/models").json()
        assert listing["active"] == 1
        assert [v["version"] for v in listing["versions"]] == [3, 2, 1]

        response = client.post("/train", json=third.payload())
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["version"] == 4, "a new version is numbered newest + 1"
        assert body["previous_version"] == 1, "it applies to the rolled-back version"
        oracle.assert_update(4, third, parent=1)
        assert_matches_offline(predict(client, digits_rows), oracle, digits_rows)

        listing = client.get("/models").json()
        assert listing["active"] == 4
        summary = {v["version"]: v for v in listing["versions"]}
        assert sorted(summary) == [1, 2, 3, 4]
        assert summary[4]["parent"] == 1 and summary[4]["source"] == "online"
        assert summary[4]["active"] and not summary[3]["active"]
        detail = client.get("/models/4").json()
        assert detail["parent"] == 1 and detail["n_features"] == 64
        assert detail["classes"] == list(range(10))

        error = error_of(client.post("/models/99/activate"), 404)
        assert error["type"] == "version_not_found"
    assert oracle.store.head("digits").active == 4
    oracle.load_all()


def test_hot_reload_follows_the_store(
    live_server: LiveServerFactory, live_digits_store: Path, digits_rows: np.ndarray
) -> None:
    server = live_server(live_digits_store, "--reload-interval", "0.2")
    oracle = StoreOracle(live_digits_store, "digits")
    with server.client() as client:
        assert predict(client, digits_rows)["version"] == 1
        # Another process (the training CLI) writes a new offline version.
        assert train_offline(live_digits_store, "digits", epochs=5, extra=["--seed", "7"]) == 2

        def served_version_2() -> dict[str, Any] | None:
            body = predict(client, digits_rows)
            return body if body["version"] == 2 else None

        body = wait_until(served_version_2, timeout=10, what="/predict to serve version 2")
        assert_matches_offline(body, oracle, digits_rows)
        assert not np.array_equal(oracle.predict_proba(1, digits_rows), body["probabilities"])
        assert server.get("/health/ready").json()["version"] == 2

        # Another process rolls back (writes ACTIVE): the server follows that too.
        oracle.repository.activate("digits", 1)

        def served_version_1() -> dict[str, Any] | None:
            body = predict(client, digits_rows)
            return body if body["version"] == 1 else None

        body = wait_until(
            served_version_1, timeout=10, what="/predict to serve version 1 after a rollback"
        )
        assert_matches_offline(body, oracle, digits_rows)
    assert server.proc.poll() is None, "the server kept running: no restart"


def test_empty_store_is_live_but_not_ready_until_a_model_appears(
    live_server: LiveServerFactory, live_store: Path, digits_rows: np.ndarray
) -> None:
    server = live_server(live_store, "--reload-interval", "0.2", ready=False)
    with server.client() as client:
        live = client.get("/health/live")
        assert live.status_code == 200 and live.json()["status"] == "live"
        response = client.get("/health/ready")
        assert error_of(response, 503) == {
            "type": "no_model",
            "message": "not ready: no model is loaded yet",
        }
        assert response.headers["retry-after"] == "1"
        for response in (
            client.post("/predict", json={"instances": [ROW]}),
            client.post("/train", json={"instances": [ROW], "labels": [1]}),
            client.get("/models"),
        ):
            error = error_of(response, 503)
            assert error["type"] == "no_model"
            assert "python -m model.train" in error["message"]
            assert response.headers["retry-after"] == "1"

        assert train_offline(live_store, "digits") == 1
        ready = server.wait_ready(timeout=10)
        assert ready == {"status": "ready", "model": "digits", "version": 1}
        assert_matches_offline(
            predict(client, digits_rows), StoreOracle(live_store, "digits"), digits_rows
        )


def test_api_key_guards_train_and_activate(
    live_server: LiveServerFactory, live_digits_store: Path, digits_rows: np.ndarray
) -> None:
    key = "s3cret-key-for-tests"
    server = live_server(live_digits_store, "--api-key", key)
    batch = digits_minibatches(1, seed=2)[0]
    good = {"Authorization": f"Bearer {key}"}
    with server.client() as client:
        for path, payload in (("/train", batch.payload()), ("/models/1/activate", None)):
            for header in (None, "Basic dXNlcjpwYXNz", "Bearer", key):
                headers = {"Authorization": header} if header is not None else {}
                response = client.post(path, json=payload, headers=headers)
                assert error_of(response, 401) == {
                    "type": "unauthorized",
                    "message": "this route requires an 'Authorization: Bearer <key>' header",
                }
                assert response.headers["www-authenticate"] == "Bearer"
            for wrong in (key + "x", key[:-1], key.upper()):
                headers = {"Authorization": f"Bearer {wrong}"}
                response = client.post(path, json=payload, headers=headers)
                assert error_of(response, 403) == {
                    "type": "forbidden",
                    "message": "the bearer key is not valid",
                }
        assert StoreOracle(live_digits_store, "digits").versions() == [1], "refused: no change"

        response = client.post("/train", json=batch.payload(), headers=good)
        assert response.status_code == 200, response.text
        assert response.json()["version"] == 2
        response = client.post("/models/1/activate", headers=good)
        assert response.status_code == 200, response.text
        # Reading needs no key.
        assert predict(client, digits_rows)["version"] == 1
        assert client.get("/models").status_code == 200
        assert client.get("/health/ready").status_code == 200
    assert "no API key configured" not in server.log()


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def requests_counted(samples: dict[Any, float], method: str, route: str, status: int) -> float:
    labels = frozenset({"method": method, "route": route, "status": str(status)}.items())
    return samples.get(("softmax_http_requests_total", labels), 0.0)


@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_count_requests_and_updates(
    live_server: LiveServerFactory, live_digits_store: Path, digits_rows: np.ndarray, workers: int
) -> None:
    server = live_server(live_digits_store, "--workers", str(workers))
    first, second = digits_minibatches(2, seed=3)
    # Rounds of concurrent fresh connections, so that with two workers both take part
    # (checked below from each worker's own metrics file) and /metrics must add their counts
    # up. The kernel hands connections to whichever worker accepts first, so one round may
    # all land on one worker: more rounds follow (bounded) until each has served some.
    sent = 0
    for _ in range(MAX_ROUNDS):
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = pool.map(
                lambda _: server.post("/predict", json={"instances": digits_rows.tolist()}),
                range(PREDICTS),
            )
            assert [r.status_code for r in answers] == [200] * PREDICTS
        sent += PREDICTS
        if workers == 1:
            break
        per_process = server.requests_per_process()
        if len(per_process) == workers and all(
            c.get(("POST", "/predict", "200"), 0) for c in per_process.values()
        ):
            break
    assert server.post("/predict", json={"instances": [ROW[:-1]]}).status_code == 422
    assert server.post("/predict", content=b"{").status_code == 400
    assert server.post("/train", json=first.payload()).status_code == 200
    assert server.post("/train", json=second.payload()).status_code == 200
    assert server.post("/train", json={"instances": [ROW], "labels": [10]}).status_code == 422
    assert server.get("/models/1").status_code == 200
    assert server.get("/models/999").status_code == 404
    assert server.get("/no/such/route").status_code == 404
    if workers > 1:
        per_process = server.requests_per_process()
        served = [c.get(("POST", "/predict", "200"), 0) for c in per_process.values()]
        assert sorted(per_process) == server.worker_pids()
        assert all(served) and sum(served) == sent, served

    response = server.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = metric_samples(response.text)
    assert requests_counted(samples, "POST", "/predict", 200) == sent
    assert requests_counted(samples, "POST", "/predict", 422) == 1
    assert requests_counted(samples, "POST", "/predict", 400) == 1
    assert requests_counted(samples, "POST", "/train", 200) == 2
    assert requests_counted(samples, "POST", "/train", 422) == 1
    assert requests_counted(samples, "GET", "/models/{version}", 200) == 1
    assert requests_counted(samples, "GET", "/models/{version}", 404) == 1
    assert requests_counted(samples, "GET", "unmatched", 404) == 1
    assert samples[("softmax_updates_applied_total", frozenset())] == 2
    assert samples[("softmax_rows_trained_total", frozenset())] == 16
    assert samples[("softmax_rows_predicted_total", frozenset())] == sent * len(digits_rows)
    rejected = frozenset({"reason": "unknown_label"}.items())
    assert samples[("softmax_updates_rejected_total", rejected)] == 1
    assert samples[("softmax_active_version", frozenset())] == 3
    latency = frozenset({"method": "POST", "route": "/train", "status": "200"}.items())
    assert samples[("softmax_http_request_duration_seconds_count", latency)] == 2


def test_error_bodies(
    live_server: LiveServerFactory, live_digits_store: Path, digits_rows: np.ndarray
) -> None:
    server = live_server(live_digits_store, "--max-body-bytes", "4096", "--max-rows", "3")
    with server.client() as client:
        cases: list[tuple[httpx.Response, int, dict[str, Any]]] = [
            (
                client.post("/predict", json={"instances": [ROW, ROW[:-1]]}),
                422,
                {
                    "type": "feature_count",
                    "message": "instances: expected 64 features, got 63 (row 1)",
                    "field": "instances",
                    "row": 1,
                },
            ),
            (
                client.post("/predict", json={"instances": [ROW, [*ROW[:3], "a", *ROW[4:]]]}),
                422,
                {
                    "type": "not_a_number",
                    "message": "instances: expected a number at row 1, column 3, "
                    "got 'a' (a string)",
                    "field": "instances",
                    "row": 1,
                },
            ),
            (
                client.post("/predict", json={"instances": [ROW] * 4}),
                422,
                {
                    "type": "too_many_rows",
                    "message": "instances: expected at most 3 rows (max_rows), got 4",
                    "field": "instances",
                },
            ),
            (
                client.post("/predict", json={"instances": [ROW], "version": 99}),
                404,
                {
                    "type": "version_not_found",
                    "message": "model 'digits' has no version 99 (stored versions: 1..1; older "
                    "ones may have been removed by retention)",
                    "field": "version",
                },
            ),
            (
                client.post("/train", json={"instances": [ROW, ROW], "labels": [1, 10]}),
                422,
                {
                    "type": "unknown_label",
                    "message": "labels: expected one of the classes (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),"
                    " got 10 at row 1",
                    "field": "labels",
                    "row": 1,
                },
            ),
            (
                client.post("/train", json={"instances": [ROW, ROW], "labels": [1]}),
                422,
                {
                    "type": "length_mismatch",
                    "message": "labels: expected 2 labels (one per instance), got 1",
                    "field": "labels",
                },
            ),
            (
                client.post("/train", json={"instances": [ROW], "labels": [1], "passes": 11}),
                422,
                {
                    "type": "invalid_parameter",
                    "message": "passes: expected an integer 1..10, got 11",
                    "field": "passes",
                },
            ),
            (
                client.post(
                    "/train",
                    json={"instances": [[1e300] * 64], "labels": [1], "learning_rate": 1.0},
                ),
                422,
                {
                    "type": "diverged",
                    "message": "update refused: it would make a weight or the batch's loss "
                    "non-finite (lower the learning rate or check the feature scale); the model "
                    "is unchanged",
                    "field": "learning_rate",
                },
            ),
            (
                client.post("/predict", json={"instances": [ROW], "extra": 1}),
                422,
                {
                    "type": "invalid_request",
                    "message": "unknown field 'extra'; expected instances, version",
                    "field": "extra",
                },
            ),
            (
                client.post("/predict", content=b"x" * 5000),
                413,
                {
                    "type": "body_too_large",
                    "message": "request body exceeds the limit of 4096 bytes (max_body_bytes)",
                },
            ),
            (
                # Chunked: no Content-Length, the limit must hold as the bytes arrive.
                client.post("/predict", content=(b" " * 1000 for _ in range(10))),
                413,
                {
                    "type": "body_too_large",
                    "message": "request body exceeds the limit of 4096 bytes (max_body_bytes)",
                },
            ),
            (
                client.get("/no/such/route"),
                404,
                {"type": "not_found", "message": "no route GET /no/such/route"},
            ),
            (
                client.get("/models/0"),
                422,
                {
                    "type": "invalid_request",
                    "message": "version: Input should be greater than or equal to 1",
                    "field": "version",
                },
            ),
        ]
        for response, status, expected in cases:
            assert error_of(response, status) == expected, response.request.url

        response = client.post("/predict", content=b'{"instances": [[1, 2,')
        error = error_of(response, 400)
        assert error["type"] == "invalid_json"
        assert error["message"].startswith("request body is not valid JSON: ")

        response = client.get("/predict")
        assert error_of(response, 405) == {
            "type": "method_not_allowed",
            "message": "method GET is not allowed on /predict",
        }
        assert response.headers["allow"] == "POST"

        # Nothing refused changed anything: same version, same answers.
        oracle = StoreOracle(live_digits_store, "digits")
        assert oracle.versions() == [1]
        assert_matches_offline(predict(client, digits_rows[:3]), oracle, digits_rows[:3])


def test_sigterm_stops_every_worker_cleanly(
    live_server: LiveServerFactory, live_digits_store: Path
) -> None:
    server = live_server(live_digits_store, "--workers", "2")
    assert server.post("/predict", json={"instances": [ROW]}).status_code == 200
    assert server.stop() == 0
    log = server.log()
    assert "Traceback" not in log, log
    # The Prometheus multiprocess directory (under the server's TMPDIR) was removed.
    assert server.tmp_dir.is_dir()
    assert list(server.tmp_dir.glob("softmax-serve-metrics-*")) == []
