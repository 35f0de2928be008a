"""Real containers for the image tests: podman, a cached base image, the project's image.

No Docker engine runs on the development and CI machines, but Debian's ``podman`` and
``runc`` do, as root, with these settings (each one needed on this machine class):

- ``podman build --isolation=chroot``: the sandbox cannot create cgroups;
  ``--format docker`` keeps the Dockerfile's ``HEALTHCHECK`` (the OCI format drops it);
- ``podman --runtime runc``: crun fails on the host's hybrid cgroups;
- ``podman run --network host --ulimit nofile=4096:4096 --ulimit nproc=4096:4096``: every
  port is on 127.0.0.1, and raising rlimits is not permitted, so they are pinned to what the
  host allows.

The base image (``PYTHON_IMAGE`` of the Dockerfile) is the official one named there when it
is present or a registry serves it; otherwise a Debian bookworm root file system made with
``debootstrap`` from the mirror apt is configured with, cached as a tarball under
``~/.cache/softmax-serve`` (``$IMAGE_TEST_CACHE``) and imported into podman's storage.

Every container and volume made here carries :data:`RUN_ID` in its name and is removed by
name by :class:`Podman`; nothing else is touched. The image's tag names the checkout it is
built from (:data:`IMAGE`), so that test runs of two checkouts on one machine never run each
other's image. ``python -m tests.integration.podman base``
makes (or finds) the base image and prints its name.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from .server import REPO_ROOT, free_port

__all__ = [
    "IMAGE",
    "LB_IMAGE",
    "RUN_ID",
    "Container",
    "Podman",
    "base_image",
    "build",
    "missing_tools",
    "require_tools",
]

IMAGE = f"localhost/softmax-serve:image-test-{hashlib.sha256(bytes(REPO_ROOT)).hexdigest()[:8]}"
LB_IMAGE = "localhost/softmax-serve-lb:image-test"
LB_CONTAINERFILE = Path(__file__).with_name("lb.Containerfile")
LOCAL_BASE = "localhost/debian-py311:bookworm"
SUITE = "bookworm"
BASE_PACKAGES = "python3.11,python3.11-venv,python3-pip,python-is-python3,ca-certificates"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Bump RECIPE_REVISION when make_rootfs_tarball changes: a cached base of another recipe is
# then made again (the tarball's name and the image's label carry the recipe's digest).
RECIPE_REVISION = 1
RECIPE = hashlib.sha256(f"{SUITE} {BASE_PACKAGES} {RECIPE_REVISION}".encode()).hexdigest()[:12]
RECIPE_LABEL = "softmax-serve.base-recipe"
RUN_ID = f"softmax-it-{os.getpid()}"

PODMAN = ("podman", "--runtime", "runc")
RUN_OPTIONS = (
    "--network=host",
    "--ulimit=nofile=4096:4096",
    "--ulimit=nproc=4096:4096",
)
BUILD_OPTIONS = ("--pull=never", "--network=host", "--isolation=chroot", "--format=docker")
INSTALL_HINT = (
    "as root: apt-get install podman runc debootstrap (.ci/run does it where it can), "
    "then make image-test"
)


def cache_dir() -> Path:
    configured = os.environ.get("IMAGE_TEST_CACHE")
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "softmax-serve"


def missing_tools() -> str | None:
    """None when the image tests can run here; otherwise one line: what is missing and how
    to get it. debootstrap is needed only when no base image can be had otherwise (see
    :func:`base_image`)."""
    absent = [tool for tool in ("podman", "runc") if shutil.which(tool) is None]
    if absent:
        return f"{' and '.join(absent)} not found; {INSTALL_HINT}"
    if os.geteuid() != 0:
        return f"the image tests run rootful podman and need root; {INSTALL_HINT}"
    if shutil.which("debootstrap") is None and not base_available():
        return (
            f"debootstrap not found, and no base image without it ({official_base()} neither "
            f"present nor pullable, none cached in {cache_dir()}, IMAGE_TEST_BASE unset); "
            f"{INSTALL_HINT}"
        )
    return None


def require_tools() -> None:
    """Skip the calling test module, with :func:`missing_tools`' line, where the image tests
    cannot run; with ``IMAGE_TEST_REQUIRED=1`` (``make image-test``) fail instead."""
    missing = missing_tools()
    if missing is None:
        return
    if os.environ.get("IMAGE_TEST_REQUIRED") == "1":
        raise RuntimeError(f"image tests required but cannot run: {missing}")
    pytest.skip(f"image tests: {missing}", allow_module_level=True)


def run(
    argv: Sequence[str], *, timeout: float = 120.0, check: bool = True, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run a command, output captured; on failure (with ``check``) say what it printed."""
    done = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited with {done.returncode}:\n{done.stdout[-3000:]}"
            f"\n{done.stderr[-3000:]}"
        )
    return done


