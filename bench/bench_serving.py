"""Serving benchmark: /predict against a bare FastAPI app, and /train durable updates per second.

Run from the repository root (needs ``wrk``: ``apt-get install -y wrk``; installs nothing)::

    .venv/bin/python bench/bench_serving.py [--rounds 5] [--duration 10] [--json out.json]

1. Trains a digits model into a temporary store (``python -m model.train builtin:digits``).
2. Starts our server (``python -m service``, 1 worker) and the bare app (``bench/bare_app.py``
   under ``python -m uvicorn``, 1 worker) on free localhost ports. Both use uvicorn's defaults
   (uvloop and httptools when installed), access log off, log level warning.
3. ``/predict``: for each round, for 1-row and 100-row bodies of 64 features (the first rows
   of the digits data), runs ``wrk`` against ours and against bare, alternating which goes first,
   and prints requests/s and latency p50/p90/p99; then medians over rounds and ours/bare ratios.
4. ``/train`` on digits: ``wrk`` POSTs one fixed, valid 32-row minibatch with labels (and the
   bearer key); only 200 answers count, and the model's active version must have advanced by
   exactly that many versions (each one an fsynced artifact).
5. ``/train`` on a 100,000-feature x 100-class model (``SoftmaxRegression(epochs=1)`` fitted on
   200 random rows, saved with ``ModelRepository``): a bounded httpx loop with a few concurrent
   clients POSTing a 32-row body (tens of MB of JSON; ``--max-body-bytes`` is raised to fit).

The machine is measured as it is: on a shared machine, read medians and ratios, not single runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from common import REPO, source_state

PYTHON = sys.executable
API_KEY = "bench-key"
N_FEATURES = 64
BIG_FEATURES = 100_000
BIG_CLASSES = 100

# wrk's Lua: a fixed POST body read from a file; done() prints one machine-readable line with
# the percentiles (microseconds) and, from per-thread counters, how many answers were 200.
LUA_TEMPLATE = """
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end
function init(args)
  ok = 0
  other = 0
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
%(auth)s
local f = assert(io.open("%(body)s", "rb"))
wrk.body = f:read("*a")
f:close()
%(response)s
function done(summary, latency, requests)
  local ok_total, other_total = 0, 0
  for _, t in ipairs(threads) do
    ok_total = ok_total + (t:get("ok") or 0)
    other_total = other_total + (t:get("other") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%%d duration_us=%%d p50=%%d p90=%%d p99=%%d status_errors=%%d " ..
    "socket_errors=%%d ok=%%d other=%%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout,
    ok_total, other_total))
end
"""
# Counting 200s costs wrk a Lua call per response: used for /train only, where it is the point.
LUA_COUNT_200 = """
function response(status, headers, body)
  if status == 200 then ok = ok + 1 else other = other + 1 end
