"""Model versions on top of an :class:`~model.store.ArtifactStore`: save, load, update, roll back.

**Cheap durable online updates.** An acknowledged online minibatch is stored as an *update*
artifact: the raw rows, the class indices, the learning rate and the number of passes, and its
parent version. Its size is proportional to the minibatch, not to the model. Loading a version
walks the parent links back to the nearest *snapshot* (a full model) and replays the updates in
order; the replay is the same pure function the writer ran, so it yields the same weights, and
each update also records a digest of the weights it produced, which the replay checks.

A new version is written as a snapshot instead of an update once the updates since the last
snapshot would add up to more bytes than a snapshot costs (its bytes, plus
:data:`SNAPSHOT_SYNC_BYTES` for the syncs it needs that an append does not), or number more
than ``snapshot_every``: that bounds both the disk written per update (at most about twice the
cheaper of the two) and the replay work for any version.

The value types (:class:`~model.versions.LoadedModel`, the listings) and the codecs live in
:mod:`model.versions`; they are importable from here too, as before.

**Retention.** After each write, versions older than the newest ``keep_last`` are removed,
except kept ones, the active one, and whatever those need to be rebuilt (their chain back to a
snapshot).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .artifact import OnlineStats, Record, Source, VersionMeta
from .commit import GroupCommit, Job
from .drift import DriftState
from .encoding import FeatureEncoder
from .errors import (
    CorruptArtifactError,
    InvalidParameterError,
    ModelChangedError,
    ModelError,
    ModelExistsError,
    ModelNotFoundError,
    StoreError,
    StoreUnavailableError,
    UpdateRejectedError,
    VersionNotFoundError,
)
from .growth import classes_along, grown, grown_by, knows_every_class, refusing
from .guard import (
    GUARD_BYTES,
    GuardFigures,
    GuardPolicy,
    GuardSet,
    Verdict,
    check_in_range,
    extended_figures,
    figures,
    holdout_mask,
    judge,
    relative_step,
    scored,
)
from .guard_history import GuardHistory, fixed_loss, judge_history, surprise_evidence
from .prequential import PrequentialFigures, PrequentialWindow
from .softmax import SoftmaxRegression, StepReport
from .store import ArtifactStore, ChangeFeed, Head, arrays_nbytes, check_model_name
from .validation import check_labels, check_matrix, check_same_length
from .versions import (
    REPLAY_RTOL,
    LoadedModel,
    UpdateResult,
    VersionDetail,
    VersionInfo,
    VersionPage,
    encoder_from,
    estimator_from,
    guard_arrays,
    guard_from,
    now,
    parent_of,
    replay_matches,
    replay_sample,
    state_digest,
)

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

# What a snapshot's extra syncs cost, in bytes written: appending an update to the log costs
# its bytes, a snapshot its bytes and three syncs (its file, its directory entry, the next
# segment's). 256 KB per sync is about what this project's machines write in one sync's time.
SNAPSHOT_SYNC_BYTES = 3 * 256 * 1024


@dataclass(frozen=True, eq=False)
class _Step:
    """A candidate update: the checked minibatch ``X, y``, which rows were ``held`` out for
    the guard set, the rows trained on, the active and the resulting estimator and guard set.
    ``before`` and ``after`` score the minibatch under each, once, when first asked."""

    X: NDArray[np.float64]
    y: NDArray[np.intp]
    held: NDArray[np.bool_]
    train_X: NDArray[np.float64]
    train_y: NDArray[np.intp]
    estimator: SoftmaxRegression
    updated: SoftmaxRegression
    guard: GuardSet | None
    learning_rate: float | None
    passes: int
    trained: StepReport  # the report of the training rows (all of them without a holdout)
    classes_added: tuple[Any, ...] = ()  # the classes the model grew by first (model.growth)

    @cached_property
    def before(self) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        return scored(self.estimator, self.X, self.y)

    @cached_property
    def after(self) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        return scored(self.updated, self.X, self.y)

    @cached_property
    def report(self) -> StepReport:
        """The minibatch's prequential figures: over every row, held out or trained on."""
        if not self.held.any():
            return self.trained
        (losses, correct), (after, _) = self.before, self.after
        return StepReport(
            int(self.y.shape[0]), float(losses.mean()), float(correct.mean()), float(after.mean())
        )

    def update_arrays(self) -> dict[str, NDArray[Any]]:
        """This step stored as an update (replayed on its parent when loaded): the rows
        trained on, and the rows held out for the guard set if any."""
        arrays: dict[str, NDArray[Any]] = {"X": self.train_X, "y": self.train_y.astype(np.int64)}
        if self.held.any():
            arrays["holdout_X"] = self.X[self.held]
            arrays["holdout_y"] = self.y[self.held].astype(np.int64)
        return arrays

    def snapshot_arrays(self) -> dict[str, NDArray[Any]]:
        """This step stored as a snapshot: the updated estimator and its guard set."""
        return {**self.updated.to_arrays(), **guard_arrays(self.guard)}


