"""One scikit-learn contender of ``bench_defaults.py``, run as a whole process of its own.

    python bench/sklearn_contender.py lbfgs|sgd DATA.npz

Loads ``X`` and ``y`` from the archive, makes the split ``python -m model.train`` makes
(``train_val_test_split(y, 0.1, 0.2, seed=0)``), fits ``StandardScaler`` and the estimator on
the train and validation rows together (neither needs a validation split) and prints one JSON
line: test accuracy, test log-loss, iterations and any warning the fit raised. The process
imports only what the contender needs, so its wall time and peak RSS are the contender's own.
"""

from __future__ import annotations

import json
import sys
import time
import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.metrics import log_loss
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from model.splits import train_val_test_split

__all__ = ["CONTENDERS", "main"]

# The split python -m model.train makes with its defaults (--val-fraction, --test-fraction,
# --seed), so every contender is scored on the same test rows.
VAL_FRACTION, TEST_FRACTION, SEED = 0.1, 0.2, 0

CONTENDERS = {
    "lbfgs": lambda: LogisticRegression(),
    # Exactly 5 epochs: tol=None turns off sklearn's own stopping rule.
    "sgd": lambda: SGDClassifier(loss="log_loss", max_iter=5, tol=None, random_state=SEED),
}


def main(argv: list[str]) -> int:
    contender, path = argv
    started = time.perf_counter()
    with np.load(path) as archive:
        X, y = archive["X"], archive["y"]
    train, val, test = train_val_test_split(y, VAL_FRACTION, TEST_FRACTION, SEED)
    fit_rows = np.concatenate([train, val])
    pipe = make_pipeline(StandardScaler(), CONTENDERS[contender]())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_started = time.perf_counter()
        pipe.fit(X[fit_rows], y[fit_rows])
        fit_seconds = time.perf_counter() - fit_started
    proba = pipe.predict_proba(X[test])
    classes = pipe[-1].classes_
    result = {
        "contender": contender,
        "test_accuracy": float(np.mean(classes[proba.argmax(axis=1)] == y[test])),
        "test_log_loss": float(log_loss(y[test], proba, labels=classes)),
        "n_iter": int(np.max(pipe[-1].n_iter_)),
        "warnings": sorted({f"{w.category.__name__}: {w.message}".splitlines()[0] for w in caught}),
        "fit_seconds": round(fit_seconds, 3),
        "seconds": round(time.perf_counter() - started, 3),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
