"""The estimator: multinomial logistic (softmax) regression trained by minibatch SGD.

The constructor only stores settings. :meth:`SoftmaxRegression.fit` learns the classes, the
standardization and the weights; :meth:`SoftmaxRegression.partial_fit` takes one online step
that continues exactly where ``fit`` stopped (same optimizer state, same schedule position), so
``fit`` for N steps equals N ``partial_fit`` calls over the same minibatch sequence, bit for bit.

All learned state is replaced, never edited in place: ``state_`` is a frozen
:class:`~model.optimizer.TrainState`, so a reader holding a reference sees one consistent model.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray
from threadpoolctl import threadpool_limits

from . import autotune
from .autotune import AUTO
from .classes import grown_classes, grown_state, new_labels, positions
from .errors import DivergenceError, InvalidParameterError, NotFittedError, UnknownFeatureError
from .maths import Float, Index, cross_entropy, softmax
from .optimizer import LINEAR_END, SGDSettings, StepFigures, TrainState, row_steps, sgd_step
from .params import HYPER_PARAMETERS, LEGACY_DEFAULTS, HyperParameter, check_params
from .preprocessing import Standardizer
from .running import RunningStandardizer
from .validation import check_labels, check_matrix, check_same_length

__all__ = ["EpochRecord", "SoftmaxRegression", "StepReport", "epoch_permutations"]


@dataclass(frozen=True)
class StepReport:
    """Outcome of one online update on ``n`` rows: the prequential (test-then-train) log-loss
    and accuracy of the minibatch before the update, and its log-loss after it."""

    n: int
    loss_before: float
    accuracy_before: float
    loss_after: float


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    learning_rate: float
    val_loss: float | None = None
    val_accuracy: float | None = None


# An argument of each online update, not a setting: declared like one for the same check.
_PASSES = HyperParameter("passes", 1, int, "SGD steps per online update", low=1)


def epoch_permutations(n_samples: int, epochs: int, seed: int) -> Iterator[Index]:
    """The row order of each epoch: a fresh seeded permutation per epoch.

    ``fit`` slices each permutation into consecutive minibatches of ``batch_size`` rows.
    """
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        yield rng.permutation(n_samples)


class SoftmaxRegression:
    """Softmax regression with minibatch SGD, momentum, L2, schedules and early stopping.

    >>> X = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.1], [1.1, 0.0]])
    >>> model = SoftmaxRegression(epochs=50, batch_size=2).fit(X, ["a", "b", "a", "b"])
    >>> model.predict(np.array([[0.0, 2.0]])).tolist()
    ['a']
    """

    # Settings, stored by __init__ (declared in model.params); "auto" ones are resolved from
    # the data by initialize (model.autotune) into params_.
    learning_rate: float | str
    schedule: str
    power_t: float
    decay_steps: float
    momentum: float
    l2: float | str
    batch_size: int | str
    epochs: int | str
    patience: int
    tol: float
    seed: int
    standardize: bool
    online_learning_rate: float | str

    # Online settings, not hyper-parameters (fit does not use them; get_params leaves them out):
    # stored in a snapshot's metadata, carried by every estimator an update makes.
    allow_new_classes: bool = False  # partial_fit / updates: a new label adds a class
    online_rate_per_row: bool = False  # an update's default rate: per row (see online_rate_for)
    online_row_steps: bool = False  # an update steps row by row (see updated; model.growth)

    # Learned state, set by _set_learned only (absent until fit, initialize or from_arrays).
    params_: dict[str, Any]  # the settings in use: get_params() with "auto" resolved
    classes_: NDArray[Any]
    feature_names_: tuple[str, ...] | None
    standardizer_: Standardizer
    state_: TrainState
    history_: list[EpochRecord]
    n_epochs_run_: int
    best_epoch_: int | None
    stop_reason_: str  # how fit ended: "epochs" (all run), "plateau" (early stop); "" before
    kept_epoch_: int | None  # the epoch whose weights fit kept (the last, or the best one's)
    # Row-step models (online_row_steps): per class, the rows learnt when it was added; its
    # column's rate decays with the rows learnt since (see own_rates). None for the others.
    class_born_: NDArray[np.int64] | None

    # The validated optimizer settings and the setting values they were built from.
    _sgd_cache: tuple[tuple[Any, ...], SGDSettings]
    _names_cache: tuple[tuple[str, ...] | None, NDArray[np.str_]]

    def __init__(
        self,
        *,
        learning_rate: float | str = "auto",
        schedule: str = "auto",
        power_t: float = 0.5,
        decay_steps: float = 1000.0,
        momentum: float = 0.9,
        l2: float | str = "auto",
        batch_size: int | str = "auto",
        epochs: int | str = "auto",
        patience: int = 10,
        tol: float = 1e-4,
        seed: int = 0,
        standardize: bool = True,
        online_learning_rate: float | str = "auto",
    ) -> None:
        # The constructor only stores its arguments, each under its own name (scikit-learn's
        # contract); model.params declares them, fit and from_arrays check them.
        arguments = dict(locals())
        del arguments["self"]
        vars(self).update(arguments)

    # ----------------------------------------------------------------- settings
    def get_params(self) -> dict[str, Any]:
        """The constructor settings, JSON-serializable, in declaration order."""
        return {parameter.name: getattr(self, parameter.name) for parameter in HYPER_PARAMETERS}

    def resolved_params(self) -> dict[str, Any]:
        """The settings in use: :meth:`get_params` with every ``"auto"`` replaced by what
        :mod:`model.autotune` chose for the training data (what the store records). Before
        ``fit`` (or ``initialize``), :meth:`get_params` itself."""
        params = self.get_params()
        if vars(self).get("params_") is not None:
            for name in params:
                params[name] = self._setting(name)
        return params

    def _setting(self, name: str) -> Any:
        """One setting in use: the attribute, or, where it is ``"auto"`` (or derives from an
        ``"auto"`` schedule), the value chosen for the data."""
        value = vars(self)[name]
        if (isinstance(value, str) and value == AUTO) or (
            name == "decay_steps" and self.schedule == AUTO
        ):
            return self.params_[name]
        return value

    @property
    def online_rate_given(self) -> float | None:
        """The step size an online update without one is given: ``online_learning_rate`` as
        resolved, or None for a model stored without one (before 0.4), whose online updates
        follow its schedule, pass by pass, as they always did."""
        self._require_fitted()
        rate = self._setting("online_learning_rate")
        if isinstance(rate, int | float) and not isinstance(rate, bool):
            return float(rate)
        return None

    @property
    def online_rate(self) -> float:
        """The default step size of an online update (``/train``): ``online_learning_rate``
        as resolved, or for a model stored without one (before 0.4) its schedule's current
        rate (its first pass's), as online updates have always used."""
        given = self.online_rate_given
        if given is None:
            return self.sgd_settings.rate(self.state_.step)
        # Per row, an update's own step grows with its rows up to learning_rate: that is the
        # largest step the model takes by itself (what the guard's rate test compares with).
        return float(self._setting("learning_rate")) if self.online_rate_per_row else given

    def online_rate_for(self, rows: int) -> float | None:
        """The step an online update of ``rows`` rows takes without a learning rate of its
        own: :attr:`online_rate_given`, or, with ``online_rate_per_row`` (models created with
        no data, :mod:`model.growth`), that rate per row: ``rows`` times it (the sum of the
        rows' gradients, as one step per row would go), decayed as ``1 / sqrt(1 + n / (10
        d))`` after ``n`` rows learnt (``d`` features), at most ``learning_rate`` (models
        created by 0.5); None for a row-step model (``online_row_steps``, 0.6), whose rates
        are per class (:meth:`own_rates`)."""
        given = self.online_rate_given
        if given is None or not self.online_rate_per_row:
            return given
        if self.steps_per_class:  # its own rates, per class and row: see own_rates
            return None
        horizon = DECAY_ROWS_PER_FEATURE * self.n_features_in_
        per_row = given / math.sqrt(1.0 + self.rows_learnt / horizon)
        return min(float(self._setting("learning_rate")), per_row * rows)

    @property
    def steps_per_class(self) -> bool:
        """Whether an update takes this model's row-step rule (:meth:`updated`): a model
        created by 0.6 with no data (``online_row_steps``) that knows when each class was
        added (``class_born_``; ``fit`` forgets it, and the model then learns by 0.5's rule)."""
        return self.online_row_steps and self.class_born_ is not None

    @property
    def rows_learnt(self) -> int:
        """The rows this model has learnt online, as its running standardization counts them
        (0 for a model without one: trained offline)."""
        return int(getattr(self.standardizer_, "count", 0))

    @property
    def data_is_scarce(self) -> bool:
        """Whether this model has learnt fewer than ``EARLY_ROWS_PER_FEATURE`` (20) rows per
        feature: a row-step model's update at its own rates is then led by a step on the rows'
        summed gradient (see :meth:`updated`)."""
        return self.rows_learnt < EARLY_ROWS_PER_FEATURE * int(self.state_.weights.shape[0])

    @property
    def learns_by_row(self) -> bool:
        """Whether this model has learnt fewer than ``ROW_STEPS_ROWS_PER_FEATURE`` (2) rows
        per feature: a row-step model then takes one step per row (see :meth:`updated`)."""
        return self.rows_learnt < ROW_STEPS_ROWS_PER_FEATURE * int(self.state_.weights.shape[0])

    def own_rates(self, rows: int) -> Float:
        """A row-step model's own step sizes per row for an update of ``rows`` rows (see
        :meth:`updated`): per class, ``online_learning_rate`` decayed as ``1 / sqrt(1 + n /
        (10 d))`` after the ``n`` rows learnt since the class was added (a class met late
        starts at the full rate instead of the decayed one of the classes met early), at most
        ``learning_rate / rows`` (the most one update moves by itself, as for batch steps)."""
        given = self.online_rate_given
        assert given is not None and self.class_born_ is not None
        seen = self.rows_learnt
        d = self.state_.weights.shape[0]
        rates = np.subtract(seen, self.class_born_, dtype=np.float64)  # rows since each birth
        rates *= 1.0 / (DECAY_ROWS_PER_FEATURE * d)
        rates += 1.0
        np.sqrt(rates, out=rates)
        np.divide(given, rates, out=rates)
        np.minimum(rates, float(self._setting("learning_rate")) / max(rows, 1), out=rates)
        return rates

    @property
    def sgd_settings(self) -> SGDSettings:
        """The optimizer settings (validated on construction of the returned object)."""
        values = (
            tuple([self._setting(name) for name in _SGD_FIELDS])
            if "params_" in vars(self)
            else tuple([getattr(self, name) for name in _SGD_FIELDS])
        )
        # Built and validated once, then reused while the settings are the very same objects
        # (an online update asks twice; the estimators it makes share their parent's).
        cached: tuple[tuple[Any, ...], SGDSettings] | None = vars(self).get("_sgd_cache")
        if cached is not None and all(a is b for a, b in zip(cached[0], values, strict=True)):
            return cached[1]
        settings = SGDSettings(**dict(zip(_SGD_FIELDS, values, strict=True)))
        self._sgd_cache = (values, settings)
        return settings

    def _check_params(self) -> None:
        """Raise InvalidParameterError for the first invalid setting."""
        check_params(self.get_params())

    # ----------------------------------------------------------------- state
    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "state_")

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError("this model has not been trained: call fit or initialize first")

    @property
    def n_features_in_(self) -> int:
        self._require_fitted()
        return int(self.state_.weights.shape[0])

    def initialize(
        self,
        X: ArrayLike,
        y: ArrayLike | Sequence[Any],
        *,
        classes: ArrayLike | None = None,
        feature_names: Sequence[str] | None = None,
        validation: tuple[ArrayLike, ArrayLike | Sequence[Any]] | None = None,
    ) -> Self:
        """Learn the classes and the standardization from ``X: (n, d)``, ``y: (n,)``, resolve
        the ``"auto"`` settings into ``params_`` (:mod:`model.autotune`; its learning-rate
        probe judges on ``validation`` when given), and zero the weights and the optimizer
        state. ``fit`` starts with exactly this."""
        self._check_params()
        X = check_matrix(X)
        labels = np.asarray(y)
        check_same_length(X.shape[0], labels)
        found: NDArray[Any] = np.unique(labels if classes is None else np.asarray(classes))
        if found.dtype.kind not in "iuU":
            raise InvalidParameterError(
                f"labels must be integers or strings, got dtype {found.dtype}", field="labels"
            )
        if found.dtype.kind == "u":
            found = found.astype(np.int64)
        if found.shape[0] < 2:
            raise InvalidParameterError(
                f"expected at least 2 classes, got {found.shape[0]}", field="labels"
            )
        names = None if feature_names is None else tuple(str(n) for n in feature_names)
        if names is not None and (len(names) != X.shape[1] or len(set(names)) != len(names)):
            raise UnknownFeatureError(
                f"feature_names: expected {X.shape[1]} distinct names, got {len(names)} "
                f"({len(set(names))} distinct)",
                field="feature_names",
            )
        standardizer = (
            Standardizer.fit(X) if self.standardize else Standardizer.identity(X.shape[1])
        )
        params = self.get_params()
        if AUTO in params.values():
            params = autotune.resolve(
                params,
                X.shape[0],
                *self._probe_rows(X, labels, found, standardizer),
                n_classes=found.shape[0],
                validation=self._standardized(validation, found, standardizer, X.shape[1]),
            )
        state = TrainState.zeros(X.shape[1], found.shape[0], momentum=params["momentum"] > 0)
        return self._set_learned(params, found, names, standardizer, state, epochs_run=0)

    @staticmethod
    def _probe_rows(
        X: Float, labels: NDArray[Any], classes: NDArray[Any], standardizer: Standardizer
    ) -> tuple[Float, Index]:
        """Standardized rows and class indices for :func:`autotune.resolve`: a seeded sample of
        at most ``autotune.SAMPLE_ROWS`` (it looks at no more), not a copy of the data."""
        n = X.shape[0]
        rows = (
            np.sort(np.random.default_rng(0).choice(n, autotune.SAMPLE_ROWS, replace=False))
            if n > autotune.SAMPLE_ROWS
            else slice(None)
        )
        return standardizer.transform(X[rows]), check_labels(labels[rows], classes)

    @staticmethod
    def _standardized(
        validation: tuple[ArrayLike, ArrayLike | Sequence[Any]] | None,
        classes: NDArray[Any],
        standardizer: Standardizer,
        n_features: int,
    ) -> tuple[Float, Index] | None:
        if validation is None:
            return None
        X_val = standardizer.transform(check_matrix(validation[0], n_features))
        y_val = check_labels(validation[1], classes)
        check_same_length(X_val.shape[0], y_val)
        return X_val, y_val

    def _set_learned(
        self,
        params: dict[str, Any],
        classes: NDArray[Any],
        feature_names: tuple[str, ...] | None,
        standardizer: Standardizer,
        state: TrainState,
        *,
        epochs_run: int,
    ) -> Self:
        """Set every learned attribute: with :meth:`to_arrays`, the one place a new one is added."""
        self.params_ = params
        self.classes_ = classes
        self.feature_names_ = feature_names
        self.standardizer_ = standardizer
        self.state_ = state
        self.history_ = []
        self.n_epochs_run_ = epochs_run
        self.best_epoch_ = None
        self.stop_reason_ = ""
        self.kept_epoch_ = None
        self.class_born_ = None
        return self

    # ----------------------------------------------------------------- codec
    def to_arrays(self) -> dict[str, NDArray[Any]]:
        """The learned state as named arrays (what a snapshot artifact stores).

        ``weights: (d, k)``, ``bias: (k,)``, ``mean, scale: (d,)``, ``classes: (k,)``; with
        momentum on, ``velocity_weights: (d, k)`` and ``velocity_bias: (k,)``; with named
        features, ``feature_names: (d,)`` unicode. The arrays are the model's own (read them,
        do not edit them). :meth:`from_arrays` is the inverse.
        """
        self._require_fitted()
        state = self.state_
        arrays: dict[str, NDArray[Any]] = {
            "weights": state.weights,
            "bias": state.bias,
            "mean": self.standardizer_.mean,
            "scale": self.standardizer_.scale,
            "classes": self.classes_,
        }
        if state.velocity_weights is not None and state.velocity_bias is not None:
            arrays["velocity_weights"] = state.velocity_weights
            arrays["velocity_bias"] = state.velocity_bias
        if self.feature_names_ is not None:
            arrays["feature_names"] = self._feature_names_array()
        standardizer = self.standardizer_
        if isinstance(standardizer, RunningStandardizer):
            arrays["running_m2"] = standardizer.m2
            arrays["running_count"] = np.array([standardizer.count], dtype=np.int64)
        if self.class_born_ is not None:
            arrays["class_born"] = self.class_born_
        return arrays

    def _feature_names_array(self) -> NDArray[np.str_]:
        """``np.array(feature_names_)``, built once (an online update asks for it to size a
        snapshot) and read-only, as it is shared."""
        names = self.feature_names_
        cached: tuple[tuple[str, ...] | None, NDArray[np.str_]] | None = vars(self).get(
            "_names_cache"
        )
        if cached is None or cached[0] is not names:
            array = np.array(names)
            array.setflags(write=False)
            cached = (names, array)
            self._names_cache = cached
        return cached[1]

    @classmethod
    def from_arrays(
        cls,
        arrays: Mapping[str, NDArray[Any]],
        *,
        params: Mapping[str, Any],
        step: int,
        epochs_run: int = 0,
    ) -> SoftmaxRegression:
        """The fitted estimator that :meth:`to_arrays` described, built with ``params`` (as
        :meth:`get_params` returned them) at optimizer step ``step``.

        Raises ValueError naming the problem when an array is missing or its shape disagrees
        with ``weights: (d, k)``, or when ``params`` or ``step`` are invalid.
        """
        if not isinstance(params, Mapping):
            raise ValueError(f"params: expected a mapping of settings, got {params!r}")
        try:
            estimator = cls(**(LEGACY_DEFAULTS | dict(params)))
        except TypeError as exc:  # an unknown or non-string setting name
            raise ValueError(f"params: {exc}") from None
        estimator._check_params()
        unresolved = [
            name
            for name, value in estimator.get_params().items()
            if value == AUTO and name != "online_learning_rate"  # absent before 0.4
        ]
        if unresolved:
            raise ValueError(f"params: {', '.join(unresolved)} must be resolved, not 'auto'")
        if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
            raise ValueError(f"step must be an integer >= 0, got {step!r}")
        missing = [name for name in _REQUIRED_ARRAYS if name not in arrays]
        if missing:
            raise ValueError(f"missing array(s): {', '.join(missing)}")
        weights = np.asarray(arrays["weights"], dtype=np.float64)
        if weights.ndim != 2:
            raise ValueError(f"weights: expected shape (d, k), got {weights.shape}")
        d, k = weights.shape
        checked = _checked_shapes(arrays, d, k)
        velocities = checked.get("velocity_weights"), checked.get("velocity_bias")
        state = TrainState(weights, checked["bias"], *velocities, int(step))
        names = checked.get("feature_names")
        standardizer = (
            RunningStandardizer(
                mean=checked["mean"],
                scale=checked["scale"],
                m2=checked["running_m2"],
                count=int(checked["running_count"][0]),
                scaling=bool(estimator.standardize),
            )
            if "running_m2" in checked and "running_count" in checked
            else Standardizer(mean=checked["mean"], scale=checked["scale"])
        )
        estimator._set_learned(
            estimator.get_params(),
            checked["classes"],
            None if names is None else tuple(str(n) for n in names),
            standardizer,
            state,
            epochs_run=int(epochs_run),
        )
        if "class_born" in checked:
            estimator.class_born_ = checked["class_born"].astype(np.int64, copy=False)
        return estimator

    # ----------------------------------------------------------------- training
    def fit(
        self,
        X: ArrayLike,
        y: ArrayLike | Sequence[Any],
        *,
        validation: tuple[ArrayLike, ArrayLike | Sequence[Any]] | None = None,
        classes: ArrayLike | None = None,
        feature_names: Sequence[str] | None = None,
        callback: Callable[[EpochRecord], None] | None = None,
    ) -> Self:
        """Train from scratch on ``X: (n, d)``, ``y: (n,)`` for up to ``epochs`` epochs.

        With ``validation=(X_val, y_val)``, training stops once the validation log-loss has not
        improved by ``tol`` for ``patience`` epochs, and the best epoch's weights and optimizer
        state are restored. ``callback`` receives each epoch's record.
        """
        self.initialize(X, y, classes=classes, feature_names=feature_names, validation=validation)
        X = check_matrix(X)
        y_index = check_labels(y, self.classes_)
        val = self._standardized(validation, self.classes_, self.standardizer_, X.shape[1])
        self.state_ = _Training(self, X, y_index, val, callback).run()
        return self

    def partial_fit(
        self,
        X: ArrayLike,
        y: ArrayLike | Sequence[Any],
        *,
        learning_rate: float | None = None,
        passes: int = 1,
    ) -> StepReport:
        """One online update: ``passes`` SGD steps on the minibatch ``X: (m, d)``, ``y: (m,)``.

        The optimizer state carries over from ``fit`` or the previous call. If any weight would
        become non-finite, :class:`DivergenceError` is raised and the model is left unchanged.
        """
        self._require_fitted()
        X = check_matrix(X, self.n_features_in_)
        grown = self.with_classes(y) if self.allow_new_classes else self
        y_index = check_labels(y, grown.classes_)
        check_same_length(X.shape[0], y_index)
        if learning_rate is None and self.online_rate_per_row:  # else the schedule's rate
            learning_rate = self.online_rate_for(y_index.shape[0])
        new, report = grown.updated(X, y_index, learning_rate=learning_rate, passes=passes)
        self.classes_, self.standardizer_, self.state_ = new.classes_, new.standardizer_, new.state_
        self.class_born_ = new.class_born_
        return report

    def with_classes(self, y: ArrayLike | Sequence[Any]) -> SoftmaxRegression:
        """This estimator (itself if nothing is new) with a class added for each label of
        ``y`` outside ``classes_`` (:mod:`model.classes`: a zero weight column, the mean
        bias), as a copy; whether new classes are allowed is the caller's decision."""
        added = new_labels(y, self.classes_)
        if not added.shape[0]:
            return self
        classes = grown_classes(self.classes_, added)
        clone = self.with_state(grown_state(self.state_, self.classes_, classes))
        clone.classes_ = classes
        if self.class_born_ is not None:  # a class added now is born at the rows learnt so far
            born = np.full(classes.shape[0], self.rows_learnt, dtype=np.int64)
            born[positions(self.classes_, classes)] = self.class_born_
            clone.class_born_ = born
        return clone

    def with_state(self, state: TrainState) -> SoftmaxRegression:
        """A shallow copy sharing settings, classes and standardization, with ``state``."""
        if type(self) is SoftmaxRegression:  # what copy.copy does, without its generic path
            clone = SoftmaxRegression.__new__(SoftmaxRegression)
            vars(clone).update(vars(self))
        else:
            clone = copy.copy(self)
        clone.state_ = state
        return clone

    def updated(
        self,
        X: Float,
        y_index: Index,
        *,
        learning_rate: float | None = None,
        passes: int = 1,
        momentum: bool = True,
    ) -> tuple[SoftmaxRegression, StepReport]:
        """The update behind :meth:`partial_fit`, on already-validated input, as a pure
        function: returns a new estimator and leaves this one untouched.

        ``X: (m, d)`` raw float64 rows, ``y_index: (m,)`` class indices into ``classes_``.
        ``momentum=False`` takes plain SGD steps that neither use nor change the momentum
        buffers: the update's effect is then its own, not carried into later updates (what
        the service's guarded online updates do, see :mod:`model.guard`).

        A row-step model (``online_row_steps``: created with no data, :mod:`model.growth`)
        takes plain SGD steps with a rate per class (:func:`~model.optimizer.row_steps`,
        momentum buffers untouched): while it :attr:`learns_by_row`, one step per row, in
        order, ``passes`` times; after that, ``passes`` steps on the rows' summed gradient;
        either way led by one more step on the summed gradient while :attr:`data_is_scarce`
        and at its own rates. Without ``learning_rate`` the rates per row are its own
        (:meth:`own_rates`); with one, ``learning_rate / m`` for every class, without the lead
        step (so the rows' steps add up to one step of ``learning_rate``, as a batch step's
        would).
        """
        # Checked here, not in partial_fit, so that every caller (ModelRepository.update too)
        # gets them.
        rate_ok = learning_rate is None or (
            isinstance(learning_rate, int | float | np.number)
            and not isinstance(learning_rate, bool)
            and 0 < learning_rate < np.inf
        )
        if not rate_ok:
            raise InvalidParameterError(
                f"learning_rate must be > 0 and finite, got {learning_rate!r}",
                field="learning_rate",
            )
        if type(passes) is not int or not 1 <= passes <= 1 << 31:  # else plainly valid
            _PASSES.check(passes)
        settings = None if self.steps_per_class else self.sgd_settings
        # A running standardization learns the rows first (model.running); a fixed one is itself.
        standardizer = self.standardizer_.updated(X)
        Xs = standardizer.transform(X)
        start = self.state_
        if not momentum:
            start = start.with_velocities(None, None)
        # A diverging step overflows; is_finite below turns that into DivergenceError.
        # Finite but huge weights can still overflow this batch's logits.
        with np.errstate(over="ignore", invalid="ignore"):
            if settings is None:
                new_state, first = self._row_steps(Xs, y_index, learning_rate, passes)
            else:
                new_state, first = sgd_step(start, Xs, y_index, settings, learning_rate)
                for _ in range(passes - 1):
                    new_state, _ = sgd_step(new_state, Xs, y_index, settings, learning_rate)
                if not momentum:  # the buffers stay as they were
                    new_state = new_state.with_velocities(
                        self.state_.velocity_weights, self.state_.velocity_bias
                    )
            loss_after = cross_entropy(_logits(new_state, Xs), y_index)
        if not (math.isfinite(loss_after) and new_state.is_finite()):
            raise DivergenceError(
                "update refused: it would make a weight or the batch's loss non-finite "
                "(lower the learning rate or check the feature scale); the model is unchanged",
                field="learning_rate",
            )
        m = y_index.shape[0]
        report = StepReport(m, first.loss, first.correct / m, loss_after)
        clone = self.with_state(new_state)
        clone.standardizer_ = standardizer
        return clone, report

    def _row_steps(
        self,
        Xs: Float,
        y_index: Index,
        learning_rate: float | None,
        passes: int,
    ) -> tuple[TrainState, StepFigures]:
        """:meth:`updated`'s steps for a row-step model, on standardized rows."""
        m = y_index.shape[0]
        if learning_rate is None:
            rates, lead = self.own_rates(m), self.data_is_scarce
        else:
            rates, lead = np.full(self.classes_.shape[0], learning_rate / m), False
        l2 = float(self._setting("l2"))  # validated with the settings when the model was made
        by_row = self.learns_by_row
        return row_steps(self.state_, Xs, y_index, rates, passes, by_row=by_row, lead=lead, l2=l2)

    def online_step(
        self, X: Float, y_index: Index, *, learning_rate: float | None = None, passes: int = 1
    ) -> tuple[SoftmaxRegression, StepReport]:
        """Deprecated alias of :meth:`updated` (README, "Deprecations")."""
        warnings.warn(
            "SoftmaxRegression.online_step is deprecated: use updated", DeprecationWarning, 2
        )
        return self.updated(X, y_index, learning_rate=learning_rate, passes=passes)

    # ----------------------------------------------------------------- inference
    def decision_function(self, X: ArrayLike) -> Float:
        """Logits ``(n, k)`` for raw (unstandardized) rows ``X: (n, d)``."""
        self._require_fitted()
        X = check_matrix(X, self.n_features_in_)
        return _logits(self.state_, self.standardizer_.transform(X))

    def predict_proba(self, X: ArrayLike) -> Float:
        """Class probabilities ``(n, k)``, columns in the order of ``classes_``."""
        return softmax(self.decision_function(X))

    def decision_function_checked(self, X: Float) -> Float:
        """:meth:`decision_function` for rows already returned by ``check_matrix(X, d)`` on a
        fitted model; the same computation."""
        return _logits(self.state_, self.standardizer_.transform(X))

    def predict_proba_checked(self, X: Float) -> Float:
        """:meth:`predict_proba` for rows already returned by ``check_matrix(X, d)`` on a
        fitted model (the service validates each request once); the same computation."""
        return softmax(_logits(self.state_, self.standardizer_.transform(X)))

    def predict(self, X: ArrayLike) -> NDArray[Any]:
        """The most probable class label of each row, ``(n,)``."""
        # The argmax of the probabilities, as the service answers: on near-ties the logits'
        # argmax can differ by rounding.
        best = self.predict_proba(X).argmax(axis=1)  # first: it raises NotFittedError
        labels: NDArray[Any] = self.classes_[best]
        return labels

    def log_loss(self, X: ArrayLike, y: ArrayLike | Sequence[Any]) -> float:
        """Mean cross-entropy (no penalty) on labelled rows."""
        Z = self.decision_function(X)
        y_index = check_labels(y, self.classes_)
        check_same_length(Z.shape[0], y_index)
        return cross_entropy(Z, y_index)


