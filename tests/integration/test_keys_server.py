"""Named API keys through the real server: a keys file, permissions, a rate limit, 2 workers."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .checks import StoreOracle, digits_minibatches
from .conftest import LiveServerFactory


def test_named_keys_from_a_file_with_two_workers(
    live_server: LiveServerFactory, live_digits_store: Path, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.toml"
    keys.write_text(
        '[feeder]\nkey = "feeder-key"\npermissions = ["train"]\nrequests_per_second = 0.001\n\n'
        f'[ops]\nkey_sha256 = "{hashlib.sha256(b"ops-key").hexdigest()}"\n'
        'permissions = ["admin"]\n'
    )
    server = live_server(live_digits_store, "--api-keys-file", str(keys), "--workers", "2")
    batch = digits_minibatches(1, seed=3)[0].payload()
    feeder, ops = {"Authorization": "Bearer feeder-key"}, {"Authorization": "Bearer ops-key"}
    store = StoreOracle(live_digits_store, "digits")
    with server.client() as client:
        response = client.post("/models/1/activate", headers={"Authorization": "Bearer nope"})
        assert response.status_code == 401 and response.json()["error"]["type"] == "unauthorized"
        response = client.post("/models/1/activate", headers=feeder)
        assert response.status_code == 403 and response.json()["error"]["type"] == "forbidden"
        assert store.versions() == [1]

        # Each worker has its own buckets: the feeder's one request per 1000 s, per worker.
        answers = [client.post("/train", json=batch, headers=feeder) for _ in range(6)]
        statuses = sorted(response.status_code for response in answers)
        assert statuses.count(200) in (1, 2) and set(statuses) <= {200, 429}, statuses
        limited = next(response for response in answers if response.status_code == 429)
        assert limited.headers["retry-after"] == "1000"
        assert limited.json()["error"]["type"] == "rate_limited"
        assert store.versions() == list(range(1, 2 + statuses.count(200))), "429: no change"

        response = client.post("/models/1/activate", headers=ops)
        assert response.status_code == 200, response.text
        metrics = client.get("/metrics").text
        assert 'softmax_train_requests_total{key="feeder",outcome="rate_limited"}' in metrics
        assert "feeder-key" not in metrics and "ops-key" not in metrics
