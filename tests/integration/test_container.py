"""The container deliverables, checked without any container engine.

The image itself is built and run with podman by ``test_image.py`` where podman is installed
(``make image-test``). This module needs no engine: it reads the Dockerfile's final stage
with a small parser (below) and checks what the image promises: a numeric non-root user,
an exec-form entrypoint and health check, and a service that listens on all interfaces.
Then it does what the container would do: it seeds a store with the training CLI, runs the
exact ``ENTRYPOINT`` + ``CMD`` with the Dockerfile's ``ENV`` applied (``python`` being this
interpreter, the host rewritten to loopback and the port to a free one), and runs the
``HEALTHCHECK`` command until it passes.

The compose file and ``.dockerignore`` are checked against the Dockerfile, so that the
three cannot drift apart. ``make container-check`` lints the Dockerfile (hadolint) and
validates the compose file against the Compose Specification's schema.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from .server import REPO_ROOT, child_env, free_port

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"

HEALTHY_WITHIN = 30.0  # seconds the end-to-end test waits for the HEALTHCHECK to pass
TRAIN_TIMEOUT = 240.0


# --------------------------------------------------------------------------------------
# A small Dockerfile parser: enough of the reference's rules for the instructions we check.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: "ENV", "USER", ...
    arguments: str  # the rest of the logical line, continuations joined
    line: int  # where it starts, 1-based


@dataclass(frozen=True)
class Command:
    """``ENTRYPOINT``/``CMD``/``HEALTHCHECK CMD``: exec form keeps its argv as written; shell
    form becomes ``/bin/sh -c "..."``, as Docker runs it."""

    argv: tuple[str, ...]
    exec_form: bool


@dataclass(frozen=True)
class Healthcheck:
    options: Mapping[str, str]  # "interval" -> "15s", ...
    command: Command | None  # None for HEALTHCHECK NONE


@dataclass(frozen=True)
class Stage:
    base: str  # the FROM image, global ARG defaults substituted
    name: str | None
    instructions: tuple[Instruction, ...]


@dataclass
class ImageConfig:
    """What the final stage sets: the run-time configuration of the image."""

    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    workdir: str | None = None
    entrypoint: Command | None = None
    cmd: Command | None = None
    healthcheck: Healthcheck | None = None
    exposed: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)

    def run_argv(self) -> tuple[str, ...]:
        """ENTRYPOINT + CMD as Docker combines them (a shell-form ENTRYPOINT ignores CMD)."""
        if self.entrypoint is None:
            return self.cmd.argv if self.cmd else ()
        if not self.entrypoint.exec_form or self.cmd is None:
            return self.entrypoint.argv
        return self.entrypoint.argv + self.cmd.argv


_CONTINUATION = re.compile(r"\\[ \t]*$")
_VARIABLE = re.compile(r"\$(?:\{(?P<braced>\w+)(?::(?P<op>[-+])(?P<word>[^}]*))?\}|(?P<bare>\w+))")
_OPTION = re.compile(r"--(?P<name>[a-z][a-z-]*)=(?P<value>\S+)\s*")


def instructions(text: str) -> list[Instruction]:
    """Logical lines of a Dockerfile: a trailing backslash joins the next line (Docker drops
    the backslash and the newline, nothing else); comment lines and blank lines are skipped,
    inside a continuation too. Parser directives (``# syntax=...``) are comments here."""
    result: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and pending):
            continue
        if not stripped:
            continue
        if not pending:
            start = number
        if _CONTINUATION.search(raw):
            pending.append(_CONTINUATION.sub("", raw))
            continue
        pending.append(raw)
        result.append(_instruction("".join(pending), start))
        pending = []
    if pending:
        result.append(_instruction("".join(pending), start))
    return result


def _instruction(logical_line: str, line: int) -> Instruction:
    keyword, _, arguments = logical_line.strip().partition(" ")
    return Instruction(keyword.upper(), arguments.strip(), line)


def expand(value: str, env: Mapping[str, str]) -> str:
    """``$NAME``, ``${NAME}``, ``${NAME:-default}`` and ``${NAME:+alternative}``; unknown
    names expand to the empty string, as in Docker."""

    def substitute(match: re.Match[str]) -> str:
        name = match["braced"] or match["bare"]
        current = env.get(name, "")
        if match["op"] == "-":
            return current or match["word"]
        if match["op"] == "+":
            return match["word"] if current else ""
        return current

    return _VARIABLE.sub(substitute, value)


