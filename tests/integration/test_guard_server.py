"""The guard through the real server with its default settings (2 workers): a poisoned stream
is refused and the model keeps its accuracy, refusals change nothing in any worker, the
decisions replay the same on a copy of the store, and kill -9 during guarded updates loses
nothing acknowledged and lets nothing refused in."""

from __future__ import annotations

import hashlib
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model import LocalArtifactStore, ModelRepository
from model.data import load_builtin
from model.errors import OutOfRangeError, UpdateRejectedError
from model.guard import GuardPolicy
from model.splits import train_val_test_split

from .conftest import LiveServerFactory
from .server import assert_all_workers_serve, train_offline
from .test_server import metric_samples

KEY = "guard-test-key"
# The product's defaults: start_server otherwise pins these for the arithmetic suites.
DEFAULTS = ("--holdout-every", "10", "--online-momentum", "false", "--api-key", KEY)
AUTH = {"Authorization": f"Bearer {KEY}"}


def stream(seed: int) -> tuple[list[tuple[str, dict[str, Any]]], np.ndarray, np.ndarray]:
    """36 minibatches of 16 digits rows the model never saw (from the CLI's test split, seed 0):
    18 honest, 6 label-shifted, 6 at learning rate 1.0 x 10 passes with honest labels, 6 both;
    and the other half of the test split, to measure accuracy on."""
    digits = load_builtin("digits")
    X, y = np.asarray(digits.X), np.asarray(digits.y)
    _, _, test = train_val_test_split(y, 0.1, 0.2, 0)  # what the CLI held out
    rng = np.random.default_rng(seed)
    test = rng.permutation(test)
    pool, evaluation = test[: test.shape[0] // 2], test[test.shape[0] // 2 :]
    kinds = ["honest", "shifted", "honest", "hostile", "honest", "hostile-shifted"] * 6
    batches = []
    for kind in kinds:
        rows = rng.choice(pool, size=16, replace=False)
        labels = (y[rows] + 1) % 10 if "shifted" in kind else y[rows]
        body: dict[str, Any] = {"instances": X[rows].tolist(), "labels": labels.tolist()}
        if "hostile" in kind:
            body.update(learning_rate=1.0, passes=10)
        batches.append((kind, body))
    return batches, X[evaluation], y[evaluation]


def files(store: Path) -> dict[str, str]:
    """Every file of the store (but the lock) and a digest of its bytes."""
    return {
        str(path.relative_to(store)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(store.rglob("*"))
        if path.is_file() and path.name != ".lock"
    }


def accuracy(store: Path, X: np.ndarray, y: np.ndarray, version: int | None = None) -> float:
    model = ModelRepository(LocalArtifactStore(store)).load("digits", version)
    return float(np.mean(model.estimator.predict(X) == y))


def test_a_poisoned_stream_is_refused_and_the_model_keeps_its_accuracy(
    live_server: LiveServerFactory, live_store: Path, tmp_path: Path
) -> None:
    assert train_offline(live_store, "digits", epochs=100) == 1  # the CLI's defaults
    initial = tmp_path / "initial"
    shutil.copytree(live_store, initial)
    batches, X_eval, y_eval = stream(seed=7)
    start = accuracy(live_store, X_eval, y_eval)
    server = live_server(live_store, "--workers", "2", *DEFAULTS)
    decisions: list[tuple[str, bool]] = []
    version = 1
    for kind, body in batches:
        before = files(live_store)
        response = server.post("/train", json=body, headers=AUTH)
        assert response.status_code in (200, 409), response.text
        accepted = response.status_code == 200
        decisions.append((kind, accepted))
        if accepted:
            version += 1
            assert response.json()["version"] == version
        else:
            assert response.json()["error"]["type"] == "update_rejected"
            # A refusal leaves the store as it was, bit for bit, and the active version where
            # it was, in every worker.
            assert files(live_store) == before
            assert_all_workers_serve(server, version)
    honest = [accepted for kind, accepted in decisions if kind == "honest"]
    poisoned = [not accepted for kind, accepted in decisions if kind != "honest"]
    assert sum(honest) / len(honest) >= 0.9, decisions
    assert sum(poisoned) / len(poisoned) >= 0.9, decisions
    assert ModelRepository(LocalArtifactStore(live_store)).head("digits").active == version
    assert accuracy(live_store, X_eval, y_eval) >= start - 0.01, (start, decisions)

    # The same stream against a fresh copy of the store: the same decisions, in-process.
    replay = ModelRepository(
        LocalArtifactStore(initial), guard=GuardPolicy(), holdout_every=10, online_momentum=False
    )
    again = []
    for kind, body in batches:
        try:
            replay.update(
                "digits",
                body["instances"],
                body["labels"],
                learning_rate=body.get("learning_rate"),
                passes=body.get("passes", 1),
            )
            again.append((kind, True))
        except (UpdateRejectedError, OutOfRangeError):
            again.append((kind, False))
    assert again == decisions


@pytest.mark.slow
def test_kill_9_during_guarded_updates_loses_nothing_acknowledged(
    live_server: LiveServerFactory, live_store: Path
) -> None:
    assert train_offline(live_store, "digits", epochs=100) == 1
    batches, _, _ = stream(seed=11)
    acknowledged: dict[int, dict[str, Any]] = {}
    refused: list[dict[str, Any]] = []
    for round_number in range(3):
        server = live_server(live_store, "--workers", "2", *DEFAULTS)
        sent = threading.Event()

        def client(offset: int, server: Any = server, sent: threading.Event = sent) -> None:
            for _, body in batches[offset::2]:
                try:
                    response = server.post("/train", json=body, headers=AUTH)
                except Exception:  # the server was killed under us: stop
                    return
                sent.set()
                if response.status_code == 200:
                    acknowledged[response.json()["version"]] = body
                elif response.status_code == 409:
                    refused.append(body)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        assert sent.wait(timeout=30)
        threading.Event().wait(0.05 + 0.1 * round_number)
        server.kill()
        for thread in threads:
            thread.join(timeout=30)
    assert acknowledged and refused, (len(acknowledged), len(refused))
    repo = ModelRepository(LocalArtifactStore(live_store))
    stored = repo.versions("digits")
    numbers = sorted(info.meta.version for info in stored)
    assert numbers == list(range(1, numbers[-1] + 1))  # nothing lost, nothing duplicated
    for version, body in acknowledged.items():
        meta = repo.meta("digits", version)
        assert meta.online is not None and meta.online.n == len(body["labels"])
        assert meta.verdict is not None and meta.verdict["accepted"], version
    for info in stored:  # nothing the guard refused got in
        verdict = info.meta.verdict
        assert verdict is None or verdict["accepted"] or verdict["forced"], info.meta.version
    repo.load("digits")  # the store loads, every chain replays


def test_single_rows_cannot_poison_the_model_a_little_at_a_time(
    live_server: LiveServerFactory, live_store: Path
) -> None:
    """One row at a time, each too small for the one-update tests: the tests across updates
    (model/guard_history.py) refuse a mislabelling stream after a few rows, let an honest one
    through, and the traffic's drift test (refused rows included) raises its alarm."""
    assert train_offline(live_store, "digits", epochs=100) == 1
    digits = load_builtin("digits")
    X, y = np.asarray(digits.X), np.asarray(digits.y)
    _, _, test = train_val_test_split(y, 0.1, 0.2, 0)
    rows = np.random.default_rng(5).permutation(test)
    honest_rows, shifted_rows, evaluation = rows[:60], rows[60:100], rows[100:]
    start = accuracy(live_store, X[evaluation], y[evaluation])
    server = live_server(live_store, "--workers", "2", *DEFAULTS)

    def send(row: int, label: int) -> bool:
        body = {"instances": [X[row].tolist()], "labels": [label]}
        response = server.post("/train", json=body, headers=AUTH)
        assert response.status_code in (200, 409), response.text
        return response.status_code == 200

    # Honest single rows: few refusals (the pooled surprise test refuses at most about
    # 0.1 x 0.01 of an honest stream; the damage budget measured 0-3 %, bench/guard_streams.py).
    honest = [send(row, int(y[row])) for row in honest_rows]
    assert sum(honest) >= 57, honest
    # Label-shifted single rows (a mislabelling job): refused after at most 4, for good.
    shifted = [send(row, (int(y[row]) + 1) % 10) for row in shifted_rows]
    assert sum(shifted) <= 4 and not any(shifted[4:]), shifted
    assert accuracy(live_store, X[evaluation], y[evaluation]) >= start - 0.02
    # Refused rows never reach the store, but the traffic's drift test saw them.
    samples = metric_samples(server.get("/metrics").text)
    assert samples[("softmax_traffic_drift_detected", frozenset())] == 1.0
