"""One router per concern."""

from __future__ import annotations

from . import health, metrics, models, predict, train

__all__ = ["health", "metrics", "models", "predict", "train"]
