"""The guard on models created with no data: how many honest batches it refuses (issue 16).

Run from the repository root (scikit-learn, a dev dependency, makes the synthetic sets)::

    PYTHONPATH=. .venv/bin/python bench/guard_created.py [--rows 50000] [--batch 32]
        [--only digits synthetic] [--poison-after 300]

Each stream starts from ``create_estimator(names, allow_new_classes=True)`` stored by
``ModelRepository.create`` (what ``POST /models`` does) and goes through
``ModelRepository.update`` in ``--batch``-row batches with the service's defaults (the guard
enforcing, every 10th row held out, 200 online guard rows): no HTTP, the verdict does not
depend on the transport. A refused batch is counted by reason and skipped. Streams:

* ``digits``: the bundled digits, shuffled (seed 0);
* ``synthetic``: the first ``--rows`` rows of ``make_classification(200000, 100,
  n_informative=50, n_classes=10, random_state=0)`` (bench/bench_river.py's set);
* ``*-incremental``: the same rows, the first 20% holding classes 0-4 only (bench_river's order);
* ``noisy30``: ``make_classification(--rows, 40, n_informative=20, n_classes=30,
  flip_y=0.2, class_sep=0.5, random_state=1)``: 30 classes, a low-accuracy regime;
* ``hard4``: ``make_classification(--rows, 20, n_informative=3, n_classes=4, flip_y=0.4,
  n_clusters_per_class=1, random_state=2)``: accuracy near 50%, the loss stays high.

``--poison-after N``: after N honest batches, every other batch has its labels moved to the
next class (the rest stay honest); the refusal rate of each kind is printed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model import LocalArtifactStore, ModelRepository  # noqa: E402
from model.data import load_builtin  # noqa: E402
from model.errors import OutOfRangeError, UpdateRejectedError  # noqa: E402
from model.growth import create_estimator  # noqa: E402
from model.guard import GuardPolicy  # noqa: E402


def incremental(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = y.shape[0]
    head = np.flatnonzero(y < 5)[: n // 5]
    order = np.concatenate([head, np.setdiff1d(np.arange(n), head)])
    return X[order], y[order]


def streams(rows: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import make_classification

    data = load_builtin("digits")
    order = np.random.default_rng(0).permutation(data.n_samples)
    digits = np.asarray(data.X, dtype=np.float64)[order], np.asarray(data.y)[order]
    Xs, ys = make_classification(
        n_samples=200_000, n_features=100, n_informative=50, n_classes=10, random_state=0
    )
    synthetic = Xs[:rows], ys[:rows]
    noisy30 = make_classification(
        rows, 40, n_informative=20, n_classes=30, flip_y=0.2, class_sep=0.5, random_state=1
    )
    hard4 = make_classification(
        rows, 20, n_informative=3, n_redundant=0, n_classes=4, flip_y=0.4,
        n_clusters_per_class=1, random_state=2,
    )  # fmt: skip
    return {
        "digits": digits,
        "digits-incremental": incremental(*digits),
        "synthetic": synthetic,
        "synthetic-incremental": incremental(*synthetic),
        "noisy30": noisy30,
        "hard4": hard4,
    }


def run(
    X: np.ndarray, y: np.ndarray, batch: int, poison_after: int | None, verbose: bool = False
) -> dict[str, object]:
    classes = np.unique(y)
    names = [f"f{i}" for i in range(X.shape[1])]
    outcomes: Counter[tuple[str, str]] = Counter()
    correct = 0
    with tempfile.TemporaryDirectory() as root:
        repo = ModelRepository(
            LocalArtifactStore(root), guard=GuardPolicy(), holdout_every=10, guard_online_rows=200
        )
        repo.create(create_estimator(names, allow_new_classes=True), "m")
        for i, start in enumerate(range(0, X.shape[0], batch)):
            rows = slice(start, start + batch)
            labels = y[rows]
            kind = "honest"
            if poison_after is not None and i >= poison_after and i % 2:
                kind = "poisoned"
                labels = classes[(np.searchsorted(classes, labels) + 1) % classes.shape[0]]
            if kind == "honest":
                estimator = repo.load("m").estimator
                if estimator.classes_.shape[0]:
                    correct += int(np.sum(estimator.predict(X[rows]) == labels))
            try:
                repo.update("m", X[rows], labels.tolist())
                outcomes[(kind, "accepted")] += 1
            except UpdateRejectedError as exc:
                outcomes[(kind, str(exc.details["reason"]))] += 1
                if verbose:
                    found = exc.details
                    print(
                        f"  batch {i} ({kind}): {found['reason']}, guard loss "
                        f"{found['loss_before']:.3f} -> {found['loss_after']:.3f}, "
                        f"{found['loss_vs_reference'] - found['reference_loss']:+.3f} since "
                        f"v{found['reference_version']}, {found['guard_rows']} guard rows"
                    )
            except OutOfRangeError:
                outcomes[(kind, "out_of_range")] += 1
    honest = sum(v for (k, _), v in outcomes.items() if k == "honest")
    return {"outcomes": outcomes, "prequential": correct / max(1, honest * batch)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--poison-after", type=int, default=None)
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--verbose", action="store_true", help="print every refusal's figures")
    args = parser.parse_args()
    for name, (X, y) in streams(args.rows).items():
        if args.only and name not in args.only:
            continue
        started = time.perf_counter()
        found = run(
            np.asarray(X, np.float64), np.asarray(y), args.batch, args.poison_after, args.verbose
        )
        outcomes: Counter[tuple[str, str]] = found["outcomes"]  # type: ignore[assignment]
        for kind in ("honest", "poisoned"):
            total = sum(v for (k, _), v in outcomes.items() if k == kind)
            if not total:
                continue
            refused = total - outcomes[(kind, "accepted")]
            reasons = ", ".join(
                f"{r}={c}"
                for (k, r), c in sorted(outcomes.items())
                if k == kind and r != "accepted"
            )
            print(
                f"{name:22s} {kind:8s} refused {refused:5d} of {total:5d} "
                f"({100 * refused / total:5.1f}%) [{reasons}]"
                + (f" prequential acc {found['prequential']:.3f}" if kind == "honest" else "")
                + f" {time.perf_counter() - started:.0f}s",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
