"""Input checks for the public entry points; messages say what was expected and what came.

Private helpers downstream trust what these functions return.
"""

from __future__ import annotations

from collections.abc import Sequence, Sized
from typing import Any, NoReturn

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import (
    EmptyInputError,
    FeatureCountError,
    InvalidInputError,
    LengthMismatchError,
    NonFiniteError,
    NotANumberError,
    UnknownLabelError,
)
from .maths import Float, Index

__all__ = [
    "check_1d",
    "check_2d",
    "check_finite",
    "check_labels",
    "check_matrix",
    "check_same_length",
    "describe_value",
    "first_non_finite",
]


def describe_value(value: Any) -> str:
    """A short, safe description of a rejected value for an error message."""
    kind = {bool: "a boolean", str: "a string", type(None): "null"}.get(type(value))
    text = repr(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"{text} ({kind})" if kind and value is not None else (kind or text)


def first_non_finite(arr: NDArray[Any]) -> tuple[int, int] | None:
    """``(row, column)`` of the first NaN or infinity of a 2-D array, or None."""
    finite = np.isfinite(arr)
    if finite.all():
        return None
    row, column = (int(v) for v in np.argwhere(~finite)[0])
    return row, column


def check_2d(
    array: NDArray[Any],
    name: str,
    *,
    axes: str = "n_samples, n_features",
    field: str | None = None,
    error: type[InvalidInputError] = InvalidInputError,
    numeric: bool = False,
) -> None:
    """Refuse (with ``error``) an array that is not 2-D ``(axes)`` or, if ``numeric``, holds
    no numbers. ``name`` starts the message; ``field`` defaults to it."""
    if array.ndim != 2:
        raise error(f"{name} must be 2-D ({axes}), got shape {array.shape}", field=field or name)
    if numeric and array.dtype.kind not in "biuf":
        raise error(f"{name} must be numeric, got dtype {array.dtype}", field=field or name)


def check_finite(
    array: NDArray[Any],
    name: str,
    *,
    field: str | None = None,
    error: type[InvalidInputError] = NonFiniteError,
) -> None:
    """Refuse (with ``error``, naming the row and column) a 2-D array holding NaN or ±inf."""
    if (bad := first_non_finite(array)) is not None:
        row, column = bad
        raise error(
            f"{name} must be finite, got {array[row, column]} at row {row}, column {column}",
            field=field or name,
            row=row,
        )


def check_1d(
    values: Any,
    name: str,
    *,
    field: str | None = None,
    error: type[InvalidInputError] = InvalidInputError,
    allow_empty: bool = False,
) -> NDArray[Any]:
    """``values`` as a 1-D ``(n_samples,)`` array of labels; refused with ``error`` when not
    1-D, and with EmptyInputError when empty unless ``allow_empty``."""
    labels = np.asarray(values)
    if labels.ndim != 1:
        raise error(
            f"{name} must be 1-D (n_samples,), got shape {labels.shape}", field=field or name
        )
    if not allow_empty and labels.shape[0] == 0:
        raise EmptyInputError(f"{name} is empty; expected at least one label", field=field or name)
    return labels


def _first_bad_cell(rows: Any) -> tuple[int, int, Any] | None:
    """Locate the first cell that is not a real number (slow path, only after a failure)."""
    for i, row in enumerate(rows):
        if not isinstance(row, (list, tuple, np.ndarray)):
            return i, -1, row
        for j, value in enumerate(row):
            if isinstance(value, (bool, np.bool_)) or not isinstance(
                value, (int, float, np.integer, np.floating)
            ):
                return i, j, value
    return None


def _as_float64(X: ArrayLike, n_features: int | None, field: str) -> NDArray[Any]:
    """``X`` converted to float64 (any shape), refusing what is not made of real numbers."""
    if isinstance(X, np.ndarray):
        if X.dtype == np.float64:
            return X
        if X.dtype.kind in "iuf":
            return X.astype(np.float64)
        if X.dtype.kind == "b":
            raise NotANumberError(f"{field}: expected numbers, got booleans", field=field)
        raise NotANumberError(
            f"{field}: expected numbers, got an array of dtype {X.dtype}", field=field
        )
    bad = _first_bad_cell(X) if isinstance(X, (list, tuple)) else None
    if bad is not None:
        row, column, value = bad
        if column < 0:
            raise NotANumberError(
                f"{field}: expected each row to be a list of numbers, "
                f"got {describe_value(value)} at row {row}",
                field=field,
                row=row,
            )
        raise NotANumberError(
            f"{field}: expected a number at row {row}, column {column}, "
            f"got {describe_value(value)}",
            field=field,
            row=row,
        )
    try:
        return np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        # Ragged rows: name the first row whose length differs from what is expected.
        rows: Any = X if isinstance(X, (list, tuple)) else []
        width = n_features if n_features is not None else len(rows[0]) if rows else 0
        check_row_widths(rows, width, field)
        raise FeatureCountError(
            f"{field}: expected a rectangular list of rows of numbers ({exc})", field=field
        ) from None


def check_row_widths(rows: Sequence[Sized], width: int, field: str) -> None:
    """Raise :class:`FeatureCountError` naming the first row that is not ``width`` long."""
    for row, values in enumerate(rows):
        if len(values) != width:
            raise FeatureCountError(
                f"{field}: expected {width} features, got {len(values)} (row {row})",
                field=field,
                row=row,
            )


def first_duplicate(names: Sequence[str]) -> str | None:
    """The first name seen twice in ``names``, or None."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


def check_matrix(X: ArrayLike, n_features: int | None = None, *, field: str = "instances") -> Float:
    """Return ``X`` as a C-contiguous float64 ``(n_samples, n_features)`` array.

    Refuses (with the row and column where it applies): booleans, strings and nulls where
    numbers belong, ragged or non-2-D input, no rows, the wrong number of features and
    non-finite values. A float64 array that passes is returned as is, not copied.
    """
    arr = _as_float64(X, n_features, field)
    if arr.ndim == 1 and arr.shape[0] == 0:  # ``[]``: no rows at all, not a shape problem
        raise EmptyInputError(f"{field}: expected at least one row, got none", field=field)
    if arr.ndim != 2:
        raise FeatureCountError(
            f"{field}: expected a 2-D array (rows of features), got {arr.ndim} dimension(s)",
            field=field,
        )
    if arr.shape[0] == 0:
        raise EmptyInputError(f"{field}: expected at least one row, got none", field=field)
    if n_features is not None and arr.shape[1] != n_features:
        raise FeatureCountError(
            f"{field}: expected {n_features} features, got {arr.shape[1]} (row 0)",
            field=field,
            row=0,
        )
    if arr.shape[1] == 0:
        raise EmptyInputError(f"{field}: expected at least one feature, got none", field=field)
    with np.errstate(over="ignore", invalid="ignore"):  # huge finite values may overflow
        total = arr.sum()
    if not np.isfinite(total) and (cell := first_non_finite(arr)) is not None:
        row, column = cell
        raise NonFiniteError(
            f"{field}: expected finite numbers, got {float(arr[row, column])!r} "
            f"at row {row}, column {column}",
            field=field,
            row=row,
        )
    return np.ascontiguousarray(arr)


def check_same_length(n_rows: int, labels: Sized, *, field: str = "labels") -> None:
    """Instances and labels must pair up one to one."""
    if len(labels) != n_rows:
        raise LengthMismatchError(
            f"{field}: expected {n_rows} labels (one per instance), got {len(labels)}",
            field=field,
        )


def check_labels(y: ArrayLike | Sequence[Any], classes: NDArray[Any]) -> Index:
    """Map labels to class indices. ``classes: (k,)`` sorted; returns ``(m,)`` intp.

    Integer classes accept integers only, string classes strings only (a boolean is neither).
    """
    if isinstance(y, (str, bytes)):
        raise InvalidInputError(
            f"labels: expected a list of labels, got {describe_value(y)}", field="labels"
        )
    # An object array (e.g. from pandas) takes the list path, which checks each value's type.
    values: Any = y if isinstance(y, np.ndarray) and y.dtype != object else list(y)  # type: ignore[arg-type]  # a scalar fails len() below with a clear error
    if len(values) == 0:
        raise EmptyInputError("labels: expected at least one label, got none", field="labels")
    if not classes.shape[0]:  # a model created with no classes (model.growth)
        raise UnknownLabelError(
            f"labels: the model has no classes yet, got {values[0]!r} at row 0 (a model that "
            "allows new classes adds it)",
            field="labels",
            row=0,
        )
    want_int = classes.dtype.kind in "iu"
    arr = _label_array(values, classes, want_int)
    if arr is None:
        _refuse_label_type(values, classes, want_int)
    index = np.searchsorted(classes, arr)
    clipped = np.minimum(index, classes.shape[0] - 1)
    known = classes[clipped] == arr
    if not known.all():
        row = int(np.argmin(known))
        raise UnknownLabelError(
            f"labels: expected one of the classes ({_preview(classes)}), "
            f"got {arr[row].item()!r} at row {row}",
            field="labels",
            row=row,
        )
    result: Index = clipped.astype(np.intp, copy=False)
    return result


def _label_array(values: Any, classes: NDArray[Any], want_int: bool) -> NDArray[Any] | None:
    """``values`` as an array of the classes' kind, or None if a value has the wrong type."""
    if isinstance(values, np.ndarray):
        return values if values.dtype.kind in ("iu" if want_int else "U") else None
    # The types seen, first (at C speed): plain ints or plain strs need no more looking.
    types = set(map(type, values))
    if want_int:
        ok_kind = types <= _INT or all(type(v) is int or isinstance(v, np.integer) for v in values)
    else:
        ok_kind = types <= _STR or all(isinstance(v, str) for v in values)
        # NumPy's fixed-width strings drop trailing NULs: "a\0" would pass as "a".
        nul = (
            next((i for i, v in enumerate(values) if "\x00" in v), None)
            if ok_kind and "\x00" in "".join(values)
            else None
        )
        if nul is not None:
            raise UnknownLabelError(
                f"labels: expected one of the classes ({_preview(classes)}), "
                f"got {values[nul]!r} (it contains a NUL character) at row {nul}",
                field="labels",
                row=nul,
            )
    if not ok_kind:
        return None
    found = np.asarray(values)
    if want_int and found.dtype.kind not in "i":  # object or uint64: beyond int64's range
        row = next(i for i, v in enumerate(values) if not -(2**63) <= v < 2**63)
        raise UnknownLabelError(
            f"labels: expected one of the classes ({_preview(classes)}), got {values[row]!r} "
            f"at row {row} (out of the 64-bit range)",
            field="labels",
            row=row,
        )
    return found


def _refuse_label_type(values: Any, classes: NDArray[Any], want_int: bool) -> NoReturn:
    """Raise for the first value whose type is not the classes' kind."""
    expected = "integers" if want_int else "strings"
    for row, value in enumerate(values):
        good = (
            (type(value) is int or isinstance(value, np.integer))
            if want_int
            else isinstance(value, (str, np.str_))
        )
        if not good:
            raise UnknownLabelError(
                f"labels: expected one of the classes ({expected}: {_preview(classes)}), "
                f"got {describe_value(value)} at row {row}",
                field="labels",
                row=row,
            )
    raise AssertionError("unreachable")  # pragma: no cover


_INT: frozenset[type] = frozenset({int})
_STR: frozenset[type] = frozenset({str})


def _preview(classes: NDArray[Any], limit: int = 12) -> str:
    items = [repr(c.item()) for c in classes[:limit]]
    return ", ".join(items) + (", ..." if classes.shape[0] > limit else "")
