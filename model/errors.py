"""The one exception tree of ``model/``.

Every error this package raises on purpose is a :class:`ModelError`. The service maps each class
to an HTTP status in a single handler; nothing here knows about HTTP.

    ModelError
    ├── InvalidInputError  (also a ValueError)   bad data or settings from a caller
    │   ├── EmptyInputError                      no rows, no features, no labels
    │   ├── FeatureCountError                    wrong number of columns
    │   ├── UnknownFeatureError                  unknown or missing feature name
    │   ├── LengthMismatchError                  instances and labels of different lengths
    │   ├── NonFiniteError                       NaN or ±inf in the input
    │   ├── NotANumberError                      a boolean, string or null where a number belongs
    │   ├── UnknownLabelError                    a label that is not one of the model's classes
    │   ├── UnknownCategoryError                 a category unseen in training, when refused
    │   ├── InvalidParameterError                a hyper-parameter out of its range
    │   ├── OutOfRangeError                      a row far outside the training data
    │   └── DataFileError                        an unreadable training file (CSV/npz)
    ├── NotFittedError                           the estimator has not been trained yet
    ├── DivergenceError                          an update would make a weight non-finite
    ├── UpdateRejectedError                      the guard judged an update harmful
    ├── MissingDependencyError                   an optional extra is not installed
    └── StoreError                               the artifact store
        ├── ModelNotFoundError                   no such model name (or the store is empty)
        ├── ModelExistsError                     creating a model under a name already taken
        ├── VersionNotFoundError                 no such version (or removed by retention)
        ├── CorruptArtifactError                 truncated, tampered or pickle-bearing file
        ├── StoreBusyError                       the cross-process lock was not obtained in time
        ├── StoreUnavailableError                the store's database cannot be reached now
        └── ModelChangedError                    the active version changed features or classes
                                                 while a request was being read

Each class carries a stable ``code`` (used as the ``type`` of the service's error body), and
optionally the ``field`` and ``row`` the problem was found at.
"""

from __future__ import annotations

__all__ = [
    "CorruptArtifactError",
    "DataFileError",
    "DivergenceError",
    "EmptyInputError",
    "FeatureCountError",
    "InvalidInputError",
    "InvalidParameterError",
    "LengthMismatchError",
    "MissingDependencyError",
    "ModelError",
    "ModelChangedError",
    "ModelExistsError",
    "ModelNotFoundError",
    "NonFiniteError",
    "NotANumberError",
    "NotFittedError",
    "OutOfRangeError",
    "StoreBusyError",
    "StoreError",
    "StoreUnavailableError",
    "UnknownCategoryError",
    "UnknownFeatureError",
    "UnknownLabelError",
    "UpdateRejectedError",
    "VersionNotFoundError",
]


class ModelError(Exception):
    """Base class: ``message`` says what was expected and what came."""

    code = "model_error"

    def __init__(self, message: str, *, field: str | None = None, row: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.row = row


class InvalidInputError(ModelError, ValueError):
    code = "invalid_input"


class EmptyInputError(InvalidInputError):
    code = "empty_input"


class FeatureCountError(InvalidInputError):
    code = "feature_count"


class UnknownFeatureError(InvalidInputError):
    code = "unknown_feature"


class LengthMismatchError(InvalidInputError):
    code = "length_mismatch"


class NonFiniteError(InvalidInputError):
    code = "non_finite"


class NotANumberError(InvalidInputError):
    code = "not_a_number"


class UnknownLabelError(InvalidInputError):
    code = "unknown_label"


class UnknownCategoryError(InvalidInputError):
    code = "unknown_category"


class InvalidParameterError(InvalidInputError):
    code = "invalid_parameter"


class OutOfRangeError(InvalidInputError):
    code = "out_of_range"


class DataFileError(InvalidInputError):
    code = "invalid_data_file"


class NotFittedError(ModelError):
    code = "not_fitted"


class DivergenceError(ModelError):
    code = "diverged"


class UpdateRejectedError(ModelError):
    """``details`` holds the figures behind the decision (the guard's verdict)."""

    code = "update_rejected"

    def __init__(self, message: str, *, details: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


class MissingDependencyError(ModelError):
    """A feature needs an optional extra; the message names the ``pip install`` that adds it."""

    code = "missing_dependency"


class StoreError(ModelError):
    code = "store_error"


class ModelNotFoundError(StoreError):
    code = "model_not_found"


class ModelExistsError(StoreError):
    code = "model_exists"


class VersionNotFoundError(StoreError):
    code = "version_not_found"


class CorruptArtifactError(StoreError):
    code = "corrupt_artifact"


class StoreBusyError(StoreError):
    code = "store_busy"


class StoreUnavailableError(StoreError):
    """The store's server is down or unreachable: retry later (nothing was acknowledged)."""

    code = "store_unavailable"


class ModelChangedError(StoreError):
    code = "model_changed"
