"""The versioned artifact store on PostgreSQL: the same interface as the local directory.

Selected by a store address ``postgresql://user@host:port/db`` (:func:`model.stores.open_store`).
Several service processes on several hosts share one database; each keeps only caches.

**Tables** (created and migrated by :func:`migrate`, run when a store object is built; the
schema's version is the one row of ``softmax_schema``)::

    softmax_models    name (PK), last_version, active, created_at
    softmax_versions  (model, version) PK, kind, meta (JSON text), arrays (bytea: an .npz of
                      the version's arrays), checksum (sha256 over arrays and meta, as in
                      model.artifact), kept, created_at

A version is one row, snapshot or update alike. Its arrays are one ``bytea`` value (at most
1 GB in PostgreSQL: a model of 100 million float64 weights; no chunking is needed below that).
Reading a version recomputes the checksum, so a changed byte is refused with
:class:`~model.errors.CorruptArtifactError`, never half-read.

**Which version is active** is the ``active`` column of the model's row: an activating write
sets it in the transaction that inserts the version, so the two never disagree.

**Writers serialize through the database.** :meth:`PostgresArtifactStore.lock` takes a
session-level advisory lock keyed by the model's name on a pooled connection and holds that
connection until it lets go; every read and write of the holding thread goes through it.
Session-level rather than transaction-scoped: the holder commits (the durability point, see
below) and may then still prune under the same lock, as the local store does. A holder whose
process dies loses its connection, and PostgreSQL releases the lock with it.

**Durability.** Writes are made inside one transaction per group commit; :meth:`sync` commits
it. Connections run with ``synchronous_commit = on``: when COMMIT returns, the WAL record is
flushed on the server, so an acknowledged update survives a crash of the server or of this
process. ``durable=False`` writes are covered by the next :meth:`sync`, as in the local store.

**Change notification.** Each commit that adds a version or moves the active one sends
``NOTIFY softmax_store, '<model>'`` (delivered at commit). :meth:`watch` starts a thread that
LISTENs on its own connection and calls a listener with the model's name; when that connection
drops it calls the listener with ``""`` (anything may change unseen from now on), reconnects
with backoff and says so through :attr:`ChangeFeed.live`, so a caller polls meanwhile.

**Outages** (:mod:`model.pgoutage`). Any failure to reach the server (refused, reset, pool
timeout) raises :class:`~model.errors.StoreUnavailableError`. Once a connection attempt fails
the store is marked down: every call needing a new connection raises at once, without waiting
for the pool, while a thread probes the server every quarter second; when it answers, the
watchers are told ``""`` (anything may have changed) and the pool connects afresh. A store
object can be built while the server is unreachable: it starts marked down and creates or
migrates the schema when the server first answers. A server that answers but refuses (wrong
password, no such database, a newer schema) is a :class:`~model.errors.StoreError` at once.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import threading
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import psycopg
from numpy.typing import NDArray
from psycopg_pool import ConnectionPool, PoolTimeout

from .artifact import FORMAT_VERSION, Record, checksum, parse_meta
from .errors import (
    CorruptArtifactError,
    ModelNotFoundError,
    StoreBusyError,
    StoreError,
    StoreUnavailableError,
    VersionNotFoundError,
)
from .pgoutage import Outage, connection_failure
from .store import Head, check_model_name

__all__ = ["CHANNEL", "SCHEMA_VERSION", "ChangeFeed", "PostgresArtifactStore", "migrate"]

log = logging.getLogger("model.pgstore")

CHANNEL = "softmax_store"
SCHEMA_VERSION = 1
# The advisory locks' first key: this project's, so that other users of the database's
# advisory locks (keyed by one bigint or another class) never contend with ours.
_LOCK_CLASS = 0x50F7
_META_CACHE_SIZE = 4096
# How long a caller waits for a pooled connection before the server is probed (a refused
# probe marks the store down and fails the call at once; an answer waits on, up to the
# store's connect_timeout: the pool is only busy).
_FIRST_WAIT = 0.25
_ALLOWED_KINDS = frozenset("biufU")

# Each step brings the schema from version i to i + 1; run in one transaction under a lock.
_MIGRATIONS: list[str] = [
    """
    CREATE TABLE softmax_models (
        name text PRIMARY KEY,
        last_version integer NOT NULL DEFAULT 0,
        active integer,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE softmax_versions (
        model text NOT NULL REFERENCES softmax_models (name) ON DELETE CASCADE,
        version integer NOT NULL CHECK (version > 0),
        kind text NOT NULL,
        meta text NOT NULL,
        arrays bytea NOT NULL,
        checksum text NOT NULL,
        kept boolean NOT NULL DEFAULT false,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (model, version)
    );
    """,
]


def migrate(conn: psycopg.Connection[Any]) -> int:
    """Create or bring up to date this store's tables; returns the schema version now.

    Serialized across processes by a transaction-scoped advisory lock, so replicas starting
    together migrate once. A database migrated by a newer release is refused."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (_LOCK_CLASS,))
        conn.execute("CREATE TABLE IF NOT EXISTS softmax_schema (version integer NOT NULL)")
        row = conn.execute("SELECT version FROM softmax_schema").fetchone()
        current = int(row[0]) if row else 0
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"the database holds store schema version {current}, newer than this "
                f"release's {SCHEMA_VERSION}: upgrade softmax-serve"
            )
        for step in range(current, SCHEMA_VERSION):
            conn.execute(_MIGRATIONS[step])
            log.info("store schema migrated to version %d", step + 1)
        if row is None:
            conn.execute("INSERT INTO softmax_schema VALUES (%s)", (SCHEMA_VERSION,))
        elif current != SCHEMA_VERSION:
            conn.execute("UPDATE softmax_schema SET version = %s", (SCHEMA_VERSION,))
    return SCHEMA_VERSION


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SET synchronous_commit = on")
    conn.commit()


