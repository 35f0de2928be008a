"""The image, built from the Dockerfile and run for real with podman (``make image-test``).

Everything here starts real containers on the host network (127.0.0.1 only) with Debian's
podman and runc; see :mod:`tests.integration.podman` for the settings this machine class
needs and for the base image. The module is skipped, with one line saying what is missing
and how to get it, where podman or runc is absent, the user is not root, or no base image
can be had without debootstrap and debootstrap is absent; ``IMAGE_TEST_REQUIRED=1`` (set by
``make image-test``) turns that skip into an error.

- The image: configuration as built (non-root user, HEALTHCHECK kept), contents (only the
  runtime venv: no build tools, caches, sources or tests), size; every runtime requirement
  installed at an accepted version, and each of its modules importable in the image.
- The training CLI writes into a named volume, as the compose file's ``train`` service.
- Every setting passed to a container by its environment, each one's effect seen from
  outside, in two containers: one non-root, its HEALTHCHECK failing before a model exists
  and passing once the CLI trained one, /predict and /train from the host, SIGTERM ending it
  within seconds with exit code 0; the other with named keys (a mounted keys file, JSON), an
  enforcing guard with its thresholds, hold-out, online momentum and drift settings.
- SIGKILL of a container during a stream of /train: every acknowledged update is on the
  volume, and the restarted container serves it.
- Scale-out: the compose file resolved by podman-compose (profile ``scale``), its services
  started by this test with podman (images, volume, environment, commands and hardening as
  resolved; ports and nginx's upstream rewritten for the host network), replicas behind
  nginx: exact version arithmetic under concurrent writers through the load balancer, every
  replica serving the same weights within the reload interval plus ``RELOAD_MARGIN`` of the
  last acknowledgement, and one replica killed while the others keep answering.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from prometheus_client.parser import text_string_to_metric_families

from service.config import ENV_PREFIX, Settings

from .checks import Minibatch, StoreOracle, digits_minibatches
from .clients import TrainStream
from .podman import (
    IMAGE,
    LB_CONTAINERFILE,
    LB_IMAGE,
    Container,
    Podman,
    base_image,
    build,
    image_config,
    image_size,
    podman,
    podman_session,
    require_tools,
)
from .server import REPO_ROOT, free_port, wait_until
from .test_container import COMPOSE_FILE
from .test_crash import check_store_after_crash

require_tools()

# The first test also waits for the base image (about a minute when it must be made with
# debootstrap) and the build: more than the suite's 300 s may be needed on a slow mirror.
pytestmark = [pytest.mark.image, pytest.mark.timeout(900)]

API_KEY = "image-test-key"
UID = 10001
STOP_WITHIN = 5.0  # seconds from SIGTERM to exit
# 254 MB before pyarrow (0.3, issue 14: the training CLI's table reader, 170 MB installed).
MAX_IMAGE_BYTES = 450_000_000
REPLICAS = 3
RELOAD_INTERVAL = 0.5  # seconds, the scale test's SOFTMAX_RELOAD_INTERVAL
# Seconds beyond the reload interval for a replica to serve a version another one wrote:
# its poll finds the version, it loads it (replaying the updates since the last snapshot)
# and answers over HTTP, on a shared 2-core machine running three replicas and nginx.
RELOAD_MARGIN = 1.0
WRITERS, UPDATES_PER_WRITER = 4, 10


def report(request: pytest.FixtureRequest, line: str) -> None:
    """A line in pytest's own output (figures that a reader of ``make image-test`` wants)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"[image] {line}")


# --------------------------------------------------------------------------------------
# Fixtures: one build per module, containers and volumes removed by name at the end.
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def session() -> Iterator[Podman]:
    with podman_session() as podman:
        yield podman


@pytest.fixture(scope="module")
def base(request: pytest.FixtureRequest) -> str:
    started = time.monotonic()
    name = base_image()
    report(request, f"base image {name} ready in {time.monotonic() - started:.1f} s")
    return name


@pytest.fixture(scope="module")
def image(
    request: pytest.FixtureRequest, base: str, tmp_path_factory: pytest.TempPathFactory
) -> str:
    started = time.monotonic()
    build(IMAGE, base, tmp_path_factory.mktemp("build") / "build.log")
    seconds = time.monotonic() - started
    report(request, f"{IMAGE} built in {seconds:.1f} s: {image_size(IMAGE) / 1e6:.1f} MB")
    return IMAGE


