"""Durable /train throughput against what the disk allows ("group commit").

Run from the repository root (needs ``wrk``; ``strace`` for the sync count; installs nothing)::

    .venv/bin/python bench/bench_commit.py [--rounds 3] [--duration 10] [--json out.json]

1. Disk probe, in a directory on the store's filesystem, one thread doing nothing else:
   "naive version write" (16 KB to a temporary file, fsync, ``os.replace`` to a new name,
   fsync of the directory: what one durable version costs when nothing is shared) and
   "append + fdatasync" (16 KB appended to one file, then ``fdatasync``: one log record).
   Before the servers run and after them (disks are noisy); both reported, and their median.
2. Trains a digits model into a temporary store per tree (``python -m model.train
   builtin:digits``, each tree's own CLI: newer stores need not load in older code).
3. For each round (``--rounds``, order of worker counts alternating) and each ``--workers``
   count: the real server (``python -m service``) on a fresh copy of the store, a ``wrk``
   warm-up, then ``wrk -t2 -c8`` POSTing /train bodies that rotate through 64 distinct valid
   32-row digits minibatches (rows and their true labels drawn with a fixed seed from the data
   the model was trained on: sklearn's ``load_digits``, bundled as ``builtin:digits``). Only 200
   answers count as acks; the active version must move by exactly that many (plus at most one
   per connection still in flight when wrk stops). Other statuses (e.g. 409 from the guard,
   on by default) are counted by status and printed. With 1 worker, also ``wrk -t1 -c1``
   for the latency of a lone client.
4. fsync-family syscalls per ack: the 8-client, 1-worker case again under
   ``strace -f -c -e trace=fsync,fdatasync,sync_file_range,syncfs`` (start-up and shutdown
   included; divided by the versions committed over the server's life), and, when the server
   exports it, from the ``softmax_store_syncs_total`` counter of /metrics.
5. A summary: probe figures, acks/s per worker count (medians), acks/s / naive probe rate,
   2 workers / 1 worker, the lone client's p50 against the probe's p50s, syncs per ack.

``--bare`` also measures, in the same rounds, the bare FastAPI app (``bench/bare_app.py``) on
the same bodies: its ``POST /train`` (pydantic parse, then one append + ``fdatasync`` per
request, no group commit, no model) and ``POST /train-parse`` (parse only): the ceiling the
HTTP stack itself puts on durable acks per second, against which ours is read.

``--tree PATH`` also measures the server of another checkout (e.g. from
``git worktree add /tmp/before <commit>``) in the same rounds, on its own copies of the store.
The machine is measured as it is: on a shared machine, read medians and ratios.
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
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from bench_serving import (
    API_KEY,
    PYTHON,
    WrkRun,
    active_version,
    bare_argv,
    free_port,
    server,
    settled_version,
    versions,
    wait_ready,
)
from common import REPO, source_state

PROBE_BYTES = 16 * 1024
N_BODIES = 64
BATCH_ROWS = 32
SEED = 0
SYNC_CALLS = ("fsync", "fdatasync", "sync_file_range", "syncfs")
SYNC_METRIC = "softmax_store_syncs_total"

# wrk's Lua, in the style of bench_serving's: every thread pre-formats the same bodies (read
# from files) and rotates through them in request(), each thread from its own offset; per-thread
# counters of 200s and of other statuses (by status), summed in done() into one BENCH line.
LUA_TEMPLATE = """
local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
function init(args)
  ok = 0
  other = 0
  statuses = {}
  reqs = {}
  for i = 1, %(count)d do
    local headers = {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer %(key)s",
    }
    local f = assert(io.open(string.format(%(pattern)s, i - 1), "rb"))
    reqs[i] = wrk.format("POST", nil, headers, f:read("*a"))
    f:close()
  end
  n = (id * 17) %% #reqs
end
function request()
  n = n %% #reqs + 1
  return reqs[n]
end
function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
  else
    other = other + 1
    statuses[status] = (statuses[status] or 0) + 1
  end
