"""A writer process for the store's concurrency and crash tests (not a test module).

    python -m tests.model.store_writer concurrent STORE WORKER OPS GO_FILE
        print "ready", wait for GO_FILE, then do OPS writes (mostly online updates, every
        fourth a snapshot save of a freshly trained model); print one JSON line per write.
    python -m tests.model.store_writer loop STORE SEED
        write forever (updates, snapshots, rollbacks, keep marks); prints "running" after the
        first write so the test knows when to start aiming its SIGKILL.

The data and models are functions of (worker, op) so the test can recompute them.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from model.repository import ModelRepository
from model.softmax import SoftmaxRegression
from model.store import LocalArtifactStore

NAME = "shared"
N_FEATURES = 6
CLASSES = ("a", "b", "c")


def base_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2024)
    centres = rng.normal(scale=2.0, size=(len(CLASSES), N_FEATURES))
    which = np.arange(90) % len(CLASSES)
    X = centres[which] + rng.normal(size=(90, N_FEATURES))
    return X, np.asarray(CLASSES)[which]


def initial_model(seed: int = 0) -> SoftmaxRegression:
    X, y = base_data()
    return SoftmaxRegression(epochs=3, batch_size=16, seed=seed).fit(X, y)


def op_is_save(op: int) -> bool:
    return op % 4 == 3


def update_batch(worker: int, op: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([worker, op])
    X, y = base_data()
    rows = rng.integers(0, X.shape[0], size=1 + op % 3)
    return X[rows] + rng.normal(scale=0.1, size=(rows.shape[0], N_FEATURES)), y[rows]


def save_seed(worker: int, op: int) -> int:
    return 1000 * worker + op


def concurrent(store: str, worker: int, ops: int, go_file: str) -> None:
    repository = ModelRepository(LocalArtifactStore(store))
    print("ready", flush=True)
    deadline = time.monotonic() + 60
    while not Path(go_file).exists():
        if time.monotonic() > deadline:
            raise SystemExit("go file never appeared")
        time.sleep(0.002)
    for op in range(ops):
        if op_is_save(op):
            saved = repository.save(initial_model(save_seed(worker, op)), NAME)
            record = {"kind": "save", "version": saved.version, "parent": saved.meta["parent"]}
        else:
            X, y = update_batch(worker, op)
            result = repository.update(NAME, X, y)
            record = {
                "kind": "update",
                "version": result.model.version,
                "parent": result.previous_version,
            }
        print(json.dumps({"worker": worker, "op": op, **record}), flush=True)
        # A pause outside the lock, as real clients have: the lock polls with back-off and is
        # not fair, so a writer looping without one tends to win it again and again.
        time.sleep(0.002)


def loop(store: str, seed: int) -> None:
    local = LocalArtifactStore(store)
    repository = ModelRepository(local, keep_last=6, snapshot_every=3)
    rng = np.random.default_rng(seed)
    X, y = base_data()
    if not local.models():
        repository.save(initial_model(), NAME)
    announced = False
    while True:
        choice = rng.random()
        if choice < 0.7:
            rows = rng.integers(0, X.shape[0], size=int(rng.integers(1, 6)))
            noise = rng.normal(scale=0.1, size=(rows.shape[0], N_FEATURES))
            repository.update(NAME, X[rows] + noise, y[rows])
        elif choice < 0.85:
            repository.save(repository.load(NAME).estimator, NAME)
        elif choice < 0.95:
            recent = local.versions(NAME)[-repository.keep_last :]
            repository.activate(NAME, int(rng.choice(recent)))
        else:
            repository.keep(NAME, local.head(NAME).active, kept=bool(rng.random() < 0.5))
        if not announced:
            print("running", flush=True)
            announced = True


def main(argv: list[str]) -> None:
    mode, *args = argv
    if mode == "concurrent":
        concurrent(args[0], int(args[1]), int(args[2]), args[3])
    elif mode == "loop":
        loop(args[0], int(args[1]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
