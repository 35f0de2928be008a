"""Helpers shared by the benchmark scripts (run as ``python bench/<script>.py``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["REPO", "source_state"]

REPO = Path(__file__).resolve().parent.parent


def source_state(*paths: str, repo: Path = REPO) -> str:
    """The commit of ``repo`` measured and whether ``paths`` had uncommitted changes
    (read-only git calls: no optional index refresh)."""
    git = ["git", "--no-optional-locks", "-C", str(repo)]
    try:
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", *paths],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    changed = sorted(line[3:] for line in dirty if line.strip())
    return head + (f" + uncommitted changes in {', '.join(changed)}" if changed else "")
