"""Models created with no data, and models that grow a class when they meet a new label.

**Created models** (:func:`create_estimator`; ``POST /models`` in the service): version 1 is
a snapshot with zero weights for the given features and classes (any number, none included),
learned online from the first update on. With ``standardize`` on (the default) its
standardization is running (:mod:`model.running`): every update folds its training rows
into the mean and variance before its step, as part of the update, so a replay rebuilds it
exactly; off, rows are used as they come. Its defaults are chosen for learning from zero,
where no data exists to choose them from (:data:`CREATED_DEFAULTS`), and they learn with a
step size per class (``online_row_steps``, :meth:`~model.softmax.SoftmaxRegression.updated`):
for its first 2 rows per feature an update takes one SGD step per row, in order; after that,
one step on the rows' summed gradient; while data is scarce (fewer than 20 rows learnt per
feature) each update is led by one more summed step. Without a learning rate of its own, a
class's rate per row starts at ``online_learning_rate``, ``1 / (1 + d)`` for ``d`` features: a
standardized row has a squared
norm of about ``d``, so that step moves its logits by about its own residual, the training
CLI's bound for one row (``online_learning_rate`` auto). It then decays as ``1 / sqrt(1 + n /
(10 d))`` after the ``n`` rows learnt since the class was added (SGD's classic ``1 / sqrt(t)``
decay, so that the model settles instead of wandering at a constant step's noise; a class met
late starts at the full rate), at most ``learning_rate / m`` for ``m`` rows (0.5 in all).
Measured on digits and the synthetic set from zero (bench/bench_river.py, BENCHMARKS.md): one
summed step per minibatch from the first row (0.5's rule, which models created by 0.5 keep)
trailed River's row-by-row learning at the first checkpoints on digits; row steps beyond the
first 2 rows per feature changed no checkpoint's verdict against River and cost up to half
the throughput; without the lead step the final accuracy stayed 2.2 points below an offline
lbfgs fit on digits, with it 0.6; half the first rate learnt digits more slowly than River,
twice it converged worse on the noisy synthetic set; without the decay, the final accuracy
stayed 2.5 (digits) and 4.9 (synthetic) points below lbfgs.

What ``/predict`` answers before two classes exist: with one class, that class with
probability 1 (the softmax of one score); with none, no class: empty probabilities and a null
prediction per row (as River's ``predict_one`` answers None before it has learnt).

**New classes** (``allow_new_classes``, :mod:`model.classes` for the arrays): an update whose
labels include new ones first grows the model (:func:`grown`): the new classes' columns, the
guard set's class indices moved to the grown class list. The update records the classes it
added (``classes_added``) and a replay grows its parent the same way before replaying it.

**The guard and a class it has never seen.** The guard judges an update by the held-out rows
of its guard set (:mod:`model.guard`). A created model's guard set is only what the stream
held out (``holdout_every``), and it has no row of a class until one of that class's rows is
held out: learning such a class necessarily takes probability from the others on the guard
rows (read as damage by the guard-set loss tests), and its rows are improbable by
construction (read as surprise). So, for a model whose guard set holds no offline rows,
while it holds fewer than ``guard_min_rows`` (10) rows of some class of the model
(:func:`knows_every_class`: as few as the guard needs to judge at all), the rate test
alone may refuse an update (a learning rate x passes beyond ``guard_max_rate_ratio`` times the
model's own), with the out-of-range check on the rows: the verdict and its figures are still
recorded; the pooled surprise adds no evidence and the damage budget's reference restarts at
each such version, so once every class has guard rows the budget counts from there. The
budget is then paired, on the guard rows held out before its reference
(:mod:`model.guard_history`): the stream renews such a guard set, and the reference's loss
on the rows of its day is no measure of today's. With
``holdout_every`` 10 that window lasts about a hundred rows of the new class: the model
has learnt it somewhat by then (with one held-out row as the bar, the guard refused most
batches of classes 5-9 arriving together in bench_river's incremental synthetic stream, and
the model's accuracy fell from 0.50 to 0.26). The step test (an update
may move the weights by at most ``guard_max_step`` of their size) never refuses an update of
such a model: its weights start at zero, so every honest step of its first hundreds is large
against them (measured: 35-40% on the synthetic stream of bench/bench_river.py, where the test
refused every batch after the first few and the model never learnt again); the rate test
bounds the step instead. A model trained offline keeps its offline guard rows and is judged by
every test, as before. An update that
adds a class is judged against the grown model (the new class added, no step taken).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .artifact import VersionMeta
from .classes import MAX_CLASSES, positions
from .errors import InvalidParameterError, UnknownFeatureError, UnknownLabelError
from .guard import GuardSet, Reason
from .params import HYPER_PARAMETERS, PARAMETERS
from .softmax import SoftmaxRegression
from .validation import first_duplicate
from .versions import LoadedModel

__all__ = [
    "CREATED_DEFAULTS",
    "MAX_FEATURES",
    "classes_along",
    "create_estimator",
    "grown",
    "grown_by",
    "knows_every_class",
    "refusing",
]

MAX_FEATURES = 100_000

# The settings of a created model where the training CLI's defaults need data ("auto").
CREATED_DEFAULTS: dict[str, Any] = {
    # The most one update steps by itself (online_rate_per_row): at the per-row rate, a batch
    # of about d / 2 rows; more steps too far for the guard's damage test on digits.
    "learning_rate": 0.5,
    "schedule": "constant",
    "momentum": 0.0,
    "l2": 0.0,
    "batch_size": 32,
    "epochs": 1,
}


def create_estimator(
    feature_names: Sequence[str],
    classes: Sequence[Any] = (),
    *,
    params: Mapping[str, Any] | None = None,
    standardize: bool = True,
    allow_new_classes: bool = False,
) -> SoftmaxRegression:
    """A model with zero weights for ``feature_names`` and ``classes`` (any number, none
    included), ready to learn online; ``params`` overrides :data:`CREATED_DEFAULTS` and the
    per-row online rate ``1 / (1 + d)``. Bad input raises a precise
    :class:`~model.errors.InvalidInputError` naming the field."""
    names = _checked_names(feature_names)
    labels = _checked_classes(classes)
    d = len(names)
    given = dict(params or {})
    for name, value in given.items():
        if name not in PARAMETERS or name == "standardize":
            known = ", ".join(p.name for p in HYPER_PARAMETERS if p.name != "standardize")
            raise InvalidParameterError(
                f"params: unknown setting {name!r} (settings: {known}; standardize is a "
                "field of its own)",
                field="params",
            )
        if isinstance(value, str) and value == "auto":
            del given[name]  # a created model's own default stands for it
    settings = {p.name: p.default for p in HYPER_PARAMETERS}
    settings |= CREATED_DEFAULTS | {"online_learning_rate": 1.0 / (1.0 + d)}
    settings |= given | {"standardize": bool(standardize)}
    arrays: dict[str, NDArray[Any]] = {
        "weights": np.zeros((d, labels.shape[0])),
        "bias": np.zeros(labels.shape[0]),
        "mean": np.zeros(d),
        "scale": np.ones(d),
        "classes": labels,
        "feature_names": np.array(names),
    }
    # Plain SGD steps with a rate per class (online_row_steps), unless momentum is asked for:
    # the row-step rule has no momentum, so such a model learns by 0.5's rule, which uses it.
    per_class = not settings["momentum"] > 0
    if not per_class:
        arrays["velocity_weights"] = np.zeros((d, labels.shape[0]))
        arrays["velocity_bias"] = np.zeros(labels.shape[0])
    # Counted with or without standardization: the rate decays with the rows learnt.
    arrays["running_m2"] = np.zeros(d)
    arrays["running_count"] = np.zeros(1, dtype=np.int64)
    if per_class:
        arrays["class_born"] = np.zeros(labels.shape[0], dtype=np.int64)  # no row learnt yet
    try:
        estimator = SoftmaxRegression.from_arrays(arrays, params=settings, step=0)
    except ValueError as exc:  # an InvalidParameterError says which setting itself
        if isinstance(exc, InvalidParameterError):
            raise InvalidParameterError(f"params: {exc.message}", field="params") from None
        raise
    estimator.allow_new_classes = bool(allow_new_classes)
    estimator.online_rate_per_row = True
    estimator.online_row_steps = per_class
    return estimator


def _checked_names(feature_names: Sequence[str]) -> tuple[str, ...]:
    if not isinstance(feature_names, list | tuple) or not feature_names:
        raise UnknownFeatureError(
            "feature_names: expected a list of at least one name", field="feature_names"
        )
    if len(feature_names) > MAX_FEATURES:
        raise UnknownFeatureError(
            f"feature_names: expected at most {MAX_FEATURES} features, got {len(feature_names)}",
            field="feature_names",
        )
    for row, name in enumerate(feature_names):
        if not isinstance(name, str) or not name or len(name) > 200 or "\x00" in name:
            raise UnknownFeatureError(
                f"feature_names: expected names of 1-200 characters, got {name!r} at "
                f"position {row}",
                field="feature_names",
                row=row,
            )
    duplicate = first_duplicate(list(feature_names))
    if duplicate is not None:
        raise UnknownFeatureError(
            f"feature_names: {duplicate!r} is named twice (expected distinct names)",
            field="feature_names",
            row=list(feature_names).index(duplicate, list(feature_names).index(duplicate) + 1),
        )
    return tuple(feature_names)


def _checked_classes(classes: Sequence[Any]) -> NDArray[Any]:
    if not isinstance(classes, list | tuple):
        raise UnknownLabelError("classes: expected a list of labels", field="classes")
    if len(classes) > MAX_CLASSES:
        raise UnknownLabelError(
            f"classes: expected at most {MAX_CLASSES}, got {len(classes)}", field="classes"
        )
    ints = all(isinstance(c, int) and not isinstance(c, bool) for c in classes)
    strings = all(isinstance(c, str) and c and "\x00" not in c for c in classes)
    if not (ints or strings):
        raise UnknownLabelError(
            "classes: expected all integers or all non-empty strings", field="classes"
        )
    duplicate = first_duplicate([repr(c) for c in classes])
    if duplicate is not None:
        raise UnknownLabelError(f"classes: {duplicate} is listed twice", field="classes")
    if not classes:
        return np.empty(0, dtype=np.int64)
    found: NDArray[Any] = np.unique(np.asarray(classes, dtype=np.int64 if ints else None))
    return found


def grown(loaded: LoadedModel, labels: ArrayLike | Sequence[Any]) -> tuple[LoadedModel, list[Any]]:
    """``loaded`` with a class for each new label (itself when none is new), and the classes
    added; the guard set's class indices follow the grown class list."""
    estimator = loaded.estimator.with_classes(labels)
    if estimator is loaded.estimator:
        return loaded, []
    old = loaded.estimator.classes_
    added = [c.item() for c in estimator.classes_ if c not in set(old.tolist())]
    guard = loaded.guard
    if guard is not None and old.shape[0]:
        guard = GuardSet(guard.X, positions(old, estimator.classes_)[guard.y], guard.offline)
    return LoadedModel(
        loaded.name, loaded.version, estimator, loaded.meta, guard, loaded.encoder
    ), added


