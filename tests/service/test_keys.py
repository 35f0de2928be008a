"""Named API keys: permissions, 401/403, per-key rate limits, names (never keys) in metrics."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.routing import APIRoute
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from service.app import create_app
from service.errors import TooManyRequestsError
from service.keys import Caller, KeyConfigError, build_keyring
from service.ratelimit import RateLimiter
from service.routes.predict import RawRoute

from .helpers import API_KEY, AppFactory, TestClient, assert_error, settings_for, store_state

ROW = [5.1, 3.5, 1.4, 0.2]
TRAIN = {"instances": [ROW], "labels": ["setosa"]}
KEYS = {
    "ci-trainer": {"key": "trainer-key", "permissions": ["train"]},
    "ops": {"key_sha256": hashlib.sha256(b"ops-key").hexdigest(), "permissions": ["admin"]},
    "dashboard": {"key": "reader-key", "permissions": ["predict"]},
    "slow": {"key": "slow-key", "permissions": ["train"], "requests_per_second": 0.001},
}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def client(iris_store: Path, make_app: AppFactory) -> Iterator[TestClient]:
    """Named keys only (no single api_key)."""
    app = make_app(iris_store, api_key=None, api_keys=orjson.dumps(KEYS).decode())
    with TestClient(app) as client:
        yield client


def train_requests(client: TestClient) -> dict[tuple[str, str], float]:
    """``softmax_train_requests_total`` by (key, outcome)."""
    text = client.get("/metrics").text
    return {
        (sample.labels["key"], sample.labels["outcome"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "softmax_train_requests"
        for sample in family.samples
        if sample.name == "softmax_train_requests_total"
    }


def test_a_train_only_key_trains_but_cannot_activate(client: TestClient, iris_store: Path) -> None:
    assert client.post("/train", json=TRAIN, headers=bearer("trainer-key")).status_code == 200
    before = store_state(iris_store, "iris")
    response = client.post("/models/1/activate", headers=bearer("trainer-key"))
    assert_error(response, 403, "forbidden", "the key 'ci-trainer' lacks the 'admin' permission")
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    assert store_state(iris_store, "iris") == before


def test_an_admin_key_activates_and_trains(client: TestClient) -> None:
    # Given as its SHA-256 only: the service never held the key itself.
    assert client.post("/train", json=TRAIN, headers=bearer("ops-key")).json()["version"] == 2
    response = client.post("/models/1/activate", headers=bearer("ops-key"))
    assert response.status_code == 200, response.text
    assert response.json() == {"model": "iris", "active": 1}


def test_a_predict_only_key_cannot_train(client: TestClient, iris_store: Path) -> None:
    before = store_state(iris_store, "iris")
    response = client.post("/train", json=TRAIN, headers=bearer("reader-key"))
    assert_error(response, 403, "forbidden", "'dashboard' lacks the 'train' permission")
    assert store_state(iris_store, "iris") == before


@pytest.mark.parametrize("path", ["/train", "/models/1/activate"])
@pytest.mark.parametrize("key", ["unknown", "trainer-key ".upper(), "ops-ke", "ops-keyy"])
def test_an_unknown_key_is_401(client: TestClient, iris_store: Path, path: str, key: str) -> None:
    before = store_state(iris_store, "iris")
    response = client.post(path, json=TRAIN, headers=bearer(key))
    assert_error(response, 401, "unauthorized", "the bearer key is not valid")
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert store_state(iris_store, "iris") == before


def test_a_missing_key_is_401(client: TestClient) -> None:
    response = client.post("/train", json=TRAIN)
    assert_error(response, 401, "unauthorized", "'Authorization: Bearer <key>'")
    assert response.headers["www-authenticate"] == "Bearer"


def test_the_single_api_key_still_works_beside_named_keys(
    iris_store: Path, make_app: AppFactory
) -> None:
    app = make_app(iris_store, api_keys=orjson.dumps(KEYS).decode())  # and api_key=API_KEY
    with TestClient(app) as client:
        assert client.post("/train", json=TRAIN, headers=bearer(API_KEY)).status_code == 200
        assert client.post("/models/1/activate", headers=bearer(API_KEY)).status_code == 200
        assert client.post("/train", json=TRAIN, headers=bearer("trainer-key")).status_code == 200
        assert train_requests(client)[("default", "applied")] == 1


def test_the_request_rate_limit_answers_429_and_changes_nothing(
    client: TestClient, iris_store: Path
) -> None:
    assert client.post("/train", json=TRAIN, headers=bearer("slow-key")).status_code == 200
    before = store_state(iris_store, "iris")
    for _ in range(3):
        response = client.post("/train", json=TRAIN, headers=bearer("slow-key"))
        error = assert_error(response, 429, "rate_limited", "the key 'slow' is over its rate limit")
        assert "0.001 requests per second" in error["message"]
        # One request per 1000 s: the wait is just under 1000 s, Retry-After rounds it up.
        wait = float(error["message"].rsplit("retry in ", 1)[1].removesuffix(" s"))
        assert 999 < wait <= 1000
        assert response.headers["retry-after"] == "1000"
        # The wait as a number too, the one the message gives (to the millisecond).
        assert isinstance(error["retry_after"], float) and error["retry_after"] == wait
    assert store_state(iris_store, "iris") == before
    # Other keys have their own buckets, or none: not throttled.
    for _ in range(3):
        assert client.post("/train", json=TRAIN, headers=bearer("trainer-key")).status_code == 200


def test_metrics_count_train_requests_by_key_name_never_the_key(client: TestClient) -> None:
    client.post("/train", json=TRAIN, headers=bearer("trainer-key"))
    client.post(
        "/train", json={"instances": [[1.0]], "labels": ["setosa"]}, headers=bearer("ops-key")
    )
    client.post("/train", json=TRAIN, headers=bearer("slow-key"))
    client.post("/train", json=TRAIN, headers=bearer("slow-key"))
    client.post("/train", json=TRAIN, headers=bearer("nobody"))
    client.post("/train", json=TRAIN, headers=bearer("reader-key"))
    assert train_requests(client) == {
        ("ci-trainer", "applied"): 1,
        ("ops", "feature_count"): 1,
        ("slow", "applied"): 1,
        ("slow", "rate_limited"): 1,
        ("unauthenticated", "unauthorized"): 1,
        ("unauthenticated", "forbidden"): 1,
    }
    text = client.get("/metrics").text
    assert not any(key in text for key in ("trainer-key", "ops-key", "slow-key", "reader-key"))


def test_without_keys_the_caller_is_anonymous(iris_store: Path, make_app: AppFactory) -> None:
    with TestClient(make_app(iris_store, api_key=None)) as client:
        assert client.post("/train", json=TRAIN).status_code == 200
        assert train_requests(client) == {("anonymous", "applied"): 1}


def test_refusals_are_logged_with_the_name_not_the_key(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="service.auth"):
        client.post("/models/1/activate", headers=bearer("trainer-key"))
        client.post("/train", json=TRAIN, headers=bearer("wrong-key"))
    messages = [r.getMessage() for r in caplog.records if r.name == "service.auth"]
    assert any("'ci-trainer'" in m and "/models/1/activate" in m for m in messages), messages
    assert any("/train (unauthorized)" in m for m in messages), messages
    assert not any("trainer-key" in m or "wrong-key" in m for m in messages)


# ------------------------------------------------------------------ /predict closed by a setting
@pytest.fixture
def closed(iris_store: Path, make_app: AppFactory) -> Iterator[TestClient]:
    app = make_app(iris_store, api_keys=orjson.dumps(KEYS).decode(), predict_requires_key=True)
    with TestClient(app) as client:
        yield client


def test_a_closed_predict_needs_a_key_with_predict(closed: TestClient) -> None:
    predict = {"instances": [ROW]}
    response = closed.post("/predict", json=predict)
    assert_error(response, 401, "unauthorized", "'Authorization: Bearer <key>'")
    assert_error(closed.post("/predict", json=predict, headers=bearer("x")), 401, "unauthorized")
    for key in ("reader-key", "trainer-key", "ops-key", API_KEY):
        response = closed.post("/predict", json=predict, headers=bearer(key))
        assert response.status_code == 200, (key, response.text)
    # The refusal is counted under the route, like any answer of /predict.
    assert 'route="/predict",status="401"' in closed.get("/metrics").text


def test_an_open_predict_installs_nothing(iris_store: Path) -> None:
    def predict_app(**overrides: Any) -> Any:
        app = create_app(settings_for(iris_store, **overrides))
        route = next(r for r in app.router.routes if isinstance(r, APIRoute))
        assert isinstance(route, RawRoute) and route.path == "/predict"
        return route.app

    # Open: the route's own handler, unwrapped; closed: a guard in front of it.
    assert predict_app().__qualname__.startswith("request_response")
    assert "close_route" in predict_app(predict_requires_key=True).__qualname__


def test_train_is_a_raw_route_behind_predict_and_documents_its_bearer_key(
    iris_store: Path,
) -> None:
    app = create_app(settings_for(iris_store))
    routes = [r for r in app.router.routes if isinstance(r, APIRoute)]
    assert [r.path for r in routes[:2]] == ["/predict", "/train"]
    assert isinstance(routes[1], RawRoute)  # auth runs in the route: guard_train
    with TestClient(app) as client:
        document = client.get("/openapi.json").json()
    operation = document["paths"]["/train"]["post"]
    assert operation["security"] == [{"api_key": []}]
    assert document["components"]["securitySchemes"]["api_key"]["scheme"] == "bearer"
    assert list(document["paths"])[:2] == ["/predict", "/train"]


def test_train_refuses_a_key_and_a_rate_before_reading_the_body(client: TestClient) -> None:
    def post_invalid_json(key: str) -> int:
        headers = {"Content-Type": "application/json", **bearer(key)}
        return client.post("/train", content=b"{not json", headers=headers).status_code

    assert (post_invalid_json("nobody"), post_invalid_json("reader-key")) == (401, 403)
    assert client.post("/train", json=TRAIN, headers=bearer("slow-key")).status_code == 200
    assert post_invalid_json("slow-key") == 429  # the request token is taken before the body
    assert train_requests(client)[("slow", "rate_limited")] == 1


def test_an_update_waits_in_a_thread_of_the_train_pool(iris_client: TestClient) -> None:
    threads: list[str] = []
    app: Any = iris_client.app
    app.state.softmax.runtime.on_swap(lambda _: threads.append(threading.current_thread().name))
    response = iris_client.post("/train", json=TRAIN, headers=bearer(API_KEY))
    assert response.status_code == 200
    # The request's own thread committed it (a batch of one): not the event loop's thread.
    assert threads and threads[-1].startswith("softmax-train")


# ------------------------------------------------------------------ the limiter itself
class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def limiter_for(clock: Clock, **limit: float) -> RateLimiter:
    spec = {"k": {"key": "k", "permissions": ["train"], **limit}}
    keyring = build_keyring(None, SecretStr(orjson.dumps(spec).decode()), None)
    return RateLimiter(keyring.limits(), clock=clock)


CALLER = Caller("k", frozenset({"train"}))


def test_the_rows_bucket_refills_at_its_rate_and_a_refusal_takes_nothing() -> None:
    clock = Clock()
    limiter = limiter_for(clock, rows_per_second=10, burst_seconds=2)  # holds 20 rows
    limiter.take_rows(CALLER, 15)
    with pytest.raises(TooManyRequestsError) as refused:
        limiter.take_rows(CALLER, 10)  # 5 left: 5 missing, 0.5 s
    assert "retry in 0.500 s" in refused.value.message
    assert refused.value.headers == {"Retry-After": "1"}
    assert refused.value.retry_after == 0.5
    clock.now += 0.5
    limiter.take_rows(CALLER, 10)  # the refusal took nothing: exactly 10 there now
    with pytest.raises(TooManyRequestsError):
        limiter.take_rows(CALLER, 1)
    clock.now += 1000  # refills to the burst, no further
    limiter.take_rows(CALLER, 20)
    with pytest.raises(TooManyRequestsError):
        limiter.take_rows(CALLER, 1)


def test_a_batch_larger_than_the_bucket_passes_when_full_and_leaves_a_debt() -> None:
    clock = Clock()
    limiter = limiter_for(clock, rows_per_second=10)  # holds 10 rows
    limiter.take_rows(CALLER, 50)  # never refused for ever: taken from a full bucket
    with pytest.raises(TooManyRequestsError) as refused:
        limiter.take_rows(CALLER, 1)
    # 40 rows of debt, then 1: the long-run rate of 10 rows/s holds.
    assert refused.value.headers == {"Retry-After": "5"}
    assert "retry in 4.100 s" in refused.value.message
    assert refused.value.retry_after == 4.1


def test_requests_and_unlimited_keys() -> None:
    clock = Clock()
    limiter = limiter_for(clock, requests_per_second=2, burst_seconds=1.5)  # holds 3
    for _ in range(3):
        limiter.take_request(CALLER)
    with pytest.raises(TooManyRequestsError, match="2 requests per second"):
        limiter.take_request(CALLER)
    clock.now += 0.5
    limiter.take_request(CALLER)
    other = Caller("other", frozenset({"train"}))  # no limits configured: never throttled
    for _ in range(1000):
        limiter.take_request(other)
        limiter.take_rows(other, 1000)
        limiter.take_rows(CALLER, 1000)  # a key without a rows limit


# ------------------------------------------------------------------ the key settings
def keyring_error(keys: object) -> str:
    with pytest.raises(KeyConfigError) as error:
        build_keyring(None, SecretStr(orjson.dumps(keys).decode()), None)
    return str(error.value)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({}, "expected an object of named keys"),
        ([], "expected an object of named keys"),
        ({"a b": {"key": "k", "permissions": ["train"]}}, "key name 'a b'"),
        ({"a": {"permissions": ["train"]}}, "a: Value error, give exactly one of 'key'"),
        ({"a": {"key": "k", "key_sha256": "0" * 64, "permissions": ["train"]}}, "exactly one"),
        ({"a": {"key": "  ", "permissions": ["train"]}}, "'key' is blank"),
        ({"a": {"key_sha256": "abc", "permissions": ["train"]}}, "a.key_sha256: String should"),
        ({"a": {"key": "k", "permissions": []}}, "a.permissions: List should have at least 1"),
        ({"a": {"key": "k", "permissions": ["fly"]}}, "a.permissions.0: Input should be"),
        ({"a": {"key": "k", "permissions": ["train"], "rows_per_second": 0}}, "greater than 0"),
        ({"a": {"key": "k", "permissions": ["train"], "burst": 2}}, "a.burst: Extra inputs"),
        (
            {
                "a": {"key": "k", "permissions": ["train"]},
                "b": {"key": "k", "permissions": ["admin"]},
            },
            "'a' and 'b' have the same key",
        ),
    ],
)
def test_invalid_keys_are_refused_in_one_line_without_the_key(keys: object, message: str) -> None:
    error = keyring_error(keys)
    assert error.startswith(("--api-keys (SOFTMAX_API_KEYS): ", "--api-key / --api-keys")), error
    assert message in error
    assert "\n" not in error
    assert "'k'" not in error


def test_the_keys_file_may_be_toml_or_json(tmp_path: Path) -> None:
    toml = tmp_path / "keys.toml"
    toml.write_text(
        '[ci]\nkey = "ci-key"\npermissions = ["train"]\nrows_per_second = 500\n\n'
        f'[ops]\nkey_sha256 = "{hashlib.sha256(b"ops-key").hexdigest()}"\n'
        'permissions = ["admin"]\n'
    )
    as_json = tmp_path / "keys.json"
    as_json.write_text(orjson.dumps(KEYS).decode())
    keyring = build_keyring(SecretStr(API_KEY), None, toml)
    assert keyring.names == ["default", "ci", "ops"]
    assert keyring.identify("ci-key") == Caller("ci", frozenset({"predict", "train"}))
    assert keyring.identify("ops-key") == Caller("ops", frozenset({"predict", "train", "admin"}))
    assert keyring.identify(API_KEY) == Caller("default", frozenset({"predict", "train", "admin"}))
    assert keyring.identify("nope") is None
    assert list(keyring.limits()) == ["ci", "ops"]
    assert build_keyring(None, None, as_json).names == list(KEYS)
    with pytest.raises(KeyConfigError, match="the key name 'ci-trainer' is used twice"):
        build_keyring(None, SecretStr(orjson.dumps(KEYS).decode()), as_json)
    with pytest.raises(KeyConfigError, match="the key name 'default' is used twice"):
        build_keyring(
            SecretStr("x"), SecretStr('{"default": {"key": "y", "permissions": ["train"]}}'), None
        )