def podman(*args: str, timeout: float = 120.0, check: bool = True) -> str:
    return run([*PODMAN, *args], timeout=timeout, check=check).stdout


def image_exists(name: str) -> bool:
    return run([*PODMAN, "image", "exists", name], check=False).returncode == 0


# --------------------------------------------------------------------------------------
# The base image.
# --------------------------------------------------------------------------------------


def official_base() -> str:
    """The Dockerfile's default ``PYTHON_IMAGE`` (a Docker Hub tag)."""
    from .test_container import DOCKERFILE, stages

    return stages(DOCKERFILE.read_text())[0].base


def debian_mirror() -> str:
    """The Debian mirror apt is configured with here (read from apt, never written down)."""
    listed = run(
        [
            "apt-get",
            "indextargets",
            "--format",
            "$(RELEASE) $(REPO_URI)",
            "Created-By: Packages",
        ]
    ).stdout
    for line in listed.splitlines():
        release, _, uri = line.partition(" ")
        if release == SUITE and uri:
            return uri
    raise AssertionError(f"apt has no {SUITE} source configured:\n{listed}")


def host_pip_settings() -> dict[str, str]:
    """The index pip uses on this host (``PIP_INDEX_URL`` or pip's config), for the build."""
    settings = {}
    for key in ("index-url", "trusted-host"):
        value = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if not value:
            done = run([sys.executable, "-m", "pip", "config", "get", "global." + key], check=False)
            value = done.stdout.strip() if done.returncode == 0 else ""
        if value:
            settings[key] = value
    return settings


def make_rootfs_tarball(tarball: Path) -> None:
    """debootstrap a minimal bookworm with Python 3.11, trim it, and tar it to ``tarball``."""
    if shutil.which("debootstrap") is None:
        raise FileNotFoundError(f"debootstrap not found; {INSTALL_HINT}")
    with tempfile.TemporaryDirectory(dir=tarball.parent, prefix="rootfs-") as work:
        rootfs = Path(work) / "rootfs"
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={BASE_PACKAGES}",
                SUITE,
                str(rootfs),
                debian_mirror(),
            ],
            timeout=900,
        )
        # pip inside the build reaches the package index only through the host's CA bundle
        # (and its index settings, if it has any).
        if HOST_CA_BUNDLE.exists():
            shutil.copyfile(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
        pip_settings = host_pip_settings()
        if pip_settings:
            lines = ["[global]", *(f"{key} = {value}" for key, value in pip_settings.items())]
            (rootfs / "etc/pip.conf").write_text("\n".join(lines) + "\n")
        # What an image does not need: downloaded packages, apt lists, manuals, translations.
        for pattern in (
            "var/cache/apt/archives/*.deb",
            "var/cache/apt/*.bin",
            "var/lib/apt/lists/*",
            "usr/share/man/*",
            "usr/share/info/*",
            "usr/share/locale/*",
        ):
            for path in rootfs.glob(pattern):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                elif path.name != "lock":
                    path.unlink()
        for path in (rootfs / "usr/share/doc").rglob("*"):
            if path.is_file() and path.name != "copyright":
                path.unlink()
        partial = tarball.with_suffix(".partial")
        run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], timeout=300)
        partial.replace(tarball)


def local_tarball() -> Path:
    """Where the locally made base is cached (its name carries the recipe's digest)."""
    return cache_dir() / f"debian-py311-{SUITE}-{RECIPE}.tar"


def local_base_imported() -> bool:
    """Whether podman's storage holds :data:`LOCAL_BASE` made by the current recipe."""
    if not image_exists(LOCAL_BASE):
        return False
    labels = json.loads(podman("image", "inspect", LOCAL_BASE))[0].get("Labels") or {}
    return bool(labels.get(RECIPE_LABEL) == RECIPE)


