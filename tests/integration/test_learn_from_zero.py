"""Learning from zero over HTTP (issue 16): a model created by ``POST /models`` on a store the
server started without it, learned through ``/train`` alone; classes met one by one, the
growth surviving ``kill -9`` and replaying bit for bit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from model import LocalArtifactStore, ModelRepository
from model.data import load_builtin

from .conftest import LiveServerFactory

KEY = "zero-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
FEATURES = [f"pixel_{i // 8}_{i % 8}" for i in range(64)]


def _digits(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    data = load_builtin("digits")
    order = np.random.default_rng(seed).permutation(data.n_samples)
    return np.asarray(data.X, dtype=np.float64)[order], np.asarray(data.y)[order]


def _create(server: Any, **body: Any) -> dict[str, Any]:
    answer = server.post("/models", json={"feature_names": FEATURES, **body}, headers=AUTH)
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def test_a_model_created_over_http_learns_digits_from_zero(
    live_store: Path, live_server: LiveServerFactory
) -> None:
    # The store is empty and the model named does not exist: the server starts unready.
    server = live_server(
        live_store, "--model", "digits", "--api-key", KEY, "--holdout-every", "10", ready=False
    )
    assert server.get("/health/ready").status_code == 503
    created = _create(server, name="digits", classes=list(range(10)))
    assert created["version"] == 1 and created["served"] is True
    assert created["standardize"] == "running"
    assert server.get("/health/ready").json() == {
        "status": "ready",
        "model": "digits",
        "version": 1,
    }
    X, y = _digits()
    first = server.post("/predict", json={"instances": X[:2].tolist()}).json()
    assert first["probabilities"] == [[0.1] * 10] * 2  # zero weights: every class alike
    refused = 0
    with server.client(headers=AUTH) as client:
        for start in range(0, 1000, 32):
            batch = {
                "instances": X[start : start + 32].tolist(),
                "labels": y[start : start + 32].tolist(),
            }
            answer = client.post("/train", json=batch)
            if answer.status_code == 409:  # the guard may refuse a batch: counted, bounded
                assert answer.json()["error"]["type"] == "update_rejected"
                refused += 1
            else:
                assert answer.status_code == 200, answer.text
    assert refused <= 3, f"{refused} of 32 honest batches refused"
    test = server.post("/predict", json={"instances": X[1000:].tolist()}).json()
    accuracy = float(np.mean(np.asarray(test["predictions"]) == y[1000:]))
    print(f"digits from zero over /train, one pass over 1,000 rows: test accuracy {accuracy:.3f}")
    assert accuracy >= 0.90, accuracy
    assert test["classes"] == list(range(10)) and test["version"] > 20


def _one_by_one(X: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Batches of 16 rows in which class c first appears in phase c: phase p (3 batches)
    draws from the rows of classes 0..p."""
    batches = []
    used = np.zeros(y.shape[0], dtype=bool)
    for phase in range(10):
        for _ in range(3):
            pool = np.flatnonzero(~used & (y <= phase))
            pick = pool[:16]
            used[pick] = True
            batches.append((X[pick], y[pick]))
    return batches


def test_classes_met_one_by_one_survive_kill_9_and_replay_bitwise(
    live_store: Path, live_server: LiveServerFactory
) -> None:
    # An empty store; the guard judges (every 10th row held out for its set) from the 10th.
    flags = ("--api-key", KEY, "--holdout-every", "10")
    server = live_server(live_store, *flags, ready=False)
    created = _create(server, name="growing", classes=[], allow_new_classes=True)
    assert created["classes"] == [] and created["served"] is True
    X, y = _digits(seed=1)
    probe = X[-300:]
    empty = server.post("/predict", json={"instances": probe[:2].tolist()}).json()
    assert empty["classes"] == [] and empty["predictions"] == [None, None]
    assert empty["probabilities"] == [[], []]
    versions_by_classes: dict[int, int] = {}
    answers = []
    refused = 0
    with server.client(headers=AUTH) as client:
        for number, (rows, labels) in enumerate(_one_by_one(X[:-300], y[:-300])):
            if number == 15:  # half way: kill -9, restart, go on
                server.kill()
                server = live_server(live_store, *flags)
                client.base_url = server.base_url
            payload = {"instances": rows.tolist(), "labels": labels.tolist()}
            answer = client.post("/train", json=payload)
            count = int(labels.max()) + 1
            if answer.status_code == 409 and count in versions_by_classes:
                # The guard judges the known classes' batches as any other (a small guard
                # set: bounded below); a batch bringing a class it has no row of, never.
                assert answer.json()["error"]["type"] == "update_rejected"
                refused += 1
                continue
            assert answer.status_code == 200, answer.text
            answers.append(answer.json())
            versions_by_classes.setdefault(count, answer.json()["version"])
    assert refused <= 3, f"{refused} of 30 honest batches refused"
    final = answers[-1]["version"]
    # Lineage: each class was added by the version of the batch it first appeared in.
    for count, version in versions_by_classes.items():
        detail = server.get(f"/models/{version}").json()
        added = [c for c in range(count) if c not in range(count - 1)] if count > 1 else [0]
        assert detail["classes_added"] == added, (version, detail["classes_added"])
        assert detail["classes"] == list(range(count))
        # A pinned version answers with its own classes.
        pinned = server.post("/predict", json={"instances": probe[:3].tolist(), "version": version})
        assert pinned.json()["classes"] == list(range(count)), version
        assert len(pinned.json()["probabilities"][0]) == count
    served = server.post("/predict", json={"instances": probe.tolist()}).json()
    assert served["version"] == final and served["classes"] == list(range(10))
    assert set(served["predictions"]) == set(range(10)), "every class predicted"
    assert np.mean(np.asarray(served["predictions"]) == y[-300:]) > 0.7
    # Replayed from the store in this process: the served probabilities, bit for bit.
    server.kill()
    repository = ModelRepository(LocalArtifactStore(live_store))
    replayed = repository.load("growing", final)
    assert np.array_equal(
        replayed.estimator.predict_proba(probe), np.asarray(served["probabilities"])
    )
    for count, version in versions_by_classes.items():
        assert repository.load("growing", version).classes == list(range(count))
    restarted = live_server(live_store, *flags)
    again = restarted.post("/predict", json={"instances": probe.tolist()}).json()
    assert again == served
