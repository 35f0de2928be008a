"""Stratified, seeded splits of row indices (train/validation/test, K-fold) and data
fingerprints.

>>> train, val, test = train_val_test_split(np.array([0, 0, 0, 1, 1, 1] * 5), 0.2, 0.2, seed=0)
>>> len(train), len(val), len(test)
(18, 6, 6)
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .errors import InvalidInputError, InvalidParameterError
from .validation import check_1d

__all__ = ["fingerprint", "stratified_kfold", "train_val_test_split"]

_MAX_LISTED_CLASSES = 20

# --- splits ----------------------------------------------------------------------------------


def train_val_test_split(
    y: NDArray[Any], val_fraction: float, test_fraction: float, seed: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Stratified, seeded split of row indices into train, validation and test parts.

    ``y``: (n_samples,) labels. Returns three sorted int64 index arrays, disjoint and together
    covering every row. Each class gives each part ``floor(n_class * fraction)`` or one more row
    (the part's total is ``round(n_samples * fraction)``, extra rows going to the classes with the
    largest remainders), except that every class keeps at least one training row. A fraction of
    0 gives an empty part. Same ``seed``, same split.

    >>> train, val, test = train_val_test_split(np.array([0] * 6 + [1] * 4), 0.0, 0.5, seed=1)
    >>> len(train), len(val), len(test)
    (5, 0, 5)
    """
    labels = check_1d(y, "y")
    _check_fractions(val_fraction, test_fraction)
    rng = _rng(seed)
    _, class_of, counts = np.unique(labels, return_inverse=True, return_counts=True)
    n_samples = labels.shape[0]
    n_test = _allocate(counts, test_fraction, n_samples, rng)
    n_val = _allocate(counts, val_fraction, n_samples, rng)
    # Keep one training row per class: take the shortfall from the larger held-out part.
    overflow = np.maximum(n_test + n_val - (counts - 1), 0)
    cut_test = np.where(
        n_test >= n_val, np.minimum(overflow, n_test), np.maximum(overflow - n_val, 0)
    )
    n_test = n_test - cut_test
    n_val = n_val - (overflow - cut_test)

    grouped, rank = _grouped_shuffle(class_of, counts, rng)
    cls = class_of[grouped]
    part = np.where(rank < n_test[cls], 2, np.where(rank < n_test[cls] + n_val[cls], 1, 0))
    train, val, test = (np.sort(grouped[part == which]).astype(np.int64) for which in (0, 1, 2))
    return train, val, test


def stratified_kfold(
    y: NDArray[Any], k: int, seed: int
) -> list[tuple[NDArray[np.int64], NDArray[np.int64]]]:
    """Stratified K-fold: ``k`` (train_idx, test_idx) pairs of sorted int64 row indices.

    ``y``: (n_samples,) labels. Every row is in exactly one test fold; each class is spread over
    the folds as evenly as possible (fold counts differ by at most one per class), and fold sizes
    differ by at most one. ``2 <= k <= smallest class count``.

    >>> [len(test) for _, test in stratified_kfold(np.array([0, 0, 0, 1, 1, 1]), 3, seed=0)]
    [2, 2, 2]
    """
    labels = check_1d(y, "y")
    classes, class_of, counts = np.unique(labels, return_inverse=True, return_counts=True)
    smallest = int(counts.min())
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 2 <= k <= smallest:
        if len(classes) <= _MAX_LISTED_CLASSES:
            listed = ", ".join(
                f"{label!r}: {count}"
                for label, count in zip(classes.tolist(), counts.tolist(), strict=True)
            )
        else:
            listed = f"{len(classes)} classes"
        raise InvalidParameterError(
            f"k must be an integer between 2 and the smallest class count ({smallest}), got "
            f"{k!r}; class counts: {{{listed}}}",
            field="k",
        )
    rng = _rng(seed)
    grouped, _ = _grouped_shuffle(class_of, counts, rng)
    # Dealing the class-grouped rows round-robin keeps every fold stratified and balanced.
    fold_of = np.empty(labels.shape[0], dtype=np.int64)
    fold_of[grouped] = np.arange(labels.shape[0]) % k
    everything = np.arange(labels.shape[0], dtype=np.int64)
    return [(everything[fold_of != fold], everything[fold_of == fold]) for fold in range(k)]


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
            raise InvalidParameterError(
                f"{name} must be a number, got {type(value).__name__}", field=name
            )
        if not math.isfinite(value) or value < 0:
            raise InvalidParameterError(f"{name} must be >= 0, got {value}", field=name)
    if val_fraction + test_fraction >= 1:
        raise InvalidParameterError(
            f"val_fraction + test_fraction must be below 1 (training needs rows), got "
            f"{val_fraction} + {test_fraction} = {val_fraction + test_fraction}",
            field="test_fraction",
        )


def _rng(seed: int) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InvalidParameterError(f"seed must be an integer >= 0, got {seed!r}", field="seed")
    return np.random.default_rng(int(seed))


def _allocate(
    counts: NDArray[np.int64], fraction: float, n_samples: int, rng: np.random.Generator
) -> NDArray[np.int64]:
    """Rows per class for one part: largest-remainder rounding to ``round(n * fraction)``."""
    quotas: NDArray[np.float64] = counts.astype(np.float64) * fraction
    base: NDArray[np.int64] = np.floor(quotas).astype(np.int64)
    extra = int(round(n_samples * fraction)) - int(base.sum())
    if extra > 0:
        remainders = quotas - base
        # Ties between equal remainders go to random classes, not always the first ones.
        order = np.lexsort((rng.random(len(counts)), -remainders))
        base[order[:extra]] += 1
    return base


def _grouped_shuffle(
    class_of: NDArray[np.intp], counts: NDArray[np.int64], rng: np.random.Generator
) -> tuple[NDArray[np.intp], NDArray[np.int64]]:
    """Row indices grouped by class (shuffled within each class), and each one's rank in it."""
    shuffled = rng.permutation(class_of.shape[0])
    grouped = shuffled[np.argsort(class_of[shuffled], kind="stable")]
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.arange(class_of.shape[0]) - np.repeat(starts, counts)
    return grouped, rank.astype(np.int64)


# --- fingerprints ----------------------------------------------------------------------------


def fingerprint(X: NDArray[Any], y: NDArray[Any]) -> str:
    """``sha256:<hex>`` of the shapes, dtypes and C-contiguous bytes of X and y.

    ``X``: (n_samples, n_features); ``y``: (n_samples,). Bytes are taken little-endian, so the
    value is the same across runs and machines; equal data with another dtype differs.

    >>> fingerprint(np.zeros((1, 1)), np.array([0]))[:7]
    'sha256:'
    """
    digest = hashlib.sha256()
    for name, value in (("X", X), ("y", y)):
        array = np.asarray(value)
        if array.dtype.hasobject:
            raise InvalidInputError(
                f"{name} must not be an object array (its bytes are pointers), got dtype "
                f"{array.dtype}",
                field=name,
            )
        stable = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        digest.update(f"{name}:{stable.shape}:{stable.dtype.str};".encode())
        digest.update(stable.reshape(-1).view(np.uint8).data)  # its bytes, not a copy
    return f"sha256:{digest.hexdigest()}"
