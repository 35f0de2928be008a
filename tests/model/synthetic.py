"""Synthetic classification data for the model tests (a helper module, not a test module)."""

from __future__ import annotations

import numpy as np


def make_blobs(
    n: int = 120,
    n_features: int = 4,
    labels: tuple[object, ...] = ("ant", "bee", "cat"),
    spread: float = 1.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters, one per label, around random centres (scale 3); every label occurs.

    Returns ``X: (n, n_features)`` and ``y: (n,)`` holding the labels themselves.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(len(labels), n_features))
    which = rng.integers(0, len(labels), size=n)
    which[: len(labels)] = np.arange(len(labels))
    X = centres[which] + rng.normal(scale=spread, size=(n, n_features))
    return X, np.asarray(labels)[which]
