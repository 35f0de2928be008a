"""The dashboard in-process: the page and its assets, its data after updates, a refusal, a
rollback; the key it may need; the quantiles it computes. (The page in a real browser:
tests/integration/test_dashboard_browser.py.)"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.config import Settings, keyring_for
from service.dashboard_schemas import DashboardState
from service.keys import KeyConfigError
from service.routes.dashboard import ASSETS
from service.traffic import histogram_quantile

from .helpers import AUTH, AppFactory, TestClient, assert_error, save_model
from .test_guard import guarded_model


@pytest.fixture
def iris_guarded(store: Path) -> tuple[np.ndarray, np.ndarray]:
    return guarded_model(store, "iris")


def train(client: TestClient, X: np.ndarray, y: np.ndarray, **extra: Any) -> Any:
    body = {"instances": X.tolist(), "labels": y.tolist(), **extra}
    return client.post("/train", json=body, headers=AUTH)


def test_the_page_and_its_assets_come_from_the_service_alone(
    iris_client: TestClient,
) -> None:
    page = iris_client.get("/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    # Every file the page names is one of its own, served with the right type.
    names = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert names and all(n.startswith("dashboard/assets/") or n == "data:," for n in names)
    types = {"js": "text/javascript", "css": "text/css"}
    for name in (n for n in names if n != "data:,"):
        asset = iris_client.get("/" + name)
        assert asset.status_code == 200, name
        assert asset.headers["content-type"].startswith(types[name.rpartition(".")[2]])
        assert asset.content == (ASSETS / name.rpartition("/")[2]).read_bytes()
    assert "MIT" in iris_client.get("/dashboard/assets/uPlot.LICENSE").text
    assert_error(
        iris_client.get("/dashboard/assets/index.html"),
        404,
        "not_found",
        "no dashboard asset 'index.html'",
        field="name",
    )


def test_the_state_follows_updates_refusals_and_a_rollback(
    store: Path, iris_guarded: tuple[np.ndarray, np.ndarray], make_app: AppFactory
) -> None:
    X, y = iris_guarded
    with TestClient(make_app(store)) as client:
        first = client.get("/dashboard/state").json()
        assert first["model"] == "iris" and first["active"]["version"] == 1
        assert first["prequential"]["series"]["version"] == []
        assert [e["kind"] for e in first["events"]] == ["serving"]
        for start in (0, 8):
            assert train(client, X[start : start + 8], y[start : start + 8]).status_code == 200
        refused = train(client, X[16:24], y[16:24], learning_rate=1.0, passes=10)
        assert refused.status_code == 409
        assert client.post("/predict", json={"instances": X[:3].tolist()}).status_code == 200
        state = client.get("/dashboard/state").json()
        DashboardState.model_validate(state)  # the documented shape

        active = state["active"]
        made = {name: active[name] for name in ("version", "kind", "parent", "source", "key")}
        assert made == {
            "version": 3,
            "kind": "update",
            "parent": 2,
            "source": "online",
            "key": "default",
        }
        assert active["guard"]["rows"] > 0
        assert [v["version"] for v in state["versions"]] == [3, 2, 1]
        assert [v["active"] for v in state["versions"]] == [True, False, False]
        series = state["prequential"]["series"]
        assert series["version"] == [2, 3]
        # The rolling window after the last update is the runtime's own window.
        assert series["accuracy"][-1] == pytest.approx(state["prequential"]["accuracy"])
        assert series["log_loss"][-1] == pytest.approx(state["prequential"]["log_loss"])
        assert state["prequential"]["rows"] == 16
        newest = state["events"][0]
        assert newest["kind"] == "refused" and newest["reason"] == "update_rejected:rate"
        assert newest["key"] == "default" and newest["version"] == 3
        assert newest["message"] == refused.json()["error"]["message"]
        assert state["traffic"]["refused"] == {"update_rejected:rate": 1.0}
        routes = {r["route"]: r for r in state["traffic"]["routes"]}
        assert routes["POST /train"]["requests"] == 3 and routes["POST /predict"]["requests"] == 1
        assert not any(route.startswith("GET /dashboard") for route in routes)
        assert state["traffic"]["totals"]["rows_predicted"] == 3
        assert state["drift"]["stream"]["alarms"] == 0

        assert client.post("/models/1/activate", headers=AUTH).status_code == 200
        events = client.get("/dashboard/state").json()["events"]
        assert events[0] | {"at": None} == {
            "at": None,
            "kind": "rollback",
            "version": 1,
            "previous": 3,
            "source": "offline",
            "key": None,
            "by": "default",  # the key that asked for the rollback
        }


def test_an_offline_version_picked_up_from_the_store_is_an_activation(
    iris_store: Path, make_app: AppFactory
) -> None:
    with TestClient(make_app(iris_store, reload_interval=0.05)) as client:
        assert save_model(iris_store, "iris", seed=1) == 2

        def activated() -> list[dict[str, Any]]:
            events = client.get("/dashboard/state").json()["events"]
            return [e for e in events if e["kind"] == "activation"]

        found: list[dict[str, Any]] = []
        for _ in range(100):  # bounded: the poller runs every 0.05 s
            found = activated()
            if found:
                break
        assert [(e["version"], e["previous"], e["source"]) for e in found] == [(2, 1, "offline")]


def test_the_data_needs_a_key_when_the_setting_asks(iris_store: Path, make_app: AppFactory) -> None:
    with TestClient(make_app(iris_store, dashboard_requires_key=True)) as client:
        assert client.get("/dashboard").status_code == 200  # the page holds no data
        assert_error(client.get("/dashboard/state"), 401, "unauthorized")
        wrong = {"Authorization": "Bearer nope"}
        assert_error(client.get("/dashboard/state", headers=wrong), 403, "forbidden")
        assert client.get("/dashboard/state", headers=AUTH).json()["active"]["version"] == 1
    with TestClient(make_app(iris_store)) as client:  # open by default
        assert client.get("/dashboard/state").status_code == 200


def test_requiring_a_key_with_none_configured_is_refused_at_start_up(store: Path) -> None:
    settings = Settings(store=store, dashboard_requires_key=True)
    with pytest.raises(KeyConfigError, match="--dashboard-requires-key"):
        keyring_for(settings)


def test_an_empty_store_shows_no_model(store: Path, make_app: AppFactory) -> None:
    with TestClient(make_app(store)) as client:
        state = client.get("/dashboard/state").json()
    assert state["active"] is None and state["versions"] == [] and state["events"] == []
    DashboardState.model_validate(state)


@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.99])
def test_histogram_quantile_interpolates_as_promql_does(q: float) -> None:
    # Uniform latencies over (0, 0.1]: the quantile of the histogram is q * 0.1 exactly.
    bounds = [0.01 * i for i in range(1, 11)]
    values = (np.arange(10_000) + 0.5) / 10_000 * 0.1  # 1,000 in each bucket
    buckets = {b: float(np.sum(values <= b)) for b in bounds}
    buckets[math.inf] = float(values.size)
    assert histogram_quantile(q, buckets) == pytest.approx(q * 0.1, abs=1e-9)
    assert histogram_quantile(q, {math.inf: 0.0}) is None
    # Beyond the highest finite bound: that bound, as histogram_quantile() answers.
    assert histogram_quantile(q, {0.5: 0.0, math.inf: 3.0}) == 0.5


def test_the_page_names_each_of_its_assets() -> None:
    page = (ASSETS / "index.html").read_text()
    shipped = {entry.name for entry in ASSETS.iterdir()}
    assert {"uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE", "dashboard.js"} <= shipped
    for name in re.findall(r'dashboard/assets/([^"]+)"', page):
        assert name in shipped
