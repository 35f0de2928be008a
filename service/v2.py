"""The Open Inference Protocol (KServe V2) over a model: metadata, inference, training.

Each model has one input and two outputs (:data:`INPUT`, :data:`PROBABILITIES`,
:data:`LABEL`); training takes :data:`INPUT` and :data:`LABELS`. This module turns decoded
tensors (:mod:`service.tensors`) into the rows a :class:`~service.runtime.Runtime` scores or
learns from, and its scores into output tensors; the routes (:mod:`service.routes.v2`) only
read bodies and send answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model import LoadedModel
from model.errors import (
    FeatureCountError,
    InvalidParameterError,
    ModelError,
    UnknownLabelError,
)
from model.validation import check_matrix

from .body import parse_instances
from .contract import Limits
from .errors import ApiError, InvalidRequestError, TooManyRowsError
from .runtime import Scores
from .tensors import InferRequest, OutputTensor, RequestedOutput, Tensor

__all__ = [
    "EXTENSIONS",
    "INPUT",
    "LABEL",
    "LABELS",
    "PROBABILITIES",
    "SERVER_NAME",
    "TrainTensors",
    "infer_outputs",
    "model_metadata",
    "rows_of",
    "train_tensors",
]

SERVER_NAME = "softmax-serve"
INPUT = "input"  # [-1, n_features] FP64 (FP32 and integers are converted)
PROBABILITIES = "probabilities"  # [-1, n_classes] FP64, columns in the model's class order
LABEL = "label"  # [-1] BYTES: the most probable class of each row
LABELS = "label"  # training: [-1] BYTES labels, or integer class indices
OUTPUTS = (PROBABILITIES, LABEL)
# binary_tensor_data and classification: Triton's extensions; train: POST .../train (ours).
EXTENSIONS = ["binary_tensor_data", "classification", "train"]
_INDICES = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
_NUMBERS = ("FP16", "FP32", "FP64", *_INDICES)


def model_metadata(loaded: LoadedModel, versions: list[int]) -> dict[str, Any]:
    """``GET /v2/models/{name}``: the model's input and outputs, and its stored versions."""
    encoder = loaded.encoder
    width = len(encoder.names) if encoder is not None else loaded.n_features
    # The input's columns: the raw features for a model with an encoding (not its one-hot ones).
    names = encoder.names if encoder is not None else loaded.feature_names
    return {
        "name": loaded.name,
        "versions": [str(v) for v in versions],
        "platform": "softmax-serve",
        "inputs": [{"name": INPUT, "datatype": "FP64", "shape": [-1, width]}],
        "outputs": [
            {"name": PROBABILITIES, "datatype": "FP64", "shape": [-1, len(loaded.classes)]},
            {"name": LABEL, "datatype": "BYTES", "shape": [-1]},
        ],
        "parameters": {
            "version": loaded.version,
            "classes": loaded.classes,
            "feature_names": list(names) if names else None,
        },
    }


def _one(request: InferRequest, name: str, purpose: str) -> Tensor:
    found = [tensor for tensor in request.inputs if tensor.name == name]
    if not found:
        given = ", ".join(repr(t.name) for t in request.inputs)
        raise InvalidRequestError(
            f"inputs: expected a tensor named {name!r} ({purpose}), got {given}", field="inputs"
        )
    if len(found) > 1:
        raise InvalidRequestError(f"inputs: {name!r} is given twice", field="inputs")
    return found[0]


def _refuse_unknown_inputs(request: InferRequest, known: tuple[str, ...]) -> None:
    for tensor in request.inputs:
        if tensor.name not in known:
            raise InvalidRequestError(
                f"{tensor.where}: unknown input; this model takes "
                f"{', '.join(repr(n) for n in known)}",
                field="inputs",
            )