def local_base() -> str:
    """:data:`LOCAL_BASE` in podman's storage: imported from the cached tarball, which is
    made first if it is missing. One process at a time (a lock in the cache folder)."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    tarball = local_tarball()
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if local_base_imported():
            return LOCAL_BASE
        if not tarball.exists():
            make_rootfs_tarball(tarball)
            for stale in folder.glob(f"debian-py311-{SUITE}*.tar"):
                if stale != tarball:
                    stale.unlink()  # a base of an earlier recipe
        podman(
            "import",
            f"--change=LABEL {RECIPE_LABEL}={RECIPE}",
            "--change=ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change=ENV LANG=C.UTF-8",
            '--change=CMD ["python3"]',
            str(tarball),
            LOCAL_BASE,
            timeout=300,
        )
    return LOCAL_BASE


def official_base_present() -> bool:
    """Whether the official base is in podman's storage, pulling it if a registry serves it."""
    official = official_base()
    if image_exists(official):
        return True
    return run([*PODMAN, "pull", "--quiet", official], timeout=300, check=False).returncode == 0


def base_available() -> bool:
    """Whether :func:`base_image` finds a base without making one (which needs debootstrap)."""
    return bool(
        os.environ.get("IMAGE_TEST_BASE")
        or local_tarball().exists()
        or local_base_imported()
        or official_base_present()
    )


def base_image() -> str:
    """``$IMAGE_TEST_BASE`` if set; else the official base if present or pullable; else the
    locally made Debian base (made and cached if missing)."""
    chosen = os.environ.get("IMAGE_TEST_BASE")
    if chosen:
        return chosen
    if official_base_present():
        return official_base()
    return local_base()


# --------------------------------------------------------------------------------------
# Builds.
# --------------------------------------------------------------------------------------


def build(
    tag: str,
    base: str,
    log_path: Path,
    *,
    context: Path = REPO_ROOT,
    containerfile: Path | None = None,
    build_arg: str = "PYTHON_IMAGE",
) -> None:
    """``podman build`` (layers cached between runs); its output goes to ``log_path``."""
    argv = [*PODMAN, "build", *BUILD_OPTIONS, f"--build-arg={build_arg}={base}", "-t", tag]
    if containerfile is not None:
        argv += ["-f", str(containerfile)]
    with log_path.open("w") as log:
        done = subprocess.run(
            [*argv, str(context)], stdout=log, stderr=subprocess.STDOUT, timeout=900, check=False
        )
    if done.returncode != 0:
        raise AssertionError(
            f"podman build of {tag} failed ({done.returncode}):\n"
            + log_path.read_text(errors="replace")[-4000:]
        )


def image_size(name: str) -> int:
    return int(podman("image", "inspect", "--format", "{{.Size}}", name).strip())


def image_config(name: str) -> dict[str, Any]:
    """The image's run-time configuration, with its health check under ``Healthcheck``."""
    inspected = json.loads(podman("image", "inspect", name))[0]
    config: dict[str, Any] = inspected["Config"]
    return config | {"Healthcheck": inspected.get("Healthcheck")}


# --------------------------------------------------------------------------------------
# Containers and volumes.
# --------------------------------------------------------------------------------------


