"""One contract for every store back end: the local directory and PostgreSQL run the same
tests (round trips, versions, activation, retention, corruption refused, concurrent writers),
and the repository on top of each gives bit-identical models."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psycopg
import pytest

from model import ModelRepository, SoftmaxRegression, errors
from model.artifact import Record
from model.store import ArtifactStore, Head, LocalArtifactStore
from model.stores import open_store
from tests.model.test_store import record as local_record
from tests.postgres import PostgresServer

MODEL = "m"


def record(seed: int = 0, kind: str = "snapshot", parent: int | None = None) -> Record:
    """test_store.py's record, with a parent and an empty array (an update whose rows all
    joined the guard set has one)."""
    base = local_record(seed, kind)
    return Record({**base.meta, "parent": parent}, {**base.arrays, "empty": np.zeros((0, 5))})


@dataclass
class Backend:
    """How to open another store object on the same storage (another process, as far as
    the store can tell) and how to damage one stored version behind its back."""

    name: str
    opener: Callable[[], ArtifactStore]
    corrupt: Callable[[str, int], None]
    opened: list[ArtifactStore] = field(default_factory=list)

    def open(self) -> ArtifactStore:
        store = self.opener()
        self.opened.append(store)
        return store

    def close(self) -> None:
        for store in self.opened:
            close = getattr(store, "close", None)
            if close is not None:
                close()


def _local(tmp_path: Path) -> Backend:
    root = tmp_path / "store"

    def corrupt(model: str, version: int) -> None:
        store = LocalArtifactStore(root)
        found = store._find(model, version)
        path = found[0].path if found is not None else store.path(model, version)
        offset = found[1].offset + found[1].length - 3 if found is not None else None
        data = bytearray(path.read_bytes())
        where = offset if offset is not None else len(data) // 2
        data[where] ^= 0x01
        path.write_bytes(bytes(data))

    return Backend("local", lambda: LocalArtifactStore(root, lock_timeout=5), corrupt)


def _postgresql(server: PostgresServer) -> Backend:
    address = server.create_database()

    def corrupt(model: str, version: int) -> None:
        with psycopg.connect(address, autocommit=True) as conn:
            conn.execute(
                "UPDATE softmax_versions SET arrays = overlay(arrays placing "
                "decode(lpad(to_hex(get_byte(arrays, length(arrays) - 3) # 1), 2, '0'), 'hex') "
                "from length(arrays) - 2 for 1) WHERE model = %s AND version = %s",
                (model, version),
            )

    return Backend("postgresql", lambda: open_store(address, lock_timeout=5), corrupt)


@pytest.fixture(params=["local", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    chosen = (
        _local(tmp_path)
        if request.param == "local"
        else _postgresql(request.getfixturevalue("postgres"))
    )
    yield chosen
    chosen.close()


@pytest.fixture
def store(backend: Backend) -> ArtifactStore:
    return backend.open()


def write(store: ArtifactStore, *records: Record, model: str = MODEL) -> list[Record]:
    with store.lock(model):
        return [store.write(model, r) for r in records]


def assert_same_arrays(a: Record, b: Record) -> None:
    assert sorted(a.arrays) == sorted(b.arrays)
    for name in a.arrays:
        left, right = np.asarray(a.arrays[name]), np.asarray(b.arrays[name])
        assert left.dtype == right.dtype and left.shape == right.shape, name
        assert left.tobytes() == right.tobytes(), name


# --------------------------------------------------------------------------- round trips


def test_round_trip_snapshots_and_updates(backend: Backend, store: ArtifactStore) -> None:
    originals = [record(0), record(1, "update", parent=1), record(2, "update", parent=2)]
    with store.lock(MODEL):
        stored = [store.write(MODEL, originals[0])]
        stored += [store.write(MODEL, r, durable=False) for r in originals[1:]]
        store.sync(MODEL)
    assert [r.version for r in stored] == [1, 2, 3]
    other = backend.open()  # another process's view: nothing cached
    assert other.models() == [MODEL]
    for version, original in enumerate(originals, start=1):
        back = other.read(MODEL, version)
        filled = {"format_version": 1, "model": MODEL, "version": version}
        assert back.meta == {**original.meta, **filled}
        assert other.read_meta(MODEL, version) == back.meta
        assert_same_arrays(back, original)


def test_writing_requires_the_lock(store: ArtifactStore) -> None:
    with pytest.raises(RuntimeError, match="requires holding store.lock"):
        store.write(MODEL, record())


def test_unknown_model_and_version(store: ArtifactStore) -> None:
    with pytest.raises(errors.ModelNotFoundError, match="no model named 'nope'"):
        store.head("nope")
    write(store, record())
    with pytest.raises(errors.VersionNotFoundError, match=r"no version 7 \(stored versions: 1..1"):
        store.read(MODEL, 7)
    with pytest.raises(errors.VersionNotFoundError, match="positive integer"):
        store.read_meta(MODEL, 0)
    with pytest.raises(errors.InvalidParameterError, match="model name"):
        store.head("../etc")


# --------------------------------------------------------------------------- versions, activation


def test_versions_and_head_follow_writes_and_activation(
    backend: Backend, store: ArtifactStore
) -> None:
    write(store, record(0), record(1), record(2))
    other = backend.open()
    assert other.versions(MODEL) == [1, 2, 3]
    assert other.head(MODEL) == Head(active=3, newest=3)
    with store.lock(MODEL):
        store.activate(MODEL, 1)
    assert other.head(MODEL) == Head(active=1, newest=3)
    with store.lock(MODEL):
        with pytest.raises(errors.VersionNotFoundError):
            store.activate(MODEL, 9)
        store.write(MODEL, record(3), activate=False)  # a candidate, not yet promoted
    assert other.head(MODEL) == Head(active=1, newest=4)
    write(store, record(4))  # a write that activates
    assert other.head(MODEL) == Head(active=5, newest=5)


def test_only_snapshots_of_existing_models_skip_activation(store: ArtifactStore) -> None:
    with store.lock(MODEL), pytest.raises(errors.StoreError, match="without activating"):
        store.write(MODEL, record(), activate=False)


# --------------------------------------------------------------------------- retention


def test_kept_and_retention(backend: Backend, store: ArtifactStore) -> None:
    write(store, *(record(seed) for seed in range(5)))
    with store.lock(MODEL):
        store.set_kept(MODEL, 2, True)
        with pytest.raises(errors.VersionNotFoundError):
            store.set_kept(MODEL, 99, True)
        store.remove_many(MODEL, [4, 3, 1])
    other = backend.open()
    assert other.versions(MODEL) == [2, 5]
    assert other.kept(MODEL) == frozenset({2})
    with pytest.raises(errors.VersionNotFoundError):
        other.read(MODEL, 3)
    with store.lock(MODEL):
        store.set_kept(MODEL, 2, False)
        store.remove(MODEL, 2)
    assert other.versions(MODEL) == [5]
    assert other.kept(MODEL) == frozenset()


# --------------------------------------------------------------------------- corruption


@pytest.mark.parametrize("kind", ["snapshot", "update"])
def test_a_changed_byte_is_refused(backend: Backend, store: ArtifactStore, kind: str) -> None:
    """A version with a later one after it (a damaged last record of the local log is a
    torn write, cut off: see test_wal.py)."""
    with store.lock(MODEL):
        store.write(MODEL, record(0))
        store.write(MODEL, record(1, kind, parent=1))
        store.write(MODEL, record(2, "update", parent=2))
    backend.corrupt(MODEL, 2)
    with pytest.raises(errors.CorruptArtifactError):
        backend.open().read(MODEL, 2)


# --------------------------------------------------------------------------- concurrency


def test_concurrent_writers_get_consecutive_versions(backend: Backend) -> None:
    """Writers in threads of two store objects (two processes, as far as the store knows):
    every write gets its own number, one after another, and each writer finds the newest
    version under the lock."""
    stores = [backend.open(), backend.open()]
    write(stores[0], record(0))
    per_writer = 6
    seen: list[tuple[int, int]] = []  # (the newest before, the version written)
    failures: list[BaseException] = []
    guard = threading.Lock()

    def writer(index: int) -> None:
        store = stores[index % 2]
        try:
            for step in range(per_writer):
                with store.lock(MODEL):
                    before = store.head(MODEL).newest
                    stored = store.write(MODEL, record(index * 100 + step, "update", before))
                with guard:
                    seen.append((before, stored.version))
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures
    versions = sorted(v for _, v in seen)
    assert versions == list(range(2, 2 + 6 * per_writer))
    assert all(version == before + 1 for before, version in seen)
    assert backend.open().versions(MODEL) == list(range(1, 2 + 6 * per_writer))


def test_the_lock_excludes_other_store_objects(backend: Backend) -> None:
    first, second = backend.open(), backend.open()
    write(first, record())
    second.lock_timeout = 0.3  # type: ignore[attr-defined]  # both back ends have it
    busy = pytest.raises(errors.StoreBusyError, match="could not lock")
    with first.lock(MODEL), busy, second.lock(MODEL):
        pass  # pragma: no cover
    with second.lock(MODEL):  # free again once let go
        second.write(MODEL, record(1))
    assert first.head(MODEL).newest == 2


# --------------------------------------------------------------------------- the repository


def test_the_repository_gives_identical_models_on_both_back_ends(
    backend: Backend, store: ArtifactStore
) -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 4))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0).astype(int)
    estimator = SoftmaxRegression(epochs=5, seed=0).fit(X, y)
    repository = ModelRepository(store, keep_last=4, snapshot_every=3)
    repository.save(estimator, "iris")
    for i in range(8):
        repository.update("iris", X[i * 5 : i * 5 + 5], y[i * 5 : i * 5 + 5])
    loaded = ModelRepository(backend.open()).load("iris")
    reference = estimator
    for i in range(8):
        reference, _ = reference.updated(
            X[i * 5 : i * 5 + 5], y[i * 5 : i * 5 + 5], learning_rate=reference.online_rate_given
        )
    assert loaded.version == 9
    assert loaded.estimator.state_.weights.tobytes() == reference.state_.weights.tobytes()
    assert len(store.versions("iris")) <= 4 + 1 + 3  # retention ran (plus the chain it needs)
