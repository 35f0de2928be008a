"""The versioned artifact store: its interface and the local-directory implementation.

Layout of a :class:`LocalArtifactStore` rooted at ``artifacts/``::

    artifacts/
      digits/                  one directory per model name
        .lock                  cross-process writer lock (POSIX flock)
        v00000001.npz          version 1 (immutable; a snapshot or an update, see artifact.py)
        v00000002.npz          version 2 ...
        ACTIVE                 {"version": 5, "as_of": 9}: written only by an explicit activation
        KEPT                   [3, 7]: versions that retention never removes

**Which version is active.** Creating a version activates it. An explicit activation (rollback
or promotion) writes ``ACTIVE`` with the newest version number at that moment as ``as_of``.
So the active version is ``ACTIVE.version`` while no version newer than ``ACTIVE.as_of``
exists, else the newest version. Every change of state is therefore one atomic rename: writing
a version never needs a second file, and a crash between two steps cannot exist.

**Atomic and durable.** Every file is written to a temporary name in the same directory,
flushed, fsynced, renamed into place, and the directory is fsynced. A reader sees the old
file or the new one, never a partial one. Writers hold the model's lock, so any temporary file
found while holding it is debris of a killed writer and is removed.

**Concurrent writers.** All writes happen under :meth:`LocalArtifactStore.lock`, a blocking
``flock`` on ``.lock`` (plus a thread lock, since one process may run many threads), so version
numbers are handed out one at a time across every process that shares the directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from numpy.typing import NDArray

from .artifact import FORMAT_VERSION, Record, encode_record, read_meta, read_record
from .errors import (
    CorruptArtifactError,
    InvalidParameterError,
    ModelNotFoundError,
    StoreBusyError,
    StoreError,
    VersionNotFoundError,
)

__all__ = [
    "ArtifactStore",
    "Head",
    "LocalArtifactStore",
    "check_model_name",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_VERSION_FILE = re.compile(r"^v(\d{8})\.npz$")
_TMP_PREFIX = ".tmp-"
_META_CACHE_SIZE = 4096


def check_model_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidParameterError(
            "model name must be 1-64 characters of letters, digits, '.', '_' or '-', starting "
            f"with a letter or digit; got {name!r}",
            field="model",
        )
    return name


@dataclass(frozen=True)
class Head:
    """Where a model stands: its active version and its newest version (0 when empty)."""

    active: int
    newest: int


class ArtifactStore(Protocol):
    """What the repository and the service need from a store. The local directory is the
    first implementation; one on a shared database could slot in behind the same methods."""

    def models(self) -> list[str]: ...
    def lock(self, model: str) -> contextlib.AbstractContextManager[None]: ...
    def head(self, model: str) -> Head: ...
    def versions(self, model: str) -> list[int]: ...
    def read(self, model: str, version: int) -> Record: ...
    def read_meta(self, model: str, version: int) -> dict[str, Any]: ...
    def write(self, model: str, record: Record) -> Record: ...
    def activate(self, model: str, version: int) -> None: ...
    def kept(self, model: str) -> frozenset[int]: ...
    def set_kept(self, model: str, version: int, kept: bool) -> None: ...
    def remove(self, model: str, version: int) -> None: ...


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_durable_dir(directory: Path) -> None:
    """Create ``directory`` (and missing parents) so that the new entries survive a power
    loss: each created directory's parent is fsynced."""
    missing = []
    cursor = directory
    while not cursor.exists():
        missing.append(cursor)
        cursor = cursor.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process was first
            path.mkdir()
        _fsync_dir(path.parent)


