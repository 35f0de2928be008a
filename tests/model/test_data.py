"""model.data: bundled data, CSV and npz loading (every error message), splits, fingerprints."""

from __future__ import annotations

import gzip
import pickle
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from model.data import (
    BUILTIN_DATASETS,
    Dataset,
    load_builtin,
    load_csv,
    load_dataset,
    load_npz,
)
from model.errors import (
    DataFileError,
    EmptyInputError,
    FeatureCountError,
    InvalidInputError,
    InvalidParameterError,
    LengthMismatchError,
    NonFiniteError,
)
from model.splits import fingerprint, stratified_kfold, train_val_test_split

IRIS_FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
DIGITS_COUNTS = {0: 178, 1: 182, 2: 177, 3: 183, 4: 181, 5: 182, 6: 181, 7: 179, 8: 174, 9: 180}


def write(path: Path, text: str) -> Path:
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def data_file_error(call: Callable[..., Any], *args: Any, **kwargs: Any) -> DataFileError:
    """The DataFileError (exactly that class) raised by ``call``."""
    with pytest.raises(DataFileError) as info:
        call(*args, **kwargs)
    assert type(info.value) is DataFileError
    return info.value


# --- bundled data ----------------------------------------------------------------------------


def test_builtin_iris() -> None:
    iris = load_builtin("iris")
    assert iris.X.shape == (150, 4)
    assert iris.X.dtype == np.float64
    assert iris.y.dtype.kind == "U"
    assert iris.feature_names == IRIS_FEATURES
    assert iris.label_name == "species"
    assert iris.source == "builtin:iris"
    assert Counter(iris.y.tolist()) == {"setosa": 50, "versicolor": 50, "virginica": 50}
    np.testing.assert_allclose(iris.X[0], [5.1, 3.5, 1.4, 0.2])


def test_builtin_digits() -> None:
    digits = load_builtin("digits")
    assert digits.X.shape == (1797, 64)
    assert digits.y.dtype == np.int64
    assert digits.feature_names[0] == "pixel_0_0"
    assert digits.feature_names[-1] == "pixel_7_7"
    assert digits.label_name == "digit"
    assert digits.source == "builtin:digits"
    assert dict(Counter(digits.y.tolist())) == DIGITS_COUNTS
    assert digits.X.min() == 0.0
    assert digits.X.max() == 16.0
    np.testing.assert_array_equal(digits.classes, np.arange(10))


def test_load_dataset_builtin_with_features_and_the_default_label() -> None:
    dataset = load_dataset("builtin:iris", features=["petal_width", "sepal_length"])
    assert dataset.feature_names == ("petal_width", "sepal_length")
    np.testing.assert_allclose(dataset.X[0], [0.2, 5.1])
    assert dataset.source == "builtin:iris"
    assert load_dataset("builtin:digits", label="digit").n_features == 64


def test_unknown_builtin() -> None:
    error = data_file_error(load_dataset, "builtin:mnist")
    assert error.message == "unknown builtin data set 'mnist': expected one of 'digits', 'iris'"
    assert BUILTIN_DATASETS == ("digits", "iris")
    data_file_error(load_builtin, "wine")


def test_builtin_with_a_wrong_label_names_the_columns() -> None:
    error = data_file_error(load_dataset, "builtin:iris", label="class")
    assert "label column 'class' not found; available columns: 'sepal_length'" in error.message
    assert "'species'" in error.message


# --- the Dataset value -----------------------------------------------------------------------


def test_dataset_arrays_are_read_only_views() -> None:
    X = np.ones((2, 2))
    dataset = Dataset(X, np.array([1, 0]), ("a", "b"), "label", "memory")
    with pytest.raises(ValueError, match="read-only"):
        dataset.X[0, 0] = 5.0
    with pytest.raises(ValueError, match="read-only"):
        dataset.y[0] = 5
    X[0, 0] = 3.0  # the caller's own array stays writable
    assert dataset.n_samples == 2
    assert dataset.n_features == 2


def test_dataset_normalizes_labels() -> None:
    as_text = Dataset(np.ones((2, 1)), np.array(["1", "2"]), ("a",), "l", "m")
    assert as_text.y.dtype == np.int64
    objects = np.array(["cat", "dog"], dtype=object)
    with pytest.raises(InvalidInputError, match=r"y: labels must be integers or strings"):
        Dataset(np.ones((2, 1)), objects, ("a",), "l", "m")