end
function done(summary, latency, requests)
  local ok_total, other_total, by_status = 0, 0, {}
  for _, t in ipairs(threads) do
    ok_total = ok_total + (t:get("ok") or 0)
    other_total = other_total + (t:get("other") or 0)
    for status, count in pairs(t:get("statuses") or {}) do
      by_status[status] = (by_status[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(by_status) do
    table.insert(parts, string.format("%%d:%%d", status, count))
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%%d duration_us=%%d p50=%%d p90=%%d p99=%%d status_errors=%%d " ..
    "socket_errors=%%d ok=%%d other=%%d statuses=%%s\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout,
    ok_total, other_total, table.concat(parts, ",")))
end
"""


@dataclass
class TrainRun:
    """One measured wrk run of /train: wrk's figures, the statuses, what the store did."""

    tree: str
    workers: int
    clients: int
    wrk: WrkRun
    statuses: dict[int, int]
    version_before: int
    version_after: int
    metric_syncs: float | None = None  # softmax_store_syncs_total moved by this much
    cpu_s: float | None = None  # CPU seconds (user + system) of the server's processes
    round: int = 0

    @property
    def cpu_ms_per_ack(self) -> float | None:
        if self.cpu_s is None or not self.wrk.ok:
            return None
        return 1e3 * self.cpu_s / self.wrk.ok

    @property
    def acks_per_s(self) -> float:
        return self.wrk.ok / self.wrk.seconds

    def figures(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "acks_per_s": self.acks_per_s,
            "syncs_per_ack_metric": self.syncs_per_ack(),
            "cpu_ms_per_ack": self.cpu_ms_per_ack,
        }

    def syncs_per_ack(self) -> float | None:
        committed = self.version_after - self.version_before
        if self.metric_syncs is None or committed <= 0:
            return None
        return self.metric_syncs / committed


@dataclass
class Probe:
    label: str
    seconds: list[float] = field(default_factory=list)

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.seconds) * 1e3

    @property
    def p90_ms(self) -> float:
        return float(np.percentile(self.seconds, 90)) * 1e3

    @property
    def rate(self) -> float:
        return 1e3 / self.p50_ms

    def figures(self) -> dict[str, Any]:
        return {"per_s": self.rate, "p50_ms": self.p50_ms, "p90_ms": self.p90_ms}


# ---------------------------------------------------------------------------- disk probe
def probe_naive(directory: Path, iterations: int) -> Probe:
    """What a version costs written alone: new file, fsync, rename to a new name, fsync dir."""
    directory.mkdir(parents=True, exist_ok=True)
    data = os.urandom(PROBE_BYTES)
    probe = Probe("naive version write")
    for i in range(iterations):
        tmp, final = directory / f".tmp-{i}", directory / f"v{i:08d}.bin"
        started = time.perf_counter()
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.seconds.append(time.perf_counter() - started)
    shutil.rmtree(directory)
    return probe


