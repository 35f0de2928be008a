"""The HTTP edges: body limits, the framework's own 404/405, bearer-key auth, start-up warning."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from .helpers import API_KEY, AUTH, AppFactory, TestClient, assert_error, store_state

LIMIT = 1024  # the smallest max_body_bytes the settings allow
ROW = [5.1, 3.5, 1.4, 0.2]
TRAIN = {"instances": [ROW], "labels": ["setosa"]}


@pytest.fixture
def client(iris_store: Path, make_app: AppFactory) -> Iterator[TestClient]:
    with TestClient(make_app(iris_store, max_body_bytes=LIMIT)) as client:
        yield client


def oversized(route: str) -> bytes:
    """A valid request for ``route``, just too long: only the limit can refuse it."""
    data: dict[str, object] = {"instances": [ROW] * 60}
    if route == "/train":
        data["labels"] = ["setosa"] * 60
    body = orjson.dumps(data)
    assert len(body) > LIMIT
    return body


def chunks(data: bytes, size: int = 100) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


# ------------------------------------------------------------------ body limit
@pytest.mark.parametrize("route", ["/predict", "/train"])
def test_declared_content_length_over_the_limit_is_413(
    client: TestClient, iris_store: Path, route: str
) -> None:
    before = store_state(iris_store, "iris")
    response = client.post(route, content=oversized(route), headers=AUTH)
    assert_error(
        response, 413, "body_too_large", f"request body exceeds the limit of {LIMIT} bytes"
    )
    assert store_state(iris_store, "iris") == before


def test_the_limit_is_checked_before_parsing(client: TestClient) -> None:
    # Not JSON at all: a 400 would mean the body was read and parsed first.
    response = client.post("/predict", content=b"{" * (LIMIT + 1))
    assert_error(response, 413, "body_too_large", "max_body_bytes")


def test_a_body_at_the_limit_is_accepted(client: TestClient) -> None:
    rows = [ROW] * 1
    body = orjson.dumps({"instances": rows})
    body = body + b" " * (LIMIT - len(body))
    assert len(body) == LIMIT
    assert client.post("/predict", content=body).status_code == 200


@pytest.mark.parametrize("route", ["/predict", "/train"])
def test_chunked_body_over_the_limit_is_413(
    client: TestClient, iris_store: Path, route: str
) -> None:
    before = store_state(iris_store, "iris")
    response = client.post(route, content=chunks(oversized(route)), headers=AUTH)
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "body_too_large", f"exceeds the limit of {LIMIT} bytes")
    assert store_state(iris_store, "iris") == before


def test_chunked_body_under_the_limit_is_served(client: TestClient) -> None:
    body = orjson.dumps({"instances": [ROW] * 3})
    response = client.post("/predict", content=chunks(body, 10))
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 3


# ------------------------------------------------------------------ framework errors
@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/nope"), ("POST", "/predict/extra"), ("GET", "/models/1/x")]
)
def test_unknown_route_is_404_with_the_error_body(
    client: TestClient, method: str, path: str
) -> None:
    response = client.request(method, path)
    assert_error(response, 404, "not_found", f"no route {method} {path}")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/predict", "POST"),
        ("PUT", "/train", "POST"),
        ("DELETE", "/models/1", "GET"),
        ("GET", "/models/1/activate", "POST"),
        ("POST", "/health/ready", "GET"),
    ],
)
def test_wrong_method_is_405_with_allow(
    client: TestClient, method: str, path: str, allow: str
) -> None:
    response = client.request(method, path)
    assert_error(response, 405, "method_not_allowed", f"method {method} is not allowed on {path}")
    assert response.headers["allow"] == allow


# ------------------------------------------------------------------ auth
PROTECTED = [("/train", TRAIN), ("/models/1/activate", None)]


@pytest.mark.parametrize(("path", "payload"), PROTECTED)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": API_KEY},
        {"Authorization": f"Basic {API_KEY}"},
    ],
    ids=["none", "no key", "blank key", "no scheme", "basic"],
)
def test_missing_credentials_are_401(
    client: TestClient, iris_store: Path, path: str, payload: object, headers: dict[str, str]
) -> None:
    before = store_state(iris_store, "iris")
    response = client.post(path, json=payload, headers=headers)
    assert_error(response, 401, "unauthorized", "'Authorization: Bearer <key>'")
    assert response.headers["www-authenticate"] == "Bearer"
    assert store_state(iris_store, "iris") == before


@pytest.mark.parametrize(("path", "payload"), PROTECTED)
@pytest.mark.parametrize("key", ["wrong", API_KEY + "x", API_KEY[:-1], API_KEY.upper()])
def test_wrong_key_is_403(
    client: TestClient, iris_store: Path, path: str, payload: object, key: str
) -> None:
    before = store_state(iris_store, "iris")
    response = client.post(path, json=payload, headers={"Authorization": f"Bearer {key}"})
    assert_error(response, 403, "forbidden", "the bearer key is not valid")
    assert store_state(iris_store, "iris") == before


def test_auth_is_checked_before_the_body(client: TestClient) -> None:
    assert_error(client.post("/train", content=b"{"), 401, "unauthorized")
    wrong = {"Authorization": "Bearer wrong"}
    assert_error(client.post("/train", content=b"{", headers=wrong), 403, "forbidden")


def test_the_right_key_is_accepted(client: TestClient) -> None:
    trained = client.post("/train", json=TRAIN, headers=AUTH)
    assert trained.status_code == 200 and trained.json()["version"] == 2
    lower_scheme = client.post("/models/1/activate", headers={"Authorization": f"bearer {API_KEY}"})
    assert lower_scheme.status_code == 200
    assert lower_scheme.json() == {"model": "iris", "active": 1}


def test_reads_need_no_key(client: TestClient) -> None:
    assert client.post("/predict", json={"instances": [ROW]}).status_code == 200
    for path in ("/models", "/models/1", "/health/live", "/health/ready", "/metrics"):
        assert client.get(path).status_code == 200, path


@pytest.fixture
def service_log() -> Iterator[list[logging.LogRecord]]:
    """Records of the ``service`` loggers (the app's logger does not propagate to root)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.DEBUG)
    logger = logging.getLogger("service")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("api_key", [None, ""])
def test_no_key_configured_opens_the_routes_and_warns_at_start_up(
    iris_store: Path, make_app: AppFactory, service_log: list[logging.LogRecord], api_key: object
) -> None:
    app = make_app(iris_store, api_key=api_key)
    assert not any("no API key" in r.getMessage() for r in service_log)  # not at import/build
    with TestClient(app) as client:
        warnings = [r for r in service_log if r.levelno == logging.WARNING]
        assert any(
            "no API key configured (SOFTMAX_API_KEY)" in r.getMessage()
            and "/train and /models/{version}/activate" in r.getMessage()
            for r in warnings
        ), [r.getMessage() for r in service_log]
        assert client.post("/train", json=TRAIN).status_code == 200
        assert client.post("/models/1/activate").status_code == 200


def test_a_configured_key_logs_no_warning(
    iris_store: Path, make_app: AppFactory, service_log: list[logging.LogRecord]
) -> None:
    with TestClient(make_app(iris_store)):
        pass
    assert not any("no API key" in r.getMessage() for r in service_log)


@pytest.mark.parametrize("route", ["/predict", "/train"])
def test_the_oversized_bodies_are_valid_under_a_larger_limit(
    iris_client: TestClient, route: str
) -> None:
    response = iris_client.post(route, content=chunks(oversized(route)), headers=AUTH)
    assert response.status_code == 200, response.text