end
"""


@dataclass
class WrkRun:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    status_errors: int
    socket_errors: int
    ok: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


@dataclass
class Series:
    label: str
    runs: list[WrkRun] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs)


# ---------------------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(
    name: str, proc: subprocess.Popen[bytes], url: str, log_path: Path, ready_body: bytes
) -> None:
    """Until POST /predict answers 200 (SystemExit with the log if the process exits or two
    minutes pass)."""
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            log_text = log_path.read_text()
            raise SystemExit(f"{name} exited with {proc.returncode}; log:\n{log_text}")
        with contextlib.suppress(httpx.HTTPError):
            answer = httpx.post(
                url + "/predict",
                content=ready_body,
                headers={"content-type": "application/json"},
                timeout=5,
            )
            if answer.status_code == 200:
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"{name} did not become ready; log:\n{log_path.read_text()}")
        time.sleep(0.2)


@contextlib.contextmanager
def server(
    name: str, argv: list[str], port: int, log_dir: Path, ready_body: bytes, cwd: Path = REPO
) -> Iterator[str]:
    """Start one server process, wait until POST /predict answers 200, stop it afterwards.

    ``cwd`` is the source tree it runs (``python -m`` puts it first on the path)."""
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(name, proc, url, log_path, ready_body)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def ours_argv(
    args: argparse.Namespace, port: int, store: Path, *, flags: str = "", **extra: str
) -> list[str]:
    argv = [PYTHON, "-m", args.ours_module, "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", "1", "--store", str(store), "--api-key", API_KEY]
    argv += ["--log-level", "warning", *flags.split()]
    for key, value in extra.items():
        argv += ["--" + key.replace("_", "-"), value]
    return argv


def bare_argv(port: int) -> list[str]:
    return [
        PYTHON, "-m", "uvicorn", "--app-dir", str(REPO / "bench"), "bare_app:app",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


# ---------------------------------------------------------------------------- wrk
def lua_script(work: Path, body_path: Path, *, auth: bool, count_200: bool) -> Path:
    name = body_path.stem + ("-auth" if auth else "") + ("-count" if count_200 else "") + ".lua"
    path = work / name
    path.write_text(
        LUA_TEMPLATE
        % {
            "auth": f'wrk.headers["Authorization"] = "Bearer {API_KEY}"' if auth else "",
            "body": str(body_path),
            "response": LUA_COUNT_200 if count_200 else "",
        }
    )
    return path


def run_wrk(args: argparse.Namespace, url: str, script: Path, duration: float) -> WrkRun:
    argv = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration:g}s"]
    argv += ["--timeout", "10s", "-s", str(script), url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=True)
    match = re.search(r"^BENCH (.*)$", out.stdout, re.MULTILINE)
    if not match:
        raise SystemExit(f"unexpected wrk output:\n{out.stdout}\n{out.stderr}")
    values = dict(pair.split("=") for pair in match.group(1).split())
    return WrkRun(
        requests=int(values["requests"]),
        seconds=int(values["duration_us"]) / 1e6,
        p50_ms=int(values["p50"]) / 1e3,
        p90_ms=int(values["p90"]) / 1e3,
        p99_ms=int(values["p99"]) / 1e3,
        status_errors=int(values["status_errors"]),
        socket_errors=int(values["socket_errors"]),
        ok=int(values["ok"]),
    )


def fmt_run(run: WrkRun) -> str:
    errors = ""
    if run.status_errors or run.socket_errors:
        errors = f"  (non-2xx {run.status_errors}, socket errors {run.socket_errors})"
    return (
        f"{run.rps:8.0f} req/s  p50 {run.p50_ms:6.2f}  p90 {run.p90_ms:6.2f}  "
        f"p99 {run.p99_ms:6.2f} ms{errors}"
    )


# ---------------------------------------------------------------------------- data
def write_bodies(work: Path) -> dict[str, Path]:
    from model.data import load_builtin

    data = load_builtin("digits")
    X, y = np.asarray(data.X), np.asarray(data.y)
    bodies: dict[str, Any] = {
        "predict-1": {"instances": X[:1].tolist()},
        "predict-100": {"instances": X[:100].tolist()},
        "train-32": {"instances": X[:32].tolist(), "labels": y[:32].tolist()},
    }
    paths = {}
    for name, body in bodies.items():
        paths[name] = work / f"{name}.json"
        paths[name].write_bytes(json.dumps(body).encode())
    return paths


def make_big_store(store: Path) -> None:
    """A 100,000-feature x 100-class model (80 MB of weights, momentum buffers as much again)."""
    from model import LocalArtifactStore, ModelRepository, SoftmaxRegression

    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, BIG_FEATURES))
    y = np.arange(200) % BIG_CLASSES
    estimator = SoftmaxRegression(epochs=1).fit(X, y)
    ModelRepository(LocalArtifactStore(store)).save(estimator, "big")


def big_train_body() -> bytes:
    rng = np.random.default_rng(1)
    # Three decimals keep the JSON to ~7 bytes a cell (22 MB) without changing what it tests.
    X = np.round(rng.standard_normal((32, BIG_FEATURES)), 3)
    y = rng.integers(0, BIG_CLASSES, 32)
    return json.dumps({"instances": X.tolist(), "labels": y.tolist()}).encode()


def active_version(url: str) -> int:
    return int(httpx.get(url + "/models", timeout=30).json()["active"])


def settled_version(url: str) -> int:
    """The active version once requests still in flight from a finished run have committed
    (it has not moved for 0.5 s; at most 10 s of waiting)."""
    version = active_version(url)
    for _ in range(20):
        time.sleep(0.5)
        again = active_version(url)
        if again == version:
            break
        version = again
    return version


# ---------------------------------------------------------------------------- benchmarks
def bench_predict(
    args: argparse.Namespace, work: Path, store: Path, bodies: dict[str, Path]
) -> dict[str, Any]:
    ready = bodies["predict-1"].read_bytes()
    servers = {"ours": REPO, "bare": REPO}
    if args.before_tree:
        servers["before"] = Path(args.before_tree)
    series = {(rows, who): Series(f"{who} {rows}-row") for rows in (1, 100) for who in servers}
    with contextlib.ExitStack() as stack:
        urls = {}
        for who, tree in servers.items():
            port = free_port()
            argv = bare_argv(port) if who == "bare" else ours_argv(args, port, store)
            url = stack.enter_context(server(who, argv, port, work, ready, cwd=tree))
            urls[who] = url + "/predict"
        scripts = {
            rows: lua_script(work, bodies[f"predict-{rows}"], auth=False, count_200=False)
            for rows in (1, 100)
        }
        print(f"warm-up: {args.warmup:g} s per server and body", flush=True)
        for rows in (1, 100):
            for who in servers:
                run_wrk(args, urls[who], scripts[rows], args.warmup)
        for round_number in range(1, args.rounds + 1):
            # Alternate who goes first, so a drift in background load hits all alike.
            order = tuple(servers) if round_number % 2 else tuple(reversed(servers))
            for rows in (1, 100):
                for who in order:
                    run = run_wrk(args, urls[who], scripts[rows], args.duration)
                    series[(rows, who)].runs.append(run)
                    print(f"round {round_number} {rows:3d}-row {who:4s} {fmt_run(run)}", flush=True)
    print(
        f"\n/predict, medians over {args.rounds} rounds x {args.duration:g} s "
        f"(wrk -t{args.threads} -c{args.connections}):"
    )
    print(
        f"{'rows':>4s}  {'server':6s}  {'req/s':>8s}  {'p50 ms':>7s}  {'p90 ms':>7s}  "
        f"{'p99 ms':>7s}"
    )
    summary: dict[str, Any] = {}
    for rows in (1, 100):
        for who in servers:
            s = series[(rows, who)]
            print(
                f"{rows:4d}  {who:6s}  {s.median('rps'):8.0f}  {s.median('p50_ms'):7.2f}  "
                f"{s.median('p90_ms'):7.2f}  {s.median('p99_ms'):7.2f}"
            )
        ours_s, bare_s = series[(rows, "ours")], series[(rows, "bare")]
        ratio = ours_s.median("rps") / bare_s.median("rps")
        paired = statistics.median(
            o.rps / b.rps for o, b in zip(ours_s.runs, bare_s.runs, strict=True)
        )
        p50_ratio = ours_s.median("p50_ms") / bare_s.median("p50_ms")
        p99_ratio = ours_s.median("p99_ms") / bare_s.median("p99_ms")
        print(
            f"{rows:4d}  ours/bare: throughput {ratio:.2f} (median of per-round ratios "
            f"{paired:.2f}), p50 {p50_ratio:.2f}, p99 {p99_ratio:.2f}  -> target >= 1.00: "
            f"{'MET' if ratio >= 1.0 else f'MISSED by {(1 - ratio) * 100:.0f}%'}"
        )
        if "before" in servers:
            before_s = series[(rows, "before")]
            print(
                f"{rows:4d}  before/bare: throughput "
                f"{before_s.median('rps') / bare_s.median('rps'):.2f}; ours/before "
                f"{ours_s.median('rps') / before_s.median('rps'):.2f}"
            )
        summary[f"{rows}-row"] = {
            **{who: [asdict(r) for r in series[(rows, who)].runs] for who in servers},
            "ours_rps_median": ours_s.median("rps"),
            "bare_rps_median": bare_s.median("rps"),
            "ratio_of_medians": ratio,
            "median_of_paired_ratios": paired,
        }
    return summary


def bench_train_digits(
    args: argparse.Namespace, work: Path, store: Path, bodies: dict[str, Path]
) -> dict[str, Any]:
    """Durable /train rate of ours (and of ``--before-tree``, rounds alternating), each on its
    own copy of the store."""
    trees = {"ours": REPO, **({"before": Path(args.before_tree)} if args.before_tree else {})}
    if args.ours_b_flags is not None:  # ours again, with other flags (e.g. the guard off)
        trees["ours-b"] = REPO
    script = lua_script(work, bodies["train-32"], auth=True, count_200=True)
    series = {who: Series(f"train digits {who}") for who in trees}
    for round_number in range(1, args.train_rounds + 1):
        order = list(trees) if round_number % 2 else list(reversed(trees))
        for who in order:
            series[who].runs.append(train_round(args, work, store, bodies, trees[who], who, script))
    summary: dict[str, Any] = {}
    for who, found in series.items():
        rates = [r.ok / r.seconds for r in found.runs]
        median = statistics.median(rates)
        print(
            f"\n/train digits ({who}), 32-row minibatches, median over {args.train_rounds} "
            f"rounds x {args.duration:g} s (wrk -t{args.threads} -c{args.connections}): "
            f"{median:.0f} durable updates/s, p50 {found.median('p50_ms'):.2f} ms, "
            f"p99 {found.median('p99_ms'):.2f} ms"
        )
        summary[who] = {"runs": [asdict(r) for r in found.runs], "updates_per_s": rates}
        summary[who]["median"] = median
    for other in ("before", "ours-b"):
        if other in series:
            ratio = summary["ours"]["median"] / summary[other]["median"]
            print(f"/train ours/{other}: {ratio:.2f}")
    return summary


def train_round(
    args: argparse.Namespace,
    work: Path,
    store: Path,
    bodies: dict[str, Path],
    tree: Path,
    who: str,
    script: Path,
) -> WrkRun:
    """One wrk run of /train against a fresh server on a fresh copy of ``store``."""
    copy = work / f"store-{who}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(store, copy)
    port = free_port()
    ready = bodies["predict-1"].read_bytes()
    flags = args.ours_b_flags if who == "ours-b" else ""
    argv = ours_argv(args, port, copy, flags=flags or "")
    with server(f"{who}-train", argv, port, work, ready, cwd=tree) as url:
        run_wrk(args, url + "/train", script, args.warmup)
        before = settled_version(url)
        run = run_wrk(args, url + "/train", script, args.duration)
        after = settled_version(url)
    # wrk stops counting with up to one request per connection still in flight; those still
    # commit, so the version may move by up to that many more than ok.
    if not 0 <= (after - before) - run.ok <= args.connections:
        raise SystemExit(
            f"/train ({who}): {run.ok} answers were 200 but the active version moved by "
            f"{after - before} ({before} -> {after})"
        )
    print(
        f"/train 32-row digits ({who}): {run.ok / run.seconds:6.0f} durable updates/s "
        f"({run.ok} x 200, version {before} -> {after})  {fmt_run(run)}",
        flush=True,
    )
    return run


def post_loop(
    args: argparse.Namespace, url: str, body: bytes, headers: dict[str, str]
) -> tuple[list[int], list[float], float]:
    """``args.big_clients`` httpx clients POST ``body`` to ``url`` until ``args.big_duration``
    seconds pass or ``args.big_max_requests`` were sent: every status, the latency of each
    200, and the seconds it all took."""
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + args.big_duration

    def client() -> None:
        with httpx.Client(timeout=120) as http:
            while time.monotonic() < stop_at and len(statuses) < args.big_max_requests:
                t0 = time.perf_counter()
                answer = http.post(url, content=body, headers=headers)
                elapsed = time.perf_counter() - t0
                with lock:
                    statuses.append(answer.status_code)
                    if answer.status_code == 200:
                        latencies.append(elapsed)
                    elif len(statuses) - len(latencies) == 1:
                        print(f"  first refusal: {answer.status_code} {answer.text[:300]}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(args.big_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses, latencies, time.perf_counter() - t0


def bench_train_big(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    store = work / "store-big"
    started = time.perf_counter()
    make_big_store(store)
    body = big_train_body()
    print(
        f"\nbig model: {BIG_FEATURES} features x {BIG_CLASSES} classes created in "
        f"{time.perf_counter() - started:.1f} s; /train body {len(body) / 1e6:.1f} MB",
        flush=True,
    )
    ready = json.dumps({"instances": [[0.0] * BIG_FEATURES]}).encode()
    port = free_port()
    limit = str(max(8 * 1024 * 1024, 2 * len(body)))
    argv = ours_argv(args, port, store, max_body_bytes=limit)
    headers = {"content-type": "application/json", "authorization": f"Bearer {API_KEY}"}
    with server("ours-big", argv, port, work, ready) as url:
        before = active_version(url)
        statuses, latencies, seconds = post_loop(args, url + "/train", body, headers)
        after = active_version(url)
    ok = statuses.count(200)
    if after - before != ok:
        raise SystemExit(f"/train big: {ok} x 200 but the version moved by {after - before}")
    rate = ok / seconds
    print(
        f"/train big model, 32-row minibatches, {args.big_clients} httpx clients for "
        f"{seconds:.1f} s: {ok} x 200 of {len(statuses)}, {rate:.2f} durable updates/s, "
        f"latency median {statistics.median(latencies) * 1e3:.0f} ms, "
        f"max {max(latencies) * 1e3:.0f} ms (version {before} -> {after})"
    )
    return {
        "ok": ok,
        "requests": len(statuses),
        "seconds": seconds,
        "updates_per_s": rate,
        "latency_median_s": statistics.median(latencies),
        "latency_max_s": max(latencies),
        "body_bytes": len(body),
    }


def versions() -> dict[str, str]:
    from importlib.metadata import version

    found = {"source": source_state("model", "service"), "python": platform.python_version()}
    for package in ("numpy", "fastapi", "starlette", "pydantic", "uvicorn", "uvloop", "httptools"):
        with contextlib.suppress(Exception):
            found[package] = version(package)
    found["orjson"] = version("orjson")
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    found["wrk"] = (wrk.stdout + wrk.stderr).splitlines()[0].strip()
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="/predict rounds (median)")
    parser.add_argument("--train-rounds", type=int, default=3, help="/train digits rounds")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk warm-up")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections")
    parser.add_argument("--big-duration", type=float, default=30.0, help="big /train seconds")
    parser.add_argument("--big-max-requests", type=int, default=200, help="big /train cap")
    parser.add_argument("--big-clients", type=int, default=2, help="big /train httpx clients")
    parser.add_argument(
        "--only", choices=("predict", "train", "big"), action="append", help="run only these"
    )
    parser.add_argument(
        "--ours-module",
        default="service",
        help="module run as 'python -m MODULE' for our server (to measure a candidate change)",
    )
    parser.add_argument(
        "--before-tree",
        help="a checkout of an earlier commit: its server is measured beside ours in the same "
        "rounds (/predict and /train), e.g. from `git worktree add /tmp/before <commit>`",
    )
    parser.add_argument(
        "--ours-b-flags",
        help="/train only: also measure our server with these extra flags, in the same "
        "rounds (e.g. '--guard-mode off --holdout-every 0' for the guard's cost)",
    )
    parser.add_argument("--tmp-root", help="directory for the temporary stores (default: TMPDIR)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print(
            "error: wrk is not installed (it is not a Python package): install it with\n"
            "  apt-get update && apt-get install -y wrk",
            file=sys.stderr,
        )
        return 2
    load_start = os.getloadavg()
    only = set(args.only or ("predict", "train", "big"))
    env = versions()
    print(", ".join(f"{k} {v}" for k, v in env.items()), flush=True)
    results: dict[str, Any] = {"versions": env, "settings": vars(args)}
    with tempfile.TemporaryDirectory(prefix="softmax-bench-", dir=args.tmp_root) as tmp:
        work = Path(tmp)
        print(f"work directory {work} (filesystem of {args.tmp_root or tempfile.gettempdir()})")
        bodies = write_bodies(work)
        if only & {"predict", "train"}:
            store = work / "store"
            subprocess.run(
                [PYTHON, "-m", "model.train", "builtin:digits", "--store", str(store), "--quiet"],
                cwd=REPO,
                check=True,
            )
        if "predict" in only:
            results["predict"] = bench_predict(args, work, store, bodies)
        if "train" in only:
            results["train_digits"] = bench_train_digits(args, work, store, bodies)
        if "big" in only:
            results["train_big"] = bench_train_big(args, work)
    results["load_average"] = {"start": load_start, "end": os.getloadavg()}
    print(
        "load average (1, 5, 15 min) at start "
        + " ".join(f"{x:.2f}" for x in load_start)
        + ", at end "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
