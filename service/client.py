"""A small typed client for softmax-serve, on httpx (sync and async).

>>> from service.client import Client
>>> with Client("http://127.0.0.1:8000", api_key="secret") as client:  # doctest: +SKIP
...     result = client.predict([[5.1, 3.5, 1.4, 0.2]])
...     result.predictions
['setosa']

Every error answer raises :class:`ServiceError` carrying the HTTP status and the server's
``type``, ``message``, ``field`` and ``row``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from numpy.typing import NDArray

__all__ = ["AsyncClient", "Client", "Inference", "Prediction", "ServiceError", "TrainResult"]

Rows = NDArray[Any] | Sequence[Sequence[float]] | Sequence[Mapping[str, float]]


class ServiceError(Exception):
    """An error answer from the service."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        field: str | None = None,
        row: int | None = None,
    ) -> None:
        super().__init__(f"{status} {type_}: {message}")
        self.status, self.type, self.message, self.field, self.row = (
            status,
            type_,
            message,
            field,
            row,
        )


@dataclass(frozen=True)
class Prediction:
    model: str
    version: int
    classes: list[Any]
    probabilities: NDArray[np.float64]  # (n_rows, n_classes), columns ordered as classes
    predictions: list[Any]


@dataclass(frozen=True)
class TrainResult:
    version: int
    previous_version: int
    n: int
    loss_before: float
    loss_after: float


@dataclass(frozen=True)
class Inference:
    """A V2 inference answer (``Client.infer``): labels as text, as the protocol sends them."""

    model: str
    version: int
    probabilities: NDArray[np.float64]  # (n_rows, n_classes), in the model's class order
    labels: list[str]


_LENGTH = struct.Struct("<I")


def _v2_request(
    rows: NDArray[Any] | Sequence[Sequence[float]],
    labels: NDArray[Any] | Sequence[Any] | None = None,
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """A V2 body with binary tensors (FP64 ``input``; ``label`` as BYTES text), and its
    headers; every output asked for as binary."""
    X = np.ascontiguousarray(rows, dtype="<f8")
    X = X.reshape(1, -1) if X.ndim == 1 else X
    inputs: list[dict[str, Any]] = [
        {"name": "input", "shape": list(X.shape), "datatype": "FP64"},
    ]
    tails = [X.tobytes()]
    if labels is not None:
        texts = [str(label).encode() for label in _labels(labels)]
        tails.append(b"".join(_LENGTH.pack(len(text)) + text for text in texts))
        inputs.append({"name": "label", "shape": [len(texts)], "datatype": "BYTES"})
    for tensor, tail in zip(inputs, tails, strict=True):
        tensor["parameters"] = {"binary_data_size": len(tail)}
    request = {"inputs": inputs, "parameters": {"binary_data_output": True, **(parameters or {})}}
    header = json.dumps(request).encode()
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }
    return header + b"".join(tails), headers


def _v2_inference(response: httpx.Response) -> Inference:
    if not response.is_success:
        _check(response)  # raises ServiceError
    length = int(response.headers.get("inference-header-content-length", len(response.content)))
    header = json.loads(response.content[:length])
    tail = memoryview(response.content)[length:]
    found: dict[str, Any] = {}
    for output in header["outputs"]:
        size = output["parameters"]["binary_data_size"]
        data, tail = tail[:size], tail[size:]
        if output["datatype"] == "BYTES":
            items, offset = [], 0
            while offset < len(data):
                (n,) = _LENGTH.unpack_from(data, offset)
                items.append(bytes(data[offset + 4 : offset + 4 + n]).decode())
                offset += 4 + n
            found[output["name"]] = items
        else:
            found[output["name"]] = np.frombuffer(data, "<f8").reshape(output["shape"])
    return Inference(
        header["model_name"], int(header["model_version"]), found["probabilities"], found["label"]
    )


def _rows(instances: Rows) -> list[Any]:
    if isinstance(instances, np.ndarray):
        if instances.ndim == 1:
            instances = instances.reshape(1, -1)
        # tolist() keeps booleans and strings as they are, so the server's strict checks see
        # them instead of silently converted numbers.
        rows: list[Any] = instances.tolist()
        return rows
    return [dict(r) if isinstance(r, Mapping) else list(r) for r in instances]


def _labels(labels: NDArray[Any] | Sequence[Any]) -> list[Any]:
    return labels.tolist() if isinstance(labels, np.ndarray) else list(labels)


def _predict_body(instances: Rows, version: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"instances": _rows(instances)}
    if version is not None:
        body["version"] = version
    return body


def _train_body(
    instances: Rows,
    labels: NDArray[Any] | Sequence[Any],
    learning_rate: float | None,
    passes: int | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"instances": _rows(instances), "labels": _labels(labels)}
    return {**body, **_train_parameters(learning_rate, passes)}


def _v2_path(model: str, version: int | None) -> str:
    pinned = f"/versions/{version}" if version is not None else ""
    return f"/v2/models/{model}{pinned}/infer"


def _train_parameters(learning_rate: float | None, passes: int | None) -> dict[str, Any]:
    given = {"learning_rate": learning_rate, "passes": passes}
    return {name: value for name, value in given.items() if value is not None}


def _models_params(limit: int, before: int | None) -> dict[str, int]:
    params = {"limit": limit}
    if before is not None:
        params["before"] = before
    return params


