"""One router per concern."""

from __future__ import annotations

from . import dashboard, health, metrics, models, predict, train, v2

__all__ = ["dashboard", "health", "metrics", "models", "predict", "train", "v2"]