def probe_append(directory: Path, iterations: int) -> Probe:
    """What a log record costs: 16 KB appended to one file, then fdatasync."""
    directory.mkdir(parents=True, exist_ok=True)
    data = os.urandom(PROBE_BYTES)
    probe = Probe("append + fdatasync")
    fd = os.open(directory / "log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for _ in range(iterations):
            started = time.perf_counter()
            os.write(fd, data)
            os.fdatasync(fd)
            probe.seconds.append(time.perf_counter() - started)
    finally:
        os.close(fd)
    shutil.rmtree(directory)
    return probe


def run_probes(work: Path, iterations: int, when: str) -> dict[str, Probe]:
    probes = {
        "naive": probe_naive(work / f"probe-{when}-naive", iterations),
        "append": probe_append(work / f"probe-{when}-append", iterations),
    }
    for probe in probes.values():
        print(
            f"probe {when:6s} {probe.label:20s} {probe.rate:7.0f}/s  p50 {probe.p50_ms:6.2f} ms"
            f"  p90 {probe.p90_ms:6.2f} ms  ({iterations} x {PROBE_BYTES // 1024} KB)",
            flush=True,
        )
    return probes


# ---------------------------------------------------------------------------- data
def write_bodies(work: Path) -> tuple[Path, bytes]:
    """``N_BODIES`` /train bodies (rows and true labels drawn with a fixed seed) as
    ``train-NNN.json``; and a 1-row /predict body for the readiness check."""
    from model.data import load_builtin

    data = load_builtin("digits")  # sklearn's load_digits, bundled
    X, y = np.asarray(data.X), np.asarray(data.y)
    rng = np.random.default_rng(SEED)
    directory = work / "bodies"
    directory.mkdir()
    for i in range(N_BODIES):
        rows = rng.choice(len(y), size=BATCH_ROWS, replace=False)
        body = {"instances": X[rows].tolist(), "labels": y[rows].tolist()}
        (directory / f"train-{i:03d}.json").write_bytes(json.dumps(body).encode())
    return directory, json.dumps({"instances": X[:1].tolist()}).encode()


def lua_script(work: Path, bodies: Path) -> Path:
    path = work / "train-rotate.lua"
    pattern = json.dumps(str(bodies / "train-%03d.json"))  # a valid Lua string literal
    path.write_text(LUA_TEMPLATE % {"count": N_BODIES, "key": API_KEY, "pattern": pattern})
    return path


# ---------------------------------------------------------------------------- processes
def children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry))
    return found


@contextlib.contextmanager
def serve(
    name: str,
    tree: Path,
    store: Path,
    workers: int,
    log_dir: Path,
    ready_body: bytes,
    trace_to: Path | None = None,
) -> Iterator[str]:
    """bench_serving's ``server`` (wait until POST /predict answers 200, stop with SIGINT),
    plus what it cannot do: run ``tree``'s server with ``PYTHONPATH=tree``, and under strace.

    Under strace the server is strace's child: it is stopped with SIGTERM (by its PID), and
    strace, which writes its summary when its child exits, is waited for."""
    port = free_port()
    argv = [PYTHON, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--store", str(store), "--workers", str(workers), "--api-key", API_KEY]
    argv += ["--log-level", "warning"]
    if trace_to is not None:
        argv = [*strace_prefix(), "-o", str(trace_to), *argv]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    SERVERS[url] = proc.pid
    try:
        wait_ready(name, proc, url, log_path, ready_body)
        yield url
    finally:
        SERVERS.pop(url, None)
        stop(proc, traced=trace_to is not None)


SERVERS: dict[str, int] = {}  # url -> PID of the server process serving it


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants (the uvicorn workers), from
    /proc (live processes only: read before and after a run while the server is up)."""
    ticks = 0
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK") + sum(cpu_seconds(c) for c in children(pid))


def stop(proc: subprocess.Popen[bytes], *, traced: bool) -> None:
    if proc.poll() is not None:
        return
    server_pids = children(proc.pid) if traced else []
    if traced and server_pids:
        for pid in server_pids:  # the python server strace started (and nothing else)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
        return
    except subprocess.TimeoutExpired:
        pass
    print(f"warning: server {proc.pid} did not stop within 30 s: killed", file=sys.stderr)
    for pid in server_pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.kill()
    proc.wait(timeout=10)


_STRACE: list[str] | None = None


def strace_prefix() -> list[str]:
    """strace's argv, with ``--seccomp-bpf`` (only the traced calls stop the server) when
    this strace and kernel allow it; ``[]`` when strace cannot run here."""
    global _STRACE
    if _STRACE is None:
        _STRACE = []
        base = ["strace", "-f", "-c", "-e", "trace=" + ",".join(SYNC_CALLS)]
        for extra in (["--seccomp-bpf"], []):
            argv = [*base, *extra, "-o", os.devnull, "true"]
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                if subprocess.run(argv, capture_output=True, timeout=30).returncode == 0:
                    _STRACE = [*base, *extra]
                    break
    return _STRACE


def strace_counts(path: Path) -> dict[str, int]:
    """Calls per syscall from ``strace -c``'s summary table."""
    counts: dict[str, int] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1] in SYNC_CALLS and parts[3].isdigit():
            counts[parts[-1]] = int(parts[3])
    return counts


