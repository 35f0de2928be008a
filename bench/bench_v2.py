"""The Open Inference Protocol (V2) routes against the native ones, side by side in one run.

Run from the repository root (needs ``wrk``; installs nothing)::

    .venv/bin/python bench/bench_v2.py [--rounds 5] [--duration 6] [--only infer|train]

1. ``infer``: a digits model (``python -m model.train``-equivalent, into a temporary store);
   our server (``python -m service``, 1 worker) and the bare FastAPI app (``bench/bare_app.py``)
   on free localhost ports. For each round, alternating the order, ``wrk`` POSTs 100 rows of
   64 features to: ``/v2/models/digits/infer`` as one FP64 binary tensor with every output
   binary (``Inference-Header-Content-Length``; what ``tritonclient`` sends), the same as JSON
   tensor data, native ``/predict`` (JSON), and the bare app's ``/predict``. Medians over
   rounds, and ratios.
2. ``train``: the 100,000-feature x 100-class model of ``bench_serving.py``; a bounded httpx
   loop with a few concurrent clients POSTs the same 32-row minibatch as (a) native JSON
   ``/train`` (23.6 MB), (b) ``/v2/models/big/train`` with FP64 binary rows and INT64 class
   indices (25.6 MB), (c) the same with FP32 rows (12.8 MB). Only 200s count and the active
   version must have moved by exactly that many. Each variant on a fresh copy of the store and
   a fresh server, in the order given, one after the other (``--train-rounds`` times,
   alternating).

The machine is measured as it is: on a shared machine, read medians and ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from bench_serving import (
    API_KEY,
    BIG_CLASSES,
    BIG_FEATURES,
    LUA_TEMPLATE,
    REPO,
    Series,
    active_version,
    bare_argv,
    fmt_run,
    free_port,
    make_big_store,
    ours_argv,
    post_loop,
    run_wrk,
    server,
    versions,
)

_INFER_LUA_HEADERS = """
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Inference-Header-Content-Length"] = "%(length)d"
"""


def v2_request(
    X: np.ndarray, *, binary: bool, labels: np.ndarray | None = None
) -> tuple[bytes, int | None]:
    """A V2 body (and the JSON's length when binary data follow) for rows ``X``."""
    datatype = {np.dtype("float64"): "FP64", np.dtype("float32"): "FP32"}[X.dtype]
    tensor: dict[str, Any] = {"name": "input", "shape": list(X.shape), "datatype": datatype}
    tails = []
    if binary:
        tensor["parameters"] = {"binary_data_size": X.nbytes}
        tails.append(X.tobytes())
    else:
        tensor["data"] = X.ravel().tolist()
    inputs = [tensor]
    if labels is not None:
        label: dict[str, Any] = {"name": "label", "shape": [len(labels)], "datatype": "INT64"}
        if binary:
            label["parameters"] = {"binary_data_size": labels.astype("<i8").nbytes}
            tails.append(labels.astype("<i8").tobytes())
        else:
            label["data"] = labels.tolist()
        inputs.append(label)
    header: dict[str, Any] = {"inputs": inputs}
    if binary and labels is None:
        header["parameters"] = {"binary_data_output": True}
    text = json.dumps(header).encode()
    return (text + b"".join(tails), len(text)) if binary else (text, None)


def lua(work: Path, name: str, body: bytes, json_length: int | None) -> Path:
    body_path = work / f"{name}.body"
    body_path.write_bytes(body)
    script = LUA_TEMPLATE % {"auth": "", "body": str(body_path), "response": ""}
    if json_length is not None:
        script = _INFER_LUA_HEADERS % {"length": json_length} + script
        # The template's JSON content type comes after ours: drop it.
        script = script.replace('wrk.headers["Content-Type"] = "application/json"\n', "")
    path = work / f"{name}.lua"
    path.write_text(script)
    return path


def bench_infer(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from model import LocalArtifactStore, ModelRepository, SoftmaxRegression
    from model.data import load_builtin

    data = load_builtin("digits")
    store = work / "store-digits"
    estimator = SoftmaxRegression(epochs=20, seed=0).fit(data.X, data.y)
    ModelRepository(LocalArtifactStore(store)).save(estimator, "digits")
    X = np.ascontiguousarray(data.X[:100], dtype=np.float64)
    ready = json.dumps({"instances": X[:1].tolist()}).encode()
    native = json.dumps({"instances": X.tolist()}).encode()
    binary, length = v2_request(X, binary=True)
    as_json, _ = v2_request(X, binary=False)
    targets = {
        "v2-binary": ("ours", "/v2/models/digits/infer", lua(work, "v2-binary", binary, length)),
        "v2-json": ("ours", "/v2/models/digits/infer", lua(work, "v2-json", as_json, None)),
        "predict": ("ours", "/predict", lua(work, "predict", native, None)),
        "bare": ("bare", "/predict", lua(work, "bare", native, None)),
    }
    series = {name: Series(name) for name in targets}
    with contextlib.ExitStack() as stack:
        urls = {}
        for who in ("ours", "bare"):
            port = free_port()
            argv = bare_argv(port) if who == "bare" else ours_argv(args, port, store)
            urls[who] = stack.enter_context(server(who, argv, port, work, ready))
        # Check each body answers 200 with 100 rows before timing anything.
        for name, (who, path, _) in targets.items():
            body = (work / f"{name}.body").read_bytes()
            headers = (
                {"Inference-Header-Content-Length": str(length)}
                if name == "v2-binary"
                else {"Content-Type": "application/json"}
            )
            answer = httpx.post(urls[who] + path, content=body, headers=headers, timeout=30)
            assert answer.status_code == 200, (name, answer.text[:300])
        for who, path, script in targets.values():
            run_wrk(args, urls[who] + path, script, args.warmup)
        for round_number in range(1, args.rounds + 1):
            order = list(targets) if round_number % 2 else list(reversed(targets))
            for name in order:
                who, path, script = targets[name]
                run = run_wrk(args, urls[who] + path, script, args.duration)
                series[name].runs.append(run)
                print(f"round {round_number} {name:9s} {fmt_run(run)}", flush=True)
    print(f"\n100 rows x 64 features, medians over {args.rounds} rounds x {args.duration:g} s:")
    summary: dict[str, Any] = {}
    bare = series["bare"].median("rps")
    predict = series["predict"].median("rps")
    for name, s in series.items():
        rps = s.median("rps")
        print(
            f"{name:9s} {rps:8.0f} req/s  p50 {s.median('p50_ms'):6.2f} ms  p99 "
            f"{s.median('p99_ms'):6.2f} ms   /bare {rps / bare:.2f}   /predict {rps / predict:.2f}"
        )
        summary[name] = {"rps_median": rps, "p50_ms": s.median("p50_ms"), "runs": len(s.runs)}
    return summary


# ---------------------------------------------------------------------------- big /train
def big_bodies() -> dict[str, tuple[bytes, dict[str, str], str]]:
    rng = np.random.default_rng(1)
    # The rows of bench_serving.big_train_body: three decimals, 32 rows.
    X = np.round(rng.standard_normal((32, BIG_FEATURES)), 3)
    y = rng.integers(0, BIG_CLASSES, 32)
    auth = {"authorization": f"Bearer {API_KEY}"}
    native = json.dumps({"instances": X.tolist(), "labels": y.tolist()}).encode()
    bodies = {"json /train": (native, {**auth, "content-type": "application/json"}, "/train")}
    for name, rows in (("v2 binary FP64", X), ("v2 binary FP32", X.astype(np.float32))):
        body, length = v2_request(rows, binary=True, labels=y)
        headers = {**auth, "Inference-Header-Content-Length": str(length)}
        bodies[name] = (body, headers, "/v2/models/big/train")
    return bodies


def train_loop(
    args: argparse.Namespace, url: str, body: bytes, headers: dict[str, str]
) -> dict[str, Any]:
    statuses, latencies, seconds = post_loop(args, url, body, headers)
    ok = statuses.count(200)
    return {
        "ok": ok,
        "requests": len(statuses),
        "seconds": seconds,
        "updates_per_s": ok / seconds,
        "latency_median_s": statistics.median(latencies) if latencies else None,
    }


def bench_train(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    store = work / "store-big"
    started = time.perf_counter()
    make_big_store(store)
    print(f"\nbig model created in {time.perf_counter() - started:.1f} s", flush=True)
    bodies = big_bodies()
    ready = json.dumps({"instances": [[0.0] * BIG_FEATURES]}).encode()
    limit = str(2 * max(len(body) for body, _, _ in bodies.values()))
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in bodies}
    for round_number in range(1, args.train_rounds + 1):
        order = list(bodies) if round_number % 2 else list(reversed(bodies))
        for name in order:
            body, headers, path = bodies[name]
            copy = work / "store-big-run"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(store, copy)
            port = free_port()
            argv = ours_argv(args, port, copy, flags=args.big_flags, max_body_bytes=limit)
            with server(f"big-{round_number}", argv, port, work, ready) as url:
                before = active_version(url)
                result = train_loop(args, url + path, body, headers)
                after = active_version(url)
            if after - before != result["ok"]:
                raise SystemExit(f"{name}: {result['ok']} x 200, version moved {after - before}")
            result["body_mb"] = len(body) / 1e6
            results[name].append(result)
            print(
                f"round {round_number} {name:15s} {len(body) / 1e6:5.1f} MB  "
                f"{result['ok']:3d} x 200 of {result['requests']} in {result['seconds']:5.1f} s: "
                f"{result['updates_per_s']:6.2f} durable updates/s, median latency "
                f"{(result['latency_median_s'] or 0) * 1e3:6.0f} ms",
                flush=True,
            )
    print(
        f"\nbig model /train, medians over {args.train_rounds} rounds ({args.big_clients} clients):"
    )
    summary = {}
    json_rate = statistics.median(r["updates_per_s"] for r in results["json /train"])
    for name, runs in results.items():
        rate = statistics.median(r["updates_per_s"] for r in runs)
        print(
            f"{name:15s} {rate:6.2f} updates/s   /json {rate / json_rate:5.2f}   "
            f"/2.28 {rate / 2.28:5.2f}"
        )
        summary[name] = {"updates_per_s_median": rate, "runs": runs}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["infer", "train"])
    parser.add_argument("--rounds", type=int, default=5, help="infer rounds (median)")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of wrk warm-up")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections")
    parser.add_argument("--train-rounds", type=int, default=3, help="big /train rounds")
    parser.add_argument("--big-duration", type=float, default=20.0, help="seconds per variant")
    parser.add_argument("--big-max-requests", type=int, default=200, help="cap per variant")
    parser.add_argument("--big-clients", type=int, default=2, help="concurrent httpx clients")
    parser.add_argument("--big-flags", default="", help="extra server flags for big /train")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    args.ours_module = "service"
    found = versions()
    print("versions:", found)
    print("load average (1, 5, 15 min):", os.getloadavg())
    results: dict[str, Any] = {"versions": found, "load_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-v2-") as tmp:
        work = Path(tmp)
        if args.only in (None, "infer"):
            results["infer"] = bench_infer(args, work)
        if args.only in (None, "train"):
            results["train"] = bench_train(args, work)
    results["load_end"] = os.getloadavg()
    print("load average at the end:", results["load_end"])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
