"""Tables as they come: the pyarrow reader (CSV, .csv.gz, Parquet), categorical features,
missing values, their encoding stored with the model and replayed online."""

from __future__ import annotations

import argparse
import gzip
import io
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from model import LocalArtifactStore, ModelRepository, SoftmaxRegression
from model.data import load_dataset, load_table
from model.encoding import FeatureEncoder
from model.errors import (
    CorruptArtifactError,
    DataFileError,
    NotANumberError,
    UnknownCategoryError,
)
from model.train import build_parser, run

HEADER = "age,colour,size,label"
ROWS = [
    "31.5,red,1.0,yes",
    ",blue,2.0,no",  # a missing number
    "40,,3.0,yes",  # a missing category
    "29,green,nan,no",  # NaN: missing too
    "50,red,0.5,yes",
    "45,blue,2.5,no",
]


def table_text(rows: list[str] = ROWS) -> str:
    return HEADER + "\n" + "\n".join(rows) + "\n"


def write_csv(path: Path, text: str) -> Path:
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def error_of(call: Any, *args: Any, **kwargs: Any) -> DataFileError:
    with pytest.raises(DataFileError) as info:
        call(*args, **kwargs)
    return info.value


# --- reading ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["t.csv", "t.csv.gz", "t.parquet"])
def test_a_table_with_categories_and_missing_cells(tmp_path: Path, name: str) -> None:
    csv = write_csv(tmp_path / "t.csv", table_text())
    path = csv
    if name.endswith(".gz"):
        path = write_csv(tmp_path / name, table_text())
    elif name.endswith(".parquet"):
        path = tmp_path / name
        pq.write_table(pa.csv.read_csv(csv), path)  # the same cells, typed by pyarrow
    data = load_table(path, "label", missing=True)
    assert data.feature_names == ("age", "colour", "size")
    assert data.categories == {"colour": ("blue", "green", "red")}
    assert data.is_raw
    rows, columns = np.isnan(data.X).nonzero()
    assert rows.tolist() == [1, 2, 3] and columns.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(data.X[[0, 1, 3, 4, 5], 1], [2, 0, 1, 2, 0])  # codes
    np.testing.assert_array_equal(data.X[[0, 2, 4, 5], 0], [31.5, 40, 50, 45])
    assert data.y.tolist() == ["yes", "no", "yes", "no", "yes", "no"]


def test_categorical_names_a_numeric_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "zip,x,label\n02134,1,a\n10001,2,b\n02134,3,a\n")
    assert load_table(path, "label").categories == {}  # numbers: a numeric column
    data = load_table(path, "label", categorical=["zip"])
    assert data.categories == {"zip": ("02134", "10001")}
    np.testing.assert_array_equal(data.X[:, 0], [0, 1, 0])


def test_missing_cells_are_refused_unless_allowed(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", table_text())
    error = error_of(load_table, path, "label")
    assert error.message == f"{path}, line 3, column 'age': expected a number, got an empty field"
    assert (error.field, error.row) == ("age", 3)
    only_colour = write_csv(tmp_path / "c.csv", "colour,label\nred,a\n ,b\n")
    error = error_of(load_table, only_colour, "label")
    assert error.message == (
        f"{only_colour}, line 3, column 'colour': expected a value, got an empty field"
    )


def test_a_column_mixing_numbers_and_text_names_the_first_text_cell(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "a,b,label\n1,x,p\n2,y,q\n3,4,r\nfour,z,s\n")
    error = error_of(load_table, path, "label")
    # a is numbers but 'four'; b text but '4': the first cell in file order that is no number
    assert error.message == f"{path}, line 2, column 'b': expected a number, got 'x'"


def test_text_after_the_first_block_of_a_big_file_is_found(tmp_path: Path) -> None:
    # pyarrow guesses a column's type from its first block (4 MB): text further down makes it
    # read the column again as text, and the error still names the line.
    rows = [f"{i},{i % 7}.5,c{i % 3}" for i in range(400_000)]
    rows[350_000] = "350000,oops,c1"
    path = write_csv(tmp_path / "big.csv", "a,b,label\n" + "\n".join(rows) + "\n")
    assert path.stat().st_size > 5 << 20
    error = error_of(load_table, path, "label")
    assert error.message == f"{path}, line 350002, column 'b': expected a number, got 'oops'"


def test_parquet_errors_name_the_row(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1.0, float("inf")], "label": ["x", "y"]}), path)
    error = error_of(load_dataset, path, label="label")
    assert error.message == f"{path}, row 1, column 'a': expected a finite number, got 'inf'"
    assert error.row == 1
    error = error_of(load_dataset, path, label="kind")
    assert error.message == (
        f"{path}: label column 'kind' not found; available columns: 'a', 'label'"
    )
    assert "a label column is required for Parquet files" in error_of(load_dataset, path).message


