"""deploy/grafana/: the dashboard is valid JSON that Grafana's file provisioning loads (a
dashboard model, not an export wrapper), laid out on Grafana's 24-column grid, and its
queries name only metrics the service exports; the provisioning files are valid."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.app import create_app
from service.metrics import Metrics

from .helpers import settings_for

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARD = GRAFANA / "softmax-serve.json"

# PromQL words that are not metric names (functions are recognised by their parenthesis).
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
_KEYWORDS |= {"and", "or", "unless", "inf", "nan"}
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum")}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects.

    >>> sorted(metric_names('sum by (le) (rate(a_bucket{x=~"b|c"}[$__rate_interval])) / b'))
    ['a_bucket', 'b']
    """
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # label values
    stripped = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", stripped)  # matchers, ranges
    stripped = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", stripped)  # groupings
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", stripped):
        following = stripped[match.end() :].lstrip()
        if following.startswith("(") or match.group().lower() in _KEYWORDS:
            continue  # a function or an operator
        names.add(match.group())
    return names


def exported_names(store: Path) -> set[str]:
    """Every sample name the service's /metrics can show, from its registry's collectors."""
    app = create_app(settings_for(store))
    metrics: Metrics = app.state.softmax.metrics
    names = set()
    for family in metrics.registry.collect():
        names.add(family.name)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ()))
    return names


def targets(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for panel in dashboard["panels"] for t in panel.get("targets", [])]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def test_the_dashboard_is_a_provisionable_dashboard_model(dashboard: dict[str, Any]) -> None:
    # File provisioning takes the dashboard model itself: no "__inputs" of an export, no
    # numeric "id" (Grafana assigns it), a stable uid for links.
    assert "__inputs" not in dashboard and "dashboard" not in dashboard
    assert dashboard.get("id") is None
    assert dashboard["uid"] == "softmax-serve" and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]


def test_every_query_names_only_metrics_the_service_exports(
    dashboard: dict[str, Any], store: Path
) -> None:
    exported = exported_names(store)
    used: set[str] = set()
    for target in targets(dashboard):
        names = metric_names(target["expr"])
        assert names, f"no metric in {target['expr']!r}"
        unknown = names - exported
        assert not unknown, f"{target['expr']!r} names metrics the service does not export"
        used |= names
    # What the dashboard is for: each of these is charted.
    wanted = {
        "softmax_http_requests_total",  # request rate per route
        "softmax_http_request_duration_seconds_bucket",  # latency quantiles per route
        "softmax_rows_predicted_total",
        "softmax_updates_applied_total",
        "softmax_updates_rejected_total",  # refused, by reason
        "softmax_active_version",
        "softmax_prequential_accuracy",
        "softmax_drift_detected",
    }
    assert wanted <= used, wanted - used


def test_a_misspelt_metric_would_be_caught(store: Path) -> None:
    exported = exported_names(store)
    assert metric_names("rate(softmax_http_request_total[5m])") - exported == {
        "softmax_http_request_total"
    }
    assert metric_names("histogram_quantile(0.9, sum by (le) (rate(x_bucket[1m])))") == {"x_bucket"}


def test_the_provisioning_files_point_at_the_dashboard() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/softmax-serve.yaml").read_text())
    assert provider["apiVersion"] == 1
    (entry,) = provider["providers"]
    assert entry["type"] == "file" and entry["options"]["path"].startswith("/")
    source = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yaml").read_text())
    assert source["apiVersion"] == 1
    assert [d["type"] for d in source["datasources"]] == ["prometheus"]
