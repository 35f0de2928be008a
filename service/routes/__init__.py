"""One router per concern."""

from __future__ import annotations

from . import health, metrics, models, predict, train, v2

__all__ = ["health", "metrics", "models", "predict", "train", "v2"]
