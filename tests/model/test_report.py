"""The training report: real PNGs and a local-only page, built from a real fit's numbers."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

import model
from model import charts
from model.data import load_dataset
from model.errors import EmptyInputError, MissingDependencyError
from model.metrics import calibration, classification_report, confusion_matrix
from model.report import require_matplotlib, write_report
from model.softmax import SoftmaxRegression
from model.splits import train_val_test_split
from model.validation import check_labels

EVERY_FIGURE = {"loss.png", "accuracy.png", "confusion.png", "reliability.png", "per_class.png"}


@dataclass
class Run:
    model: SoftmaxRegression
    X_test: NDArray[np.float64]
    y_true: NDArray[np.int64]
    proba: NDArray[np.float64]
    index: Path


class Page(HTMLParser):
    """What the tests read back from index.html: its tables, images and links."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[dict[str, str]] = []
        self.links: list[str] = []
        self.tags: set[str] = set()
        self.ids: dict[str, str] = {}
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None
        self._id: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        self.tags.add(tag)
        self.links += [attributes[name] for name in ("src", "href") if name in attributes]
        if tag == "img":
            self.images.append(attributes)
        elif tag == "table":
            self._table = self.tables.setdefault(attributes["id"], [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th"):
            self._cell = []
        if "id" in attributes and tag != "table":
            self._id, self.ids[attributes["id"]] = attributes["id"], ""

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._id is not None:
            self.ids[self._id] += data

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._table is not None and self._cell is not None:
            self._table[-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None
        self._id = None

    def body(self, table: str) -> list[list[str]]:
        """The table's rows below its header row."""
        return self.tables[table][1:]


def fit_and_report(
    directory: Path, spec: str, val_fraction: float, epochs: int, *, best: bool = True
) -> Run:
    data = load_dataset(spec)
    train, val, test = train_val_test_split(data.y, val_fraction, 0.25, seed=0)
    validation = (data.X[val], data.y[val]) if val.size else None
    model = SoftmaxRegression(epochs=epochs, patience=3).fit(
        data.X[train], data.y[train], validation=validation
    )
    y_true = check_labels(data.y[test], model.classes_)
    proba = model.predict_proba(data.X[test])
    index = write_report(
        directory,
        history=model.history_,
        y_true=y_true,
        proba=proba,
        classes=model.classes_.tolist(),
        title=f"{spec} <run>",
        summary={"data": spec, "rows": {"train": int(train.size), "test": int(test.size)}},
        best_epoch=model.best_epoch_ if best else None,
    )
    return Run(model, data.X[test], y_true, proba, index)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return fit_and_report(tmp_path_factory.mktemp("report"), "builtin:digits", 0.15, 12)


@pytest.fixture(scope="module")
def page(digits: Run) -> Page:
    return Page(digits.index.read_text(encoding="utf-8"))


def test_every_figure_is_a_valid_png_of_the_size_the_page_states(digits: Run, page: Page) -> None:
    assert digits.index == digits.index.parent / "index.html"
    assert {image["src"] for image in page.images} == EVERY_FIGURE
    assert {path.name for path in digits.index.parent.glob("*.png")} == EVERY_FIGURE
    for image in page.images:
        path = digits.index.parent / image["src"]
        with Image.open(path) as png:
            png.verify()  # the whole file: signature, chunks and their checksums
        with Image.open(path) as png:
            assert png.format == "PNG"
            assert png.size == (int(image["width"]), int(image["height"]))
            pixels = np.asarray(png.convert("L"))
        assert png.size[0] >= 600 and png.size[1] >= 300
        assert pixels.std() > 10, f"{path.name} looks blank"
        assert image["alt"]


def test_the_page_is_self_contained_and_escapes_what_it_is_given(digits: Run, page: Page) -> None:
    for link in page.links:
        parts = urlsplit(link)
        assert not parts.scheme and not parts.netloc, link
        assert "/" not in link and (digits.index.parent / link).is_file(), link
    text = digits.index.read_text(encoding="utf-8")
    assert not page.tags & {"script", "link", "iframe", "object", "embed"}
    assert "url(" not in text and "@import" not in text
    assert "builtin:digits &lt;run&gt;" in text and "<run>" not in text


def test_confusion_table_is_the_metrics_confusion_matrix_of_the_predictions(
    digits: Run, page: Page
) -> None:
    names = [str(name) for name in digits.model.classes_]
    predicted = check_labels(digits.model.predict(digits.X_test), digits.model.classes_)
    expected = confusion_matrix(digits.y_true, predicted, len(names))
    table = page.body("confusion")
    assert page.tables["confusion"][0][1:] == names
    assert [row[0] for row in table] == names
    assert np.array([[int(cell) for cell in row[1:]] for row in table]).tolist() == (
        expected.tolist()
    )


def test_per_class_table_is_the_classification_report(digits: Run, page: Page) -> None:
    report = classification_report(
        digits.y_true, digits.proba.argmax(axis=1), digits.proba, digits.model.classes_
    )
    rows = page.body("per-class")
    assert [row[0] for row in rows] == list(report["per_class"])
    for row in rows:
        scores = report["per_class"][row[0]]
        assert [float(cell) for cell in row[1:4]] == pytest.approx(
            [scores["precision"], scores["recall"], scores["f1"]], abs=5e-5
        )
        assert int(row[4]) == scores["support"]
    assert f"{report['accuracy']:.4f}" in digits.index.read_text(encoding="utf-8")


def test_expected_calibration_error_matches_a_direct_computation(digits: Run, page: Page) -> None:
    # Guo et al. (2017): 15 equal-width bins (lo, hi] of the top probability.
    confidence = digits.proba.max(axis=1)
    correct = digits.proba.argmax(axis=1) == digits.y_true
    edges = np.linspace(0.0, 1.0, 16)
    direct, counts = 0.0, []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > low) & (confidence <= high)
        counts.append(int(in_bin.sum()))
        if in_bin.any():
            gap = abs(correct[in_bin].mean() - confidence[in_bin].mean())
            direct += in_bin.sum() / confidence.size * gap
    assert 0.0 < direct < 0.2
    assert float(page.ids["ece"]) == pytest.approx(direct, abs=5e-7)
    assert [int(row[1]) for row in page.body("calibration")] == counts
    binned = calibration(digits.y_true, digits.proba)
    figure = charts.reliability_figure(binned)
    top, bottom = figure.axes
    points = top.collections[0].get_offsets()
    filled = binned.count > 0
    np.testing.assert_allclose(points[:, 0], binned.confidence[filled])
    np.testing.assert_allclose(points[:, 1], binned.accuracy[filled])
    assert [bar.get_height() for bar in bottom.patches] == counts
    assert f"{direct:.4f}" in top.get_title()


def test_curves_have_one_point_per_epoch_run(digits: Run, page: Page) -> None:
    history = digits.model.history_
    assert len(history) == digits.model.n_epochs_run_ >= 2
    loss = charts.loss_figure(history, digits.model.best_epoch_).axes[0]
    train_line, val_line, best_line = loss.lines
    assert list(train_line.get_xdata()) == list(range(1, len(history) + 1))
    assert list(train_line.get_ydata()) == [record.train_loss for record in history]
    assert list(val_line.get_ydata()) == [record.val_loss for record in history]
    assert list(best_line.get_xdata()) == [digits.model.best_epoch_] * 2
    accuracy = charts.accuracy_figure(history).axes[0]
    assert list(accuracy.lines[0].get_ydata()) == [record.val_accuracy for record in history]
    rows = page.body("history")
    assert [int(row[0]) for row in rows] == [record.epoch for record in history]
    assert [float(row[1]) for row in rows] == pytest.approx(
        [record.train_loss for record in history], abs=5e-5
    )


def test_a_run_without_validation_has_no_validation_curves_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "accuracy.png").write_bytes(b"left by an earlier report")
    run = fit_and_report(tmp_path, "builtin:iris", 0.0, 5, best=False)
    text = run.index.read_text(encoding="utf-8")
    assert run.model.n_epochs_run_ == 5
    assert {path.name for path in tmp_path.glob("*.png")} == EVERY_FIGURE - {"accuracy.png"}
    assert "no validation split" in text
    assert "accuracy.png" not in text
    assert len(charts.loss_figure(run.model.history_).axes[0].lines) == 1
    assert all(row[2] == row[3] == "—" for row in Page(text).body("history"))


def test_fifty_classes_stay_readable() -> None:
    names = [f"category-{index:02d}-of-a-long-taxonomy" for index in range(50)]
    confusion = np.random.default_rng(0).integers(0, 5, size=(50, 50)) + 20 * np.eye(50, dtype=int)
    heat_map = charts.confusion_figure(confusion, names)
    axes = heat_map.axes[0]
    labels = [label.get_text() for label in axes.get_yticklabels()]
    assert len(labels) == 50 and len(set(labels)) == 50  # shortened, still distinct
    assert labels[7] == "…07…"  # the part the names do not share
    assert all(len(label) <= 20 for label in labels)
    assert not axes.texts  # no counts printed in cells this small
    width, height = heat_map.get_size_inches() * charts.DPI
    assert height / 50 >= 25  # pixels per row, room for a 7-point label
    bars = charts.per_class_figure(np.linspace(0, 1, 50), np.linspace(1, 0, 50), names)
    assert bars.get_size_inches()[1] * charts.DPI / 50 >= 30


def test_empty_history_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EmptyInputError, match="history is empty"):
        write_report(tmp_path, history=[], y_true=[0], proba=[[1.0]], classes=["a"], title="empty")
    assert not list(tmp_path.iterdir())


def test_without_matplotlib_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "model.charts")
    monkeypatch.delattr(model, "charts")
    for name in [name for name in sys.modules if name.split(".")[0] == "matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    with pytest.raises(MissingDependencyError) as raised:
        require_matplotlib()
    assert raised.value.message == (
        "the report needs matplotlib, which is not installed: pip install 'softmax-serve[report]'"
    )
