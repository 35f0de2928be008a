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
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .artifact import OnlineStats, Record, Source, VersionMeta
from .errors import (
    CorruptArtifactError,
    InvalidParameterError,
    ModelChangedError,
    ModelError,
    ModelNotFoundError,
    VersionNotFoundError,
)
from .optimizer import TrainState
from .prequential import PrequentialFigures, PrequentialWindow
from .softmax import SoftmaxRegression, StepReport
from .store import ArtifactStore, Head, arrays_nbytes, check_model_name
from .validation import check_labels, check_matrix, check_same_length

__all__ = [
    "LoadedModel",
    "ModelRepository",
    "UpdateResult",
    "VersionDetail",
    "check_model_name",
    "VersionInfo",
    "VersionPage",
    "state_digest",
]

log = logging.getLogger("model.repository")


@dataclass(frozen=True)
class LoadedModel:
    """One materialized version. Treat it as immutable: the service shares it across threads."""

    name: str
    version: int
    estimator: SoftmaxRegression
    meta: VersionMeta

    @cached_property
    def classes(self) -> list[Any]:
        """The class labels, in the order of the probability columns."""
        return [c.item() for c in self.estimator.classes_]

    @property
    def n_features(self) -> int:
        return self.estimator.n_features_in_

    @property
    def feature_names(self) -> tuple[str, ...] | None:
        return self.estimator.feature_names_

    @property
    def layout(self) -> tuple[Any, ...]:
        """What a request's rows and labels are read against: versions with equal layouts
        read the same request the same way."""
        return (self.n_features, self.feature_names, self.classes)


@dataclass(frozen=True)
class UpdateResult:
    model: LoadedModel
    previous_version: int
    report: StepReport


@dataclass(frozen=True)
class VersionInfo(Mapping[str, Any]):
    """A stored version as a listing shows it. Also a read-only mapping of its metadata's JSON
    form plus ``active`` and ``kept``, as :meth:`ModelRepository.versions` returned before."""

    meta: VersionMeta
    active: bool
    kept: bool

    def __getitem__(self, key: str) -> Any:
        if key in ("active", "kept"):
            return getattr(self, key)
        return self.meta[key]

    def __iter__(self) -> Iterator[str]:
        yield from self.meta
        yield from ("active", "kept")

    def __len__(self) -> int:
        return len(self.meta) + 2


@dataclass(frozen=True)
class VersionPage:
    """Versions newest first; ``next_before`` continues the listing (None: no more)."""

    name: str
    active: int
    versions: list[VersionInfo]
    next_before: int | None


@dataclass(frozen=True)
class VersionDetail:
    """A version and the snapshot it descends from (its classes, features and settings)."""

    info: VersionInfo
    snapshot: VersionMeta


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


def _update_parent(meta: VersionMeta) -> int | None:
    """The parent an update version replays on, or None for a snapshot. A parent must be an
    older version, so a damaged lineage can never loop."""
    if meta.kind == "snapshot":
        return None
    parent = meta.parent
    if not (isinstance(parent, int) and 0 < parent < meta.version):
        raise CorruptArtifactError(
            f"version {meta.version}: damaged lineage metadata (kind {meta.kind!r}, "
            f"parent {parent!r})"
        )
    return parent


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _estimator_from(arrays: Mapping[str, NDArray[Any]], meta: VersionMeta) -> SoftmaxRegression:
    """The estimator a snapshot artifact describes (the estimator owns its codec)."""
    try:
        return SoftmaxRegression.from_arrays(
            arrays,
            params=meta.params,
            step=meta.step,
            epochs_run=int(meta.training.get("epochs_run", 0)),
        )
    except ValueError as exc:
        raise CorruptArtifactError(
            f"version {meta.version}: snapshot is incomplete or inconsistent ({exc})"
        ) from None


@dataclass
class _StreamCursor:
    """How far one process has folded a model's online stream into its window."""

    window: PrequentialWindow
    seen: int = 0