def rows_of(
    request: InferRequest, loaded: LoadedModel, limits: Limits, known: tuple[str, ...] = (INPUT,)
) -> NDArray[np.float64]:
    """The rows of the :data:`INPUT` tensor as validated float64 ``(n, d)`` for ``loaded``.

    ``d`` is the model's width: its features, or for a model with a feature encoding its raw
    features (numeric ones only: a tensor holds numbers; categorical columns need /predict).
    """
    _refuse_unknown_inputs(request, known)
    tensor = _one(request, INPUT, "the rows")
    if tensor.datatype not in _NUMBERS:
        raise InvalidRequestError(
            f"{tensor.where}.datatype: expected FP64 or FP32 (or an integer type), got "
            f"{tensor.datatype}",
            field="inputs",
        )
    encoder = loaded.encoder
    width = len(encoder.names) if encoder is not None else loaded.n_features
    categorical = [f.name for f in encoder.features if f.kind == "categorical"] if encoder else []
    if categorical:
        raise InvalidRequestError(
            f"{tensor.where}: model {loaded.name!r} has categorical features "
            f"({', '.join(categorical)}), which a numeric tensor cannot carry: send its rows to "
            f"POST /predict (of a service started with --model {loaded.name})",
            field="inputs",
        )
    if len(tensor.shape) != 2 or tensor.shape[1] != width:
        raise FeatureCountError(
            f"{tensor.where}.shape: expected [n, {width}] ({width} features), got "
            f"{list(tensor.shape)}",
            field="inputs",
        )
    n = tensor.shape[0]
    if n > limits.max_rows:
        raise TooManyRowsError(
            f"{tensor.where}: expected at most {limits.max_rows} rows (max_rows), got {n}",
            field="inputs",
        )
    values = tensor.values
    assert isinstance(values, np.ndarray)  # a number type, checked above
    X = values.reshape(tensor.shape)
    try:
        if encoder is not None:  # raw numbers through the model's encoding (imputation)
            # A tensor has no null: NaN is a missing value, as /predict's null is.
            cells = X.astype(object)
            cells[np.isnan(X.astype(np.float64, copy=False))] = None
            return parse_instances(
                cells.tolist(),
                loaded,
                limits.max_rows,
                may_hold_booleans=False,
                refuse_unknown_categories=limits.refuse_unknown_categories,
            )
        with np.errstate(over="ignore", invalid="ignore"):
            return check_matrix(X.astype(np.float64, copy=False), width)
    except ModelError as exc:  # no rows, a NaN: /predict's words, naming the tensor
        _name_the_tensor(exc, "instances", tensor.where)
        raise


def infer_outputs(
    request: InferRequest, scores: Scores, binary_default: bool
) -> list[OutputTensor]:
    """The outputs the request asks for (all when it names none), each as JSON or binary,
    with the classification extension's top-k strings where asked."""
    requested = request.outputs
    if requested is None:
        requested = [RequestedOutput(name, None, None) for name in OUTPUTS]
    outputs = []
    for item in requested:
        if item.name not in OUTPUTS:
            raise InvalidRequestError(
                f"outputs: unknown output {item.name!r}; this model has "
                f"{', '.join(repr(n) for n in OUTPUTS)}",
                field="outputs",
            )
        binary = binary_default if item.binary is None else item.binary
        if item.classification is not None:
            outputs.append(_classification(item, scores, binary))
        elif item.name == PROBABILITIES:
            probabilities = scores.probabilities
            outputs.append(
                OutputTensor(
                    item.name, "FP64", list(probabilities.shape), probabilities.ravel(), binary
                )
            )
        else:
            # No class yet (a model created with none): no prediction, and BYTES has no null.
            labels = [
                b"" if label is None else str(label).encode()
                for label in scores.predictions().tolist()
            ]
            outputs.append(OutputTensor(item.name, "BYTES", [len(labels)], labels, binary))
    return outputs


def _classification(item: RequestedOutput, scores: Scores, binary: bool) -> OutputTensor:
    """Top-k of each row as ``"score:index:label"``, most probable first (index: the class's
    column in ``probabilities``)."""
    probabilities = scores.probabilities
    n, k = probabilities.shape
    top = min(item.classification or 1, k)
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top]
    classes = [str(c) for c in scores.loaded.classes]
    values = [
        f"{float(probabilities[row, index])!r}:{index}:{classes[index]}".encode()
        for row in range(n)
        for index in order[row].tolist()
    ]
    return OutputTensor(item.name, "BYTES", [n, top], values, binary)


@dataclass(frozen=True)
class TrainTensors:
    """A V2 training request read against a model: rows, labels and /train's parameters."""

    X: NDArray[np.float64]
    labels: list[Any]
    parameters: dict[str, Any]
    labels_where: str  # how errors name the label tensor: "inputs[1] ('label')"

    def told_of_tensors(self, exc: ModelError | ApiError) -> None:
        """Make an error /train would give about its ``labels`` (an unknown label, a label of
        the wrong kind) name the label tensor instead, row for row."""
        _name_the_tensor(exc, "labels", self.labels_where)