def test_dataset_validation() -> None:
    with pytest.raises(LengthMismatchError, match=r"same number of rows, got 2 and 3"):
        Dataset(np.ones((2, 1)), np.array([0, 1, 2]), ("a",), "l", "m")
    with pytest.raises(FeatureCountError, match=r"must be 2 strings .* got 1"):
        Dataset(np.ones((2, 2)), np.array([0, 1]), ("a",), "l", "m")
    with pytest.raises(InvalidInputError, match=r"feature_names must be distinct, got 'a' twice"):
        Dataset(np.ones((2, 2)), np.array([0, 1]), ("a", "a"), "l", "m")
    with pytest.raises(NonFiniteError, match=r"got inf at row 1, column 0"):
        Dataset(np.array([[1.0], [np.inf]]), np.array([0, 1]), ("a",), "l", "m")
    with pytest.raises(EmptyInputError, match=r"at least one row"):
        Dataset(np.ones((0, 2)), np.array([], dtype=np.int64), ("a", "b"), "l", "m")
    with pytest.raises(InvalidInputError, match=r"X must be 2-D"):
        Dataset(np.ones(2), np.array([0, 1]), ("a",), "l", "m")


# --- CSV: round trips ------------------------------------------------------------------------


def test_csv_round_trip_with_quotes_blank_lines_and_a_bom(tmp_path: Path) -> None:
    path = write(
        tmp_path / "flowers.csv",
        '\ufeffwidth, "height",kind\n1.5,2, "red, dark"\n\n  -3e1 ,4.25 ,  blue \n',
    )
    dataset = load_csv(path, "kind")
    np.testing.assert_array_equal(dataset.X, [[1.5, 2.0], [-30.0, 4.25]])
    assert dataset.X.dtype == np.float64
    assert dataset.y.tolist() == ["red, dark", "blue"]
    assert dataset.y.dtype == np.dtype("<U9")
    assert dataset.feature_names == ("width", "height")
    assert dataset.label_name == "kind"
    assert dataset.source == str(path)


def test_csv_integer_labels_become_int64(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "a,b,label\n1,2,3\n4,5,-1\n6,7,10\n")
    dataset = load_csv(path, "label")
    assert dataset.y.dtype == np.int64
    assert dataset.y.tolist() == [3, -1, 10]


@pytest.mark.parametrize("labels", [["07", "7"], ["+1", "2"], ["1.0", "2.0"], ["1", "x"]])
def test_csv_labels_that_are_not_plain_integers_stay_text(
    tmp_path: Path, labels: list[str]
) -> None:
    path = write(tmp_path / "d.csv", "a,label\n" + "".join(f"1,{label}\n" for label in labels))
    dataset = load_csv(path, "label")
    assert dataset.y.dtype.kind == "U"
    assert dataset.y.tolist() == labels


def test_csv_features_select_and_order_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "a,b,c,label\n1,2,3,x\n4,5,6,y\n")
    dataset = load_csv(path, "label", features=["c", "a"])
    assert dataset.feature_names == ("c", "a")
    np.testing.assert_array_equal(dataset.X, [[3, 1], [6, 4]])


def test_csv_label_can_be_any_column(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "label,a\nx,1\ny,2\n")
    dataset = load_csv(path, "label")
    assert dataset.feature_names == ("a",)
    assert dataset.y.tolist() == ["x", "y"]


def test_csv_gz_round_trip_matches_plain_csv(tmp_path: Path) -> None:
    text = "a,b,label\n1,2,0\n3,4,1\n"
    plain = load_dataset(str(write(tmp_path / "d.csv", text)), label="label")
    packed = load_dataset(str(write(tmp_path / "d.csv.gz", text)), label="label")
    np.testing.assert_array_equal(plain.X, packed.X)
    np.testing.assert_array_equal(plain.y, packed.y)
    assert fingerprint(plain.X, plain.y) == fingerprint(packed.X, packed.y)


def test_bundled_csv_through_load_csv_equals_the_builtin() -> None:
    path = Path(__file__).resolve().parents[2] / "model" / "datasets" / "iris.csv"
    assert load_csv(path, "species").fingerprint() == load_builtin("iris").fingerprint()