class ModelRepository:
    """Versioned models in a store: the one place that knows snapshots, updates and lineage.

    The service talks to this class only, never to the store behind it.
    """

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
        self._streams: dict[tuple[str, int], _StreamCursor] = {}
        self._streams_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ModelRepository({self.store!r})"

    def __str__(self) -> str:
        return str(self.store)

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
        arrays = estimator.to_arrays()  # raises NotFittedError first
        with self.store.lock(name):
            meta = replace(
                self._snapshot_meta(estimator, self._active_or_none(name), source="offline"),
                training=training or {},
                metrics=metrics or {},
                fingerprint=fingerprint,
            )
            stored = self._write(name, meta, arrays)
            if keep:
                self.store.set_kept(name, stored.version, True)
            self._prune_after_commit(name)
            return LoadedModel(name, stored.version, estimator, stored)

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
            if base is not None and current is not base and current.layout != base.layout:
                raise ModelChangedError(
                    f"model {name!r} changed while this request was read: version "
                    f"{current.version} has other features or classes than version "
                    f"{base.version}; retry the request",
                )
            estimator = current.estimator
            X_checked = check_matrix(X, estimator.n_features_in_)
            y_index = check_labels(y, estimator.classes_)
            check_same_length(X_checked.shape[0], y_index)
            updated, report = estimator.updated(
                X_checked, y_index, learning_rate=learning_rate, passes=passes
            )
            online = OnlineStats(
                report.n,
                learning_rate,
                passes,
                report.loss_before,
                report.accuracy_before,
                report.loss_after,
            )
            stored = self._write(
                name, *self._update_record(current, updated, X_checked, y_index, online)
            )
            loaded = LoadedModel(name, stored.version, updated, stored)
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
    def models(self) -> list[str]:
        """Names of the stored models, sorted."""
        return self.store.models()

    def head(self, name: str) -> Head:
        return self.store.head(name)

    def meta(self, name: str, version: int) -> VersionMeta:
        """One version's metadata, without its arrays."""
        return VersionMeta.from_json(self.store.read_meta(name, version))

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
            parent = _update_parent(self.meta(name, cursor))
            if parent is None:
                record = self.store.read(name, cursor)
                meta = VersionMeta.from_json(record.meta)
                start = LoadedModel(name, cursor, _estimator_from(record.arrays, meta), meta)
                break
            pending.append(cursor)
            cursor = parent
        for number in reversed(pending):
            start = self._replay(start, self.store.read(name, number))
        return start

    def snapshot_meta(self, name: str, version: int) -> VersionMeta:
        """The metadata of the snapshot ``version`` descends from (itself if a snapshot):
        where its classes, features and training settings are recorded."""
        meta = self.meta(name, version)
        while (parent := _update_parent(meta)) is not None:
            meta = self.meta(name, parent)
        return meta

    def versions(self, name: str) -> list[VersionInfo]:
        """Every stored version, newest first."""
        return self.page(name, limit=None).versions

    def page(self, name: str, limit: int | None, before: int | None = None) -> VersionPage:
        """Up to ``limit`` versions older than ``before`` (all when None), newest first."""
        head = self.store.head(name)
        kept = self.store.kept(name)
        numbers = [v for v in reversed(self.store.versions(name)) if before is None or v < before]
        infos: list[VersionInfo] = []
        for number in numbers:
            if len(infos) == limit:
                break
            try:
                meta = self.meta(name, number)
            except VersionNotFoundError:  # removed by retention meanwhile
                continue
            infos.append(VersionInfo(meta, active=number == head.active, kept=number in kept))
        more = bool(infos) and numbers[-1] < infos[-1].meta.version
        return VersionPage(name, head.active, infos, infos[-1].meta.version if more else None)

    def detail(self, name: str, version: int) -> VersionDetail:
        """Everything known about one version without materializing its weights."""
        head = self.store.head(name)
        meta = self.meta(name, version)
        info = VersionInfo(
            meta, active=version == head.active, kept=version in self.store.kept(name)
        )
        return VersionDetail(info, self.snapshot_meta(name, version))

    def online_window(self, name: str, rows: int) -> PrequentialFigures | None:
        """Prequential accuracy and log-loss of ``name``'s online stream over its newest
        ``rows`` rows, in version order, read from the store: the same figures in every
        process, whichever applied the updates. Only versions not seen by an earlier call
        are read, and no more of them than the window needs."""
        with self._streams_lock:
            cursor = self._streams.setdefault((name, rows), _StreamCursor(PrequentialWindow(rows)))
            fresh = [v for v in self.store.versions(name) if v > cursor.seen]
            recent: list[OnlineStats] = []
            covered = 0
            for number in reversed(fresh):
                if covered >= rows:
                    break
                try:
                    online = self.meta(name, number).online
                except ModelError:  # removed by retention meanwhile, or unreadable: skip it
                    continue
                if online is not None:
                    recent.append(online)
                    covered += online.n
            if covered >= rows:  # the new updates alone fill the window
                cursor.window = PrequentialWindow(rows)
            for online in reversed(recent):
                cursor.window.add(online)
            if fresh:
                cursor.seen = fresh[-1]
            return cursor.window.figures()

    def _replay(self, parent: LoadedModel, record: Record) -> LoadedModel:
        meta = VersionMeta.from_json(record.meta)
        online = meta.online
        if online is None or "X" not in record.arrays or "y" not in record.arrays:
            raise CorruptArtifactError(f"version {meta.version}: update is incomplete")
        X, y = record.arrays["X"], record.arrays["y"].astype(np.intp)
        updated, _ = parent.estimator.updated(
            X, y, learning_rate=online.learning_rate, passes=online.passes
        )
        if state_digest(updated.state_) != meta.digest:
            raise CorruptArtifactError(
                f"version {meta.version}: replaying the update on version {parent.version} "
                "does not reproduce the recorded weights (different numeric library or "
                "hardware than the writer's?)"
            )
        return LoadedModel(parent.name, meta.version, updated, meta)

    # ------------------------------------------------------------------ internals
    def _update_record(
        self,
        parent: LoadedModel,
        updated: SoftmaxRegression,
        X: NDArray[np.float64],
        y_index: NDArray[np.intp],
        online: OnlineStats,
    ) -> tuple[VersionMeta, dict[str, Any]]:
        """How an update is stored: as its minibatch, replayed on ``parent`` when loaded, or as
        a snapshot once the chain since the last one would outweigh a snapshot or grow longer
        than ``snapshot_every``."""
        update_arrays = {"X": X, "y": y_index.astype(np.int64)}
        snapshot = updated.to_arrays()
        chain_length = parent.meta.chain_length + 1
        chain_bytes = parent.meta.chain_bytes + arrays_nbytes(update_arrays)
        if chain_length > self.snapshot_every or chain_bytes >= arrays_nbytes(snapshot):
            meta = self._snapshot_meta(updated, parent.version, source="online")
            return replace(meta, online=online, training=parent.meta.training), snapshot
        meta = VersionMeta(
            kind="update",
            source="online",
            parent=parent.version,
            created_at=_now(),
            step=updated.state_.step,
            chain_length=chain_length,
            chain_bytes=chain_bytes,
            digest=state_digest(updated.state_),
            online=online,
        )
        return meta, update_arrays

    def _write(self, name: str, meta: VersionMeta, arrays: dict[str, Any]) -> VersionMeta:
        stored = self.store.write(name, Record(meta.to_json(), arrays))
        return VersionMeta.from_json(stored.meta)

    def _active_or_none(self, name: str) -> int | None:
        try:
            active = self.store.head(name).active
        except ModelNotFoundError:
            return None
        return active or None

    @staticmethod
    def _snapshot_meta(
        estimator: SoftmaxRegression, parent: int | None, *, source: Source
    ) -> VersionMeta:
        return VersionMeta(
            kind="snapshot",
            source=source,
            parent=parent,
            created_at=_now(),
            step=estimator.state_.step,
            params=estimator.get_params(),
            n_features=estimator.n_features_in_,
            classes=[c.item() for c in estimator.classes_],
            feature_names=list(estimator.feature_names_) if estimator.feature_names_ else None,
        )

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
                cursor = _update_parent(self.meta(name, cursor))
        removed = [v for v in versions if v not in needed]
        # Newest first: a parent always has a lower number than its children, so a crash part
        # way through leaves only versions whose whole chain is still on disk.
        for number in reversed(removed):
            self.store.remove(name, number)
        return removed
