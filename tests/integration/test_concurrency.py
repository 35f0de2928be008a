"""Concurrent /train and /predict against a two-worker server sharing one store.

50 updates race each other and 500 predictions across both worker processes. Updates must be
serialized: each acknowledged version is its minibatch applied to the version before it, the
version numbers are exactly the next 50, and the final weights are one sequential replay of the
acknowledged minibatches. Every prediction must be exactly what the offline model of the
version it reports answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from model import LoadedModel

from .checks import Minibatch, StoreOracle, assert_same_state, digits_minibatches
from .clients import TrainStream
from .conftest import LiveServerFactory
from .server import assert_all_workers_serve, wait_until

N_TRAIN = 50
N_PREDICT = 500
THREADS = 16
EXTRA, BURST = 40, 4  # the most extra requests of a kind, and how many at once (top_up)


def test_concurrent_train_and_predict_with_two_workers(
    live_server: LiveServerFactory, live_digits_store: Path
) -> None:
    server = live_server(live_digits_store, "--workers", "2", "--reload-interval", "0.2")
    oracle = StoreOracle(live_digits_store, "digits")
    initial = server.wait_ready()["version"]
    assert initial == 1

    batches = digits_minibatches(N_TRAIN + EXTRA, rows=8, seed=10)
    queries = digits_minibatches(N_PREDICT + EXTRA, rows=4, seed=11)  # labels unused
    # Interleave: one /train after every ten /predict calls.
    jobs: list[tuple[str, int]] = []
    for i in range(N_PREDICT):
        jobs.append(("predict", i))
        if i % 10 == 9:
            jobs.append(("train", i // 10))
    assert sum(kind == "train" for kind, _ in jobs) == N_TRAIN

    # Several connections per worker: the kernel spreads new connections over both workers.
    limits = httpx.Limits(max_connections=THREADS, max_keepalive_connections=THREADS)
    with server.client(timeout=60.0, limits=limits) as client:

        def run(job: tuple[str, int]) -> tuple[str, int, int, dict[str, Any]]:
            kind, index = job
            if kind == "train":
                response = client.post("/train", json=batches[index].payload())
            else:
                response = client.post("/predict", json={"instances": queries[index].X.tolist()})
            return kind, index, response.status_code, response.json()

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            results = list(pool.map(run, jobs, timeout=120))
        elapsed = time.monotonic() - started

    failures = [result for result in results if result[2] != 200]
    assert not failures, f"{len(failures)} requests failed, e.g. {failures[:3]}"
    trained = {index: body for kind, index, _, body in results if kind == "train"}
    predicted = {index: body for kind, index, _, body in results if kind == "predict"}
    assert len(trained) == N_TRAIN and len(predicted) == N_PREDICT
    top_up(server, "/train", trained, lambda i: batches[i].payload(), N_TRAIN)
    top_up(server, "/predict", predicted, lambda i: {"instances": queries[i].X.tolist()}, N_PREDICT)
    n_train, n_predict = len(trained), len(predicted)

    # Exactly the next version numbers, one per acknowledged update, each applied on top
    # of the version just before it (serialized across both workers).
    versions = sorted(body["version"] for body in trained.values())
    assert versions == list(range(initial + 1, initial + n_train + 1)), versions
    for body in trained.values():
        assert body["previous_version"] == body["version"] - 1, body
        assert body["n"] == 8
    by_version = {body["version"]: batches[index] for index, body in trained.items()}

    # The store agrees: these versions and no others, a straight lineage, each version exactly
    # its acknowledged minibatch applied to its parent.
    final = initial + n_train
    assert oracle.versions() == list(range(1, final + 1))
    assert oracle.store.head("digits").active == final
    oracle.load_all()
    for version in range(initial + 1, final + 1):
        oracle.assert_update(version, by_version[version], parent=version - 1)

    # Independently: one sequential replay of the acknowledged minibatches, in version order,
    # from the initial model, ends at exactly the stored final weights.
    replayed = replay(oracle, initial, [by_version[v] for v in range(initial + 1, final + 1)])
    assert_same_state(oracle.load(final), replayed, "sequential replay vs stored final version")

    # Every prediction is exactly the offline answer of the version it reports.
    seen_versions: set[int] = set()
    for index, body in predicted.items():
        version = body["version"]
        seen_versions.add(version)
        assert initial <= version <= final, body
        expected = oracle.predict_proba(version, queries[index].X)
        probabilities = np.array(body["probabilities"], dtype=np.float64)
        assert np.array_equal(probabilities, expected), (
            f"/predict #{index} (version {version}) differs from the offline model by up to "
            f"{np.abs(probabilities - expected).max()}"
        )
        classes = oracle.load(version).classes
        assert body["predictions"] == [classes[i] for i in expected.argmax(axis=1)]
    assert len(seen_versions) > 1, "predictions should have seen the model change"

    # Both worker processes took part (each counts its requests in its own metrics file).
    per_process = server.requests_per_process()
    for route, count in (("/train", n_train), ("/predict", n_predict)):
        served = {pid: c.get(("POST", route, "200"), 0) for pid, c in per_process.items()}
        assert sum(served.values()) == count, served
        assert sum(n > 0 for n in served.values()) == 2, f"{route} answered by {served}"

    # Both workers converge on the final version.
    assert_all_workers_serve(server, final)
    assert elapsed < 90


def top_up(
    server: Any,
    route: str,
    answers: dict[int, dict[str, Any]],
    payload: Callable[[int], dict[str, Any]],
    first: int,
) -> None:
    """On a busy machine the kernel may hand every connection to one worker: then bursts of
    BURST requests to ``route``, each on a fresh connection (while one worker is busy with
    one, the other accepts the next), until both workers have answered one (at most EXTRA
    requests), added to ``answers`` under the indices from ``first``."""

    def send(index: int) -> tuple[int, httpx.Response]:
        with server.client(timeout=60.0) as fresh:
            return index, fresh.post(route, json=payload(index))

    for start in range(first, first + EXTRA, BURST):
        per_process = server.requests_per_process()
        if sum(c.get(("POST", route, "200"), 0) > 0 for c in per_process.values()) == 2:
            return
        with ThreadPoolExecutor(max_workers=BURST) as pool:
            for index, response in pool.map(send, range(start, start + BURST)):
                assert response.status_code == 200, response.text
                answers[index] = response.json()


def replay(oracle: StoreOracle, initial: int, batches: list[Minibatch]) -> LoadedModel:
    model = oracle.load(initial)
    for offset, batch in enumerate(batches, start=1):
        meta = oracle.meta(initial + offset)
        estimator = oracle.apply(model, batch, meta["online"])
        model = LoadedModel(model.name, initial + offset, estimator, meta)
    return model


def test_server_starting_while_another_writes_is_ready_at_once(
    live_server: LiveServerFactory, live_digits_store: Path
) -> None:
    """A server that starts while another one keeps writing the store is ready as soon as it
    is live: its start-up load is not thrown away because the store moved on meanwhile."""
    writer = live_server(live_digits_store, "--keep-last", "100000")
    with TrainStream(writer, digits_minibatches(3000, rows=8, seed=12)) as stream:
        stream.start(4)
        wait_until(lambda: len(stream.acknowledged) > 20, timeout=10, what="updates to flow")
        for _ in range(5):
            # A long reload interval: only the start-up load can make it ready.
            reader = live_server(live_digits_store, "--reload-interval", "30", ready=False)
            response = reader.get("/health/ready")
            assert response.status_code == 200, response.text
            response = reader.post("/predict", json={"instances": [[0.0] * 64]})
            assert response.status_code == 200, response.text
            reader.stop()
        stream.stop()
    assert not stream.refused, stream.refused[:3]