def parse_env(arguments: str, env: Mapping[str, str]) -> dict[str, str]:
    """``ENV A=1 B="two words"`` (every word ``key=value``) or the legacy ``ENV KEY value``.
    Values are expanded with the environment from *before* this instruction, like Docker."""
    words = shlex.split(arguments, posix=True)
    if words and "=" in words[0]:
        pairs = {}
        for word in words:
            key, separator, value = word.partition("=")
            if not separator or not key:
                raise ValueError(f"ENV expects key=value pairs, got {word!r} in {arguments!r}")
            pairs[key] = expand(value, env)
        return pairs
    key, _, value = arguments.partition(" ")
    if not key or not value.strip():
        raise ValueError(f"ENV expects a name and a value, got {arguments!r}")
    return {key: expand(value.strip(), env)}


def parse_command(arguments: str) -> Command:
    """Exec form is a JSON array of strings; anything else (also malformed JSON, as in
    Docker) is shell form."""
    stripped = arguments.strip()
    if stripped.startswith("["):
        with contextlib.suppress(json.JSONDecodeError):
            argv = json.loads(stripped)
            if isinstance(argv, list) and all(isinstance(word, str) for word in argv):
                return Command(tuple(argv), exec_form=True)
    return Command(("/bin/sh", "-c", stripped), exec_form=False)


def parse_healthcheck(arguments: str) -> Healthcheck:
    options: dict[str, str] = {}
    rest = arguments.strip()
    while match := _OPTION.match(rest):
        options[match["name"]] = match["value"]
        rest = rest[match.end() :]
    keyword, _, command = rest.partition(" ")
    if keyword.upper() == "NONE":
        return Healthcheck(options, None)
    if keyword.upper() != "CMD":
        raise ValueError(f"HEALTHCHECK expects CMD or NONE, got {rest!r}")
    return Healthcheck(options, parse_command(command))


def stages(text: str) -> list[Stage]:
    """The build stages, split at each ``FROM``; ``ARG``s before the first ``FROM`` (with
    their defaults) are substituted into the ``FROM`` lines."""
    global_args: dict[str, str] = {}
    result: list[Stage] = []
    current: list[Instruction] | None = None
    base, name = "", None
    for instruction in instructions(text):
        if instruction.keyword == "FROM":
            if current is not None:
                result.append(Stage(base, name, tuple(current)))
            words = [w for w in instruction.arguments.split() if not w.startswith("--")]
            base = expand(words[0], global_args)
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            current = []
        elif current is None:
            if instruction.keyword == "ARG":
                key, _, default = instruction.arguments.partition("=")
                global_args[key.strip()] = default.strip().strip('"')
        else:
            current.append(instruction)
    if current is not None:
        result.append(Stage(base, name, tuple(current)))
    return result


def image_config(text: str, inherited: Mapping[str, str] | None = None) -> ImageConfig:
    """The final stage's run-time configuration; ``inherited`` stands for the base image's
    environment when expanding ``$VARIABLES`` (e.g. ``PATH=/opt/venv/bin:$PATH``)."""
    config = ImageConfig()
    scope = dict(inherited or {})
    for instruction in stages(text)[-1].instructions:
        keyword, arguments = instruction.keyword, instruction.arguments
        if keyword == "ENV":
            pairs = parse_env(arguments, scope)
            scope.update(pairs)
            config.env.update(pairs)
        elif keyword == "USER":
            config.user = expand(arguments, scope)
        elif keyword == "WORKDIR":
            config.workdir = expand(arguments, scope)
        elif keyword == "ENTRYPOINT":
            config.entrypoint = parse_command(arguments)
            config.cmd = None  # Docker resets an inherited CMD when ENTRYPOINT is set
        elif keyword == "CMD":
            config.cmd = parse_command(arguments)
        elif keyword == "HEALTHCHECK":
            config.healthcheck = parse_healthcheck(arguments)
        elif keyword == "EXPOSE":
            config.exposed += expand(arguments, scope).split()
        elif keyword == "VOLUME":
            parsed = parse_command(arguments)
            config.volumes += list(parsed.argv) if parsed.exec_form else arguments.split()
    return config