def metric_value(url: str, name: str) -> float | None:
    """The sum over labels of a metric in /metrics, or None when it is not exported."""
    text = httpx.get(url + "/metrics", timeout=30).text
    values = [
        float(line.rsplit(None, 1)[1])
        for line in text.splitlines()
        if re.match(rf"{re.escape(name)}(\{{.*\}})?\s", line)
    ]
    return sum(values) if values else None


# ---------------------------------------------------------------------------- wrk
def run_wrk(
    url: str, script: Path, duration: float, threads: int, connections: int
) -> tuple[WrkRun, dict[int, int]]:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s"]
    argv += ["--timeout", "10s", "-s", str(script), url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=True)
    match = re.search(r"^BENCH (.*)$", out.stdout, re.MULTILINE)
    if not match:
        raise SystemExit(f"unexpected wrk output:\n{out.stdout}\n{out.stderr}")
    values = dict(pair.split("=", 1) for pair in match.group(1).split())
    statuses = {
        int(status): int(count)
        for status, count in (item.split(":") for item in values["statuses"].split(",") if item)
    }
    run = WrkRun(
        requests=int(values["requests"]),
        seconds=int(values["duration_us"]) / 1e6,
        p50_ms=int(values["p50"]) / 1e3,
        p90_ms=int(values["p90"]) / 1e3,
        p99_ms=int(values["p99"]) / 1e3,
        status_errors=int(values["status_errors"]),
        socket_errors=int(values["socket_errors"]),
        ok=int(values["ok"]),
    )
    return run, statuses


def measure(
    url: str, script: Path, duration: float, clients: int, tree: str, workers: int
) -> TrainRun:
    """One wrk run; checks that the active version moved by the number of 200s."""
    threads = min(2, clients)
    before = settled_version(url)
    syncs_before = metric_value(url, SYNC_METRIC)
    pid = SERVERS.get(url)
    cpu_before = cpu_seconds(pid) if pid is not None else None
    run, statuses = run_wrk(url + "/train", script, duration, threads, clients)
    cpu = cpu_seconds(pid) - cpu_before if pid is not None and cpu_before is not None else None
    after = settled_version(url)
    syncs_after = metric_value(url, SYNC_METRIC)
    # wrk stops counting with up to one request per connection in flight; those still commit.
    if not 0 <= (after - before) - run.ok <= clients:
        raise SystemExit(
            f"/train ({tree}, {workers} workers, {clients} clients): {run.ok} answers were 200 "
            f"but the active version moved by {after - before} ({before} -> {after})"
        )
    metric = None
    if syncs_before is not None and syncs_after is not None:
        metric = syncs_after - syncs_before
    train = TrainRun(tree, workers, clients, run, statuses, before, after, metric, cpu)
    refused = ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items()))
    errors = f", socket errors {run.socket_errors}" if run.socket_errors else ""
    per_ack = train.syncs_per_ack()
    print(
        f"  {tree} {workers}w {clients:2d}c: {train.acks_per_s:6.0f} acks/s "
        f"({run.ok} x 200{', ' + refused if refused else ''}{errors}; version {before} -> "
        f"{after})  p50 {run.p50_ms:6.2f}  p90 {run.p90_ms:6.2f}  p99 {run.p99_ms:6.2f} ms"
        + (f"  {SYNC_METRIC}/ack {per_ack:.2f}" if per_ack is not None else "")
        + (f"  cpu/ack {train.cpu_ms_per_ack:.2f} ms" if train.cpu_ms_per_ack else ""),
        flush=True,
    )
    return train


