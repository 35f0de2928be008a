"""What the guard costs an online update: the same durable updates with the guard on and off.

Run from the repository root::

    .venv/bin/python bench/bench_guard.py [--rounds 7] [--updates 100] [--rows 32]

A digits model trained as the CLI does (defaults; its 180 validation rows are the guard set,
the default guard size on digits), then rounds of ``--updates`` honest 32-row minibatches
through ``ModelRepository.update`` (durable: every version fsynced), alternating a repository
with the service's default guard (enforce, holdout every 10th row) and one with the guard off
(no holdout), each on its own copy of the store. Prints the median time per update of each and
their ratio, and, measured apart, the time of the guard's own work (one forward pass over the
guard set for the candidate, the batch's row losses, the verdict, the tests across updates)
per update.

In-process, so the figures are per update without HTTP: the guard's share of a /train request
is smaller still (the request adds parsing, the event loop and the response).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import REPO, source_state

from model import LocalArtifactStore, ModelRepository
from model.data import load_builtin
from model.guard import GuardPolicy, figures, judge, relative_step, row_losses
from model.guard_history import GuardHistory, fixed_loss, judge_history, surprise_evidence
from model.splits import train_val_test_split


def timed_updates(repo: ModelRepository, batches: list[tuple[np.ndarray, list[int]]]) -> float:
    """Seconds per update, each starting from the previous one's result (as the service's
    runtime does: no reload from disk between its own updates)."""
    base = repo.load("digits")
    started = time.perf_counter()
    for X, y in batches:
        base = repo.update("digits", X, y, base=base).model
    return (time.perf_counter() - started) / len(batches)


def guard_work(repo: ModelRepository, X: np.ndarray, y: np.ndarray, repeat: int) -> float:
    """Seconds per update of the guard's own computation, on the active version."""
    loaded = repo.load("digits")
    assert loaded.guard is not None
    estimator = loaded.estimator
    candidate, _ = estimator.updated(X, y, momentum=False)
    before = loaded.guard_figures()
    assert before is not None
    policy, offline = GuardPolicy(), loaded.guard.offline
    history = GuardHistory.of(None, loaded.version, before.log_loss)
    started = time.perf_counter()
    for _ in range(repeat):
        after = figures(candidate, loaded.guard, 0.95)
        losses = row_losses(estimator, X, y)
        step = relative_step(estimator.state_.weights, candidate.state_.weights)
        assert after is not None
        verdict = judge(before, after, losses, step, 1.0, policy)
        # The tests across updates: the evidence, the fixed rows' losses, the verdict.
        evidence = surprise_evidence(losses, before, policy.suspect_rate)
        loss_before = fixed_loss(before, offline, policy.min_rows)
        loss_after = fixed_loss(after, offline, policy.min_rows)
        judge_history(verdict, history, evidence, "bench", loss_before, loss_after, policy)
    return (time.perf_counter() - started) / repeat


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--updates", type=int, default=100)
    parser.add_argument("--rows", type=int, default=32)
    args = parser.parse_args()
    print(f"source {source_state('model', 'service')}, python {sys.version.split()[0]}")
    digits = load_builtin("digits")
    X_all, y_all = np.asarray(digits.X), np.asarray(digits.y)
    _, _, test = train_val_test_split(y_all, 0.1, 0.2, 0)
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(args.updates):
        rows = rng.choice(test, size=args.rows, replace=False)
        batches.append((X_all[rows], y_all[rows].tolist()))
    with tempfile.TemporaryDirectory(prefix="bench-guard-") as tmp:
        initial = Path(tmp) / "initial"
        subprocess.run(
            [sys.executable, "-m", "model.train", "builtin:digits", "--store", str(initial)]
            + ["--quiet"],
            cwd=REPO,
            check=True,
        )
        guard_rows = ModelRepository(LocalArtifactStore(initial)).load("digits").guard
        print(f"guard set: {guard_rows.rows if guard_rows else 0} rows; {args.rows}-row updates")
        times: dict[str, list[float]] = {"on": [], "off": []}
        for round_number in range(args.rounds):
            order = ("on", "off") if round_number % 2 == 0 else ("off", "on")
            for mode in order:
                store = Path(tmp) / f"{mode}-{round_number}"
                shutil.copytree(initial, store)
                policy = GuardPolicy(mode="enforce" if mode == "on" else "off")
                repo = ModelRepository(
                    LocalArtifactStore(store),
                    guard=policy,
                    holdout_every=10 if mode == "on" else 0,
                    online_momentum=False,
                )
                times[mode].append(timed_updates(repo, batches))
        on, off = statistics.median(times["on"]), statistics.median(times["off"])
        X, y = batches[0]
        work = guard_work(
            ModelRepository(LocalArtifactStore(initial)),
            X,
            np.searchsorted(np.unique(y_all), y),
            repeat=500,
        )
    print(f"per durable update, median of {args.rounds} rounds x {args.updates} updates:")
    for mode, median in (("on", on), ("off", off)):
        rounds = ", ".join(f"{t * 1e3:.2f}" for t in times[mode])
        print(f"  guard {mode:3s} {median * 1e3:7.3f} ms   (rounds: {rounds})")
    print(
        f"  on/off {on / off:.3f}; the guard's own work {work * 1e3:.3f} ms per update = "
        f"{work / on:.1%} of a guarded update"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
