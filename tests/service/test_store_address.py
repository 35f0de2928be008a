"""--store takes a directory or a PostgreSQL address. A database that cannot be reached yet
does not stop start-up (the service starts unready and waits for it); one that answers and
refuses does, with a message naming the setting (model/pgoutage.py draws the line)."""

from __future__ import annotations

from pathlib import Path

import psycopg

from model.pgstore import SCHEMA_VERSION, PostgresArtifactStore
from service.config import Settings, startup_problem
from tests.integration.server import free_port
from tests.postgres import PostgresServer


def test_a_directory_stays_a_path_and_an_address_a_string() -> None:
    assert Settings(store="artifacts").store == Path("artifacts")  # type: ignore[arg-type]
    address = "postgresql://softmax@db.example:5432/softmax"
    assert Settings(store=address).store == address
    assert Settings(store="postgres://u@h/d").store == "postgres://u@h/d"


def test_a_database_not_reachable_yet_is_no_start_up_problem() -> None:
    refused = f"postgresql://softmax:secret@127.0.0.1:{free_port()}/softmax"
    unresolvable = "postgresql://softmax@db-not-up-yet.invalid:5432/softmax"  # DNS: not yet
    for address in (refused, unresolvable):
        assert startup_problem(Settings(store=address)) is None


def test_a_database_that_refuses_is_a_start_up_problem(postgres: PostgresServer) -> None:
    port = postgres.port
    no_database = f"postgresql://postgres:secret@127.0.0.1:{port}/no_such_db"
    problem = startup_problem(Settings(store=no_database))
    assert problem == (
        f"--store (SOFTMAX_STORE): the PostgreSQL store postgresql://postgres@127.0.0.1:{port}"
        f'/no_such_db refused the connection: connection to server at "127.0.0.1", port {port} '
        'failed: FATAL: database "no_such_db" does not exist'
    )  # one line, no password
    no_role = f"postgresql://nobody_here@127.0.0.1:{port}/postgres"
    problem = startup_problem(Settings(store=no_role))
    assert problem is not None and problem.endswith('FATAL: role "nobody_here" does not exist')

    newer = postgres.create_database()
    PostgresArtifactStore(newer).close()  # the schema created
    with psycopg.connect(newer, autocommit=True) as conn:
        conn.execute("UPDATE softmax_schema SET version = %s", (SCHEMA_VERSION + 1,))
    problem = startup_problem(Settings(store=newer))
    assert problem is not None and problem.startswith("--store (SOFTMAX_STORE): the database")
    assert "newer than this release's" in problem
