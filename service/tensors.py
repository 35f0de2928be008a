"""Open Inference Protocol (KServe V2) tensors: request bodies in, response bodies out.

A request body is a JSON object, optionally followed by binary tensor data (Triton's binary
tensor data extension): ``Inference-Header-Content-Length`` gives the JSON's length, each
binary input says its ``binary_data_size``, and the data follow the JSON in the order of the
inputs. Binary data are little-endian, row major; a BYTES element is a 4-byte little-endian
length and that many bytes. Outputs go back as JSON ``data`` or, when asked for
(``binary_data`` on an output, ``binary_data_output`` on the request), the same way.

Nothing here knows a model: :mod:`service.v2` checks tensors against one. Every refusal names
the tensor (``inputs[0]``) and what was expected.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from math import prod
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from model.errors import NotANumberError
from model.validation import describe_value

from .body import may_hold_booleans
from .errors import BadRequestError, InvalidJsonError, InvalidRequestError
from .v2_schemas import V2InferRequest, V2RequestInput, V2RequestOutput

__all__ = [
    "DATATYPES",
    "InferRequest",
    "OutputTensor",
    "RequestedOutput",
    "Tensor",
    "decode_request",
    "encode_bytes",
    "encode_response",
]

# The protocol's datatypes and their NumPy types (little-endian); BYTES is handled apart.
DATATYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(code)
    for name, code in {
        "BOOL": "?",
        "UINT8": "<u1",
        "UINT16": "<u2",
        "UINT32": "<u4",
        "UINT64": "<u8",
        "INT8": "<i1",
        "INT16": "<i2",
        "INT32": "<i4",
        "INT64": "<i8",
        "FP16": "<f2",
        "FP32": "<f4",
        "FP64": "<f8",
    }.items()
}
# Each object's fields, from the models the OpenAPI document shows.
_REQUEST_FIELDS = tuple(V2InferRequest.model_fields)
_INPUT_FIELDS = tuple(V2RequestInput.model_fields)
_OUTPUT_FIELDS = tuple(V2RequestOutput.model_fields)
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class Tensor:
    """One input: ``values`` has ``shape`` (numbers as their NumPy type; BYTES as a list of
    ``bytes``, flat)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    values: NDArray[Any] | list[bytes]
    where: str  # how errors name it: "inputs[0] ('input')"


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None  # None: as the request's binary_data_output says
    classification: int | None  # top-k as "score:index:label" strings


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    parameters: dict[str, Any]
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None  # None: every output
    binary_output: bool


@dataclass
class OutputTensor:
    """One output to send: numbers (``values``: an array of its datatype) or BYTES
    (``values``: a list of ``bytes``)."""

    name: str
    datatype: str
    shape: list[int]
    values: NDArray[Any] | list[bytes]
    binary: bool
    parameters: dict[str, Any] = field(default_factory=dict)