def bare_session(
    args: argparse.Namespace, work: Path, script: Path, ready: bytes
) -> list[TrainRun]:
    """The bare app (1 worker): ``--clients`` and 1 client on its durable ``/train``, and
    ``--clients`` on ``/train-parse``. Its answers carry no version: only 200s are counted."""
    os.environ["BARE_TRAIN_LOG"] = str(work / "bare-train.log")
    port = free_port()
    runs = []
    with server("bare", bare_argv(port), port, work, ready) as url:
        run_wrk(url + "/train", script, args.warmup, min(2, args.clients), args.clients)
        for route, clients in (
            ("/train", args.clients),
            ("/train", 1),
            ("/train-parse", args.clients),
        ):
            run, statuses = run_wrk(url + route, script, args.duration, min(2, clients), clients)
            tree = "bare" if route == "/train" else "bare-parse"
            train = TrainRun(tree, 1, clients, run, statuses, 0, 0, None)
            print(
                f"  {tree} 1w {clients:2d}c: {train.acks_per_s:6.0f} 200s/s ({run.ok} x 200, "
                f"{sum(statuses.values())} other)  p50 {run.p50_ms:6.2f}  p90 {run.p90_ms:6.2f}"
                f"  p99 {run.p99_ms:6.2f} ms",
                flush=True,
            )
            runs.append(train)
    return runs


# ---------------------------------------------------------------------------- benchmark
def session(
    args: argparse.Namespace,
    work: Path,
    store: Path,
    tree_name: str,
    tree: Path,
    workers: int,
    script: Path,
    ready: bytes,
    *,
    multi: bool,
    single: bool,
) -> list[TrainRun]:
    """A fresh server (``workers`` workers, fresh copy of the store): warm-up, then the
    ``--clients`` run and/or the 1-client run."""
    copy = work / f"store-{tree_name}-{workers}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(store, copy)
    runs = []
    with serve(f"{tree_name}-{workers}w", tree, copy, workers, work, ready) as url:
        run_wrk(url + "/train", script, args.warmup, min(2, args.clients), args.clients)
        if multi:
            runs.append(measure(url, script, args.duration, args.clients, tree_name, workers))
        if single:
            runs.append(measure(url, script, args.duration, 1, tree_name, workers))
    shutil.rmtree(copy, ignore_errors=True)
    return runs


def traced_session(
    args: argparse.Namespace,
    work: Path,
    store: Path,
    tree_name: str,
    tree: Path,
    script: Path,
    ready: bytes,
) -> dict[str, Any]:
    """The ``--clients``, 1-worker case under strace: sync calls per committed version over
    the server's whole life (start-up, readiness checks and shutdown included)."""
    if not strace_prefix():
        print(f"strace ({tree_name}): strace cannot run here: n/a", flush=True)
        return {"available": False}
    copy = work / f"store-{tree_name}-strace"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(store, copy)
    trace = work / f"strace-{tree_name}.txt"
    with serve(f"{tree_name}-strace", tree, copy, 1, work, ready, trace_to=trace) as url:
        first = active_version(url)
        syncs_before = metric_value(url, SYNC_METRIC)
        run, statuses = run_wrk(
            url + "/train", script, args.strace_duration, min(2, args.clients), args.clients
        )
        last = settled_version(url)
        syncs_after = metric_value(url, SYNC_METRIC)
    if not trace.exists() or not trace.read_text().strip():
        raise SystemExit(f"strace ({tree_name}) wrote no summary to {trace}")
    counts = strace_counts(trace)
    committed = last - first
    total = sum(counts.values())
    per_ack = total / committed if committed > 0 else None
    metric_per_ack = None
    if syncs_before is not None and syncs_after is not None and committed > 0:
        metric_per_ack = (syncs_after - syncs_before) / committed
    detail = ", ".join(f"{call} {counts.get(call, 0)}" for call in SYNC_CALLS)
    print(
        f"strace ({tree_name}, 1 worker, {args.clients} clients, {args.strace_duration:g} s, "
        f"{' '.join(strace_prefix()[1:])}): {run.ok} x 200 "
        f"({run.ok / run.seconds:.0f} acks/s under strace), version {first} -> {last}; "
        f"{total} sync calls ({detail}) = "
        + (f"{per_ack:.2f} per ack" if per_ack is not None else "n/a per ack"),
        flush=True,
    )
    return {
        "available": True,
        "strace": strace_prefix(),
        "wrk": asdict(run),
        "statuses": statuses,
        "version_before": first,
        "version_after": last,
        "calls": counts,
        "syncs_per_ack": per_ack,
        "metric_syncs_per_ack": metric_per_ack,
    }


