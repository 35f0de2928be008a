"""The training CLI: one real subprocess for the entry point, the rest in-process via main()."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix
from sklearn.metrics import log_loss as sklearn_log_loss

from model.data import load_builtin
from model.repository import ModelRepository
from model.splits import train_val_test_split
from model.store import LocalArtifactStore
from model.train import SEARCH_L2_FACTORS, main


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_cli_trains_digits_and_reports_held_out_metrics(
    tmp_path: Path,
    subprocess_env: dict[str, str],
    repo_root: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = tmp_path / "store"
    completed = subprocess.run(
        [sys.executable, "-m", "model.train", "builtin:digits", "--store", str(store)]
        + ["--json", "--quiet"],
        cwd=repo_root,
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    report = last_json(completed.stdout)

    assert report["model"] == "digits" and report["version"] == 1
    assert report["test_accuracy"] >= 0.95  # against lbfgs: tests/model/test_defaults.py
    assert 0 < report["test_log_loss"] < 0.5
    assert sorted(report["per_class"]) == [str(d) for d in range(10)]
    matrix = np.array(report["confusion_matrix"])
    assert matrix.shape == (10, 10)
    assert np.trace(matrix) / matrix.sum() == pytest.approx(report["test_accuracy"])
    assert [report["per_class"][str(d)]["support"] for d in range(10)] == matrix.sum(1).tolist()
    assert 1 <= report["epochs_run"] <= 100 and report["seconds"] > 0

    # The stored model reproduces the report, checked with scikit-learn's metrics on the same
    # seeded test split.
    assert LocalArtifactStore(store).versions("digits") == [1]
    loaded = ModelRepository(LocalArtifactStore(store)).load("digits")
    data = load_builtin("digits")
    _, _, test = train_val_test_split(data.y, 0.1, 0.2, 0)
    proba = loaded.estimator.predict_proba(data.X[test])
    predicted = loaded.estimator.predict(data.X[test])
    assert accuracy_score(data.y[test], predicted) == pytest.approx(report["test_accuracy"])
    expected_loss = sklearn_log_loss(data.y[test], proba, labels=loaded.estimator.classes_)
    assert report["test_log_loss"] == pytest.approx(expected_loss, rel=1e-9)
    assert np.array_equal(confusion_matrix(data.y[test], predicted), matrix)
    assert loaded.meta["metrics"]["accuracy"] == report["test_accuracy"]
    assert loaded.meta["training"]["epochs_run"] == report["epochs_run"]
    assert loaded.estimator.feature_names_ == data.feature_names

    # A second run is version 2; --if-store-empty then leaves the store alone.
    code, out, _ = run_main(
        capsys, "builtin:digits", "--store", str(store), "--json", "--quiet", "--epochs", "3"
    )
    assert code == 0 and last_json(out)["version"] == 2
    assert last_json(out)["epochs_run"] == 3
    code, out, _ = run_main(capsys, "builtin:digits", "--store", str(store), "--if-store-empty")
    assert code == 0
    assert "already holds digits; not training" in out
    assert LocalArtifactStore(store).versions("digits") == [1, 2]


def test_if_store_empty_trains_into_an_empty_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    code, out, _ = run_main(
        capsys, "builtin:iris", "--store", str(store), "--if-store-empty", "--quiet"
    )
    assert code == 0
    assert f"model iris version 1 written to {store}" in out
    assert LocalArtifactStore(store).versions("iris") == [1]


def test_cross_validation_reports_mean_and_std(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(tmp_path / "store")
    code, out, _ = run_main(capsys, "builtin:iris", "--store", store, "--cv", "3", "--json")
    assert code == 0
    cv = last_json(out)["cv"]
    assert cv["k"] == 3 and len(cv["accuracy_folds"]) == 3
    assert cv["accuracy_mean"] == pytest.approx(np.mean(cv["accuracy_folds"]))
    assert cv["accuracy_std"] == pytest.approx(np.std(cv["accuracy_folds"]))
    assert cv["accuracy_mean"] >= 0.85
    stored = ModelRepository(LocalArtifactStore(store)).load("iris").meta["training"]["cv"]
    assert stored == {k: v for k, v in cv.items() if k != "accuracy_folds"}

    code, out, _ = run_main(capsys, "builtin:iris", "--store", store, "--cv", "3", "--quiet")
    assert code == 0
    text = f"3-fold CV accuracy {cv['accuracy_mean']:.4f} ± {cv['accuracy_std']:.4f}"
    assert text in out


def test_search_reports_the_best_grid_point_and_trains_with_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(tmp_path / "store")
    code, out, _ = run_main(capsys, "builtin:iris", "--store", store, "--search", "--json")
    assert code == 0
    search = last_json(out)["search"]
    grid = search["grid"]
    rows = last_json(out)["settings"]  # one learning rate (the probe's), l2 around 1 / rows
    train_rows = 105  # iris: 70% of 150
    assert [g["l2"] for g in grid] == [factor / train_rows for factor in SEARCH_L2_FACTORS]
    assert len({g["learning_rate"] for g in grid}) == 1 and rows["l2"] == search["best"]["l2"]
    assert search["best"] == min(grid, key=lambda g: g["val_log_loss"])
    params = ModelRepository(LocalArtifactStore(store)).load("iris").estimator.resolved_params()
    assert (params["learning_rate"], params["l2"]) == (
        search["best"]["learning_rate"],
        search["best"]["l2"],
    )


def write_csv(path: Path, rows: list[list[object]]) -> Path:
    path.write_text("\n".join(",".join(str(v) for v in row) for row in rows) + "\n")
    return path


def test_a_non_numeric_cell_exits_2_naming_file_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_csv(
        tmp_path / "bad.csv",
        [["a", "b", "label"], [1.0, 2.0, "x"], [1.5, "oops", "y"], [2.0, 3.0, "x"]],
    )
    store = tmp_path / "store"
    code, out, err = run_main(capsys, str(csv), "--label", "label", "--store", str(store))
    assert code == 2
    loading, error = err.strip().splitlines()  # the loader's line on stderr first (0.3)
    assert loading == f"loading {csv} (0.0 MB)"
    assert error == f"error: {csv}, line 3, column 'b': expected a number, got 'oops'"
    assert out == ""
    assert LocalArtifactStore(store).models() == []


def test_feature_subset_from_a_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    n = 200
    a, b, c = rng.normal(size=(3, n))
    label = np.where(a + 2 * c > 0, "pos", "neg")
    rows = [["a", "b", "c", "label"]]
    rows += [list(r) for r in zip(a.tolist(), b.tolist(), c.tolist(), label.tolist(), strict=True)]
    csv = write_csv(tmp_path / "toy.csv", rows)
    store = str(tmp_path / "store")
    code, out, err = run_main(
        capsys, str(csv), "--label", "label", "--features", "c,a", "--store", store, "--json"
    )
    assert code == 0, err
    report = last_json(out)
    assert report["model"] == "toy" and report["version"] == 1
    assert report["test_accuracy"] >= 0.9
    loaded = ModelRepository(LocalArtifactStore(store)).load("toy")
    assert loaded.estimator.feature_names_ == ("c", "a")
    assert loaded.estimator.n_features_in_ == 2
    assert loaded.meta["feature_names"] == ["c", "a"]
    predicted = loaded.estimator.predict(np.column_stack([c, a]))
    assert np.mean(predicted == label) >= 0.9


def test_unknown_feature_column_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = write_csv(tmp_path / "t.csv", [["a", "label"], [1, "x"], [2, "y"]])
    code, _, err = run_main(
        capsys, str(csv), "--label", "label", "--features", "zz", "--store", str(tmp_path / "s")
    )
    assert code == 2
    assert err.splitlines()[-1].startswith(f"error: {csv}, line 1: feature column 'zz' not found")


def store_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_dry_run_trains_reports_and_leaves_the_store_byte_identical(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    assert run_main(capsys, "builtin:iris", "--store", str(store), "--quiet")[0] == 0
    before = store_bytes(store)
    code, out, _ = run_main(capsys, "builtin:iris", "--store", str(store), "--dry-run", "--json")
    assert code == 0
    report = last_json(out)
    assert report["version"] is None and report["test_accuracy"] > 0.8
    assert store_bytes(store) == before
    # Into a store that does not exist: nothing is created.
    fresh = tmp_path / "fresh"
    assert run_main(capsys, "builtin:iris", "--store", str(fresh), "--dry-run")[0] == 0
    assert not fresh.exists()


def test_no_activate_writes_a_version_a_command_activates_later(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from model import activate

    store = str(tmp_path / "store")
    assert run_main(capsys, "builtin:iris", "--store", store, "--quiet")[0] == 0
    code, out, _ = run_main(capsys, "builtin:iris", "--store", store, "--no-activate", "--json")
    assert code == 0 and last_json(out)["version"] == 2 and last_json(out)["active"] is False
    assert LocalArtifactStore(store).head("iris").active == 1
    assert ModelRepository(LocalArtifactStore(store)).load("iris").version == 1
    assert activate.main(["2", "--name", "iris", "--store", store]) == 0
    assert LocalArtifactStore(store).head("iris").active == 2
    assert activate.main(["9", "--name", "iris", "--store", store]) == 2
    assert "has no version 9" in capsys.readouterr().err


def test_help_shows_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    from model.train import build_parser

    text = " ".join(build_parser().format_help().split())
    for flag, default in [
        ("--val-fraction", "0.1"),
        ("--test-fraction", "0.2"),
        ("--store", "artifacts"),
        ("--guard-rows", "2000"),
        ("--lr", "auto"),
        ("--epochs", "auto"),
    ]:
        entry = text[text.index(f"{flag} ", text.index("options:")) :][:400]
        assert f"(default: {default})" in entry, flag


def test_stopping_early_or_at_the_cap_is_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(tmp_path / "store")
    code, out, err = run_main(capsys, "builtin:iris", "--store", store, "--json")
    report = last_json(out)
    assert code == 0 and report["stopped"] and "stopped early after epoch" in err
    code, out, err = run_main(capsys, "builtin:digits", "--store", store, "--epochs", "2", "--json")
    assert "reached the epoch limit (2)" in err and last_json(out)["stopped"].startswith("reached")


def test_report_writes_its_page_from_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    out_dir = tmp_path / "report"
    code, out, _ = run_main(
        capsys, "builtin:iris", "--store", str(tmp_path / "s"), "--report", str(out_dir), "--json"
    )
    assert code == 0 and last_json(out)["report"] == str(out_dir / "index.html")
    for name in ("index.html", "loss.png", "confusion.png", "reliability.png", "per_class.png"):
        assert (out_dir / name).stat().st_size > 0
    assert (out_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