class _Training:
    """One ``fit``'s epoch loop over the estimator's resolved settings (``params_``).

    Each minibatch is gathered from the raw rows by index and standardized on its own (the
    same arithmetic as standardizing every row first, without a copy of the data per epoch).
    With validation rows, once the validation log-loss has not improved by ``tol`` for
    ``patience`` epochs, training stops and the best epoch's state is restored, except that
    under the ``linear`` schedule the rate first anneals to its end over a few more epochs
    (a plateau at a high rate is not yet a minimum) and the final state is kept unless its
    validation loss is clearly (over :data:`WORSE_THAN_BEST`) above the best one's.
    """

    def __init__(
        self,
        estimator: SoftmaxRegression,
        X: Float,
        y: Index,
        validation: tuple[Float, Index] | None,
        callback: Callable[[EpochRecord], None] | None,
    ) -> None:
        params = estimator.resolved_params()
        self.estimator = estimator
        self.X, self.y, self.validation, self.callback = X, y, validation, callback
        self.settings = estimator.sgd_settings
        self.batch_size: int = params["batch_size"]
        self.epochs: int = params["epochs"]
        self.patience: int = params["patience"]
        self.tol: float = params["tol"]
        self.seed: int = params["seed"]
        self.anneal: tuple[int, int, float] | None = None  # (first step, steps, first rate)

    def run(self) -> TrainState:
        # Minibatch products are small: a multi-threaded BLAS only adds hand-offs between its
        # threads (10x to 60x slower per step on a busy 2-core machine than one thread).
        with threadpool_limits(limits=1, user_api="blas"):
            return self._run()

    def _run(self) -> TrainState:
        estimator, val = self.estimator, self.validation
        state = estimator.state_
        best: tuple[float, TrainState] | None = None
        last_loss = math.inf
        since_best = 0
        last_epoch = self.epochs
        estimator.stop_reason_ = "epochs"
        for epoch, order in enumerate(
            epoch_permutations(self.X.shape[0], self.epochs, self.seed), 1
        ):
            state, record = self._epoch(epoch, order, state)
            if val is not None:
                last_loss, val_accuracy = _evaluate(state, *val)
                record = replace(record, val_loss=last_loss, val_accuracy=val_accuracy)
                if best is None or last_loss < best[0] - self.tol:
                    best, since_best = (last_loss, state), 0
                    estimator.best_epoch_ = epoch
                else:
                    since_best += 1
            estimator.history_.append(record)
            estimator.n_epochs_run_ = epoch
            if self.callback is not None:
                self.callback(record)
            if epoch >= last_epoch:
                break
            if val is not None and since_best >= self.patience and self.anneal is None:
                estimator.stop_reason_ = "plateau"
                if self.settings.schedule != "linear":
                    break
                last_epoch = self._start_annealing(epoch, state)
        estimator.kept_epoch_ = estimator.n_epochs_run_
        if best is None:
            return state
        if self.settings.schedule == "linear" and last_loss <= best[0] * (1 + WORSE_THAN_BEST):
            return state
        estimator.kept_epoch_ = estimator.best_epoch_
        return best[1]

    def _epoch(self, epoch: int, order: Index, state: TrainState) -> tuple[TrainState, EpochRecord]:
        X, y, bs, settings = self.X, self.y, self.batch_size, self.settings
        standardizer = self.estimator.standardizer_
        # One minibatch buffer, reused: rows gathered into it and standardized in place, the
        # same arithmetic as Standardizer.transform (so partial_fit's steps are these, bit
        # for bit). A step reads its minibatch and keeps none of it.
        buffer = np.empty((min(bs, X.shape[0]), X.shape[1]))
        total = 0.0
        rate = None
        # A diverging step overflows; is_finite below turns that into DivergenceError.
        with np.errstate(over="ignore", invalid="ignore"):
            for start in range(0, X.shape[0], bs):
                rows = order[start : start + bs]
                batch = buffer[: rows.shape[0]]
                np.take(X, rows, axis=0, out=batch)
                np.subtract(batch, standardizer.mean, out=batch)
                np.divide(batch, standardizer.scale, out=batch)
                rate = self._annealed_rate(state.step)
                state, figures = sgd_step(state, batch, y[rows], settings, rate)
                total += figures.loss * rows.shape[0]
        if not state.is_finite():
            raise DivergenceError(
                f"training diverged in epoch {epoch} (a weight became non-finite); "
                f"lower learning_rate (now {settings.learning_rate})",
                field="learning_rate",
            )
        used = settings.rate(state.step - 1) if rate is None else rate
        return state, EpochRecord(epoch, total / X.shape[0], used)

    def _start_annealing(self, epoch: int, state: TrainState) -> int:
        """Anneal from the current rate to the schedule's last over the next few epochs;
        returns the epoch to stop after."""
        epochs = min(self.epochs - epoch, max(ANNEAL_EPOCHS, math.ceil(self.epochs / 10)))
        steps = epochs * math.ceil(self.X.shape[0] / self.batch_size)
        self.anneal = (state.step, steps, self.settings.rate(state.step))
        return epoch + epochs

    def _annealed_rate(self, step: int) -> float | None:
        if self.anneal is None:
            return None
        first, steps, start = self.anneal
        end = self.settings.learning_rate * LINEAR_END
        return start + (end - start) * min((step - first) / steps, 1.0)


