"""The V2 routes in-process: tensor encodings, the protocol's error shape and statuses, the
body limit and keys on /v2, and training over tensors refusing what /train refuses (the store
unchanged). The real client against the real server: tests/integration/test_v2_server.py."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.train import build_parser, run

from .helpers import AUTH, AppFactory, TestClient, rows, store_state

IRIS = rows("iris", slice(0, 3))


def _tensor(data: Any, shape: list[int], datatype: str = "FP64", name: str = "input") -> dict:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def _v2_error(response: Any, status: int, type_: str, message: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["type"] == type_, body
    assert body["error"] == message, body
    return body


@pytest.fixture
def client(iris_store: Path, make_app: AppFactory) -> Any:
    with TestClient(make_app(iris_store, max_body_bytes=4096)) as client:
        yield client


def _probabilities(response: Any) -> np.ndarray:
    assert response.status_code == 200, response.text
    (output,) = [o for o in response.json()["outputs"] if o["name"] == "probabilities"]
    return np.array(output["data"]).reshape(output["shape"])


def test_json_encodings_agree(client: TestClient) -> None:
    expected = np.array(
        client.post("/predict", json={"instances": IRIS.tolist()}).json()["probabilities"]
    )
    for inputs in (
        [_tensor(IRIS.tolist(), [3, 4])],  # nested
        [_tensor(IRIS.ravel().tolist(), [3, 4])],  # flat
        [_tensor(IRIS.astype(np.int64).ravel().tolist(), [3, 4], "INT64")],  # integers
    ):
        got = _probabilities(client.post("/v2/models/iris/infer", json={"inputs": inputs}))
        if inputs[0]["datatype"] == "INT64":
            integer = client.post("/predict", json={"instances": IRIS.astype(int).tolist()})
            np.testing.assert_array_equal(got, integer.json()["probabilities"])
        else:
            np.testing.assert_array_equal(got, expected)


def test_binary_outputs_and_bytes_elements(client: TestClient) -> None:
    request = {
        "inputs": [_tensor(IRIS.tolist(), [3, 4])],
        "outputs": [{"name": "label", "parameters": {"binary_data": True}}],
    }
    response = client.post("/v2/models/iris/infer", json=request)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    header = json.loads(response.content[:length])
    tail = response.content[length:]
    assert header["outputs"][0]["parameters"]["binary_data_size"] == len(tail)
    labels, offset = [], 0
    while offset < len(tail):
        (size,) = struct.unpack_from("<I", tail, offset)
        labels.append(tail[offset + 4 : offset + 4 + size].decode())
        offset += 4 + size
    assert labels == ["setosa"] * 3


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        (
            {"inputs": [_tensor([[1, 2, True, 4]], [1, 4])]},
            "inputs[0] ('input').data: expected numbers (FP64), got True (a boolean) at element 2",
        ),
        (
            {"inputs": [_tensor([1, 2, 3], [1, 4])]},
            "inputs[0] ('input'): shape holds 4 elements, data 3",
        ),
        (
            {"inputs": [_tensor([1, 2, 3, 4], [1, 4], "FP8")]},
            "inputs[0] ('input').datatype: expected one of BOOL, UINT8, UINT16, UINT32, "
            "UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES, got 'FP8' (a string)",
        ),
        (  # not a string at all (found by schemathesis: it was a 500)
            {"inputs": [_tensor([1, 2, 3, 4], [1, 4], ["FP64"])]},  # type: ignore[arg-type]
            "inputs[0] ('input').datatype: expected one of BOOL, UINT8, UINT16, UINT32, "
            "UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES, got ['FP64']",
        ),
        (
            {"inputs": [_tensor([1, 2, 3, 4], [1, 4], name="x")]},
            "inputs[0] ('x'): unknown input; this model takes 'input'",
        ),
        ({"inputs": []}, "inputs: expected a non-empty list of tensors, got []"),
        # A value the datatype cannot hold is refused, never wrapped or rounded to infinity.
        (
            {"inputs": [_tensor([1, 2, 300, 4], [1, 4], "INT8")]},
            "inputs[0] ('input').data: expected numbers in INT8's range -128..127, got 300 at "
            "element 2",
        ),
        (
            {"inputs": [_tensor([[1, -1, 2, 3]], [1, 4], "UINT8")]},
            "inputs[0] ('input').data: expected numbers in UINT8's range 0..255, got -1 at "
            "element 1",
        ),
        (
            {"inputs": [_tensor([1, 2.5, 3, 4], [1, 4], "INT64")]},
            "inputs[0] ('input').data: expected integers (INT64), got 2.5 at element 1",
        ),
        (
            {"inputs": [_tensor([1, 2, 3, 1e300], [1, 4], "FP32")]},
            "inputs[0] ('input').data: expected numbers in FP32's range, got 1e+300 at element 3",
        ),
        (
            {"inputs": [_tensor([], [0, 4])]},
            "inputs[0] ('input'): expected at least one row, got none",
        ),
        (
            {
                "inputs": [_tensor([1, 2, 3, 4], [1, 4])],
                "outputs": [{"name": "label"}, {"name": "label"}],
            },
            "outputs[1]: 'label' is requested twice",
        ),
        (
            {"inputs": [_tensor([1, 2, 3, 4], [1, 4])], "extra": 1},
            "request: unknown field 'extra'; expected id, parameters, inputs, outputs",
        ),
    ],
)
def test_bad_tensors_are_400_naming_the_tensor(
    client: TestClient, request_body: dict, message: str
) -> None:
    response = client.post("/v2/models/iris/infer", json=request_body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == message


def test_binary_frames_must_add_up(client: TestClient) -> None:
    header = json.dumps(
        {"inputs": [{**_tensor(None, [1, 4]), "parameters": {"binary_data_size": 32}}]}
    ).replace(', "data": null', "")
    raw = header.encode() + IRIS[:1].tobytes()
    ok = client.post(
        "/v2/models/iris/infer",
        content=raw,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert _probabilities(ok).shape == (1, 3)
    _v2_error(
        client.post(
            "/v2/models/iris/infer",
            content=raw + b"\0" * 8,
            headers={"Inference-Header-Content-Length": str(len(header))},
        ),
        400,
        "bad_request",
        "binary data: the inputs declare 32 bytes (binary_data_size) after the JSON, the "
        "body holds 40",
    )
    forgotten = client.post("/v2/models/iris/infer", content=raw)  # the header forgotten
    assert forgotten.status_code == 400, forgotten.text
    assert forgotten.json()["type"] == "invalid_json"
    assert forgotten.json()["error"].endswith(
        "(binary data after the JSON need the Inference-Header-Content-Length header)"
    )
    nan = np.array([[1.0, np.nan, 3.0, 4.0]])
    _v2_error(
        client.post(
            "/v2/models/iris/infer",
            content=header.encode() + nan.tobytes(),
            headers={"Inference-Header-Content-Length": str(len(header))},
        ),
        400,
        "non_finite",
        "inputs[0] ('input'): expected finite numbers, got nan at row 0, column 1",
    )
    _v2_error(
        client.post(
            "/v2/models/iris/infer",
            content=raw,
            headers={"Inference-Header-Content-Length": "9999"},
        ),
        400,
        "bad_request",
        f"Inference-Header-Content-Length: expected a length 0..{len(raw)} (the body's size), "
        "got '9999'",
    )


def test_v2_errors_keep_limits_and_routes(client: TestClient) -> None:
    big = client.post(
        "/v2/models/iris/infer", content=b"x" * 5000, headers={"Content-Type": "text/plain"}
    )
    _v2_error(
        big, 413, "body_too_large", "request body exceeds the limit of 4096 bytes (max_body_bytes)"
    )
    _v2_error(client.get("/v2/nothing"), 404, "not_found", "no route GET /v2/nothing")
    _v2_error(
        client.get("/v2/models/iris/versions/0"),
        400,
        "invalid_request",
        "model_version: Input should be greater than or equal to 1",
    )


def test_infer_needs_a_key_when_predict_does(iris_store: Path, make_app: AppFactory) -> None:
    app = make_app(iris_store, predict_requires_key=True)
    with TestClient(app) as client:
        request = {"inputs": [_tensor(IRIS.tolist(), [3, 4])]}
        refused = client.post("/v2/models/iris/infer", json=request)
        _v2_error(
            refused,
            401,
            "unauthorized",
            "this route requires an 'Authorization: Bearer <key>' header",
        )
        answered = client.post("/v2/models/iris/infer", json=request, headers=AUTH)
        assert _probabilities(answered).shape == (3, 3)


@pytest.mark.parametrize(
    ("labels", "parameters", "status", "type_", "message"),
    [
        (
            _tensor(["setosa", "rose", "setosa"], [3], "BYTES", "label"),
            {},
            400,
            "unknown_label",
            "inputs[1] ('label'): expected one of the classes ('setosa', 'versicolor', "
            "'virginica'), got 'rose' at row 1",
        ),
        (
            _tensor([0, 3, 1], [3], "INT32", "label"),
            {},
            400,
            "invalid_parameter",
            "inputs[1] ('label'): expected class indices (0..2), got 3 at element 1 (a new "
            "class is sent as a BYTES label)",
        ),
        (
            _tensor(["setosa"] * 2, [2], "BYTES", "label"),
            {},
            400,
            "invalid_request",
            "inputs[1] ('label').shape: expected [3] or [3, 1] (one label per row of 'input'), "
            "got [2]",
        ),
        (
            _tensor(["setosa"] * 3, [3], "BYTES", "label"),
            {"learning_rate": 5.0},
            400,
            "invalid_parameter",
            "learning_rate: expected a number in (0, 1]",
        ),
    ],
)
def test_train_refusals_change_nothing(
    client: TestClient,
    iris_store: Path,
    labels: dict,
    parameters: dict,
    status: int,
    type_: str,
    message: str,
) -> None:
    before = store_state(iris_store, "iris")
    request = {"inputs": [_tensor(IRIS.tolist(), [3, 4]), labels], "parameters": parameters}
    response = client.post("/v2/models/iris/train", json=request, headers=AUTH)
    assert response.status_code == status, response.text
    assert response.json()["type"] == type_
    assert message in response.json()["error"]
    assert store_state(iris_store, "iris") == before


def test_train_answers_as_train_does(client: TestClient) -> None:
    labels = _tensor(["setosa"] * 3, [3], "BYTES", "label")
    request = {"inputs": [_tensor(IRIS.tolist(), [3, 4]), labels], "id": "t"}
    v2 = client.post("/v2/models/iris/train", json=request, headers=AUTH).json()
    native = client.post(
        "/train", json={"instances": IRIS.tolist(), "labels": ["setosa"] * 3}, headers=AUTH
    ).json()
    assert set(native) <= set(v2)
    assert (v2["model_name"], v2["model_version"], v2["id"]) == ("iris", "2", "t")
    assert (v2["version"], native["version"]) == (2, 3)
    metrics = client.get("/metrics").text
    assert "softmax_updates_applied_total 2.0" in metrics
    route = 'method="POST",route="/v2/models/{model_name}/train",status="200"'
    assert f"softmax_http_requests_total{{{route}}} 1.0" in metrics


def test_models_with_a_feature_encoding(store: Path, make_app: AppFactory) -> None:
    """A tensor carries the raw numeric features (NaN: a missing value, imputed as /predict's
    null is); a model with a categorical feature is refused with the reason."""
    rng = np.random.default_rng(0)
    lines = ["age,size,colour,label"]
    for _ in range(60):
        size, colour = rng.normal(), str(rng.choice(["red", "blue"]))
        age = "" if rng.random() < 0.1 else f"{rng.normal(40, 10):.1f}"
        lines.append(f"{age},{size:.3f},{colour},{'yes' if size > 0 else 'no'}")
    tables = {"num": [line.rsplit(",", 2)[0] + "," + line.rsplit(",", 1)[1] for line in lines]}
    tables["cat"] = lines
    for name, table in tables.items():
        path = store.parent / f"{name}.csv"
        path.write_text("\n".join(table) + "\n")
        extra = ["--categorical", "colour"] if name == "cat" else []
        arguments = [str(path), "--label", "label", "--store", str(store), "--name", name]
        run(
            build_parser().parse_args([*arguments, "--quiet", "--epochs", "3", *extra]),
            io.StringIO(),
        )
    with TestClient(make_app(store, model="num")) as client:
        metadata = client.get("/v2/models/num").json()
        assert metadata["inputs"][0]["shape"] == [-1, 2]
        assert metadata["parameters"]["feature_names"] == ["age", "size"]
        native = client.post("/predict", json={"instances": [[None, 0.5]]}).json()
        header = json.dumps(
            {"inputs": [{**_tensor(None, [1, 2]), "parameters": {"binary_data_size": 16}}]}
        ).replace(', "data": null', "")
        answer = client.post(
            "/v2/models/num/infer",
            content=header.encode() + np.array([np.nan, 0.5]).tobytes(),
            headers={"Inference-Header-Content-Length": str(len(header))},
        )
        np.testing.assert_array_equal(_probabilities(answer), native["probabilities"])
        assert client.get("/v2/models/cat").json()["parameters"]["feature_names"] == [
            "age",
            "size",
            "colour",
        ]
        _v2_error(
            client.post("/v2/models/cat/infer", json={"inputs": [_tensor([1, 2, 3], [1, 3])]}),
            400,
            "invalid_request",
            "inputs[0] ('input'): model 'cat' has categorical features (colour), which a numeric "
            "tensor cannot carry: send its rows to POST /predict (of a service started with "
            "--model cat)",
        )
