"""Make a stored version active: ``python -m model.activate VERSION --name MODEL [--store DIR]``.

The command-line twin of ``POST /models/{version}/activate``, for a version written with
``python -m model.train --no-activate`` (or a rollback). A running server picks the change up
at its next reload check, as it does any activation.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .errors import ModelError
from .repository import ModelRepository
from .stores import open_store

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m model.activate",
        description="Make a stored version of a model the active one.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("version", type=int, help="the version to activate")
    p.add_argument("--name", required=True, help="model name")
    p.add_argument(
        "--store",
        default="artifacts",
        help="artifact store: a directory, or a database postgresql://user@host:port/dbname",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        repository = ModelRepository(open_store(args.store))
        try:
            loaded = repository.activate(args.name, args.version)
        finally:
            repository.close()
    except ModelError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    # Its own classes: a model that grows classes online has other ones in other versions.
    classes = ", ".join(str(c) for c in loaded.classes) or "none yet"
    print(f"model {args.name}: version {loaded.version} is active (classes: {classes})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
