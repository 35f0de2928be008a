"""The runtime on a store that notifies (PostgreSQL): another process's version is served at
once, not at the next poll; the runtime keeps serving when the store goes away, and says why."""

from __future__ import annotations

import time

from model import ModelRepository
from model.pgstore import PostgresArtifactStore
from service.runtime import Runtime
from tests.postgres import PostgresServer, running_postgres

from .helpers import fitted, rows


def wait_for(predicate, timeout: float) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, "timed out"
        time.sleep(0.002)
    return time.monotonic() - start


def test_a_version_written_elsewhere_is_served_when_notified(postgres: PostgresServer) -> None:
    address = postgres.create_database()
    writer = ModelRepository(PostgresArtifactStore(address))
    writer.save(fitted("iris", epochs=3), "iris")
    runtime = Runtime(ModelRepository(PostgresArtifactStore(address)), "iris")
    runtime.refresh()
    runtime.start_polling(60.0)  # polling alone would take a minute
    try:
        wait_for(lambda: runtime.repository.watch is not None, 1)
        time.sleep(0.3)  # the feed connects
        X, y = rows("iris", slice(0, 10)), list(fitted("iris", epochs=1).classes_[[0] * 10])
        result = writer.update("iris", X, y)
        delay = wait_for(lambda: runtime.current.version == result.model.version, 2.0)  # type: ignore[union-attr]
        assert delay < 0.1
    finally:
        runtime.stop_polling()
        writer.close()


def test_an_outage_leaves_the_model_served_and_says_why() -> None:
    with running_postgres() as server:  # a server of its own: this test stops it
        address = server.create_database()
        writer = ModelRepository(PostgresArtifactStore(address))
        writer.save(fitted("iris", epochs=3), "iris")
        writer.close()
        # Unavailable after 0.5 s without a connection (the default waits 3 s).
        store = PostgresArtifactStore(address, connect_timeout=0.5)
        runtime = Runtime(ModelRepository(store), "iris")
        runtime.refresh()
        runtime.start_polling(0.2)
        try:
            time.sleep(0.3)
            assert runtime.store_problem is None
            server.stop("immediate")
            wait_for(lambda: runtime.store_problem is not None, 10)
            assert "unreachable" in (runtime.store_problem or "")
            served = runtime.require()
            assert served.version == 1
            assert runtime.predict(served, rows("iris", slice(0, 3))).probabilities.shape == (3, 3)
            server.start()
            wait_for(lambda: runtime.store_problem is None, 10)
        finally:
            runtime.stop_polling()
