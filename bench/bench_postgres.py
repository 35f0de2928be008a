"""/train on the PostgreSQL store against the local store, and reload delay across services.

Run from the repository root (installs nothing; PostgreSQL from the ``pgserver`` wheel of the
dev extra, started as in the tests, as ``nobody`` when run as root)::

    .venv/bin/python bench/bench_postgres.py [--rounds 3] [--duration 5] [--clients 8]

1. Trains digits into a temporary directory and into a fresh database (the training CLI).
2. Each round, for each store in turn (order alternating): the real server
   (``python -m service --guard-mode off --holdout-every 0``), then ``--clients`` threads
   POSTing distinct 8-row digits minibatches to /train for ``--duration`` seconds; acks/s
   counted from 200 answers.
3. Reload delay: two servers on the database; ``--reloads`` times, one /train on the first,
   then /predict on the second polled every 2 ms until it reports the new version: the time
   from the ack to that answer (includes one /predict's own time).

Prints medians and ratios; the machine is measured as it is (on a shared machine, read the
ratios).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.checks import digits_minibatches  # noqa: E402  # after the path
from tests.integration.server import running_server, train_offline  # noqa: E402
from tests.postgres import running_postgres  # noqa: E402

FLAGS = ("--guard-mode", "off", "--keep-last", "100000")


def acks_per_second(base_url: str, clients: int, duration: float) -> float:
    batches = [b.payload() for b in digits_minibatches(256, seed=5)]
    acks = [0] * clients
    stop = time.monotonic() + duration

    def client(index: int) -> None:
        with httpx.Client(base_url=base_url, timeout=30, trust_env=False) as http:
            i = index
            while time.monotonic() < stop:
                if http.post("/train", json=batches[i % len(batches)]).status_code == 200:
                    acks[index] += 1
                i += clients

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(acks) / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--reloads", type=int, default=30)
    args = parser.parse_args()
    print(f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cpus")
    print(f"load average at start: {os.getloadavg()}")
    with running_postgres() as pg, tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp) / "logs"
        local = Path(tmp) / "store"
        local.mkdir()
        train_offline(local, "digits")
        database = pg.create_database()
        train_offline(database, "digits")  # type: ignore[arg-type]  # an address
        results: dict[str, list[float]] = {"local": [], "postgresql": []}
        for round_ in range(args.rounds):
            order = [("local", str(local)), ("postgresql", database)]
            for name, store in order if round_ % 2 == 0 else reversed(order):
                with running_server(store, logs, *FLAGS) as server:  # type: ignore[arg-type]
                    rate = acks_per_second(server.base_url, args.clients, args.duration)
                results[name].append(rate)
                print(f"round {round_ + 1} {name}: {rate:.0f} acks/s")
        for name, rates in results.items():
            print(f"{name}: median {statistics.median(rates):.0f} acks/s over {rates}")
        ratio = statistics.median(results["postgresql"]) / statistics.median(results["local"])
        print(f"postgresql / local: {ratio:.2f}")

        delays = []
        probe = {"instances": digits_minibatches(1, rows=2, seed=9)[0].X.tolist()}
        batches = [b.payload() for b in digits_minibatches(args.reloads, seed=6)]
        with (
            running_server(database, logs, *FLAGS) as first,  # type: ignore[arg-type]
            running_server(database, logs, *FLAGS) as second,  # type: ignore[arg-type]
            httpx.Client(base_url=first.base_url, trust_env=False) as a,
            httpx.Client(base_url=second.base_url, trust_env=False) as b,
        ):
            for batch in batches:
                response = a.post("/train", json=batch)
                acked = time.monotonic()
                version = response.json()["version"]
                while b.post("/predict", json=probe).json()["version"] != version:
                    if time.monotonic() - acked > 5:
                        raise SystemExit("no reload within 5 s")
                    time.sleep(0.002)
                delays.append(time.monotonic() - acked)
                time.sleep(0.05)
        delays.sort()
        print(
            f"reload delay over {len(delays)}: median {statistics.median(delays) * 1000:.1f} ms,"
            f" p95 {delays[int(len(delays) * 0.95) - 1] * 1000:.1f} ms, "
            f"max {delays[-1] * 1000:.1f} ms"
        )
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
