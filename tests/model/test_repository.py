"""Model versions on the store: exact round trips, replayed online updates, lineage and
rollback, retention, refusal of bad records, real concurrent writers and SIGKILLed writers."""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from model import errors, wal
from model.artifact import Record, checksum
from model.repository import SNAPSHOT_SYNC_BYTES, ModelRepository
from model.softmax import SoftmaxRegression
from model.store import Head, LocalArtifactStore
from tests.model.store_writer import (
    NAME,
    base_data,
    initial_model,
    save_seed,
    update_batch,
)


def record_digest(record: Record) -> str:
    """A fingerprint of a version's content (metadata and arrays), wherever it is stored."""
    return checksum(record.arrays, json.dumps(record.meta, sort_keys=True))


def assert_same_estimator(a: SoftmaxRegression, b: SoftmaxRegression) -> None:
    """Bit-for-bit: weights, optimizer state, standardization, classes, names, settings."""
    sa, sb = a.state_, b.state_
    for x, z in (
        (sa.weights, sb.weights),
        (sa.bias, sb.bias),
        (sa.velocity_weights, sb.velocity_weights),
        (sa.velocity_bias, sb.velocity_bias),
        (a.standardizer_.mean, b.standardizer_.mean),
        (a.standardizer_.scale, b.standardizer_.scale),
        (a.classes_, b.classes_),
    ):
        assert (x is None) == (z is None)
        if x is not None:
            assert x.dtype == z.dtype and np.array_equal(x, z)
    assert sa.step == sb.step
    assert a.feature_names_ == b.feature_names_
    assert a.resolved_params() == b.resolved_params()


def copy_of(model: SoftmaxRegression) -> SoftmaxRegression:
    return model.with_state(model.state_)


def repository(root: Path, **kwargs) -> ModelRepository:
    return ModelRepository(LocalArtifactStore(root), **kwargs)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    ("labels", "momentum", "names"),
    [(("ant", "bee", "cat"), 0.9, True), ((3, 7, 10), 0.0, False)],
)
def test_save_then_load_in_a_fresh_repository_is_exact(
    tmp_path: Path, labels: tuple, momentum: float, names: bool
) -> None:
    X, y = base_data()
    y = np.asarray(labels)[np.searchsorted(np.unique(y), y)]
    feature_names = [f"f{i}" for i in range(X.shape[1])] if names else None
    model = SoftmaxRegression(epochs=4, momentum=momentum).fit(X, y, feature_names=feature_names)

    saved = repository(tmp_path).save(
        model,
        NAME,
        training={"epochs_run": 4, "rows": {"train": 90}},
        metrics={"accuracy": 0.5},
        fingerprint="sha256:feed",
    )
    loaded = repository(tmp_path).load(NAME)

    assert saved.version == loaded.version == 1
    assert loaded.meta == saved.meta
    assert loaded.meta["parent"] is None and loaded.meta["kind"] == "snapshot"
    assert loaded.meta["training"] == {"epochs_run": 4, "rows": {"train": 90}}
    assert loaded.classes == list(labels)
    assert_same_estimator(loaded.estimator, model)
    assert (loaded.estimator.state_.velocity_weights is None) == (momentum == 0)
    assert np.array_equal(loaded.estimator.predict_proba(X), model.predict_proba(X))
    assert np.array_equal(loaded.estimator.predict(X), model.predict(X))


def test_online_updates_replay_to_the_same_bits(tmp_path: Path) -> None:
    X, y = base_data()
    model = initial_model()
    repo = repository(tmp_path)
    repo.save(model, NAME)
    oracle = copy_of(model)
    expected = {1: copy_of(model)}
    batches = [(0, None, 1), (1, 0.2, 1), (2, None, 3), (3, 0.01, 2), (4, None, 1)]
    for op, learning_rate, passes in batches:
        X_batch, y_batch = update_batch(worker=99, op=op)
        result = repo.update(NAME, X_batch, y_batch, learning_rate=learning_rate, passes=passes)
        report = oracle.partial_fit(
            X_batch, y_batch, learning_rate=learning_rate or oracle.online_rate, passes=passes
        )
        assert result.previous_version == op + 1
        assert result.model.version == op + 2
        assert result.report == report
        assert_same_estimator(result.model.estimator, oracle)
        expected[result.model.version] = copy_of(oracle)

    fresh = repository(tmp_path)
    assert fresh.store.versions(NAME) == [1, 2, 3, 4, 5, 6]
    assert fresh.store.head(NAME) == Head(6, 6)
    for version, model_then in expected.items():
        loaded = fresh.load(NAME, version)
        assert loaded.version == version
        assert_same_estimator(loaded.estimator, model_then)
    kinds = [fresh.store.read_meta(NAME, v)["kind"] for v in range(1, 7)]
    assert kinds[0] == "snapshot" and "update" in kinds


