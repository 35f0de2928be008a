"""Helpers shared by the benchmark scripts (run as ``python bench/<script>.py``)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["REPO", "environment", "source_state"]

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


def environment() -> dict[str, Any]:
    """Versions, machine and source state to print with any figures."""
    # Imported here: the serving benchmarks use this module too and never need scikit-learn.
    import numpy as np
    import sklearn
    from threadpoolctl import threadpool_info

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    blas = [
        f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads)"
        for i in threadpool_info()
    ]
    return {
        "source": source_state("model"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "blas": blas,
    }
