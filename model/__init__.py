"""softmax-serve's core: softmax regression in pure NumPy, its training and its artifact store.

Nothing here imports a web framework; the service calls this package.
"""

from __future__ import annotations

from .artifact import OnlineStats, VersionMeta
from .errors import (
    CorruptArtifactError,
    DivergenceError,
    InvalidInputError,
    ModelError,
    ModelNotFoundError,
    NotFittedError,
    StoreBusyError,
    StoreError,
    VersionNotFoundError,
)
from .repository import (
    LoadedModel,
    ModelRepository,
    UpdateResult,
    VersionDetail,
    VersionInfo,
    VersionPage,
)
from .softmax import SoftmaxRegression, StepReport
from .store import ArtifactStore, Head, LocalArtifactStore

__all__ = [
    "ArtifactStore",
    "CorruptArtifactError",
    "DivergenceError",
    "Head",
    "InvalidInputError",
    "LoadedModel",
    "LocalArtifactStore",
    "ModelError",
    "ModelNotFoundError",
    "ModelRepository",
    "NotFittedError",
    "OnlineStats",
    "SoftmaxRegression",
    "StepReport",
    "StoreBusyError",
    "StoreError",
    "UpdateResult",
    "VersionDetail",
    "VersionInfo",
    "VersionMeta",
    "VersionNotFoundError",
    "VersionPage",
]