def encode_arrays(arrays: Mapping[str, NDArray[Any]]) -> bytes:
    """The arrays as ``.npz`` bytes (uncompressed, read back with ``allow_pickle=False``)."""
    buffer = io.BytesIO()
    payload: dict[str, Any] = {}
    for name, arr in arrays.items():
        if arr.dtype.kind not in _ALLOWED_KINDS:
            raise ValueError(f"array {name!r} of dtype {arr.dtype} cannot go in an artifact")
        payload[name] = np.ascontiguousarray(arr)
    np.savez(buffer, **payload)
    return buffer.getvalue()


def decode_arrays(data: bytes, where: str) -> dict[str, NDArray[Any]]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, RuntimeError) as exc:
        raise CorruptArtifactError(f"{where}: arrays unreadable ({exc})") from None
    for name, arr in arrays.items():
        if arr.dtype.kind not in _ALLOWED_KINDS:
            raise CorruptArtifactError(f"{where}: array {name!r} has dtype {arr.dtype}")
    return arrays


class ChangeFeed:
    """A thread LISTENing for the store's notifications; ``live`` while it is connected."""

    def __init__(
        self,
        address: str,
        listener: Callable[[str], None],
        on_lost: Callable[[], object] | None = None,
    ) -> None:
        self.address = address
        self.listener = listener
        self._on_lost = on_lost  # told when the connection drops (the store probes the server)
        self._live = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-listen", daemon=True)
        self._thread.start()

    @property
    def live(self) -> threading.Event:
        return self._live

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.address, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._live.set()
                    backoff = 0.1
                    log.info("listening for store changes")
                    self.listener("")  # catch up on what happened while not listening
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self.listener(note.payload)
            except psycopg.Error as exc:
                if self._stop.is_set():
                    break
                if self._live.is_set():
                    log.warning("store notifications lost (%s); polling until back", exc)
                    self._live.clear()
                    if self._on_lost is not None:
                        self._on_lost()
                    self.listener("")  # the caller polls from now on: at once, then often
            finally:
                self._live.clear()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class PostgresArtifactStore:
    """A store in a PostgreSQL database (see the module docstring).

    ``lock_timeout``: seconds a writer waits for a model's lock (StoreBusyError after);
    ``connect_timeout``: seconds a caller waits for a connection before the store counts as
    unavailable."""

    def __init__(
        self,
        address: str,
        *,
        lock_timeout: float = 30.0,
        connect_timeout: float = 3.0,
        min_size: int = 1,
        max_size: int = 8,
    ) -> None:
        self.address = address
        self.lock_timeout = lock_timeout
        self.connect_timeout = connect_timeout
        self.syncs = 0
        self.on_sync: Callable[[int], None] | None = None
        self._pool = ConnectionPool(
            address,
            min_size=min_size,
            max_size=max_size,
            timeout=connect_timeout,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(connect_timeout))},
            configure=_configure,
            check=ConnectionPool.check_connection,
            # Give up a failing reconnection soon: the next request then starts a fresh one
            # at once, so the store is back as soon as the server is (the pool's default
            # backs off for up to 5 minutes).
            reconnect_timeout=1.0,
            name="softmax-store",
            open=False,
        )
        self._pool_opened = False  # opened once the server first answered (no noise before)
        self._migrated = False
        self._held = threading.local()
        self._meta_cache: dict[tuple[str, int], dict[str, Any]] = {}
        self._cache_lock = threading.Lock()
        self._feeds: list[ChangeFeed] = []
        self._outage = Outage(self._probe, self._back)
        try:
            self._probe()
        except StoreUnavailableError as exc:
            self._outage.failed(exc)  # transient: start marked down, probing until it answers
        except BaseException:
            self.close()
            raise

    @property
    def unavailable(self) -> str | None:
        """Why the store is marked unreachable now (None while it is not)."""
        reason = self._outage.reason
        return reason.message if reason is not None else None

    def _probe(self) -> None:
        """Connect once, directly (for the driver's own reason if it fails), creating or
        migrating the schema the first time; open the pool once the server answered.
        StoreUnavailableError if the failure is transient, else StoreError."""
        try:
            with psycopg.connect(
                self.address, autocommit=True, connect_timeout=max(1, int(self.connect_timeout))
            ) as conn:
                if self._migrated:
                    conn.execute("SELECT 1")
                else:
                    migrate(conn)
                    self._migrated = True
        except psycopg.Error as exc:
            raise connection_failure(self._shown, exc) from exc
        if not self._pool_opened:
            self._pool.open(wait=False)
            self._pool_opened = True

    def _back(self) -> None:
        """The server answers again: whatever changed meanwhile is for the watchers to see."""
        for feed in list(self._feeds):
            feed.listener("")

    @property
    def _shown(self) -> str:
        """The address without a password, for messages."""
        info = psycopg.conninfo.conninfo_to_dict(self.address)
        host, port, db = info.get("host", "localhost"), info.get("port", 5432), info.get("dbname")
        return f"postgresql://{info.get('user', '')}@{host}:{port}/{db or ''}"

    def __repr__(self) -> str:
        return f"PostgresArtifactStore({self._shown!r})"

    def __str__(self) -> str:
        return f"the store {self._shown}"

    def close(self) -> None:
        self._outage.close()
        for feed in self._feeds:
            feed.close()
        self._pool.close()

    # ------------------------------------------------------------------ connections
    def _holding(self, model: str) -> psycopg.Connection[Any] | None:
        held: dict[str, psycopg.Connection[Any]] = self._held.__dict__.setdefault("conns", {})
        return held.get(model)

    @contextlib.contextmanager
    def _reaching(self) -> Iterator[None]:
        """Turn a lost or refused connection into StoreUnavailableError; the server is probed
        (and the store marked down if it does not answer)."""
        try:
            yield
        except (psycopg.OperationalError, PoolTimeout) as exc:
            if isinstance(exc, psycopg.errors.LockNotAvailable):
                raise
            self._outage.confirm()
            unavailable = connection_failure(self._shown, exc)
            raise StoreUnavailableError(unavailable.message) from exc

    @contextlib.contextmanager
    def _pooled(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled autocommit connection. While the store is marked down: StoreUnavailableError
        at once. A wait past :data:`_FIRST_WAIT` probes the server: not answering, the store is
        marked down and the call fails at once; answering, the wait goes on."""
        self._outage.check()
        wait = min(self.connect_timeout, _FIRST_WAIT)
        try:
            conn = self._pool.getconn(timeout=wait)
        except PoolTimeout:
            if not self._outage.confirm():
                self._outage.check()
            with self._reaching():
                conn = self._pool.getconn(timeout=max(self.connect_timeout - wait, 0.001))
        try:
            with self._reaching(), conn:
                yield conn
        finally:
            self._pool.putconn(conn)

    @contextlib.contextmanager
    def _conn(self, model: str | None = None) -> Iterator[psycopg.Connection[Any]]:
        """The lock holder's connection for ``model``, else a pooled autocommit one."""
        held = self._holding(model) if model is not None else None
        if held is not None:
            with self._reaching():
                yield held
            return
        with self._pooled() as conn:
            yield conn

    def _require_lock(self, model: str) -> psycopg.Connection[Any]:
        conn = self._holding(model)
        if conn is None:
            raise RuntimeError(f"writing to model {model!r} requires holding store.lock(model)")
        return conn

    def _counted(self, syncs: int) -> None:
        self.syncs += syncs
        if self.on_sync is not None:
            self.on_sync(syncs)

    # ------------------------------------------------------------------ reading
    def models(self) -> list[str]:
        """Names of the models that have at least one version, sorted."""
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT name FROM softmax_models m WHERE EXISTS "
                "(SELECT 1 FROM softmax_versions v WHERE v.model = m.name) ORDER BY name"
            ).fetchall()
        return [str(r[0]) for r in rows]

    def _existing(self, conn: psycopg.Connection[Any], model: str) -> tuple[int, int | None]:
        row = conn.execute(
            "SELECT last_version, active FROM softmax_models WHERE name = %s",
            (check_model_name(model),),
        ).fetchone()
        if row is None:
            known = ", ".join(self.models()) or "none"
            raise ModelNotFoundError(
                f"no model named {model!r} in {self} (models: {known})", field="model"
            )
        return int(row[0]), row[1]

    def versions(self, model: str) -> list[int]:
        """All stored version numbers of ``model``, ascending."""
        with self._conn(model) as conn:
            self._existing(conn, model)
            rows = conn.execute(
                "SELECT version FROM softmax_versions WHERE model = %s ORDER BY version",
                (model,),
            ).fetchall()
        return [int(r[0]) for r in rows]

    def head(self, model: str) -> Head:
        with self._conn(model) as conn:
            row = conn.execute(
                "SELECT m.active, (SELECT max(version) FROM softmax_versions v "
                "WHERE v.model = m.name) FROM softmax_models m WHERE m.name = %s",
                (check_model_name(model),),
            ).fetchone()
            if row is None:
                self._existing(conn, model)  # raises ModelNotFoundError
        assert row is not None
        newest = int(row[1] or 0)
        return Head(active=int(row[0] or newest), newest=newest)

    def read(self, model: str, version: int) -> Record:
        """The verified content of one version."""
        self._check_version(version)
        with self._conn(model) as conn:
            row = conn.execute(
                "SELECT meta, arrays, checksum FROM softmax_versions "
                "WHERE model = %s AND version = %s",
                (check_model_name(model), version),
            ).fetchone()
            if row is None:
                raise self._missing(conn, model, version)
        meta_text, data, expected = str(row[0]), bytes(row[1]), str(row[2])
        where = f"{self}: model {model!r} version {version}"
        arrays = decode_arrays(data, where)
        actual = checksum(arrays, meta_text)
        if actual != expected:
            raise CorruptArtifactError(
                f"{where}: checksum mismatch (row says {expected[:19]}..., content is "
                f"{actual[:19]}...): the row was corrupted or modified"
            )
        meta = parse_meta(meta_text, where)
        if meta.get("version") != version or meta.get("model", model) != model:
            raise CorruptArtifactError(
                f"{where}: holds model {meta.get('model')!r} version {meta.get('version')!r}"
            )
        return Record(meta, arrays)

    def read_meta(self, model: str, version: int) -> dict[str, Any]:
        """One version's metadata (cached: versions are immutable)."""
        key = (model, version)
        with self._cache_lock:
            cached = self._meta_cache.get(key)
        if cached is not None:
            return cached
        self._check_version(version)
        with self._conn(model) as conn:
            row = conn.execute(
                "SELECT meta FROM softmax_versions WHERE model = %s AND version = %s",
                (check_model_name(model), version),
            ).fetchone()
            if row is None:
                raise self._missing(conn, model, version)
        meta = parse_meta(str(row[0]), f"{self}: model {model!r} version {version}")
        self._remember(key, meta)
        return meta

    def kept(self, model: str) -> frozenset[int]:
        with self._conn(model) as conn:
            self._existing(conn, model)
            rows = conn.execute(
                "SELECT version FROM softmax_versions WHERE model = %s AND kept", (model,)
            ).fetchall()
        return frozenset(int(r[0]) for r in rows)

    def _remember(self, key: tuple[str, int], meta: dict[str, Any]) -> None:
        with self._cache_lock:
            if len(self._meta_cache) >= _META_CACHE_SIZE:
                self._meta_cache.pop(next(iter(self._meta_cache)), None)
            self._meta_cache[key] = meta

    @staticmethod
    def _check_version(version: int) -> None:
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise VersionNotFoundError(
                f"version must be a positive integer, got {version!r}", field="version"
            )

    def _missing(
        self, conn: psycopg.Connection[Any], model: str, version: int
    ) -> VersionNotFoundError:
        self._existing(conn, model)
        row = conn.execute(
            "SELECT min(version), max(version) FROM softmax_versions WHERE model = %s", (model,)
        ).fetchone()
        span = f"{row[0]}..{row[1]}" if row and row[0] is not None else "none"
        return VersionNotFoundError(
            f"model {model!r} has no version {version} (stored versions: {span}; older ones "
            "may have been removed by retention)",
            field="version",
        )

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def lock(self, model: str, *, waiting: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold the model's writer lock (re-entrant within a thread) on a connection of its
        own; what was written and not yet synced is committed before it is let go. (``waiting``
        is the local store's; here it is not called: the server waits.)"""
        check_model_name(model)
        if self._holding(model) is not None:
            yield
            return
        held: dict[str, psycopg.Connection[Any]] = self._held.__dict__.setdefault("conns", {})
        with self._pooled() as conn:
            try:
                conn.execute(
                    "INSERT INTO softmax_models (name) VALUES (%s) ON CONFLICT DO NOTHING",
                    (model,),
                )
                # Keyed by a hash of the name: two names that collide only share a lock.
                conn.execute(f"SET lock_timeout = {int(self.lock_timeout * 1000)}")
                try:
                    conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (_LOCK_CLASS, model))
                except psycopg.errors.LockNotAvailable:
                    raise StoreBusyError(
                        f"could not lock model {model!r} in {self} within "
                        f"{self.lock_timeout:g} s (another writer holds it)"
                    ) from None
                finally:
                    conn.execute("SET lock_timeout = 0")
                conn.autocommit = False
                held[model] = conn
                try:
                    yield
                    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                        self.sync(model)
                finally:
                    del held[model]
                    self._written().discard(model)
                    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                        conn.rollback()
                    conn.autocommit = True
                    conn.execute(
                        "SELECT pg_advisory_unlock(%s, hashtext(%s))", (_LOCK_CLASS, model)
                    )
            except psycopg.OperationalError:
                # The connection is gone, and the server released its lock with it: the pool
                # must not hand it out again.
                with contextlib.suppress(Exception):
                    conn.close()
                raise

    def write(
        self, model: str, record: Record, *, durable: bool = True, activate: bool = True
    ) -> Record:
        """Store ``record`` as the next version (active unless ``activate=False``). Requires
        the lock. ``durable=False`` leaves the commit to the next :meth:`sync`."""
        conn = self._require_lock(model)
        with self._reaching():
            row = conn.execute(
                "SELECT last_version, active FROM softmax_models WHERE name = %s", (model,)
            ).fetchone()
            assert row is not None  # lock() inserted it
            version = int(row[0]) + 1
            if not activate and (record.meta.get("kind") == "update" or row[1] is None):
                raise StoreError(
                    f"model {model!r}: only a snapshot of a model with versions can be written "
                    "without activating it"
                )
            meta = {**record.meta, "format_version": FORMAT_VERSION, "model": model}
            meta["version"] = version
            meta_text = json.dumps(meta, sort_keys=True, allow_nan=False)
            arrays = dict(record.arrays)
            conn.execute(
                "INSERT INTO softmax_versions (model, version, kind, meta, arrays, checksum) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    model,
                    version,
                    str(meta.get("kind", "snapshot")),
                    meta_text,
                    encode_arrays(arrays),
                    checksum(arrays, meta_text),
                ),
            )
            conn.execute(
                "UPDATE softmax_models SET last_version = %s"
                + (", active = %s" if activate else "")
                + " WHERE name = %s",
                (version, version, model) if activate else (version, model),
            )
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, model))
            self._written().add(model)
            if durable:
                self.sync(model)
        self._remember((model, version), meta)
        return Record(meta, arrays)

    def sync(self, model: str) -> None:
        """Commit what was written under the lock: the durability point. Requires the lock."""
        conn = self._require_lock(model)
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            return
        with self._reaching():
            conn.commit()
        written = self._written()
        if model in written:  # not the end of a transaction that only read
            written.discard(model)
            self._counted(1)

    def _written(self) -> set[str]:
        """The models this thread changed in its open transaction."""
        written: set[str] = self._held.__dict__.setdefault("written", set())
        return written

    def activate(self, model: str, version: int) -> None:
        """Make an existing version active (committed on return). Requires the lock."""
        conn = self._require_lock(model)
        with self._reaching():
            found = conn.execute(
                "SELECT 1 FROM softmax_versions WHERE model = %s AND version = %s",
                (model, version),
            ).fetchone()
            if found is None:
                raise self._missing(conn, model, version)
            conn.execute("UPDATE softmax_models SET active = %s WHERE name = %s", (version, model))
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, model))
            self._written().add(model)
            self.sync(model)

    def set_kept(self, model: str, version: int, kept: bool) -> None:
        """Mark or unmark a version as exempt from retention. Requires the lock."""
        conn = self._require_lock(model)
        with self._reaching():
            done = conn.execute(
                "UPDATE softmax_versions SET kept = %s WHERE model = %s AND version = %s",
                (kept, model, version),
            ).rowcount
            if kept and not done:
                raise self._missing(conn, model, version)
            self._written().add(model)
            self.sync(model)

    def remove(self, model: str, version: int) -> None:
        """Delete one version (retention). Requires the lock."""
        self.remove_many(model, [version])

    def remove_many(self, model: str, versions: Sequence[int]) -> None:
        """Delete versions (retention), in one transaction. Requires the lock."""
        conn = self._require_lock(model)
        with self._reaching():
            conn.execute(
                "DELETE FROM softmax_versions WHERE model = %s AND version = ANY(%s)",
                (model, list(versions)),
            )
            self._written().add(model)
            self.sync(model)
        with self._cache_lock:
            for version in versions:
                self._meta_cache.pop((model, version), None)

    # ------------------------------------------------------------------ notification
    def watch(self, listener: Callable[[str], None]) -> ChangeFeed:
        """Call ``listener(model)`` after each commit that adds a version of ``model`` or
        moves its active version (``""``: after connecting and after losing the connection:
        anything may have changed)."""
        feed = ChangeFeed(self.address, listener, on_lost=self._outage.confirm)
        self._feeds.append(feed)
        return feed
