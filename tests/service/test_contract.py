"""One contract: what OpenAPI documents is exactly what the routes accept and answer, and every
error is a class of the one tree with its own status and code."""

from __future__ import annotations

import gzip
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import model.errors
from service import errors
from service.contract import MAX_VERSION

from .helpers import AUTH, AppFactory, TestClient, assert_error, store_state

ROW = [5.1, 3.5, 1.4, 0.2]
# A valid value for each documented request field, against the Iris test model.
VALID = {
    "instances": [ROW],
    "labels": ["setosa"],
    "version": 1,
    "learning_rate": 0.01,
    "passes": 2,
    "force": False,
}


@pytest.fixture
def client(iris_store: Path, make_app: AppFactory) -> Iterator[TestClient]:
    with TestClient(make_app(iris_store)) as client:
        yield client


def request_schema(client: TestClient, path: str) -> dict[str, Any]:
    document = client.get("/openapi.json").json()
    body = document["paths"][path]["post"]["requestBody"]
    schema: dict[str, Any] = body["content"]["application/json"]["schema"]
    return schema


@pytest.mark.parametrize("path", ["/predict", "/train"])
def test_every_documented_field_is_accepted_and_nothing_else(client: TestClient, path: str) -> None:
    schema = request_schema(client, path)
    documented, required = set(schema["properties"]), set(schema["required"])
    assert documented >= required == ({"instances"} | ({"labels"} if path == "/train" else set()))
    for field in documented:  # each documented field, alone beside the required ones
        payload = {name: VALID[name] for name in required | {field}}
        response = client.post(path, json=payload, headers=AUTH)
        assert response.status_code == 200, (field, response.text)
    everything = {name: VALID[name] for name in documented}
    assert client.post(path, json=everything, headers=AUTH).status_code == 200
    for field in required:  # each required one is required
        payload = {name: VALID[name] for name in required - {field}}
        assert_error(
            client.post(path, json=payload, headers=AUTH),
            422,
            "invalid_request",
            f"missing field {field!r}",
            field=field,
        )
    response = client.post(path, json={**everything, "undocumented": 1}, headers=AUTH)
    expected = ", ".join(schema["properties"])  # the documented order
    assert_error(
        response,
        422,
        "invalid_request",
        f"unknown field 'undocumented'; expected {expected}",
        field="undocumented",
    )


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("post", "/predict", {"instances": [ROW]}),
        ("post", "/train", {"instances": [ROW], "labels": ["setosa"]}),
        ("get", "/models", None),
        ("get", "/models/1", None),
        ("post", "/models/1/activate", None),
        ("get", "/health/ready", None),
        ("get", "/health/live", None),
    ],
)
def test_every_answer_has_exactly_the_documented_fields(
    client: TestClient, method: str, path: str, payload: dict[str, Any] | None
) -> None:
    document = client.get("/openapi.json").json()
    route = path if not path[-1].isdigit() and "/1/" not in path else path.replace("1", "{version}")
    reference = document["paths"][route][method]["responses"]["200"]["content"]
    reference = reference["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    schema = document["components"]["schemas"][reference]
    answer = client.request(method.upper(), path, json=payload, headers=AUTH).json()
    assert set(answer) <= set(schema["properties"]), (path, answer)
    assert set(answer) >= set(schema.get("required", ())), (path, answer)
    if path.startswith("/models"):
        assert set(answer) == set(schema["properties"]), path


def test_the_error_tree_is_drawn_in_its_docstring_and_every_class_is_in_it() -> None:
    tree = errors.__doc__ or ""
    api_classes = [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.ApiError) and cls is not errors.ApiError
    ]
    assert len(api_classes) >= 13
    seen: set[tuple[int, str]] = set()
    for cls in api_classes:
        line = re.search(rf"^\s*[│├└─ ]*{cls.__name__}\s+(\d+)\s+(\w+)$", tree, re.MULTILINE)
        assert line is not None, f"{cls.__name__} is not drawn in service/errors.py"
        assert (int(line[1]), line[2]) == (cls.status, cls.code), cls.__name__
        if cls.code != errors.InvalidRequestError.code or cls is errors.InvalidRequestError:
            assert (cls.status, cls.code) not in seen, cls.__name__
        seen.add((cls.status, cls.code))
    for _, cls in inspect.getmembers(model.errors, inspect.isclass):
        if issubclass(cls, model.errors.ModelError) and cls is not model.errors.ModelError:
            error = cls("x")
            mapped = errors.status_of(error)
            assert mapped in (404, 409, 422, 503, 500), cls.__name__
            # A caller's mistake is never a 5xx; a store failure is.
            client_side = issubclass(
                cls, model.errors.InvalidInputError | model.errors.DivergenceError
            )
            assert (mapped == 422) == client_side, cls.__name__