# --- CSV: every error ------------------------------------------------------------------------


def test_csv_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.csv"
    assert data_file_error(load_csv, path, "label").message == f"{path}: file not found"


def test_csv_directory(tmp_path: Path) -> None:
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    assert "is a directory" in data_file_error(load_csv, folder, "label").message


@pytest.mark.parametrize("text", ["", "\n\n", "\r\n"])
def test_csv_empty_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "empty.csv", text)
    assert data_file_error(load_csv, path, "label").message == (
        f"{path}: the file is empty; expected a header row naming the columns"
    )


def test_csv_header_without_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "header.csv", "a,b,label\n\n")
    assert data_file_error(load_csv, path, "label").message == (
        f"{path}: no data rows; expected at least one row after the header (line 1)"
    )


def test_csv_label_not_found(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "a,b,species\n1,2,x\n")
    error = data_file_error(load_csv, path, "label")
    assert error.message == (
        f"{path}, line 1: label column 'label' not found; available columns: 'a', 'b', 'species'"
    )
    assert error.field == "label"


def test_csv_unknown_feature(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "a,b,label\n1,2,x\n")
    error = data_file_error(load_csv, path, "label", features=["a", "z"])
    assert error.message == (
        f"{path}, line 1: feature column 'z' not found; available columns: 'a', 'b', 'label'"
    )


def test_csv_label_as_feature(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "a,label\n1,x\n")
    error = data_file_error(load_csv, path, "label", features=["label"])
    assert "column 'label' is the label, it cannot also be a feature" in error.message


def test_csv_only_a_label_column(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "label\nx\n")
    assert "no feature columns" in data_file_error(load_csv, path, "label").message


def test_csv_wrong_number_of_fields(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "a,b,label\n1,2,x\n\n3,4\n")
    error = data_file_error(load_csv, path, "label")
    assert error.message == f"{path}, line 4: expected 3 fields (one per header column), got 2"
    assert error.row == 4


def test_csv_value_that_is_not_a_number(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "a,b,label\n1,2,x\n3,four,y\n5,six,z\n")
    error = data_file_error(load_csv, path, "label")
    assert error.message == f"{path}, line 3, column 'b': expected a number, got 'four'"
    assert (error.field, error.row) == ("b", 3)


def test_csv_bad_value_reported_in_file_column_order(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "a,b,label\n1,2,x\nbad,worse,y\n")
    error = data_file_error(load_csv, path, "label", features=["b", "a"])
    assert error.message == f"{path}, line 3, column 'a': expected a number, got 'bad'"


def test_csv_empty_value(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "a,b,label\n1,,x\n")
    error = data_file_error(load_csv, path, "label")
    assert error.message == f"{path}, line 2, column 'b': expected a number, got an empty field"