def _check_identity(meta: dict[str, Any], model: str, version: int, path: Path) -> None:
    if meta.get("version") != version or meta.get("model", model) != model:
        raise CorruptArtifactError(
            f"{path}: holds model {meta.get('model')!r} version {meta.get('version')!r}, "
            f"not {model!r} version {version} (a file copied or renamed by hand?)"
        )


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one."""
    tmp = path.with_name(f"{_TMP_PREFIX}{os.getpid()}-{threading.get_ident()}-{path.name}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


class LocalArtifactStore:
    """A store in a local (or network) directory with working POSIX advisory locks."""

    def __init__(self, root: str | os.PathLike[str], *, lock_timeout: float = 30.0) -> None:
        self.root = Path(root)
        self.lock_timeout = lock_timeout
        self._thread_locks: dict[str, threading.Lock] = {}
        self._registry_lock = threading.Lock()
        self._held = threading.local()
        self._meta_cache: dict[tuple[str, int], dict[str, Any]] = {}
        self._cache_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    def __str__(self) -> str:
        return f"the store {self.root}"

    # ------------------------------------------------------------------ paths
    def _dir(self, model: str) -> Path:
        return self.root / check_model_name(model)

    def _existing_dir(self, model: str) -> Path:
        directory = self._dir(model)
        if not directory.is_dir():
            known = ", ".join(self.models()) or "none"
            raise ModelNotFoundError(
                f"no model named {model!r} in store {self.root} (models: {known})",
                field="model",
            )
        return directory

    def path(self, model: str, version: int) -> Path:
        return self._dir(model) / f"v{version:08d}.npz"

    # ------------------------------------------------------------------ reading
    def models(self) -> list[str]:
        """Names of the models that have at least one version, sorted."""
        if not self.root.is_dir():
            return []
        found = []
        for entry in os.scandir(self.root):
            if entry.is_dir() and _NAME.match(entry.name) and self._scan(Path(entry.path)):
                found.append(entry.name)
        return sorted(found)

    @staticmethod
    def _scan(directory: Path) -> list[int]:
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for n in names if (m := _VERSION_FILE.match(n)))

    def versions(self, model: str) -> list[int]:
        """All stored version numbers of ``model``, ascending."""
        return self._scan(self._existing_dir(model))

    def head(self, model: str) -> Head:
        versions = self.versions(model)
        newest = versions[-1] if versions else 0
        pointer = self._read_json(self._dir(model) / "ACTIVE")
        if isinstance(pointer, dict) and int(pointer.get("as_of", -1)) >= newest:
            active = int(pointer["version"])
            if active in versions:
                return Head(active=active, newest=newest)
        return Head(active=newest, newest=newest)

    def read(self, model: str, version: int) -> Record:
        """The verified content of one version."""
        path = self._version_path(model, version)
        try:
            record = read_record(path)
        except FileNotFoundError:
            raise self._missing(model, version) from None
        _check_identity(record.meta, model, version, path)
        return record

    def read_meta(self, model: str, version: int) -> dict[str, Any]:
        """One version's metadata (cached: versions are immutable)."""
        key = (model, version)
        with self._cache_lock:
            meta = self._meta_cache.get(key)
        if meta is None:
            path = self._version_path(model, version)
            try:
                meta = read_meta(path)
            except FileNotFoundError:
                raise self._missing(model, version) from None
            _check_identity(meta, model, version, path)
            self._remember(key, meta)
        return meta

    def _remember(self, key: tuple[str, int], meta: dict[str, Any]) -> None:
        with self._cache_lock:
            if len(self._meta_cache) >= _META_CACHE_SIZE:
                self._meta_cache.pop(next(iter(self._meta_cache)), None)
            self._meta_cache[key] = meta

    def _version_path(self, model: str, version: int) -> Path:
        self._existing_dir(model)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise VersionNotFoundError(
                f"version must be a positive integer, got {version!r}", field="version"
            )
        return self.path(model, version)

    def _missing(self, model: str, version: int) -> VersionNotFoundError:
        versions = self.versions(model)
        span = f"{versions[0]}..{versions[-1]}" if versions else "none"
        return VersionNotFoundError(
            f"model {model!r} has no version {version} (stored versions: {span}; older ones "
            "may have been removed by retention)",
            field="version",
        )

    def kept(self, model: str) -> frozenset[int]:
        value = self._read_json(self._dir(model) / "KEPT")
        return frozenset(int(v) for v in value) if isinstance(value, list) else frozenset()

    @staticmethod
    def _read_json(path: Path) -> Any:
        try:
            return json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise StoreError(f"{path}: not valid JSON ({exc})") from None

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def lock(self, model: str) -> Iterator[None]:
        """Hold the model's writer lock (re-entrant within a thread)."""
        held: set[str] = self._held.__dict__.setdefault("models", set())
        if model in held:
            yield
            return
        directory = self._dir(model)
        if not directory.is_dir():
            _make_durable_dir(directory)
        with self._registry_lock:
            thread_lock = self._thread_locks.setdefault(model, threading.Lock())
        deadline = time.monotonic() + self.lock_timeout
        if not thread_lock.acquire(timeout=self.lock_timeout):
            raise self._busy(model)
        try:
            fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                delay = 0.0005
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise self._busy(model) from None
                        time.sleep(delay)
                        delay = min(delay * 2, 0.002)
                held.add(model)
                try:
                    self._remove_debris(directory)
                    yield
                finally:
                    held.discard(model)
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        finally:
            thread_lock.release()

    def _busy(self, model: str) -> StoreBusyError:
        return StoreBusyError(
            f"could not lock model {model!r} in {self.root} within {self.lock_timeout:g} s "
            "(another writer holds it)"
        )

    def _require_lock(self, model: str) -> Path:
        if model not in self._held.__dict__.get("models", set()):
            raise RuntimeError(f"writing to model {model!r} requires holding store.lock(model)")
        return self._dir(model)

    @staticmethod
    def _remove_debris(directory: Path) -> None:
        for name in os.listdir(directory):
            if name.startswith(_TMP_PREFIX):
                with contextlib.suppress(FileNotFoundError):
                    (directory / name).unlink()

    def write(self, model: str, record: Record) -> Record:
        """Store ``record`` as the next version (it becomes active). Requires the lock.

        Returns the record as stored: its metadata with ``format_version``, ``model`` and
        ``version`` filled in.
        """
        directory = self._require_lock(model)
        versions = self._scan(directory)
        version = (versions[-1] if versions else 0) + 1
        meta = {**record.meta, "format_version": FORMAT_VERSION, "model": model}
        meta["version"] = version
        stored = Record(meta, record.arrays)
        atomic_write(self.path(model, version), encode_record(stored))
        self._remember((model, version), meta)
        return stored

    def activate(self, model: str, version: int) -> None:
        """Make an existing version active. Requires the lock."""
        directory = self._require_lock(model)
        versions = self._scan(directory)
        if version not in versions:
            raise self._missing(model, version)
        pointer = {"version": version, "as_of": versions[-1]}
        atomic_write(directory / "ACTIVE", json.dumps(pointer).encode())

    def set_kept(self, model: str, version: int, kept: bool) -> None:
        """Mark or unmark a version as exempt from retention. Requires the lock."""
        directory = self._require_lock(model)
        if kept and version not in self._scan(directory):
            raise self._missing(model, version)
        current = set(self.kept(model))
        current = current | {version} if kept else current - {version}
        atomic_write(directory / "KEPT", json.dumps(sorted(current)).encode())

    def remove(self, model: str, version: int) -> None:
        """Delete one version's file (retention). Requires the lock."""
        self._require_lock(model)
        with contextlib.suppress(FileNotFoundError):
            self.path(model, version).unlink()
        with self._cache_lock:
            self._meta_cache.pop((model, version), None)


def arrays_nbytes(arrays: Mapping[str, NDArray[Any]]) -> int:
    return sum(int(a.nbytes) for a in arrays.values())
