"""The local artifact store and the file format: numbering, the active pointer, the lock, and
refusal of every damaged, tampered or pickle-bearing file with an error naming it."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from model import errors
from model.artifact import Record, encode_record, read_record
from model.store import Head, LocalArtifactStore

MODEL = "m"


def record(seed: int = 0, kind: str = "snapshot") -> Record:
    rng = np.random.default_rng(seed)
    arrays = {
        "weights": rng.normal(size=(5, 3)),
        "bias": rng.normal(size=3),
        "classes": np.array(["ant", "bee", "cat"]),
        "y": np.array([0, 2, 1], dtype=np.int64),
    }
    return Record({"kind": kind, "parent": None, "note": f"seed {seed}"}, arrays)


def write(store: LocalArtifactStore, *records: Record) -> list[Record]:
    with store.lock(MODEL):
        return [store.write(MODEL, r) for r in records]


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "store")


# --------------------------------------------------------------------------- basics


def test_versions_are_numbered_and_read_back_exactly(store: LocalArtifactStore) -> None:
    originals = [record(seed) for seed in range(3)]
    stored = write(store, *originals)
    assert [r.version for r in stored] == [1, 2, 3]

    fresh = LocalArtifactStore(store.root)
    assert fresh.models() == [MODEL]
    assert fresh.versions(MODEL) == [1, 2, 3]
    for version, original in enumerate(originals, start=1):
        back = fresh.read(MODEL, version)
        assert back.meta == {
            **original.meta,
            "format_version": 1,
            "model": MODEL,
            "version": version,
        }
        assert back.meta == stored[version - 1].meta
        assert set(back.arrays) == set(original.arrays)
        for name, array in original.arrays.items():
            assert back.arrays[name].dtype == array.dtype
            assert np.array_equal(back.arrays[name], array)
        assert fresh.read_meta(MODEL, version) == back.meta
    assert sorted(p.name for p in store.root.joinpath(MODEL).glob("v*.npz")) == [
        "v00000001.npz",
        "v00000002.npz",
        "v00000003.npz",
    ]


def test_writing_requires_the_lock(store: LocalArtifactStore) -> None:
    write(store, record())
    for attempt in (
        lambda: store.write(MODEL, record()),
        lambda: store.activate(MODEL, 1),
        lambda: store.set_kept(MODEL, 1, True),
        lambda: store.remove(MODEL, 1),
    ):
        with pytest.raises(RuntimeError, match="requires holding store.lock"):
            attempt()
    assert store.versions(MODEL) == [1]


def test_head_follows_writes_and_explicit_activation(store: LocalArtifactStore) -> None:
    write(store, record(0), record(1), record(2))
    assert store.head(MODEL) == Head(active=3, newest=3)
    with store.lock(MODEL):
        store.activate(MODEL, 1)
    assert store.head(MODEL) == Head(active=1, newest=3)
    assert LocalArtifactStore(store.root).head(MODEL) == Head(active=1, newest=3)
    write(store, record(3))  # a new version is active as soon as it exists
    assert store.head(MODEL) == Head(active=4, newest=4)
    with store.lock(MODEL):
        store.activate(MODEL, 2)
        with pytest.raises(errors.VersionNotFoundError) as caught:
            store.activate(MODEL, 9)
    assert "has no version 9 (stored versions: 1..4" in str(caught.value)
    assert store.head(MODEL) == Head(active=2, newest=4)


def test_unknown_model_and_version(store: LocalArtifactStore) -> None:
    with pytest.raises(errors.ModelNotFoundError, match="no model named 'nope'"):
        store.versions("nope")
    write(store, record())
    with pytest.raises(errors.VersionNotFoundError, match="has no version 2"):
        store.read(MODEL, 2)
    with pytest.raises(errors.VersionNotFoundError, match="positive integer"):
        store.read(MODEL, 0)
    for bad_name in ("", "../escape", "a/b", ".hidden", "x" * 65):
        with pytest.raises(errors.InvalidParameterError, match="model name must be"):
            store.versions(bad_name)


def test_kept_and_remove(store: LocalArtifactStore) -> None:
    write(store, record(0), record(1), record(2))
    with store.lock(MODEL):
        store.set_kept(MODEL, 1, True)
        store.set_kept(MODEL, 3, True)
        store.set_kept(MODEL, 3, False)
        with pytest.raises(errors.VersionNotFoundError):
            store.set_kept(MODEL, 7, True)
        store.remove(MODEL, 2)
    assert store.kept(MODEL) == frozenset({1})
    assert store.versions(MODEL) == [1, 3]
    with pytest.raises(errors.VersionNotFoundError, match="removed by retention"):
        store.read(MODEL, 2)
    with pytest.raises(errors.VersionNotFoundError):
        store.read_meta(MODEL, 2)
    write(store, record(3))
    assert store.versions(MODEL) == [1, 3, 4]  # numbers are never reused


def test_models_lists_only_directories_with_versions(store: LocalArtifactStore) -> None:
    assert store.models() == []
    write(store, record())
    with store.lock("empty"):
        pass
    (store.root / "not a model").mkdir()
    assert store.models() == [MODEL]


def test_lock_is_exclusive_across_store_instances(store: LocalArtifactStore) -> None:
    other = LocalArtifactStore(store.root, lock_timeout=0.2)
    with store.lock(MODEL):
        with store.lock(MODEL):  # re-entrant in the holding thread
            pass
        with pytest.raises(errors.StoreBusyError) as caught, other.lock(MODEL):
            pass
    assert "could not lock model 'm'" in str(caught.value)
    with other.lock(MODEL):  # free again
        pass


def test_contended_waits_reuse_their_threads_and_an_abandoned_one_blocks_none(
    store: LocalArtifactStore,
) -> None:
    """Taking turns on the lock with another holder, the waits reuse the waiting threads
    (started once, not per wait); a wait that timed out (its thread still in ``flock``) does
    not stand in the way of the next one."""
    import threading

    other = LocalArtifactStore(store.root, lock_timeout=0.2)
    with store.lock(MODEL), pytest.raises(errors.StoreBusyError), other.lock(MODEL):
        pass  # (an abandoned wait)

    def waiters() -> frozenset[threading.Thread]:
        return frozenset(t for t in threading.enumerate() if t.name == "store-flock")

    other.lock_timeout = 10
    counts = []
    for _ in range(6):
        holding, done = threading.Event(), threading.Event()

        def hold(holding: threading.Event, done: threading.Event) -> None:
            with store.lock(MODEL):
                holding.set()
                done.wait(timeout=10)

        holder = threading.Thread(target=hold, args=(holding, done))
        holder.start()
        assert holding.wait(timeout=10)
        threading.Timer(0.02, done.set).start()
        with other.lock(MODEL):  # waits in flock for the holder
            pass
        holder.join(timeout=10)
        counts.append(waiters())
    # (The first wait may find the abandoned one's thread still busy, and start another.)
    assert counts[-1] and all(seen == counts[-1] for seen in counts[1:]), counts


def test_temporary_debris_is_ignored_then_cleaned_by_the_next_writer(
    store: LocalArtifactStore,
) -> None:
    write(store, record(0))
    directory = store.root / MODEL
    # Left by a writer killed while it held the lock (taking it, it counted itself in .lock).
    with LocalArtifactStore(store.root).lock(MODEL):
        pass
    debris = [directory / ".tmp-999-1-v00000002.npz", directory / ".tmp-999-1-ACTIVE"]
    debris[0].write_bytes(encode_record(record(1))[:100])
    debris[1].write_text('{"version": ')
    assert store.versions(MODEL) == [1]
    assert store.head(MODEL) == Head(1, 1)
    assert np.array_equal(store.read(MODEL, 1).arrays["weights"], record(0).arrays["weights"])
    write(store, record(1))
    assert not any(p.exists() for p in debris)
    assert store.versions(MODEL) == [1, 2]


# --------------------------------------------------------------------------- damaged files


def rewrite_npz(path: Path, change) -> None:
    """Re-save ``path`` as a valid npz after ``change(members)``: the stored checksum is kept."""
    with np.load(path, allow_pickle=False) as npz:
        members = {name: npz[name] for name in npz.files}
    change(members)
    buffer = io.BytesIO()
    np.savez(buffer, **members)
    path.write_bytes(buffer.getvalue())


def flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4] = bytes(b ^ 0xFF for b in data[middle : middle + 4])
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])


def tamper_weights(path: Path) -> None:
    def change(members):
        members["weights"] = members["weights"] + 1e-9

    rewrite_npz(path, change)


def tamper_metadata(path: Path) -> None:
    def change(members):
        meta = json.loads(str(members["__meta__"]))
        meta["note"] = "edited"
        members["__meta__"] = np.array(json.dumps(meta, sort_keys=True))

    rewrite_npz(path, change)


def drop_checksum(path: Path) -> None:
    rewrite_npz(path, lambda members: members.pop("__checksum__"))


def pickled_npy(path: Path) -> None:
    with open(path, "wb") as f:
        np.save(f, np.array([{"evil": 1}, None], dtype=object), allow_pickle=True)


def plain_pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))


def object_array_inside(path: Path) -> None:
    def change(members):
        members["weights"] = np.array([[1.0, "x"]], dtype=object)

    with np.load(path, allow_pickle=False) as npz:
        members = {name: npz[name] for name in npz.files}
    change(members)
    with open(path, "wb") as f:
        np.savez(f, **members)  # object arrays are pickled inside the archive


def bare_npy(path: Path) -> None:
    with open(path, "wb") as f:
        np.save(f, np.ones((5, 3)))


def non_array_member(path: Path) -> None:
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["weights.npy"] = b"not an array at all"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def empty_file(path: Path) -> None:
    path.write_bytes(b"")


DAMAGE = [
    flip_middle,
    truncate,
    tamper_weights,
    tamper_metadata,
    drop_checksum,
    pickled_npy,
    plain_pickle,
    object_array_inside,
    bare_npy,
    non_array_member,
    empty_file,
]


@pytest.mark.parametrize("damage", DAMAGE, ids=[d.__name__ for d in DAMAGE])
def test_damaged_files_are_refused_with_their_path(store: LocalArtifactStore, damage) -> None:
    write(store, record(0), record(1))
    path = store.path(MODEL, 2)
    damage(path)
    fresh = LocalArtifactStore(store.root)
    with pytest.raises(errors.CorruptArtifactError) as caught:
        fresh.read(MODEL, 2)
    assert str(path) in str(caught.value)
    # The neighbour is unaffected.
    assert np.array_equal(fresh.read(MODEL, 1).arrays["weights"], record(0).arrays["weights"])


@pytest.mark.parametrize("kind", ["snapshot", "update"])
def test_no_single_byte_change_goes_unnoticed(tmp_path: Path, kind: str) -> None:
    """Every byte flipped in turn: the file reads back identical (a byte zip ignores, such as a
    timestamp) or is refused with CorruptArtifactError; never another exception, never other
    content. Every truncation is refused."""
    original = Record({"format_version": 1, "version": 1, "kind": kind}, record(3).arrays)
    data = encode_record(original)
    path = tmp_path / "v00000001.npz"
    refused = 0
    for offset in range(len(data)):
        damaged = bytearray(data)
        damaged[offset] ^= 0xFF
        path.write_bytes(bytes(damaged))
        try:
            back = read_record(path)
        except errors.CorruptArtifactError as exc:
            assert str(path) in str(exc)
            refused += 1
            continue
        assert back.meta == original.meta, offset
        assert set(back.arrays) == set(original.arrays), offset
        for name, array in original.arrays.items():
            assert np.array_equal(back.arrays[name], array), offset
    assert refused > 0.7 * len(data)
    for length in range(0, len(data), 7):
        path.write_bytes(data[:length])
        with pytest.raises(errors.CorruptArtifactError):
            read_record(path)


def test_artifacts_never_hold_objects() -> None:
    with pytest.raises(ValueError, match="cannot go in an artifact"):
        encode_record(Record({"kind": "snapshot"}, {"w": np.array([None], dtype=object)}))
    with pytest.raises(ValueError, match="cannot go in an artifact"):
        encode_record(Record({"kind": "snapshot"}, {"__meta__": np.zeros(1)}))