def test_csv_line_numbers_count_quoted_newlines(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", 'a,label\n1,"two\nlines"\n\nx,y\n')
    error = data_file_error(load_csv, path, "label")
    assert error.message == f"{path}, line 5, column 'a': expected a number, got 'x'"


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity", "NaN"])
def test_csv_non_finite_value(tmp_path: Path, value: str) -> None:
    path = write(tmp_path / "d.csv", f"a,b,label\n1,2,x\n3,{value},y\n")
    error = data_file_error(load_csv, path, "label")
    assert error.message == f"{path}, line 3, column 'b': expected a finite number, got {value!r}"
    assert (error.field, error.row) == ("b", 3)


def test_csv_empty_label(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "a,label\n1,x\n2, \n")
    error = data_file_error(load_csv, path, "label")
    assert error.message == f"{path}, line 3, column 'label': expected a label, got an empty field"


def test_csv_duplicate_column_names(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "a,b,a,label\n1,2,3,x\n")
    error = data_file_error(load_csv, path, "label")
    assert error.message == (
        f"{path}, line 1: duplicate column name 'a' (columns 1 and 3); column names must be unique"
    )


def test_csv_unnamed_column(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "a,,label\n1,2,x\n")
    error = data_file_error(load_csv, path, "label")
    assert error.message == f"{path}, line 1: column 2 of the header has no name"


def test_csv_text_after_a_closing_quote_is_kept(tmp_path: Path) -> None:
    # pyarrow's dialect (since 0.3): a quote closes, text after it joins the field. Python's
    # csv module refused this line ("malformed CSV"); spreadsheets write no such thing.
    path = write(tmp_path / "d.csv", 'a,label\n1,x\n2,"y"z\n')
    assert load_csv(path, "label").y.tolist() == ["x", "yz"]


def test_csv_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("a,label\n1,caf\u00e9\n".encode("latin-1"))
    assert "not UTF-8 text" in data_file_error(load_csv, path, "label").message


def test_csv_gz_that_is_not_gzip(tmp_path: Path) -> None:
    path = tmp_path / "d.csv.gz"
    path.write_text("a,label\n1,x\n")
    error = data_file_error(load_csv, path, "label")
    assert error.message.startswith(f"{path}: cannot read the file: ")


def test_csv_features_parameter_checks(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "a,b,label\n1,2,x\n")
    with pytest.raises(InvalidParameterError, match=r"got the string 'a'"):
        load_csv(path, "label", features="a")
    with pytest.raises(InvalidParameterError, match=r"features is empty"):
        load_csv(path, "label", features=[])
    with pytest.raises(InvalidParameterError, match=r"got 'a' twice"):
        load_csv(path, "label", features=["a", "a"])


# --- npz -------------------------------------------------------------------------------------


def test_npz_round_trip_with_feature_names(tmp_path: Path) -> None:
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    path = tmp_path / "d.npz"
    np.savez(path, X=X, y=np.array(["b", "a", "b", "a"]), feature_names=np.array(["p", "q", "r"]))
    dataset = load_npz(path, label_hint="kind")
    np.testing.assert_array_equal(dataset.X, X)
    assert dataset.X.dtype == np.float64
    assert dataset.y.tolist() == ["b", "a", "b", "a"]
    assert dataset.y.dtype.kind == "U"
    assert dataset.feature_names == ("p", "q", "r")
    assert dataset.label_name == "kind"
    assert dataset.source == str(path)


def test_npz_defaults_and_integer_labels(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez_compressed(path, X=np.eye(3, dtype=np.int32), y=np.array([2, 0, 1], dtype=np.uint8))
    dataset = load_dataset(str(path))
    assert dataset.feature_names == ("feature_0", "feature_1", "feature_2")
    assert dataset.label_name == "y"
    assert dataset.y.dtype == np.int64
    assert dataset.y.tolist() == [2, 0, 1]


def test_npz_whole_float_labels_become_int64(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, X=np.eye(2), y=np.array([1.0, 0.0]))
    assert load_npz(path).y.dtype == np.int64


def test_npz_through_load_dataset_with_features(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, X=np.eye(3), y=np.array([0, 1, 2]), feature_names=np.array(["a", "b", "c"]))
    dataset = load_dataset(str(path), features=["c", "a"])
    assert dataset.feature_names == ("c", "a")
    np.testing.assert_array_equal(dataset.X, [[0, 1], [0, 0], [1, 0]])
    error = data_file_error(load_dataset, str(path), features=["z"])
    assert error.message == f"{path}: feature 'z' not found; available features: 'a', 'b', 'c'"


def npz_error(tmp_path: Path, **arrays: Any) -> tuple[Path, DataFileError]:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path, data_file_error(load_npz, path)


def test_npz_object_array_is_never_unpickled(tmp_path: Path) -> None:
    path, error = npz_error(tmp_path, X=np.eye(2), y=np.array([{"a": 1}, None], dtype=object))
    assert error.message == (
        f"{path}: array 'y' holds pickled Python objects, which are never loaded; store numbers "
        "or fixed-width strings"
    )


@pytest.mark.parametrize("missing", ["X", "y"])
def test_npz_missing_array(tmp_path: Path, missing: str) -> None:
    arrays = {"X": np.eye(2), "y": np.array([0, 1])}
    del arrays[missing]
    path, error = npz_error(tmp_path, **arrays)
    present = sorted(set(arrays))
    assert error.message == f"{path}: missing array {missing!r}; the archive holds {present}"


def test_npz_wrong_dimensions(tmp_path: Path) -> None:
    path, error = npz_error(tmp_path, X=np.ones(3), y=np.array([0, 1, 2]))
    assert error.message == (
        f"{path}: array 'X' must be 2-D (n_samples, n_features), got shape (3,)"
    )
    path, error = npz_error(tmp_path, X=np.eye(2), y=np.array([[0], [1]]))
    assert error.message == f"{path}: array 'y' must be 1-D (n_samples,), got shape (2, 1)"


def test_npz_length_mismatch(tmp_path: Path) -> None:
    path, error = npz_error(tmp_path, X=np.eye(3), y=np.array([0, 1]))
    assert error.message == (
        f"{path}: arrays 'X' and 'y' must have the same length, got 3 rows in 'X' and 2 labels "
        "in 'y'"
    )


def test_npz_non_finite_features(tmp_path: Path) -> None:
    path, error = npz_error(tmp_path, X=np.array([[1.0, 2.0], [3.0, np.nan]]), y=np.array([0, 1]))
    assert error.message == f"{path}: array 'X' must be finite, got nan at row 1, column 1"


def test_npz_other_bad_contents(tmp_path: Path) -> None:
    _, error = npz_error(tmp_path, X=np.array([["a"], ["b"]]), y=np.array([0, 1]))
    assert "array 'X' must be numeric, got dtype <U1" in error.message
    _, error = npz_error(tmp_path, X=np.eye(2), y=np.array([0.5, 1.0]))
    assert "array 'y': float labels must be whole numbers" in error.message
    _, error = npz_error(tmp_path, X=np.eye(2), y=np.array([0, 1]), feature_names=np.array(["a"]))
    assert "array 'feature_names' must be 1-D strings, one per column of 'X' (2)" in error.message
    _, error = npz_error(
        tmp_path, X=np.eye(2), y=np.array([0, 1]), feature_names=np.array(["a", "a"])
    )
    assert "array 'feature_names' must be distinct, got 'a' twice" in error.message


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not a zip file at all",
        b"PK\x03\x04 truncated",
        b"\x93NUMPY broken",
        pickle.dumps({"X": [[1.0]], "y": [0]}),
    ],
)
def test_npz_corrupt_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "corrupt.npz"
    path.write_bytes(content)
    error = data_file_error(load_npz, path)
    assert error.message.startswith(f"{path}: not a readable .npz archive")


