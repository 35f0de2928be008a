"""Fixtures of the subprocess integration tests (names prefixed ``live_``).

The helpers themselves live in :mod:`tests.integration.server` and
:mod:`tests.integration.checks`, so a test module can use them without fixtures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .server import ServerProcess, start_server, train_offline

LiveServerFactory = Callable[..., ServerProcess]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    # Remember whether the test body failed, so fixtures can show the server logs.
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def live_store(tmp_path: Path) -> Path:
    """An empty artifact-store directory."""
    path = tmp_path / "store"
    path.mkdir()
    return path


@pytest.fixture
def live_digits_store(live_store: Path) -> Path:
    """A store holding model ``digits`` version 1, written by the training CLI."""
    assert train_offline(live_store, "digits") == 1
    return live_store


@pytest.fixture
def live_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServerFactory]:
    """Start ``python -m service`` subprocesses: ``live_server(store, *flags, ready=True)``.

    Every server started is ended at teardown (SIGTERM, then SIGKILL of its process group),
    also when the test failed; then their logs are printed if it did.
    """
    started: list[ServerProcess] = []

    def start(store: Path, *args: str, ready: bool = True) -> ServerProcess:
        server = start_server(store, tmp_path / "logs", *args, ready=ready)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()
        if request.node.stash.get(_FAILED, False):
            for server in started:
                print(f"----- {' '.join(server.args[2:])}\n{server.log()[-6000:]}")
