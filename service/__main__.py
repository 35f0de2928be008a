"""``python -m service``: every setting as a flag (or ``SOFTMAX_*`` variable), then uvicorn."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence

import uvicorn
from pydantic import ValidationError

from .config import ENV_PREFIX, Settings, startup_problem

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve a softmax-regression model with durable online learning.",
    )
    for name, field in Settings.model_fields.items():
        env = ENV_PREFIX + name.upper()
        default = "unset" if field.default is None else field.default
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            metavar=name.upper(),
            help=f"{field.description} (env {env}; default {default})",
        )
    return parser


def load_settings(argv: Sequence[str] | None = None) -> Settings:
    """Flags override environment variables; both are validated together."""
    args = build_parser().parse_args(argv)
    for name, value in vars(args).items():
        if value is not None:
            os.environ[ENV_PREFIX + name.upper()] = value
    return Settings()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
    except ValidationError as exc:
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else "?"
            flag = "--" + name.replace("_", "-")
            print(
                f"error: invalid setting {flag} ({ENV_PREFIX}{name.upper()}): {error['msg']} "
                f"(got {error.get('input')!r})",
                file=sys.stderr,
            )
        return 2
    problem = startup_problem(settings)
    if problem is not None:
        print(f"error: invalid setting {problem}", file=sys.stderr)
        return 2
    # Nothing here may import prometheus_client before this variable is set: its value
    # class is chosen once, at import (service.app is imported by uvicorn, after it).
    # Workers are separate processes: they rebuild Settings from these variables, and write
    # their Prometheus samples into one directory that /metrics aggregates.
    metrics_dir = tempfile.mkdtemp(prefix="softmax-serve-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run(
            "service.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
            access_log=False,
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
