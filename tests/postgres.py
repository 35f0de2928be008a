"""A real PostgreSQL server for the tests, started here and removed afterwards.

The server binaries come from the ``pgserver`` wheel (a dev dependency: PostgreSQL 16 built
for manylinux, nothing installed by hand), else from the system's PostgreSQL when present.
``initdb`` and ``postgres`` refuse to run as root: when the tests run as root, the server runs
as the unprivileged user ``nobody`` (its data directory is handed to that user; if the
binaries are not reachable by it, e.g. in a venv under ``/root``, they are copied first).

The server listens on 127.0.0.1 on a free port, with trust authentication (loopback only),
and its whole directory is deleted by :meth:`PostgresServer.remove`. Nothing here ends a
process it did not start.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg

__all__ = ["PostgresServer", "find_binaries", "running_postgres"]


def find_binaries() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or None."""
    # Found, not imported: importing pgserver sets up its own server machinery.
    spec = importlib.util.find_spec("pgserver")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "pginstall" / "bin"
        if (candidate / "postgres").exists():
            return candidate
    for pattern in ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin"):
        for found in sorted(glob.glob(pattern), reverse=True):
            if Path(found, "postgres").exists():
                return Path(found)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One throw-away PostgreSQL cluster in a temporary directory."""

    def __init__(self, binaries: Path) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="softmax-pg-"))
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._user = pwd.getpwnam("nobody") if os.geteuid() == 0 else None
        if self._user is not None:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        self.binaries = self._reachable(binaries)
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def _reachable(self, binaries: Path) -> Path:
        """The binaries, copied where the server's user can run them if it cannot as is."""
        if self._user is None:
            return binaries
        try:
            probe = subprocess.run(
                [str(binaries / "postgres"), "--version"],
                preexec_fn=self._demote,
                cwd=self.root,
                capture_output=True,
                check=False,
            )
            if probe.returncode == 0:
                return binaries
        except PermissionError:
            pass
        # The wheel's binaries find their libraries at $ORIGIN/../../../pgserver.libs: copy
        # that layout (site-packages/pgserver/pginstall and site-packages/pgserver.libs).
        copy = self.root / "site"
        install = copy / binaries.parent.parent.name / binaries.parent.name
        shutil.copytree(binaries.parent, install, symlinks=True)
        libs = binaries.parent.parent.parent / "pgserver.libs"
        if libs.is_dir():
            shutil.copytree(libs, copy / libs.name, symlinks=True)
        for path in [copy, *copy.rglob("*")]:
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | 0o055)
        return install / "bin"

    def _demote(self) -> None:
        if self._user is not None:
            os.setgid(self._user.pw_gid)
            os.setuid(self._user.pw_uid)

    def _env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run(
            [str(self.binaries / tool), *args],
            preexec_fn=self._demote,
            env=self._env(),
            cwd=self.root,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed: {result.stderr.strip()[-2000:]}")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url_of(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (again, after :meth:`stop`) and wait until it takes connections."""
        if self.process is not None and self.process.poll() is None:
            return  # running already
        log = open(self.log, "ab")  # noqa: SIM115  # the server writes to it while it runs
        self.process = subprocess.Popen(
            [
                str(self.binaries / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.root}",
                "-c",
                "max_connections=200",
                "-c",
                "fsync=on",
            ],
            preexec_fn=self._demote,
            env=self._env(),
            cwd=self.root,
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"PostgreSQL did not start: {self.log.read_text()[-2000:]}"
                    ) from None
                time.sleep(0.05)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clean) or ``immediate`` (no shutdown checkpoint: crash
        recovery on the next start, as after a power cut of the server)."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGQUIT if mode == "immediate" else signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self.process = None

    def create_database(self) -> str:
        """A new empty database; its address."""
        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url_of(name)

    def remove(self) -> None:
        # Immediate: a clean stop's checkpoint would write out every test database only for
        # the directory to be deleted.
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A started server, removed on exit (RuntimeError without binaries: the dev extra
    installs them, so their absence is a broken install, not a reason to skip)."""
    binaries = find_binaries()
    if binaries is None:
        raise RuntimeError(
            "no PostgreSQL server binaries: pip install -e '.[dev]' (it brings pgserver)"
        )
    server = PostgresServer(binaries)
    try:
        server.start()
        yield server
    finally:
        server.remove()
