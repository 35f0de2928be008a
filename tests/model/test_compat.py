"""Old stores keep loading: a store written by softmax-serve 0.1.0 (tests/fixtures/README.md),
and the typed metadata's JSON round trip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from model import LocalArtifactStore, ModelRepository, SoftmaxRegression, VersionMeta
from model.errors import CorruptArtifactError
from model.params import LEGACY_DEFAULTS

from .synthetic import make_blobs

FIXTURE = Path(__file__).parents[1] / "fixtures" / "store-0.1.0"


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURE / "iris", tmp_path / "iris")
    return tmp_path


def test_a_store_written_by_0_1_0_loads_to_the_same_numbers(old_store: Path) -> None:
    expected = json.loads((FIXTURE / "expected.json").read_text())
    repo = ModelRepository(LocalArtifactStore(old_store), keep_last=None)
    rows = np.array(expected["rows"])
    for version, probabilities in expected["probabilities"].items():
        loaded = repo.load("iris", int(version))
        assert loaded.meta.kind == expected["kinds"][version]
        assert np.array_equal(loaded.estimator.predict_proba(rows), np.array(probabilities))
    assert repo.load("iris").version == expected["active"]


def test_the_old_metadata_reads_as_typed_fields_and_as_the_old_mapping(old_store: Path) -> None:
    repo = ModelRepository(LocalArtifactStore(old_store), keep_last=None)
    store = LocalArtifactStore(old_store)
    for version in range(1, 6):
        raw = store.read_meta("iris", version)
        meta = repo.meta("iris", version)
        assert meta.to_json() == raw  # the round trip writes exactly what 0.1.0 wrote
        assert dict(meta) == raw and meta["created_at"] == raw["created_at"]
    offline, update, online_snapshot = (repo.meta("iris", v) for v in (1, 2, 4))
    assert (offline.kind, offline.source, offline.parent) == ("snapshot", "offline", None)
    assert offline.training["epochs_run"] == 20 and offline.fingerprint == "sha256:x"
    assert (update.kind, update.parent, update.online is not None) == ("update", 1, True)
    assert online_snapshot.source == "online" and online_snapshot.online is not None


def test_an_old_store_takes_new_versions(old_store: Path) -> None:
    repo = ModelRepository(LocalArtifactStore(old_store), keep_last=None)
    active = repo.load("iris")
    X = np.array([[5.1, 3.5, 1.4, 0.2]])
    result = repo.update("iris", X, ["setosa"])
    assert (result.model.version, result.previous_version) == (6, active.version)
    fresh = ModelRepository(LocalArtifactStore(old_store)).load("iris")
    assert np.array_equal(fresh.estimator.predict_proba(X), result.model.estimator.predict_proba(X))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "delta"}, "kind 'delta'"),
        ({"step": "7"}, "malformed"),
        ({"online": {"n": 1}}, "incomplete or malformed"),
    ],
)
def test_malformed_metadata_is_a_corrupt_artifact(
    old_store: Path, change: dict[str, object], message: str
) -> None:
    raw = LocalArtifactStore(old_store).read_meta("iris", 2)
    with pytest.raises(CorruptArtifactError, match=message):
        VersionMeta.from_json({**raw, **change})


def test_the_split_functions_still_import_from_model_data_with_a_warning() -> None:
    from model import splits

    for name in ("train_val_test_split", "stratified_kfold"):
        with pytest.warns(DeprecationWarning, match=f"model.data.{name} is deprecated"):
            moved = getattr(__import__("model.data", fromlist=[name]), name)
        assert moved is getattr(splits, name)


def test_online_step_is_a_deprecated_alias_of_updated() -> None:
    from model import SoftmaxRegression

    X = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.1], [1.1, 0.0]])
    estimator = SoftmaxRegression(epochs=3, batch_size=2).fit(X, ["a", "b", "a", "b"])
    y_index = np.array([0, 1])
    with pytest.warns(DeprecationWarning, match="online_step is deprecated: use updated"):
        old, old_report = estimator.online_step(X[:2], y_index)
    new, new_report = estimator.updated(X[:2], y_index)
    assert old_report == new_report
    assert np.array_equal(old.state_.weights, new.state_.weights)


def test_an_old_invscaling_model_replays_multi_pass_updates_pass_by_pass(tmp_path: Path) -> None:
    """A model stored before 0.4 has no online_learning_rate: an update without a rate follows
    its schedule pass by pass (each pass its own step's rate), as 0.3 wrote it and replays it."""
    X, y = make_blobs(n=60, seed=31)
    legacy = dict(LEGACY_DEFAULTS, schedule="invscaling", decay_steps=5.0, epochs=3)
    fitted = SoftmaxRegression(**legacy).fit(X, y)
    old = SoftmaxRegression.from_arrays(fitted.to_arrays(), params=legacy, step=fitted.state_.step)
    assert old.online_rate_given is None
    repo = ModelRepository(LocalArtifactStore(tmp_path))
    repo.save(old, "m")
    answer = repo.update("m", X[:8], y[:8], passes=3)
    oracle = old.with_state(old.state_)
    oracle.partial_fit(X[:8], y[:8], passes=3)  # the schedule, pass by pass
    assert np.array_equal(answer.model.estimator.state_.weights, oracle.state_.weights)
    reloaded = ModelRepository(LocalArtifactStore(tmp_path)).load("m")
    assert reloaded.version == 2
    assert np.array_equal(reloaded.estimator.state_.weights, oracle.state_.weights)
