"""The versioned artifact store: its interface and the local-directory implementation.

Layout of a :class:`LocalArtifactStore` rooted at ``artifacts/``::

    artifacts/
      digits/                  one directory per model name
        .lock                  cross-process writer lock (POSIX flock)
        v00000001.npz          version 1: a snapshot (immutable; see artifact.py)
        u00000002.log          the update log: versions 2, 3, ... as appended records (wal.py)
        v00000061.npz          a later snapshot
        u00000062.log          the next segment of the log
        ACTIVE                 {"version": 5, "as_of": 9}: written only by an explicit activation
        KEPT                   [3, 7]: versions that retention never removes

A version is either a snapshot file or a record in a log segment (:mod:`model.wal`); stores
written before 0.3 also hold updates as ``vNNNNNNNN.npz`` files, which still load.

**Which version is active.** Creating a version activates it. An explicit activation (rollback
or promotion) writes ``ACTIVE`` with the newest version number at that moment as ``as_of``.
So the active version is ``ACTIVE.version`` while no version newer than ``ACTIVE.as_of``
exists, else the newest version. Writing a version therefore never needs a second file.

**Atomic and durable.** A snapshot (and ``ACTIVE``, ``KEPT``) is written to a temporary name in
the same directory, fsynced, renamed into place, and the directory is fsynced: a reader sees
the old file or the new one. An update is appended to the log and made durable by
:meth:`LocalArtifactStore.sync` (``fdatasync``), which covers every record appended since the
last sync: writers append several and sync once (group commit, :mod:`model.commit`), and
release the lock only after syncing. A crash can leave a torn record at the end of the log;
the next writer cuts it off (see :mod:`model.wal` for the recovery rules).

**Concurrent writers.** All writes happen under :meth:`LocalArtifactStore.lock`, a ``flock``
on ``.lock`` (plus a thread lock, since one process may run many threads), so version numbers
are handed out one at a time across every process that shares the directory. Each holder
adds one to a counter kept in ``.lock``; a holder that finds the count it left reads nothing
else (nobody has changed the directory since), any other reads the directory again. Until it
lets go, nobody else can change it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from numpy.typing import NDArray

from . import wal
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
    "ChangeFeed",
    "WatchableStore",
    "Head",
    "LocalArtifactStore",
    "check_model_name",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_VERSION_FILE = re.compile(r"^v(\d{8})\.npz$")
_TMP_PREFIX = ".tmp-"
_META_CACHE_SIZE = 4096

log = logging.getLogger("model.store")


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
    first implementation; PostgreSQL (:mod:`model.pgstore`) the second, behind the same
    methods (:func:`model.stores.open_store` picks one by the store's address)."""

    def models(self) -> list[str]: ...
    def lock(
        self, model: str, *, waiting: Callable[[], None] | None = None
    ) -> contextlib.AbstractContextManager[None]: ...
    def head(self, model: str) -> Head: ...
    def versions(self, model: str) -> list[int]: ...
    def read(self, model: str, version: int) -> Record: ...
    def read_meta(self, model: str, version: int) -> dict[str, Any]: ...
    def write(
        self, model: str, record: Record, *, durable: bool = True, activate: bool = True
    ) -> Record: ...
    def sync(self, model: str) -> None: ...
    def activate(self, model: str, version: int) -> None: ...
    def kept(self, model: str) -> frozenset[int]: ...
    def set_kept(self, model: str, version: int, kept: bool) -> None: ...
    def remove(self, model: str, version: int) -> None: ...
    def remove_many(self, model: str, versions: Sequence[int]) -> None: ...


class ChangeFeed(Protocol):
    """A subscription to a store's change notifications (see :class:`WatchableStore`)."""

    @property
    def live(self) -> threading.Event: ...  # set while notifications arrive

    def close(self) -> None: ...


class WatchableStore(ArtifactStore, Protocol):
    """A store that tells when versions change (PostgreSQL's LISTEN/NOTIFY): ``watch``
    calls ``listener(model)`` after each commit that adds a version of ``model`` or moves its
    active one, and ``listener("")`` after connecting and after losing the connection
    (anything may have changed). Readers
    of a store without it (the local directory) poll."""

    def watch(self, listener: Callable[[str], None]) -> ChangeFeed: ...

    def close(self) -> None: ...


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


