"""Loading benchmark: ``model.data.load_dataset`` against pyarrow's own read, time and peak RSS.

Run from the repository root::

    .venv/bin/python bench/bench_data.py [--rounds 3] [--json out.json]

The data set is the training benchmark's synthetic one (``make_classification(n_samples=200000,
n_features=100, n_informative=50, n_classes=10, random_state=0)``), written once into a
temporary directory as CSV (pyarrow's writer: 387 MB) and as Parquet (pyarrow's defaults,
snappy). Each measurement runs in a fresh process (so peak RSS is that load's own), in turn:

* ``ours``: ``load_dataset(path, label="label")``, the float64 matrix and labels the trainer
  gets (CSV: pyarrow's streaming reader, 4 MB blocks; Parquet: a column at a time);
* ``pyarrow``: ``pyarrow.csv.read_csv`` / ``pyarrow.parquet.read_table`` with their defaults,
  the raw read into an Arrow table and nothing else;
* ``pyarrow+numpy``: that read, then the conversion to one float64 ``(200000, 100)`` matrix
  (``np.column_stack`` of the feature columns) and the labels as a NumPy array.

Figures are medians over ``--rounds``; peak RSS is the child's ``VmHWM`` (``ru_maxrss`` would
start from the parent's size: Linux keeps it across ``execve``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from common import REPO, source_state

KINDS = ("ours", "pyarrow", "pyarrow+numpy")
MATRIX_BYTES = 200_000 * 100 * 8


def write_files(folder: Path) -> dict[str, Path]:
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=200_000, n_features=100, n_informative=50, n_classes=10, random_state=0
    )
    columns: dict[str, Any] = {f"f{i}": X[:, i] for i in range(X.shape[1])}
    columns["label"] = y
    table = pa.table(columns)
    paths = {"csv": folder / "synthetic.csv", "parquet": folder / "synthetic.parquet"}
    pa_csv.write_csv(table, paths["csv"])
    pq.write_table(table, paths["parquet"])
    return paths


def child(kind: str, path: str) -> None:
    """One load in this process; prints seconds and peak RSS as JSON."""
    started = time.perf_counter()
    if kind == "ours":
        from model.data import load_dataset

        dataset = load_dataset(path, label="label")
        shape = dataset.X.shape
    else:
        table = pq.read_table(path) if path.endswith(".parquet") else pa_csv.read_csv(path)
        shape = (table.num_rows, table.num_columns)
        if kind == "pyarrow+numpy":
            features = [table.column(name).to_numpy() for name in table.column_names[:-1]]
            X = np.column_stack(features).astype(np.float64, copy=False)
            table.column("label").to_numpy()
            shape = X.shape
    seconds = time.perf_counter() - started
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))
    print(json.dumps({"seconds": seconds, "peak_rss": peak, "shape": list(shape)}))


def measure(kind: str, path: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(path)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    print(f"source: {source_state('model/reader.py', 'model/data.py')}")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, pyarrow {pa.__version__}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load average "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-data-") as folder:
        paths = write_files(Path(folder))
        for fmt, path in paths.items():
            size = path.stat().st_size
            print(f"\n{fmt}: {path.name}, {size / 1e6:.0f} MB; float64 matrix 160 MB")
            rounds: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
            for _ in range(args.rounds):  # interleaved, so drifting load hits all alike
                for kind in KINDS:
                    rounds[kind].append(measure(kind, path))
            for kind in KINDS:
                seconds = statistics.median(r["seconds"] for r in rounds[kind])
                peak = statistics.median(r["peak_rss"] for r in rounds[kind])
                results[f"{fmt}/{kind}"] = {
                    "seconds": seconds,
                    "peak_rss_mb": peak / 1e6,
                    "peak_over_matrix": peak / MATRIX_BYTES,
                    "all_seconds": [r["seconds"] for r in rounds[kind]],
                }
                print(
                    f"  {kind:<14} {seconds:6.2f} s   peak RSS {peak / 1e6:6.0f} MB "
                    f"({peak / MATRIX_BYTES:.2f}x the matrix)"
                )
            ours = results[f"{fmt}/ours"]["seconds"]
            reference = results[f"{fmt}/pyarrow+numpy"]["seconds"]
            print(f"  ours / (pyarrow read + conversion) = {ours / reference:.2f}")
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