@pytest.mark.parametrize(
    "content", [b"", b"PAR1", b"PAR1 not a parquet file at all PAR1", b"a,label\n1,x\n"]
)
def test_corrupt_parquet(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(content)
    error = error_of(load_dataset, path, label="label")
    assert error.message.startswith(f"{path}: not a readable Parquet file (corrupt or truncated)")


def test_truncated_parquet(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"a": np.arange(1000.0), "label": ["x"] * 1000}), buffer)
    path = tmp_path / "cut.parquet"
    path.write_bytes(buffer.getvalue()[:-40])
    assert "not a readable Parquet file" in error_of(load_dataset, path, label="label").message


def test_non_utf8_text_column(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"colour,label\nred,a\ncaf\xe9,b\n")
    error = error_of(load_table, path, "label")
    assert error.message.startswith(f"{path}: not UTF-8 text (near line ")


def test_progress_line_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_csv(tmp_path / "t.csv", table_text())
    load_table(path, "label", missing=True, progress=True)
    err = capsys.readouterr().err
    assert f"loading {path} (0.0 MB)" in err
    assert f"loaded {path}: 6 rows x 4 columns" in err


# --- encoding ----------------------------------------------------------------------------------


def raw_table(tmp_path: Path) -> Any:
    return load_table(write_csv(tmp_path / "t.csv", table_text()), "label", missing=True)


def test_encoder_learns_on_the_training_rows_only(tmp_path: Path) -> None:
    data = raw_table(tmp_path)
    train = np.array([0, 1, 2, 4])  # no green among them
    encoder = FeatureEncoder.fit(data, train)
    colour = encoder.features[1]
    assert colour.categories == ("blue", "missing", "red") and colour.fill == "missing"
    assert encoder.features[0].fill == pytest.approx((31.5 + 40 + 50) / 3)
    assert encoder.features[2].fill == pytest.approx((1.0 + 2.0 + 3.0 + 0.5) / 4)
    encoded = encoder.encode_dataset(data)
    assert encoded.feature_names == ("age", "colour=blue", "colour=missing", "colour=red", "size")
    assert not encoded.is_raw and np.isfinite(encoded.X).all()
    np.testing.assert_array_equal(encoded.X[3, 1:4], [0, 0, 0])  # green: unseen, all zeros
    np.testing.assert_array_equal(encoded.X[2, 1:4], [0, 1, 0])  # missing category
    # A request row is encoded exactly as the same row of the file.
    rows = [[31.5, "red", 1.0], [None, "blue", 2.0], [40, None, 3.0], [29, "green", None]]
    np.testing.assert_array_equal(encoder.encode_rows(rows), encoded.X[:4])
    assert FeatureEncoder.from_json(encoder.to_json()) == encoder
    assert encoder.to_json()["features"][1] == {
        "name": "colour",
        "kind": "categorical",
        "categories": ["blue", "missing", "red"],
        "fill": "missing",
    }


def test_unseen_category_refused_on_request_and_null_without_imputation(tmp_path: Path) -> None:
    encoder = FeatureEncoder.fit(raw_table(tmp_path), np.arange(6))
    with pytest.raises(UnknownCategoryError) as info:
        encoder.encode_rows([[1, "red", 1], [1, "purple", 2]], refuse_unknown=True)
    assert info.value.message == (
        "instances: unknown category 'purple' for column 'colour' at row 1 (known: 'blue', "
        "'green', 'missing', 'red')"
    )
    assert info.value.row == 1 and info.value.code == "unknown_category"
    strict = FeatureEncoder.fit(raw_table(tmp_path), np.array([0, 4, 5]), impute=False)
    assert strict.features[0].fill is None and not strict.imputes
    with pytest.raises(
        NotANumberError, match=r"expected a number at row 0, column 'age', got null"
    ):
        strict.encode_rows([[None, "red", 1.0]])
    with pytest.raises(NotANumberError, match=r"expected a category \(a string\) at row 0"):
        strict.encode_rows([[1.0, 3, 1.0]])
    with pytest.raises(CorruptArtifactError, match="malformed"):
        FeatureEncoder.from_json({"features": [{"name": "a", "kind": "text"}]})