def test_npz_truncated_archive(tmp_path: Path) -> None:
    path = tmp_path / "whole.npz"
    np.savez(path, X=np.ones((50, 4)), y=np.zeros(50, dtype=np.int64))
    cut = tmp_path / "cut.npz"
    cut.write_bytes(path.read_bytes()[:300])
    assert str(cut) in data_file_error(load_npz, cut).message


def test_npz_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.npz"
    assert data_file_error(load_npz, path).message == f"{path}: file not found"


# --- load_dataset dispatch -------------------------------------------------------------------


def test_load_dataset_csv_needs_a_label(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "a,label\n1,x\n")
    error = data_file_error(load_dataset, str(path))
    assert error.message == f"{path}: a label column is required for CSV files, got none"
    assert load_dataset(path, label="label").y.tolist() == ["x"]


def test_load_dataset_unsupported_spec() -> None:
    error = data_file_error(load_dataset, "data.xlsx")
    assert error.message == (
        "unsupported data set 'data.xlsx': expected 'builtin:digits', 'builtin:iris' or a path "
        "ending in .csv, .csv.gz, .parquet or .npz"
    )


# --- train / validation / test split ---------------------------------------------------------


def labels_with_counts(counts: list[int]) -> NDArray[np.int64]:
    return np.repeat(np.arange(len(counts)), counts)


def part_counts(y: NDArray[Any], index: NDArray[np.int64]) -> Counter[Any]:
    return Counter(y[index].tolist())


@pytest.mark.parametrize("dataset", ["iris", "digits"])
@pytest.mark.parametrize(("val", "test"), [(0.1, 0.2), (0.15, 0.15), (0.0, 0.3), (0.25, 0.0)])
def test_split_is_stratified_disjoint_and_complete(dataset: str, val: float, test: float) -> None:
    y = load_builtin(dataset).y
    train_idx, val_idx, test_idx = train_val_test_split(y, val, test, seed=7)
    everything = np.concatenate([train_idx, val_idx, test_idx])
    np.testing.assert_array_equal(np.sort(everything), np.arange(y.shape[0]))
    for index in (train_idx, val_idx, test_idx):
        assert index.dtype == np.int64
        np.testing.assert_array_equal(index, np.sort(index))
    assert len(val_idx) == round(len(y) * val)
    assert len(test_idx) == round(len(y) * test)
    classes, counts = np.unique(y, return_counts=True)
    for fraction, index in ((val, val_idx), (test, test_idx)):
        got = part_counts(y, index)
        for label, count in zip(classes.tolist(), counts.tolist(), strict=True):
            assert abs(got[label] - count * fraction) <= 1, (label, got[label], count * fraction)


