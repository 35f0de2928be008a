"""Two real ``python -m service`` processes on one PostgreSQL database, as two hosts would run
them (no shared directory): concurrent writers spread across both, notification-driven reload,
``kill -9`` of one service, and the database stopped in immediate mode and restarted."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model import ModelRepository
from model.stores import open_store
from tests.postgres import PostgresServer, running_postgres

from .checks import Minibatch, digits_minibatches
from .clients import TrainStream
from .server import ServerProcess, running_server, train_offline, wait_until

pytestmark = pytest.mark.slow

# Each test stops or starts servers of its own: a database server of this module's own too.
FLAGS = ("--guard-mode", "off", "--reload-interval", "0.5", "--keep-last", "1000")
# Polling every 5 s (every 100 s while notified) cannot explain a reload within 0.1 s.
NOTIFIED = (*FLAGS, "--reload-interval", "5")
RELOAD_DELAY = 0.1  # seconds: the bound for loopback


@pytest.fixture(scope="module")
def database_server() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture
def database(database_server: PostgresServer) -> str:
    """A fresh database holding model ``digits`` version 1, written by the training CLI."""
    database_server.start()  # again, if a test left it stopped
    address = database_server.create_database()
    assert train_offline(address, "digits") == 1  # type: ignore[arg-type]  # an address
    return address


def probe_rows() -> list[list[float]]:
    return digits_minibatches(1, rows=5, seed=99)[0].X.tolist()


def served(server: ServerProcess) -> tuple[int, Any]:
    response = server.post("/predict", json={"instances": probe_rows()})
    assert response.status_code == 200, response.text
    body = response.json()
    return int(body["version"]), body["probabilities"]


def finished(stream: TrainStream) -> bool:
    answered = len(stream.acknowledged) + len(stream.refused) + len(stream.rejected)
    return answered == len(stream.batches)


def check_stored(address: str, acknowledged: dict[int, Minibatch]) -> list[int]:
    """Every acknowledged version is in the database, holding exactly its minibatch, its
    parent the version before it; the stored versions, ascending."""
    store = open_store(address)
    repository = ModelRepository(store)
    try:
        versions = store.versions("digits")
        for version, batch in acknowledged.items():
            meta = store.read_meta("digits", version)
            assert meta["parent"] == version - 1, f"version {version}: parent {meta['parent']}"
            arrays = store.read("digits", version).arrays
            if meta["kind"] == "update":
                assert np.array_equal(arrays["X"], batch.X), f"version {version}: other rows"
        repository.load("digits")  # the newest materializes: every digest checks out
        return versions
    finally:
        repository.close()


def test_two_services_share_one_database(database: str, tmp_path: Path) -> None:
    """8 concurrent writers over two services: N acks make exactly N consecutive versions,
    and both services serve the same weights within the reload delay."""
    batches = digits_minibatches(48, seed=1)
    with (
        running_server(database, tmp_path / "a", *NOTIFIED) as first,  # type: ignore[arg-type]
        running_server(database, tmp_path / "b", *NOTIFIED) as second,  # type: ignore[arg-type]
        TrainStream(first, batches[:24]) as stream_a,
        TrainStream(second, batches[24:]) as stream_b,
    ):
        stream_a.start(4)
        stream_b.start(4)
        for stream in (stream_a, stream_b):
            wait_until(lambda s=stream: finished(s), 120, what="every minibatch answered")
            stream.stop()
        assert stream_a.refused == [] and stream_b.refused == []
        acknowledged = {**stream_a.acknowledged, **stream_b.acknowledged}
        assert len(acknowledged) == 48
        assert sorted(acknowledged) == list(range(2, 50))
        assert check_stored(database, acknowledged) == list(range(1, 50))
        for server, stream in ((first, stream_a), (second, stream_b)):
            commits = re.search(
                r"^softmax_store_syncs_total (\S+)$", server.get("/metrics").text, re.MULTILINE
            )
            assert commits is not None
            assert 0 < float(commits.group(1)) <= len(stream.acknowledged)  # COMMITs counted

        # One more update through the first: the second serves it within the reload delay.
        response = first.post("/train", json=batches[0].payload())
        acked = time.monotonic()
        assert response.status_code == 200, response.text
        version = response.json()["version"]
        assert version == 50
        wait_until(lambda: served(second)[0] == version, 2.0, interval=0.005)
        delay = time.monotonic() - acked
        assert delay < RELOAD_DELAY + 0.15, f"reload took {delay:.3f} s"  # + the probe's own
        assert served(first) == served(second)  # the same probabilities, bit for bit
        reference = ModelRepository(open_store(database))
        try:
            expected = reference.load("digits").estimator.predict_proba(np.array(probe_rows()))
        finally:
            reference.close()
        assert served(second)[1] == expected.tolist()


def test_kill_and_database_outage_lose_nothing_acknowledged(
    database: str, database_server: PostgresServer, tmp_path: Path
) -> None:
    """kill -9 of one service mid-stream, then PostgreSQL stopped in immediate mode
    mid-stream and restarted: every acknowledged update is stored, the surviving service
    answers only 200 or 503 (with Retry-After) meanwhile, keeps predicting, says degraded,
    and recovers without a restart."""
    batches = digits_minibatches(400, seed=2)
    with (
        running_server(database, tmp_path / "a", *FLAGS) as doomed,  # type: ignore[arg-type]
        running_server(database, tmp_path / "b", *FLAGS) as survivor,  # type: ignore[arg-type]
        TrainStream(doomed, batches[:150]) as stream_a,
        # 503s are immediate during the outage: its clients retry the same minibatch after
        # Retry-After (or the outage would use up every minibatch in a second).
        TrainStream(survivor, batches[150:], reconnect=True, resend_after_503=True) as stream_b,
    ):
        stream_a.start(4)
        stream_b.start(4)
        wait_until(lambda: len(stream_a.acknowledged) >= 10, 30, what="acks on the first")
        doomed.kill()
        stream_a.stop()
        seen = len(stream_b.acknowledged)
        wait_until(lambda: len(stream_b.acknowledged) >= seen + 10, 30, what="more acks")

        database_server.stop("immediate")
        outage = survivor.post("/train", json=batches[0].payload(), timeout=30)
        assert outage.status_code == 503, outage.text
        assert outage.json()["error"]["type"] == "store_unavailable"
        assert outage.headers["Retry-After"] == "1"
        assert survivor.post("/predict", json={"instances": probe_rows()}).status_code == 200
        ready = wait_until(
            lambda: (r := survivor.get("/health/ready")).json().get("status") == "degraded" and r,
            5,
            what="ready to say degraded",
        )
        assert ready.status_code == 200 and "unavailable" in ready.json()["store"]

        database_server.start()
        during = len(stream_b.acknowledged)
        wait_until(lambda: len(stream_b.acknowledged) >= during + 10, 60, what="recovery")
        wait_until(lambda: survivor.get("/health/ready").json()["status"] == "ready", 10)
        stream_b.stop()

    refused = stream_b.refused
    assert all(answer.startswith("503 ") for answer in refused), refused[:3]
    acknowledged = {**stream_a.acknowledged, **stream_b.acknowledged}
    versions = check_stored(database, acknowledged)
    assert set(acknowledged) <= set(versions)
    assert versions == list(range(1, versions[-1] + 1))  # no gap: nothing half-written


def timed_train(server: ServerProcess, batch: Minibatch) -> tuple[Any, float]:
    started = time.monotonic()
    response = server.post("/train", json=batch.payload(), timeout=30)
    return response, time.monotonic() - started


def test_started_before_the_database_then_fast_503s_during_an_outage(
    database: str, database_server: PostgresServer, tmp_path: Path
) -> None:
    """The service started while PostgreSQL is down is live, not ready (saying why), and
    ready within a bound of the database starting, without a restart. During a later outage
    /train answers 503 store_unavailable with Retry-After at once; after it, /train succeeds
    and every acknowledged update is stored."""
    batches = digits_minibatches(6, seed=3)
    database_server.stop("fast")  # a clean stop: a quicker start
    with running_server(database, tmp_path, *FLAGS, ready=False) as server:  # type: ignore[arg-type]
        ready = server.get("/health/ready")
        assert ready.status_code == 503, ready.text
        message = ready.json()["error"]["message"]
        assert message.startswith("not ready: no model is loaded yet: the PostgreSQL store")
        assert "unreachable" in message and "Connection refused" in message
        assert server.post("/train", json=batches[0].payload()).status_code == 503

        database_server.start()
        up = time.monotonic()
        assert server.wait_ready(timeout=5)["version"] == 1
        assert time.monotonic() - up < 2.0, "ready too long after the database started"
        acknowledged = {}
        for batch in batches[:2]:
            response = server.post("/train", json=batch.payload())
            assert response.status_code == 200, response.text
            acknowledged[response.json()["version"]] = batch

        database_server.stop("fast")  # a clean stop: a quicker start
        answers = [timed_train(server, batch) for batch in batches[2:5]]
        for response, seconds in answers:
            assert response.status_code == 503, response.text
            assert response.json()["error"]["type"] == "store_unavailable"
            assert response.headers["Retry-After"] == "1"
            assert seconds < 0.5, f"a 503 took {seconds:.3f} s"
        assert answers[-1][1] < 0.25  # once marked down: at once (an HTTP round trip)
        assert server.post("/predict", json={"instances": probe_rows()}).status_code == 200

        database_server.start()
        response = wait_until(
            lambda: (
                (r := server.post("/train", json=batches[5].payload())).status_code == 200 and r
            ),
            5,
            interval=0.05,
            what="/train to succeed after the database came back",
        )
        acknowledged[response.json()["version"]] = batches[5]
        assert server.get("/health/ready").json()["status"] in ("ready", "degraded")
    versions = check_stored(database, acknowledged)
    assert set(acknowledged) <= set(versions) and sorted(acknowledged) == [2, 3, 4]