# ------------------------------------------------------------------ details found by new users
def test_a_compressed_body_is_415_and_changes_nothing(client: TestClient, iris_store: Path) -> None:
    before = store_state(iris_store, "iris")
    compressed = gzip.compress(b'{"instances": [[5.1, 3.5, 1.4, 0.2]], "labels": ["setosa"]}')
    for path in ("/predict", "/train"):
        response = client.post(
            path, content=compressed, headers={**AUTH, "Content-Encoding": "gzip"}
        )
        assert_error(response, 415, "unsupported_media_type", "Content-Encoding 'gzip'")
    assert store_state(iris_store, "iris") == before


def test_a_body_that_is_not_utf8_says_so(client: TestClient) -> None:
    utf16 = '{"instances": [[5.1, 3.5, 1.4, 0.2]]}'.encode("utf-16")
    assert_error(
        client.post("/predict", content=utf16),
        400,
        "invalid_encoding",
        "expected UTF-8 encoded JSON, got a byte that is not UTF-8 at offset 0",
    )
    gzipped = gzip.compress(b'{"instances": []}')  # compressed but not declared so
    assert_error(client.post("/predict", content=gzipped), 400, "invalid_encoding", "UTF-8")


def test_a_body_of_any_content_type_is_read_as_json(client: TestClient) -> None:
    # curl -d sends application/x-www-form-urlencoded; scripts sending text/plain keep working.
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        response = client.post(
            "/predict",
            content=b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}',
            headers={"Content-Type": content_type},
        )
        assert response.status_code == 200, content_type


def test_a_three_dimensional_body_is_not_a_feature_count_error(client: TestClient) -> None:
    cube = [[[5.1, 3.5], [1.4, 0.2], [1.0, 1.0], [2.0, 2.0]]]
    assert_error(
        client.post("/predict", json={"instances": cube}),
        422,
        "not_a_number",
        "expected a number at row 0, column 0, got [5.1, 3.5]",
        field="instances",
        row=0,
    )


def test_a_three_dimensional_body_of_another_width_is_not_a_feature_count_error(
    client: TestClient,
) -> None:
    cube = [[[5.1, 3.5, 1.4, 0.2]]]
    for route, body in [
        ("/predict", {"instances": cube}),
        ("/train", {"instances": cube, "labels": ["setosa"]}),
    ]:
        assert_error(
            client.post(route, json=body, headers=AUTH),
            422,
            "not_a_number",
            "expected a number at row 0, column 0, got [5.1, 3.5, 1.4, 0.2]",
            field="instances",
            row=0,
        )


def test_an_object_row_after_list_rows_is_named_not_quoted(client: TestClient) -> None:
    obj = {"sepal_length": 1.0, "sepal_width": 2.0, "petal_length": 3.0, "petal_width": 4.0}
    error = assert_error(
        client.post("/predict", json={"instances": [ROW, obj]}),
        422,
        "not_a_number",
        "expected each row to be a list of numbers like row 0, got an object at row 1",
        field="instances",
        row=1,
    )
    assert "sepal" not in error["message"]


def test_a_version_beyond_64_bits_is_echoed_as_the_integer_sent(client: TestClient) -> None:
    assert_error(
        client.post(
            "/predict", content=b'{"instances": [[1, 2, 3, 4]], "version": 1180591620717411303424}'
        ),
        422,
        "invalid_parameter",
        f"version: expected an integer 1..{MAX_VERSION}, got 1180591620717411303424",
        field="version",
    )


def test_the_docs_page_needs_no_internet(client: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
        assert assets, page
        for asset in assets:
            assert not re.match(r"(https?:)?//", asset), (page, asset)
            assert client.get(asset).status_code == 200, (page, asset)