@pytest.fixture(scope="module")
def lb_image(base: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    context = tmp_path_factory.mktemp("build-lb")  # nothing is copied into this image
    log = context / "build.log"
    build(
        LB_IMAGE, base, log, context=context, containerfile=LB_CONTAINERFILE, build_arg="BASE_IMAGE"
    )
    return LB_IMAGE


@pytest.fixture(scope="module")
def shell_env() -> dict[str, str]:
    """The shell the compose file is used from: what it interpolates and passes through."""
    return {
        "SOFTMAX_REPLICAS": str(REPLICAS),
        "SOFTMAX_RELOAD_INTERVAL": str(RELOAD_INTERVAL),
        "SOFTMAX_API_KEY": API_KEY,
    }


@pytest.fixture(scope="module")
def compose(shell_env: dict[str, str]) -> dict[str, Any]:
    """docker-compose.yml as podman-compose resolves it with every profile."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOFTMAX_")}
    argv = [sys.executable, "-m", "podman_compose", "-f", str(COMPOSE_FILE)]
    argv += ["--profile", "train", "--profile", "scale", "config"]
    done = subprocess.run(
        argv, env=env | shell_env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"podman-compose config failed:\n{done.stderr}"
    resolved = yaml.safe_load(done.stdout)
    assert isinstance(resolved, dict)
    return resolved


def service_env(service: Mapping[str, Any], shell: Mapping[str, str]) -> dict[str, str]:
    """A compose service's environment; a key without a value comes from the shell, if set."""
    env = {}
    for key, value in (service.get("environment") or {}).items():
        if value is None:
            if key in shell:
                env[key] = shell[key]
        else:
            env[key] = str(value)
    return env


def service_options(service: Mapping[str, Any], volume: str) -> list[str]:
    """``podman run`` options for what a compose service says besides image, environment
    and command: the store volume and the hardening (read-only root, tmpfs, capabilities)."""
    options = []
    for mount in service.get("volumes") or []:
        source, _, target = mount.partition(":")
        assert source == "artifacts", f"unexpected volume {mount!r}"
        options.append(f"--volume={volume}:{target}")
    if service.get("read_only"):
        options.append("--read-only")
    options += [f"--tmpfs={path}" for path in service.get("tmpfs") or []]
    options += [f"--cap-drop={cap}" for cap in service.get("cap_drop") or []]
    options += [f"--security-opt={opt}" for opt in service.get("security_opt") or []]
    entrypoint = service.get("entrypoint")
    if entrypoint:
        options.append("--entrypoint=" + json.dumps(entrypoint))
    return options


def train_into(session: Podman, image: str, compose: Mapping[str, Any], volume: str) -> str:
    """The compose file's ``train`` service: the training CLI into ``volume``; its output."""
    train = compose["services"]["train"]
    done = session.run_once(image, *train["command"], options=service_options(train, volume))
    assert done.returncode == 0, f"training CLI failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def wait_healthy(container: Container, timeout: float = 30.0) -> str:
    """Run the image's HEALTHCHECK until it passes; its output line."""
    outputs: list[str] = []

    def passes() -> bool:
        code, output = container.healthcheck()
        outputs.append(output)
        return code == 0

    try:
        wait_until(passes, timeout, interval=0.2, what=f"{container.name} to be healthy")
    except AssertionError as error:
        raise AssertionError(f"{error}; last: {outputs[-2:]}; logs:\n{container.logs()}") from None
    return outputs[-1]


def digits_rows(count: int) -> list[list[float]]:
    return [batch.X[0].tolist() for batch in digits_minibatches(count, rows=1, seed=7)]


def counter(metrics_text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (0 when absent)."""
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


# --------------------------------------------------------------------------------------
# The image itself.
# --------------------------------------------------------------------------------------

CONTENTS_PROBE = """
import json, os, shutil, sys
site = next(p for p in sys.path if p.endswith("site-packages"))
tests = [root for root, dirs, _ in os.walk(site) if os.path.basename(root) == "tests"]
print(json.dumps({
    "python": sys.executable,
    "prefix": sys.prefix,
    "tools": [t for t in ("gcc", "cc", "make", "git", "curl") if shutil.which(t)],
    "venv_pip": os.path.exists(os.path.join(sys.prefix, "bin", "pip")),
    "leftovers": [p for p in ("/src", "/wheels", "/root/.cache", "/data/artifacts/digits")
                  if os.path.exists(p)],
    "tests": tests[:5],
    "source_tree": os.path.exists("/data/model") or os.path.exists("/data/service"),
    "uid": os.getuid(),
}))
"""


def test_image_runs_as_non_root_with_its_healthcheck_and_only_the_runtime(
    request: pytest.FixtureRequest, session: Podman, image: str
) -> None:
    config = image_config(image)
    assert config.get("User") == f"{UID}:{UID}", "the image would run as root"
    healthcheck = config["Healthcheck"] or {}
    assert healthcheck.get("Test") == ["CMD", "python", "-m", "service.healthcheck"], (
        "the HEALTHCHECK is not in the built image (built without --format docker?)"
    )
    assert config["Entrypoint"] == ["python", "-m", "service"]
    assert "SOFTMAX_HOST=0.0.0.0" in config["Env"]

    done = session.run_once(image, "-c", CONTENTS_PROBE, options=["--entrypoint=python"])
    assert done.returncode == 0, done.stderr
    contents = json.loads(done.stdout)
    assert contents["prefix"] == "/opt/venv" and contents["uid"] == UID
    assert contents["tools"] == [], f"build tools in the final image: {contents['tools']}"
    assert not contents["venv_pip"], "pip inside the runtime venv"
    assert contents["leftovers"] == [], f"build leftovers: {contents['leftovers']}"
    assert contents["tests"] == [], f"test suites in site-packages: {contents['tests']}"
    assert not contents["source_tree"]

    size = image_size(image)
    report(request, f"image size {size / 1e6:.1f} MB (bound {MAX_IMAGE_BYTES / 1e6:.0f} MB)")
    assert size < MAX_IMAGE_BYTES


# The installed distributions and the marker environment of the image's interpreter (what
# packaging.markers.default_environment computes), for a `pip check` from the outside.
REQUIREMENTS_PROBE = """
import importlib.metadata as metadata, json, os, platform, sys
info = sys.implementation.version
implementation = f"{info.major}.{info.minor}.{info.micro}"
if info.releaselevel != "final":
    implementation += info.releaselevel[0] + str(info.serial)
print(json.dumps({
    "installed": {d.metadata["Name"]: [d.version, d.requires or []]
                  for d in metadata.distributions()},
    "environment": {
        "implementation_name": sys.implementation.name,
        "implementation_version": implementation,
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "platform_python_implementation": platform.python_implementation(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    },
}))
"""


def walk_requirements(
    installed: Mapping[str, tuple[str, list[str]]], environment: dict[str, str], root: str
) -> tuple[list[str], set[str]]:
    """Requirements of ``root``, followed through extras and markers, that the installed
    distributions do not satisfy (what ``pip check`` reports, from ``root`` down), and the
    canonical names of the distributions reached (``root`` included)."""
    by_name = {canonicalize_name(name): entry for name, entry in installed.items()}
    unmet: list[str] = []
    todo, seen = [(root, frozenset[str]())], set()
    while todo:
        name, extras = todo.pop()
        if (canonicalize_name(name), extras) in seen:
            continue
        seen.add((canonicalize_name(name), extras))
        for text in by_name[canonicalize_name(name)][1]:
            requirement = Requirement(text)
            marker = requirement.marker
            wanted = extras | {""}
            if marker and not any(marker.evaluate(environment | {"extra": e}) for e in wanted):
                continue
            found = by_name.get(canonicalize_name(requirement.name))
            if found is None or not requirement.specifier.contains(found[0], prereleases=True):
                unmet.append(f"{name} needs {requirement}, found {found[0] if found else None}")
            else:
                todo.append((requirement.name, frozenset(requirement.extras)))
    return unmet, {name for name, _ in seen}


# Imports, in the image, every top-level module of the distributions named in argv[1] (a
# JSON list of canonical names), as their installed metadata lists them: a module deleted
# with its metadata kept, or a compiled one that cannot load, fails here, where uvicorn
# would silently fall back (to h11 without httptools, to asyncio without uvloop).
IMPORT_PROBE = """
import importlib, importlib.metadata as metadata, json, re, sys
modules = {name: [] for name in json.loads(sys.argv[1])}
for module, distributions in metadata.packages_distributions().items():
    for distribution in distributions:
        canonical = re.sub(r"[-_.]+", "-", distribution).lower()
        if canonical in modules and module not in modules[canonical]:
            modules[canonical].append(module)
failed = {}
for distribution, names in sorted(modules.items()):
    if not names:
        failed[distribution] = "its metadata lists no importable module"
    for module in sorted(names):
        try:
            importlib.import_module(module)
        except Exception as error:
            failed[module] = f"{distribution}: {type(error).__name__}: {error}"
print(json.dumps({"modules": modules, "failed": failed}))
"""


def test_image_holds_every_runtime_requirement(session: Podman, image: str) -> None:
    """Every package softmax-serve needs (uvicorn's "standard" extras too) is in the image,
    at a version its dependents accept, and every module of them imports, so nothing runs
    on a silent fallback."""
    done = session.run_once(image, "-c", REQUIREMENTS_PROBE, options=["--entrypoint=python"])
    assert done.returncode == 0, done.stderr
    probed = json.loads(done.stdout)
    unmet, required = walk_requirements(probed["installed"], probed["environment"], "softmax-serve")
    assert unmet == []
    # uvicorn[standard]'s accelerators among them: the check covers what falls back silently.
    assert {"httptools", "uvloop", "orjson", "watchfiles", "websockets"} <= required

    argv = ["-c", IMPORT_PROBE, json.dumps(sorted(required))]
    done = session.run_once(image, *argv, options=["--entrypoint=python"])
    assert done.returncode == 0, done.stderr
    imported = json.loads(done.stdout)
    assert imported["failed"] == {}, f"modules that do not import in the image: {imported}"
    assert {"httptools", "uvloop", "model", "service"} <= {
        module for names in imported["modules"].values() for module in names
    }


def test_training_cli_writes_into_a_named_volume(
    session: Podman, image: str, compose: dict[str, Any]
) -> None:
    volume = session.volume("cli")
    output = train_into(session, image, compose, volume)
    assert "model digits version 1 written to /data/artifacts" in output
    store = session.volume_path(volume)
    assert StoreOracle(store, "digits").versions() == [1]
    assert {path.stat().st_uid for path in (store / "digits").iterdir()} == {UID}
    # --if-store-empty: the second run finds the model and writes nothing.
    train_into(session, image, compose, volume)
    assert StoreOracle(store, "digits").versions() == [1]


# --------------------------------------------------------------------------------------
# One service container, configured by its environment.
# --------------------------------------------------------------------------------------

SETTINGS = {
    "SOFTMAX_WORKERS": "2",
    "SOFTMAX_MODEL": "digits",
    "SOFTMAX_API_KEY": API_KEY,
    "SOFTMAX_MAX_BODY_BYTES": "100000",
    "SOFTMAX_MAX_ROWS": "20",
    "SOFTMAX_MAX_LEARNING_RATE": "0.5",
    "SOFTMAX_MAX_PASSES": "3",
    "SOFTMAX_RELOAD_INTERVAL": "0.2",
    "SOFTMAX_KEEP_LAST": "2",
    "SOFTMAX_SNAPSHOT_EVERY": "2",
    "SOFTMAX_METRICS_WINDOW": "16",
    "SOFTMAX_LOCK_TIMEOUT": "1",
    "SOFTMAX_LOG_LEVEL": "warning",
    # The batches below carry arbitrary labels (the test is about settings, not learning):
    # the guard judges and records them but refuses none.
    "SOFTMAX_GUARD_MODE": "log",
    "SOFTMAX_MODELS_MEMORY_BYTES": "1",  # every model the /v2 routes load unloads the last
    "SOFTMAX_DASHBOARD_REQUIRES_KEY": "true",
    "SOFTMAX_DASHBOARD_REFRESH": "3.5",
}
# The other settings, in a second container (its guard enforces, its keys are named): each
# is a value other than its default. GUARD_MIN_ROWS is set from the offline guard set.
KEYS_FILE = "/run/softmax/keys.toml"
KEYS_TOML = """
[feeder]
key = "feeder-key"
permissions = ["train"]

[reader]
key = "reader-key"
permissions = ["predict"]
"""
INLINE_KEYS = {
    "limited": {"key": "limited-key", "permissions": ["train"], "requests_per_second": 0.001}
}
HOLDOUT_EVERY, GUARD_ONLINE_ROWS, MIN_ROWS_ABOVE_OFFLINE = 2, 6, 5


def guarded_settings(offline_guard_rows: int) -> dict[str, str]:
    return {
        "SOFTMAX_API_KEYS": json.dumps(INLINE_KEYS),
        "SOFTMAX_API_KEYS_FILE": KEYS_FILE,
        "SOFTMAX_PREDICT_REQUIRES_KEY": "true",
        "SOFTMAX_GUARD_MAX_LOSS_INCREASE": "0.5",
        "SOFTMAX_GUARD_MAX_STEP": "0.6",
        "SOFTMAX_GUARD_MAX_RATE_RATIO": "2.5",
        "SOFTMAX_GUARD_SURPRISE_QUANTILE": "0.9",
        "SOFTMAX_GUARD_SURPRISE_ALPHA": "0.001",
        "SOFTMAX_GUARD_SUSPECT_RATE": "0.6",
        "SOFTMAX_GUARD_MAX_TOTAL_LOSS_INCREASE": "0.5",
        "SOFTMAX_GUARD_REFERENCE_EVERY": "20",
        # Observed by tests/integration/test_table_server.py: it needs a model with categories.
        "SOFTMAX_UNKNOWN_CATEGORIES": "refuse",
        "SOFTMAX_GUARD_MIN_ROWS": str(offline_guard_rows + MIN_ROWS_ABOVE_OFFLINE),
        "SOFTMAX_GUARD_MAX_ABS_Z": "5",
        "SOFTMAX_HOLDOUT_EVERY": str(HOLDOUT_EVERY),
        "SOFTMAX_GUARD_ONLINE_ROWS": str(GUARD_ONLINE_ROWS),
        "SOFTMAX_ONLINE_MOMENTUM": "true",
        "SOFTMAX_DRIFT_DELTA": "0.25",
        "SOFTMAX_DRIFT_THRESHOLD": "7.5",
    }


def test_every_setting_is_passed_to_a_container() -> None:
    """Every setting but the three the image's own ENV sets (host, port, store; the port is
    passed by session.start) comes from one of the two containers' environments."""
    every = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    image_env = {"SOFTMAX_HOST", "SOFTMAX_PORT", "SOFTMAX_STORE"}
    first, second = set(SETTINGS), set(guarded_settings(0))
    assert not first & second
    assert every - image_env == first | second, "a setting is not exercised"


def test_service_configured_by_environment_healthcheck_api_and_sigterm(
    session: Podman, image: str, compose: dict[str, Any]
) -> None:
    volume = session.volume("single")
    service = session.start(
        "single", image, env=SETTINGS, options=[f"--volume={volume}:/data/artifacts"]
    )
    service.wait_http("/health/live")
    url = f"http://127.0.0.1:{service.port}/health/ready"

    # No model yet: live, not ready, and the HEALTHCHECK says so.
    assert service.healthcheck() == (1, f"unhealthy: {url} answered HTTP 503")

    # Every process of the container runs as the image's user (seen from the host).
    assert service.host_uid() == UID
    users = podman_top(service, "huser")
    assert users and set(users) == {str(UID)}, users
    assert len(podman_top(service, "pid")) >= 3, "uvicorn's supervisor and 2 workers"

    # The CLI trains into the volume; the service picks it up and becomes healthy.
    train_into(session, image, compose, volume)
    assert wait_healthy(service) == f"healthy: {url} answered HTTP 200"
    wait_until(lambda: service.inspect("{{.State.Health.Status}}") == "healthy", 5.0)

    rows = digits_rows(3)
    predicted = service.post("/predict", json={"instances": rows})
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["version"] == 1 and len(predicted.json()["predictions"]) == 3
    too_many = service.post("/predict", json={"instances": digits_rows(1) * 21})
    assert too_many.status_code == 422, "SOFTMAX_MAX_ROWS=20"
    too_big = service.post("/predict", content=b"[" + b"0," * 60_000 + b"0]")
    assert too_big.status_code == 413, "SOFTMAX_MAX_BODY_BYTES=100000"

    batch = {"instances": rows, "labels": [0, 1, 2]}
    auth = {"Authorization": f"Bearer {API_KEY}"}
    assert service.post("/train", json=batch).status_code == 401, "SOFTMAX_API_KEY"
    for refused in ({"learning_rate": 0.6}, {"passes": 4}):
        answer = service.post("/train", json=batch | refused, headers=auth)
        assert answer.status_code == 422, f"{refused}: {answer.text}"
    versions = []
    for _ in range(6):
        answer = service.post("/train", json=batch, headers=auth)
        assert answer.status_code == 200, answer.text
        versions.append(answer.json()["version"])
    assert versions == list(range(2, 8))
    listed = service.get("/models?limit=100").json()["versions"]
    kinds = {v["version"]: v["kind"] for v in listed}
    # Every third update is a full snapshot (SOFTMAX_SNAPSHOT_EVERY=2), and retention
    # (SOFTMAX_KEEP_LAST=2) removed the versions the newest two no longer need.
    assert kinds == {7: "snapshot", 6: "update", 5: "update", 4: "snapshot"}, kinds
    verdicts = [v["verdict"] for v in listed if v["verdict"] is not None]
    assert verdicts and {v["mode"] for v in verdicts} == {"log"}, "SOFTMAX_GUARD_MODE=log"
    # Four updates of 16 rows on one connection (so one worker): its rolling window holds
    # the newest 16 rows (SOFTMAX_METRICS_WINDOW=16), not all 64.
    wide = {"instances": digits_rows(16), "labels": list(range(10)) + list(range(6))}
    with service.client(headers=auth) as client:
        for _ in range(4):
            assert client.post("/train", json=wide).status_code == 200
        metrics = client.get("/metrics").text
    assert counter(metrics, "softmax_prequential_window_rows") == 16, "SOFTMAX_METRICS_WINDOW"
    # The dashboard's page is open, its data needs a key; it refreshes every 3.5 s.
    assert service.get("/dashboard").status_code == 200
    assert service.get("/dashboard/state").status_code == 401, "SOFTMAX_DASHBOARD_REQUIRES_KEY"
    with service.client(headers=auth) as client:
        board = client.get("/dashboard/state")
    assert board.status_code == 200, board.text
    assert board.json()["refresh_seconds"] == 3.5, "SOFTMAX_DASHBOARD_REFRESH"
    assert "Application startup complete" not in service.logs(), "SOFTMAX_LOG_LEVEL=warning"

    # SOFTMAX_LOCK_TIMEOUT=1: with the store's writer lock held from the host, /train gives
    # up after a second with 503 (the default would wait 30 s).
    with (session.volume_path(volume) / "digits" / ".lock").open("rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        started = time.monotonic()
        answer = service.post("/train", json=batch, headers=auth)
        waited = time.monotonic() - started
    assert answer.status_code == 503, answer.text
    assert "within 1 s" in answer.json()["error"]["message"] and 1.0 <= waited < 10.0, waited

    # SIGTERM: uvicorn finishes and the container exits 0, within seconds.
    started = time.monotonic()
    service.signal("TERM")
    assert service.wait_exit(timeout=30) == 0, service.logs()
    assert time.monotonic() - started < STOP_WITHIN

    # SOFTMAX_MODEL=digits: with a second model in the store, the image without the setting
    # refuses to start; the container, restarted with it, serves digits.
    storage = [f"--volume={volume}:/data/artifacts"]
    trained = session.run_once(
        image,
        *("-m", "model.train", "builtin:iris", "--store", "/data/artifacts", "--name", "iris"),
        options=[*storage, "--entrypoint=python"],
    )
    assert trained.returncode == 0, trained.stderr
    without_model = session.run_once(image, options=[*storage, "--env=SOFTMAX_PORT=0"], timeout=60)
    refusal = without_model.stderr
    assert without_model.returncode != 0 and "holds several models" in refusal, refusal
    podman("start", service.name)
    assert service.wait_http("/health/ready").json()["model"] == "digits"

    # SOFTMAX_MODELS_MEMORY_BYTES=1: the /v2 routes serve the store's other models by name,
    # and past the budget unload the least recently used one (never the default, digits).
    trained = session.run_once(
        image,
        *("-m", "model.train", "builtin:iris", "--store", "/data/artifacts", "--name", "flowers"),
        options=[*storage, "--entrypoint=python"],
    )
    assert trained.returncode == 0, trained.stderr
    iris_row = {"name": "input", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}
    with service.client() as client:  # one connection: one worker, one registry
        for name in ("iris", "flowers", "iris"):
            answer = client.post(f"/v2/models/{name}/infer", json={"inputs": [iris_row]})
            assert answer.status_code == 200, answer.text
            assert answer.json()["model_name"] == name
        metrics = client.get("/metrics").text
    assert counter(metrics, "softmax_models_evicted_total", model="iris") == 1, metrics
    assert counter(metrics, "softmax_models_evicted_total", model="flowers") == 1, metrics


def test_keys_guard_holdout_drift_and_momentum_settings_from_the_environment(
    session: Podman, image: str, compose: dict[str, Any], tmp_path: Path
) -> None:
    """The settings of guarded_settings, each one's effect seen from outside: over HTTP, or
    in the version metadata the service writes to the volume."""
    volume = session.volume("guarded")
    train_into(session, image, compose, volume)
    oracle = StoreOracle(session.volume_path(volume), "digits")
    offline_rows = int(oracle.meta(1)["guard"]["rows"])
    keys = tmp_path / "keys.toml"
    keys.write_text(KEYS_TOML)
    keys.chmod(0o644)  # read by uid 10001 in the container
    settings = guarded_settings(offline_rows)
    options = [f"--volume={volume}:/data/artifacts", f"--volume={keys}:{KEYS_FILE}:ro"]
    service = session.start("guarded", image, env=settings, options=options)
    service.wait_http("/health/ready")

    def post(path: str, key: str | None, **body: Any) -> Any:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return service.post(path, json=body, headers=headers)

    rows = digits_rows(2)
    # SOFTMAX_PREDICT_REQUIRES_KEY, and the keys of SOFTMAX_API_KEYS_FILE with their
    # permissions: reader may predict, not train; feeder may train.
    assert post("/predict", None, instances=rows).status_code == 401
    assert post("/predict", "reader-key", instances=rows).status_code == 200
    # Rows within 5 standard deviations of the training mean (SOFTMAX_GUARD_MAX_ABS_Z=5
    # refuses the others for training; half of all 8-row digits batches have such a row).
    standardizer = oracle.load(1).estimator.standardizer_
    candidates = digits_minibatches(40, rows=8, seed=21)
    batches = [b for b in candidates if np.abs(standardizer.transform(b.X)).max() < 5][:6]
    assert len(batches) == 6
    refused = post("/train", "reader-key", **batches[0].payload())
    assert refused.status_code == 403 and "reader" in refused.text, refused.text
    assert post("/train", None, **batches[0].payload()).status_code == 401

    # SOFTMAX_HOLDOUT_EVERY=2 holds 4 of each 8 rows out for the guard set, which keeps
    # SOFTMAX_GUARD_ONLINE_ROWS=6 of them; SOFTMAX_GUARD_MIN_ROWS (offline + 5) leaves the
    # first two updates unjudged and the third judged.
    for batch in batches[:3]:
        answer = post("/train", "feeder-key", **batch.payload())
        assert answer.status_code == 200, answer.text
    assert oracle.versions() == [1, 2, 3, 4]
    guard_rows = [int(oracle.meta(v)["guard"]["rows"]) for v in (2, 3, 4)]
    online = [offline_rows + 4, offline_rows + GUARD_ONLINE_ROWS, offline_rows + GUARD_ONLINE_ROWS]
    assert guard_rows == online, (offline_rows, guard_rows)
    listed = {v["version"]: v for v in service.get("/models?limit=10").json()["versions"]}
    assert listed[2]["verdict"] is None and listed[3]["verdict"] is None
    verdict = listed[4]["verdict"]
    assert verdict is not None and verdict["accepted"], verdict
    # The guard judged by the configured thresholds (each recorded in the verdict).
    assert verdict["guard_rows"] == offline_rows + GUARD_ONLINE_ROWS
    assert verdict["mode"] == "enforce"
    assert verdict["max_loss_increase"] == 0.5 and verdict["max_step"] == 0.6
    assert verdict["max_rate_ratio"] == 2.5 and verdict["surprise_quantile"] == 0.9
    assert verdict["surprise_alpha"] == 0.001
    assert verdict["suspect_rate"] == 0.6 and verdict["max_total_loss_increase"] == 0.5
    # SOFTMAX_GUARD_MAX_RATE_RATIO=2.5: three passes at the model's own rate are refused.
    answer = post("/train", "feeder-key", **batches[3].payload(), passes=3)
    assert answer.status_code == 409, answer.text
    assert "at most 2.5 times is accepted" in answer.json()["error"]["message"]
    # SOFTMAX_GUARD_MAX_ABS_Z=5: a pixel far out (but within the default 500) is refused.
    far = batches[4].payload()
    far["instances"][0][36] = 100.0  # (100 - mean) / scale: about 15 on this model
    z = (100.0 - standardizer.mean[36]) / standardizer.scale[36]
    assert 5 < z < Settings.model_fields["guard_max_abs_z"].default
    answer = post("/train", "feeder-key", **far)
    assert answer.status_code == 422, answer.text
    assert "at most 5 are accepted for training" in answer.json()["error"]["message"]
    assert oracle.versions() == [1, 2, 3, 4], "refusals change nothing"

    # SOFTMAX_ONLINE_MOMENTUM=true: version 3 is version 2 plus its trained rows with the
    # momentum buffers carried (replayed here; plain steps would give other weights).
    parent, stored = oracle.load(2).estimator, oracle.load(3).estimator
    arrays = oracle.store.read("digits", 3).arrays
    assert oracle.meta(3)["kind"] == "update" and arrays["X"].shape[0] == 4
    for momentum in (True, False):
        replayed, _ = parent.updated(
            arrays["X"], arrays["y"], learning_rate=parent.online_rate, momentum=momentum
        )
        same = np.allclose(replayed.state_.weights, stored.state_.weights, rtol=0, atol=1e-12)
        assert same is momentum, f"momentum={momentum}"

    # SOFTMAX_DRIFT_DELTA and SOFTMAX_DRIFT_THRESHOLD: the Page-Hinkley state of each
    # online version is computed with them.
    drift = service.get("/models/4").json()["drift"]
    assert (drift["delta"], drift["threshold"], drift["n"]) == (0.25, 7.5, 3), drift

    # SOFTMAX_API_KEYS (JSON): the key named limited trains once, then its rate of one
    # request per 1000 s refuses it.
    assert post("/train", "limited-key", **batches[5].payload()).status_code == 200
    limited = post("/train", "limited-key", **batches[5].payload())
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1000"
    metrics = service.get("/metrics").text
    for key, outcome, count in (("feeder", "applied", 3), ("limited", "rate_limited", 1)):
        sample = counter(metrics, "softmax_train_requests_total", key=key, outcome=outcome)
        assert sample == count, (key, outcome, sample)


def podman_top(container: Container, descriptor: str) -> list[str]:
    """One column of ``podman top`` (e.g. ``huser``: the host's user of each process)."""
    lines = podman("top", container.name, descriptor).strip().splitlines()
    return [line.strip() for line in lines[1:] if line.strip()]


# --------------------------------------------------------------------------------------
# SIGKILL during a stream of /train: nothing acknowledged is lost.
# --------------------------------------------------------------------------------------


def test_sigkill_mid_train_loses_nothing_acknowledged(
    session: Podman, image: str, compose: dict[str, Any]
) -> None:
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"random seed {seed}")
    rng = random.Random(seed)
    # The store is checked by replaying each update here, bit for bit: same NumPy needed.
    probe = ["-c", "import numpy; print(numpy.__version__)"]
    image_numpy = session.run_once(image, *probe, options=["--entrypoint=python"]).stdout
    assert image_numpy.strip() == np.__version__, (
        f"the image has NumPy {image_numpy.strip()}, this environment {np.__version__}: "
        "the offline replay would differ in the last bits; reinstall .venv (make clean)"
    )
    volume = session.volume("crash")
    train_into(session, image, compose, volume)
    store = session.volume_path(volume)
    # The check replays each acknowledged minibatch whole: no row held out for the guard set.
    settings = {
        "SOFTMAX_RELOAD_INTERVAL": "0.2",
        "SOFTMAX_KEEP_LAST": "100000",
        "SOFTMAX_HOLDOUT_EVERY": "0",
    }
    service = session.start(
        "crash", image, env=settings, options=[f"--volume={volume}:/data/artifacts"]
    )
    batches = digits_minibatches(2000, rows=8, seed=seed)
    acknowledged: dict[int, Minibatch] = {}
    newest = 1
    for cycle in range(2):
        assert service.wait_http("/health/ready").json()["version"] == newest
        with TrainStream(service, batches[cycle * 1000 : (cycle + 1) * 1000]) as stream:
            stream.start(3)
            wait_until(lambda s=stream: len(s.acknowledged) >= 5, 30.0, what="5 updates")
            time.sleep(rng.uniform(0.1, 0.5))
            service.signal("KILL")
            stream.stop()
        assert service.wait_exit(timeout=10) == 137
        assert not stream.refused, stream.refused[:3]
        sent = {id(b) for b in stream.acknowledged.values()}
        in_flight = [b for b in stream.sent if id(b) not in sent]
        acknowledged.update(stream.acknowledged)
        newest = check_store_after_crash(store, acknowledged, in_flight, newest, None).newest
        # The same container, restarted on the same volume.
        podman("start", service.name)
    assert service.wait_http("/health/ready").json()["version"] == newest >= max(acknowledged)
    answer = service.post("/train", json=batches[-1].payload())
    assert answer.status_code == 200 and answer.json()["version"] == newest + 1


# --------------------------------------------------------------------------------------
# Scale-out: replicas on one volume behind nginx.
# --------------------------------------------------------------------------------------


def nginx_conf_for_host_network(text: str, upstream_ports: list[int], listen_port: int) -> str:
    """deploy/nginx.conf for the host network and Debian's nginx 1.22: Docker's DNS
    (``resolver 127.0.0.11`` and ``server replica:8000 resolve``, which needs nginx >=
    1.27.3) becomes one static ``server 127.0.0.1:PORT`` per replica with the same
    parameters, and ``listen 8080`` binds 127.0.0.1 on a free port. Nothing else changes."""

    def replace_once(pattern: str, replacement: str, source: str) -> str:
        changed, count = re.subn(pattern, replacement, source, flags=re.MULTILINE)
        assert count == 1, f"deploy/nginx.conf changed: {pattern!r} matched {count} times"
        return changed

    text = replace_once(r"^[ \t]*resolver[ \t][^;]*;\n", "", text)
    text = replace_once(r"^[ \t]*resolver_timeout[ \t][^;]*;\n", "", text)
    match = re.search(r"^([ \t]*)server[ \t]+replica:8000[ \t]+resolve[ \t]+([^;]*);", text, re.M)
    assert match, "deploy/nginx.conf: no 'server replica:8000 resolve ...' line"
    indent, parameters = match[1], match[2]
    servers = "\n".join(f"{indent}server 127.0.0.1:{p} {parameters};" for p in upstream_ports)
    text = text[: match.start()] + servers + text[match.end() :]
    return replace_once(r"^([ \t]*)listen[ \t]+8080;", rf"\1listen 127.0.0.1:{listen_port};", text)


def test_nginx_as_configured_needs_a_newer_nginx_than_debians(
    session: Podman, lb_image: str
) -> None:
    """Why the scale test rewrites the upstream: Debian's nginx refuses ``resolve``. When
    this fails, Debian ships an nginx that takes the file as written: drop the rewrite."""
    conf = REPO_ROOT / "deploy" / "nginx.conf"
    options = ["--entrypoint=nginx", f"--volume={conf}:/etc/nginx/nginx.conf:ro"]
    done = session.run_once(lb_image, "-t", options=options)
    assert done.returncode != 0
    assert 'invalid parameter "resolve"' in done.stderr, done.stderr


def test_replicas_behind_nginx_share_one_store(
    request: pytest.FixtureRequest,
    session: Podman,
    image: str,
    lb_image: str,
    compose: dict[str, Any],
    shell_env: dict[str, str],
    tmp_path: Path,
) -> None:
    services = compose["services"]
    replica = services["replica"]
    assert replica["image"] == services["train"]["image"] == "softmax-serve:0.1.0"
    count = int(replica["deploy"]["replicas"])
    assert count == REPLICAS
    volume = session.volume("artifacts")
    train_into(session, image, compose, volume)

    # The replicas: the compose service as resolved, each on its own port of the host.
    env = service_env(replica, shell_env)
    assert env["SOFTMAX_RELOAD_INTERVAL"] == str(RELOAD_INTERVAL)
    assert env["SOFTMAX_API_KEY"] == API_KEY
    options = service_options(replica, volume)
    replicas = [
        session.start(f"replica-{i}", image, env=env, options=options) for i in range(count)
    ]
    for container in replicas:  # lb: depends_on replica: condition: service_healthy
        wait_healthy(container)

    conf = tmp_path / "nginx.conf"
    lb_port = free_port()
    ports = [c.port for c in replicas if c.port is not None]
    source = (REPO_ROOT / "deploy" / "nginx.conf").read_text()
    conf.write_text(nginx_conf_for_host_network(source, ports, lb_port))
    # lb: the compose file mounts deploy/nginx.conf read-only; here the host-network copy.
    (mount,) = [v for v in services["lb"]["volumes"] if v.startswith("./deploy/nginx.conf:")]
    target = mount.split(":")[1]
    lb = session.start("lb", lb_image, port=lb_port, options=[f"--volume={conf}:{target}:ro"])
    lb.wait_http("/health/live")
    ready = lb.get("/health/ready").json()
    start_version = ready["version"]
    assert start_version == 1

    # Concurrent writers through the load balancer: exactly one version per update.
    auth = {"Authorization": f"Bearer {API_KEY}"}
    batches = digits_minibatches(WRITERS * UPDATES_PER_WRITER, rows=8, seed=11)
    per_writer: list[list[int]] = [[] for _ in range(WRITERS)]
    failures: list[str] = []
    acknowledged_at: list[float] = []

    def writer(index: int) -> None:
        # A new connection per request, so that nginx's least_conn spreads them.
        for batch in batches[index::WRITERS]:
            answer = lb.post("/train", json=batch.payload(), headers=auth)
            if answer.status_code != 200:
                failures.append(f"{answer.status_code} {answer.text}")
                return
            per_writer[index].append(int(answer.json()["version"]))
            acknowledged_at.append(time.monotonic())

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a writer hung"
    assert not failures, failures[:3]
    versions = sorted(v for written in per_writer for v in written)
    final = start_version + len(batches)
    assert versions == list(range(start_version + 1, final + 1))
    assert all(written == sorted(written) for written in per_writer)

    # Within the reload interval (plus RELOAD_MARGIN) of the last acknowledgement, every
    # replica serves the same weights: the final version's. Replicas agree bit for bit; the
    # offline model (this host's NumPy, which may be another build than the image's) agrees
    # to rounding.
    rows = digits_rows(5)
    last_ack = max(acknowledged_at)
    deadline = last_ack + RELOAD_INTERVAL + RELOAD_MARGIN
    served, lags = [], []
    for container in replicas:
        answer = container.post("/predict", json={"instances": rows}).json()
        while answer["version"] != final and time.monotonic() < deadline:
            time.sleep(0.02)
            answer = container.post("/predict", json={"instances": rows}).json()
        assert answer["version"] == final, f"{container.name} still serves {answer['version']}"
        lags.append(time.monotonic() - last_ack)
        served.append(np.array(answer["probabilities"]))
    report(
        request,
        f"replicas seen serving the final version {', '.join(f'{t:.2f}' for t in lags)} s "
        f"after its acknowledgement (bound {RELOAD_INTERVAL + RELOAD_MARGIN:g} s)",
    )
    assert all(np.array_equal(probabilities, served[0]) for probabilities in served)
    oracle = StoreOracle(session.volume_path(volume), "digits")
    assert oracle.versions()[-1] == final
    expected = oracle.predict_proba(final, np.array(rows))
    np.testing.assert_allclose(served[0], expected, rtol=0, atol=1e-12)

    # The load balancer spread the writers over the replicas.
    trains = [
        counter(c.get("/metrics").text, "softmax_http_requests_total", route="/train")
        for c in replicas
    ]
    assert sum(trains) == len(batches) and all(n > 0 for n in trains), trains

    # One replica killed: the others keep answering through the load balancer.
    victim = replicas[0]
    victim.signal("KILL")
    assert victim.wait_exit(timeout=10) == 137
    for _ in range(20):
        answer = lb.post("/predict", json={"instances": rows})
        assert answer.status_code == 200, answer.text
    after = []
    for batch in digits_minibatches(4, rows=8, seed=12):
        answer = lb.post("/train", json=batch.payload(), headers=auth)
        assert answer.status_code == 200, answer.text
        after.append(answer.json()["version"])
    assert after == list(range(final + 1, final + 5))
    acknowledged = time.monotonic()
    survivors = [c for c in replicas if c is not victim]
    for container in survivors:
        wait_until(
            lambda c=container: c.get("/health/ready").json()["version"] == final + 4,
            max(0.0, acknowledged + RELOAD_INTERVAL + RELOAD_MARGIN - time.monotonic()),
            interval=0.02,
            what=f"{container.name} to serve {final + 4}",
        )
    assert lb.get("/health/ready").status_code == 200


def test_compose_file_resolves_with_podman_compose(compose: dict[str, Any]) -> None:
    """A real Compose implementation takes the file: profiles, anchors, interpolation."""
    services = compose["services"]
    assert set(services) == {"api", "train", "replica", "lb"}
    assert services["replica"]["environment"]["SOFTMAX_RELOAD_INTERVAL"] == str(RELOAD_INTERVAL)
    assert services["train"]["entrypoint"] == ["python", "-m", "model.train"]
    assert services["lb"]["depends_on"]["replica"]["condition"] == "service_healthy"