def _check(response: httpx.Response) -> Any:
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.is_success:
        return data
    error = data.get("error", {}) if isinstance(data, dict) else {}
    if isinstance(error, str):  # the V2 routes' shape: {"error": message, "type", ...}
        assert isinstance(data, dict)
        error = {**data, "message": error}
    raise ServiceError(
        response.status_code,
        str(error.get("type", "http_error")),
        str(error.get("message", response.text[:200])),
        error.get("field"),
        error.get("row"),
    )


def _prediction(data: dict[str, Any]) -> Prediction:
    return Prediction(
        model=data["model"],
        version=data["version"],
        classes=data["classes"],
        probabilities=np.asarray(data["probabilities"], dtype=np.float64),
        predictions=data["predictions"],
    )


def _train_result(data: dict[str, Any]) -> TrainResult:
    return TrainResult(**{k: data[k] for k in TrainResult.__dataclass_fields__})


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class Client:
    """Synchronous client. Use as a context manager, or call :meth:`close`."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 30.0) -> None:
        self._http = httpx.Client(base_url=base_url, headers=_headers(api_key), timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def predict(self, instances: Rows, *, version: int | None = None) -> Prediction:
        return _prediction(
            _check(self._http.post("/predict", json=_predict_body(instances, version)))
        )

    def train(
        self,
        instances: Rows,
        labels: NDArray[Any] | Sequence[Any],
        *,
        learning_rate: float | None = None,
        passes: int | None = None,
    ) -> TrainResult:
        body = _train_body(instances, labels, learning_rate, passes)
        return _train_result(_check(self._http.post("/train", json=body)))

    def models(self, *, limit: int = 50, before: int | None = None) -> dict[str, Any]:
        result: dict[str, Any] = _check(
            self._http.get("/models", params=_models_params(limit, before))
        )
        return result

    def version(self, version: int) -> dict[str, Any]:
        result: dict[str, Any] = _check(self._http.get(f"/models/{version}"))
        return result

    def activate(self, version: int) -> dict[str, Any]:
        result: dict[str, Any] = _check(self._http.post(f"/models/{version}/activate"))
        return result

    def health(self) -> dict[str, Any]:
        """The readiness answer; raises ServiceError(503) while no model is loaded."""
        result: dict[str, Any] = _check(self._http.get("/health/ready"))
        return result

    def infer(
        self,
        model: str,
        rows: NDArray[Any] | Sequence[Sequence[float]],
        *,
        version: int | None = None,
    ) -> Inference:
        """V2 inference on any model of the store, by name (binary tensors both ways)."""
        body, headers = _v2_request(rows)
        return _v2_inference(
            self._http.post(_v2_path(model, version), content=body, headers=headers)
        )

    def train_model(
        self,
        model: str,
        rows: NDArray[Any] | Sequence[Sequence[float]],
        labels: NDArray[Any] | Sequence[Any],
        *,
        learning_rate: float | None = None,
        passes: int | None = None,
    ) -> TrainResult:
        """``POST /v2/models/{model}/train``: :meth:`train` for any model of the store."""
        body, headers = _v2_request(rows, labels, _train_parameters(learning_rate, passes))
        response = self._http.post(f"/v2/models/{model}/train", content=body, headers=headers)
        return _train_result(_check(response))


class AsyncClient:
    """The same API for asyncio code."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 30.0) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=_headers(api_key), timeout=timeout
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def predict(self, instances: Rows, *, version: int | None = None) -> Prediction:
        response = await self._http.post("/predict", json=_predict_body(instances, version))
        return _prediction(_check(response))

    async def train(
        self,
        instances: Rows,
        labels: NDArray[Any] | Sequence[Any],
        *,
        learning_rate: float | None = None,
        passes: int | None = None,
    ) -> TrainResult:
        body = _train_body(instances, labels, learning_rate, passes)
        return _train_result(_check(await self._http.post("/train", json=body)))

    async def models(self, *, limit: int = 50, before: int | None = None) -> dict[str, Any]:
        response = await self._http.get("/models", params=_models_params(limit, before))
        result: dict[str, Any] = _check(response)
        return result

    async def version(self, version: int) -> dict[str, Any]:
        result: dict[str, Any] = _check(await self._http.get(f"/models/{version}"))
        return result

    async def activate(self, version: int) -> dict[str, Any]:
        result: dict[str, Any] = _check(await self._http.post(f"/models/{version}/activate"))
        return result

    async def health(self) -> dict[str, Any]:
        result: dict[str, Any] = _check(await self._http.get("/health/ready"))
        return result

    async def infer(
        self,
        model: str,
        rows: NDArray[Any] | Sequence[Sequence[float]],
        *,
        version: int | None = None,
    ) -> Inference:
        body, headers = _v2_request(rows)
        response = await self._http.post(_v2_path(model, version), content=body, headers=headers)
        return _v2_inference(response)

    async def train_model(
        self,
        model: str,
        rows: NDArray[Any] | Sequence[Sequence[float]],
        labels: NDArray[Any] | Sequence[Any],
        *,
        learning_rate: float | None = None,
        passes: int | None = None,
    ) -> TrainResult:
        body, headers = _v2_request(rows, labels, _train_parameters(learning_rate, passes))
        path = f"/v2/models/{model}/train"
        return _train_result(_check(await self._http.post(path, content=body, headers=headers)))
