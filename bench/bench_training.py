"""Training benchmark: our SoftmaxRegression against scikit-learn, wall time and test accuracy.

Run from the repository root::

    .venv/bin/python bench/bench_training.py [--rounds 3] [--blas-threads 1] [--json out.json]

Two data sets, each split once (stratified, seed 0) with ``model.splits.train_val_test_split``
into 70% train, 10% validation and 20% test:

* ``digits``: the bundled 8x8 digits (1,797 rows, 64 features, 10 classes);
* ``synthetic``: ``make_classification(n_samples=200000, n_features=100, n_informative=50,
  n_classes=10, random_state=0)``.

Estimators (every one fits on the same rows and is scored on the same 20% test rows):

* ``ours``: ``SoftmaxRegression`` on the 70% train part, early-stopping on the 10% validation
  part (it standardizes inside ``fit``). Defaults on digits; on synthetic the settings in
  ``SYNTHETIC_SETTINGS`` (and, for reference, the defaults as a separate row);
* ``lbfgs``: ``StandardScaler`` + ``LogisticRegression(solver="lbfgs", max_iter=1000)`` on the
  80% train+validation part (it needs no validation split), default C;
* ``sgd``: ``StandardScaler`` + ``SGDClassifier(loss="log_loss", max_iter=5, tol=None,
  random_state=0)`` (exactly 5 epochs) on the same 80%.

Wall time covers ``fit`` only (standardization included for all three), median over
``--rounds``. ``--blas-threads N`` caps the BLAS thread pool (threadpoolctl) for every
estimator alike; without it the library default is used.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from common import environment
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from model import SoftmaxRegression
from model.data import load_builtin
from model.splits import train_val_test_split

SEED = 0
VAL_FRACTION = 0.1
TEST_FRACTION = 0.2
# Chosen for the 140,000-row synthetic training part: larger minibatches make each NumPy call
# worth its overhead; early stopping (patience 2) ends the run after about 4 epochs.
SYNTHETIC_SETTINGS: dict[str, Any] = {
    "batch_size": 512,
    "learning_rate": 0.01,
    "epochs": 10,
    "patience": 2,
}
TARGET_ACCURACY_GAP = 0.005  # within 0.5 points of LogisticRegression
TARGET_SGD_FRACTION = 0.25  # at most 1/4 of SGDClassifier's 5-epoch time


@dataclass
class Split:
    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray

    @property
    def X_fit(self) -> np.ndarray:
        return np.concatenate([self.X_train, self.X_val])

    @property
    def y_fit(self) -> np.ndarray:
        return np.concatenate([self.y_train, self.y_val])


@dataclass
class Result:
    dataset: str
    estimator: str
    settings: str
    seconds: list[float] = field(default_factory=list)
    accuracy: float = float("nan")
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def split(name: str, X: np.ndarray, y: np.ndarray) -> Split:
    train, val, test = train_val_test_split(y, VAL_FRACTION, TEST_FRACTION, SEED)
    return Split(name, X[train], y[train], X[val], y[val], X[test], y[test])


def load_digits_split() -> Split:
    data = load_builtin("digits")
    return split("digits", np.asarray(data.X), np.asarray(data.y))


def load_synthetic_split() -> Split:
    X, y = make_classification(
        n_samples=200_000, n_features=100, n_informative=50, n_classes=10, random_state=0
    )
    return split("synthetic", X, y)


def fit_ours(settings: dict[str, Any]) -> Callable[[Split], tuple[Any, str]]:
    def fit(s: Split) -> tuple[Any, str]:
        est = SoftmaxRegression(**settings).fit(s.X_train, s.y_train, validation=(s.X_val, s.y_val))
        return est, f"epochs run {est.n_epochs_run_}, best {est.best_epoch_}"

    return fit


def fit_lbfgs(s: Split) -> tuple[Any, str]:
    pipe = make_pipeline(StandardScaler(), LogisticRegression(solver="lbfgs", max_iter=1000))
    pipe.fit(s.X_fit, s.y_fit)
    n_iter = int(np.max(pipe[-1].n_iter_))
    return pipe, f"n_iter {n_iter} (< max_iter 1000: converged)"


def fit_sgd(s: Split) -> tuple[Any, str]:
    pipe = make_pipeline(
        StandardScaler(),
        SGDClassifier(loss="log_loss", max_iter=5, tol=None, random_state=SEED),
    )
    with warnings.catch_warnings():
        # 5 epochs with tol=None is the point of this row, not a problem to report.
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.fit(s.X_fit, s.y_fit)
    return pipe, "5 epochs, one-vs-rest, n_jobs=None"


def measure(
    s: Split, estimator: str, settings: str, fit: Callable[[Split], tuple[Any, str]], rounds: int
) -> Result:
    result = Result(s.name, estimator, settings)
    for _ in range(rounds):
        started = time.perf_counter()
        model, note = fit(s)
        result.seconds.append(time.perf_counter() - started)
    result.accuracy = float(np.mean(model.predict(s.X_test) == s.y_test))
    result.note = note
    print(
        f"  {s.name:9s} {estimator:15s} median {result.median:7.3f} s  "
        f"acc {result.accuracy:.4f}  ({note}; rounds: "
        + ", ".join(f"{t:.3f}" for t in result.seconds)
        + ")",
        file=sys.stderr,
        flush=True,
    )
    return result


def describe_settings(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items()) or "defaults"


def print_table(results: list[Result]) -> None:
    print(
        f"{'dataset':9s}  {'estimator':15s}  {'time (s)':>9s}  {'test acc':>8s}  "
        f"{'ours/lbfgs':>10s}  {'ours/sgd':>8s}  settings"
    )
    by_key = {(r.dataset, r.estimator): r for r in results}
    for r in results:
        lbfgs, sgd = by_key[(r.dataset, "lbfgs")], by_key[(r.dataset, "sgd")]
        ratios = ("", "")
        if r.estimator.startswith("ours"):
            ratios = (f"{r.median / lbfgs.median:.2f}", f"{r.median / sgd.median:.2f}")
        print(
            f"{r.dataset:9s}  {r.estimator:15s}  {r.median:9.3f}  {r.accuracy:8.4f}  "
            f"{ratios[0]:>10s}  {ratios[1]:>8s}  {r.settings}"
        )


def print_verdicts(results: list[Result]) -> None:
    by_key = {(r.dataset, r.estimator): r for r in results}
    ours, lbfgs, sgd = (by_key[("synthetic", e)] for e in ("ours", "lbfgs", "sgd"))
    gap = lbfgs.accuracy - ours.accuracy
    checks = [
        (
            f"accuracy within {TARGET_ACCURACY_GAP * 100:.1f} points of lbfgs",
            gap <= TARGET_ACCURACY_GAP,
            f"ours {ours.accuracy:.4f} vs lbfgs {lbfgs.accuracy:.4f} "
            f"(ours - lbfgs = {-gap * 100:+.2f} points)",
        ),
        (
            "less wall time than lbfgs",
            ours.median < lbfgs.median,
            f"ratio {ours.median / lbfgs.median:.2f}",
        ),
        (
            "at most 1/4 of SGDClassifier's 5-epoch time",
            ours.median <= TARGET_SGD_FRACTION * sgd.median,
            f"ratio {ours.median / sgd.median:.2f} (target <= {TARGET_SGD_FRACTION:.2f})",
        ),
    ]
    print("\nTargets (synthetic set):")
    for label, ok, detail in checks:
        print(f"  {'MET   ' if ok else 'MISSED'} {label}: {detail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="fits per estimator (median)")
    parser.add_argument(
        "--blas-threads", type=int, help="cap BLAS threads for every estimator (threadpoolctl)"
    )
    parser.add_argument(
        "--no-defaults-row", action="store_true", help="skip ours-with-defaults on synthetic"
    )
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")

    limit = threadpool_limits(args.blas_threads) if args.blas_threads else nullcontext()
    load_start = os.getloadavg()
    env = environment()
    print(
        f"source {env['source']}\n"
        f"python {env['python']}, numpy {env['numpy']}, scikit-learn {env['sklearn']}, "
        f"{env['nproc']} CPUs ({env['cpu']}), BLAS: {'; '.join(env['blas'])}, "
        f"blas threads cap: {args.blas_threads or 'none (library default)'}, "
        f"rounds: {args.rounds}",
        flush=True,
    )
    results: list[Result] = []
    with limit:
        for s in (load_digits_split(), load_synthetic_split()):
            print(
                f"{s.name}: train {len(s.y_train)}, validation {len(s.y_val)}, "
                f"test {len(s.y_test)} rows, {s.X_train.shape[1]} features",
                file=sys.stderr,
                flush=True,
            )
            ours_settings = SYNTHETIC_SETTINGS if s.name == "synthetic" else {}
            label = describe_settings(ours_settings)
            results.append(measure(s, "ours", label, fit_ours(ours_settings), args.rounds))
            if s.name == "synthetic" and not args.no_defaults_row:
                results.append(measure(s, "ours (defaults)", "defaults", fit_ours({}), args.rounds))
            results.append(
                measure(s, "lbfgs", "StandardScaler + C=1.0, max_iter=1000", fit_lbfgs, args.rounds)
            )
            results.append(
                measure(s, "sgd", "StandardScaler + max_iter=5, tol=None", fit_sgd, args.rounds)
            )
    print(
        "\nload average (1, 5, 15 min) at start "
        + " ".join(f"{x:.2f}" for x in load_start)
        + ", at end "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    print_table(results)
    print_verdicts(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "environment": env,
                    "blas_threads": args.blas_threads,
                    "rounds": args.rounds,
                    "results": [asdict(r) | {"median": r.median} for r in results],
                    "load_average": {"start": load_start, "end": os.getloadavg()},
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
