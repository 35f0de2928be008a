"""Every bad request gets a 4xx with the one error body, and changes nothing in the store.

Each case states the exact status, ``type``, a key part of the message, ``field`` and ``row``.
The app here allows at most 8 rows and a learning rate up to 1e6 (to provoke divergence).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pytest

from .helpers import AUTH, AppFactory, TestClient, assert_error, store_state

MAX_ROWS = 8
ROW = [5.1, 3.5, 1.4, 0.2]
NAMES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
OBJECT_ROW = dict(zip(NAMES, ROW, strict=True))


class Bad(NamedTuple):
    body: bytes
    status: int
    type: str
    message: str
    field: str | None = None
    row: int | None = None


def body(**fields: Any) -> bytes:
    return orjson.dumps(fields)


def instances(value: Any) -> bytes:
    return body(instances=value)


def train(value: Any = (ROW,), labels: Any = ("setosa",), **fields: Any) -> bytes:
    return orjson.dumps({"instances": list(value), "labels": labels, **fields})


# Both routes parse bodies and rows the same way: these hold for /predict and /train alike.
COMMON = {
    "truncated json": Bad(b'{"instances": [[1, 2', 400, "invalid_json", "not valid JSON"),
    "empty body": Bad(b"", 400, "invalid_json", "not valid JSON"),
    "NaN literal": Bad(b'{"instances": [[NaN, 1, 2, 3]]}', 400, "invalid_json", "not valid"),
    "Infinity literal": Bad(
        b'{"instances": [[1, Infinity, 2, 3]]}', 400, "invalid_json", "not valid"
    ),
    # RFC 8259 grammar allows it, but it is no finite double: refused as non-finite, with
    # the place it was found.
    "1e400": Bad(
        b'{"instances": [[1e400, 1, 2, 3]]}',
        422,
        "non_finite",
        "beyond the float64 range at line 1, column 17",
    ),
    "-1e400": Bad(
        b'{"instances": [[1, -1e400, 2, 3]]}', 422, "non_finite", "beyond the float64 range"
    ),
    "nested too deep": Bad(
        b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "invalid_json", "not valid JSON"
    ),
    "array body": Bad(
        b"[[1, 2, 3, 4]]", 422, "invalid_request", "expected a JSON object, got an array"
    ),
    "string body": Bad(b'"x"', 422, "invalid_request", "expected a JSON object, got a string"),
    "null body": Bad(b"null", 422, "invalid_request", "expected a JSON object, got null"),
    "number body": Bad(b"4", 422, "invalid_request", "expected a JSON object, got a number"),
    "missing instances": Bad(
        b"{}", 422, "invalid_request", "missing field 'instances'", "instances"
    ),
    "unknown field": Bad(
        body(instances=[ROW], extra=1),
        422,
        "invalid_request",
        "unknown field 'extra'",
        "extra",
    ),
    "instances not a list": Bad(
        instances({"a": 1}),
        422,
        "invalid_request",
        "instances: expected a list of rows",
        "instances",
    ),
    "empty instances": Bad(
        instances([]), 422, "empty_input", "expected at least one row, got none", "instances"
    ),
    "too many rows": Bad(
        instances([ROW] * (MAX_ROWS + 1)),
        422,
        "too_many_rows",
        f"expected at most {MAX_ROWS} rows (max_rows), got 9",
        "instances",
    ),
    "too few features": Bad(
        instances([ROW, ROW[:3]]),
        422,
        "feature_count",
        "expected 4 features, got 3 (row 1)",
        "instances",
        1,
    ),
    "too many features": Bad(
        instances([ROW, ROW, [*ROW, 1.0]]),
        422,
        "feature_count",
        "expected 4 features, got 5 (row 2)",
        "instances",
        2,
    ),
    "no features": Bad(
        instances([[]]), 422, "feature_count", "expected 4 features, got 0 (row 0)", "instances", 0
    ),
    "boolean cell": Bad(
        instances([ROW, [1, 2, True, 4]]),
        422,
        "not_a_number",
        "expected a number at row 1, column 2",
        "instances",
        1,
    ),
    "false cell": Bad(
        instances([[False, 2, 3, 4]]),
        422,
        "not_a_number",
        "at row 0, column 0, got False (a boolean)",
        "instances",
        0,
    ),
    "string cell": Bad(
        instances([ROW, ROW, [1, 2, 3, "4"]]),
        422,
        "not_a_number",
        "at row 2, column 3, got '4' (a string)",
        "instances",
        2,
    ),
    "null cell": Bad(
        instances([[1, None, 3, 4]]),
        422,
        "not_a_number",
        "at row 0, column 1, got null",
        "instances",
        0,
    ),
    "nested cell": Bad(
        instances([[1, [2], 3, 4]]),
        422,
        "not_a_number",
        "at row 0, column 1, got [2]",
        "instances",
        0,
    ),
    "null row": Bad(
        instances([ROW, None]),
        422,
        "not_a_number",
        "expected each row to be a list of numbers, got null at row 1",
        "instances",
        1,
    ),
    "object after list rows": Bad(
        instances([ROW, OBJECT_ROW]),
        422,
        "not_a_number",
        "expected each row to be a list of numbers",
        "instances",
        1,
    ),
    "list after object rows": Bad(
        instances([OBJECT_ROW, OBJECT_ROW, ROW]),
        422,
        "invalid_request",
        "expected every row to be an object like row 0",
        "instances",
        2,
    ),
    "unknown feature name": Bad(
        instances([OBJECT_ROW, {**OBJECT_ROW, "petal_colour": 1}]),
        422,
        "unknown_feature",
        "unknown feature 'petal_colour' at row 1",
        "instances",
        1,
    ),
    "missing feature name": Bad(
        instances([{k: v for k, v in OBJECT_ROW.items() if k != "sepal_width"}]),
        422,
        "unknown_feature",
        "missing feature 'sepal_width' at row 0",
        "instances",
        0,
    ),
    "string in object row": Bad(
        instances([{**OBJECT_ROW, "petal_width": "0.2"}]),
        422,
        "not_a_number",
        "at row 0, column 3, got '0.2' (a string)",
        "instances",
        0,
    ),
}

PREDICT_ONLY = {
    # Parsers keep the last of duplicate keys; refusing them is the only way to lose nothing.
    "duplicate key": Bad(
        b'{"instances": [[1, 2, 3, 4]], "instances": [[5, 6, 7, 8]]}',
        422,
        "invalid_request",
        "duplicate key 'instances'",
        "instances",
    ),
    "duplicate feature name": Bad(
        b'{"instances": [{"sepal_length": 1, "sepal_width": 2, "petal_length": 3, '
        b'"petal_width": 4, "petal_width": 5}]}',
        422,
        "invalid_request",
        "duplicate key 'petal_width'",
        "petal_width",
    ),
    "colon inside a feature name is not a duplicate": Bad(
        b'{"instances": [{"sepal:length": 1}]}',
        422,
        "unknown_feature",
        "unknown feature 'sepal:length' at row 0",
        "instances",
        0,
    ),
    "version zero": Bad(
        body(instances=[ROW], version=0),
        422,
        "invalid_parameter",
        "version: expected an integer 1..4611686018427387904, got 0",
        "version",
    ),
    "version too large": Bad(
        body(instances=[ROW], version=2**62 + 1),
        422,
        "invalid_parameter",
        "got 4611686018427387905",
        "version",
    ),
    "version boolean": Bad(
        body(instances=[ROW], version=True),
        422,
        "invalid_parameter",
        "got True (a boolean)",
        "version",
    ),
    "version string": Bad(
        body(instances=[ROW], version="1"),
        422,
        "invalid_parameter",
        "got '1' (a string)",
        "version",
    ),
    "version float": Bad(
        body(instances=[ROW], version=1.0), 422, "invalid_parameter", "got 1.0", "version"
    ),
    "unknown version": Bad(
        body(instances=[ROW], version=5), 404, "version_not_found", "has no version 5", "version"
    ),
    "labels on predict": Bad(
        body(instances=[ROW], labels=["setosa"]),
        422,
        "invalid_request",
        "unknown field 'labels'",
        "labels",
    ),
}

TRAIN_ONLY = {
    "duplicate labels key": Bad(
        b'{"instances": [[5.9, 3.0, 5.1, 1.8]], "labels": ["virginica"], "labels": ["setosa"]}',
        422,
        "invalid_request",
        "duplicate key 'labels'",
        "labels",
    ),
    "missing labels": Bad(
        instances([ROW]), 422, "invalid_request", "missing field 'labels'", "labels"
    ),
    "labels not a list": Bad(
        train(labels="setosa"),
        422,
        "invalid_request",
        "labels: expected a list, got 'setosa'",
        "labels",
    ),
    "labels an object": Bad(
        train(labels={"0": "setosa"}), 422, "invalid_request", "labels: expected a list", "labels"
    ),
    "empty labels": Bad(
        train(labels=[]), 422, "empty_input", "expected at least one label, got none", "labels"
    ),
    "unknown label": Bad(
        train([ROW, ROW], labels=["setosa", "rose"]),
        422,
        "unknown_label",
        "got 'rose' at row 1",
        "labels",
        1,
    ),
    "label with a NUL character": Bad(
        train(labels=["setosa\x00"]), 422, "unknown_label", "contains a NUL", "labels", 0
    ),
    "labels a string": Bad(
        train(labels="setosa"), 422, "invalid_request", "labels: expected a list", "labels"
    ),
    "integer label for string classes": Bad(
        train(labels=[0]), 422, "unknown_label", "(strings: 'setosa'", "labels", 0
    ),
    "boolean label": Bad(
        train(labels=[True]), 422, "unknown_label", "got True (a boolean) at row 0", "labels", 0
    ),
    "null label": Bad(train(labels=[None]), 422, "unknown_label", "got null at row 0", "labels", 0),
    "more labels than rows": Bad(
        train(labels=["setosa", "setosa"]),
        422,
        "length_mismatch",
        "expected 1 labels (one per instance), got 2",
        "labels",
    ),
    "fewer labels than rows": Bad(
        train([ROW, ROW, ROW], labels=["setosa"]),
        422,
        "length_mismatch",
        "expected 3 labels (one per instance), got 1",
        "labels",
    ),
    "too many labels": Bad(
        train([ROW], labels=["setosa"] * (MAX_ROWS + 1)),
        422,
        "length_mismatch",
        "expected 1 labels",
        "labels",
    ),
    "learning rate zero": Bad(
        train(learning_rate=0),
        422,
        "invalid_parameter",
        "learning_rate: expected a number in (0, 1e+06], got 0",
        "learning_rate",
    ),
    "learning rate negative": Bad(
        train(learning_rate=-0.1), 422, "invalid_parameter", "got -0.1", "learning_rate"
    ),
    "learning rate over the maximum": Bad(
        train(learning_rate=2e6),
        422,
        "invalid_parameter",
        "in (0, 1e+06], got 2000000.0",
        "learning_rate",
    ),
    "learning rate boolean": Bad(
        train(learning_rate=True), 422, "invalid_parameter", "got True (a boolean)", "learning_rate"
    ),
    "learning rate string": Bad(
        train(learning_rate="0.1"),
        422,
        "invalid_parameter",
        "got '0.1' (a string)",
        "learning_rate",
    ),
    "passes zero": Bad(
        train(passes=0),
        422,
        "invalid_parameter",
        "passes: expected an integer 1..10, got 0",
        "passes",
    ),
    "passes over the maximum": Bad(
        train(passes=11), 422, "invalid_parameter", "expected an integer 1..10, got 11", "passes"
    ),
    "passes float": Bad(train(passes=2.0), 422, "invalid_parameter", "got 2.0", "passes"),
    "passes boolean": Bad(
        train(passes=True), 422, "invalid_parameter", "got True (a boolean)", "passes"
    ),
    "update diverges": Bad(
        train([[1e300] * 4], learning_rate=1e6),
        422,
        "diverged",
        "update refused: it would make a weight or the batch's loss non-finite",
        "learning_rate",
    ),
    "huge rows diverge": Bad(
        train([[1e308] * 4, ROW], labels=["setosa", "virginica"]),
        422,
        "diverged",
        "the model is unchanged",
        "learning_rate",
    ),
}


def _with_labels(case: Bad) -> Bad:
    """The /train form of a common case: the same instances with one label per row."""
    try:
        data = orjson.loads(case.body)
    except orjson.JSONDecodeError:
        return case
    if not isinstance(data, dict) or "instances" not in data or "labels" in data:
        return case
    rows = data["instances"]
    n = len(rows) if isinstance(rows, list) else 1
    return case._replace(body=orjson.dumps({**data, "labels": ["setosa"] * n}))


PREDICT_CASES = {**COMMON, **PREDICT_ONLY}
TRAIN_CASES = {name: _with_labels(case) for name, case in COMMON.items()} | TRAIN_ONLY


@pytest.fixture
def client(iris_store: Path, make_app: AppFactory) -> Iterator[TestClient]:
    app = make_app(iris_store, max_rows=MAX_ROWS, max_learning_rate=1e6, max_passes=10)
    with TestClient(app) as client:
        yield client


def check(client: TestClient, store: Path, route: str, case: Bad) -> None:
    before = store_state(store, "iris")
    response = client.post(
        route, content=case.body, headers={**AUTH, "content-type": "application/json"}
    )
    assert_error(response, case.status, case.type, case.message, field=case.field, row=case.row)
    assert store_state(store, "iris") == before
    assert client.app.state.softmax.runtime.current.version == 1


@pytest.mark.parametrize("case", PREDICT_CASES.values(), ids=PREDICT_CASES.keys())
def test_predict_refuses(client: TestClient, iris_store: Path, case: Bad) -> None:
    check(client, iris_store, "/predict", case)


@pytest.mark.parametrize("case", TRAIN_CASES.values(), ids=TRAIN_CASES.keys())
def test_train_refuses_and_stores_nothing(client: TestClient, iris_store: Path, case: Bad) -> None:
    check(client, iris_store, "/train", case)


def test_train_with_int_classes_refuses_other_label_types(
    digits_store: Path, make_app: AppFactory
) -> None:
    row = [0.0] * 64
    cases = {
        "3": ("got '3' (a string) at row 0", 0),
        True: ("got True (a boolean) at row 0", 0),
        3.0: ("got 3.0 at row 0", 0),
        10: ("got 10 at row 0", 0),
        -1: ("got -1 at row 0", 0),
        2**70: ("got 1.1805916207174113e+21 at row 0", 0),  # beyond 64 bits: read as a number
    }
    before = store_state(digits_store, "digits")
    with TestClient(make_app(digits_store)) as client:
        for label, (message, row_index) in cases.items():
            response = client.post(
                "/train", json={"instances": [row], "labels": [label]}, headers=AUTH
            )
            assert_error(response, 422, "unknown_label", message, field="labels", row=row_index)
        mixed = client.post(
            "/train", json={"instances": [row, row], "labels": [1, "2"]}, headers=AUTH
        )
        assert_error(mixed, 422, "unknown_label", "(integers: 0, 1, 2", field="labels", row=1)
    assert store_state(digits_store, "digits") == before


def test_a_refused_update_leaves_the_next_version_number_alone(client: TestClient) -> None:
    bad = client.post("/train", content=TRAIN_ONLY["update diverges"].body, headers=AUTH)
    assert bad.status_code == 422
    good = client.post("/train", content=train(), headers=AUTH)
    assert good.status_code == 200
    assert good.json()["version"] == 2 and good.json()["previous_version"] == 1