def grown_by(loaded: LoadedModel, added: Sequence[Any] | None) -> LoadedModel:
    """What :func:`grown` made of ``loaded`` for an update that recorded ``added``."""
    if not added:
        return loaded
    return grown(loaded, list(added))[0]


ALL_TESTS: frozenset[str | None] = frozenset(get_args(Reason))


def refusing(guard: GuardSet, n_classes: int, min_rows: int) -> frozenset[str | None]:
    """The reasons for which the guard refuses an update on this guard set (see the module's
    docstring): all of them for a model trained offline; for a model created with no data,
    all but the step test, and only the rate test while a class has fewer than ``min_rows``
    guard rows."""
    if guard.offline > 0:
        return ALL_TESTS
    if not knows_every_class(guard, n_classes, min_rows):
        return frozenset({"rate"})
    return ALL_TESTS - {"step"}


def knows_every_class(guard: GuardSet, n_classes: int, min_rows: int) -> bool:
    """Whether the guard judges with every test: its set holds offline rows (a model trained
    offline: judged as always), or at least ``min_rows`` held-out rows of each of the model's
    ``n_classes`` classes (see the module's docstring)."""
    if guard.offline > 0:
        return True
    counts = np.bincount(guard.y, minlength=n_classes)
    return bool((counts[:n_classes] >= min_rows).all())


def classes_along(snapshot: VersionMeta, chain: Iterable[VersionMeta]) -> list[Any]:
    """The classes of a version: its snapshot's, plus those its updates (``chain``) added."""
    added = [c for meta in chain for c in (meta.classes_added or ())]
    if not added:
        return snapshot.classes
    values = np.asarray([*snapshot.classes, *added])
    merged: list[Any] = np.unique(values).tolist()
    return merged