def test_split_is_deterministic_per_seed() -> None:
    y = load_builtin("iris").y
    first = train_val_test_split(y, 0.1, 0.2, seed=3)
    again = train_val_test_split(y, 0.1, 0.2, seed=3)
    other = train_val_test_split(y, 0.1, 0.2, seed=4)
    for mine, same in zip(first, again, strict=True):
        np.testing.assert_array_equal(mine, same)
    assert not np.array_equal(first[2], other[2])


def test_zero_fractions_give_empty_parts() -> None:
    y = labels_with_counts([5, 5])
    train_idx, val_idx, test_idx = train_val_test_split(y, 0.0, 0.0, seed=0)
    np.testing.assert_array_equal(train_idx, np.arange(10))
    assert val_idx.shape == (0,)
    assert test_idx.shape == (0,)
    assert val_idx.dtype == np.int64


def test_every_class_keeps_a_training_row() -> None:
    y = np.array(["rare"] + ["common"] * 20 + ["pair"] * 2)
    train_idx, val_idx, test_idx = train_val_test_split(y, 0.3, 0.45, seed=0)
    assert set(y[train_idx].tolist()) == {"rare", "common", "pair"}
    assert len(train_idx) + len(val_idx) + len(test_idx) == len(y)


@settings(max_examples=80, deadline=None)
@given(
    counts=st.lists(st.integers(1, 40), min_size=1, max_size=6),
    val=st.floats(0.0, 0.45),
    test=st.floats(0.0, 0.45),
    seed=st.integers(0, 2**32 - 1),
)
def test_split_properties(counts: list[int], val: float, test: float, seed: int) -> None:
    y = labels_with_counts(counts)
    train_idx, val_idx, test_idx = train_val_test_split(y, val, test, seed)
    everything = np.concatenate([train_idx, val_idx, test_idx])
    np.testing.assert_array_equal(np.sort(everything), np.arange(y.shape[0]))
    assert set(y[train_idx].tolist()) == set(range(len(counts)))
    if val == 0.0:
        assert val_idx.size == 0
    if test == 0.0:
        assert test_idx.size == 0
    got_val, got_test = part_counts(y, val_idx), part_counts(y, test_idx)
    for label, count in enumerate(counts):
        # Only a class too small for both quotas and a training row is trimmed below them.
        if count * (val + test) <= count - 3:
            assert abs(got_val[label] - count * val) < 1
            assert abs(got_test[label] - count * test) < 1


@pytest.mark.parametrize(
    ("val", "test", "message"),
    [
        (-0.1, 0.2, r"val_fraction must be >= 0, got -0.1"),
        (0.1, float("nan"), r"test_fraction must be >= 0, got nan"),
        (0.5, 0.5, r"val_fraction \+ test_fraction must be below 1 .* got 0.5 \+ 0.5 = 1.0"),
        (0.1, True, r"test_fraction must be a number, got bool"),
    ],
)
def test_split_fraction_validation(val: float, test: float, message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        train_val_test_split(labels_with_counts([5, 5]), val, test, seed=0)


def test_split_input_validation() -> None:
    with pytest.raises(EmptyInputError, match=r"y is empty"):
        train_val_test_split(np.array([], dtype=np.int64), 0.1, 0.1, seed=0)
    with pytest.raises(InvalidInputError, match=r"y must be 1-D"):
        train_val_test_split(np.zeros((2, 2)), 0.1, 0.1, seed=0)
    with pytest.raises(InvalidParameterError, match=r"seed must be an integer >= 0, got -1"):
        train_val_test_split(labels_with_counts([5, 5]), 0.1, 0.1, seed=-1)


# --- stratified k-fold -----------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_kfold_covers_each_row_once_and_is_stratified(k: int) -> None:
    y = load_builtin("digits").y
    folds = stratified_kfold(y, k, seed=1)
    assert len(folds) == k
    seen = np.concatenate([test for _, test in folds])
    np.testing.assert_array_equal(np.sort(seen), np.arange(y.shape[0]))
    sizes = [len(test) for _, test in folds]
    assert max(sizes) - min(sizes) <= 1
    classes, counts = np.unique(y, return_counts=True)
    for train, test in folds:
        np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(len(y)))
        assert np.intersect1d(train, test).size == 0
        got = part_counts(y, test)
        for label, count in zip(classes.tolist(), counts.tolist(), strict=True):
            assert abs(got[label] - count / k) < 1


