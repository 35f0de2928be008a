"""New classes, online: which labels of a minibatch are new, and the model's arrays grown by them.

A model that allows new classes (``allow_new_classes``) meets a label outside its classes by
adding a class: one new column of weights and one new bias entry, inserted where the label
falls in the sorted class list (the classes stay sorted, as every model's are). The new column
starts at zero, so the class's score is its bias alone until it has learnt; its bias starts at
the mean of the other classes' biases (0 for a model with none), so that at the centre of the
data (standardized rows near 0, where every class scores its bias) the new class is as likely
as an average one: neither ignored nor forced on every row, and the first rows of the class
move it from there. Momentum buffers get zero columns. Everything here is a pure function of
its inputs, so a replay grows a model exactly as its writer did.

Labels keep the classes' kind (integers or strings); a model created with no classes takes
the kind of the first labels it meets.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from .errors import UnknownLabelError
from .maths import Index
from .optimizer import TrainState
from .validation import describe_value

__all__ = ["MAX_CLASSES", "grown_classes", "grown_state", "new_labels", "positions"]

MAX_CLASSES = 10_000  # a model never grows beyond this many classes (weights d x k)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # integer classes are stored as int64


def new_labels(y: Any, classes: NDArray[Any]) -> NDArray[Any]:
    """The sorted distinct labels of ``y: (m,)`` that are not among ``classes: (k,)``
    (sorted). Raises :class:`UnknownLabelError` for a label of another kind than the classes'
    (a string for integer classes, a boolean anywhere) or for an empty string, naming its
    row."""
    if isinstance(y, np.ndarray) and y.ndim == 1 and y.shape[0]:
        fast = _known_kind_array(y, classes)  # an array of the classes' kind: no row to check
        if fast is not None:
            return _new_among(fast, classes)
    values = list(y) if not isinstance(y, np.ndarray) else y.tolist()
    if isinstance(y, (str, bytes)) or not values:
        return classes[:0]
    kind = classes.dtype.kind if classes.shape[0] else _kind_of(values[0], 0)
    for row, value in enumerate(values):
        if _kind_of(value, row) != kind:
            expected = "integers" if kind in "iu" else "strings"
            raise UnknownLabelError(
                f"labels: expected {expected} like the model's classes, got "
                f"{describe_value(value)} at row {row}",
                field="labels",
                row=row,
            )
    # A new class's name is never empty (POST /models agrees; V2 answers "" for no class).
    if kind not in "iu" and "" in values and "" not in classes.tolist():
        row = values.index("")
        raise UnknownLabelError(
            f"labels: expected a non-empty string, got '' at row {row}", field="labels", row=row
        )
    return _new_among(np.asarray(values, dtype=np.int64 if kind in "iu" else None), classes)


def _known_kind_array(y: NDArray[Any], classes: NDArray[Any]) -> NDArray[Any] | None:
    """``y`` as labels when its dtype alone shows every value is valid for ``classes``:
    integers for integer classes (or none yet), non-empty strings for string classes."""
    kind = classes.dtype.kind if classes.shape[0] else y.dtype.kind
    if (y.dtype.kind == "i" or (y.dtype.kind == "u" and y.dtype.itemsize < 8)) and kind in "iu":
        return y.astype(np.int64, copy=False)  # exact: no value out of int64's range
    if y.dtype.kind == "U" and kind == "U" and not (y == "").any():
        return y
    return None


def _new_among(labels: NDArray[Any], classes: NDArray[Any]) -> NDArray[Any]:
    if not classes.shape[0]:
        return np.unique(labels)
    # The classes are sorted: one binary search per label finds the new ones.
    where = np.minimum(np.searchsorted(classes, labels), classes.shape[0] - 1)
    new = classes[where] != labels
    return np.unique(labels[new]) if new.any() else classes[:0]


def _kind_of(value: Any, row: int) -> str:
    if isinstance(value, bool | np.bool_):
        raise UnknownLabelError(
            f"labels: expected an integer or a string, got {describe_value(value)} at row {row}",
            field="labels",
            row=row,
        )
    if isinstance(value, int | np.integer):
        if not INT64_MIN <= value <= INT64_MAX:
            raise UnknownLabelError(
                f"labels: integer {value} at row {row} is out of range (integer classes are "
                "64-bit: -2**63 to 2**63 - 1)",
                field="labels",
                row=row,
            )
        return "i"
    if isinstance(value, str):
        return "U"
    raise UnknownLabelError(
        f"labels: expected an integer or a string, got {describe_value(value)} at row {row}",
        field="labels",
        row=row,
    )


def grown_classes(classes: NDArray[Any], added: NDArray[Any]) -> NDArray[Any]:
    """``classes`` with ``added`` merged in, sorted; refused beyond :data:`MAX_CLASSES`."""
    if classes.shape[0] + added.shape[0] > MAX_CLASSES:
        raise UnknownLabelError(
            f"labels: adding {added.shape[0]} class(es) would give the model "
            f"{classes.shape[0] + added.shape[0]} classes; at most {MAX_CLASSES} are allowed",
            field="labels",
        )
    if not classes.shape[0]:
        return added
    merged: NDArray[Any] = np.union1d(classes, added)
    if merged.dtype.kind == "u":
        merged = merged.astype(np.int64)
    return merged


def positions(old: NDArray[Any], new: NDArray[Any]) -> Index:
    """Where each of the ``old`` classes sits in ``new`` (both sorted, ``old`` within ``new``):
    the map of an old class index to its new one."""
    found: Index = np.searchsorted(new, old).astype(np.intp)
    return found


def grown_state(state: TrainState, old: NDArray[Any], new: NDArray[Any]) -> TrainState:
    """``state`` with a column per class of ``new`` not in ``old``: zero weights and momentum,
    the bias the mean of the existing ones (0 if none)."""
    d, k = state.weights.shape[0], new.shape[0]
    where = positions(old, new)
    start = float(state.bias.mean()) if state.bias.shape[0] else 0.0

    def spread(matrix: NDArray[np.float64] | None, fill: float) -> NDArray[np.float64] | None:
        if matrix is None:
            return None
        shape = (d, k) if matrix.ndim == 2 else (k,)
        out = np.full(shape, fill)
        out[..., where] = matrix
        return out

    weights, bias = spread(state.weights, 0.0), spread(state.bias, start)
    assert weights is not None and bias is not None
    return TrainState(
        weights,
        bias,
        spread(state.velocity_weights, 0.0),
        spread(state.velocity_bias, 0.0),
        state.step,
    )
