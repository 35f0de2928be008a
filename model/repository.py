"""Model versions on top of an :class:`~model.store.ArtifactStore`: save, load, update, roll back.

**Cheap durable online updates.** An acknowledged online minibatch is stored as an *update*
artifact: the raw rows, the class indices, the learning rate and the number of passes, and its
parent version. Its size is proportional to the minibatch, not to the model. Loading a version
walks the parent links back to the nearest *snapshot* (a full model) and replays the updates in
order; the replay is the same pure function the writer ran, so it yields the same weights, and
each update also records a digest of the weights it produced, which the replay checks.

A new version is written as a snapshot instead of an update once the updates since the last
snapshot would add up to more bytes than a snapshot, or number more than ``snapshot_every``:
that bounds both the disk written per update (at most about twice the cheaper of the two) and
the replay work for any version.

**Retention.** After each write, versions older than the newest ``keep_last`` are removed,
except kept ones, the active one, and whatever those need to be rebuilt (their chain back to a
snapshot).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .artifact import Record
from .errors import (
    CorruptArtifactError,
    InvalidParameterError,
    ModelChangedError,
    ModelError,
    ModelNotFoundError,
)
from .optimizer import TrainState
from .preprocessing import Standardizer
from .softmax import SoftmaxRegression, StepReport
from .store import ArtifactStore, arrays_nbytes, check_model_name
from .validation import check_labels, check_matrix, check_same_length

__all__ = ["LoadedModel", "ModelRepository", "UpdateResult", "layout_of", "state_digest"]

log = logging.getLogger("model.repository")


@dataclass(frozen=True)
class LoadedModel:
    """One materialized version. Treat it as immutable: the service shares it across threads."""

    name: str
    version: int
    estimator: SoftmaxRegression
    meta: dict[str, Any]

    @property
    def classes(self) -> list[Any]:
        return [c.item() for c in self.estimator.classes_]


@dataclass(frozen=True)
class UpdateResult:
    model: LoadedModel
    previous_version: int
    report: StepReport


def state_digest(state: TrainState) -> str:
    """A fingerprint of the weights after an update, checked when the update is replayed.

    Hashing an 80 MB weight matrix per update would cost more than the update, so it hashes
    the bias, the step count and an evenly strided sample of at most 4,096 weights: any
    divergence of a replay (e.g. a different BLAS on another machine) shows up in all of them.
    """
    flat = state.weights.reshape(-1)
    stride = max(1, flat.shape[0] // 4096)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.ascontiguousarray(flat[::stride]).tobytes())
    digest.update(state.bias.tobytes())
    digest.update(str(state.step).encode())
    return digest.hexdigest()


def _update_parent(meta: dict[str, Any]) -> int | None:
    """The parent an update version replays on, or None for a snapshot. A parent must be an
    older version, so a damaged lineage can never loop."""
    if meta.get("kind") == "snapshot":
        return None
    parent, version = meta.get("parent"), meta.get("version")
    if meta.get("kind") != "update" or not (
        isinstance(parent, int) and isinstance(version, int) and 0 < parent < version
    ):
        raise CorruptArtifactError(
            f"version {version}: damaged lineage metadata (kind {meta.get('kind')!r}, "
            f"parent {parent!r})"
        )
    return parent


def layout_of(model: LoadedModel) -> tuple[Any, ...]:
    """What a request's rows and labels are interpreted against: versions with equal layouts
    read the same request the same way."""
    estimator = model.estimator
    return (estimator.n_features_in_, estimator.feature_names_, estimator.classes_.tolist())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def snapshot_arrays(estimator: SoftmaxRegression) -> dict[str, Any]:
    state = estimator.state_
    arrays: dict[str, Any] = {
        "weights": state.weights,
        "bias": state.bias,
        "mean": estimator.standardizer_.mean,
        "scale": estimator.standardizer_.scale,
        "classes": estimator.classes_,
    }
    if state.velocity_weights is not None and state.velocity_bias is not None:
        arrays["velocity_weights"] = state.velocity_weights
        arrays["velocity_bias"] = state.velocity_bias
    if estimator.feature_names_ is not None:
        arrays["feature_names"] = np.array(estimator.feature_names_)
    return arrays


def estimator_from_snapshot(record: Record) -> SoftmaxRegression:
    """Rebuild the estimator a snapshot artifact describes."""
    a, meta = record.arrays, record.meta
    try:
        estimator = SoftmaxRegression(**meta["params"])
        state = TrainState(
            weights=np.asarray(a["weights"], dtype=np.float64),
            bias=np.asarray(a["bias"], dtype=np.float64),
            velocity_weights=a.get("velocity_weights"),
            velocity_bias=a.get("velocity_bias"),
            step=int(meta["step"]),
        )
        estimator.classes_ = a["classes"]
        names = a.get("feature_names")
        estimator.feature_names_ = tuple(str(n) for n in names) if names is not None else None
        estimator.standardizer_ = Standardizer(mean=a["mean"], scale=a["scale"])
        d, k = state.weights.shape
        shapes_ok = (
            state.bias.shape == (k,)
            and estimator.classes_.shape == (k,)
            and a["mean"].shape == (d,)
            and a["scale"].shape == (d,)
            and (names is None or names.shape == (d,))
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptArtifactError(
            f"version {meta.get('version')}: snapshot is incomplete ({exc!r})"
        ) from None
    if not shapes_ok:
        raise CorruptArtifactError(f"version {meta.get('version')}: snapshot arrays disagree")
    estimator.state_ = state
    estimator.history_ = []
    estimator.n_epochs_run_ = int(meta.get("training", {}).get("epochs_run", 0))
    estimator.best_epoch_ = None
    return estimator


class ModelRepository:
    """Versioned models in a store: the one place that knows snapshots, updates and lineage."""

    def __init__(
        self, store: ArtifactStore, *, keep_last: int | None = 100, snapshot_every: int = 100
    ) -> None:
        """``keep_last=None`` never removes versions (the training CLI's default: retention
        is the serving side's policy)."""
        if (keep_last is not None and keep_last < 1) or snapshot_every < 1:
            raise InvalidParameterError(
                f"keep_last and snapshot_every must be >= 1, got {keep_last}, {snapshot_every}"
            )
        self.store = store
        self.keep_last = keep_last
        self.snapshot_every = snapshot_every

    # ------------------------------------------------------------------ writing
    def save(
        self,
        estimator: SoftmaxRegression,
        name: str,
        *,
        training: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        fingerprint: str | None = None,
        keep: bool = False,
    ) -> LoadedModel:
        """Store a trained estimator as a new (active) offline snapshot version."""
        check_model_name(name)
        estimator._require_fitted()
        with self.store.lock(name):
            parent = self._active_or_none(name)
            meta = self._snapshot_meta(estimator, parent, source="offline")
            meta.update(training=training or {}, metrics=metrics or {}, fingerprint=fingerprint)
            stored = self.store.write(name, Record(meta, snapshot_arrays(estimator)))
            if keep:
                self.store.set_kept(name, stored.version, True)
            self._prune_after_commit(name)
            return LoadedModel(name, stored.version, estimator, stored.meta)

    def update(
        self,
        name: str,
        X: ArrayLike,
        y: ArrayLike | Sequence[Any],
        *,
        learning_rate: float | None = None,
        passes: int = 1,
        base: LoadedModel | None = None,
        on_commit: Callable[[LoadedModel], None] | None = None,
    ) -> UpdateResult:
        """Apply one online minibatch to the active version and store the result durably.

        Runs under the store's lock and always starts from the store's active version (``base``
        only saves work when it is that version). When this returns, the new version is on
        disk (fsynced) and active. Invalid input or a diverging update raises and stores
        nothing. ``on_commit`` runs with the new version while the lock is still held, so a
        caller can publish it before any later writer's version.
        """
        with self.store.lock(name):
            head = self.store.head(name)
            if head.newest == 0:
                raise ModelNotFoundError(f"model {name!r} has no versions to update")
            current = self.load(name, head.active, base=base)
            if base is not None and current is not base and layout_of(current) != layout_of(base):
                raise ModelChangedError(
                    f"model {name!r} changed while this request was read: version "
                    f"{current.version} has other features or classes than version "
                    f"{base.version}; retry the request",
                )
            estimator = current.estimator
            X_checked = check_matrix(X, estimator.n_features_in_)
            y_index = check_labels(y, estimator.classes_)
            check_same_length(X_checked.shape[0], y_index)
            updated, report = estimator.online_step(
                X_checked, y_index, learning_rate=learning_rate, passes=passes
            )
            update_arrays = {"X": X_checked, "y": y_index.astype(np.int64)}
            chain_length = int(current.meta.get("chain_length", 0)) + 1
            chain_bytes = int(current.meta.get("chain_bytes", 0)) + arrays_nbytes(update_arrays)
            online = {
                "n": report.n,
                "learning_rate": learning_rate,
                "passes": passes,
                "loss_before": report.loss_before,
                "accuracy_before": report.accuracy_before,
                "loss_after": report.loss_after,
            }
            snapshot = snapshot_arrays(updated)
            if chain_length > self.snapshot_every or chain_bytes >= arrays_nbytes(snapshot):
                meta = self._snapshot_meta(updated, current.version, source="online")
                meta.update(online=online, training=current.meta.get("training", {}))
                record = Record(meta, snapshot)
            else:
                meta = {
                    "kind": "update",
                    "source": "online",
                    "parent": current.version,
                    "created_at": _now(),
                    "chain_length": chain_length,
                    "chain_bytes": chain_bytes,
                    "step": updated.state_.step,
                    "digest": state_digest(updated.state_),
                    "online": online,
                }
                record = Record(meta, update_arrays)
            stored = self.store.write(name, record)
            loaded = LoadedModel(name, stored.version, updated, stored.meta)
            if on_commit is not None:
                on_commit(loaded)
            self._prune_after_commit(name)
            return UpdateResult(loaded, current.version, report)

    def activate(
        self,
        name: str,
        version: int,
        on_commit: Callable[[LoadedModel], None] | None = None,
    ) -> LoadedModel:
        """Roll back or forward to a stored version (loaded and verified before it is made
        active, so a broken version is never activated). The load happens outside the lock,
        which other writers need: only the pointer write holds it."""
        loaded = self.load(name, version)
        with self.store.lock(name):
            self.store.activate(name, version)  # refuses if retention removed it meanwhile
            if on_commit is not None:
                on_commit(loaded)
            return loaded

    def keep(self, name: str, version: int, kept: bool = True) -> None:
        with self.store.lock(name):
            self.store.set_kept(name, version, kept)

    # ------------------------------------------------------------------ reading
    def load(
        self, name: str, version: int | None = None, *, base: LoadedModel | None = None
    ) -> LoadedModel:
        """Materialize ``version`` (default: the active one).

        Walks parent links back to a snapshot, or to ``base`` if the chain passes through it
        (then only the newer updates are replayed), and replays the updates in order.
        """
        if version is None:
            version = self.store.head(name).active
            if version == 0:
                raise ModelNotFoundError(f"model {name!r} has no versions")
        pending: list[int] = []
        cursor = version
        start: LoadedModel
        while True:
            if base is not None and base.name == name and base.version == cursor:
                start = base
                break
            parent = _update_parent(self.store.read_meta(name, cursor))
            if parent is None:
                record = self.store.read(name, cursor)
                start = LoadedModel(name, cursor, estimator_from_snapshot(record), record.meta)
                break
            pending.append(cursor)
            cursor = parent
        for number in reversed(pending):
            start = self._replay(start, self.store.read(name, number))
        return start

    def snapshot_meta(self, name: str, version: int) -> dict[str, Any]:
        """The metadata of the snapshot ``version`` descends from (itself if a snapshot):
        where its classes, features and training settings are recorded."""
        meta = self.store.read_meta(name, version)
        while (parent := _update_parent(meta)) is not None:
            meta = self.store.read_meta(name, parent)
        return meta

    def _replay(self, parent: LoadedModel, record: Record) -> LoadedModel:
        meta = record.meta
        try:
            online = meta["online"]
            X, y = record.arrays["X"], record.arrays["y"].astype(np.intp)
        except KeyError as exc:
            raise CorruptArtifactError(
                f"version {meta['version']}: update is incomplete (missing {exc})"
            ) from None
        updated, _ = parent.estimator.online_step(
            X, y, learning_rate=online["learning_rate"], passes=int(online["passes"])
        )
        if state_digest(updated.state_) != meta["digest"]:
            raise CorruptArtifactError(
                f"version {meta['version']}: replaying the update on version {parent.version} "
                "does not reproduce the recorded weights (different numeric library or "
                "hardware than the writer's?)"
            )
        return LoadedModel(parent.name, record.version, updated, meta)

    def versions(self, name: str) -> list[dict[str, Any]]:
        """Every stored version's summary, newest first."""
        head = self.store.head(name)
        kept = self.store.kept(name)
        summaries = []
        for number in reversed(self.store.versions(name)):
            meta = self.store.read_meta(name, number)
            summaries.append(describe(meta, active=number == head.active, kept=number in kept))
        return summaries

    # ------------------------------------------------------------------ internals
    def _active_or_none(self, name: str) -> int | None:
        try:
            active = self.store.head(name).active
        except ModelNotFoundError:
            return None
        return active or None

    @staticmethod
    def _snapshot_meta(
        estimator: SoftmaxRegression, parent: int | None, *, source: str
    ) -> dict[str, Any]:
        return {
            "kind": "snapshot",
            "source": source,
            "parent": parent,
            "created_at": _now(),
            "chain_length": 0,
            "chain_bytes": 0,
            "step": estimator.state_.step,
            "params": estimator.get_params(),
            "n_features": estimator.n_features_in_,
            "classes": [c.item() for c in estimator.classes_],
            "feature_names": list(estimator.feature_names_) if estimator.feature_names_ else None,
        }

    def _prune_after_commit(self, name: str) -> None:
        """Retention after a committed write: its failure must not turn the write into an
        error (the version is durable and active already), so it is logged and retried on
        the next write."""
        try:
            self._prune(name)
        except ModelError as exc:
            log.warning("retention for model %r skipped: %s", name, exc.message)

    def _prune(self, name: str) -> list[int]:
        if self.keep_last is None:
            return []
        versions = self.store.versions(name)
        # Prune in batches: walking the lineage once per ~keep_last/10 writes, not per write.
        if len(versions) <= self.keep_last + max(1, self.keep_last // 10):
            return []
        head = self.store.head(name)
        needed: set[int] = set()
        for number in {*versions[-self.keep_last :], *self.store.kept(name), head.active}:
            cursor: int | None = number
            while cursor is not None and cursor not in needed:
                needed.add(cursor)
                cursor = _update_parent(self.store.read_meta(name, cursor))
        removed = [v for v in versions if v not in needed]
        # Newest first: a parent always has a lower number than its children, so a crash part
        # way through leaves only versions whose whole chain is still on disk.
        for number in reversed(removed):
            self.store.remove(name, number)
        return removed


def describe(meta: dict[str, Any], *, active: bool, kept: bool) -> dict[str, Any]:
    """The public summary of one version (what ``GET /models`` lists)."""
    metrics = meta.get("metrics") or {}
    if meta.get("source") == "online":
        metrics = meta.get("online", {})
    return {
        "version": int(meta["version"]),
        "created_at": meta["created_at"],
        "parent": meta.get("parent"),
        "source": meta.get("source", "offline"),
        "kind": meta["kind"],
        "active": active,
        "kept": kept,
        "metrics": metrics,
    }