def test_update_chains_are_cut_by_snapshots(tmp_path: Path) -> None:
    repo = repository(tmp_path, snapshot_every=2)
    oracle = initial_model()
    repo.save(oracle, NAME)
    oracle = copy_of(oracle)
    expected = {}
    for op in range(7):
        X_batch, y_batch = update_batch(worker=5, op=3 * op)  # one row: updates stay small
        result = repo.update(NAME, X_batch, y_batch)
        oracle.partial_fit(X_batch, y_batch, learning_rate=oracle.online_rate)
        expected[result.model.version] = copy_of(oracle)
    # A big minibatch costs more than a snapshot (its bytes and SNAPSHOT_SYNC_BYTES for the
    # syncs it needs): it is stored as one.
    X, y = base_data()
    X_big, y_big = np.tile(X, (200, 1)), np.tile(y, 200)  # 18,000 rows: 864 KB
    assert X_big.nbytes > SNAPSHOT_SYNC_BYTES + 1024
    big = repo.update(NAME, X_big, y_big)
    oracle.partial_fit(X_big, y_big, learning_rate=oracle.online_rate)
    expected[big.model.version] = copy_of(oracle)

    fresh = repository(tmp_path)
    metas = [fresh.store.read_meta(NAME, v) for v in range(1, 10)]
    assert [m["kind"] for m in metas] == [
        "snapshot",
        "update",
        "update",
        "snapshot",
        "update",
        "update",
        "snapshot",
        "update",
        "snapshot",
    ]
    assert [m["source"] for m in metas] == ["offline"] + ["online"] * 8
    assert [m["parent"] for m in metas] == [None, 1, 2, 3, 4, 5, 6, 7, 8]
    for version, model_then in expected.items():
        assert_same_estimator(fresh.load(NAME, version).estimator, model_then)


# --------------------------------------------------------------------------- lineage


def test_rollback_then_update_branches_from_the_activated_version(tmp_path: Path) -> None:
    repo = repository(tmp_path)
    first = initial_model()
    repo.save(first, NAME)
    for op in range(2):
        repo.update(NAME, *update_batch(worker=1, op=op))
    assert repo.store.head(NAME) == Head(active=3, newest=3)

    rolled = repo.activate(NAME, 1)
    assert rolled.version == 1
    assert repo.store.head(NAME) == Head(active=1, newest=3)
    assert repository(tmp_path).load(NAME).version == 1

    X_batch, y_batch = update_batch(worker=1, op=7)
    result = repo.update(NAME, X_batch, y_batch)
    branch = copy_of(first)
    branch.partial_fit(X_batch, y_batch, learning_rate=branch.online_rate)
    assert (result.model.version, result.previous_version) == (4, 1)
    assert_same_estimator(result.model.estimator, branch)

    fresh = repository(tmp_path)
    assert fresh.store.head(NAME) == Head(active=4, newest=4)
    assert_same_estimator(fresh.load(NAME).estimator, branch)
    listing = fresh.versions(NAME)
    assert [v["version"] for v in listing] == [4, 3, 2, 1]
    assert [v["parent"] for v in listing] == [1, 2, 1, None]
    assert [v["active"] for v in listing] == [True, False, False, False]
    assert [v["source"] for v in listing] == ["online", "online", "online", "offline"]

    repo.activate(NAME, 3)
    result = repo.update(NAME, *update_batch(worker=1, op=8))
    assert (result.model.version, result.previous_version) == (5, 3)
    assert repository(tmp_path).load(NAME, 5).meta["parent"] == 3