# --- with the model: store, online updates ----------------------------------------------------


def train_args(path: Path, store: Path, *extra: str) -> argparse.Namespace:
    return build_parser().parse_args(
        [str(path), "--label", "label", "--store", str(store), "--quiet", "--epochs", "5"]
        + ["--val-fraction", "0.2", "--test-fraction", "0.2", *extra]
    )


def bigger_table(path: Path, n: int = 200, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    lines = [HEADER]
    for _ in range(n):
        colour = str(rng.choice(["red", "blue", "green"]))
        size = rng.normal()
        label = "yes" if colour == "red" or size > 1 else "no"
        age = "" if rng.random() < 0.1 else f"{rng.normal(40, 10):.1f}"
        lines.append(f"{age},{'' if rng.random() < 0.1 else colour},{size:.3f},{label}")
    return write_csv(path, "\n".join(lines) + "\n")


def test_trained_table_round_trips_the_store_and_learns_online_bit_for_bit(
    tmp_path: Path,
) -> None:
    path = bigger_table(tmp_path / "people.csv")
    report = run(train_args(path, tmp_path / "store"), io.StringIO())
    assert report is not None and report["version"] == 1
    repository = ModelRepository(LocalArtifactStore(tmp_path / "store"), snapshot_every=2)
    loaded = repository.load("people")
    encoder = loaded.encoder
    assert encoder is not None and encoder.names == ("age", "colour", "size")
    assert loaded.feature_names == encoder.encoded_names
    assert repository.meta("people", 1).encoder == encoder.to_json()

    raw = [[41.0, "red", 0.2], [None, "blue", -1.0], [38.0, None, 1.5], [50.0, "teal", 0.1]]
    labels = ["yes", "no", "yes", "no"]
    X = encoder.encode_rows(raw)
    expected = loaded.estimator
    for step in range(3):  # the third is stored as a snapshot (snapshot_every=2)
        result = repository.update("people", X, labels, learning_rate=0.01)
        y_index = np.searchsorted(expected.classes_, labels)
        expected, _ = expected.updated(
            X, y_index, learning_rate=0.01, momentum=repository.online_momentum
        )
        assert result.model.encoder == encoder
        np.testing.assert_array_equal(
            result.model.estimator.state_.weights, expected.state_.weights
        )
        assert result.model.version == 2 + step
    assert repository.meta("people", 4).kind == "snapshot"
    assert repository.meta("people", 4).encoder == encoder.to_json()
    fresh = ModelRepository(LocalArtifactStore(tmp_path / "store"))
    for version in (3, 4):  # replayed from the log, and read from the online snapshot
        again = fresh.load("people", version)
        assert again.encoder == encoder
        np.testing.assert_array_equal(
            again.estimator.predict_proba(X),
            repository.load("people", version).estimator.predict_proba(X),
        )
    np.testing.assert_array_equal(again.estimator.state_.weights, expected.state_.weights)


def test_cli_flags_for_tables(tmp_path: Path) -> None:
    path = bigger_table(tmp_path / "people.csv")
    args = train_args(path, tmp_path / "store", "--categorical", "colour", "--impute", "median")
    run(args, io.StringIO())
    encoder = ModelRepository(LocalArtifactStore(tmp_path / "store")).load("people").encoder
    assert encoder is not None
    present = load_table(path, "label", missing=True).X[:, 0]
    assert encoder.features[0].fill is not None
    assert np.nanmin(present) <= float(encoder.features[0].fill) <= np.nanmax(present)
    with pytest.raises(DataFileError, match=r"line \d+, column 'age': expected a number, got an"):
        run(train_args(path, tmp_path / "store2", "--impute", "none"), io.StringIO())


def test_estimator_sees_plain_numbers_for_plain_tables(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "n.csv", "a,b,label\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n9,1,x\n2,3,y\n")
    data = load_dataset(path, label="label", missing=True)
    assert not data.is_raw  # no encoder: stored as before
    SoftmaxRegression(epochs=2).fit(data.X, data.y)