def _name_the_tensor(exc: ModelError | ApiError, field: str, where: str) -> None:
    """Make an error the native routes give about their ``field`` (``instances``,
    ``labels``) name the tensor ``where`` instead: the same words, V2's field."""
    if exc.field == field and exc.message.startswith(field):
        exc.message = where + exc.message.removeprefix(field)
        exc.args, exc.field = (exc.message,), "inputs"


_TRAIN_PARAMETERS = ("learning_rate", "passes", "force")


def train_tensors(request: InferRequest, loaded: LoadedModel, limits: Limits) -> TrainTensors:
    """:data:`INPUT` rows and :data:`LABELS` for ``loaded``: BYTES labels (the class as text,
    e.g. ``"setosa"`` or ``"3"``) or integer class indices (the column of the class in
    ``probabilities``, 0..k-1). ``parameters`` keeps /train's own (learning_rate, passes,
    force), checked by its contract later; other request parameters are ignored."""
    X = rows_of(request, loaded, limits, known=(INPUT, LABELS))
    tensor = _one(request, LABELS, "one class label per row")
    n = X.shape[0]
    if tensor.shape not in ((n,), (n, 1)):  # a column of labels too, as clients often send
        raise InvalidRequestError(
            f"{tensor.where}.shape: expected [{n}] or [{n}, 1] (one label per row of "
            f"{INPUT!r}), got {list(tensor.shape)}",
            field="inputs",
        )
    classes = loaded.classes
    if tensor.datatype == "BYTES":
        assert isinstance(tensor.values, list)
        # A model with no class yet takes the kind of its first labels: BYTES ones are text.
        integers = bool(classes) and loaded.estimator.classes_.dtype.kind in "iu"
        labels = [
            _label(raw, position, tensor, integers) for position, raw in enumerate(tensor.values)
        ]
        return TrainTensors(X, labels, _train_parameters(request), tensor.where)
    if tensor.datatype not in _INDICES:
        raise InvalidRequestError(
            f"{tensor.where}.datatype: expected BYTES labels or integer class indices, got "
            f"{tensor.datatype}",
            field="inputs",
        )
    indices = np.asarray(tensor.values)
    bad = np.flatnonzero((indices < 0) | (indices >= len(classes)))
    if bad.size:
        row = int(bad[0])
        known = f"0..{len(classes) - 1}" if classes else "none: the model has no class yet"
        raise InvalidParameterError(
            f"{tensor.where}: expected class indices ({known}), got "
            f"{int(indices[row])} at element {row} (a new class is sent as a BYTES label)",
            field="inputs",
            row=row,
        )
    labels = [classes[i] for i in indices.tolist()]
    return TrainTensors(X, labels, _train_parameters(request), tensor.where)


# An integer as JSON writes one: what /train's JSON labels are for an integer-class model.
_INTEGER_TEXT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_INT64 = np.iinfo(np.int64)


def _label(raw: bytes, position: int, tensor: Tensor, integers: bool) -> Any:
    """One BYTES training label: its text, or for a model whose classes are integers the
    integer it spells (``b"7"`` → 7), as /train takes JSON labels; an unknown one is left for
    the model to add (``allow_new_classes``) or refuse."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise InvalidRequestError(
            f"{tensor.where}: expected UTF-8 text, got other bytes at element {position}",
            field="inputs",
            row=position,
        ) from None
    if not text:  # as POST /models refuses it; and "" is the label of no prediction
        raise UnknownLabelError(
            f"{tensor.where}: expected a non-empty label, got '' at element {position}",
            field="inputs",
            row=position,
        )
    if not integers:
        return text
    if (
        len(text) > 20  # int64's widest, and int() of a long text costs
        or _INTEGER_TEXT.fullmatch(text) is None
        or not _INT64.min <= int(text) <= _INT64.max
    ):
        raise UnknownLabelError(
            f"{tensor.where}: expected integer labels written in decimal (the model's classes "
            f"are integers, e.g. '7'), got {text[:40]!r} at element {position}",
            field="inputs",
            row=position,
        )
    return int(text)


def _train_parameters(request: InferRequest) -> dict[str, Any]:
    return {k: v for k, v in request.parameters.items() if k in _TRAIN_PARAMETERS}