@dataclass
class _Segment:
    """One log segment as far as it has been read: its complete records, where they end, and
    what stopped the reading there (None: the end of the file)."""

    path: Path
    first: int
    entries: list[wal.Entry] = field(default_factory=list)
    end: int = 0
    stamp: tuple[int, int, int] = (0, 0, 0)  # size, mtime and inode when last read
    problem: str | None = None
    valid_after: bool = False

    def read_on(self, stat: os.stat_result) -> list[wal.Entry] | None:
        """Catch up with the file as ``stat`` describes it now. None if nothing was removed
        (then: the records found after the ones known, maybe none); else, after a truncation,
        the records the segment kept."""
        stamp = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
        if stamp == self.stamp:
            return []
        size = stat.st_size
        truncated = size < self.end
        if truncated:  # retention truncated it (records are never rewritten in place)
            self.entries = [e for e in self.entries if e.end <= size]
            self.end = self.entries[-1].end if self.entries else 0
        found = wal.scan(self.path, self.end) if size > self.end else wal.Scan(end=self.end)
        self.entries.extend(found.entries)
        self.end, self.problem, self.valid_after = found.end, found.problem, found.valid_after
        self.stamp = stamp
        return None if truncated else found.entries


@dataclass
class _Catalog:
    """What one process knows of one model's directory: the snapshot files, the log segments
    and the two pointer files. Refreshed from the directory by readers; kept current in memory
    by the lock holder, whose writes are the only changes while it holds the lock."""

    snapshots: set[int] = field(default_factory=set)
    segments: dict[str, _Segment] = field(default_factory=dict)
    log: dict[int, tuple[_Segment, wal.Entry]] = field(default_factory=dict)
    active: Any = None
    pending_pointer: dict[str, int] | None = None  # ACTIVE to write after the current write
    kept: frozenset[int] | StoreError = frozenset()
    debris: list[str] = field(default_factory=list)

    def newest(self) -> int:
        return max(max(self.snapshots, default=0), max(self.log, default=0))

    def versions(self) -> list[int]:
        return sorted(self.snapshots.union(self.log))

    def index(self) -> None:
        self.log = {e.version: (seg, e) for seg in self.segments.values() for e in seg.entries}

    def tail(self) -> _Segment | None:
        """The newest segment (the one appends go to)."""
        return max(self.segments.values(), key=lambda s: s.first, default=None)

    def damage(self) -> str | None:
        """Why the newest versions cannot be trusted (None: they can). A bad record with
        complete ones after it at the end of the log is damage, not a torn write: the newest
        version is unknown, so the model is neither read nor written until it is repaired."""
        tail = self.tail()
        if tail is None or tail.problem is None or not tail.valid_after:
            return None
        return (
            f"{tail.path}: {tail.problem} at byte {tail.end}, with complete records after it: "
            "the update log is damaged (not a torn write), so the newest version is unknown; "
            "restore the file from a backup (or remove the bytes from that offset on, losing "
            "the versions recorded there)"
        )

    def notes(self) -> list[str]:
        """Damage in older segments: the versions after it in that segment cannot be read."""
        tail = self.tail()
        return [
            f"{s.path}: {s.problem} at byte {s.end}; the versions recorded after it in that "
            "segment cannot be read"
            for s in self.segments.values()
            if s.problem is not None and s is not tail
        ]


@dataclass
class _Model:
    """Per-model state of one store object: the catalog and its lock, and while this process
    holds the writer lock, the appends not yet synced."""

    lock: threading.Lock = field(default_factory=threading.Lock)  # guards the catalog
    catalog: _Catalog = field(default_factory=_Catalog)
    owner: int | None = None  # the thread holding the writer lock
    fds: dict[Path, int] = field(default_factory=dict)  # segments open for appending
    unsynced: set[Path] = field(default_factory=set)
    directory_dirty: bool = False
    generation: int | None = None  # the lock file's count when this object last took it


