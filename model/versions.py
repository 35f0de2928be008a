"""The value types of stored versions, and the codecs between them and artifacts.

:class:`LoadedModel` is one version materialized (estimator, metadata, guard set);
:class:`VersionInfo`, :class:`VersionPage` and :class:`VersionDetail` are what listings return;
the functions turn a snapshot's arrays into an estimator and a guard set, follow a version's
parent link, and fingerprint the weights an update produced. :mod:`model.repository` uses them
to store, load, list and update versions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .artifact import VersionMeta
from .encoding import FeatureEncoder
from .errors import CorruptArtifactError
from .guard import GuardFigures, GuardPolicy, GuardSet, Verdict, figures
from .optimizer import TrainState
from .softmax import SoftmaxRegression, StepReport

__all__ = [
    "LoadedModel",
    "UpdateResult",
    "VersionDetail",
    "VersionInfo",
    "VersionPage",
    "encoder_from",
    "estimator_from",
    "guard_arrays",
    "guard_from",
    "now",
    "parent_of",
    "REPLAY_RTOL",
    "replay_matches",
    "replay_sample",
    "state_digest",
]


@dataclass(frozen=True)
class LoadedModel:
    """One materialized version. Treat it as immutable: the service shares it across threads."""

    name: str
    version: int
    estimator: SoftmaxRegression
    meta: VersionMeta
    guard: GuardSet | None = None  # None: no guard set (a model from before 0.2, or none kept)
    encoder: FeatureEncoder | None = None  # None: rows are the estimator's features as they are
    _figures: dict[float, GuardFigures | None] = field(
        default_factory=dict, compare=False, repr=False
    )

    def guard_figures(self, quantile: float = GuardPolicy.surprise_quantile) -> GuardFigures | None:
        """This version on its own guard set (computed once per quantile, then cached)."""
        if quantile not in self._figures:
            guard = self.guard
            self._figures[quantile] = figures(self.estimator, guard, quantile) if guard else None
        return self._figures[quantile]

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
        return (self.n_features, self.feature_names, self.classes, self.encoder)


@dataclass(frozen=True)
class UpdateResult:
    """A committed update: the new version, the one it was applied to, the minibatch's
    prequential report, the guard's verdict (None when it did not judge) and how many rows of
    the minibatch went to the guard set instead of training."""

    model: LoadedModel
    previous_version: int
    report: StepReport
    verdict: Verdict | None = None
    held_out: int = 0


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


# How far a replayed update may differ from the writer's weights and still be accepted:
# relative to the largest sampled magnitude. Another CPU's BLAS rounds a d-term dot product
# differently by at most about d * 2.2e-16 of its terms' sizes (1.4e-14 for d = 64), and a
# chain replays at most snapshot_every updates; 1e-9 leaves five orders of magnitude of room
# above that, while any real divergence (other rows, labels, rate or code) moves the weights
# by a learning-rate-sized step, around 1e-3 of their size and far above the bound.
REPLAY_RTOL = 1e-9
_SAMPLE_SIZE = 16


def replay_sample(state: TrainState) -> list[float]:
    """At most 16 evenly strided weights and 16 bias values, recorded with an update."""
    flat = state.weights.reshape(-1)
    stride = max(1, flat.shape[0] // _SAMPLE_SIZE)
    values = np.concatenate([flat[::stride][:_SAMPLE_SIZE], state.bias[:_SAMPLE_SIZE]])
    return [float(v) for v in values]


def replay_matches(state: TrainState, meta: VersionMeta) -> bool:
    """Whether ``state``, an update replayed, is the state its writer recorded: the same
    digest (same hardware and libraries: bit for bit), or else the same step count and every
    sampled value within :data:`REPLAY_RTOL` of the largest sampled magnitude (another CPU's
    rounding). Updates written before 0.4 have no sample: only the digest can match."""
    if state_digest(state) == meta.digest:
        return True
    if meta.replay_sample is None or state.step != meta.step:
        return False
    expected = np.asarray(meta.replay_sample, dtype=np.float64)
    actual = np.asarray(replay_sample(state))
    if actual.shape != expected.shape or not np.isfinite(actual).all():
        return False
    scale = max(float(np.abs(expected).max(initial=0.0)), float(np.finfo(np.float64).tiny))
    return bool(np.all(np.abs(actual - expected) <= REPLAY_RTOL * scale))


def state_digest(state: TrainState) -> str:
    """A fingerprint of the weights after an update, checked when the update is replayed.

    Hashing an 80 MB weight matrix per update would cost more than the update, so it hashes
    the bias, the step count and an evenly strided sample of at most 4,096 weights: any
    divergence of a replay (e.g. a different BLAS on another machine) shows up in all of them.
    """
    flat = state.weights.reshape(-1)
    stride = max(1, flat.shape[0] // 4096)
    digest = hashlib.blake2b(digest_size=16)
    # The bytes of tobytes(), read in place when they are contiguous already.
    digest.update(np.ascontiguousarray(flat[::stride]).data)
    digest.update(np.ascontiguousarray(state.bias).data)
    digest.update(str(state.step).encode())
    return digest.hexdigest()


def parent_of(meta: VersionMeta) -> int | None:
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


def now() -> str:
    """The current UTC time, ISO 8601 with milliseconds (``...Z``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def estimator_from(arrays: Mapping[str, NDArray[Any]], meta: VersionMeta) -> SoftmaxRegression:
    """The estimator a snapshot artifact describes (the estimator owns its codec)."""
    try:
        estimator = SoftmaxRegression.from_arrays(
            arrays,
            params=meta.params,
            step=meta.step,
            epochs_run=int(meta.training.get("epochs_run", 0)),
        )
    except ValueError as exc:
        raise CorruptArtifactError(
            f"version {meta.version}: snapshot is incomplete or inconsistent ({exc})"
        ) from None
    if meta.allow_new_classes:  # the online settings of a created or growing model
        estimator.allow_new_classes = True
    if meta.online_rate_per_row:
        estimator.online_rate_per_row = True
    if meta.online_row_steps:
        estimator.online_row_steps = True
    return estimator


def encoder_from(meta: VersionMeta) -> FeatureEncoder | None:
    """The feature encoding a snapshot's metadata holds (None when it holds none)."""
    if meta.encoder is None:
        return None
    try:
        encoder = FeatureEncoder.from_json(meta.encoder)
    except CorruptArtifactError as exc:
        raise CorruptArtifactError(f"version {meta.version}: {exc.message}") from None
    if encoder.n_encoded != meta.n_features:
        raise CorruptArtifactError(
            f"version {meta.version}: the feature encoding makes {encoder.n_encoded} features, "
            f"the weights have {meta.n_features}"
        )
    return encoder


def guard_from(arrays: Mapping[str, NDArray[Any]], meta: VersionMeta) -> GuardSet | None:
    """The guard set a snapshot holds (None when it holds none)."""
    if "guard_X" not in arrays or "guard_y" not in arrays:
        return None
    X, y = arrays["guard_X"], arrays["guard_y"].astype(np.intp)
    if X.ndim != 2 or X.shape[0] != y.shape[0] or not 0 <= meta.guard_offline_rows <= y.shape[0]:
        raise CorruptArtifactError(f"version {meta.version}: guard set arrays disagree")
    return GuardSet(np.asarray(X, dtype=np.float64), y, meta.guard_offline_rows)


def guard_arrays(guard: GuardSet | None) -> dict[str, NDArray[Any]]:
    if guard is None or not guard.rows:
        return {}
    return {"guard_X": guard.X, "guard_y": guard.y.astype(np.int64, copy=False)}