def duration_seconds(text: str) -> float:
    """A Docker duration such as ``30s``, ``1m30s`` or ``500ms``."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(number) * units[unit] for number, unit in parts)


# --------------------------------------------------------------------------------------
# .dockerignore, by the rules of Docker's pattern matcher (moby/patternmatcher).
# --------------------------------------------------------------------------------------


def _ignore_pattern(pattern: str) -> re.Pattern[str]:
    pattern = os.path.normpath(pattern.strip().lstrip("/"))
    regex, index = "", 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**/", index):
            regex, index = regex + "(?:.*/)?", index + 3
        elif pattern.startswith("**", index):
            regex, index = regex + ".*", index + 2
        elif char == "*":
            regex, index = regex + "[^/]*", index + 1
        elif char == "?":
            regex, index = regex + "[^/]", index + 1
        elif char == "[":
            end = pattern.index("]", index)
            regex, index = regex + pattern[index : end + 1], end + 1
        else:
            regex, index = regex + re.escape(char), index + 1
    return re.compile(regex + r"\Z")


def dockerignore_excludes(rules: str, path: str) -> bool:
    """Whether ``path`` (relative to the context) is left out: the last rule that matches
    the path or one of its parent folders decides; ``!`` rules put paths back."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for raw in rules.splitlines():
        rule = raw.strip()
        if not rule or rule.startswith("#"):
            continue
        negated = rule.startswith("!")
        regex = _ignore_pattern(rule[1:] if negated else rule)
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


# --------------------------------------------------------------------------------------
# The parser itself.
# --------------------------------------------------------------------------------------

SAMPLE = """\
# syntax=docker/dockerfile:1
ARG BASE=python:3.11.9-slim
FROM ${BASE} AS builder
ENV BUILD_ONLY=1
RUN echo one \\
    # a comment inside a continuation is dropped
    && echo two
FROM ${BASE}
ENV PATH=/venv/bin:$PATH \\
    GREETING="hello world" \\
    EMPTY= \\
    ALIAS=${GREETING:-unset}
ENV LEGACY some value
USER 10001:10001
ENTRYPOINT ["python", "-m", "service"]
CMD --verbose
HEALTHCHECK --interval=5s --timeout=1m30s \\
  CMD ["python", "-m", "probe"]
EXPOSE 8000 9000/udp
VOLUME ["/data", "/cache"]
"""


def test_parser_joins_continuations_and_drops_comments() -> None:
    parsed = instructions(SAMPLE)
    assert [i.keyword for i in parsed][:5] == ["ARG", "FROM", "ENV", "RUN", "FROM"]
    run = parsed[3]
    assert run.line == 5
    assert run.arguments.split() == ["echo", "one", "&&", "echo", "two"]
    assert instructions("ENV A=1\\\nB=2\n")[0].arguments == "A=1B=2"  # no space is added


def test_parser_splits_stages_and_substitutes_global_args() -> None:
    builder, final = stages(SAMPLE)
    assert (builder.base, builder.name) == ("python:3.11.9-slim", "builder")
    assert (final.base, final.name) == ("python:3.11.9-slim", None)


def test_parser_reads_env_forms_with_docker_expansion() -> None:
    config = image_config(SAMPLE, inherited={"PATH": "/usr/bin"})
    assert config.env == {
        "PATH": "/venv/bin:/usr/bin",
        "GREETING": "hello world",
        "EMPTY": "",
        # expanded with the environment from before the instruction, as Docker does
        "ALIAS": "unset",
        "LEGACY": "some value",
    }
    assert "BUILD_ONLY" not in config.env  # builder-stage ENV does not reach the image
    assert parse_env("A=1 B=$A", {"A": "0"}) == {"A": "1", "B": "0"}
    with pytest.raises(ValueError, match="key=value"):
        parse_env("A=1 B", {})


def test_parser_reads_exec_and_shell_forms() -> None:
    config = image_config(SAMPLE)
    assert config.entrypoint == Command(("python", "-m", "service"), exec_form=True)
    assert config.cmd == Command(("/bin/sh", "-c", "--verbose"), exec_form=False)
    assert config.run_argv() == ("python", "-m", "service", "/bin/sh", "-c", "--verbose")
    assert config.user == "10001:10001"
    assert config.exposed == ["8000", "9000/udp"]
    assert config.volumes == ["/data", "/cache"]
    # malformed JSON falls back to shell form, as in Docker
    assert parse_command('["python", -m]') == Command(
        ("/bin/sh", "-c", '["python", -m]'), exec_form=False
    )


