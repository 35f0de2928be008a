"""Training defaults against scikit-learn, each contender a whole process (issue 13).

Run from the repository root::

    .venv/bin/python bench/bench_defaults.py [--rounds 3] [--before main] [--json out.json]

Data sets, written once as ``.npz`` (``X`` float64, ``y`` int64) to a temporary directory:

* ``digits``: the bundled 8x8 digits (1,797 × 64, 10 classes);
* ``synthetic``: ``make_classification(n_samples=200000, n_features=100, n_informative=50,
  n_classes=10, random_state=0)``;
* ``1M×20``: ``make_classification(1_000_000, 20, n_informative=12, n_redundant=0,
  n_classes=5, random_state=7)``;
* ``1M×100`` (memory only): ``make_classification(1_000_000, 100, n_informative=50,
  n_classes=10, random_state=1)``.

Contenders, each a separate process started by this script, so that wall time covers the
interpreter, the imports, loading the file, fitting and scoring, and peak RSS (``ru_maxrss``
of that one process, from GNU ``/usr/bin/time``) is the whole process's:

* ``ours``: ``python -m model.train DATA.npz --dry-run --json --quiet``: the defaults, no
  training flag; it fits on the 70% train part with early stopping on the 10% validation part;
* ``lbfgs``: ``StandardScaler`` + ``LogisticRegression()`` (scikit-learn's defaults, max_iter
  100) on the same train + validation rows (80%), see ``sklearn_contender.py``;
* ``sgd``: ``StandardScaler`` + ``SGDClassifier(loss="log_loss", max_iter=5, tol=None,
  random_state=0)``, exactly 5 epochs, on the same 80%.

All are scored on the same 20% test rows (``train_val_test_split(y, 0.1, 0.2, seed=0)``, the
CLI's own split). Each data set runs ``--rounds`` rounds, the contenders one at a time in an
order that alternates between rounds; the table shows medians. Two more parts for issue 13's
memory item: the peak RSS of ``ours`` on the 1M×100 set as a multiple of ``X.nbytes`` (target
at most 2.5), and the time and tracemalloc peak of one ``model.optimizer.sgd_step`` on a
100,000 × 100 model here and at ``--before`` (a git ref, exported with ``git archive``), each
in its own process (``sgd_step_timing.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from common import REPO, environment
from numpy.lib import format as npy_format
from sklearn.datasets import make_classification

from model.data import load_builtin

BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable
TIME = "/usr/bin/time"  # GNU time, for each contender's peak RSS (see run_process)
CONTENDERS = ("ours", "lbfgs", "sgd")
TARGET_ACCURACY_GAP = 0.005  # within 0.5 points of lbfgs
TARGET_TIME_RATIO = 1.0  # at most lbfgs's whole-process wall time
TARGET_RSS_MULTIPLE = 2.5  # peak RSS of training on 1M × 100, as a multiple of X.nbytes
MB = 1e6


def _digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_builtin("digits")
    return np.asarray(data.X, dtype=np.float64), np.asarray(data.y)


def _generated(*args: int, **kwargs: int) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    return lambda: make_classification(*args, **kwargs)


DATASETS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
    "digits": _digits,
    "synthetic": _generated(
        n_samples=200_000, n_features=100, n_informative=50, n_classes=10, random_state=0
    ),
    "1M×20": _generated(
        n_samples=1_000_000,
        n_features=20,
        n_informative=12,
        n_redundant=0,
        n_classes=5,
        random_state=7,
    ),
    "1M×100": _generated(
        n_samples=1_000_000, n_features=100, n_informative=50, n_classes=10, random_state=1
    ),
}
COMPARED = ("digits", "synthetic", "1M×20")
MEMORY_SET = "1M×100"


@dataclass
class DataFile:
    name: str
    path: Path
    shape: tuple[int, int]
    x_bytes: int


@dataclass
class Run:
    """One whole process: wall time, peak RSS, exit status and its last stdout line as JSON."""

    seconds: float
    max_rss_bytes: int
    returncode: int
    result: dict[str, Any] | None
    error: str = ""


@dataclass
class Row:
    dataset: str
    contender: str
    runs: list[Run] = field(default_factory=list)

    @property
    def ok(self) -> list[Run]:
        return [r for r in self.runs if r.result is not None]

    def median(self, figure: Callable[[Run], float]) -> float:
        return statistics.median(figure(r) for r in self.ok) if self.ok else float("nan")

    @property
    def seconds(self) -> float:
        return self.median(lambda r: r.seconds)

    @property
    def in_process_seconds(self) -> float:
        """What the process itself timed: from after its imports to its answer."""
        return self.median(lambda r: r.result["seconds"])

    @property
    def fastest(self) -> float:
        """The least disturbed round: on a shared machine, load only ever adds time."""
        return min((r.seconds for r in self.ok), default=float("nan"))

    @property
    def max_rss_bytes(self) -> float:
        return self.median(lambda r: r.max_rss_bytes)

    def figure(self, key: str) -> float:
        """A figure of the last successful run (the fits are seeded; :meth:`varies` checks)."""
        return float(self.ok[-1].result[key]) if self.ok else float("nan")

    def varies(self, key: str) -> bool:
        return len({r.result[key] for r in self.ok}) > 1


def write_datasets(folder: Path, names: list[str]) -> dict[str, DataFile]:
    """Each set as ``folder/NAME.npz``, written once (an existing file is reused)."""
    files = {}
    for name in names:
        path = folder / f"{name.replace('×', 'x')}.npz"
        if not path.exists():
            started = time.perf_counter()
            X, y = DATASETS[name]()
            np.savez(path, X=np.asarray(X, dtype=np.float64), y=np.asarray(y, dtype=np.int64))
            log(f"wrote {path} {X.shape} in {time.perf_counter() - started:.1f} s")
            del X, y
        shape = _npz_shape(path)
        files[name] = DataFile(name, path, shape, shape[0] * shape[1] * 8)
    return files


def _npz_shape(path: Path) -> tuple[int, int]:
    """The shape of ``X`` in the archive, from its header alone."""
    with zipfile.ZipFile(path) as archive, archive.open("X.npy") as member:
        version = npy_format.read_magic(member)
        if version == (1, 0):
            shape, _, _ = npy_format.read_array_header_1_0(member)
        else:
            shape, _, _ = npy_format.read_array_header_2_0(member)
    return shape


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_process(command: list[str], pythonpath: Path, cwd: Path, timeout: float) -> Run:
    """Run ``command`` under GNU time, which reports the child's own ``ru_maxrss``.

    Not ``os.wait4`` on a child of this process: Python starts children with vfork, and Linux
    carries the memory high-water mark of the address space a process ``exec``s from into its
    ``ru_maxrss``, so every child would report this (large) process's peak instead of its own.
    ``time`` forks from its own few megabytes.
    """
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r") as rss,
    ):
        timed = [TIME, "--format", "%M", "--output", rss.name, *command]
        started = time.perf_counter()
        proc = subprocess.Popen(
            timed, stdout=out, stderr=err, cwd=cwd, env=env, start_new_session=True
        )
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # time and the contender: their own session
            proc.wait()
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace").strip().splitlines()
        stderr = err.read().decode(errors="replace").strip()
        # The last line is %M in kilobytes ("Command exited with non-zero status" may precede).
        reported = rss.read().split()
    max_rss = int(reported[-1]) * 1024 if reported and reported[-1].isdigit() else 0
    try:
        result = json.loads(stdout[-1]) if proc.returncode == 0 and stdout else None
    except json.JSONDecodeError:
        result = None
    error = "" if result is not None else f"exit {proc.returncode}: {stderr[-500:]}"
    return Run(seconds, max_rss, proc.returncode, result, error)


def contender_command(contender: str, data: DataFile) -> list[str]:
    if contender == "ours":
        return [PYTHON, "-m", "model.train", str(data.path), "--dry-run", "--json", "--quiet"]
    return [PYTHON, str(BENCH / "sklearn_contender.py"), contender, str(data.path)]


def measure(data: DataFile, contenders: tuple[str, ...], rounds: int, timeout: float) -> list[Row]:
    rows = {c: Row(data.name, c) for c in contenders}
    for round_index in range(rounds):
        order = contenders if round_index % 2 == 0 else contenders[::-1]
        for contender in order:
            run = run_process(contender_command(contender, data), REPO, data.path.parent, timeout)
            rows[contender].runs.append(run)
            log(
                f"  {data.name:9s} round {round_index + 1} {contender:5s} "
                f"{run.seconds:7.2f} s  {run.max_rss_bytes / MB:7.0f} MB  "
                + (_describe(contender, run.result) if run.result else f"FAILED {run.error}")
            )
    return list(rows.values())


def _describe(contender: str, result: dict[str, Any]) -> str:
    figures = f"acc {result['test_accuracy']:.4f} log-loss {result['test_log_loss']:.4f}"
    if contender == "ours":
        settings = result["settings"]
        chosen = ", ".join(
            f"{k} {settings[k]:.3g}" if isinstance(settings[k], float) else f"{k} {settings[k]}"
            for k in ("learning_rate", "batch_size", "schedule", "l2")
            if k in settings
        )
        stopped = f"; {result['stopped']}" if result.get("stopped") else ""
        return (
            f"{figures} (epochs {result['epochs_run']}, best {result['best_epoch']}; "
            f"{chosen}; in-process {result['seconds']} s{stopped})"
        )
    warned = f"; {'; '.join(result['warnings'])}" if result["warnings"] else ""
    return (
        f"{figures} (n_iter {result['n_iter']}, fit {result['fit_seconds']} s, "
        f"in-process {result['seconds']} s{warned})"
    )


@contextmanager
def exported(ref: str) -> Iterator[tuple[Path, str]]:
    """``model/`` at git ``ref`` in a temporary directory, and the commit it resolved to."""
    git = ["git", "--no-optional-locks", "-C", str(REPO)]
    commit = subprocess.run(
        [*git, "rev-parse", "--short", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="bench-before-") as folder:
        archive = subprocess.run(
            [*git, "archive", "--format=tar", commit, "model"], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
        yield Path(folder), commit


def measure_steps(
    checkouts: dict[str, Path], rounds: int, steps: int, timeout: float
) -> dict[str, dict[str, Any]]:
    """``sgd_step_timing.py`` per checkout and momentum, alternating, ``rounds`` times."""
    runs: dict[str, list[dict[str, Any]]] = {}
    labels = list(checkouts)
    for round_index in range(rounds):
        order = labels if round_index % 2 == 0 else labels[::-1]
        for label in order:
            for momentum in (0.9, 0.0):
                command = [
                    PYTHON,
                    str(BENCH / "sgd_step_timing.py"),
                    "--steps",
                    str(steps),
                    "--momentum",
                    str(momentum),
                ]
                run = run_process(command, checkouts[label], BENCH, timeout)
                if run.result is None:
                    log(f"  sgd_step {label} momentum {momentum}: FAILED {run.error}")
                    continue
                expected = checkouts[label] / "model" / "optimizer.py"
                if Path(run.result["module"]) != expected:
                    raise RuntimeError(f"imported {run.result['module']}, expected {expected}")
                runs.setdefault(f"{label}, momentum {momentum}", []).append(run.result)
                log(
                    f"  sgd_step {label:6s} momentum {momentum}: median "
                    f"{run.result['median_ms']:.1f} ms, peak "
                    f"{run.result['peak_step_bytes'] / MB:.0f} MB"
                )
    return {
        key: {
            "median_ms": statistics.median(r["median_ms"] for r in results),
            "process_medians_ms": [r["median_ms"] for r in results],
            "peak_step_bytes": max(r["peak_step_bytes"] for r in results),
            "weights_bytes": results[0]["weights_bytes"],
        }
        for key, results in runs.items()
    }


def print_comparison(rows: list[Row], files: dict[str, DataFile]) -> list[str]:
    """The table, and the issue's verdicts on the synthetic set (returned as lines)."""
    print(
        f"\n{'dataset':9s}  {'contender':9s}  {'test acc':>8s}  {'log-loss':>8s}  "
        f"{'wall (s)':>8s}  {'/lbfgs':>6s}  {'in-proc':>7s}  {'peak RSS':>9s}  {'× X':>5s}  "
        f"{'acc - lbfgs':>11s}  ok/runs"
    )
    by_key = {(r.dataset, r.contender): r for r in rows}
    for row in rows:
        lbfgs = by_key.get((row.dataset, "lbfgs"))
        ratio = gap = ""
        if lbfgs and lbfgs.ok and row.ok and row.contender != "lbfgs":
            ratio = f"{row.seconds / lbfgs.seconds:.2f}"
            gap = f"{(row.figure('test_accuracy') - lbfgs.figure('test_accuracy')) * 100:+.2f} pt"
        x_bytes = files[row.dataset].x_bytes
        varies = row.ok and row.varies("test_accuracy")
        print(
            f"{row.dataset:9s}  {row.contender:9s}  {row.figure('test_accuracy'):8.4f}  "
            f"{row.figure('test_log_loss'):8.4f}  {row.seconds:8.2f}  {ratio:>6s}  "
            f"{row.in_process_seconds:7.2f}  "
            f"{row.max_rss_bytes / MB:6.0f} MB  {row.max_rss_bytes / x_bytes:5.1f}  "
            f"{gap:>11s}  {len(row.ok)}/{len(row.runs)}"
            + (" (accuracy varied between rounds)" if varies else "")
        )
    print(
        "rounds (wall s): "
        + "; ".join(
            f"{r.dataset} {r.contender} " + " ".join(f"{run.seconds:.2f}" for run in r.runs)
            for r in rows
        )
    )
    verdicts = []
    ours, lbfgs = by_key.get(("synthetic", "ours")), by_key.get(("synthetic", "lbfgs"))
    if ours and lbfgs and ours.ok and lbfgs.ok:
        gap = lbfgs.figure("test_accuracy") - ours.figure("test_accuracy")
        ratio = ours.seconds / lbfgs.seconds
        verdicts += [
            f"{'MET   ' if gap <= TARGET_ACCURACY_GAP else 'MISSED'} synthetic: accuracy within "
            f"{TARGET_ACCURACY_GAP * 100:.1f} pt of lbfgs (ours - lbfgs = {-gap * 100:+.2f} pt)",
            f"{'MET   ' if ratio <= TARGET_TIME_RATIO else 'MISSED'} synthetic: wall time at most "
            f"{TARGET_TIME_RATIO:.1f}× lbfgs's (ours/lbfgs = {ratio:.2f} on medians, "
            f"{ours.fastest / lbfgs.fastest:.2f} on each one's fastest round)",
        ]
    for (dataset, contender), row in by_key.items():
        other = by_key.get((dataset, "lbfgs"))
        if contender != "ours" or dataset == "synthetic" or not (row.ok and other and other.ok):
            continue
        gap = other.figure("test_accuracy") - row.figure("test_accuracy")
        ratio = row.seconds / other.seconds
        verdicts.append(
            f"{'MET   ' if gap <= TARGET_ACCURACY_GAP and ratio <= TARGET_TIME_RATIO else 'MISSED'}"
            f" {dataset} (item 1, all sets): ours - lbfgs = {-gap * 100:+.2f} pt, "
            f"ours/lbfgs wall = {ratio:.2f}"
        )
    for row in rows:
        if len(row.ok) < len(row.runs):
            verdicts.append(
                f"FAILED {row.dataset} {row.contender}: "
                + "; ".join(r.error for r in row.runs if r.result is None)
            )
    return verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="processes per contender (median)")
    parser.add_argument(
        "--only",
        choices=("comparison", "memory", "step"),
        action="append",
        help="run only these parts (repeatable; default: all three)",
    )
    parser.add_argument(
        "--before", default="main", help="git ref whose sgd_step is the 'before' of the step part"
    )
    parser.add_argument("--steps", type=int, default=40, help="timed sgd_step calls per process")
    parser.add_argument(
        "--data-dir", type=Path, help="keep the .npz files here (reused if present)"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per process")
    parser.add_argument("--json", type=Path, help="also write the raw figures to this file")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    parts = set(args.only or ("comparison", "memory", "step"))

    env = environment()
    load_start = os.getloadavg()
    print(
        f"source {env['source']}\npython {env['python']}, numpy {env['numpy']}, "
        f"scikit-learn {env['sklearn']}, {env['nproc']} CPUs ({env['cpu']}), "
        f"BLAS: {'; '.join(env['blas'])}, rounds: {args.rounds}",
        flush=True,
    )
    raw: dict[str, Any] = {"environment": env, "rounds": args.rounds}
    verdicts: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-defaults-") as scratch:
        folder = args.data_dir or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        names = [
            *(COMPARED if "comparison" in parts else ()),
            *((MEMORY_SET,) if "memory" in parts else ()),
        ]
        files = write_datasets(folder, names)
        if "comparison" in parts:
            rows = []
            for name in COMPARED:
                log(f"{name}: {files[name].shape}, X {files[name].x_bytes / MB:.0f} MB")
                rows += measure(files[name], CONTENDERS, args.rounds, args.timeout)
            verdicts += print_comparison(rows, files)
            raw["comparison"] = [asdict(r) for r in rows]
        if "memory" in parts:
            data = files[MEMORY_SET]
            log(f"{MEMORY_SET}: {data.shape}, X {data.x_bytes / MB:.0f} MB")
            (row,) = measure(data, ("ours",), args.rounds, args.timeout)
            raw["memory"] = asdict(row) | {"x_bytes": data.x_bytes}
            if row.ok:
                multiple = row.max_rss_bytes / data.x_bytes
                print(
                    f"\n{MEMORY_SET} ours: peak RSS {row.max_rss_bytes / MB:.0f} MB (median of "
                    + ", ".join(f"{r.max_rss_bytes / MB:.0f}" for r in row.ok)
                    + f") = {multiple:.2f} × X ({data.x_bytes / MB:.0f} MB); wall "
                    f"{row.seconds:.1f} s; acc {row.figure('test_accuracy'):.4f}, "
                    f"log-loss {row.figure('test_log_loss'):.4f}"
                )
                verdicts.append(
                    f"{'MET   ' if multiple <= TARGET_RSS_MULTIPLE else 'MISSED'} {MEMORY_SET}: "
                    f"peak RSS at most {TARGET_RSS_MULTIPLE}× X ({multiple:.2f}×)"
                )
            else:
                verdicts.append(f"FAILED {MEMORY_SET} ours: {row.runs[-1].error}")
    if "step" in parts:
        with exported(args.before) as (before, commit):
            label = f"before ({args.before} {commit})"
            steps = measure_steps(
                {label: before, "after": REPO}, args.rounds, args.steps, args.timeout
            )
        print(f"\nsgd_step, 100,000 × 100 model, minibatch 32 rows; after = {env['source']}")
        for key, figures in steps.items():
            print(
                f"  {key:40s} median {figures['median_ms']:6.1f} ms (process medians "
                + ", ".join(f"{m:.1f}" for m in figures["process_medians_ms"])
                + f"); peak allocated in a step {figures['peak_step_bytes'] / MB:.0f} MB = "
                f"{figures['peak_step_bytes'] / figures['weights_bytes']:.2f} × the weights"
            )
        raw["step"] = steps
    load_end = os.getloadavg()
    print(
        "\nload average (1, 5, 15 min) at start "
        + " ".join(f"{x:.2f}" for x in load_start)
        + ", at end "
        + " ".join(f"{x:.2f}" for x in load_end)
    )
    if verdicts:
        print("\nTargets:\n  " + "\n  ".join(verdicts))
    if args.json:
        raw["load_average"] = {"start": load_start, "end": load_end}
        args.json.write_text(json.dumps(raw, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
