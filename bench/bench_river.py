"""Learning from zero against River, side by side in one run (issue 16).

Run from the repository root (River is a dev/bench dependency: ``pip install river``)::

    .venv/bin/python bench/bench_river.py [--synthetic-rows 50000] [--json out.json]

Streams, each starting from no model at all, test-then-train (every row is predicted by the
model as it stands, then learnt; a batch is predicted whole, then learnt):

* ``digits``: the bundled digits shuffled (seed 0); the first 80% (1,437 rows) stream, the
  last 20% (360) are the test rows;
* ``synthetic``: the first ``--synthetic-rows`` (50,000) rows of
  ``make_classification(200000, 100, n_informative=50, n_classes=10, random_state=0)`` stream,
  its last 10,000 rows are the test rows;
* ``digits-incremental``, ``synthetic-incremental``: the same stream rows reordered so that the
  first 20% of the stream holds classes 0-4 only (in stream order), the rest following in
  stream order: classes appear one after another.

Contenders, each on the same streams in the same order:

* ``river-softmax-B`` (B = 1, 8, 32): ``compose.Pipeline(preprocessing.StandardScaler(),
  linear_model.SoftmaxRegression())`` (River's defaults) under the same test-then-train
  batching as ours: every row of a batch of B is predicted (``predict_one``) by the model as it
  stands before the batch, then the batch is learnt row by row (``learn_one``: River's
  ``SoftmaxRegression`` has no ``learn_many``); B = 1 is the row-by-row protocol;
* ``river-ovr-B``: ``compose.Pipeline(preprocessing.StandardScaler(),
  multiclass.OneVsRestClassifier(linear_model.LogisticRegression()))``, the same way;
* ``ours-1``, ``ours-8``, ``ours-32``: ``model.growth.create_estimator(names,
  allow_new_classes=True)`` (no class, the created model's defaults: running standardization,
  a rate per class, row steps while data is scarce: README, "How an update learns") learnt with
  ``partial_fit`` on minibatches of 1, 8, 32 rows, scored
  with ``predict_proba`` before each;
* ``ours-http-32``: the same model created by ``POST /models`` on a real ``python -m
  service`` (the service's defaults: the guard enforcing, every 10th row held out for its
  guard set), ``/predict`` then ``/train`` per 32-row batch through one keep-alive httpx
  client; a batch the guard refuses (409) is counted and skipped.

Figures: prequential accuracy at every 10% of the stream; rows learnt per second (rows over
the time spent in the learning calls only: ``learn_one``, ``partial_fit``, ``/train``
round trips) and test-then-train rows per second (the whole loop); the final model's
accuracy on the test rows, against ``StandardScaler`` + ``LogisticRegression(lbfgs,
max_iter=1000)`` trained offline on the whole stream. After each stream, a ``"verdict"`` line
per contender of ours against ``river-softmax`` under the same batching (and row by row): the
issue's targets (every checkpoint ≥ River's, within 2 points of lbfgs, ≥ 20× River's rows
learnt per second through the Python API).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from common import REPO, environment

sys.path.insert(0, str(REPO))

from model.data import load_builtin  # noqa: E402  the repository root, put on the path above
from model.growth import create_estimator  # noqa: E402

CHECKPOINTS = 10


@dataclass
class Stream:
    name: str
    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


@dataclass
class Outcome:
    contender: str
    stream: str
    checkpoints: list[float] = field(default_factory=list)
    learn_seconds: float = 0.0
    total_seconds: float = 0.0
    rows: int = 0
    test_accuracy: float = 0.0
    refused: int = 0
    early: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "contender": self.contender,
            "stream": self.stream,
            "checkpoints": [round(a, 4) for a in self.checkpoints],
            "rows_per_second_learning": round(self.rows / self.learn_seconds, 1),
            "rows_per_second_test_then_train": round(self.rows / self.total_seconds, 1),
            "test_accuracy": round(self.test_accuracy, 4),
            "refused": self.refused,
            "correct_per_batch_to_10pct": self.early,
        }


def incremental(stream: Stream) -> Stream:
    """The first 20% of the stream holds classes 0-4 only (in stream order), then the rest."""
    n = stream.y.shape[0]
    head = np.flatnonzero(stream.y < 5)[: n // 5]
    rest = np.setdiff1d(np.arange(n), head)  # sorted: stream order
    order = np.concatenate([head, rest])
    return Stream(
        stream.name + "-incremental", stream.X[order], stream.y[order], stream.X_test, stream.y_test
    )


def streams(synthetic_rows: int) -> list[Stream]:
    data = load_builtin("digits")
    order = np.random.default_rng(0).permutation(data.n_samples)
    X, y = np.asarray(data.X, dtype=np.float64)[order], np.asarray(data.y)[order]
    cut = int(0.8 * X.shape[0])
    digits = Stream("digits", X[:cut], y[:cut], X[cut:], y[cut:])
    from sklearn.datasets import make_classification

    Xs, ys = make_classification(
        n_samples=200_000, n_features=100, n_informative=50, n_classes=10, random_state=0
    )
    synthetic = Stream(
        "synthetic", Xs[:synthetic_rows], ys[:synthetic_rows], Xs[-10_000:], ys[-10_000:]
    )
    return [digits, incremental(digits), synthetic, incremental(synthetic)]


def checkpoints_of(correct: np.ndarray) -> list[float]:
    """Prequential accuracy after each 10% of the stream (``correct: (n,)`` flags in order)."""
    n = correct.shape[0]
    running = np.cumsum(correct)
    return [float(running[k * n // CHECKPOINTS - 1] / (k * n // CHECKPOINTS)) for k in range(1, 11)]


def outcome(
    name: str,
    stream: Stream,
    correct: np.ndarray,
    batch: int,
    learn: float,
    total: float,
    accuracy: float,
    refused: int = 0,
) -> Outcome:
    """A contender's figures from its per-row ``correct`` flags, including the rows right in
    each batch up to the first checkpoint (where the batching shows most)."""
    n = correct.shape[0]
    early = [int(correct[s : s + batch].sum()) for s in range(0, -(-n // CHECKPOINTS), batch)]
    checkpoints = checkpoints_of(correct)
    return Outcome(name, stream.name, checkpoints, learn, total, n, accuracy, refused, early)


def river_model(kind: str) -> Any:
    from river import compose, linear_model, multiclass, preprocessing

    if kind == "river-softmax":
        return compose.Pipeline(preprocessing.StandardScaler(), linear_model.SoftmaxRegression())
    return compose.Pipeline(
        preprocessing.StandardScaler(),
        multiclass.OneVsRestClassifier(linear_model.LogisticRegression()),
    )


def run_river(kind: str, batch: int, stream: Stream) -> Outcome:
    """River test-then-train in batches of ``batch`` rows: every row of a batch is predicted
    (``predict_one``) by the model as it stands before the batch, then the batch is learnt row
    by row (``learn_one``; ``SoftmaxRegression`` has no ``learn_many``). ``batch=1`` is the
    row-by-row protocol (predict one row, learn it)."""
    model = river_model(kind)
    names = [f"f{i}" for i in range(stream.X.shape[1])]
    rows = [dict(zip(names, row, strict=True)) for row in stream.X.tolist()]
    labels = stream.y.tolist()
    correct = np.zeros(len(rows), dtype=bool)
    learn = 0.0
    started = time.perf_counter()
    for start in range(0, len(rows), batch):
        xs, ys = rows[start : start + batch], labels[start : start + batch]
        for i, (x, label) in enumerate(zip(xs, ys, strict=True)):
            correct[start + i] = model.predict_one(x) == label
        t = time.perf_counter()
        for x, label in zip(xs, ys, strict=True):
            model.learn_one(x, label)
        learn += time.perf_counter() - t
    total = time.perf_counter() - started
    test = [dict(zip(names, row, strict=True)) for row in stream.X_test.tolist()]
    predicted = [model.predict_one(x) for x in test]
    accuracy = float(np.mean(np.asarray(predicted) == stream.y_test))
    return outcome(f"{kind}-{batch}", stream, correct, batch, learn, total, accuracy)


def _predictions(estimator: Any, X: np.ndarray) -> np.ndarray:
    if not estimator.classes_.shape[0]:  # no class met yet: no prediction, counted wrong
        return np.full(X.shape[0], -1)
    predicted: np.ndarray = estimator.classes_[estimator.predict_proba(X).argmax(axis=1)]
    return predicted


def run_ours(batch: int, stream: Stream, variant: str = "") -> Outcome:
    """Ours through the Python API: each batch predicted whole, then learnt by ``partial_fit``.

    ``variant`` (diagnostics, not in the default run; written for 0.5's one summed step per
    batch, BENCHMARKS.md, session 4): ``"seq"`` learns a batch row by row (one
    ``partial_fit`` per row, River's way within a batch), ``"passes2"`` takes two steps per
    batch (``passes=2``), ``"rate2x"`` doubles the created model's rate per row and its cap
    (``online_learning_rate`` 2 / (1 + d), ``learning_rate`` 1.0)."""
    names = [f"f{i}" for i in range(stream.X.shape[1])]
    params: dict[str, float] = {}
    if variant == "rate2x":
        params = {"online_learning_rate": 2.0 / (1.0 + len(names)), "learning_rate": 1.0}
    model = create_estimator(names, allow_new_classes=True, params=params)
    passes = 2 if variant == "passes2" else 1
    X, y = stream.X, stream.y
    correct = np.zeros(y.shape[0], dtype=bool)
    learn = 0.0
    started = time.perf_counter()
    for start in range(0, y.shape[0], batch):
        rows, labels = X[start : start + batch], y[start : start + batch]
        correct[start : start + batch] = _predictions(model, rows) == labels
        t = time.perf_counter()
        if variant == "seq":
            for i in range(labels.shape[0]):
                model.partial_fit(rows[i : i + 1], labels[i : i + 1])
        else:
            model.partial_fit(rows, labels, passes=passes)
        learn += time.perf_counter() - t
    total = time.perf_counter() - started
    accuracy = float(np.mean(_predictions(model, stream.X_test) == stream.y_test))
    name = f"ours-{variant}-{batch}" if variant else f"ours-{batch}"
    return outcome(name, stream, correct, batch, learn, total, accuracy)


@contextlib.contextmanager
def service(store: Path) -> Iterator[str]:
    """``python -m service`` on an empty store, its defaults but the key; its base URL."""
    import socket

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOFTMAX_")}
    env |= {"PYTHONPATH": str(REPO), "SOFTMAX_API_KEY": "bench", "OPENBLAS_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "service", "--port", str(port), "--store", str(store)]
    command += ["--log-level", "warning"]
    proc = subprocess.Popen(command, cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health/live", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the service did not start")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def run_http(stream: Stream, batch: int = 32) -> Outcome:
    import httpx

    names = [f"f{i}" for i in range(stream.X.shape[1])]
    X, y = stream.X, stream.y
    correct = np.zeros(y.shape[0], dtype=bool)
    learn, refused = 0.0, 0
    with tempfile.TemporaryDirectory() as folder, service(Path(folder)) as url:
        auth = {"Authorization": "Bearer bench"}
        with httpx.Client(base_url=url, headers=auth, timeout=60, trust_env=False) as client:
            created = client.post(
                "/models",
                json={"name": "bench", "feature_names": names, "allow_new_classes": True},
            )
            assert created.status_code == 201, created.text
            started = time.perf_counter()
            for start in range(0, y.shape[0], batch):
                rows, labels = X[start : start + batch].tolist(), y[start : start + batch]
                answer = client.post("/predict", json={"instances": rows}).json()
                predicted = np.array([-1 if p is None else p for p in answer["predictions"]])
                correct[start : start + batch] = predicted == labels
                t = time.perf_counter()
                trained = client.post("/train", json={"instances": rows, "labels": labels.tolist()})
                learn += time.perf_counter() - t
                if trained.status_code == 409:
                    refused += 1
                else:
                    assert trained.status_code == 200, trained.text
            total = time.perf_counter() - started
            final = []
            for start in range(0, stream.y_test.shape[0], 1000):  # max_rows per request
                rows = stream.X_test[start : start + 1000].tolist()
                final += client.post("/predict", json={"instances": rows}).json()["predictions"]
    accuracy = float(np.mean(np.asarray(final) == stream.y_test))
    return outcome(f"ours-http-{batch}", stream, correct, batch, learn, total, accuracy, refused)


def lbfgs(stream: Stream) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(stream.X, stream.y)
    return float(model.score(stream.X_test, stream.y_test))


BATCHES = (1, 8, 32)
TARGET_RATIO = 20.0  # learning throughput through the Python API against River's
TARGET_POINTS = 2.0  # final test accuracy at most this far below lbfgs


def verdict(ours: dict[str, Any], river: dict[str, Any], offline: float) -> dict[str, Any]:
    """Ours against River's scaled softmax run under the same batching: the issue's targets.

    A checkpoint counts as met when ours is ≥ River's at the 4 decimals printed."""
    met = [o >= r for o, r in zip(ours["checkpoints"], river["checkpoints"], strict=True)]
    ratio = ours["rows_per_second_learning"] / river["rows_per_second_learning"]
    gap = 100 * (ours["test_accuracy"] - offline)
    return {
        "verdict": ours["contender"],
        "against": river["contender"],
        "stream": ours["stream"],
        "checkpoints_met": f"{sum(met)}/{len(met)}",
        "checkpoints_missed_at": [10 * (k + 1) for k, ok in enumerate(met) if not ok],
        "points_vs_lbfgs": round(gap, 1),
        "within_2_points": gap >= -TARGET_POINTS,
        "learning_ratio": round(ratio, 1),
        # The throughput target is the Python API's; over HTTP the ratio is for information.
        "ratio_at_least_20": None if "http" in ours["contender"] else ratio >= TARGET_RATIO,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic-rows", type=int, default=50_000)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--only", nargs="+", help="run only these contenders (river-softmax-8, ours-32, ...)"
    )
    parser.add_argument(
        "--streams", nargs="+", help="run only these streams (digits, synthetic-incremental, ...)"
    )
    args = parser.parse_args(argv)
    import river

    info = environment() | {"river": river.__version__, "load_start": os.getloadavg()}
    print(json.dumps(info))
    # River and ours alternate, batch size by batch size, so background load hits both alike.
    contenders: list[tuple[str, Callable[[Stream], Outcome]]] = []
    for batch in BATCHES:
        contenders.append((f"river-softmax-{batch}", partial(run_river, "river-softmax", batch)))
        contenders.append((f"ours-{batch}", partial(run_ours, batch)))
    for batch in BATCHES:
        contenders.append((f"river-ovr-{batch}", partial(run_river, "river-ovr", batch)))
    contenders.append(("ours-http-32", run_http))
    if args.only:  # and the diagnostic variants of ours (run_ours), only when asked for
        for variant in ("seq", "passes2", "rate2x"):
            for batch in BATCHES[1:]:
                contenders.append(
                    (f"ours-{variant}-{batch}", partial(run_ours, batch, variant=variant))
                )
        contenders = [(name, run) for name, run in contenders if name in args.only]
    results: list[dict[str, Any]] = []
    verdicts: list[dict[str, Any]] = []
    for stream in streams(args.synthetic_rows):
        if args.streams and stream.name not in args.streams:
            continue
        offline = lbfgs(stream)
        print(json.dumps({"stream": stream.name, "rows": int(stream.y.shape[0]), "lbfgs": offline}))
        done: dict[str, dict[str, Any]] = {}
        for name, run in contenders:
            outcome = run(stream).to_json() | {"lbfgs_test_accuracy": round(offline, 4)}
            outcome["load"] = os.getloadavg()
            print(json.dumps(outcome), flush=True)
            results.append(outcome)
            done[name] = outcome
        for name, outcome in done.items():
            if not name.startswith("ours-"):
                continue
            batch = int(name.rsplit("-", 1)[1])
            for river_name in dict.fromkeys([f"river-softmax-{batch}", "river-softmax-1"]):
                if river_name in done:
                    verdicts.append(verdict(outcome, done[river_name], offline))
                    print(json.dumps(verdicts[-1]), flush=True)
    info["load_end"] = os.getloadavg()
    print(json.dumps({"load_end": info["load_end"]}))
    if args.json:
        document = {"environment": info, "results": results, "verdicts": verdicts}
        args.json.write_text(json.dumps(document, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