def round_ratios(runs: list[TrainRun], tree: str, clients: int) -> list[float]:
    """2-worker acks/s over 1-worker acks/s of ``tree``, one ratio per round."""
    by_round: dict[int, dict[int, float]] = {}
    for r in runs:
        if r.tree == tree and r.clients == clients:
            by_round.setdefault(r.round, {})[r.workers] = r.acks_per_s
    return [rates[2] / rates[1] for rates in by_round.values() if 1 in rates and 2 in rates]


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt_opt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds (medians over them)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk warm-up")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts")
    parser.add_argument("--clients", type=int, default=8, help="wrk connections (-c)")
    parser.add_argument("--probe-iterations", type=int, default=300, help="per disk probe")
    parser.add_argument("--strace-duration", type=float, default=5.0, help="traced run seconds")
    parser.add_argument("--no-strace", action="store_true", help="skip the strace run")
    parser.add_argument(
        "--no-lone-client", action="store_true", help="skip the 1-client runs (wrk -c1)"
    )
    parser.add_argument(
        "--tree",
        help="another checkout whose server is measured beside ours in the same rounds "
        "(e.g. from `git worktree add /tmp/before <commit>`)",
    )
    parser.add_argument(
        "--bare", action="store_true", help="also measure bench/bare_app.py's /train routes"
    )
    parser.add_argument("--tmp-root", help="directory for the temporary stores (default: TMPDIR)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("error: wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    load_start = os.getloadavg()
    env = versions()
    trees = {"ours": REPO}
    if args.tree:
        trees["tree"] = Path(args.tree).resolve()
        env["tree"] = f"{trees['tree']} at {source_state('model', 'service', repo=trees['tree'])}"
    machine = {
        "cpus": str(os.cpu_count()),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
    print(", ".join(f"{k} {v}" for k, v in env.items()))
    print(", ".join(f"{k} {v}" for k, v in machine.items()), flush=True)
    results: dict[str, Any] = {"versions": env, "machine": machine, "settings": vars(args)}
    with tempfile.TemporaryDirectory(prefix="softmax-commit-", dir=args.tmp_root) as tmp:
        work = Path(tmp)
        print(f"work directory {work} (stores and probes on its filesystem)", flush=True)
        probes_before = run_probes(work, args.probe_iterations, "before")
        bodies, ready = write_bodies(work)
        script = lua_script(work, bodies)
        # Each tree trains its own store with its own CLI: a store written by one release may
        # not load in an older one (README, "Compatibility").
        stores = {name: work / f"store-{name}" for name in trees}
        for name, tree in trees.items():
            subprocess.run(
                [PYTHON, "-m", "model.train", "builtin:digits", "--store", str(stores[name])]
                + ["--quiet"],
                cwd=tree,
                env={**os.environ, "PYTHONPATH": str(tree)},
                check=True,
            )
        runs: list[TrainRun] = []
        for round_number in range(1, args.rounds + 1):
            print(f"round {round_number}", flush=True)
            order = [(t, w) for t in trees for w in args.workers]
            if round_number % 2 == 0:
                order.reverse()
            if 1 not in args.workers and not args.no_lone_client:  # on 1 worker regardless
                order += [(t, 1) for t in trees]
            for tree_name, workers in order:
                runs += session(
                    args,
                    work,
                    stores[tree_name],
                    tree_name,
                    trees[tree_name],
                    workers,
                    script,
                    ready,
                    multi=workers in args.workers,
                    single=workers == 1 and not args.no_lone_client,
                )
            for run in runs:
                run.round = run.round or round_number
            if args.bare:
                runs += bare_session(args, work, script, ready)
        traced: dict[str, Any] = {}
        if not args.no_strace:
            for tree_name, tree in trees.items():
                traced[tree_name] = traced_session(
                    args, work, stores[tree_name], tree_name, tree, script, ready
                )
        probes_after = run_probes(work, args.probe_iterations, "after")

    # ------------------------------------------------------------------ summary
    probe_table: dict[str, Any] = {}
    for key in ("naive", "append"):
        b, a = probes_before[key], probes_after[key]
        probe_table[key] = {
            "label": b.label,
            "before": b.figures(),
            "after": a.figures(),
            "per_s": statistics.median([b.rate, a.rate]),
            "p50_ms": statistics.median([b.p50_ms, a.p50_ms]),
        }
    naive, append = probe_table["naive"], probe_table["append"]
    print(
        f"\ndisk probe ({args.probe_iterations} x {PROBE_BYTES // 1024} KB, one thread; "
        "rate = 1/p50):"
    )
    print(f"{'':22s} {'before':>16s} {'after':>16s} {'median':>16s}")
    for entry in probe_table.values():
        cells = [
            f"{entry[when]['per_s']:6.0f}/s {entry[when]['p50_ms']:5.2f}ms"
            for when in ("before", "after")
        ]
        cells.append(f"{entry['per_s']:6.0f}/s {entry['p50_ms']:5.2f}ms")
        print(f"{entry['label']:22s} " + " ".join(f"{c:>16s}" for c in cells))

    print(
        f"\n/train, 32-row digits minibatches rotating over {N_BODIES} bodies, medians over "
        f"{args.rounds} rounds x {args.duration:g} s (wrk -t{min(2, args.clients)} "
        f"-c{args.clients}):"
    )
    print(
        f"{'server':6s} {'workers':>7s} {'acks/s':>8s} {'/naive':>7s} {'p50 ms':>7s} "
        f"{'p99 ms':>7s} {'non-200':>8s} {'syncs/ack (metric)':>19s} {'CPU ms/ack':>11s}"
    )
    summary: dict[str, Any] = {}
    for tree_name in trees:
        summary[tree_name] = {}
        for workers in args.workers:
            found = [
                r
                for r in runs
                if r.tree == tree_name and r.workers == workers and r.clients == args.clients
            ]
            acks = med([r.acks_per_s for r in found])
            non_200 = sum(sum(r.statuses.values()) for r in found)
            per_ack = [x for r in found if (x := r.syncs_per_ack()) is not None]
            cpu = [x for r in found if (x := r.cpu_ms_per_ack) is not None]
            entry = {
                "acks_per_s": acks,
                "acks_per_naive_write": acks / naive["per_s"],
                "p50_ms": med([r.wrk.p50_ms for r in found]),
                "p99_ms": med([r.wrk.p99_ms for r in found]),
                "non_200": non_200,
                "syncs_per_ack_metric": med(per_ack) if per_ack else None,
                "cpu_ms_per_ack": med(cpu) if cpu else None,
            }
            summary[tree_name][f"{workers}w"] = entry
            print(
                f"{tree_name:6s} {workers:7d} {acks:8.0f} {entry['acks_per_naive_write']:7.2f} "
                f"{entry['p50_ms']:7.2f} {entry['p99_ms']:7.2f} {non_200:8d} "
                f"{fmt_opt(entry['syncs_per_ack_metric']):>19s} "
                f"{fmt_opt(entry['cpu_ms_per_ack']):>11s}"
            )
        if "1w" in summary[tree_name] and "2w" in summary[tree_name]:
            ratio = summary[tree_name]["2w"]["acks_per_s"] / summary[tree_name]["1w"]["acks_per_s"]
            summary[tree_name]["2w_over_1w"] = ratio
            # 1 and 2 workers run back to back in each round: their ratio round by round is
            # less at the mercy of the machine's load drifting between rounds.
            per_round = round_ratios(runs, tree_name, args.clients)
            summary[tree_name]["2w_over_1w_per_round"] = per_round
            print(
                f"{tree_name:6s} 2 workers / 1 worker: {ratio:.2f} (medians); round by round "
                + ", ".join(f"{x:.2f}" for x in per_round)
                + (f" (median {med(per_round):.2f})" if per_round else "")
            )
    print("\n1 client (wrk -t1 -c1), 1 worker, medians:")
    for tree_name in trees if not args.no_lone_client else ():
        lone = [r for r in runs if r.tree == tree_name and r.clients == 1]
        p50 = med([r.wrk.p50_ms for r in lone])
        entry = {
            "acks_per_s": med([r.acks_per_s for r in lone]),
            "p50_ms": p50,
            "p90_ms": med([r.wrk.p90_ms for r in lone]),
            "p99_ms": med([r.wrk.p99_ms for r in lone]),
            "p50_over_naive_p50": p50 / naive["p50_ms"],
            "p50_over_append_p50": p50 / append["p50_ms"],
        }
        summary[tree_name]["1client"] = entry
        print(
            f"{tree_name:6s} {entry['acks_per_s']:6.0f} acks/s  p50 {p50:6.2f}  "
            f"p90 {entry['p90_ms']:6.2f}  p99 {entry['p99_ms']:6.2f} ms;  p50 / naive write p50 "
            f"{entry['p50_over_naive_p50']:.2f}, p50 / append+fdatasync p50 "
            f"{entry['p50_over_append_p50']:.2f}"
        )
    print(f"\nsync calls per ack (1 worker, {args.clients} clients):")
    for tree_name in trees:
        t = traced.get(tree_name, {})
        metric = summary[tree_name].get("1w", {}).get("syncs_per_ack_metric")
        if metric is None:
            metric = t.get("metric_syncs_per_ack")
        strace_figure = "skipped (--no-strace)" if args.no_strace else "n/a"
        if t.get("available"):
            strace_figure = (
                fmt_opt(t["syncs_per_ack"])
                + " ("
                + ", ".join(f"{call} {n}" for call, n in t["calls"].items())
                + ")"
            )
        print(f"{tree_name:6s} strace {strace_figure};  {SYNC_METRIC}: {fmt_opt(metric)}")
        summary[tree_name]["strace"] = t

    if args.bare:
        print("\nthe bare app (bench/bare_app.py, 1 worker), medians; ours 1 worker against it:")
        bare: dict[str, Any] = {}
        for label, tree, clients in (
            ("durable /train", "bare", args.clients),
            ("durable /train", "bare", 1),
            ("/train-parse", "bare-parse", args.clients),
        ):
            found = [r for r in runs if r.tree == tree and r.clients == clients]
            rate = med([r.acks_per_s for r in found])
            p50 = med([r.wrk.p50_ms for r in found])
            mine = summary["ours"]["1w" if clients == args.clients else "1client"]["acks_per_s"]
            figures = {"per_s": rate, "p50_ms": p50, "ours_over_bare": mine / rate}
            bare[f"{tree}-{clients}c"] = figures
            print(
                f"  bare {label:15s} {clients:2d}c: {rate:6.0f}/s p50 {p50:6.2f} ms;  "
                f"ours / bare {mine / rate:.2f}"
            )
        results["bare"] = bare

    nonzero = [r for r in runs if r.statuses]
    if nonzero:
        print("\nnon-200 answers (counted, not acks):")
        for r in nonzero:
            print(f"  {r.tree} {r.workers}w {r.clients}c: {r.statuses}")
    results["probe"] = probe_table
    results["summary"] = summary
    results["runs"] = [r.figures() for r in runs]
    results["load_average"] = {"start": load_start, "end": os.getloadavg()}
    print(
        "\nload average (1, 5, 15 min) at start "
        + " ".join(f"{x:.2f}" for x in load_start)
        + ", at end "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