def test_save_records_the_active_version_as_parent(tmp_path: Path) -> None:
    repo = repository(tmp_path)
    repo.save(initial_model(0), NAME)
    repo.save(initial_model(1), NAME)
    repo.activate(NAME, 1)
    third = repo.save(initial_model(2), NAME)
    assert third.version == 3 and third.meta["parent"] == 1
    assert repo.store.head(NAME) == Head(3, 3)


# --------------------------------------------------------------------------- retention


def needed_versions(repo: ModelRepository, parents: dict[int, int | None]) -> set[int]:
    """What retention must keep, from the lineage this test recorded itself."""
    store = repo.store
    versions = store.versions(NAME)
    roots = {*versions[-repo.keep_last :], *store.kept(NAME), store.head(NAME).active}
    needed: set[int] = set()
    for version in roots:
        cursor: int | None = version
        while cursor is not None and cursor not in needed:
            needed.add(cursor)
            is_update = store.read_meta(NAME, cursor)["kind"] == "update"
            cursor = parents[cursor] if is_update else None
    return needed


def test_retention_keeps_last_n_kept_active_and_their_chains(tmp_path: Path) -> None:
    keep_last = 3
    repo = repository(tmp_path, keep_last=keep_last, snapshot_every=2)
    expected: dict[int, SoftmaxRegression] = {}
    parents: dict[int, int | None] = {}

    def save(seed: int) -> None:
        model = initial_model(seed)
        saved = repo.save(model, NAME)
        expected[saved.version], parents[saved.version] = copy_of(model), saved.meta["parent"]

    def update(op: int) -> None:
        result = repo.update(NAME, *update_batch(worker=7, op=op))
        version = result.model.version
        expected[version], parents[version] = result.model.estimator, result.previous_version

    def check() -> None:
        fresh = repository(tmp_path, keep_last=keep_last, snapshot_every=2)
        versions = set(fresh.store.versions(NAME))
        needed = needed_versions(fresh, parents)
        assert needed <= versions
        assert versions == needed or len(versions) <= keep_last + 1
        for version in versions:
            assert_same_estimator(fresh.load(NAME, version).estimator, expected[version])
        for version in set(expected) - versions:
            with pytest.raises(errors.VersionNotFoundError, match="removed by retention"):
                fresh.load(NAME, version)

    save(0)
    for op in range(8):
        update(op)
        check()
    kept = repo.store.versions(NAME)[-2]
    repo.keep(NAME, kept)
    for op in range(8, 14):
        update(op)
        check()
    repo.activate(NAME, max(expected) - 2)
    check()
    for op in range(14, 17):
        update(op)
        check()
    save(1)
    for op in range(17, 23):
        update(op)
        check()

    versions = repo.store.versions(NAME)
    assert kept in versions, "a kept version survives"
    assert len(versions) < len(expected), "retention removed something"
    assert versions[-keep_last:] == sorted(expected)[-keep_last:]


# --------------------------------------------------------------------------- bad records


def write_raw(root: Path, meta: dict, arrays: dict) -> int:
    store = LocalArtifactStore(root)
    with store.lock(NAME):
        return store.write(NAME, Record(meta, arrays)).version


def test_an_update_with_a_wrong_digest_is_refused(tmp_path: Path) -> None:
    repo = repository(tmp_path)
    repo.save(initial_model(), NAME)
    good = repo.update(NAME, *update_batch(worker=2, op=0))
    meta = {k: v for k, v in good.model.meta.items() if k not in ("version", "model")}
    meta["digest"] = "0" * 32
    # A digest that differs alone is another CPU's rounding (tests/model/test_replay.py):
    # the recorded sample disagrees too, by far more than rounding.
    meta["replay_sample"] = [v * (1 + 1e-6) + 1e-6 for v in meta["replay_sample"]]
    arrays = repo.store.read(NAME, 2).arrays
    version = write_raw(tmp_path, {**meta, "parent": 1}, dict(arrays))

    with pytest.raises(errors.CorruptArtifactError) as caught:
        repository(tmp_path).load(NAME, version)
    assert f"version {version}: replaying the update on version 1 does not reproduce" in str(
        caught.value
    )