def test_kfold_is_deterministic_per_seed() -> None:
    y = load_builtin("iris").y
    first = stratified_kfold(y, 5, seed=0)
    again = stratified_kfold(y, 5, seed=0)
    other = stratified_kfold(y, 5, seed=1)
    for (train_a, test_a), (train_b, test_b) in zip(first, again, strict=True):
        np.testing.assert_array_equal(train_a, train_b)
        np.testing.assert_array_equal(test_a, test_b)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(first, other, strict=True))


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(2, 30), min_size=1, max_size=5),
    k=st.integers(2, 30),
    seed=st.integers(0, 1000),
)
def test_kfold_properties(counts: list[int], k: int, seed: int) -> None:
    k = min(k, min(counts))
    y = labels_with_counts(counts)
    folds = stratified_kfold(y, k, seed)
    seen = np.concatenate([test for _, test in folds])
    np.testing.assert_array_equal(np.sort(seen), np.arange(y.shape[0]))
    for _, test in folds:
        got = part_counts(y, test)
        for label, count in enumerate(counts):
            assert count // k <= got[label] <= -(-count // k)


def test_kfold_k_validation_names_the_class_counts() -> None:
    y = np.array(["a"] * 3 + ["b"] * 10)
    with pytest.raises(InvalidParameterError) as info:
        stratified_kfold(y, 4, seed=0)
    assert info.value.message == (
        "k must be an integer between 2 and the smallest class count (3), got 4; "
        "class counts: {'a': 3, 'b': 10}"
    )
    for k in (1, 2.0, True):
        with pytest.raises(InvalidParameterError, match=r"between 2 and the smallest"):
            stratified_kfold(y, k, seed=0)  # type: ignore[arg-type]


# --- fingerprints ----------------------------------------------------------------------------


def test_fingerprint_is_stable_across_runs() -> None:
    X = np.arange(6, dtype=np.float64).reshape(2, 3)
    assert fingerprint(X, np.array([0, 1], dtype=np.int64)) == (
        "sha256:e2b9d4ca4678db022e9921401aefa744c0dba8928a7a3973da214c82c340052f"
    )
    assert fingerprint(X, np.array(["a", "b"])) == (
        "sha256:a2eead395287ef00495b13cbefb17e09f321df74d72e297d651b9812caa303f3"
    )
    assert load_builtin("digits").fingerprint() == load_builtin("digits").fingerprint()


def test_fingerprint_sees_values_shapes_dtypes_but_not_memory_layout() -> None:
    X = np.arange(6, dtype=np.float64).reshape(2, 3)
    y = np.array([0, 1], dtype=np.int64)
    base = fingerprint(X, y)
    assert base.startswith("sha256:") and len(base) == len("sha256:") + 64
    assert fingerprint(X.reshape(3, 2), y) != base
    assert fingerprint(X.astype(np.float32), y) != base
    assert fingerprint(X, y.astype(np.int32)) != base
    assert fingerprint(X + 1e-12, y) != base
    assert fingerprint(X, y[::-1]) != base
    assert fingerprint(np.asfortranarray(X), y) == base
    assert fingerprint(X.astype(">f8"), y) == base
    with pytest.raises(InvalidInputError, match=r"object array"):
        fingerprint(X, np.array(["a", None], dtype=object))


def test_npz_path_holding_a_single_npy_array(tmp_path: Path) -> None:
    path = tmp_path / "single.npz"
    with path.open("wb") as handle:
        np.save(handle, np.eye(2))
    error = data_file_error(load_npz, path)
    assert error.message == (
        f"{path}: expected an .npz archive (arrays X and y), got a single .npy array"
    )
