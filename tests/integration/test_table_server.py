"""A table with numeric, categorical and missing cells, end to end through the real server:
trained by the CLI from Parquet, served, predicted with named rows (strings, nulls), learned
online, and the store read back offline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from model import LocalArtifactStore, ModelRepository

from .conftest import LiveServerFactory
from .server import REPO_ROOT, child_env


def people_table(path: Path, n: int = 240) -> Path:
    rng = np.random.default_rng(1)
    colour = rng.choice(["red", "blue", "green"], size=n).astype(object)
    size = rng.normal(size=n)
    age = rng.normal(40, 10, size=n)
    label = np.where((colour == "red") | (size > 1.0), "yes", "no")
    age_cells = [None if rng.random() < 0.1 else float(a) for a in age]
    colour_cells = [None if rng.random() < 0.1 else str(c) for c in colour]
    table = {"age": age_cells, "colour": colour_cells, "size": size, "label": label.tolist()}
    pq.write_table(pa.table(table), path)
    return path


def train(data: Path, store: Path) -> None:
    command = [sys.executable, "-m", "model.train", str(data), "--label", "label"]
    command += ["--store", str(store), "--epochs", "30"]
    done = subprocess.run(
        command, cwd=REPO_ROOT, env=child_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert f"loading {data}" in done.stderr  # the loader's line


def test_table_trains_serves_predicts_learns_and_round_trips(
    live_server: LiveServerFactory, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    train(people_table(tmp_path / "people.parquet"), store)
    offline = ModelRepository(LocalArtifactStore(store)).load("people")
    encoder = offline.encoder
    assert encoder is not None
    rows = [
        {"age": 41.0, "colour": "red", "size": 0.2},
        {"age": None, "colour": "blue", "size": -1.0},  # null: the training mean
        {"age": 38.0, "colour": None, "size": 1.5},  # null: the "missing" category
        {"age": 50.0, "colour": "purple", "size": 0.1},  # unseen: all zeros
    ]
    positional = [[row["age"], row["colour"], row["size"]] for row in rows]
    expected = offline.estimator.predict_proba(encoder.encode_rows(positional))

    server = live_server(store)
    refusing = live_server(store, "--unknown-categories", "refuse")
    with server.client() as client:
        detail = client.get("/models/1").json()
        assert [feature["name"] for feature in detail["raw_features"]] == [
            "age",
            "colour",
            "size",
        ]
        colour = detail["raw_features"][1]
        assert colour["kind"] == "categorical" and colour["fill"] == "missing"
        assert colour["categories"] == ["blue", "green", "missing", "red"]
        assert detail["raw_features"][0]["fill"] == encoder.features[0].fill
        assert detail["feature_names"][1] == "colour=blue"
        openapi = client.get("/openapi.json").json()
        assert "raw_features" in openapi["components"]["schemas"]["VersionDetail"]["properties"]

        named = client.post("/predict", json={"instances": rows})
        assert named.status_code == 200, named.text
        np.testing.assert_allclose(named.json()["probabilities"], expected, rtol=0, atol=1e-12)
        as_lists = client.post("/predict", json={"instances": positional})
        assert as_lists.json()["probabilities"] == named.json()["probabilities"]

        bad = client.post("/predict", json={"instances": [{**rows[0], "age": "old"}]})
        assert bad.status_code == 422
        assert bad.json()["error"]["message"] == (
            "instances: expected a number at row 0, column 'age', got 'old' (a string)"
        )

        update = client.post(
            "/train", json={"instances": rows, "labels": ["yes", "no", "yes", "no"]}
        )
        assert update.status_code == 200, update.text
        assert update.json()["version"] == 2

    with refusing.client() as client:
        refused = client.post("/predict", json={"instances": rows})
        assert refused.status_code == 422
        error = refused.json()["error"]
        assert error["type"] == "unknown_category" and error["row"] == 3
        assert "unknown category 'purple' for column 'colour' at row 3" in error["message"]

    # The store read back offline: the online version has the same encoding and answers as
    # the server does.
    again = ModelRepository(LocalArtifactStore(store)).load("people", 2)
    assert again.encoder == encoder
    with server.client() as client:
        served = client.post("/predict", json={"instances": rows, "version": 2}).json()
    X = encoder.encode_rows(positional)
    np.testing.assert_allclose(
        served["probabilities"], again.estimator.predict_proba(X), rtol=0, atol=1e-12
    )
