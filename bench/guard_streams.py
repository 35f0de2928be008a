"""The guard against poisoned streams, measured: decision rates and accuracy on several data sets.

Run from the repository root (needs scikit-learn, a dev dependency, for three of the data sets)::

    .venv/bin/python bench/guard_streams.py [--batch 16] [--batches 60] [--seeds 0 1 2]

For each data set: a model trained with the CLI's defaults on a stratified 40/10/50 split (not
the CLI's 70/10/20: the last half is split again into test rows and a pool of stream rows, so
that even Iris has a pool), the 10 % validation rows kept as the guard set; then a stream of
minibatches (``--batch`` rows each, 1 for a stream of single rows) drawn from the pool of rows
the model never saw — honest ones, label-shifted ones (every label moved to the next class),
hostile ones (learning rate 1.0, 10 passes; honest or shifted labels) — through
``ModelRepository.update`` with the service's default guard. Prints, per data set and kind of
batch, how many were accepted, and the test accuracy before and after the stream. Runs in-process
(no HTTP): the verdict does not depend on the transport (tests/integration/test_guard_server.py
runs one such stream through the real server).
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from collections.abc import Callable

import numpy as np

from model import LocalArtifactStore, ModelRepository, SoftmaxRegression
from model.data import load_builtin
from model.errors import OutOfRangeError, UpdateRejectedError
from model.guard import GuardPolicy
from model.splits import train_val_test_split


def datasets() -> dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]]:
    from sklearn.datasets import load_breast_cancer, load_wine, make_classification

    def builtin(name: str) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
        return lambda: (np.asarray(load_builtin(name).X), np.asarray(load_builtin(name).y))

    return {
        "digits": builtin("digits"),
        "iris": builtin("iris"),
        "wine": lambda: load_wine(return_X_y=True),
        "breast_cancer": lambda: load_breast_cancer(return_X_y=True),
        "synthetic-5x20": lambda: make_classification(
            6000, 20, n_informative=10, n_classes=5, random_state=3
        ),
    }


def run(name: str, X: np.ndarray, y: np.ndarray, args: argparse.Namespace, seed: int) -> dict:
    classes = np.unique(y)
    train, val, rest = train_val_test_split(y, 0.1, 0.5, seed)
    half = rest.shape[0] // 2
    test, pool = rest[:half], rest[half:]
    estimator = SoftmaxRegression(seed=seed).fit(X[train], y[train], validation=(X[val], y[val]))
    before = float(np.mean(estimator.predict(X[test]) == y[test]))
    with tempfile.TemporaryDirectory() as root:
        repo = ModelRepository(
            LocalArtifactStore(root),
            guard=GuardPolicy(max_step=args.max_step),
            holdout_every=args.holdout_every,
            online_momentum=args.momentum,
        )
        repo.save(estimator, name, guard=(X[val], y[val]))
        rng = np.random.default_rng(seed)
        outcomes: Counter[tuple[str, str]] = Counter()
        for i in range(args.batches):
            kind = ("honest", "shifted", "honest", "hostile", "honest", "hostile-shifted")[i % 6]
            rows = rng.choice(pool, size=min(args.batch, pool.shape[0]), replace=False)
            labels = y[rows]
            if "shifted" in kind:
                position = np.searchsorted(classes, labels)
                labels = classes[(position + 1) % classes.shape[0]]
            lr, passes = (1.0, 10) if "hostile" in kind else (None, 1)
            try:
                key = ("honest" if kind == "honest" else "poisoner") if args.poison_key else None
                repo.update(
                    name, X[rows], labels.tolist(), learning_rate=lr, passes=passes, key=key
                )
                outcomes[(kind, "accepted")] += 1
            except UpdateRejectedError as exc:
                outcomes[(kind, str(exc.details["reason"]))] += 1
            except OutOfRangeError:
                outcomes[(kind, "out_of_range")] += 1
        final = repo.load(name).estimator
    after = float(np.mean(final.predict(X[test]) == y[test]))
    return {"before": before, "after": after, "outcomes": outcomes, "guard_rows": val.shape[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--holdout-every", type=int, default=10)
    parser.add_argument("--max-step", type=float, default=GuardPolicy.max_step)
    parser.add_argument(
        "--momentum", action="store_true", help="carry momentum across online updates"
    )
    parser.add_argument(
        "--poison-key",
        action="store_true",
        help="send the poisoned batches under an API key name of their own (default: all "
        "anonymous, one stream)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--only", nargs="*", help="data set names")
    args = parser.parse_args()
    print(
        f"batch {args.batch}, {args.batches} batches, holdout every {args.holdout_every}"
        + (", poisoned batches under a key of their own" if args.poison_key else "")
    )
    for name, load in datasets().items():
        if args.only and name not in args.only:
            continue
        X, y = load()
        for seed in args.seeds:
            found = run(name, np.asarray(X, dtype=np.float64), np.asarray(y), args, seed)
            summary = Counter()
            for (kind, outcome), count in found["outcomes"].items():
                group = "honest" if kind == "honest" else "poisoned"
                summary[(group, outcome == "accepted")] += count
            honest = summary[("honest", True)] / max(
                1, sum(v for (g, _), v in summary.items() if g == "honest")
            )
            refused = summary[("poisoned", False)] / max(
                1, sum(v for (g, _), v in summary.items() if g == "poisoned")
            )
            detail = ", ".join(f"{k}:{o}={c}" for (k, o), c in sorted(found["outcomes"].items()))
            print(
                f"{name:15s} seed {seed}: accuracy {found['before']:.3f} -> {found['after']:.3f}; "
                f"honest accepted {honest:.0%}, poisoned refused {refused:.0%} "
                f"(guard {found['guard_rows']} rows)\n    {detail}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
