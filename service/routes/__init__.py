"""One router per concern."""

from __future__ import annotations

from . import dashboard, health, metrics, models, predict, train

__all__ = ["dashboard", "health", "metrics", "models", "predict", "train"]