def _object(value: Any, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequestError(f"{where}: expected a JSON object, got {describe_value(value)}")
    for key in value:
        if key not in allowed:
            raise InvalidRequestError(
                f"{where}: unknown field {key!r}; expected {', '.join(allowed)}", field=key
            )
    return value


def _named(
    value: Any, where: str, allowed: tuple[str, ...], field: str
) -> tuple[dict[str, Any], str]:
    """A tensor's object (input or requested output) and its name."""
    item = _object(value, where, allowed)
    name = item.get("name")
    if not isinstance(name, str):
        raise InvalidRequestError(
            f"{where}.name: expected a string, got {describe_value(name)}", field=field
        )
    return item, name


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequestError(
            f"{where}.parameters: expected a JSON object, got {describe_value(value)}",
            field="parameters",
        )
    return value


def _flag(parameters: dict[str, Any], name: str, where: str) -> bool | None:
    value = parameters.get(name)
    if value is not None and not isinstance(value, bool):
        raise InvalidRequestError(
            f"{where}.parameters.{name}: expected true or false, got {describe_value(value)}",
            field=name,
        )
    return value


def decode_request(body: bytes, header_length: str | None) -> InferRequest:
    """Parse an inference (or training) request body.

    ``header_length``: the ``Inference-Header-Content-Length`` header (None: the whole body
    is JSON). Raises BadRequestError for a malformed frame (binary data shorter or longer than
    the inputs declare), InvalidJsonError, InvalidRequestError for a misshapen request.
    """
    if header_length is None:
        json_length = len(body)
    else:
        try:
            json_length = int(header_length)
        except ValueError:
            json_length = -1
        if not 0 <= json_length <= len(body):
            raise BadRequestError(
                f"Inference-Header-Content-Length: expected a length 0..{len(body)} (the body's "
                f"size), got {header_length!r}"
            )
    header = body[:json_length]
    try:
        data = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        hint = ""
        if header_length is None and b"binary_data_size" in header:
            hint = " (binary data after the JSON need the Inference-Header-Content-Length header)"
        raise InvalidJsonError(f"request JSON is not valid: {exc}{hint}") from None
    request = _object(data, "request", _REQUEST_FIELDS)
    parameters = _parameters(request.get("parameters"), "request")
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidRequestError(
            f"id: expected a string, got {describe_value(request_id)}", field="id"
        )
    raw_inputs = request.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidRequestError(
            f"inputs: expected a non-empty list of tensors, got {describe_value(raw_inputs)}",
            field="inputs",
        )
    binary = memoryview(body)[json_length:]
    offset = 0
    strict = may_hold_booleans(header)
    inputs = []
    for index, raw in enumerate(raw_inputs):
        tensor, used = _input(raw, index, binary[offset:], strict)
        inputs.append(tensor)
        offset += used
    if offset != len(binary):
        raise BadRequestError(
            f"binary data: the inputs declare {offset} bytes (binary_data_size) after the "
            f"JSON, the body holds {len(binary)}"
        )
    return InferRequest(
        request_id,
        parameters,
        inputs,
        _outputs(request.get("outputs")),
        bool(_flag(parameters, "binary_data_output", "request")),
    )


def _input(raw: Any, index: int, binary: memoryview, strict: bool) -> tuple[Tensor, int]:
    """One input tensor, and how many bytes of ``binary`` it took."""
    where = f"inputs[{index}]"
    item, name = _named(raw, where, _INPUT_FIELDS, "inputs")
    where = f"{where} ({name!r})"
    shape = item.get("shape")
    if not (
        isinstance(shape, list) and all(type(n) is int and 0 <= n < 2**31 for n in shape)  # noqa: E721  bools are ints
    ):
        raise InvalidRequestError(
            f"{where}.shape: expected a list of non-negative integers, got {describe_value(shape)}",
            field="inputs",
        )
    datatype = item.get("datatype")
    if not isinstance(datatype, str) or (datatype != "BYTES" and datatype not in DATATYPES):
        raise InvalidRequestError(
            f"{where}.datatype: expected one of {', '.join([*DATATYPES, 'BYTES'])}, got "
            f"{describe_value(datatype)}",
            field="inputs",
        )
    count = prod(shape)
    size = _parameters(item.get("parameters"), where).get("binary_data_size")
    has_data = "data" in item
    if size is not None:
        if type(size) is not int or size < 0:
            raise InvalidRequestError(
                f"{where}.parameters.binary_data_size: expected a non-negative integer, got "
                f"{describe_value(size)}",
                field="inputs",
            )
        if has_data:
            raise InvalidRequestError(
                f"{where}: give either data or binary_data_size, not both", field="inputs"
            )
        if size > len(binary):
            raise BadRequestError(
                f"{where}: binary_data_size is {size} bytes, the body holds only "
                f"{len(binary)} after the JSON and the inputs before it"
            )
        values = _from_binary(binary[:size], datatype, count, where)
        return Tensor(name, datatype, tuple(shape), values, where), size
    if not has_data:
        raise InvalidRequestError(
            f"{where}: expected data (or binary_data_size and binary data)", field="inputs"
        )
    values = _from_json(item["data"], datatype, count, where, strict)
    return Tensor(name, datatype, tuple(shape), values, where), 0


def _from_binary(
    data: memoryview, datatype: str, count: int, where: str
) -> NDArray[Any] | list[bytes]:
    if datatype == "BYTES":
        elements = decode_bytes(data, where)
        if len(elements) != count:
            raise InvalidRequestError(
                f"{where}: shape holds {count} elements, the binary data {len(elements)}",
                field="inputs",
            )
        return elements
    dtype = DATATYPES[datatype]
    if len(data) != count * dtype.itemsize:
        raise InvalidRequestError(
            f"{where}: shape and {datatype} make {count * dtype.itemsize} bytes, "
            f"binary_data_size is {len(data)}",
            field="inputs",
        )
    return np.frombuffer(data, dtype=dtype)


def _flatten(data: Any) -> list[Any]:
    """JSON tensor data, flat or nested (row major), as one flat list."""
    if not any(isinstance(item, list) for item in data):
        return list(data)
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _from_json(
    data: Any, datatype: str, count: int, where: str, strict: bool
) -> NDArray[Any] | list[bytes]:
    if not isinstance(data, list):
        raise InvalidRequestError(
            f"{where}.data: expected a list, got {describe_value(data)}", field="inputs"
        )
    if not strict and datatype not in ("BYTES", "BOOL"):
        # The fast conversion: nested or flat, regular, numbers only (no boolean can be in
        # the body); anything else goes the precise way below.
        try:
            fast = np.array(data)
        except (ValueError, OverflowError):
            fast = None
        if fast is not None and fast.dtype.kind in "iuf" and fast.size == count:
            return _converted(fast.ravel(), datatype, where)
    flat = _flatten(data)
    if len(flat) != count:
        raise InvalidRequestError(
            f"{where}: shape holds {count} elements, data {len(flat)}", field="inputs"
        )
    if datatype == "BYTES":
        for position, value in enumerate(flat):
            if not isinstance(value, str):
                raise InvalidRequestError(
                    f"{where}.data: expected strings (BYTES), got {describe_value(value)} at "
                    f"element {position}",
                    field="inputs",
                )
        return [value.encode() for value in flat]
    if datatype == "BOOL":
        if not all(isinstance(value, bool) for value in flat):
            raise InvalidRequestError(f"{where}.data: expected true or false", field="inputs")
        return np.array(flat, dtype=bool)
    # A boolean is never taken for a number; the fast conversion runs when none can be there.
    if strict:
        for position, value in enumerate(flat):
            if isinstance(value, bool) or not isinstance(value, int | float):
                _not_a_number(where, datatype, value, position)
    try:
        array = np.array(flat)
    except (ValueError, OverflowError):
        array = np.array([], dtype=object)
    if count and array.dtype.kind not in "iuf":
        position = next(
            i for i, v in enumerate(flat) if isinstance(v, bool) or not isinstance(v, int | float)
        )
        _not_a_number(where, datatype, flat[position], position)
    return _converted(array, datatype, where)


def _converted(array: NDArray[Any], datatype: str, where: str) -> NDArray[Any]:
    """JSON numbers (``array``, flat) as ``datatype``; a value the type cannot hold (a
    fraction for an integer type, one out of its range) is refused, never wrapped or
    rounded to infinity."""
    dtype = DATATYPES[datatype]
    if dtype.kind in "iu" and array.size:
        if array.dtype.kind == "f":
            _refuse_first(array != np.trunc(array), array, where, f"integers ({datatype})")
        info = np.iinfo(dtype)
        _refuse_first(
            (array < info.min) | (array > info.max),
            array,
            where,
            f"numbers in {datatype}'s range {info.min}..{info.max}",
        )
    with np.errstate(over="ignore"):
        converted = array.astype(dtype, copy=False)
    if dtype.kind == "f" and dtype.itemsize < 8 and array.size:
        _refuse_first(
            np.isinf(converted) & ~np.isinf(array), array, where, f"numbers in {datatype}'s range"
        )
    return converted


def _refuse_first(bad: NDArray[np.bool_], array: NDArray[Any], where: str, expected: str) -> None:
    if bad.any():
        position = int(np.argmax(bad))
        raise InvalidRequestError(
            f"{where}.data: expected {expected}, got {array[position].item()!r} at element "
            f"{position}",
            field="inputs",
        )


def _not_a_number(where: str, datatype: str, value: Any, position: int) -> None:
    raise NotANumberError(
        f"{where}.data: expected numbers ({datatype}), got {describe_value(value)} at element "
        f"{position}",
        field="inputs",
    )


def _outputs(raw: Any) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidRequestError(
            f"outputs: expected a list, got {describe_value(raw)}", field="outputs"
        )
    outputs: list[RequestedOutput] = []
    for index, item in enumerate(raw):
        where = f"outputs[{index}]"
        output, name = _named(item, where, _OUTPUT_FIELDS, "outputs")
        parameters = _parameters(output.get("parameters"), where)
        top = parameters.get("classification")
        if top is not None and (type(top) is not int or top < 1):
            raise InvalidRequestError(
                f"{where}.parameters.classification: expected a positive integer, got "
                f"{describe_value(top)}",
                field="outputs",
            )
        if any(earlier.name == name for earlier in outputs):
            raise InvalidRequestError(f"{where}: {name!r} is requested twice", field="outputs")
        outputs.append(RequestedOutput(name, _flag(parameters, "binary_data", where), top))
    return outputs


def decode_bytes(data: memoryview | bytes, where: str) -> list[bytes]:
    """A binary BYTES tensor: elements of a 4-byte little-endian length and the bytes."""
    elements = []
    offset, end = 0, len(data)
    while offset < end:
        if offset + 4 > end:
            raise BadRequestError(f"{where}: BYTES data end inside an element's length")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += 4
        if offset + length > end:
            raise BadRequestError(
                f"{where}: a BYTES element of {length} bytes runs past the tensor's data"
            )
        elements.append(bytes(data[offset : offset + length]))
        offset += length
    return elements


def encode_bytes(elements: list[bytes]) -> bytes:
    """BYTES elements as binary data (each a 4-byte little-endian length, then the bytes)."""
    return b"".join(_LENGTH.pack(len(element)) + element for element in elements)


def encode_response(
    header: dict[str, Any], outputs: list[OutputTensor]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON's length when binary data follow it (for
    ``Inference-Header-Content-Length``; None: the body is all JSON)."""
    tails: list[bytes] = []
    described = []
    for output in outputs:
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": output.shape,
        }
        parameters = dict(output.parameters)
        values = output.values
        if output.binary:
            blob = (
                encode_bytes(values)
                if isinstance(values, list)
                else np.ascontiguousarray(values).tobytes()
            )
            parameters["binary_data_size"] = len(blob)
            tails.append(blob)
        else:
            entry["data"] = (
                [value.decode() for value in values] if isinstance(values, list) else values
            )
        if parameters:
            entry["parameters"] = parameters
        described.append(entry)
    text = orjson.dumps({**header, "outputs": described}, option=orjson.OPT_SERIALIZE_NUMPY)
    if not tails:
        return text, None
    return b"".join([text, *tails]), len(text)
