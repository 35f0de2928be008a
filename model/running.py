"""Running standardization: mean and variance updated by each batch a model learns from.

A model created with no data (``POST /models``, :func:`model.growth.create_estimator`) has no
training split to take its standardization from. Its :class:`RunningStandardizer` starts at
mean 0 and scale 1 and folds in every minibatch the model learns from, before the step, with
Chan et al.'s pairwise update of the count, the mean and the sum of squared deviations
(``m2``): exact for any batch size, and a pure function of the stream, so replaying the stored
updates rebuilds it bit for bit. The scale is the population standard deviation, 1 for a
feature that has not varied yet (as :class:`~model.preprocessing.Standardizer` does).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .maths import Float
from .preprocessing import Standardizer

__all__ = ["RunningStandardizer"]


@dataclass(frozen=True)
class RunningStandardizer(Standardizer):
    """``x -> (x - mean) / scale`` with ``mean, scale, m2: (n_features,)`` learned from the
    ``count`` rows seen so far.

    >>> s = RunningStandardizer.empty(2).updated(np.array([[1.0, 5.0], [3.0, 5.0]]))
    >>> s.transform(np.array([[2.0, 5.0]])), s.count
    (array([[0., 0.]]), 2)
    """

    # Keyword-only: they follow the base class's fields, which have no defaults.
    m2: Float = field(kw_only=True)
    count: int = field(kw_only=True)
    # False: the rows are only counted (a created model without standardization: its rate
    # decays with the rows learnt, model.growth), mean 0 and scale 1 stay.
    scaling: bool = field(kw_only=True, default=True)

    @classmethod
    def empty(cls, n_features: int, *, scaling: bool = True) -> RunningStandardizer:
        """No rows seen: the identity."""
        zeros = np.zeros(n_features)
        return cls(mean=zeros, scale=np.ones(n_features), m2=zeros, count=0, scaling=scaling)

    def updated(self, X: Float) -> RunningStandardizer:
        """These rows ``X: (m, n_features)`` folded in (a new object; this one is unchanged)."""
        m = X.shape[0]
        if not m:
            return self
        if not self.scaling:
            return RunningStandardizer(
                mean=self.mean, scale=self.scale, m2=self.m2, count=self.count + m, scaling=False
            )
        batch_mean = X.mean(axis=0)
        centred = X - batch_mean
        batch_m2 = np.einsum("ij,ij->j", centred, centred)
        total = self.count + m
        delta = batch_mean - self.mean
        mean = self.mean + delta * (m / total)
        m2 = self.m2 + batch_m2 + delta * delta * (self.count * m / total)
        std = np.sqrt(m2 / total)
        # As Standardizer.fit: spreads at round-off level of the mean count as constant.
        tiny = np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0) * 10
        scale = np.where(std > tiny, std, 1.0)
        return RunningStandardizer(mean=mean, scale=scale, m2=m2, count=total)
