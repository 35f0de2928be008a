"""Time ``model.optimizer.sgd_step`` on a 100,000-feature × 100-class model, in this process.

    PYTHONPATH=CHECKOUT python bench/sgd_step_timing.py [--steps 40] [--momentum 0.9]

``bench_defaults.py`` runs it once per checkout (``PYTHONPATH`` picks whose ``model`` is
imported), so the same code measures the step before and after a change. It chains steps
(each starts from the state the previous one returned, as training does) on one minibatch of
32 rows × 100,000 features and prints one JSON line: the median and quartiles of the step
time, and tracemalloc's peak of memory allocated during a step beyond what was held before it
(NumPy reports its array buffers to tracemalloc), next to the weights' size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import tracemalloc

import numpy as np

import model.optimizer
from model.optimizer import SGDSettings, TrainState, sgd_step

__all__ = ["main"]

N_FEATURES, N_CLASSES, BATCH_ROWS = 100_000, 100, 32
WARM_UP_STEPS = 3
TRACED_STEPS = 5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="timed steps (median)")
    parser.add_argument("--momentum", type=float, default=0.9, help="0 turns momentum off")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    X = rng.standard_normal((BATCH_ROWS, N_FEATURES))
    y = rng.integers(0, N_CLASSES, BATCH_ROWS)
    # Explicit settings: the two checkouts' SGDSettings defaults need not agree.
    settings = SGDSettings(learning_rate=0.05, momentum=args.momentum, l2=1e-3)
    state = TrainState.zeros(N_FEATURES, N_CLASSES, momentum=args.momentum > 0)
    for _ in range(WARM_UP_STEPS):
        state = sgd_step(state, X, y, settings)[0]

    seconds = []
    for _ in range(args.steps):
        started = time.perf_counter()
        state = sgd_step(state, X, y, settings)[0]
        seconds.append(time.perf_counter() - started)

    tracemalloc.start()
    peaks = []
    for _ in range(TRACED_STEPS):
        held, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        state = sgd_step(state, X, y, settings)[0]
        peaks.append(tracemalloc.get_traced_memory()[1] - held)
    tracemalloc.stop()

    quartiles = statistics.quantiles(seconds, n=4)
    print(
        json.dumps(
            {
                "module": model.optimizer.__file__,
                "momentum": args.momentum,
                "steps": args.steps,
                "median_ms": statistics.median(seconds) * 1e3,
                "quartiles_ms": [quartiles[0] * 1e3, quartiles[2] * 1e3],
                "peak_step_bytes": max(peaks),
                "weights_bytes": state.weights.nbytes,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