@dataclass(frozen=True, eq=False)
class _UpdateRequest:
    """One call of :meth:`ModelRepository.update`, queued for the next batch."""

    X: ArrayLike
    y: ArrayLike | Sequence[Any]
    learning_rate: float | None
    passes: int
    base: LoadedModel | None
    on_commit: Callable[[LoadedModel], None] | None
    key: str | None
    force: bool


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
        self,
        store: ArtifactStore,
        *,
        keep_last: int | None = 100,
        snapshot_every: int = 100,
        guard: GuardPolicy | None = None,
        holdout_every: int = 0,
        guard_online_rows: int = 200,
        online_momentum: bool = True,
        drift_delta: float = 0.05,
        drift_threshold: float = 5.0,
        commit_batch: int = 64,
    ) -> None:
        """``keep_last=None`` never removes versions (the training CLI's default: retention
        is the serving side's policy). ``guard`` judges updates (:mod:`model.guard`; default
        off, as before 0.2: the service turns it on). Every ``holdout_every``-th online row goes
        to the guard set instead of training (0: none), which keeps the newest
        ``guard_online_rows`` of them. ``online_momentum=False`` makes each online update plain
        SGD steps that leave the momentum buffers alone, so that an update's effect is its own
        (the service's default). ``drift_delta`` and ``drift_threshold`` set the Page-Hinkley
        test (:mod:`model.drift`). ``commit_batch`` caps how many queued updates one sync
        covers (:mod:`model.commit`).
        """
        if (keep_last is not None and keep_last < 1) or snapshot_every < 1 or commit_batch < 1:
            raise InvalidParameterError(
                "keep_last, snapshot_every and commit_batch must be >= 1, got "
                f"{keep_last}, {snapshot_every}, {commit_batch}"
            )
        self.store = store
        self.keep_last = keep_last
        self.snapshot_every = snapshot_every
        self.policy = guard or GuardPolicy(mode="off")
        self.holdout_every = holdout_every
        self.guard_online_rows = guard_online_rows
        self.online_momentum = online_momentum
        self.drift = DriftState(delta=drift_delta, threshold=drift_threshold)
        self._streams: dict[tuple[str, int], _StreamCursor] = {}
        self._streams_lock = threading.Lock()
        # Parsed metadata, keyed by the store's cached dict (versions are immutable; a removed
        # version's dict leaves the store's cache, so its entry here is never hit again).
        self._parsed: dict[tuple[str, int], tuple[dict[str, Any], VersionMeta]] = {}
        self._parsed_lock = threading.Lock()
        self._parents: dict[tuple[str, int], int | None] = {}  # lineage is immutable
        self.commit_batch = commit_batch
        self._committers: dict[str, GroupCommit[_UpdateRequest]] = {}
        self._committers_lock = threading.Lock()
        # The newest version this object committed or caught up with (see _catch_up).
        self._last: dict[str, LoadedModel] = {}
        # Per model: the offline version the traffic's drift test started on, and its state.
        self._traffic: dict[str, tuple[int, DriftState]] = {}

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
        guard: tuple[ArrayLike, ArrayLike | Sequence[Any]] | None = None,
        guard_rows: int = 2000,
        activate: bool = True,
        encoder: FeatureEncoder | None = None,
    ) -> LoadedModel:
        """Store a trained estimator as a new offline snapshot version, active unless
        ``activate=False`` (then the active version stays; activate it later with
        :meth:`activate`). The first version of a model is always active.

        ``guard=(X, y)``: held-out labelled rows the estimator was not trained on (the
        validation split), kept as the version's guard set: the first ``guard_rows`` of them,
        and no more than :data:`~model.guard.GUARD_BYTES` of features. ``encoder``: how raw
        rows become the estimator's features (stored with the snapshot, and with every later
        snapshot of this lineage); ``guard`` then holds encoded rows.
        """
        check_model_name(name)
        arrays = estimator.to_arrays()  # raises NotFittedError first
        guard_set = self._offline_guard(estimator, guard, guard_rows)
        if encoder is not None and encoder.n_encoded != estimator.n_features_in_:
            raise InvalidParameterError(
                f"encoder: makes {encoder.n_encoded} features, the estimator has "
                f"{estimator.n_features_in_}",
                field="encoder",
            )
        draft = self._snapshot_meta(estimator, None, source="offline", encoder=encoder)
        loaded = LoadedModel(name, 0, estimator, draft, guard_set, encoder)
        with self.store.lock(name):
            meta = replace(
                self._snapshot_meta(
                    estimator, self._active_or_none(name), source="offline", encoder=encoder
                ),
                training=training or {},
                metrics=metrics or {},
                fingerprint=fingerprint,
                guard_offline_rows=guard_set.offline if guard_set else 0,
                guard=self._figures_json(loaded),
            )
            stored = self._write(
                name,
                meta,
                {**arrays, **guard_arrays(guard_set)},
                activate=activate or meta.parent is None,
            )
            if keep:
                self.store.set_kept(name, stored.version, True)
            self._prune_after_commit(name)
            return replace(loaded, version=stored.version, meta=stored)

    def create(
        self, estimator: SoftmaxRegression, name: str, *, training: dict[str, Any] | None = None
    ) -> LoadedModel:
        """Store a model created with no data (:func:`model.growth.create_estimator`) as
        version 1 of a new model ``name``; :class:`ModelExistsError` if the name has versions
        already. Checked and written under the model's lock, so two creators of one name
        cannot both succeed."""
        check_model_name(name)
        with self.store.lock(name):
            if self.store.versions(name):
                raise ModelExistsError(
                    f"model {name!r} exists already in {self.store}: choose another name",
                    field="name",
                )
            return self.save(estimator, name, training=training)

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
        key: str | None = None,
        force: bool = False,
    ) -> UpdateResult:
        """Apply one online minibatch to the active version and store the result durably.

        Runs under the store's lock and always starts from the store's active version (``base``
        only saves work when it is that version). The guard judges the update first
        (:mod:`model.guard`): a harmful one raises :class:`UpdateRejectedError` unless
        ``force`` (an administrator's override, recorded). When this returns, the new version
        is on disk (synced) and active. Invalid input, a diverging or a refused update raises
        and stores nothing. ``on_commit`` runs with the new version while the lock is still
        held, so a caller can publish it before any later writer's version. ``key`` names the
        client, recorded in the version's metadata.

        Concurrent calls for one model are group-committed (:mod:`model.commit`): those that
        queue while a batch is being applied are applied next, one after another, each to the
        version the previous one made, and one sync of the update log covers them all.
        """
        check_model_name(name)
        request = _UpdateRequest(X, y, learning_rate, passes, base, on_commit, key, force)
        result: UpdateResult = self._committer(name).submit(request)
        return result

    def _committer(self, name: str) -> GroupCommit[_UpdateRequest]:
        with self._committers_lock:
            committer = self._committers.get(name)
            if committer is None:
                committer = GroupCommit(
                    functools.partial(self._commit, name),
                    max_batch=self.commit_batch,
                    # The batch is taken once the lock is held: what queued meanwhile joins it.
                    hold=functools.partial(
                        self.store.lock, name, waiting=functools.partial(self._catch_up, name)
                    ),
                )
                self._committers[name] = committer
            return committer

    def _commit(self, name: str, jobs: list[Job[_UpdateRequest]]) -> None:
        """One batch of updates under one hold of the lock: each applied to the previous
        one's result and appended to the log, then one sync, then each published in order."""
        with self.store.lock(name):
            head = self.store.head(name)
            if head.newest == 0:
                raise ModelNotFoundError(f"model {name!r} has no versions to update")
            bases = [self._last.get(name), *(job.request.base for job in jobs)]
            known = [b for b in bases if b is not None and b.name == name]
            base = max(known, key=lambda b: b.version, default=None)
            current = self.load(name, head.active, base=base)
            applied = []
            for job in jobs:
                try:
                    # Whichever thread leads the batch: huge finite rows overflow the input
                    # checks' sums (harmless) and diverging updates (refused): no warnings.
                    with np.errstate(over="ignore", invalid="ignore"):
                        job.result = self._apply(name, current, job.request)
                except Exception as exc:  # this request fails; the batch goes on without it
                    job.error = exc
                    continue
                current = job.result.model
                applied.append(job)
            if not applied:
                return
            try:
                self.store.sync(name)
            except (OSError, StoreUnavailableError) as exc:
                failure = (
                    exc
                    if isinstance(exc, StoreUnavailableError)
                    else StoreError(f"could not make the update durable ({exc})")
                )
                for job in applied:
                    job.result, job.error = None, failure
                log.error("model %r: syncing the update log failed: %s", name, exc)
                return
            self._last[name] = current
            for job in applied:
                if job.request.on_commit is not None:
                    job.request.on_commit(job.result.model)
            self._prune_after_commit(name)

    def _catch_up(self, name: str) -> None:
        """While another process holds the model's lock (the batch's leader waits for it):
        replay the versions it has appended since this object's newest, outside the lock, so
        that the batch, once it holds the lock, replays only what was appended meanwhile.
        Committed records never change and a version's number is never given to another
        complete record, so the batch can start from this model if its chain passes through
        it (:meth:`load` with ``base``); if not (a rollback meanwhile), it is not used."""
        base = self._last.get(name)
        if base is None:
            return
        try:
            head = self.store.head(name)
            if head.active > base.version:
                self._last[name] = self.load(name, head.active, base=base)
        except ModelError as exc:  # the batch, under the lock, finds out for itself
            log.debug("model %r: catching up before the lock: %s", name, exc.message)

    def _apply(self, name: str, current: LoadedModel, request: _UpdateRequest) -> UpdateResult:
        """Check, judge and append one update to ``current`` (not yet synced)."""
        base = request.base
        if base is not None and current is not base and current.layout != base.layout:
            raise ModelChangedError(
                f"model {name!r} changed while this request was read: version "
                f"{current.version} has other features or classes than version "
                f"{base.version}; retry the request",
            )
        parent = current
        X_checked = check_matrix(request.X, current.estimator.n_features_in_)
        added: list[Any] = []
        if current.estimator.allow_new_classes:  # new labels add classes (model.growth)
            current, added = grown(current, request.y)
        y_index = check_labels(request.y, current.estimator.classes_)
        check_same_length(X_checked.shape[0], y_index)
        step = self._step(current, X_checked, y_index, request.learning_rate, request.passes)
        step = replace(step, classes_added=tuple(added)) if added else step
        # After the step, so that an update that would diverge says so (DivergenceError).
        # Judged against the standardization that applies to the rows: a running one has
        # learnt them first (model.running).
        if self.policy.mode == "enforce" and not request.force:
            check_in_range(step.updated.standardizer_, X_checked, self.policy.max_abs_z)
        try:
            verdict, after = self._judge(current, step, request.force)
            verdict, history = self._judge_history(current, step, verdict, after, request)
        finally:  # refused or not: the traffic's drift test sees every batch
            self._observe_traffic(current, step.report.loss_before)
        candidate = LoadedModel(name, 0, step.updated, current.meta, step.guard, current.encoder)
        current = parent  # what the update records: its parent as stored
        if after is not None:  # the new version's guard figures, from the judged ones
            candidate._figures[self.policy.surprise_quantile] = self._new_figures(
                current, step, after
            )
        common = self._record_fields(current, candidate, step, verdict, request.key, request.force)
        if added:  # lineage: the classes this version added
            common["classes_added"] = added
        record = self._update_record(current, step, common)
        if history is not None:
            record = (replace(record[0], guard_history=history.to_json()), record[1])
        stored = self._write(name, *record, durable=False)
        # The same figures cache: the new version's guard figures are computed once.
        loaded = replace(candidate, version=stored.version, meta=stored)
        return UpdateResult(loaded, current.version, step.report, verdict, int(step.held.sum()))

    def _step(
        self,
        current: LoadedModel,
        X: NDArray[np.float64],
        y_index: NDArray[np.intp],
        learning_rate: float | None,
        passes: int,
    ) -> _Step:
        """The candidate update: the rows held out for the guard set, the rest trained on."""
        held = holdout_mask(current.meta.rows_seen, y_index.shape[0], self.holdout_every)
        estimator = current.estimator
        train_X, train_y = (X[~held], y_index[~held]) if held.any() else (X, y_index)
        if train_y.shape[0]:
            updated, trained = estimator.updated(
                train_X,
                train_y,
                learning_rate=estimator.online_rate_for(train_y.shape[0])
                if learning_rate is None
                else learning_rate,
                passes=passes,
                momentum=self.online_momentum,
            )
        else:  # every row went to the guard set: nothing to learn from
            updated, trained = estimator, StepReport(0, 0.0, 0.0, 0.0)
        guard = current.guard
        if held.any():
            base_guard = guard or GuardSet.empty(X.shape[1])
            guard = base_guard.extended(X[held], y_index[held], self.guard_online_rows)
        return _Step(
            X,
            y_index,
            held,
            train_X,
            train_y,
            estimator,
            updated,
            guard,
            learning_rate,
            passes,
            trained,
        )

    def _judge(
        self, current: LoadedModel, step: _Step, force: bool
    ) -> tuple[Verdict | None, GuardFigures | None]:
        """The guard's verdict on ``step`` (None: not judged) and the candidate's figures on
        the active version's guard set; raises when it refuses."""
        policy = self.policy
        guard = current.guard
        if policy.mode == "off" or guard is None or guard.rows < policy.min_rows:
            return None, None
        before = current.guard_figures(policy.surprise_quantile)
        after = figures(step.updated, guard, policy.surprise_quantile)
        assert before is not None and after is not None  # the guard set has rows
        batch_losses = step.before[0]
        estimator = current.estimator
        moved = relative_step(estimator.state_.weights, step.updated.state_.weights)
        own_rate = estimator.online_rate
        rate_ratio = (step.learning_rate or own_rate) * step.passes / own_rate
        verdict = judge(before, after, batch_losses, moved, rate_ratio, policy)
        if verdict.reason is not None and verdict.reason not in refusing(
            guard, estimator.classes_.shape[0], policy.min_rows
        ):
            # A model created with no data: which tests may refuse (model.growth).
            verdict = replace(verdict, accepted=True, reason=None)
        if not verdict.accepted:
            self._refuse_or_log(current.name, verdict, force)
        return verdict, after

    def _refuse_or_log(self, name: str, verdict: Verdict, force: bool) -> None:
        """A verdict that refuses: raised as the update's answer, or, when forced or when the
        guard only logs, logged and the update applied."""
        if self.policy.mode == "enforce" and not force:
            raise UpdateRejectedError(
                f"update refused: {verdict.explain()}; the model is unchanged",
                details=verdict.to_json(),
            )
        log.warning(
            "model %r: update %s although the guard refuses it: %s",
            name,
            "forced" if force else "applied (guard in log mode)",
            verdict.explain(),
        )

    def traffic_drift(self, name: str) -> DriftState | None:
        """The Page-Hinkley test over the loss of every minibatch this process checked for
        ``name``, refused ones included (None before the first): unlike the committed
        stream's test (``drift`` in each version's metadata), it sees a lasting change that
        the guard refuses. It lives in this process only: a refusal writes nothing to the
        store, so no other process can replay it (see README, "Drift")."""
        found = self._traffic.get(name)
        return found[1] if found is not None else None

    def _observe_traffic(self, current: LoadedModel, loss: float) -> None:
        """Feed the traffic's drift test (called by the writer, one update at a time). It
        starts afresh on the first minibatch judged against another offline version, as the
        committed stream's test does."""
        found = self._traffic.get(current.name)
        root = current.version if current.meta.source == "offline" else None
        if found is None or (root is not None and root != found[0]):
            found = (root or 0, DriftState(delta=self.drift.delta, threshold=self.drift.threshold))
        self._traffic[current.name] = (found[0], found[1].observe(loss))

    def _judge_history(
        self,
        current: LoadedModel,
        step: _Step,
        verdict: Verdict | None,
        after: GuardFigures | None,
        request: _UpdateRequest,
    ) -> tuple[Verdict | None, GuardHistory | None]:
        """The tests across updates (:mod:`model.guard_history`) on an update the one-update
        tests let through: the completed verdict, and the state the new version records
        (None when the update was not judged); raises when they refuse it."""
        policy = self.policy
        if verdict is None or after is None or current.guard is None:
            return verdict, None
        before = current.guard_figures(policy.surprise_quantile)
        assert before is not None  # judged: the guard set has rows
        offline = current.guard.offline
        history = GuardHistory.of(
            current.meta.guard_history,
            current.version,
            fixed_loss(before, offline, policy.min_rows),
        )
        # Paired, on the rows held out before the reference (model.guard_history).
        loss_before = fixed_loss(before, offline, policy.min_rows, history.fresh)
        loss_after = fixed_loss(after, offline, policy.min_rows, history.fresh)
        evidence = surprise_evidence(step.before[0], before, policy.suspect_rate)
        judged = judge_history(
            verdict, history, evidence, request.key, loss_before, loss_after, policy
        )
        if not knows_every_class(
            current.guard, current.estimator.classes_.shape[0], policy.min_rows
        ):
            # Nothing to pool and no damage budget while a class has no guard row
            # (model.growth): the reference restarts at this version.
            evidence = 0.0
            judged = replace(judged, accepted=verdict.accepted, reason=verdict.reason)
            history = replace(history, reference_version=current.version)
            history = replace(
                history, reference_loss=loss_before, since_reference=0, damage=0.0, fresh=0
            )
        if verdict.accepted and not judged.accepted:
            self._refuse_or_log(current.name, judged, request.force)
        new_history = history.after(
            evidence,
            request.key,
            request.force,
            current.version,
            loss_before,
            policy.reference_every,
            loss_after - loss_before,
            int(step.held.sum()),
        )
        return judged, new_history

    def _new_figures(self, current: LoadedModel, step: _Step, after: GuardFigures) -> GuardFigures:
        """The candidate on its own guard set: the judged figures, plus the held-out rows."""
        if not step.held.any() or current.guard is None:
            return after
        losses, correct = step.after
        return extended_figures(
            after,
            current.guard.offline,
            losses[step.held],
            correct[step.held],
            self.guard_online_rows,
            self.policy.surprise_quantile,
        )

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

    # ------------------------------------------------------------------ change notification
    def watch(self, listener: Callable[[str], None]) -> Callable[[], bool] | None:
        """Have ``listener(model)`` called when another process changes ``model`` (``""``:
        anything may have changed), if the store can tell (PostgreSQL); returns a function
        that says whether notifications are arriving now. None: the store cannot tell
        (the local directory), so readers poll."""
        watch = getattr(self.store, "watch", None)
        if watch is None:
            return None
        feed: ChangeFeed = watch(listener)
        return feed.live.is_set

    def close(self) -> None:
        """Let go of the store's connections and threads, if it has any."""
        close = getattr(self.store, "close", None)
        if close is not None:
            close()

    # ------------------------------------------------------------------ reading
    def models(self) -> list[str]:
        """Names of the stored models, sorted."""
        return self.store.models()

    def head(self, name: str) -> Head:
        return self.store.head(name)

    def meta(self, name: str, version: int) -> VersionMeta:
        """One version's metadata, without its arrays."""
        raw = self.store.read_meta(name, version)
        cached = self._parsed.get((name, version))
        if cached is not None and cached[0] is raw:
            return cached[1]
        meta = VersionMeta.from_json(raw)
        with self._parsed_lock:  # threads share it: evict and insert one at a time
            if len(self._parsed) >= 4096:
                self._parsed.pop(next(iter(self._parsed)), None)
            self._parsed[(name, version)] = (raw, meta)
        return meta

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
            parent = parent_of(self.meta(name, cursor))
            if parent is None:
                record = self.store.read(name, cursor)
                meta = VersionMeta.from_json(record.meta)
                estimator = estimator_from(record.arrays, meta)
                guard = guard_from(record.arrays, meta)
                start = LoadedModel(name, cursor, estimator, meta, guard, encoder_from(meta))
                break
            pending.append(cursor)
            cursor = parent
        for number in reversed(pending):
            start = self._replay(start, self.meta(name, number), self.store.read(name, number))
        return start

    def snapshot_meta(self, name: str, version: int) -> VersionMeta:
        """The metadata of the snapshot ``version`` descends from (itself if a snapshot):
        where its classes, features and training settings are recorded."""
        meta = self.meta(name, version)
        while (parent := parent_of(meta)) is not None:
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
        chain = [meta]
        while (parent := parent_of(chain[-1])) is not None:
            chain.append(self.meta(name, parent))
        snapshot = chain[-1]
        classes = classes_along(snapshot, chain[:-1])  # with those its updates added
        if classes is not snapshot.classes:
            snapshot = replace(snapshot, classes=classes)
        return VersionDetail(info, snapshot)

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

    def _replay(self, parent: LoadedModel, meta: VersionMeta, record: Record) -> LoadedModel:
        online = meta.online
        arrays = record.arrays
        if online is None or "X" not in arrays or "y" not in arrays:
            raise CorruptArtifactError(f"version {meta.version}: update is incomplete")
        X, y = arrays["X"], arrays["y"].astype(np.intp)
        parent = grown_by(parent, meta.classes_added)  # the classes the update added first
        updated = parent.estimator
        if y.shape[0]:  # none when every row of the minibatch went to the guard set
            updated, _ = updated.updated(
                X,
                y,
                learning_rate=(
                    updated.online_rate_for(y.shape[0])
                    if online.learning_rate is None
                    else online.learning_rate
                ),
                passes=online.passes,
                momentum=online.momentum,
            )
        if not replay_matches(updated.state_, meta):
            raise CorruptArtifactError(
                f"version {meta.version}: replaying the update on version {parent.version} "
                "does not reproduce the recorded weights, not even within rounding "
                f"(relative {REPLAY_RTOL:g}): the update or its parent is not what was written"
            )
        guard = parent.guard
        if "holdout_X" in arrays and "holdout_y" in arrays:
            base = guard or GuardSet.empty(X.shape[1])
            held_y = arrays["holdout_y"].astype(np.intp)
            guard = base.extended(arrays["holdout_X"], held_y, meta.guard_capacity)
        return LoadedModel(parent.name, meta.version, updated, meta, guard, parent.encoder)

    # ------------------------------------------------------------------ internals
    def _update_record(
        self, parent: LoadedModel, step: _Step, common: dict[str, Any]
    ) -> tuple[VersionMeta, dict[str, Any]]:
        """How an update is stored: as its minibatch, replayed on ``parent`` when loaded, or as
        a snapshot once the chain since the last one would outweigh a snapshot or grow longer
        than ``snapshot_every``. Either way it records ``common`` (:meth:`_record_fields`)."""
        update_arrays = step.update_arrays()
        snapshot = step.snapshot_arrays()
        chain_length = parent.meta.chain_length + 1
        chain_bytes = parent.meta.chain_bytes + arrays_nbytes(update_arrays)
        snapshot_cost = arrays_nbytes(snapshot) + SNAPSHOT_SYNC_BYTES
        if chain_length > self.snapshot_every or chain_bytes >= snapshot_cost:
            meta = self._snapshot_meta(
                step.updated, parent.version, source="online", encoder=parent.encoder
            )
            offline = step.guard.offline if step.guard else 0
            return replace(
                meta,
                # The training record lives on the snapshot an update descends from.
                training=self.snapshot_meta(parent.name, parent.version).training,
                guard_offline_rows=offline,
                **common,
            ), snapshot
        meta = VersionMeta(
            kind="update",
            source="online",
            parent=parent.version,
            created_at=now(),
            step=step.updated.state_.step,
            chain_length=chain_length,
            chain_bytes=chain_bytes,
            digest=state_digest(step.updated.state_),
            replay_sample=replay_sample(step.updated.state_),
            **common,
        )
        return meta, update_arrays

    def _record_fields(
        self,
        parent: LoadedModel,
        candidate: LoadedModel,
        step: _Step,
        verdict: Verdict | None,
        key: str | None,
        forced: bool,
    ) -> dict[str, Any]:
        """What an update records, stored as an update or as a snapshot: its figures, the rows
        seen so far, the guard's verdict, the client's key name, the drift test's state and the
        new version's figures on its guard set."""
        report = step.report
        online = OnlineStats(
            report.n,
            step.learning_rate,
            step.passes,
            report.loss_before,
            report.accuracy_before,
            report.loss_after,
            momentum=self.online_momentum,
        )
        drift = DriftState.from_json(
            parent.meta.drift, delta=self.drift.delta, threshold=self.drift.threshold
        ).observe(report.loss_before)
        return {
            "online": online,
            "rows_seen": parent.meta.rows_seen + int(step.y.shape[0]),
            "guard_capacity": self.guard_online_rows,
            # With the guard off, no figures either: that is all the guard costs an update.
            "guard": self._figures_json(candidate) if self.policy.mode != "off" else None,
            "verdict": {**verdict.to_json(), "mode": self.policy.mode, "forced": forced}
            if verdict is not None
            else None,
            "key": key,
            "drift": drift.to_json(),
        }

    def _figures_json(self, loaded: LoadedModel) -> dict[str, Any] | None:
        found = loaded.guard_figures(self.policy.surprise_quantile)
        return found.to_json() if found is not None else None

    @staticmethod
    def _offline_guard(
        estimator: SoftmaxRegression,
        guard: tuple[ArrayLike, ArrayLike | Sequence[Any]] | None,
        rows: int,
    ) -> GuardSet | None:
        if guard is None:
            return None
        X = check_matrix(guard[0], estimator.n_features_in_, field="guard")
        y = check_labels(guard[1], estimator.classes_)
        check_same_length(X.shape[0], y)
        keep = max(0, min(rows, GUARD_BYTES // (8 * X.shape[1])))
        return GuardSet(X[:keep], y[:keep], offline=min(keep, X.shape[0]))

    def _write(
        self,
        name: str,
        meta: VersionMeta,
        arrays: dict[str, Any],
        *,
        durable: bool = True,
        activate: bool = True,
    ) -> VersionMeta:
        stored = self.store.write(
            name, Record(meta.to_json(), arrays), durable=durable, activate=activate
        )
        # What the store filled in; the rest is ``meta`` (a JSON round trip gives it back).
        return replace(
            meta,
            version=stored.version,
            model=stored.meta["model"],
            format_version=stored.meta["format_version"],
        )

    def _active_or_none(self, name: str) -> int | None:
        try:
            active = self.store.head(name).active
        except ModelNotFoundError:
            return None
        return active or None

    @staticmethod
    def _snapshot_meta(
        estimator: SoftmaxRegression,
        parent: int | None,
        *,
        source: Source,
        encoder: FeatureEncoder | None = None,
    ) -> VersionMeta:
        return VersionMeta(
            kind="snapshot",
            source=source,
            parent=parent,
            created_at=now(),
            step=estimator.state_.step,
            params=estimator.resolved_params(),
            n_features=estimator.n_features_in_,
            classes=[c.item() for c in estimator.classes_],
            feature_names=list(estimator.feature_names_) if estimator.feature_names_ else None,
            encoder=encoder.to_json() if encoder is not None else None,
            allow_new_classes=estimator.allow_new_classes,
            online_rate_per_row=estimator.online_rate_per_row,
            online_row_steps=estimator.online_row_steps,
        )

    def _prune_after_commit(self, name: str) -> None:
        """Retention after a committed write: its failure must not turn the write into an
        error (the version is durable and active already), so it is logged and retried on
        the next write."""
        try:
            self._prune(name)
        except ModelError as exc:
            log.warning("retention for model %r skipped: %s", name, exc.message)

    def _parent(self, name: str, version: int) -> int | None:
        """The version ``version`` replays on (None for a snapshot), memoized."""
        key = (name, version)
        if key not in self._parents:
            self._parents[key] = parent_of(self.meta(name, version))
        return self._parents[key]

    def _prune(self, name: str) -> list[int]:
        if self.keep_last is None:
            return []
        versions = self.store.versions(name)
        # Prune in batches: walking the lineage once per ~keep_last/10 writes, not per write
        # (with long update chains it may walk on every write: each parent link is memoized).
        if len(versions) <= self.keep_last + max(1, self.keep_last // 10):
            return []
        head = self.store.head(name)
        needed: set[int] = set()
        for number in {*versions[-self.keep_last :], *self.store.kept(name), head.active}:
            cursor: int | None = number
            while cursor is not None and cursor not in needed:
                needed.add(cursor)
                cursor = self._parent(name, cursor)
        removed = [v for v in versions if v not in needed]
        # Newest first (the store's order): a parent always has a lower number than its
        # children, so a crash part way through leaves only versions whose chain is on disk.
        self.store.remove_many(name, removed)
        for number in removed:
            self._parents.pop((name, number), None)  # numbers are never reused
        return removed
