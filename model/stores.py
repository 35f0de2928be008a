"""Which store an address names: a directory (the default) or a PostgreSQL database.

``open_store("artifacts")`` is the local directory (:class:`~model.store.LocalArtifactStore`);
``open_store("postgresql://user@host:5432/db")`` (or ``postgres://``) the database
(:class:`~model.pgstore.PostgresArtifactStore`, imported only then). The service's ``--store``
and the training and activation commands' ``--store`` all go through here.
"""

from __future__ import annotations

import os
from pathlib import Path

from .store import ArtifactStore, LocalArtifactStore

__all__ = ["is_database", "open_store"]

_SCHEMES = ("postgresql://", "postgres://")


def is_database(address: str | os.PathLike[str]) -> bool:
    """True when ``address`` names a PostgreSQL database rather than a directory."""
    return isinstance(address, str) and address.startswith(_SCHEMES)


def open_store(address: str | os.PathLike[str], *, lock_timeout: float = 30.0) -> ArtifactStore:
    """The store at ``address``; a database's schema is created or migrated on the way."""
    if is_database(address):
        from .pgstore import PostgresArtifactStore

        return PostgresArtifactStore(str(address), lock_timeout=lock_timeout)
    return LocalArtifactStore(Path(address), lock_timeout=lock_timeout)