# A created model's per-row rate halves after 30 d rows learnt (online_rate_for, own_rates).
DECAY_ROWS_PER_FEATURE = 10
# A row-step model's updates are led by a summed step until it has learnt 20 rows per feature
# (data_is_scarce), and learn row by row until it has learnt 2 (learns_by_row).
EARLY_ROWS_PER_FEATURE = 20
ROW_STEPS_ROWS_PER_FEATURE = 2

WORSE_THAN_BEST = 0.01  # linear schedule: the final state is kept unless this much worse
ANNEAL_EPOCHS = 2


def _logits(state: TrainState, Xs: Float) -> Float:
    return Xs @ state.weights + state.bias


def _evaluate(state: TrainState, Xs: Float, y: Index) -> tuple[float, float]:
    """(log-loss, accuracy) of ``state`` on standardized rows."""
    Z = _logits(state, Xs)
    return cross_entropy(Z, y), float(np.mean(Z.argmax(axis=1) == y))


_SGD_FIELDS = tuple(field.name for field in fields(SGDSettings))

_REQUIRED_ARRAYS = ("weights", "bias", "mean", "scale", "classes")


def _checked_shapes(arrays: Mapping[str, NDArray[Any]], d: int, k: int) -> dict[str, NDArray[Any]]:
    """The arrays besides ``weights``, their shapes checked against ``weights: (d, k)``; the
    float ones as float64."""
    expected = {
        "bias": (k,),
        "mean": (d,),
        "scale": (d,),
        "classes": (k,),
        "velocity_weights": (d, k),
        "velocity_bias": (k,),
        "feature_names": (d,),
        "running_m2": (d,),
        "running_count": (1,),
        "class_born": (k,),
    }
    if ("velocity_weights" in arrays) != ("velocity_bias" in arrays):
        raise ValueError("velocity_weights and velocity_bias: expected both or neither")
    checked: dict[str, NDArray[Any]] = {}
    for name, shape in expected.items():
        if name not in arrays:
            continue
        array = np.asarray(arrays[name])
        if array.shape != shape:
            raise ValueError(
                f"{name}: expected shape {shape} to match weights {(d, k)}, got {array.shape}"
            )
        floats = name not in ("classes", "feature_names", "running_count", "class_born")
        checked[name] = array.astype(np.float64, copy=False) if floats else array
    return checked
