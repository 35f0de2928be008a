"""Data sets: loading (bundled, CSV, npz). Splits and fingerprints live in :mod:`model.splits`.

A :class:`Dataset` holds a float64 feature matrix and a label vector whose dtype is int64 when
every label is an integer and fixed-width unicode otherwise (never ``object``). Every problem with
a file is a :class:`~model.errors.DataFileError` whose message names the file and, where it
applies, the line and the column; its ``field`` is the column (or array) name, and its ``row``
the 1-based line number in a CSV file or the 0-based row of an npz array ``X``.

Example::

    >>> dataset = load_dataset("builtin:iris")
    >>> dataset.X.shape, dataset.classes.tolist()
    ((150, 4), ['setosa', 'versicolor', 'virginica'])
    >>> from model.splits import train_val_test_split
    >>> train, val, test = train_val_test_split(dataset.y, 0.1, 0.2, seed=0)
    >>> len(train), len(val), len(test)
    (105, 15, 30)
"""

from __future__ import annotations

import dataclasses
import os
import warnings
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import splits
from .errors import (
    DataFileError,
    EmptyInputError,
    FeatureCountError,
    InvalidInputError,
    InvalidParameterError,
    LengthMismatchError,
)
from .reader import PARQUET_SUFFIXES, file_errors, read_table
from .splits import fingerprint
from .validation import check_1d, check_2d, check_finite, first_duplicate, first_non_finite

__all__ = [
    "BUILTIN_DATASETS",
    "Dataset",
    "FilePath",
    "load_builtin",
    "load_csv",
    "load_dataset",
    "load_npz",
    "load_table",
]

FilePath = str | os.PathLike[str]