def test_a_consistently_rewritten_update_is_refused_by_its_digest(tmp_path: Path) -> None:
    repo = repository(tmp_path)
    repo.save(initial_model(), NAME)
    repo.update(NAME, *update_batch(worker=2, op=1))
    stored = repo.store.read(NAME, 2)
    arrays = {**stored.arrays, "X": stored.arrays["X"] + 0.5}  # a valid record, CRC redone
    (segment,) = (tmp_path / NAME).glob("u*.log")
    (entry,) = wal.scan(segment).entries
    data = bytearray(segment.read_bytes())
    data[entry.offset : entry.end] = wal.encode(2, stored.meta, arrays)
    segment.write_bytes(bytes(data))

    with pytest.raises(errors.CorruptArtifactError, match="does not reproduce"):
        repository(tmp_path).load(NAME, 2)
    with pytest.raises(errors.CorruptArtifactError):
        repository(tmp_path).activate(NAME, 2)


def test_incomplete_records_are_refused(tmp_path: Path) -> None:
    repo = repository(tmp_path)
    saved = repo.save(initial_model(), NAME)
    snapshot = repo.store.read(NAME, 1)
    meta = {k: v for k, v in saved.meta.items() if k not in ("version", "model")}
    no_bias = {k: v for k, v in snapshot.arrays.items() if k != "bias"}
    broken = write_raw(tmp_path, meta, no_bias)
    with pytest.raises(errors.CorruptArtifactError, match="snapshot is incomplete"):
        repository(tmp_path).load(NAME, broken)

    repo.activate(NAME, 1)
    update = repo.update(NAME, *update_batch(worker=3, op=0))
    update_meta = {k: v for k, v in update.model.meta.items() if k not in ("version", "model")}
    only_y = {"y": repo.store.read(NAME, update.model.version).arrays["y"]}
    missing_x = write_raw(tmp_path, update_meta, only_y)
    with pytest.raises(errors.CorruptArtifactError, match="update is incomplete"):
        repository(tmp_path).load(NAME, missing_x)


