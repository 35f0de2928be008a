"""Durability seen from the kernel: every acknowledged /train is preceded by a sync that covers
its record, and under concurrency fewer syncs than acknowledgements are made.

``strace`` attaches to the real server while eight clients stream /train; from its trace of
``write``, ``fdatasync``, ``fsync`` and the socket writes, each answer that acknowledges
version V must come after (1) the write of V's record (an update-log append whose header
names V, or a snapshot's temporary ``vV.npz``) and (2) a sync of that same file that began
after the write and ended before the answer was written (for a snapshot, also the directory's
fsync after it). Needs Debian's ``strace`` (skipped with that said when absent;
``TRACE_TEST_REQUIRED=1`` turns the skip into an error).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from .checks import digits_minibatches
from .clients import TrainStream
from .conftest import LiveServerFactory

if shutil.which("strace") is None:
    if os.environ.get("TRACE_TEST_REQUIRED"):
        raise RuntimeError("the sync trace test needs strace (apt-get install strace)")
    pytest.skip("sync trace test: strace is not installed", allow_module_level=True)

CLIENTS = 8
TRACED = "write,writev,sendto,sendmsg,fsync,fdatasync"
_LINE = re.compile(r"^(\d+)\s+(\d+\.\d+)\s+(.*)$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
_DURATION = re.compile(r"<(\d+\.\d+)>\s*$")
_STRING = re.compile(r'"((?:\\x[0-9a-f]{2})*)"')
_FD_PATH = re.compile(r"^\w+\(\d+<([^>]*)>")
_SNAPSHOT_TMP = re.compile(r"/\.tmp-[^/]*-v(\d{8})\.npz$")
_ESCAPE = re.compile(rb"\\x([0-9a-f]{2})")
_ANSWER = re.compile(rb'\{"version":(\d+),"previous_version":')


@dataclass(frozen=True)
class Call:
    name: str
    start: float
    end: float
    path: str  # the file descriptor's path (or socket description) as strace -yy shows it
    data: bytes  # the first buffer written, decoded


def unescape(text: str) -> bytes:
    """What ``strace -xx`` printed as ``\\xNN`` escapes (strings and paths alike)."""
    return _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), text.encode())


def parse(trace: str) -> list[Call]:
    """The completed system calls of an ``strace -f -ttt -T -yy -xx`` log."""
    calls = []
    pending: dict[tuple[str, str], tuple[float, str]] = {}
    for line in trace.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        pid, stamp, rest = match.group(1), float(match.group(2)), match.group(3)
        if resumed := _RESUMED.match(rest):
            name = resumed.group(1)
            if (pid, name) not in pending:
                continue  # begun before strace attached
            start, head = pending.pop((pid, name))
            text = head + resumed.group(2)
        elif rest.endswith("<unfinished ...>"):
            name = rest.split("(", 1)[0]
            pending[(pid, name)] = (stamp, rest[: -len("<unfinished ...>")])
            continue
        else:
            start, text = stamp, rest
        name = text.split("(", 1)[0]
        duration = _DURATION.search(text)
        path = _FD_PATH.match(text)
        strings = _STRING.findall(text)
        calls.append(
            Call(
                name,
                start,
                start + (float(duration.group(1)) if duration else 0.0),
                unescape(path.group(1)).decode(errors="replace") if path else "",
                unescape(strings[0]) if strings else b"",
            )
        )
    return calls


def test_each_acknowledgement_follows_a_sync_of_its_record(
    live_server: LiveServerFactory, live_digits_store: Path, tmp_path: Path
) -> None:
    server = live_server(live_digits_store, "--workers", "1")
    trace_path = tmp_path / "trace.txt"
    tracer = subprocess.Popen(
        ["strace", "-f", "-ttt", "-T", "-yy", "-xx", "-s", "1024", "-e", f"trace={TRACED}"]
        + ["-o", str(trace_path), "-p", str(server.proc.pid)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert tracer.stderr is not None
        attached = tracer.stderr.readline()  # "strace: Process N attached"
        assert "attached" in attached, attached
        time.sleep(0.3)
        with TrainStream(server, digits_minibatches(4000, rows=32, seed=11)) as stream:
            stream.start(CLIENTS)
            time.sleep(3.0)
            stream.stop()
    finally:
        tracer.send_signal(signal.SIGINT)  # detaches, leaving the server running
        tracer.wait(timeout=30)
        if tracer.stderr is not None:
            tracer.stderr.close()
    assert not stream.refused, stream.refused[:3]
    assert len(stream.acknowledged) > 50

    calls = parse(trace_path.read_text())
    directory = str(live_digits_store / "digits")
    written: dict[int, Call] = {}  # version -> the write of its record
    answered: dict[int, Call] = {}  # version -> the first socket write acknowledging it
    syncs: dict[str, list[Call]] = {}
    for call in calls:
        if call.name in ("fsync", "fdatasync"):
            syncs.setdefault(call.path, []).append(call)
        elif call.path.endswith(".log") and call.data.startswith(b"SSU1"):
            written.setdefault(int.from_bytes(call.data[4:8], "little"), call)
        elif snapshot := _SNAPSHOT_TMP.search(call.path):
            written.setdefault(int(snapshot.group(1)), call)
        elif call.path.startswith(("TCP", "TCPv6")) and (answer := _ANSWER.search(call.data)):
            answered.setdefault(int(answer.group(1)), call)

    logged = 0
    for version in stream.acknowledged:
        assert version in answered, f"no answer acknowledging version {version} was traced"
        assert version in written, f"version {version} was acknowledged, its record not written"
        write, answer = written[version], answered[version]
        covering = [
            s for s in syncs.get(write.path, []) if s.start >= write.end and s.end <= answer.start
        ]
        assert covering, (
            f"version {version}: no sync of {write.path} between the write of its record "
            f"({write.end:.6f}) and its acknowledgement ({answer.start:.6f})"
        )
        if write.path.endswith(".log"):
            logged += 1
        else:  # a snapshot: renamed into place, then the directory synced
            assert any(
                covering[0].end <= s.start and s.end <= answer.start
                for s in syncs.get(directory, [])
            ), f"version {version}: the directory was not synced before its acknowledgement"
    log_syncs = sum(
        1
        for path, found in syncs.items()
        if path.endswith(".log")
        for s in found
        if s.name == "fdatasync"
    )
    print(f"{len(stream.acknowledged)} acknowledged, {logged} logged, {log_syncs} log syncs")
    assert 0 < log_syncs < logged, "group commit: fewer log syncs than logged acknowledgements"