# Until 0.2 this module re-exported the split functions; they live in model.splits. Old
# imports keep working, with a DeprecationWarning (README, "Deprecations").
_MOVED_TO_SPLITS = ("stratified_kfold", "train_val_test_split")


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_SPLITS:
        warnings.warn(
            f"model.data.{name} is deprecated: import it from model.splits",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(splits, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# name -> (file in model/datasets/, label column)
_BUILTINS: dict[str, tuple[str, str]] = {
    "digits": ("digits.csv.gz", "digit"),
    "iris": ("iris.csv", "species"),
}
BUILTIN_DATASETS: tuple[str, ...] = tuple(sorted(_BUILTINS))
_BUILTIN_PREFIX = "builtin:"
_PACKAGE = __name__.rpartition(".")[0]
_NPZ_LABEL_NAME = "y"
# Class counts listed in full in an error message up to this many classes.


@dataclass(frozen=True, eq=False)
class Dataset:
    """Features and labels of one data set, read-only.

    ``X``: (n_samples, n_features) float64, all finite; ``y``: (n_samples,) int64 when every label
    is an integer, else fixed-width unicode (``<U..``); ``feature_names``: (n_features,) distinct
    names; ``label_name`` names the label column; ``source`` says where the data came from
    (``builtin:iris`` or the file path). The arrays are read-only views, so a dataset can be
    shared between threads. ``eq=False``: arrays have no single truth value; compare
    :func:`fingerprint` values instead.

    A table read with categorical columns or missing cells is *raw* (:attr:`is_raw`): the
    column of a categorical feature holds each row's index into ``categories[name]`` (the
    column's distinct values, sorted), and with ``missing`` true ``NaN`` marks a missing cell.
    :class:`~model.encoding.FeatureEncoder` learns its one-hot encoding and imputation on the
    training rows and turns it into a plain dataset (all-numeric, finite) for the estimator.

    >>> Dataset(np.zeros((2, 1)), np.array([0, 1]), ("x",), "label", "memory").n_samples
    2
    """

    X: NDArray[np.float64]
    y: NDArray[Any]
    feature_names: tuple[str, ...]
    label_name: str
    source: str
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    missing: bool = False

    def __post_init__(self) -> None:
        features = np.asarray(self.X)
        check_2d(features, "X", numeric=True)
        features = features.astype(np.float64, copy=False)
        if features.shape[0] == 0 or features.shape[1] == 0:
            raise EmptyInputError(
                f"X must have at least one row and one feature, got shape {features.shape}",
                field="X",
            )
        if self.missing:  # NaN marks a missing cell; an infinity is still an error
            bad = first_non_finite(np.where(np.isnan(features), 0.0, features))
            if bad is not None:
                check_finite(features[bad[0] : bad[0] + 1], "X")
        else:
            check_finite(features, "X")
        labels = check_1d(self.y, "y", allow_empty=True)
        if labels.shape[0] != features.shape[0]:
            raise LengthMismatchError(
                f"X and y must have the same number of rows, got {features.shape[0]} and "
                f"{labels.shape[0]}",
                field="y",
            )
        labels = _labels_from_array(labels, "y", InvalidInputError)
        names = tuple(self.feature_names)
        if len(names) != features.shape[1] or not all(isinstance(name, str) for name in names):
            raise FeatureCountError(
                f"feature_names must be {features.shape[1]} strings (one per column of X), "
                f"got {len(names)}",
                field="feature_names",
            )
        duplicate = first_duplicate(names)
        if duplicate is not None:
            raise InvalidInputError(
                f"feature_names must be distinct, got {duplicate!r} twice", field="feature_names"
            )
        unknown = [name for name in self.categories if name not in names]
        if unknown:
            raise InvalidInputError(
                f"categories: {unknown[0]!r} is not a feature name", field="categories"
            )
        object.__setattr__(self, "X", _read_only(features))
        object.__setattr__(self, "y", _read_only(labels))
        object.__setattr__(self, "feature_names", names)
        object.__setattr__(
            self, "categories", {name: tuple(self.categories[name]) for name in self.categories}
        )

    @property
    def is_raw(self) -> bool:
        """Whether the features need encoding (categorical columns or missing cells) before
        the estimator can use them."""
        return bool(self.categories) or (self.missing and bool(np.isnan(self.X).any()))

    @property
    def n_samples(self) -> int:
        """Number of rows."""
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        """Number of feature columns."""
        return int(self.X.shape[1])

    @property
    def classes(self) -> NDArray[Any]:
        """(n_classes,) the distinct labels, sorted."""
        return np.unique(self.y)

    def fingerprint(self) -> str:
        """``fingerprint(self.X, self.y)``."""
        return fingerprint(self.X, self.y)


# --- loading -----------------------------------------------------------------------------------


def load_dataset(
    spec: FilePath,
    label: str | None = None,
    features: Sequence[str] | None = None,
    *,
    categorical: Sequence[str] = (),
    missing: bool = False,
    progress: bool = False,
) -> Dataset:
    """Load ``builtin:iris``, ``builtin:digits``, or a ``.csv`` / ``.csv.gz`` / ``.parquet`` /
    ``.npz`` file.

    ``label`` names the label column and is required for CSV and Parquet files (for a builtin
    it defaults to the bundled label column; for npz it only names the ``y`` array).
    ``features`` selects and orders feature columns by name. ``categorical``, ``missing`` and
    ``progress`` are :func:`load_table`'s. Returns X: (n_samples, n_features), y: (n_samples,).

    >>> load_dataset("builtin:iris", features=["petal_width"]).X.shape
    (150, 1)
    """
    text = os.fspath(spec)
    if text.startswith(_BUILTIN_PREFIX):
        return _load_builtin(text[len(_BUILTIN_PREFIX) :], label, features)
    lowered = text.lower()
    if lowered.endswith((".csv", ".csv.gz", *PARQUET_SUFFIXES)):
        if label is None:
            kind = "CSV" if ".csv" in lowered else "Parquet"
            raise DataFileError(
                f"{text}: a label column is required for {kind} files, got none", field="label"
            )
        return load_table(
            text, label, features, categorical=categorical, missing=missing, progress=progress
        )
    if lowered.endswith(".npz"):
        dataset = load_npz(text, label_hint=label)
        return dataset if features is None else _select_features(dataset, features)
    raise DataFileError(
        f"unsupported data set {text!r}: expected "
        + ", ".join(f"'{_BUILTIN_PREFIX}{name}'" for name in BUILTIN_DATASETS)
        + " or a path ending in .csv, .csv.gz, .parquet or .npz"
    )


def load_builtin(name: str) -> Dataset:
    """Load a data set bundled with the package: ``"iris"`` or ``"digits"``.

    iris: X (150, 4), 3 classes named ``setosa``, ``versicolor``, ``virginica``;
    digits: X (1797, 64) pixel intensities 0-16, 10 classes ``0``-``9`` (int64 labels).

    >>> load_builtin("digits").X.shape
    (1797, 64)
    """
    return _load_builtin(name, None, None)


def load_csv(path: FilePath, label: str, features: Sequence[str] | None = None) -> Dataset:
    """Load an all-numeric CSV file (optionally gzip-compressed, ``.gz``) with a header row.

    Every column but ``label`` is a numeric feature, unless ``features`` names the columns to use
    (in that order); a text column or a missing cell is an error (:func:`load_table` reads
    those). Returns X: (n_samples, n_features) float64, y: (n_samples,). Blank lines are
    skipped; quoted fields may hold commas and newlines; names, numbers and labels are stripped
    of surrounding spaces.

    >>> load_csv(resources.files("model") / "datasets" / "iris.csv", "species").X.shape
    (150, 4)
    """
    return load_table(path, label, features, detect_categorical=False)


def load_table(
    path: FilePath,
    label: str,
    features: Sequence[str] | None = None,
    *,
    categorical: Sequence[str] = (),
    missing: bool = False,
    progress: bool = False,
    detect_categorical: bool = True,
) -> Dataset:
    """Load a table: CSV (``.csv``, ``.csv.gz``, header row) or Parquet (``.parquet``), read by
    pyarrow (:mod:`model.reader`).

    Every column but ``label`` is a feature, unless ``features`` names the columns to use (in
    that order). A feature is categorical when ``categorical`` names it or when none of its
    cells is a number (with ``detect_categorical``); a column mixing numbers and text is an
    error naming the first cell that is not a number. ``missing=True`` keeps empty and NaN
    cells as missing (``NaN`` in X); otherwise they are errors. ``progress`` writes what
    loads, and how far, to stderr.
    Returns X: (n_samples, n_features) float64 (a raw dataset, :attr:`Dataset.is_raw`, when
    it has categorical columns or missing cells).

    >>> load_table(resources.files("model") / "datasets" / "iris.csv", "species").X.shape
    (150, 4)
    """
    source = os.fspath(path)
    wanted = _check_feature_selection(features)
    unknown = [name for name in categorical if wanted is not None and name not in wanted]
    if unknown:
        raise InvalidParameterError(
            f"categorical: column {unknown[0]!r} is not among the selected features",
            field="categorical",
        )
    table = read_table(
        source,
        label,
        wanted,
        categorical=categorical,
        missing=missing,
        progress=progress,
        detect_categorical=detect_categorical,
    )
    return Dataset(
        X=table.X,
        y=_labels_from_text(table.y),
        feature_names=table.feature_names,
        label_name=table.label_name,
        source=source,
        categories=table.categories,
        missing=missing,
    )


def load_npz(path: FilePath, label_hint: str | None = None) -> Dataset:
    """Load an ``.npz`` archive with arrays ``X`` (2-D numeric) and ``y`` (1-D, same length).

    An optional ``feature_names`` array (1-D strings, one per column) names the features; without
    it they are ``feature_0``, ``feature_1``, ... ``label_hint`` becomes ``label_name`` (default
    ``"y"``). Pickled (object) arrays are never loaded. Returns X: (n_samples, n_features).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     np.savez(f"{folder}/data.npz", X=np.eye(2), y=np.array([0, 1]))
    ...     load_npz(f"{folder}/data.npz").feature_names
    ('feature_0', 'feature_1')
    """
    source = os.fspath(path)
    arrays = _read_npz(source)
    X = _npz_features(source, arrays["X"])
    labels = check_1d(
        arrays["y"], f"{source}: array 'y'", field="y", error=DataFileError, allow_empty=True
    )
    if labels.shape[0] != X.shape[0]:
        raise DataFileError(
            f"{source}: arrays 'X' and 'y' must have the same length, got {X.shape[0]} rows in "
            f"'X' and {labels.shape[0]} labels in 'y'",
            field="y",
        )
    y = _labels_from_array(labels, f"{source}: array 'y'", DataFileError)
    if "feature_names" in arrays:
        names = _npz_feature_names(source, arrays["feature_names"], X.shape[1])
    else:
        names = tuple(f"feature_{index}" for index in range(X.shape[1]))
    label_name = _NPZ_LABEL_NAME if label_hint is None else label_hint
    return Dataset(X=X, y=y, feature_names=names, label_name=label_name, source=source)


def _load_builtin(name: str, label: str | None, features: Sequence[str] | None) -> Dataset:
    if name not in _BUILTINS:
        raise DataFileError(
            f"unknown builtin data set {name!r}: expected one of "
            + ", ".join(repr(known) for known in BUILTIN_DATASETS)
        )
    file_name, default_label = _BUILTINS[name]
    resource = resources.files(_PACKAGE) / "datasets" / file_name
    with resources.as_file(resource) as path:
        dataset = load_csv(path, default_label if label is None else label, features)
    return dataclasses.replace(dataset, source=f"{_BUILTIN_PREFIX}{name}")


# --- feature selection ---------------------------------------------------------------------


def _check_feature_selection(features: Sequence[str] | None) -> list[str] | None:
    if features is None:
        return None
    if isinstance(features, str):
        raise InvalidParameterError(
            f"features must be a sequence of column names, got the string {features!r}",
            field="features",
        )
    wanted = list(features)
    if not wanted:
        raise InvalidParameterError(
            "features is empty; expected at least one column name", field="features"
        )
    duplicate = first_duplicate(wanted)
    if duplicate is not None:
        raise InvalidParameterError(
            f"features must be distinct, got {duplicate!r} twice", field="features"
        )
    return wanted


# --- npz -------------------------------------------------------------------------------------


def _read_npz(source: str) -> dict[str, NDArray[Any]]:
    arrays: dict[str, NDArray[Any]] = {}
    try:
        # Our own handle: np.load leaks the one it opens when the zip directory is corrupt.
        with file_errors(source), open(source, "rb") as handle:
            archive = np.load(handle, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise DataFileError(
                    f"{source}: expected an .npz archive (arrays X and y), got a single .npy array"
                )
            with archive:
                present = archive.files
                for key in ("X", "y"):
                    if key not in present:
                        raise DataFileError(
                            f"{source}: missing array {key!r}; the archive holds "
                            f"{sorted(present) or 'no arrays'}",
                            field=key,
                        )
                for key in ("X", "y", "feature_names"):
                    if key in present:
                        arrays[key] = _npz_member(source, archive, key)
    except DataFileError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as error:
        raise DataFileError(
            f"{source}: not a readable .npz archive (corrupt, truncated, or pickled data): {error}"
        ) from None
    return arrays


def _npz_member(source: str, archive: Any, key: str) -> NDArray[Any]:
    try:
        array: NDArray[Any] = archive[key]
    except ValueError as error:
        if "allow_pickle" in str(error) or "pickled" in str(error):
            raise DataFileError(
                f"{source}: array {key!r} holds pickled Python objects, which are never loaded; "
                "store numbers or fixed-width strings",
                field=key,
            ) from None
        raise
    return array


def _npz_features(source: str, features: NDArray[Any]) -> NDArray[np.float64]:
    name = f"{source}: array 'X'"
    check_2d(features, name, field="X", error=DataFileError, numeric=True)
    if features.shape[0] == 0 or features.shape[1] == 0:
        raise DataFileError(
            f"{name} must have at least one row and one column, got shape {features.shape}",
            field="X",
        )
    X = features.astype(np.float64)
    check_finite(X, name, field="X", error=DataFileError)
    return X


def _npz_feature_names(source: str, names: NDArray[Any], n_features: int) -> tuple[str, ...]:
    if names.ndim != 1 or names.dtype.kind not in "US" or names.shape[0] != n_features:
        raise DataFileError(
            f"{source}: array 'feature_names' must be 1-D strings, one per column of 'X' "
            f"({n_features}), got shape {names.shape} and dtype {names.dtype}",
            field="feature_names",
        )
    try:
        decoded = tuple(str(name) for name in names.astype(str).tolist())
    except UnicodeDecodeError:
        raise DataFileError(
            f"{source}: array 'feature_names' is not ASCII text", field="feature_names"
        ) from None
    duplicate = first_duplicate(decoded)
    if duplicate is not None:
        raise DataFileError(
            f"{source}: array 'feature_names' must be distinct, got {duplicate!r} twice",
            field="feature_names",
        )
    return decoded


def _select_features(dataset: Dataset, features: Sequence[str]) -> Dataset:
    wanted = _check_feature_selection(features)
    assert wanted is not None
    index = {name: position for position, name in enumerate(dataset.feature_names)}
    for name in wanted:
        if name not in index:
            raise DataFileError(
                f"{dataset.source}: feature {name!r} not found; available features: "
                + ", ".join(repr(known) for known in dataset.feature_names),
                field=name,
            )
    positions = [index[name] for name in wanted]
    return dataclasses.replace(dataset, X=dataset.X[:, positions], feature_names=tuple(wanted))


# --- labels ----------------------------------------------------------------------------------


def _labels_from_text(text: NDArray[np.str_]) -> NDArray[Any]:
    """int64 when every label is an integer written canonically (``7``, ``-3``; not ``07``,
    ``+7`` or ``7.0``, which would merge distinct labels), else compact ``<U..``."""
    try:
        integers = text.astype(np.int64)
    except (ValueError, OverflowError):
        integers = None
    if integers is not None and np.array_equal(integers.astype(str), text):
        return integers
    width = max(int(np.char.str_len(text).max(initial=1)), 1)
    return text.astype(f"<U{width}")


def _labels_from_array(
    labels: NDArray[Any], name: str, error: type[InvalidInputError]
) -> NDArray[Any]:
    """Labels as int64 or ``<U..``; otherwise ``error`` saying why, after ``name: ``."""
    kind = labels.dtype.kind
    if kind in "biu":
        if kind == "u" and labels.size and labels.max() > np.iinfo(np.int64).max:
            raise error(f"{name}: labels must fit in int64", field="y")
        return labels.astype(np.int64)
    if kind == "f":
        if not np.isfinite(labels).all() or not (labels == np.round(labels)).all():
            raise error(
                f"{name}: float labels must be whole numbers (class indices); use integers or "
                "strings",
                field="y",
            )
        return labels.astype(np.int64)
    if kind in "US":
        try:
            text = labels.astype(str)
        except UnicodeDecodeError:
            raise error(f"{name}: byte-string labels must be ASCII", field="y") from None
        return _labels_from_text(text)
    raise error(f"{name}: labels must be integers or strings, got dtype {labels.dtype}", field="y")


# --- helpers ---------------------------------------------------------------------------------


def _read_only(array: NDArray[Any]) -> NDArray[Any]:
    view = array.view()
    view.flags.writeable = False
    return view
