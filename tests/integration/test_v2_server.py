"""The Open Inference Protocol (KServe V2) against the real server, driven by the real
``tritonclient[http]``: health, metadata, inference in JSON and binary, FP64 and FP32, the
classification extension, a pinned version, the request id, the errors, training over
tensors, and every model of the store served by name.

One server (``--model iris``, a store holding iris and digits, written by the training CLI)
serves the module; the multi-model tests that need their own settings start their own.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from model import LocalArtifactStore, ModelRepository
from model.data import load_builtin

from .server import ServerProcess, running_server, train_offline

KEY = "v2-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("v2") / "store"
    path.mkdir()
    assert train_offline(path, "iris", name="iris") == 1
    assert train_offline(path, "digits", name="digits", epochs=5) == 1
    return path


@pytest.fixture(scope="module")
def server(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    logs = tmp_path_factory.mktemp("v2-logs")
    with running_server(store, logs, "--model", "iris", "--api-key", KEY) as process:
        yield process


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(server.base_url.removeprefix("http://"))
    try:
        yield client
    finally:
        client.close()


def _input(X: np.ndarray, binary: bool, name: str = "input") -> triton.InferInput:
    datatype = {np.dtype("float64"): "FP64", np.dtype("float32"): "FP32"}[X.dtype]
    tensor = triton.InferInput(name, list(X.shape), datatype)
    tensor.set_data_from_numpy(X, binary_data=binary)
    return tensor


def _predict(server: ServerProcess, X: np.ndarray, version: int | None = None) -> dict:
    body: dict = {"instances": X.astype(np.float64).tolist()}
    if version is not None:
        body["version"] = version
    response = server.post("/predict", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def _offline(store: Path, name: str, version: int) -> object:
    return ModelRepository(LocalArtifactStore(store)).load(name, version).estimator


# ---------------------------------------------------------------------------- health, metadata
def test_health_and_server_metadata(client: triton.InferenceServerClient, server: ServerProcess):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert server.get("/v2/health/live").json() == {"live": True}
    assert server.get("/v2/health/ready").json() == {"ready": True}
    metadata = client.get_server_metadata()
    assert metadata["name"] == "softmax-serve"
    assert {"binary_tensor_data", "classification", "train"} <= set(metadata["extensions"])


def test_model_metadata_of_every_model_in_the_store(client: triton.InferenceServerClient):
    for name, width, classes in (("iris", 4, 3), ("digits", 64, 10)):
        assert client.is_model_ready(name)
        metadata = client.get_model_metadata(name)
        assert metadata["name"] == name
        assert "1" in metadata["versions"]
        assert metadata["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, width]}]
        assert metadata["outputs"] == [
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, classes]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
        ]
    assert client.get_model_metadata("iris", "1")["parameters"]["version"] == 1
    assert client.is_model_ready("iris", "1")


# ---------------------------------------------------------------------------- inference
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_infer_equals_predict(
    client: triton.InferenceServerClient, server: ServerProcess, binary: bool, dtype: str
) -> None:
    X = load_builtin("iris").X[::6].astype(dtype)  # 25 rows, of every class
    outputs = [
        triton.InferRequestedOutput("probabilities", binary_data=binary),
        triton.InferRequestedOutput("label", binary_data=binary),
    ]
    result = client.infer("iris", [_input(X, binary)], outputs=outputs, request_id="req-7")
    answer = result.get_response()
    assert answer["model_name"] == "iris"
    assert answer["id"] == "req-7"
    assert answer["model_version"] == "1"
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float64
    assert probabilities.shape == (25, 3)
    # /predict on the same rows (the FP32 ones widened exactly): the same probabilities.
    native = _predict(server, X)
    np.testing.assert_array_equal(probabilities, np.array(native["probabilities"]))
    # tritonclient gives BYTES as bytes from binary data, as str from JSON.
    labels = [v.decode() if binary else v for v in result.as_numpy("label").tolist()]
    assert labels == [str(label) for label in native["predictions"]]


def test_all_outputs_binary_by_default(client: triton.InferenceServerClient, server: ServerProcess):
    X = load_builtin("iris").X[:4]
    result = client.infer("iris", [_input(X, True)])  # no outputs named: all, binary
    for output in result.get_response()["outputs"]:
        assert "binary_data_size" in output["parameters"]
    np.testing.assert_array_equal(
        result.as_numpy("probabilities"), np.array(_predict(server, X)["probabilities"])
    )
    assert result.as_numpy("label").tolist() == [b"setosa"] * 4


def test_classification_top_k(client: triton.InferenceServerClient, server: ServerProcess):
    X = load_builtin("iris").X[[0, 60, 120]]
    output = triton.InferRequestedOutput("probabilities", binary_data=False, class_count=2)
    result = client.infer("iris", [_input(X, False)], outputs=[output])
    top = result.as_numpy("probabilities")
    assert top.shape == (3, 2)
    native = _predict(server, X)
    for row, probabilities in enumerate(native["probabilities"]):
        order = np.argsort(probabilities)[::-1][:2]
        expected = [f"{probabilities[i]!r}:{i}:{native['classes'][i]}" for i in order]
        assert top[row].tolist() == expected


# ---------------------------------------------------------------------------- training, versions
def _train(
    server: ServerProcess, inputs: list, model: str = "iris", status: int = 200, **request: object
) -> httpx.Response:
    """POST .../train with a body tritonclient builds (binary data after the JSON)."""
    body, json_length = triton.InferenceServerClient.generate_request_body(inputs, **request)
    headers = {**AUTH, "Content-Type": "application/octet-stream"}
    if json_length is not None:
        headers["Inference-Header-Content-Length"] = str(json_length)
    answer = server.post(f"/v2/models/{model}/train", content=body, headers=headers)
    assert answer.status_code == status, answer.text
    return answer


def _labels(values: list[str]) -> triton.InferInput:
    tensor = triton.InferInput("label", [len(values)], "BYTES")
    tensor.set_data_from_numpy(np.array([v.encode() for v in values], dtype=object))
    return tensor


def test_train_over_tensors_then_a_pinned_version(
    client: triton.InferenceServerClient, server: ServerProcess, store: Path
) -> None:
    iris = load_builtin("iris")
    X, y = iris.X[70:74], iris.y[70:74]
    labels = triton.InferInput("label", [len(y)], "BYTES")
    labels.set_data_from_numpy(np.array([str(v).encode() for v in y], dtype=object))
    answer = _train(
        server,
        [_input(X, True), labels],
        request_id="train-1",
        parameters={"learning_rate": 0.01, "passes": 2},
    )
    update = answer.json()
    assert (update["version"], update["previous_version"], update["n"]) == (2, 1, 4)
    assert update["model_version"] == "2" and update["id"] == "train-1"
    assert update["loss_after"] < update["loss_before"]
    assert {"held_out", "guard", "loss_before"} <= set(update)
    # Durable: the store holds it, and the native route serves it.
    assert ModelRepository(LocalArtifactStore(store)).head("iris").active == 2
    assert _predict(server, X)["version"] == 2

    # Integer class indices are labels too (the column of the class).
    indices = triton.InferInput("label", [len(y)], "INT64")
    classes = _predict(server, X)["classes"]
    indices.set_data_from_numpy(np.array([classes.index(v) for v in y], dtype=np.int64))
    answer = _train(server, [_input(X, False), indices], parameters={"learning_rate": 0.01})
    assert answer.json()["version"] == 3

    # A version in the path pins it: version 1 still answers as it did.
    result = client.infer("iris", [_input(X, True)], model_version="1")
    assert result.get_response()["model_version"] == "1"
    np.testing.assert_array_equal(
        result.as_numpy("probabilities"), np.array(_predict(server, X, version=1)["probabilities"])
    )
    np.testing.assert_array_equal(
        result.as_numpy("probabilities"), _offline(store, "iris", 1).predict_proba(X)
    )
    assert client.infer("iris", [_input(X, True)]).get_response()["model_version"] == "3"


def test_train_needs_the_key(server: ServerProcess) -> None:
    X = load_builtin("iris").X[:1]
    body = {
        "inputs": [
            {"name": "input", "shape": [1, 4], "datatype": "FP64", "data": X.tolist()},
            {"name": "label", "shape": [1], "datatype": "BYTES", "data": ["setosa"]},
        ]
    }
    answer = server.post("/v2/models/iris/train", json=body)
    assert answer.status_code == 401
    assert answer.json()["type"] == "unauthorized"


# ---------------------------------------------------------------------------- errors
def _refusal(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as raised:
        call()
    return raised.value


def test_errors(client: triton.InferenceServerClient, server: ServerProcess) -> None:
    X = load_builtin("iris").X[:2]
    wrong_shape = _refusal(lambda: client.infer("iris", [_input(X[:, :3].copy(), True)]))
    assert wrong_shape.status() == "400"
    assert wrong_shape.message() == (
        "inputs[0] ('input').shape: expected [n, 4] (4 features), got [2, 3]"
    )

    unknown = _refusal(lambda: client.infer("nope", [_input(X, True)]))
    assert unknown.status() == "404"
    assert unknown.message().startswith("no model named 'nope'")
    assert _refusal(lambda: client.get_model_metadata("nope")).status() == "404"
    assert not client.is_model_ready("nope")

    version = _refusal(lambda: client.infer("iris", [_input(X, True)], model_version="99"))
    assert version.status() == "404"
    assert "99" in version.message()

    text = triton.InferInput("input", [2, 4], "BYTES")
    text.set_data_from_numpy(np.array([[b"a"] * 4] * 2, dtype=object))
    datatype = _refusal(lambda: client.infer("iris", [text]))
    assert datatype.status() == "400"
    assert datatype.message() == (
        "inputs[0] ('input').datatype: expected FP64 or FP32 (or an integer type), got BYTES"
    )

    unknown_output = _refusal(
        lambda: client.infer(
            "iris", [_input(X, True)], outputs=[triton.InferRequestedOutput("logits")]
        )
    )
    assert unknown_output.status() == "400"
    assert "unknown output 'logits'" in unknown_output.message()


def test_a_binary_body_shorter_than_declared(server: ServerProcess) -> None:
    X = load_builtin("iris").X[:2]
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [2, 4],
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": 64},
                }
            ]
        }
    ).encode()
    body = header + X.tobytes()[:40]  # 24 bytes short
    answer = server.post(
        "/v2/models/iris/infer",
        content=body,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "inputs[0] ('input'): binary_data_size is 64 bytes, the body holds only 40 "
        "after the JSON and the inputs before it",
        "type": "bad_request",
    }


def test_a_declared_size_over_the_body_limit_is_refused_before_reading(
    server: ServerProcess,
) -> None:
    # 1 GB declared, 2 bytes sent: the answer comes without the server waiting for the rest.
    request = (
        b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000000\r\n"
        b"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: 2\r\n\r\n{}"
    )
    answer = b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as connection:
        connection.sendall(request)
        while b"max_body_bytes" not in answer:
            chunk = connection.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b'"type":"body_too_large"' in answer, answer


# ---------------------------------------------------------------------------- every model
def test_a_model_written_by_the_cli_while_serving_is_served(
    client: triton.InferenceServerClient, server: ServerProcess, store: Path
) -> None:
    assert _refusal(lambda: client.get_model_metadata("flowers")).status() == "404"
    assert train_offline(store, "iris", name="flowers", epochs=3) == 1
    X = load_builtin("iris").X[:5]
    result = client.infer("flowers", [_input(X, True)])
    assert result.get_response()["model_name"] == "flowers"
    np.testing.assert_array_equal(
        result.as_numpy("probabilities"), _offline(store, "flowers", 1).predict_proba(X)
    )
    assert server.get("/health/ready").json()["model"] == "iris"  # native: still the default


def test_eviction_under_a_small_budget_keeps_answering(
    store: Path, tmp_path: Path, server: ServerProcess
) -> None:
    # A budget smaller than any model: each model asked for evicts the one before it.
    with running_server(
        store, tmp_path / "logs", "--model", "iris", "--models-memory-bytes", "1"
    ) as small:
        client = triton.InferenceServerClient(small.base_url.removeprefix("http://"))
        try:
            digits = load_builtin("digits").X[:10]
            iris = load_builtin("iris").X[:10]
            expected = {
                "digits": _offline(store, "digits", 1).predict_proba(digits),
                "flowers": _offline(store, "flowers", 1).predict_proba(iris),
            }
            for _ in range(3):
                for name, X in (("digits", digits), ("flowers", iris)):
                    result = client.infer(name, [_input(X, True)])
                    np.testing.assert_array_equal(result.as_numpy("probabilities"), expected[name])
            metrics = small.get("/metrics").text
            for name in ("digits", "flowers"):  # each evicted when the other was asked for
                line = f'softmax_models_evicted_total{{model="{name}"}}'
                assert float(metrics.split(line)[1].split()[0]) >= 2, metrics
            assert 'evicted_total{model="iris"}' not in metrics  # the default model stays
        finally:
            client.close()


# ---------------------------------------------------------------------------- created models
def _create(server: ServerProcess, name: str, classes: list, allow_new_classes: bool) -> None:
    body = {
        "name": name,
        "feature_names": ["a", "b", "c", "d"],
        "classes": classes,
        "allow_new_classes": allow_new_classes,
    }
    answer = server.post("/models", json=body, headers=AUTH)
    assert answer.status_code == 201, answer.text


def test_a_model_before_two_classes_exist(
    client: triton.InferenceServerClient, server: ServerProcess
) -> None:
    _create(server, "empty", [], allow_new_classes=True)
    X = load_builtin("iris").X[:2]
    metadata = client.get_model_metadata("empty")
    assert metadata["outputs"][0]["shape"] == [-1, 0]
    for binary in (False, True):
        outputs = [
            triton.InferRequestedOutput("probabilities", binary_data=binary),
            triton.InferRequestedOutput("label", binary_data=binary),
        ]
        result = client.infer("empty", [_input(X, binary)], outputs=outputs)
        assert result.as_numpy("probabilities").shape == (2, 0)
        # No class, no prediction: /predict's null is an empty string (BYTES has no null).
        assert result.as_numpy("label").tolist() == ([b"", b""] if binary else ["", ""])
        top = triton.InferRequestedOutput("label", binary_data=binary, class_count=3)
        assert client.infer("empty", [_input(X, binary)], outputs=[top]).as_numpy(
            "label"
        ).shape == (2, 0)
    # "" cannot be a class (POST /models refuses it; it is the label of no prediction).
    refused = _train(server, [_input(X, True), _labels(["spam", ""])], model="empty", status=400)
    assert refused.json()["error"] == (
        "inputs[1] ('label'): expected a non-empty label, got '' at element 1"
    )
    # The first label (BYTES: a string class) gives it one class: probability 1.
    assert (
        _train(server, [_input(X[:1], True), _labels(["spam"])], model="empty").json()["version"]
        == 2
    )
    top = triton.InferRequestedOutput("label", binary_data=False, class_count=3)
    result = client.infer("empty", [_input(X, False)], outputs=[top])
    assert result.as_numpy("label").tolist() == [["1.0:0:spam"], ["1.0:0:spam"]]
    result = client.infer("empty", [_input(X, True)])
    assert result.as_numpy("label").tolist() == [b"spam", b"spam"]
    np.testing.assert_array_equal(result.as_numpy("probabilities"), [[1.0], [1.0]])
    assert client.get_model_metadata("empty")["parameters"]["classes"] == ["spam"]


def test_integer_classes_grow_from_bytes_labels(server: ServerProcess, store: Path) -> None:
    repository = ModelRepository(LocalArtifactStore(store))
    X = load_builtin("iris").X[:2]
    _create(server, "counts", [0, 1], allow_new_classes=True)
    _create(server, "fixed", [0, 1], allow_new_classes=False)
    # Labels as text parse as the model's integers, as /train's JSON integers: 7 is added.
    column = triton.InferInput("label", [2, 1], "BYTES")  # a column of labels, as [n] is
    column.set_data_from_numpy(np.array([[b"1"], [b"7"]], dtype=object))
    answer = _train(server, [_input(X, True), column], model="counts").json()
    assert answer["version"] == 2
    assert repository.load("counts", 2).classes == [0, 1, 7]
    metadata = server.get("/v2/models/counts").json()
    assert metadata["parameters"]["classes"] == [0, 1, 7]
    assert metadata["outputs"][0]["shape"] == [-1, 3]
    refusals = [
        ("counts", ["1", "x"], "unknown_label", "got 'x' at element 1"),
        ("counts", ["1.0", "1"], "unknown_label", "got '1.0' at element 0"),
        (
            "fixed",
            ["0", "7"],
            "unknown_label",
            "inputs[1] ('label'): expected one of the classes (0, 1), got 7 at row 1",
        ),
    ]
    for model, labels, type_, where in refusals:
        head = repository.head(model).active
        refused = _train(server, [_input(X, True), _labels(labels)], model=model, status=400)
        assert refused.json()["type"] == type_, refused.text
        assert where in refused.json()["error"], refused.text
        assert repository.head(model).active == head
    message = _train(
        server, [_input(X, True), _labels(["1", "x"])], model="counts", status=400
    ).json()["error"]
    assert message == (
        "inputs[1] ('label'): expected integer labels written in decimal (the model's classes "
        "are integers, e.g. '7'), got 'x' at element 1"
    )
