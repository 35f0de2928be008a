"""Per-feature standardization learned on the training split and stored with the model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .maths import Float

__all__ = ["Standardizer"]

_FLOAT64 = np.dtype(np.float64)
_BLOCK_CELLS = 1 << 18  # 2 MiB of float64 per temporary


def _blocks(X: Float) -> list[Float]:
    """``X`` as views of a few thousand rows each (about :data:`_BLOCK_CELLS` cells)."""
    rows = max(256, _BLOCK_CELLS // max(X.shape[1], 1))
    return [X[start : start + rows] for start in range(0, max(X.shape[0], 1), rows)]


@dataclass(frozen=True)
class Standardizer:
    """``x -> (x - mean) / scale`` per feature. ``mean, scale: (n_features,)``.

    A constant feature has standard deviation 0; its scale is stored as 1, so it maps to 0
    instead of dividing by zero.

    >>> s = Standardizer.fit(np.array([[1.0, 5.0], [3.0, 5.0]]))
    >>> s.transform(np.array([[2.0, 5.0]]))
    array([[0., 0.]])
    """

    mean: Float
    scale: Float

    @classmethod
    def fit(cls, X: Float) -> Standardizer:
        """Learn mean and scale from ``X: (n_samples, n_features)``."""
        # Moments of X / max|X| per column, scaled back: squares of values beyond ~1e154
        # would overflow and turn a legitimate feature into an infinite scale. Two passes over
        # blocks of rows, so that no temporary is as large as X.
        n = X.shape[0]
        peak = np.zeros(X.shape[1])
        for block in _blocks(X):
            np.maximum(peak, np.abs(block).max(axis=0), out=peak)
        peak = np.where(peak > 0, peak, 1.0)
        total = np.zeros(X.shape[1])
        for block in _blocks(X):
            total += (block / peak).sum(axis=0)
        unit_mean = total / n
        squares = np.zeros(X.shape[1])
        for block in _blocks(X):
            centred = block / peak - unit_mean
            squares += np.einsum("ij,ij->j", centred, centred)
        mean = unit_mean * peak
        std = np.sqrt(squares / n) * peak
        # Treat spreads at round-off level of the mean as constant: dividing by them would
        # turn float noise into huge standardized values.
        tiny = np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0) * 10
        scale = np.where(std > tiny, std, 1.0)
        return cls(mean=mean, scale=scale)

    @classmethod
    def identity(cls, n_features: int) -> Standardizer:
        """A standardizer that leaves data unchanged."""
        return cls(mean=np.zeros(n_features), scale=np.ones(n_features))

    def updated(self, X: Float) -> Standardizer:
        """The standardization after learning from rows ``X``: fixed statistics stay as they
        are (itself); :class:`model.running.RunningStandardizer` folds the rows in."""
        return self

    def transform(self, X: Float) -> Float:
        """Return a new ``(n_samples, n_features)`` array; ``X`` is not modified."""
        out = X - self.mean
        scale = self.scale
        if (
            isinstance(out, np.ndarray)
            and out.dtype is _FLOAT64
            and scale.dtype is _FLOAT64
            and out.shape[-1:] == scale.shape
        ):
            np.divide(out, scale, out=out)  # the same division, into the new array
            return out
        divided: Float = out / scale
        return divided
