"""What only the PostgreSQL store has: its versioned schema, change notification, and the
command-line tools pointed at a database (the shared contract is test_store_contract.py)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import psycopg
import pytest

from model import ModelRepository, SoftmaxRegression, errors
from model.artifact import Record
from model.pgstore import SCHEMA_VERSION, PostgresArtifactStore
from tests.postgres import PostgresServer, find_binaries


def record(seed: int) -> Record:
    return Record({"kind": "snapshot", "parent": None}, {"w": np.full(3, float(seed))})


def test_the_schema_is_created_once_and_versioned(postgres: PostgresServer) -> None:
    address = postgres.create_database()
    stores = []
    threads = [
        threading.Thread(target=lambda: stores.append(PostgresArtifactStore(address)))
        for _ in range(4)
    ]  # replicas starting together
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(stores) == 4
    with psycopg.connect(address) as conn:
        assert conn.execute("SELECT version FROM softmax_schema").fetchall() == [(SCHEMA_VERSION,)]
        conn.execute("UPDATE softmax_schema SET version = %s", (SCHEMA_VERSION + 1,))
    for store in stores:
        store.close()
    with pytest.raises(errors.StoreError, match="newer than this release's"):
        PostgresArtifactStore(address)


def test_commits_are_notified_to_watchers(postgres: PostgresServer) -> None:
    address = postgres.create_database()
    writer, reader = PostgresArtifactStore(address), PostgresArtifactStore(address)
    heard: list[tuple[str, float]] = []
    feed = reader.watch(lambda model: heard.append((model, time.monotonic())))
    try:
        assert feed.live.wait(10)
        with writer.lock("m"):
            writer.write("m", record(1), durable=False)
            time.sleep(0.2)
            assert [m for m, _ in heard if m] == []  # nothing before the commit
        committed = time.monotonic()
        deadline = committed + 5
        while not [m for m, _ in heard if m] and time.monotonic() < deadline:
            time.sleep(0.005)
        (model, when), *_ = [h for h in heard if h[0]]
        assert model == "m" and when - committed < 0.1
        with writer.lock("m"):
            writer.activate("m", 1)
        while len([m for m, _ in heard if m]) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert [m for m, _ in heard if m] == ["m", "m"]
    finally:
        writer.close()
        reader.close()
    assert not feed.live.is_set()


def test_the_command_line_tools_take_a_database(postgres: PostgresServer, subprocess_env) -> None:
    address = postgres.create_database()
    for _ in range(2):
        subprocess.run(
            [sys.executable, "-m", "model.train", "builtin:iris", "--store", address,
             "--name", "iris", "--quiet", "--epochs", "3"],
            env=subprocess_env, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "model.activate", "1", "--name", "iris", "--store", address],
        env=subprocess_env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "model iris: version 1 is active (classes: setosa, versicolor, virginica)"
    )
    store = PostgresArtifactStore(address)
    try:
        head = store.head("iris")
        assert (head.active, head.newest) == (1, 2)
    finally:
        store.close()


def test_concurrent_updates_share_commits(postgres: PostgresServer) -> None:
    """Group commit on the database: updates queued while one COMMIT runs share the next."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 4))
    y = (X[:, 0] > 0).astype(int)
    store = PostgresArtifactStore(postgres.create_database())
    repository = ModelRepository(store)
    try:
        repository.save(SoftmaxRegression(epochs=2).fit(X, y), "m")
        before = store.syncs
        versions: list[int] = []

        def writer(offset: int) -> None:
            for step in range(5):
                start = (offset * 5 + step) * 4
                result = repository.update("m", X[start : start + 4], y[start : start + 4])
                versions.append(result.model.version)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert sorted(versions) == list(range(2, 42))
        assert store.head("m").newest == 41
        commits = store.syncs - before
        assert commits < 40  # fewer commits than updates
    finally:
        repository.close()


def test_a_store_opened_before_its_server_fails_fast_then_serves() -> None:
    """Built while nothing listens: calls fail at once (no pool wait), the schema is created
    and the watchers told when the server starts, and a later outage fails fast again."""
    binaries = find_binaries()
    assert binaries is not None
    server = PostgresServer(binaries)  # initialized, not started
    heard: list[str] = []
    try:
        store = PostgresArtifactStore(server.url, connect_timeout=3.0)
        store.watch(heard.append)
        assert store.unavailable is not None and "Connection refused" in store.unavailable
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(errors.StoreUnavailableError, match="is unreachable"):
                store.models()
            assert time.monotonic() - started < 0.1  # not the pool's 3 s
        server.start()
        up = time.monotonic()
        while store.unavailable is not None:
            assert time.monotonic() - up < 2, "the store did not see the server start"
            time.sleep(0.01)
        assert "" in heard  # the watchers were told: anything may have changed
        with store.lock("m"):
            store.write("m", record(1))
        assert store.versions("m") == [1]

        server.stop("immediate")
        started = time.monotonic()
        with pytest.raises(errors.StoreUnavailableError):
            store.models()  # the first call finds out (a probe, not the pool's 3 s wait)
        assert time.monotonic() - started < 1.0
        started = time.monotonic()
        with pytest.raises(errors.StoreUnavailableError), store.lock("m"):
            pass
        assert time.monotonic() - started < 0.1
        server.start()
        deadline = time.monotonic() + 2
        while store.unavailable is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store.versions("m") == [1]  # what was committed is there
        store.close()
    finally:
        server.remove()