def test_parser_reads_healthcheck_options_and_none() -> None:
    healthcheck = image_config(SAMPLE).healthcheck
    assert healthcheck is not None
    assert healthcheck.options == {"interval": "5s", "timeout": "1m30s"}
    assert healthcheck.command == Command(("python", "-m", "probe"), exec_form=True)
    assert duration_seconds("1m30s") == 90.0
    assert parse_healthcheck("NONE") == Healthcheck({}, None)
    with pytest.raises(ValueError, match="CMD or NONE"):
        parse_healthcheck("--interval=5s python -m probe")


@pytest.mark.parametrize(
    ("rules", "path", "excluded"),
    [
        ("*\n!model/\n", "model/softmax.py", False),
        ("*\n!model/\n", "tests/test_x.py", True),
        ("*\n!model/\n**/__pycache__\n", "model/__pycache__/x.pyc", True),
        ("/artifacts/*\n!/artifacts/.gitkeep\n", "artifacts/.gitkeep", False),
        ("/artifacts/*\n", "artifacts/digits/v1.npz", True),
        ("*.py[cod]\n", "x.pyc", True),
        ("*.py[cod]\n", "model/x.pyc", False),  # "*" does not cross folders
    ],
)
def test_dockerignore_matcher(rules: str, path: str, excluded: bool) -> None:
    assert dockerignore_excludes(rules, path) is excluded


# --------------------------------------------------------------------------------------
# The project's Dockerfile, .dockerignore and compose file.
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile_text() -> str:
    return DOCKERFILE.read_text()


@pytest.fixture(scope="module")
def config(dockerfile_text: str) -> ImageConfig:
    return image_config(dockerfile_text)


def test_dockerfile_is_multi_stage_on_one_pinned_slim_base(dockerfile_text: str) -> None:
    parsed = stages(dockerfile_text)
    assert len(parsed) >= 2, "expected a builder stage and a runtime stage"
    bases = {stage.base for stage in parsed}
    assert len(bases) == 1, f"the venv is copied between stages, so they need one base: {bases}"
    (base,) = bases
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-[a-z]+", base), f"unpinned base {base!r}"
    final = parsed[-1]
    copies = [i.arguments for i in final.instructions if i.keyword == "COPY"]
    assert copies and all(c.startswith("--from=") for c in copies), (
        f"the runtime stage should copy only built artifacts from the builder, got {copies}"
    )
    runs = " ".join(i.arguments for i in final.instructions if i.keyword == "RUN")
    assert "pip" not in runs, "nothing is installed in the runtime stage"


def test_final_stage_runs_as_numeric_non_root_user(config: ImageConfig) -> None:
    assert config.user is not None, "no USER: the container would run as root"
    uid, _, gid = config.user.partition(":")
    assert uid.isdigit() and (not gid or gid.isdigit()), (
        f"USER should be numeric (Kubernetes runAsNonRoot can verify it), got {config.user!r}"
    )
    assert int(uid) != 0 and (not gid or int(gid) != 0)


def test_final_stage_has_an_exec_form_healthcheck(config: ImageConfig) -> None:
    from service.healthcheck import TIMEOUT_SECONDS

    healthcheck = config.healthcheck
    assert healthcheck is not None and healthcheck.command is not None
    assert healthcheck.command.exec_form, "shell form would need /bin/sh and hide signals"
    assert healthcheck.command.argv == ("python", "-m", "service.healthcheck")
    # Docker kills the probe at --timeout: the probe's own timeout must come first.
    assert duration_seconds(healthcheck.options["timeout"]) > TIMEOUT_SECONDS


def test_final_stage_entrypoint_is_exec_form_service(config: ImageConfig) -> None:
    assert config.entrypoint is not None and config.entrypoint.exec_form, (
        "a shell-form ENTRYPOINT runs under /bin/sh, which does not forward SIGTERM"
    )
    assert config.run_argv()[:3] == ("python", "-m", "service")


def test_final_stage_listens_on_all_interfaces_and_declares_port_and_store(
    config: ImageConfig,
) -> None:
    env = config.env
    assert env.get("SOFTMAX_HOST") == "0.0.0.0"
    assert [port.split("/")[0] for port in config.exposed] == [env["SOFTMAX_PORT"]]
    assert config.volumes == [env["SOFTMAX_STORE"]]
    assert env.get("PYTHONUNBUFFERED") == "1", "logs must not sit in a buffer"
    assert env["PATH"].split(":")[0].endswith("/bin"), "the venv comes first on PATH"


