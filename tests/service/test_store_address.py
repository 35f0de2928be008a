"""--store takes a directory or a PostgreSQL address; a database it cannot reach stops
start-up with a message naming the setting."""

from __future__ import annotations

from pathlib import Path

from service.config import Settings, startup_problem
from tests.integration.server import free_port


def test_a_directory_stays_a_path_and_an_address_a_string() -> None:
    assert Settings(store="artifacts").store == Path("artifacts")  # type: ignore[arg-type]
    address = "postgresql://softmax@db.example:5432/softmax"
    assert Settings(store=address).store == address
    assert Settings(store="postgres://u@h/d").store == "postgres://u@h/d"


def test_an_unreachable_database_is_a_start_up_problem() -> None:
    address = f"postgresql://softmax:secret@127.0.0.1:{free_port()}/softmax"
    problem = startup_problem(Settings(store=address))
    assert problem is not None
    assert problem.startswith("--store (SOFTMAX_STORE): the PostgreSQL store postgresql://")
    assert "unreachable" in problem and "secret" not in problem  # no password in messages