class LocalArtifactStore:
    """A store in a local (or network) directory with working POSIX advisory locks.

    ``syncs`` counts the ``fsync``/``fdatasync`` calls this object made (each snapshot costs
    two, each :meth:`sync` of appended updates one, plus one for a new segment's directory
    entry); ``on_sync``, when set, is called with each increment (the service's metrics).
    """

    def __init__(self, root: str | os.PathLike[str], *, lock_timeout: float = 30.0) -> None:
        self.root = Path(root)
        self.lock_timeout = lock_timeout
        self.syncs = 0
        self.on_sync: Callable[[int], None] | None = None
        self._thread_locks: dict[str, threading.Lock] = {}
        self._registry_lock = threading.Lock()
        self._held = threading.local()
        self._models: dict[str, _Model] = {}
        self._meta_cache: dict[tuple[str, int], dict[str, Any]] = {}
        self._cache_lock = threading.Lock()
        self._trash: queue.SimpleQueue[Path] | None = None

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
        """Where a snapshot version's file is (or would be)."""
        return self._dir(model) / f"v{version:08d}.npz"

    def _state(self, model: str) -> _Model:
        with self._registry_lock:
            return self._models.setdefault(model, _Model())

    def _counted(self, syncs: int) -> None:
        self.syncs += syncs
        if self.on_sync is not None:
            self.on_sync(syncs)

    # ------------------------------------------------------------------ the catalog
    def _catalog(self, model: str) -> _Catalog:
        """The model's catalog, fresh from the directory (unless this thread holds the writer
        lock: then the one in memory is the truth)."""
        state = self._state(model)
        if state.owner == threading.get_ident():
            return state.catalog
        directory = self._existing_dir(model)
        with state.lock:
            self._refresh(directory, state.catalog)
            damage = state.catalog.damage()
        if damage is not None:
            raise CorruptArtifactError(damage)
        return state.catalog

    @staticmethod
    def _refresh(directory: Path, catalog: _Catalog) -> None:
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            names = []
        snapshots = set()
        present = set()
        changed = False  # a segment shrank or went: index the log afresh
        appended: list[tuple[_Segment, wal.Entry]] = []  # else: only these records are new
        debris = []
        for name in names:
            if match := _VERSION_FILE.match(name):
                snapshots.add(int(match.group(1)))
            elif match := wal.SEGMENT.match(name):
                present.add(name)
                segment = catalog.segments.get(name)
                if segment is None:
                    path = directory / name
                    segment = catalog.segments[name] = _Segment(path, int(match.group(1)))
                try:
                    stat = os.stat(segment.path)
                except FileNotFoundError:
                    present.discard(name)
                    continue
                new = segment.read_on(stat)
                if new is None:
                    changed = True
                else:
                    appended += [(segment, entry) for entry in new]
            elif name.startswith(_TMP_PREFIX):
                debris.append(name)
        for gone in set(catalog.segments) - present:
            del catalog.segments[gone]
            changed = True
        if not changed:  # the usual case: records appended (by another process) since
            catalog.log.update((entry.version, (segment, entry)) for segment, entry in appended)
        if changed or len(catalog.log) != sum(len(s.entries) for s in catalog.segments.values()):
            catalog.index()
        catalog.snapshots = snapshots
        catalog.debris = debris
        catalog.active = _read_json(directory / "ACTIVE")
        try:  # a broken KEPT fails retention (which says so), not every write
            kept = _read_json(directory / "KEPT")
        except StoreError as exc:
            catalog.kept = exc
        else:
            catalog.kept = (
                frozenset(int(v) for v in kept) if isinstance(kept, list) else frozenset()
            )

    def _recover(self, model: str, directory: Path, state: _Model) -> None:
        """On taking the writer lock: read the directory, clear a killed writer's debris, cut
        a torn tail off the log; refuse (CorruptArtifactError) a log damaged before its end."""
        catalog = state.catalog
        with state.lock:
            self._refresh(directory, catalog)
        for name in catalog.debris:
            with contextlib.suppress(FileNotFoundError):
                (directory / name).unlink()
        damage = catalog.damage()
        if damage is not None:
            log.error("model %r: %s", model, damage)
            raise CorruptArtifactError(damage)
        tail = catalog.tail()
        if tail is not None and tail.problem is not None:
            self._cut(model, tail)
        for note in catalog.notes():
            log.error("model %r: %s", model, note)

    def _cut(self, model: str, segment: _Segment) -> None:
        cut = segment.stamp[0] - segment.end
        newest = segment.entries[-1].version if segment.entries else None
        if segment.entries:
            os.truncate(segment.path, segment.end)
            fd = os.open(segment.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._counted(1)
        else:
            segment.path.unlink()
        log.warning(
            "model %r: cut %d bytes off the end of %s: %s, the remains of an append that a "
            "crash interrupted (never acknowledged); the log ends at %s",
            model,
            cut,
            segment.path,
            segment.problem,
            f"version {newest}" if newest else "the segment's start (the segment is removed)",
        )
        segment.problem = None
        segment.stamp = (segment.end, 0, 0)  # read again when next asked
        catalog = self._state(model).catalog
        if not segment.entries:
            del catalog.segments[segment.path.name]
        catalog.index()

    # ------------------------------------------------------------------ reading
    def models(self) -> list[str]:
        """Names of the models that have at least one version, sorted."""
        if not self.root.is_dir():
            return []
        found = []
        for entry in os.scandir(self.root):
            if entry.is_dir() and _NAME.match(entry.name) and self._has_versions(entry.path):
                found.append(entry.name)
        return sorted(found)

    @staticmethod
    def _has_versions(directory: str) -> bool:
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return False
        return any(_VERSION_FILE.match(n) or wal.SEGMENT.match(n) for n in names)

    def versions(self, model: str) -> list[int]:
        """All stored version numbers of ``model``, ascending."""
        return self._catalog(model).versions()

    def head(self, model: str) -> Head:
        catalog = self._catalog(model)
        newest = catalog.newest()
        pointer = catalog.active
        if isinstance(pointer, dict) and int(pointer.get("as_of", -1)) >= newest:
            active = int(pointer["version"])
            if active in catalog.snapshots or active in catalog.log:
                return Head(active=active, newest=newest)
        return Head(active=newest, newest=newest)

    def read(self, model: str, version: int) -> Record:
        """The verified content of one version."""
        self._check_version(model, version)
        found = self._find(model, version)
        if found is not None:
            segment, entry = found
            try:
                meta, arrays = wal.decode(segment.path, entry)
            except (FileNotFoundError, CorruptArtifactError):
                if self._find(model, version, refresh=True) is None:
                    raise self._missing(model, version) from None  # retention removed it
                raise
            _check_identity(meta, model, version, segment.path)
            return Record(meta, arrays)
        path = self.path(model, version)
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
        if meta is not None:
            return meta
        self._check_version(model, version)
        found = self._find(model, version)
        if found is not None:
            meta = found[1].meta  # read and verified with its record when the log was read
            _check_identity(meta, model, version, found[0].path)
        else:
            path = self.path(model, version)
            try:
                meta = read_meta(path)
            except FileNotFoundError:
                raise self._missing(model, version) from None
            _check_identity(meta, model, version, path)
        self._remember(key, meta)
        return meta

    def _find(
        self, model: str, version: int, *, refresh: bool = False
    ) -> tuple[_Segment, wal.Entry] | None:
        """Where ``version`` is in the log (None: not in the log, so a file or missing)."""
        state = self._state(model)
        if not refresh:
            with state.lock:
                found = state.catalog.log.get(version)
            if found is not None or version in state.catalog.snapshots:
                return found
        return self._catalog(model).log.get(version)

    def _remember(self, key: tuple[str, int], meta: dict[str, Any]) -> None:
        with self._cache_lock:
            if len(self._meta_cache) >= _META_CACHE_SIZE:
                self._meta_cache.pop(next(iter(self._meta_cache)), None)
            self._meta_cache[key] = meta

    def _check_version(self, model: str, version: int) -> None:
        self._existing_dir(model)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise VersionNotFoundError(
                f"version must be a positive integer, got {version!r}", field="version"
            )

    def _missing(self, model: str, version: int) -> VersionNotFoundError:
        catalog = self._catalog(model)
        versions = catalog.versions()
        span = f"{versions[0]}..{versions[-1]}" if versions else "none"
        notes = "".join(f"; {note}" for note in catalog.notes())
        return VersionNotFoundError(
            f"model {model!r} has no version {version} (stored versions: {span}; older ones "
            f"may have been removed by retention{notes})",
            field="version",
        )

    def kept(self, model: str) -> frozenset[int]:
        kept = self._catalog(model).kept
        if isinstance(kept, StoreError):
            raise kept
        return kept

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def lock(self, model: str, *, waiting: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold the model's writer lock (re-entrant within a thread). Appends not yet synced
        are synced before it is let go. ``waiting`` is called once, in this thread, if another
        process holds the lock, while a thread of the store waits for it: work that can be
        done before the lock is held (its failures are logged, not raised)."""
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
        state = self._state(model)
        try:
            fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if not _flock(fd, deadline - time.monotonic(), waiting):
                    fd = -1  # handed to the waiting thread, which closes it
                    raise self._busy(model)
                held.add(model)
                try:
                    # The lock file holds a count of lock holders: if nobody took the lock
                    # since this object last did, the directory is as it left it.
                    generation = int.from_bytes(os.pread(fd, 8, 0), "little")
                    if generation != state.generation:
                        self._recover(model, directory, state)
                    state.generation = generation + 1
                    os.pwrite(fd, state.generation.to_bytes(8, "little"), 0)
                    state.owner = threading.get_ident()
                    yield
                finally:
                    try:
                        self._release(model, state)
                    finally:
                        state.owner = None
                        held.discard(model)
                        fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                if fd >= 0:
                    os.close(fd)
        finally:
            thread_lock.release()

    def _release(self, model: str, state: _Model) -> None:
        """Before the lock goes: sync what was appended and not yet synced, close the log."""
        try:
            if state.unsynced or state.directory_dirty:
                self.sync(model)
        finally:
            for fd in state.fds.values():
                os.close(fd)
            state.fds.clear()
            state.unsynced.clear()

    def _busy(self, model: str) -> StoreBusyError:
        return StoreBusyError(
            f"could not lock model {model!r} in {self.root} within {self.lock_timeout:g} s "
            "(another writer holds it)"
        )

    def _require_lock(self, model: str) -> _Model:
        if model not in self._held.__dict__.get("models", set()):
            raise RuntimeError(f"writing to model {model!r} requires holding store.lock(model)")
        return self._state(model)

    def write(
        self, model: str, record: Record, *, durable: bool = True, activate: bool = True
    ) -> Record:
        """Store ``record`` as the next version (it becomes active). Requires the lock.

        An update (``kind == "update"``) is appended to the log; ``durable=False`` leaves it
        for the next :meth:`sync` (at the latest when the lock is let go) so that one sync
        covers many. A snapshot is its own file, durable on return. Returns the record as
        stored: its metadata with ``format_version``, ``model`` and ``version`` filled in.

        ``activate=False`` (a snapshot of a model that has an active version) keeps the active
        version: ``ACTIVE`` is rewritten first with the new version as ``as_of``, so no reader
        ever sees the new version active. Should the process die between the two, the next
        activating write finds ``as_of`` at or past its own version and rewrites ``ACTIVE``.
        """
        state = self._require_lock(model)
        catalog = state.catalog
        version = catalog.newest() + 1
        meta = {**record.meta, "format_version": FORMAT_VERSION, "model": model}
        meta["version"] = version
        stored = Record(meta, record.arrays)
        pointer = catalog.active
        if not activate:
            if record.meta.get("kind") == "update" or not version > 1:
                raise StoreError(
                    f"model {model!r}: only a snapshot of a model with versions can be written "
                    "without activating it"
                )
            self._point(model, {"version": self.head(model).active, "as_of": version})
        elif isinstance(pointer, dict) and int(pointer.get("as_of", -1)) >= version:
            # A pointer left by a write without activation that never happened: this write
            # must still become active.
            self._point(model, {"version": version, "as_of": version}, after=True)
        if record.meta.get("kind") == "update":
            self._append(model, state, stored)
            if durable:
                self.sync(model)
        else:
            # The updates before it first: a snapshot never outlives a version it follows.
            self.sync(model)
            atomic_write(self.path(model, version), encode_record(stored))
            self._counted(2)
            with state.lock:
                catalog.snapshots.add(version)
        self._remember((model, version), meta)
        if catalog.pending_pointer is not None:
            self._point(model, catalog.pending_pointer)
        return stored

    def _point(self, model: str, pointer: dict[str, int], *, after: bool = False) -> None:
        """Write ``ACTIVE`` now, or (``after``) once the version being written is stored."""
        catalog = self._require_lock(model).catalog
        if after:
            catalog.pending_pointer = pointer
            return
        catalog.pending_pointer = None
        self.sync(model)
        atomic_write(self._dir(model) / "ACTIVE", json.dumps(pointer).encode())
        self._counted(2)
        catalog.active = pointer

    def _append(self, model: str, state: _Model, record: Record) -> None:
        catalog = state.catalog
        version = record.version
        # Under the catalog's lock: a reader thread of this process must not index the new
        # record (or segment) from the file while it is being written.
        with state.lock:
            tail = catalog.tail()
            continues = (
                tail is not None
                and bool(tail.entries)
                and tail.entries[-1].version == version - 1 == record.meta.get("parent")
            )
            if tail is None or not continues:  # a new line of descent: a new segment
                tail = _Segment(self._dir(model) / wal.segment_name(version), version)
            data, entry = wal.encode_entry(version, record.meta, record.arrays, tail.end)
            fd = state.fds.get(tail.path)
            if fd is None:
                fd = os.open(tail.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                state.fds[tail.path] = fd
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            except OSError as exc:
                with contextlib.suppress(OSError):  # leave no partial record behind
                    os.ftruncate(fd, tail.end)
                raise StoreError(
                    f"could not append version {version} to {tail.path}: {exc}"
                ) from exc
            if not continues:
                catalog.segments[tail.path.name] = tail
                state.directory_dirty = True
            tail.entries.append(entry)
            tail.end = entry.end
            tail.stamp = (entry.end, 0, 0)  # read again when next asked (it finds no more)
            catalog.log[version] = (tail, entry)
            state.unsynced.add(tail.path)

    def sync(self, model: str) -> None:
        """Make every update appended so far durable: one ``fdatasync`` per segment written
        (one, unless a new segment began), and the directory's when a segment was created.
        Requires the lock."""
        state = self._require_lock(model)
        syncs = 0
        for path in sorted(state.unsynced):
            os.fdatasync(state.fds[path])
            syncs += 1
        state.unsynced.clear()
        if state.directory_dirty:
            _fsync_dir(self._dir(model))
            state.directory_dirty = False
            syncs += 1
        if syncs:
            self._counted(syncs)

    def activate(self, model: str, version: int) -> None:
        """Make an existing version active. Requires the lock."""
        state = self._require_lock(model)
        catalog = state.catalog
        if version not in catalog.snapshots and version not in catalog.log:
            raise self._missing(model, version)
        self._point(model, {"version": version, "as_of": catalog.newest()})

    def set_kept(self, model: str, version: int, kept: bool) -> None:
        """Mark or unmark a version as exempt from retention. Requires the lock."""
        state = self._require_lock(model)
        catalog = state.catalog
        if kept and version not in catalog.snapshots and version not in catalog.log:
            raise self._missing(model, version)
        before = self.kept(model)
        current = before | {version} if kept else before - {version}
        atomic_write(self._dir(model) / "KEPT", json.dumps(sorted(current)).encode())
        self._counted(2)
        catalog.kept = current

    def remove(self, model: str, version: int) -> None:
        """Delete one version (retention). Requires the lock. See :meth:`remove_many`."""
        self.remove_many(model, [version])

    def remove_many(self, model: str, versions: Sequence[int]) -> None:
        """Delete versions (retention), newest first. Requires the lock.

        A snapshot's file is deleted. Logged updates go as the end of their segment (what
        retention keeps of a segment is a prefix: each record descends from the one before):
        the segment is truncated once before the oldest of them, or deleted when that is its
        first record. A version with a later record of its segment that stays is refused.
        """
        state = self._require_lock(model)
        catalog = state.catalog
        doomed = set(versions)
        for version in sorted(doomed, reverse=True):
            if version not in doomed:
                continue  # went with its segment's end
            found = catalog.log.get(version)
            if found is None:
                self._discard(self.path(model, version))
                with state.lock:
                    catalog.snapshots.discard(version)
                doomed.discard(version)
                continue
            segment = found[0]
            cut = len(segment.entries)
            while cut and segment.entries[cut - 1].version in doomed:
                cut -= 1
            going = segment.entries[cut:]
            if found[1] not in going:
                raise StoreError(
                    f"cannot remove version {version} of model {model!r}: later versions follow "
                    f"it in {segment.path} (retention removes the end of a segment)"
                )
            self._truncate(model, state, segment, cut)
            doomed.difference_update(e.version for e in going)
        with self._cache_lock:
            for version in versions:
                self._meta_cache.pop((model, version), None)

    def _truncate(self, model: str, state: _Model, segment: _Segment, keep: int) -> None:
        """Keep the first ``keep`` records of ``segment`` (none: delete the file)."""
        if segment.path in state.unsynced:
            self.sync(model)  # nothing unsynced may sit beyond the cut
        catalog = state.catalog
        with state.lock:
            going = segment.entries[keep:]
            if keep == 0:
                self._discard(segment.path)
                catalog.segments.pop(segment.path.name, None)
                fd = state.fds.pop(segment.path, None)
                if fd is not None:
                    os.close(fd)
            else:
                os.truncate(segment.path, going[0].offset)
                segment.end = going[0].offset
                segment.stamp = (segment.end, 0, 0)
            del segment.entries[keep:]
            for entry in going:
                catalog.log.pop(entry.version, None)

    def _discard(self, path: Path) -> None:
        """Take a removed file out of the store (a rename, under the lock) and delete it in
        the background: where the disk is mounted with ``discard``, deleting a file costs
        milliseconds that no request should wait for. A file left by an exit before its turn
        is debris, removed by the next lock holder."""
        try:
            os.replace(path, path.with_name(f"{_TMP_PREFIX}removed-{path.name}"))
        except FileNotFoundError:
            return
        with self._registry_lock:
            if self._trash is None:
                self._trash = queue.SimpleQueue()
                threading.Thread(
                    target=_empty, args=(self._trash,), name="store-trash", daemon=True
                ).start()
        self._trash.put(path.with_name(f"{_TMP_PREFIX}removed-{path.name}"))


class _Waiters:
    """Daemon threads that wait in ``flock`` for :func:`_flock`, kept for the next wait:
    with several processes taking turns on a model's lock nearly every hold waits, and
    starting a thread each time cost ~0.1 ms of CPU. A thread is started only when none is
    idle (one still waiting for an abandoned lock is not); daemon threads, so that one
    waiting for a lock that never comes does not hold up the interpreter's exit."""

    def __init__(self) -> None:
        self._tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads about to take a task that nobody has counted on yet

    def run(self, task: Callable[[], None]) -> None:
        with self._lock:
            start = self._idle == 0
            if not start:
                self._idle -= 1
        self._tasks.put(task)
        if start:
            threading.Thread(target=self._serve, name="store-flock", daemon=True).start()

    def _serve(self) -> None:
        while True:
            self._tasks.get()()
            with self._lock:
                self._idle += 1


_WAITERS = _Waiters()


def _after_fork() -> None:  # a forked child has none of its parent's threads
    global _WAITERS
    _WAITERS = _Waiters()


os.register_at_fork(after_in_child=_after_fork)


def _flock(fd: int, timeout: float, waiting: Callable[[], None] | None = None) -> bool:
    """Take the exclusive ``flock`` on ``fd`` within ``timeout`` seconds (False: not taken,
    and ``fd`` now belongs to a waiting thread that closes it); call ``waiting()`` meanwhile
    if it must wait.

    When another process holds it, a thread waits in the kernel, which wakes it the moment
    the holder lets go (polling with sleeps would let a releasing process take it straight
    back, again and again); the caller waits for that thread up to ``timeout``.
    """
    deadline = time.monotonic() + timeout
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        pass
    taken = threading.Event()
    verdict = threading.Lock()
    abandoned = False
    failure: list[OSError] = []

    def wait() -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            failure.append(exc)
        with verdict:
            if not abandoned:
                taken.set()
                return
        os.close(fd)  # too late: closing the file lets the lock go

    _WAITERS.run(wait)
    if waiting is not None:
        try:
            waiting()
        except Exception:  # work done ahead of the lock: whoever holds it next does it again
            log.warning("work while waiting for a store lock failed", exc_info=True)
    if not taken.wait(max(deadline - time.monotonic(), 0.0)):  # waiting() counts too
        with verdict:
            if not taken.is_set():
                abandoned = True
                return False
    if failure:
        raise failure[0]
    return True


def _empty(trash: queue.SimpleQueue[Path]) -> None:
    while True:
        with contextlib.suppress(OSError):
            trash.get().unlink()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise StoreError(f"{path}: not valid JSON ({exc})") from None


def arrays_nbytes(arrays: Mapping[str, NDArray[Any]]) -> int:
    return sum(int(a.nbytes) for a in arrays.values())