def test_dockerignore_keeps_the_build_inputs_and_drops_the_rest(dockerfile_text: str) -> None:
    rules = DOCKERIGNORE.read_text()
    builder = stages(dockerfile_text)[0]
    sources = [
        word
        for instruction in builder.instructions
        if instruction.keyword == "COPY" and "--from=" not in instruction.arguments
        for word in instruction.arguments.split()[:-1]
    ]
    assert sources, "the builder stage copies nothing from the context"
    for source in sources:
        assert (REPO_ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not dockerignore_excludes(rules, source.rstrip("/")), f"{source} is ignored"
    assert not dockerignore_excludes(rules, "model/datasets/digits.csv.gz")
    for path in [
        ".venv/bin/python",
        ".git/HEAD",
        "tests/integration/test_container.py",
        "bench/bench_training.py",
        "artifacts/digits/manifest.json",
        "service/__pycache__/app.cpython-311.pyc",
        ".env",
    ]:
        assert dockerignore_excludes(rules, path), f"{path} would be sent to the build"


@pytest.fixture(scope="module")
def compose() -> dict[str, object]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_compose_services_agree_with_the_dockerfile(
    compose: dict[str, object], config: ImageConfig
) -> None:
    services = compose["services"]
    assert isinstance(services, dict)
    assert config.healthcheck is not None and config.healthcheck.command is not None
    probe = ["CMD", *config.healthcheck.command.argv]
    store = config.env["SOFTMAX_STORE"]
    volume_names: set[str] = set()
    for name in ("api", "replica"):
        service = services[name]
        assert service["healthcheck"]["test"] == probe, f"{name}: another health probe"
        assert service["environment"]["SOFTMAX_STORE"] == store
        assert service["environment"]["SOFTMAX_HOST"] == "0.0.0.0"
        volume_names |= {v.split(":")[0] for v in service["volumes"] if v.endswith(":" + store)}
    train = services["train"]
    assert train["profiles"] and "train" in train["profiles"]
    assert train["entrypoint"] == ["python", "-m", "model.train"]
    assert train["command"][:1] == ["builtin:digits"]
    assert "--if-store-empty" in train["command"]
    assert train["command"][train["command"].index("--store") + 1] == store
    volume_names |= {v.split(":")[0] for v in train["volumes"] if v.endswith(":" + store)}
    assert len(volume_names) == 1, f"every service must share one store volume: {volume_names}"
    assert volume_names <= set(compose["volumes"]), "the store is a named volume"
    lb = services["lb"]
    assert re.fullmatch(r"nginx:\d+\.\d+\.\d+(-alpine)?", lb["image"]), "pin the nginx tag"
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in lb["volumes"]
    assert "replicas" in services["replica"]["deploy"]
    nginx_conf = (REPO_ROOT / "deploy" / "nginx.conf").read_text()
    assert re.search(r"server\s+replica:" + config.env["SOFTMAX_PORT"] + r"\b", nginx_conf)


# --------------------------------------------------------------------------------------
# service.healthcheck against a stand-in server: exit codes and the one-line reason.
# --------------------------------------------------------------------------------------


class _StatusHandler(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        body = b'{"status": "stand-in"}'
        self.send_response(self.status if self.path == "/health/ready" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the test output clean


@contextlib.contextmanager
def stand_in_server(status: int) -> Iterator[int]:
    handler = type("Handler", (_StatusHandler,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def run_probe(env: Mapping[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.healthcheck"],
        env=child_env(tmp_path / "tmp", **env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(("status", "code"), [(200, 0), (503, 1), (500, 1)])
def test_healthcheck_probe_exit_code_follows_ready_status(
    status: int, code: int, tmp_path: Path
) -> None:
    with stand_in_server(status) as port:
        result = run_probe({"SOFTMAX_PORT": str(port)}, tmp_path)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == code, output
    assert output.count("\n") == 0
    assert f"http://127.0.0.1:{port}/health/ready answered HTTP {status}" in output


def test_healthcheck_probe_uses_the_url_setting(tmp_path: Path) -> None:
    with stand_in_server(200) as port:
        url = f"http://127.0.0.1:{port}/health/ready"
        result = run_probe({"SOFTMAX_PORT": "1", "SOFTMAX_HEALTHCHECK_URL": url}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"healthy: {url} answered HTTP 200"


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"SOFTMAX_PORT": "not-a-port"}, "SOFTMAX_PORT must be an integer, got 'not-a-port'"),
        ({"SOFTMAX_PORT": "70000"}, "SOFTMAX_PORT must be between 1 and 65535, got 70000"),
        ({"SOFTMAX_HEALTHCHECK_URL": "file:///etc/passwd"}, "must be an http(s) URL"),
    ],
)
def test_healthcheck_probe_rejects_bad_settings(
    env: dict[str, str], reason: str, tmp_path: Path
) -> None:
    result = run_probe(env, tmp_path)
    assert result.returncode == 1
    assert reason in result.stderr and result.stderr.count("\n") == 1


def test_healthcheck_probe_fails_when_nothing_listens(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there any more
    result = run_probe({"SOFTMAX_PORT": str(port)}, tmp_path)
    assert result.returncode == 1
    assert f"http://127.0.0.1:{port}/health/ready unreachable" in result.stderr
    assert result.stderr.count("\n") == 1


# --------------------------------------------------------------------------------------
# End to end: the image's ENTRYPOINT, ENV and HEALTHCHECK, run on this machine.
# --------------------------------------------------------------------------------------


def container_env(
    config: ImageConfig, inherited: Mapping[str, str], **overrides: str
) -> dict[str, str]:
    """The Dockerfile's ENV over ``inherited``; 0.0.0.0 becomes loopback (this is a shared
    machine, not a container with its own network namespace)."""
    env = dict(inherited)
    env.update({key: value.replace("0.0.0.0", "127.0.0.1") for key, value in config.env.items()})
    env.update(overrides)
    return env


def resolve_python(argv: tuple[str, ...]) -> list[str]:
    """``python`` on the image's PATH is the venv's interpreter; here it is this one."""
    assert argv, "empty command"
    first = sys.executable if argv[0] in {"python", "python3"} else argv[0]
    return [first, *argv[1:]]


@contextlib.contextmanager
def started(
    argv: list[str], env: Mapping[str, str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` in its own session and always end it: SIGTERM to its process group
    (uvicorn workers included), then SIGKILL if it has not exited within 10 s."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)


@pytest.mark.slow
def test_container_entrypoint_becomes_healthy(tmp_path: Path) -> None:
    store = tmp_path / "artifacts"
    base = child_env(tmp_path / "tmp")
    # The host's environment stands for the base image's (PATH=/opt/venv/bin:$PATH).
    config = image_config(DOCKERFILE.read_text(), inherited=base)
    # The compose file's `train` service, pointed at a temporary store.
    train_args = ["builtin:digits", "--name", "digits", "--if-store-empty", "--quiet"]
    trained = subprocess.run(
        [sys.executable, "-m", "model.train", *train_args, "--store", str(store)],
        env=base,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=TRAIN_TIMEOUT,
    )
    assert trained.returncode == 0, f"training CLI failed:\n{trained.stdout}\n{trained.stderr}"

    port = free_port()
    env = container_env(config, base, SOFTMAX_STORE=str(store), SOFTMAX_PORT=str(port))
    assert env["SOFTMAX_HOST"] == "127.0.0.1"
    assert config.healthcheck is not None and config.healthcheck.command is not None
    probe = resolve_python(config.healthcheck.command.argv)
    log_path = tmp_path / "server.log"

    with started(resolve_python(config.run_argv()), env, log_path) as server:
        deadline = time.monotonic() + HEALTHY_WITHIN
        attempts: list[str] = []
        while True:
            result = subprocess.run(
                probe, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=30
            )
            attempts.append(f"exit {result.returncode}: {(result.stdout + result.stderr).strip()}")
            if result.returncode == 0 or server.poll() is not None:
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        exited = server.poll()

    log = log_path.read_text(errors="replace")[-4000:]
    assert exited is None, f"the service exited with {exited} before it was healthy:\n{log}"
    assert result.returncode == 0, (
        f"HEALTHCHECK did not pass within {HEALTHY_WITHIN:g} s; last probes:\n"
        + "\n".join(attempts[-3:])
        + f"\nserver log:\n{log}"
    )
    assert (
        result.stdout.strip() == f"healthy: http://127.0.0.1:{port}/health/ready answered HTTP 200"
    )