def test_a_damaged_snapshot_breaks_its_chain_with_its_path_named(tmp_path: Path) -> None:
    repo = repository(tmp_path)
    repo.save(initial_model(), NAME)
    repo.update(NAME, *update_batch(worker=4, op=0))
    repo.update(NAME, *update_batch(worker=4, op=1))
    assert repo.store.read_meta(NAME, 3)["kind"] == "update"
    snapshot_path = repo.store.path(NAME, 1)
    data = bytearray(snapshot_path.read_bytes())
    data[len(data) // 2] ^= 0x55
    snapshot_path.write_bytes(bytes(data))

    with pytest.raises(errors.CorruptArtifactError) as caught:
        repository(tmp_path).load(NAME)
    assert str(snapshot_path) in str(caught.value)
    # Activation verifies first: a broken version is never made active.
    fresh = repository(tmp_path)
    with fresh.store.lock(NAME):
        fresh.store.activate(NAME, 2)
    with pytest.raises(errors.CorruptArtifactError):
        fresh.activate(NAME, 3)
    assert fresh.store.head(NAME) == Head(active=2, newest=3)


# --------------------------------------------------------------------------- refused writes


def test_refused_updates_store_nothing(tmp_path: Path) -> None:
    repo = repository(tmp_path)
    with pytest.raises(errors.ModelNotFoundError, match="has no versions to update"):
        repo.update(NAME, *update_batch(worker=0, op=0))
    with pytest.raises(errors.ModelNotFoundError):
        repo.load("absent")
    repo.save(initial_model(), NAME)
    with pytest.raises(errors.VersionNotFoundError, match="has no version 9"):
        repo.load(NAME, 9)
    with pytest.raises(errors.VersionNotFoundError):
        repo.activate(NAME, 9)

    X, y = update_batch(worker=0, op=1)
    refusals = [
        (lambda: repo.update(NAME, X[:, :3], y), errors.FeatureCountError),
        (lambda: repo.update(NAME, X, ["a"] * (len(y) - 1) + ["zebra"]), errors.UnknownLabelError),
        (lambda: repo.update(NAME, X, list(y) + ["a"]), errors.LengthMismatchError),
        (lambda: repo.update(NAME, X * np.nan, y), errors.NonFiniteError),
        (lambda: repo.update(NAME, X, y, passes=0), errors.InvalidParameterError),
        (lambda: repo.update(NAME, X, y, learning_rate=-0.1), errors.InvalidParameterError),
        (lambda: repo.update(NAME, X, y, learning_rate=0.0), errors.InvalidParameterError),
        (lambda: repo.update(NAME, X * 1e150, y, learning_rate=1e308), errors.DivergenceError),
        (lambda: repo.save(SoftmaxRegression(), NAME), errors.NotFittedError),
        (lambda: repo.save(initial_model(), "bad/name"), errors.InvalidParameterError),
    ]
    for call, error in refusals:
        with pytest.raises(error):
            call()
    assert repo.store.versions(NAME) == [1]
    assert repo.store.head(NAME) == Head(1, 1)


def test_repository_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(
        errors.InvalidParameterError, match="keep_last, snapshot_every and commit_batch"
    ):
        repository(tmp_path, keep_last=0)


# --------------------------------------------------------------------------- real processes


def writer(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.model.store_writer", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_line(process: subprocess.Popen[str], timeout: float = 60.0) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "the writer said nothing"
    return process.stdout.readline()


def test_concurrent_writer_processes_get_distinct_consecutive_versions(
    tmp_path: Path, subprocess_env: dict[str, str], repo_root: Path
) -> None:
    workers, ops = 4, 10
    root = tmp_path / "store"
    first = initial_model()
    repository(root).save(first, NAME)
    go = tmp_path / "go"
    processes = [
        writer(["concurrent", str(root), str(w), str(ops), str(go)], subprocess_env, repo_root)
        for w in range(workers)
    ]
    try:
        for p in processes:  # all imported and waiting: then they start together
            assert read_line(p).strip() == "ready"
        go.touch()
        outputs = [p.communicate(timeout=120) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for p, (_, stderr) in zip(processes, outputs, strict=True):
        assert p.returncode == 0, stderr
    records = [json.loads(line) for out, _ in outputs for line in out.splitlines()]
    assert len(records) == workers * ops

    # Versions 1..N, each handed out once, each built on the one before it.
    by_version = {r["version"]: r for r in records}
    assert sorted(by_version) == list(range(2, workers * ops + 2))
    assert all(r["parent"] == r["version"] - 1 for r in records)
    fresh = repository(root)
    assert fresh.store.versions(NAME) == list(range(1, workers * ops + 2))
    # The writers really interleaved (not one after another).
    order = [by_version[v]["worker"] for v in sorted(by_version)]
    runs = 1 + sum(a != b for a, b in zip(order, order[1:], strict=False))
    assert runs > workers

    # Sequential replay of the recorded operations gives every stored version bit for bit.
    model = copy_of(first)
    for version in sorted(by_version):
        record = by_version[version]
        if record["kind"] == "save":
            model = initial_model(save_seed(record["worker"], record["op"]))
        else:
            X_batch, y_batch = update_batch(record["worker"], record["op"])
            model = copy_of(model)
            model.partial_fit(X_batch, y_batch, learning_rate=model.online_rate)
            if fresh.store.read_meta(NAME, version)["kind"] == "update":
                stored_X = fresh.store.read(NAME, version).arrays["X"]
                assert np.array_equal(stored_X, X_batch)
        assert_same_estimator(fresh.load(NAME, version).estimator, model)
    assert fresh.load(NAME).version == workers * ops + 1


def test_writers_killed_at_random_moments_never_break_the_store(
    tmp_path: Path, subprocess_env: dict[str, str], repo_root: Path
) -> None:
    root = tmp_path / "store"
    directory = root / NAME
    rng = random.Random(20240601)
    fingerprints: dict[int, str] = {}
    newest_so_far = 0
    debris_seen = 0
    for iteration in range(25):
        with writer(["loop", str(root), str(iteration)], subprocess_env, repo_root) as process:
            line = read_line(process)
            if line.strip() != "running":
                process.kill()
                _, stderr = process.communicate()
                pytest.fail(f"writer failed to start: {line!r} {stderr}")
            time.sleep(rng.uniform(0.0, 0.05))
            os.kill(process.pid, signal.SIGKILL)
            _, stderr = process.communicate(timeout=30)
        assert process.returncode == -signal.SIGKILL, f"the writer died by itself: {stderr}"

        store = LocalArtifactStore(root)
        repo = ModelRepository(store, keep_last=6, snapshot_every=3)
        versions = store.versions(NAME)
        assert versions[-1] >= newest_so_far
        newest_so_far = versions[-1]
        active = repo.load(NAME)
        assert active.version == store.head(NAME).active
        assert np.isfinite(active.estimator.predict_proba(base_data()[0])).all()
        for version in versions:
            store.read(NAME, version)  # verifies the checksum
            digest = record_digest(store.read(NAME, version))
            assert fingerprints.setdefault(version, digest) == digest, "a version changed"
        for version in versions[-repo.keep_last :]:
            repo.load(NAME, version)
        debris_seen += sum(name.startswith(".tmp-") for name in os.listdir(directory))

    # The next writer clears whatever a killed one left behind.
    repo = ModelRepository(LocalArtifactStore(root), keep_last=6, snapshot_every=3)
    result = repo.update(NAME, *update_batch(worker=0, op=0))
    assert result.model.version == newest_so_far + 1
    # (Files retention removed are deleted in the background: give that a moment.)
    deadline = time.monotonic() + 10
    while [n for n in os.listdir(directory) if n.startswith(".tmp-")]:
        assert time.monotonic() < deadline, os.listdir(directory)
        time.sleep(0.01)
    assert newest_so_far > 25  # the writers got real work done between the kills
    print(f"debris left by killed writers in {debris_seen} of 25 kills")


# ------------------------------------------------------------------ review fixes


def test_a_failing_retention_does_not_fail_the_committed_update(tmp_path: Path) -> None:
    repo = repository(tmp_path, keep_last=1)
    repo.save(initial_model(), NAME)
    (tmp_path / NAME / "KEPT").write_text("{not json")  # retention reads it and fails
    published = []
    result = repo.update(NAME, *update_batch(worker=5, op=0), on_commit=published.append)
    assert result.model.version == 2 and [m.version for m in published] == [2]
    assert repo.store.head(NAME) == Head(active=2, newest=2)
    assert repository(tmp_path).load(NAME).version == 2


def test_a_lineage_that_points_forward_is_refused_not_followed(tmp_path: Path) -> None:
    repo = repository(tmp_path)
    repo.save(initial_model(), NAME)
    update = repo.update(NAME, *update_batch(worker=6, op=0))
    meta = {k: v for k, v in update.model.meta.items() if k not in ("version", "model")}
    arrays = dict(repo.store.read(NAME, 2).arrays)
    looping = write_raw(tmp_path, {**meta, "parent": 4}, arrays)  # version 3 -> 4: a loop
    with pytest.raises(errors.CorruptArtifactError, match="damaged lineage"):
        repository(tmp_path).load(NAME, looping)


def test_a_file_renamed_to_another_version_is_refused(tmp_path: Path) -> None:
    repo = repository(tmp_path)
    repo.save(initial_model(), NAME)
    repo.save(initial_model(seed=1), NAME)
    fresh = LocalArtifactStore(tmp_path)
    fresh.path(NAME, 1).write_bytes(fresh.path(NAME, 2).read_bytes())
    with pytest.raises(errors.CorruptArtifactError, match="not 'shared' version 1"):
        fresh.read_meta(NAME, 1)


def test_an_update_refuses_when_the_active_model_changed_its_layout(tmp_path: Path) -> None:
    repo = repository(tmp_path)
    base = repo.save(initial_model(), NAME)
    X, y = base_data()
    other = SoftmaxRegression(epochs=1).fit(X, y, feature_names=[f"f{i}" for i in range(6)])
    repository(tmp_path).save(other, NAME)  # another process writes new features
    with pytest.raises(errors.ModelChangedError, match="retry"):
        repo.update(NAME, *update_batch(worker=7, op=0), base=base)
    assert repo.store.versions(NAME) == [1, 2]


def test_activation_reads_outside_the_lock_and_refuses_a_removed_version(tmp_path: Path) -> None:
    repo = repository(tmp_path)
    repo.save(initial_model(), NAME)
    repo.update(NAME, *update_batch(worker=8, op=0))
    loaded = repo.activate(NAME, 1)
    assert loaded.version == 1 and repo.store.head(NAME) == Head(active=1, newest=2)
    with pytest.raises(errors.VersionNotFoundError):
        repo.activate(NAME, 9)
