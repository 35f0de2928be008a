"""Run the real service (``python -m service``) and the training CLI as subprocesses.

Every server runs in its own session (``start_new_session=True``), so its process id is also
its process-group id and ``os.killpg`` reaches uvicorn's worker processes too. Use
:func:`running_server` (a context manager) so that the whole group is ended even when a test
fails; :meth:`ServerProcess.kill` sends ``SIGKILL`` to the group for the crash tests.

Nothing here ends a process it did not start.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = [
    "REPO_ROOT",
    "ServerProcess",
    "assert_all_workers_serve",
    "child_env",
    "free_port",
    "running_server",
    "start_server",
    "train_offline",
    "wait_until",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def child_env(tmp_dir: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a child Python: the project importable, no inherited ``SOFTMAX_*``
    settings, one BLAS thread, and (if given) its temporary files under ``tmp_dir``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SOFTMAX_") and key != "PROMETHEUS_MULTIPROC_DIR"
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"
    if tmp_dir is not None:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmp_dir)
    env.update(extra)
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Any, timeout: float, interval: float = 0.05, what: str = "") -> Any:
    """Call ``predicate`` until it returns something truthy (returned), or fail after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or predicate}")
        time.sleep(interval)


def train_offline(
    store: Path,
    dataset: str = "digits",
    *,
    name: str | None = None,
    epochs: int = 20,
    extra: Sequence[str] = (),
    timeout: float = 60.0,
) -> int:
    """Run ``python -m model.train builtin:<dataset>`` into ``store``; the new version."""
    command = [
        sys.executable,
        "-m",
        "model.train",
        f"builtin:{dataset}",
        "--store",
        str(store),
        "--name",
        name or dataset,
        "--quiet",
        "--json",
        "--epochs",
        str(epochs),
        *extra,
    ]
    done = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"training CLI failed ({done.returncode}):\n{done.stderr}"
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return int(report["version"])


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid`` (Linux ``/proc``)."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the parenthesized command: state, ppid, pgrp, ...
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 3 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


