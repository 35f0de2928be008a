"""The update log and group commit: records round-trip; a torn or corrupted tail (every
truncation and every flipped byte of the last record) is detected and cut, never half-read;
damage before the end is refused; concurrent updates share syncs and keep exact arithmetic."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from model import errors, wal
from model.repository import ModelRepository
from model.softmax import SoftmaxRegression
from model.store import Head, LocalArtifactStore

NAME = "logged"
UPDATES = 4
FEATURES, CLASSES = 40, 8  # one-row updates are small beside a snapshot: no snapshot soon


def base_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    y = np.arange(160) % CLASSES
    return rng.normal(size=(CLASSES, FEATURES))[y] + rng.normal(size=(160, FEATURES)), y


def initial_model() -> SoftmaxRegression:
    return SoftmaxRegression(epochs=2, batch_size=32, seed=0).fit(*base_data())


def update_batch(worker: int, op: int) -> tuple[np.ndarray, np.ndarray]:
    X, y = base_data()
    row = (31 * worker + op) % X.shape[0]
    return X[row : row + 1] + 0.01 * op, y[row : row + 1]


def repository(root: Path, **kwargs) -> ModelRepository:
    kwargs.setdefault("snapshot_every", 1000)  # one segment: every update is a record
    return ModelRepository(LocalArtifactStore(root), keep_last=None, **kwargs)


@pytest.fixture
def logged(tmp_path: Path) -> tuple[Path, Path, list[wal.Entry]]:
    """A store with a snapshot and UPDATES logged updates: (root, segment, its entries)."""
    repo = repository(tmp_path)
    repo.save(initial_model(), NAME)
    for op in range(UPDATES):
        repo.update(NAME, *update_batch(worker=1, op=op))
    (segment,) = (tmp_path / NAME).glob("u*.log")
    entries = wal.scan(segment).entries
    assert [e.version for e in entries] == list(range(2, UPDATES + 2))
    return tmp_path, segment, entries


def test_records_round_trip_every_kind_of_array(tmp_path: Path) -> None:
    arrays = {
        "X": np.arange(12, dtype=np.float64).reshape(4, 3) / 7,
        "y": np.array([2, 0, 1, 1], dtype=np.int64),
        "names": np.array(["é", "b", "longer"]),
        "empty": np.empty((0, 3)),
        "flags": np.array([True, False]),
    }
    meta = {"version": 9, "kind": "update", "note": "ünïcode"}
    data = wal.encode(9, meta, arrays)
    path = tmp_path / wal.segment_name(9)
    path.write_bytes(data)
    (entry,) = wal.scan(path).entries
    assert (entry.version, entry.offset, entry.length) == (9, 0, len(data))
    back_meta, back = wal.decode(path, entry)
    assert back_meta == meta
    assert set(back) == set(arrays)
    for name, array in arrays.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape
        assert np.array_equal(back[name], array)


def expected_tail(root: Path) -> tuple[Head, np.ndarray]:
    """The head and the weights of the version before the last record."""
    repo = repository(root)
    return repo.store.head(NAME), repo.load(NAME).estimator.state_.weights


def test_every_truncation_of_the_last_record_opens_at_the_one_before(
    logged: tuple[Path, Path, list[wal.Entry]], caplog: pytest.LogCaptureFixture
) -> None:
    root, segment, entries = logged
    original = segment.read_bytes()
    last = entries[-1]
    segment.write_bytes(original[: last.offset])
    head, weights = expected_tail(root)
    assert head == Head(UPDATES, UPDATES)
    for cut in range(last.offset + 1, last.end):
        segment.write_bytes(original[:cut])
        store = LocalArtifactStore(root)
        assert store.head(NAME) == head, cut
        assert store.versions(NAME)[-1] == UPDATES, cut
        with pytest.raises(errors.VersionNotFoundError):
            store.read(NAME, UPDATES + 1)
    # A few of them taken on by a writer: it cuts the tail, says so, and goes on from there.
    for cut in (last.offset + 1, last.offset + wal.HEADER, last.end - 1):
        segment.write_bytes(original[:cut])
        repo = repository(root)
        assert np.array_equal(repo.load(NAME).estimator.state_.weights, weights)
        with caplog.at_level(logging.WARNING, logger="model.store"):
            caplog.clear()
            result = repo.update(NAME, *update_batch(worker=2, op=cut))
        assert result.model.version == UPDATES + 1 and result.previous_version == UPDATES
        assert f"cut {cut - last.offset} bytes off the end of {segment}" in caplog.text
        assert f"the log ends at version {UPDATES}" in caplog.text
        assert repository(root).load(NAME).version == UPDATES + 1
        assert len(segment.read_bytes()) == last.offset + wal.scan(segment).entries[-1].length


def test_every_flipped_byte_of_the_last_record_is_detected(
    logged: tuple[Path, Path, list[wal.Entry]],
) -> None:
    root, segment, entries = logged
    original = segment.read_bytes()
    last = entries[-1]
    for offset in range(last.offset, last.end):
        damaged = bytearray(original)
        damaged[offset] ^= 0x5A
        segment.write_bytes(bytes(damaged))
        found = wal.scan(segment)
        assert [e.version for e in found.entries] == [e.version for e in entries[:-1]], offset
        assert found.end == last.offset and found.problem and not found.valid_after
        assert LocalArtifactStore(root).head(NAME) == Head(UPDATES, UPDATES), offset


def test_damage_before_the_end_of_the_log_is_refused(
    logged: tuple[Path, Path, list[wal.Entry]],
) -> None:
    root, segment, entries = logged
    damaged = bytearray(segment.read_bytes())
    damaged[entries[1].offset + wal.HEADER + 3] ^= 0x01  # inside version 3's body
    segment.write_bytes(bytes(damaged))
    store = LocalArtifactStore(root)
    for call in (lambda: store.head(NAME), lambda: store.versions(NAME)):
        with pytest.raises(errors.CorruptArtifactError) as caught:
            call()
        message = str(caught.value)
        assert str(segment) in message and f"at byte {entries[1].offset}" in message
        assert "fails its CRC" in message and "complete records after it" in message
    with pytest.raises(errors.CorruptArtifactError):
        repository(root).update(NAME, *update_batch(worker=3, op=0))
    assert segment.read_bytes() == bytes(damaged), "nothing was cut or appended"


def test_damage_in_an_older_segment_spares_the_rest(tmp_path: Path) -> None:
    repo = repository(tmp_path)
    repo.save(initial_model(), NAME)
    for op in range(3):
        repo.update(NAME, *update_batch(worker=1, op=op))  # versions 2..4: segment u2
    repo.activate(NAME, 2)
    repo.update(NAME, *update_batch(worker=1, op=9))  # version 5, parent 2: a new segment
    older = tmp_path / NAME / wal.segment_name(2)
    assert (tmp_path / NAME / wal.segment_name(5)).exists()
    entries = wal.scan(older).entries
    damaged = bytearray(older.read_bytes())
    damaged[entries[1].offset + wal.HEADER + 1] ^= 0x01  # version 3
    older.write_bytes(bytes(damaged))

    fresh = repository(tmp_path)
    assert fresh.store.head(NAME) == Head(5, 5)
    assert fresh.load(NAME).version == 5  # its chain (5 -> 2 -> 1) is intact
    with pytest.raises(errors.VersionNotFoundError) as caught:
        fresh.load(NAME, 4)
    assert f"{older}: a record that fails its CRC at byte {entries[1].offset}" in str(caught.value)
    assert fresh.update(NAME, *update_batch(worker=1, op=10)).model.version == 6


def test_retention_truncates_and_removes_segments(tmp_path: Path) -> None:
    repo = ModelRepository(LocalArtifactStore(tmp_path), keep_last=3, snapshot_every=4)
    repo.save(initial_model(), NAME)
    for op in range(30):
        repo.update(NAME, *update_batch(worker=4, op=op))
    directory = tmp_path / NAME
    versions = repo.store.versions(NAME)
    assert versions[-3:] == [29, 30, 31]
    logged = {e.version for s in directory.glob("u*.log") for e in wal.scan(s).entries}
    snapshots = {int(p.stem[1:]) for p in directory.glob("v*.npz")}
    assert sorted(logged | snapshots) == versions, "the files hold exactly the versions listed"
    for version in versions:
        repository(tmp_path).load(NAME, version)
    assert len(versions) <= 3 + 4 + 1, versions


def test_a_reader_follows_appends_and_truncations_of_another_writer(tmp_path: Path) -> None:
    """Another store object (another process) reading as one writes: each refresh indexes the
    records appended since (without indexing the log afresh), and a truncation by retention
    or a new segment is indexed afresh; what it lists is what the files hold."""
    writer = ModelRepository(LocalArtifactStore(tmp_path), keep_last=3, snapshot_every=4)
    writer.save(initial_model(), NAME)
    reader = LocalArtifactStore(tmp_path)
    directory = tmp_path / NAME
    for op in range(14):
        writer.update(NAME, *update_batch(worker=5, op=op))
        listed = reader.versions(NAME)
        logged = {e.version for s in directory.glob("u*.log") for e in wal.scan(s).entries}
        snapshots = {int(p.stem[1:]) for p in directory.glob("v*.npz")}
        assert listed == sorted(logged | snapshots) == writer.store.versions(NAME), op
        for version in listed:
            assert reader.read_meta(NAME, version)["version"] == version
        assert reader.head(NAME) == writer.store.head(NAME)
    assert 1 not in listed, "retention removed versions meanwhile"


# --------------------------------------------------------------------------- group commit


def test_updates_queued_behind_a_batch_share_one_sync(tmp_path: Path) -> None:
    """While the first update's batch is held up (in its commit callback), seven more queue;
    they go in one batch: eight versions, exact arithmetic, one log sync per batch."""
    repo = repository(tmp_path)
    repo.save(initial_model(), NAME)
    syncs_before = repo.store.syncs
    release = threading.Event()
    results = {}

    def first_commit(_loaded) -> None:
        release.wait(timeout=30)

    def update(worker: int, on_commit=None) -> None:
        results[worker] = repo.update(NAME, *update_batch(worker, 0), on_commit=on_commit)

    threads = [threading.Thread(target=update, args=(0, first_commit))]
    threads[0].start()
    time.sleep(0.2)  # the first batch is in its callback, holding the lock
    threads += [threading.Thread(target=update, args=(w,)) for w in range(1, 8)]
    for thread in threads[1:]:
        thread.start()
    time.sleep(0.3)  # all seven are queued
    release.set()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(r.model.version for r in results.values()) == list(range(2, 10))
    by_version = {r.model.version: r for r in results.values()}
    assert [by_version[v].previous_version for v in range(2, 10)] == list(range(1, 9))
    # Batch 1: its record's fdatasync and the directory's fsync (it began the segment);
    # batch 2: one fdatasync for seven records.
    assert repo.store.syncs - syncs_before == 3
    fresh = repository(tmp_path)
    for version, result in by_version.items():
        loaded = fresh.load(NAME, version)
        assert np.array_equal(
            loaded.estimator.state_.weights, result.model.estimator.state_.weights
        )


def test_a_refused_update_in_a_batch_leaves_the_others_alone(tmp_path: Path) -> None:
    repo = repository(tmp_path)
    repo.save(initial_model(), NAME)
    X, y = base_data()
    outcomes: dict[int, object] = {}
    barrier = threading.Barrier(6)

    def update(worker: int) -> None:
        labels = [99, 99] if worker == 3 else y[:2]
        barrier.wait()
        try:
            outcomes[worker] = repo.update(NAME, X[:2] + worker, labels).model.version
        except errors.ModelError as exc:
            outcomes[worker] = exc

    threads = [threading.Thread(target=update, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert isinstance(outcomes.pop(3), errors.UnknownLabelError)
    assert sorted(outcomes.values()) == [2, 3, 4, 5, 6]  # type: ignore[type-var]
    assert repo.store.versions(NAME) == [1, 2, 3, 4, 5, 6]


def test_the_metadata_a_write_returns_is_what_a_reader_parses(tmp_path: Path) -> None:
    repo = repository(tmp_path, snapshot_every=2)  # updates and online snapshots alike
    written = [repo.save(initial_model(), NAME)]
    written += [repo.update(NAME, *update_batch(worker=6, op=op)).model for op in range(5)]
    assert {w.meta.kind for w in written[1:]} == {"update", "snapshot"}
    fresh = repository(tmp_path)
    for loaded in written:
        assert loaded.meta == fresh.meta(NAME, loaded.version), loaded.version
        assert loaded.meta.to_json() == fresh.store.read_meta(NAME, loaded.version)


def test_scanning_reads_records_larger_than_its_chunk_and_across_chunks(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    sizes = [10, 300_000, 7, 200_000, 150_000, 1, 260_000]  # rows of 1 float: 8 B each
    arrays = [{"X": rng.normal(size=n)} for n in sizes]
    path = tmp_path / wal.segment_name(1)
    path.write_bytes(b"".join(wal.encode(v, {"version": v}, a) for v, a in enumerate(arrays, 1)))
    assert path.stat().st_size > 2 * (1 << 20)
    found = wal.scan(path)
    assert found.problem is None and found.end == path.stat().st_size
    assert [e.version for e in found.entries] == list(range(1, len(sizes) + 1))
    for entry, expected in zip(found.entries, arrays, strict=True):
        assert np.array_equal(wal.decode(path, entry)[1]["X"], expected["X"])
    later = wal.scan(path, found.entries[3].offset)  # from a record boundary
    assert [e.version for e in later.entries] == [4, 5, 6, 7]


def test_group_commit_runs_every_job_once_in_capped_batches() -> None:
    from model.commit import GroupCommit

    ran: list[list[int]] = []

    def run(jobs) -> None:
        ran.append([job.request for job in jobs])
        time.sleep(0.002)  # others queue meanwhile
        for job in jobs:
            if job.request % 7 == 3:
                job.error = ValueError(f"job {job.request}")
            else:
                job.result = job.request * 10

    committer = GroupCommit(run, max_batch=3)
    outcomes: dict[int, object] = {}

    def submit(n: int) -> None:
        try:
            outcomes[n] = committer.submit(n)
        except ValueError as exc:
            outcomes[n] = str(exc)

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert outcomes == {n: f"job {n}" if n % 7 == 3 else n * 10 for n in range(40)}
    flat = [n for batch in ran for n in batch]
    assert sorted(flat) == list(range(40)), "each job ran exactly once"
    assert all(1 <= len(batch) <= 3 for batch in ran)
    assert committer.batches == len(ran) < 40, "some batches held several jobs"


def test_group_commit_takes_its_batch_once_it_holds_the_lock() -> None:
    """Jobs that queue while the leader waits for ``hold`` (another process's batch) go in
    the leader's batch, not in one of their own."""
    from model.commit import GroupCommit

    other_process = threading.Lock()
    other_process.acquire()
    ran: list[list[int]] = []

    def run(jobs) -> None:
        ran.append([job.request for job in jobs])
        for job in jobs:
            job.result = job.request

    committer = GroupCommit(run, hold=lambda: other_process)
    outcomes: dict[int, object] = {}
    threads = [
        threading.Thread(target=lambda n=n: outcomes.setdefault(n, committer.submit(n)))
        for n in range(6)
    ]
    threads[0].start()  # the leader: waits for the lock
    deadline = time.monotonic() + 10
    while not committer._leading:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    for thread in threads[1:]:
        thread.start()
    while len(committer._queue) < 6:  # every job queued while the leader waits
        assert time.monotonic() < deadline
        time.sleep(0.001)
    other_process.release()
    for thread in threads:
        thread.join(timeout=30)
    assert outcomes == {n: n for n in range(6)}
    assert len(ran) == 1 and sorted(ran[0]) == list(range(6)), ran


def test_group_commit_fails_the_queued_jobs_when_the_lock_cannot_be_taken() -> None:
    from model.commit import GroupCommit

    busy = [True]

    @contextlib.contextmanager
    def hold():
        if busy[0]:
            raise errors.StoreBusyError("the lock is busy")
        yield

    def run(jobs) -> None:
        for job in jobs:
            job.result = job.request

    committer = GroupCommit(run, hold=hold)
    with pytest.raises(errors.StoreBusyError, match="busy"):
        committer.submit(1)
    busy[0] = False
    assert committer.submit(2) == 2, "the next leader takes the lock again"


def test_two_processes_updates_queued_behind_the_others_lock_share_a_sync(
    tmp_path: Path,
) -> None:
    """Two repositories on two store objects (two processes, as far as the lock goes: one
    flock each): while one holds the model's lock, six updates queue in the other; when it
    lets go, they commit as one batch with one log sync, six versions in exact sequence."""
    first = repository(tmp_path)
    first.save(initial_model(), NAME)
    first.update(NAME, *update_batch(worker=9, op=0))  # the segment exists: no directory sync
    second = repository(tmp_path)
    results: dict[int, object] = {}

    def update(worker: int) -> None:
        results[worker] = second.update(NAME, *update_batch(worker, 1))

    with first.store.lock(NAME):
        threads = [threading.Thread(target=update, args=(w,)) for w in range(6)]
        for thread in threads:
            thread.start()
        committer = second._committer(NAME)
        deadline = time.monotonic() + 10
        while len(committer._queue) < 6:
            assert time.monotonic() < deadline, "the updates did not queue"
            time.sleep(0.001)
        syncs_before = second.store.syncs
    for thread in threads:
        thread.join(timeout=30)
    assert committer.batches == 1
    assert second.store.syncs - syncs_before == 1
    versions = sorted(r.model.version for r in results.values())  # type: ignore[attr-defined]
    assert versions == list(range(3, 9)) and first.store.versions(NAME)[-1] == 8
    fresh = repository(tmp_path)
    for result in results.values():
        loaded = fresh.load(NAME, result.model.version)  # type: ignore[attr-defined]
        assert np.array_equal(
            loaded.estimator.state_.weights,
            result.model.estimator.state_.weights,  # type: ignore[attr-defined]
        )


def test_a_writer_waiting_for_another_process_catches_up_before_it_holds_the_lock(
    tmp_path: Path,
) -> None:
    """While one process holds the lock, the other's waiting batch replays the versions the
    first has appended (outside the lock); a rollback made before the lock is let go still
    decides what the waiting update applies to. An uncontended batch does no such work."""
    first = repository(tmp_path)
    first.save(initial_model(), NAME)
    second = repository(tmp_path)
    calls = []
    catch_up = second._catch_up
    second._catch_up = lambda name: (calls.append(name), catch_up(name))  # type: ignore[method-assign]
    second.update(NAME, *update_batch(worker=1, op=0))  # versions 2 and 3, uncontended
    second.update(NAME, *update_batch(worker=1, op=1))
    assert calls == []

    results: dict[str, object] = {}
    with first.store.lock(NAME):
        for op in range(3):
            first.update(NAME, *update_batch(worker=2, op=op))  # versions 4, 5, 6
        thread = threading.Thread(
            target=lambda: results.setdefault("x", second.update(NAME, *update_batch(3, 0)))
        )
        thread.start()
        deadline = time.monotonic() + 10
        while second._last[NAME].version != 6:  # caught up while the lock is held
            assert time.monotonic() < deadline, "the waiting batch did not catch up"
            time.sleep(0.001)
        assert calls == [NAME]
        first.activate(NAME, 5)  # a rollback before the lock goes
    thread.join(timeout=30)
    result = results["x"]
    assert result.previous_version == 5 and result.model.version == 7  # type: ignore[attr-defined]
    expected = repository(tmp_path).load(NAME, 7)
    assert np.array_equal(
        expected.estimator.state_.weights,
        result.model.estimator.state_.weights,  # type: ignore[attr-defined]
    )
