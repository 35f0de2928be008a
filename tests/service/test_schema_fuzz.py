"""The HTTP contract, fuzzed: schemathesis generates requests from the app's own OpenAPI
document and checks that every answer is documented, typed as documented, and never a 5xx.

The app runs inside its lifespan with an iris model loaded (4 features, so random rows of 4
numbers sometimes score) and the bearer key supplied, so the handlers are reached. Requests
that fit the schema (positive) and that break it (negative) are both generated.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.app import create_app

from .helpers import AUTH, AppFactory, TestClient, save_model, settings_for

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

# (method, path, takes input): an operation without input has no negative cases.
OPERATIONS = [
    ("POST", "/predict", True),
    ("POST", "/train", True),
    ("GET", "/models", True),
    ("GET", "/models/{version}", True),
    ("POST", "/models", True),
    ("POST", "/models/{version}/activate", True),
    ("GET", "/health/live", False),
    ("GET", "/health/ready", False),
    ("GET", "/metrics", False),
    # The Open Inference Protocol (V2); {model_name} is any string: unknown ones answer 404.
    ("GET", "/v2", False),
    ("GET", "/v2/health/live", False),
    ("GET", "/v2/health/ready", False),
    ("GET", "/v2/models/{model_name}", True),
    ("GET", "/v2/models/{model_name}/ready", True),
    ("GET", "/v2/models/{model_name}/versions/{model_version}", True),
    ("GET", "/v2/models/{model_name}/versions/{model_version}/ready", True),
    ("POST", "/v2/models/{model_name}/infer", True),
    ("POST", "/v2/models/{model_name}/versions/{model_version}/infer", True),
    ("POST", "/v2/models/{model_name}/train", True),
    ("GET", "/dashboard/state", False),
]
RUNS = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
    for method, path, takes_input in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if takes_input or mode is GenerationMode.POSITIVE
]
PROTECTED = [
    ("POST", "/train"),
    ("POST", "/models"),
    ("POST", "/models/{version}/activate"),
    ("POST", "/v2/models/{model_name}/train"),
]
FUZZ = settings(
    max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), database=None
)


# A small body limit and row cap, so that generated requests also meet those limits.
# The model named: POST /models creates others in the store, and a restarted lifespan must
# still know which one to serve.
APP_SETTINGS: dict[str, Any] = {
    "max_body_bytes": 16 * 1024,
    "max_rows": 20,
    "reload_interval": 0.5,
    "model": "iris",
}


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[schemathesis.BaseSchema]:
    store = tmp_path_factory.mktemp("fuzz") / "store"
    save_model(store, "iris")
    app = create_app(settings_for(store, **APP_SETTINGS))
    # Loading the schema starts the app's lifespan; schemathesis keeps it for every call.
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    try:
        yield schema
    finally:
        asgi.shutdown_lifespans()  # stop the app's store poller


def test_the_fuzzed_operations_are_all_the_operations(api_schema: schemathesis.BaseSchema) -> None:
    documented = {
        (method.upper(), path)
        for path, methods in api_schema.raw_schema["paths"].items()
        for method in methods
    }
    assert documented == {(method, path) for method, path, _ in OPERATIONS}


@pytest.mark.parametrize(("method", "path", "mode"), RUNS)
def test_every_operation_answers_as_documented(
    api_schema: schemathesis.BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    # Fewer cases for the V2 routes: their bodies share one parser, their paths one loader.
    @settings(FUZZ, max_examples=40 if path.startswith("/v2") else FUZZ.max_examples)
    @given(case=api_schema[path][method].as_strategy(mode))
    def fuzz(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=AUTH, checks=CHECKS)

    fuzz()


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer wrong"}, 403)],
    ids=["no key", "wrong key"],
)
def test_protected_operations_refuse_without_the_key_as_documented(
    api_schema: schemathesis.BaseSchema,
    method: str,
    path: str,
    headers: dict[str, str],
    status: int,
) -> None:
    @settings(FUZZ, max_examples=20)
    @given(case=api_schema[path][method].as_strategy())
    def fuzz(case: schemathesis.Case) -> None:
        case.headers = {
            k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"
        }
        response = case.call_and_validate(headers=headers, checks=CHECKS)
        assert response.status_code == status

    fuzz()


def test_the_documented_examples_are_accepted(store: Path, make_app: AppFactory) -> None:
    save_model(store, "digits")  # what `make run` serves, and the examples are written for
    app = make_app(store, **(APP_SETTINGS | {"model": "digits"}))
    with TestClient(app) as client:
        document = client.get("/openapi.json").json()
        for path, method in (("/predict", "post"), ("/train", "post")):
            content = document["paths"][path][method]["requestBody"]["content"]
            examples = content["application/json"]["examples"]
            assert examples
            for name, example in examples.items():
                response = client.post(path, json=example["value"], headers=AUTH)
                assert response.status_code == 200, (name, response.text)