@dataclass
class ServerProcess:
    """One ``python -m service`` process group."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    args: list[str]
    tmp_dir: Path  # its TMPDIR: the Prometheus multiprocess directory goes there
    _log_file: Any = field(repr=False)

    @property
    def pgid(self) -> int:
        return self.proc.pid  # start_new_session=True: the leader's pid is the group id

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests_per_process(self) -> dict[int, dict[tuple[str, str, str], float]]:
        """HTTP requests counted by each worker process so far: pid -> (method, route,
        status) -> count, read from the Prometheus multiprocess files the workers write."""
        counts: dict[int, dict[tuple[str, str, str], float]] = {}
        for path in self.tmp_dir.glob("softmax-serve-metrics-*/counter_*.db"):
            pid = int(path.stem.rsplit("_", 1)[1])
            per_route = counts.setdefault(pid, {})
            for metric in MultiProcessCollector.merge([str(path)], accumulate=True):
                for sample in metric.samples:
                    if sample.name == "softmax_http_requests_total":
                        labels = sample.labels
                        key = (labels["method"], labels["route"], labels["status"])
                        per_route[key] = per_route.get(key, 0.0) + sample.value
        return counts

    def client(self, **kwargs: Any) -> httpx.Client:
        """A pooled client (``trust_env=False``: no proxy from the environment for localhost)."""
        kwargs.setdefault("timeout", 30.0)
        kwargs.setdefault("trust_env", False)
        return httpx.Client(base_url=self.base_url, **kwargs)

    def log(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request on a fresh connection (so that every worker gets a chance to answer)."""
        kwargs.setdefault("timeout", 30.0)
        return httpx.request(method, self.base_url + path, trust_env=False, **kwargs)

    def get(self, path: str, timeout: float = 2.0) -> httpx.Response:
        return self.request("GET", path, timeout=timeout)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def _signal_group(self, sig: signal.Signals) -> None:
        # Only while the group can still be ours: the unreaped leader keeps its id reserved,
        # and so does any surviving member of the group.
        if self.proc.poll() is None or _group_members(self.pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, sig)

    def worker_pids(self) -> list[int]:
        """uvicorn's worker processes (with ``--workers`` > 1: spawned children)."""
        workers = []
        for pid in _group_members(self.pgid):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    command = f.read()
            except OSError:
                continue
            if b"multiprocessing.spawn" in command:
                workers.append(pid)
        return sorted(workers)

    def wait_group_gone(self, timeout: float = STOP_TIMEOUT) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.proc.poll()
            if self.proc.returncode is not None and not _group_members(self.pgid):
                return True
            time.sleep(0.02)
        return False

    def kill(self) -> None:
        """``kill -9`` the whole process group (a crash: nothing gets to clean up)."""
        self._signal_group(signal.SIGKILL)
        self.proc.wait(timeout=STOP_TIMEOUT)
        if not self.wait_group_gone():
            raise AssertionError(f"processes {_group_members(self.pgid)} survived SIGKILL")
        self._log_file.close()

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM the group, then SIGKILL whatever is left after ``timeout``. The leader's
        exit code if it exited on SIGTERM, else None."""
        code: int | None = None
        try:
            if self.proc.poll() is None:
                self._signal_group(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    code = self.proc.wait(timeout=timeout)
            else:
                code = self.proc.returncode
            if not self.wait_group_gone(timeout=timeout if code is None else 2.0):
                code = None
        finally:
            self._signal_group(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
            self.wait_group_gone()
            self._log_file.close()
        return code

    def wait_live(self, timeout: float = START_TIMEOUT) -> None:
        self._wait_for("/health/live", timeout)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        body: dict[str, Any] = self._wait_for("/health/ready", timeout).json()
        return body

    def _wait_for(self, path: str, timeout: float) -> httpx.Response:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"server exited with {self.proc.returncode} before {path} answered 200; "
                    f"log:\n{self.log()[-4000:]}"
                )
            try:
                response = self.get(path, timeout=1.0)
                if response.status_code == 200:
                    return response
                last = f"{response.status_code} {response.text}"
            except httpx.TransportError as exc:
                last = repr(exc)
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{path} did not answer 200 within {timeout:g} s (last: {last}); "
                    f"log:\n{self.log()[-4000:]}"
                )
            time.sleep(0.05)


def assert_all_workers_serve(server: ServerProcess, version: int, timeout: float = 10.0) -> None:
    """Within ``timeout``: five rounds in a row of eight concurrent /health/ready requests (each
    on a new connection, so that every worker gets some) all report ``version``, and every
    worker process answered some of those rounds (per the metrics file each one writes)."""
    ready = ("GET", "/health/ready", "200")

    def counts() -> dict[int, float]:
        return {pid: c.get(ready, 0.0) for pid, c in server.requests_per_process().items()}

    workers = server.worker_pids()
    assert workers, "a server with several workers"
    deadline = time.monotonic() + timeout
    streak, baseline, answers = 0, counts(), []
    with ThreadPoolExecutor(max_workers=8) as pool:
        while True:
            assert time.monotonic() < deadline, f"no convergence on {version}: {answers}"
            responses = list(pool.map(lambda _: server.get("/health/ready"), range(8)))
            answers = [r.json().get("version") for r in responses]
            if all(r.status_code == 200 for r in responses) and set(answers) == {version}:
                streak += 1
            else:
                streak, baseline = 0, counts()
            if streak >= 5:
                now = counts()
                if all(now.get(pid, 0.0) > baseline.get(pid, 0.0) for pid in workers):
                    return
            time.sleep(0.02)


def start_server(
    store: Path,
    log_dir: Path,
    *args: str,
    ready: bool = True,
    env: dict[str, str] | None = None,
    port: int | None = None,
) -> ServerProcess:
    """Start ``python -m service`` on a free port and wait until it is live (and ready, if
    ``ready``). Extra ``args`` are passed through (e.g. ``"--workers", "2"``)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    attempts = 1 if port is not None else 3
    for attempt in range(attempts):
        chosen = port if port is not None else free_port()
        stem = f"server-{chosen}-{time.monotonic_ns()}"
        log_path, tmp_dir = log_dir / f"{stem}.log", log_dir / f"{stem}-tmp"
        command = [
            sys.executable,
            "-m",
            "service",
            "--host",
            "127.0.0.1",
            "--port",
            str(chosen),
            "--store",
            str(store),
            "--log-level",
            "warning",
            # These suites check each update against the core's step on the whole minibatch:
            # no row held out for the guard set unless a test asks (a later flag wins). The
            # holdout is tested in test_guard_server.py.
            "--holdout-every",
            "0",
            *args,
        ]
        log_file = open(log_path, "wb")  # noqa: SIM115  closed by stop() or kill()
        proc = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env if env is not None else child_env(tmp_dir),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        server = ServerProcess(proc, chosen, log_path, command, tmp_dir, log_file)
        try:
            server.wait_live()
            if ready:
                server.wait_ready()
        except BaseException:
            server.stop()
            # Another process may have taken the port between free_port() and bind().
            if attempt + 1 < attempts and "address already in use" in server.log().lower():
                continue
            raise
        return server
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.contextmanager
def running_server(
    store: Path, log_dir: Path, *args: str, ready: bool = True, **kwargs: Any
) -> Iterator[ServerProcess]:
    """:func:`start_server`, stopped (SIGTERM, then SIGKILL) on exit whatever happens."""
    server = start_server(store, log_dir, *args, ready=ready, **kwargs)
    try:
        yield server
    finally:
        server.stop()