@dataclass
class Container:
    """One container started with :meth:`Podman.start`; ``port`` is where it listens."""

    name: str
    port: int | None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> httpx.Client:
        """A pooled client (``trust_env=False``: no proxy from the environment)."""
        kwargs.setdefault("timeout", 30.0)
        return httpx.Client(base_url=self.base_url, trust_env=False, **kwargs)

    def get(self, path: str, timeout: float = 5.0) -> httpx.Response:
        return httpx.get(self.base_url + path, timeout=timeout, trust_env=False)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        kwargs.setdefault("timeout", 30.0)
        return httpx.post(self.base_url + path, trust_env=False, **kwargs)

    def inspect(self, template: str) -> str:
        return podman("inspect", "--format", template, self.name).strip()

    def running(self) -> bool:
        return self.inspect("{{.State.Running}}") == "true"

    def logs(self) -> str:
        done = run([*PODMAN, "logs", self.name], check=False)
        return done.stdout + done.stderr

    def healthcheck(self) -> tuple[int, str]:
        """The image's HEALTHCHECK command, run by podman inside the container: its exit
        code and what it printed (from the container's health log)."""
        done = run([*PODMAN, "healthcheck", "run", self.name], check=False, timeout=60)
        if not self.running():
            return done.returncode, f"{self.name} is not running: {done.stderr.strip()}"
        log = json.loads(self.inspect("{{json .State.Health}}"))["Log"]
        assert log and log[-1]["ExitCode"] == done.returncode, log
        return done.returncode, str(log[-1]["Output"]).strip()

    def exec(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return run([*PODMAN, "exec", self.name, *argv], check=False)

    def host_uid(self) -> int:
        """The real uid of the container's main process, read from the host's /proc."""
        pid = int(self.inspect("{{.State.Pid}}"))
        status = Path(f"/proc/{pid}/status").read_text()
        match = re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE)
        assert match, status
        return int(match[1])

    def signal(self, name: str) -> None:
        podman("kill", f"--signal={name}", self.name)

    def wait_exit(self, timeout: float) -> int:
        """The exit code, once the container stopped (fails after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while self.running():
            assert time.monotonic() < deadline, f"{self.name} still running after {timeout:g} s"
            time.sleep(0.05)
        return int(self.inspect("{{.State.ExitCode}}"))

    def wait_http(self, path: str, timeout: float = 30.0, status: int = 200) -> httpx.Response:
        """Poll ``path`` until it answers ``status``; fail with the logs if it does not, or
        if the container exits."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            try:
                response = self.get(path, timeout=2.0)
                if response.status_code == status:
                    return response
                last = f"{response.status_code} {response.text}"
            except httpx.TransportError as error:
                last = repr(error)
            if time.monotonic() >= deadline or not self.running():
                raise AssertionError(
                    f"{self.name}: {path} did not answer {status} within {timeout:g} s "
                    f"(last: {last}); running: {self.running()}; logs:\n{self.logs()[-4000:]}"
                )
            time.sleep(0.1)


@dataclass
class Podman:
    """Starts containers and volumes named ``<RUN_ID>-<name>`` and removes exactly those."""

    containers: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)

    def volume(self, name: str) -> str:
        full = f"{RUN_ID}-{name}"
        podman("volume", "create", full)
        self.volumes.append(full)
        return full

    def volume_path(self, volume: str) -> Path:
        """Where a (rootful, local) volume's files are on the host."""
        return Path(podman("volume", "inspect", "--format", "{{.Mountpoint}}", volume).strip())

    def run_once(
        self, image: str, *args: str, options: Sequence[str] = (), timeout: float = 300.0
    ) -> subprocess.CompletedProcess[str]:
        """``podman run --rm``: a one-shot command, e.g. the training CLI."""
        argv = [*PODMAN, "run", "--rm", *RUN_OPTIONS, *options, image, *args]
        return run(argv, timeout=timeout, check=False)

    def start(
        self,
        name: str,
        image: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        options: Sequence[str] = (),
        port: int | None = None,
    ) -> Container:
        """``podman run -d`` on the host network. ``port`` (default: a free one) is passed as
        ``SOFTMAX_PORT``, over any value in ``env``: containers on the host network cannot
        all listen on the port the image (or the compose file) names."""
        full = f"{RUN_ID}-{name}"
        port = port if port is not None else free_port()
        environment = {**(env or {}), "SOFTMAX_PORT": str(port)}
        env_args = [f"--env={key}={value}" for key, value in environment.items()]
        self.containers.append(full)
        argv = [*PODMAN, "run", "--detach", f"--name={full}", *RUN_OPTIONS, *env_args]
        run([*argv, *options, image, *args])
        return Container(full, port)

    def remove_all(self) -> None:
        for name in reversed(self.containers):
            # --volumes: also the anonymous volume of the image's VOLUME, when none was named
            run([*PODMAN, "rm", "--force", "--volumes", "--time=0", name], check=False)
        for volume in reversed(self.volumes):
            run([*PODMAN, "volume", "rm", "--force", volume], check=False)
        self.containers.clear()
        self.volumes.clear()


@contextlib.contextmanager
def podman_session() -> Iterator[Podman]:
    session = Podman()
    try:
        yield session
    finally:
        session.remove_all()


if __name__ == "__main__":
    if sys.argv[1:] != ["base"]:
        sys.exit("usage: python -m tests.integration.podman base")
    print(base_image())
