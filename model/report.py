"""A training run as a page people can look at: ``index.html`` and its PNG figures in one folder.

The page links its figures by relative file name and carries its own style: no script, no
stylesheet or font from elsewhere, so the folder can be copied, archived or opened offline.
Figures need matplotlib, the optional ``report`` extra (``pip install 'softmax-serve[report]'``);
it is imported only when a report is written, so the rest of the package never needs it.

Files written into the folder:

    index.html          headline figures, the figures below, and every number as a table
    loss.png            training and validation log-loss per epoch
    accuracy.png        validation accuracy per epoch (only when validation was measured)
    confusion.png       the test confusion matrix as a heat map
    reliability.png     reliability diagram of the test probabilities, with its ECE
    per_class.png       precision and recall per class
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import EmptyInputError, MissingDependencyError
from .metrics import Calibration, calibration, classification_report
from .softmax import EpochRecord

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["require_matplotlib", "write_report"]

_INSTALL = "pip install 'softmax-serve[report]'"


def require_matplotlib() -> None:
    """Raise :class:`~model.errors.MissingDependencyError` unless matplotlib can be imported.

    Callers that train first and report last call this before training, so a missing extra
    is found in a second, not after the run.
    """
    _charts()


def write_report(
    directory: str | os.PathLike[str],
    *,
    history: Sequence[EpochRecord],
    y_true: ArrayLike,
    proba: ArrayLike,
    classes: Sequence[str | int] | NDArray[Any],
    title: str,
    summary: Mapping[str, Any] | None = None,
    best_epoch: int | None = None,
    calibration_bins: int = 15,
) -> Path:
    """Write the report of one training run into ``directory`` (created if missing).

    ``history``: the estimator's ``history_``, one record per epoch run; ``y_true``:
    (n_samples,) class indices of the test rows; ``proba``: (n_samples, n_classes) the model's
    probabilities for them, whose argmax is the prediction; ``classes``: (n_classes,) class
    names by index; ``summary``: facts about the run shown as a table (nested mappings are
    flattened to dotted keys); ``best_epoch``: the epoch whose weights were kept, marked on the
    curves. Existing report files in ``directory`` are replaced. Returns the path of
    ``index.html``. Example (``model`` fitted with a validation split)::

        write_report("report", history=model.history_, y_true=y_index,
                     proba=model.predict_proba(X_test), classes=model.classes_.tolist(),
                     title="digits", best_epoch=model.kept_epoch_)
    """
    if not history:
        raise EmptyInputError(
            "history is empty; expected one EpochRecord per epoch run", field="history"
        )
    charts = _charts()
    binned = calibration(y_true, proba, calibration_bins)  # validates y_true and proba
    predicted = np.asarray(proba, dtype=np.float64).argmax(axis=1)
    metrics = classification_report(y_true, predicted, proba, classes)
    names = list(metrics["per_class"])
    confusion = np.asarray(metrics["confusion_matrix"], dtype=np.int64)
    precision = np.array([metrics["per_class"][name]["precision"] for name in names])
    recall = np.array([metrics["per_class"][name]["recall"] for name in names])
    has_validation = any(record.val_loss is not None for record in history)

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    images = _save_figures(
        charts, folder, history, best_epoch, confusion, binned, precision, recall, names
    )
    if not has_validation:
        (folder / "accuracy.png").unlink(missing_ok=True)  # left by an earlier report

    page = _page(
        title=title,
        summary=summary or {},
        history=history,
        best_epoch=best_epoch,
        metrics=metrics,
        names=names,
        binned=binned,
        images=images,
        has_validation=has_validation,
    )
    index = folder / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def _save_figures(
    charts: ModuleType,
    folder: Path,
    history: Sequence[EpochRecord],
    best_epoch: int | None,
    confusion: NDArray[np.int64],
    binned: Calibration,
    precision: NDArray[np.float64],
    recall: NDArray[np.float64],
    names: list[str],
) -> dict[str, str]:
    """Each figure as a PNG in ``folder``; returns each file's ``<img>`` tag by name."""
    figures: list[tuple[str, Figure, str]] = [
        ("loss.png", charts.loss_figure(history, best_epoch), "Log-loss per epoch"),
    ]
    if any(record.val_loss is not None for record in history):
        figures.append(
            (
                "accuracy.png",
                charts.accuracy_figure(history, best_epoch),
                "Validation accuracy per epoch",
            )
        )
    figures += [
        ("confusion.png", charts.confusion_figure(confusion, names), "Confusion matrix"),
        ("reliability.png", charts.reliability_figure(binned), "Reliability diagram"),
        (
            "per_class.png",
            charts.per_class_figure(precision, recall, names),
            "Precision and recall per class",
        ),
    ]
    images: dict[str, str] = {}
    for file_name, figure, alt in figures:
        figure.savefig(folder / file_name, format="png", dpi=charts.DPI)
        width, height = (round(inches * charts.DPI) for inches in figure.get_size_inches())
        images[file_name] = (
            f'<img src="{file_name}" width="{width}" height="{height}" alt="{html.escape(alt)}">'
        )
    return images


def _charts() -> ModuleType:
    try:
        from . import charts
    except ImportError as error:
        if error.name is None or not error.name.startswith("matplotlib"):
            raise
        raise MissingDependencyError(
            f"the report needs matplotlib, which is not installed: {_INSTALL}"
        ) from None
    return charts


# --- the page ------------------------------------------------------------------------------


def _test_sections(
    metrics: dict[str, Any], names: list[str], binned: Calibration, images: dict[str, str]
) -> list[str]:
    """The sections on the test rows: confusion, precision and recall, calibration."""
    return [
        "<h2>Test rows: confusion matrix</h2>",
        _figure(images["confusion.png"], _CONFUSION_CAPTION),
        '<div class="scroll">',
        _table(
            ["true \\ predicted", *names],
            ([name, *row] for name, row in zip(names, metrics["confusion_matrix"], strict=True)),
            table_id="confusion",
        ),
        "</div>",
        "<h2>Test rows: precision and recall per class</h2>",
        _figure(images["per_class.png"], "Bars in class order; the table gives F1 and support."),
        _table(
            ["class", "precision", "recall", "F1", "support"],
            (
                [name, *(_number(scores[key]) for key in ("precision", "recall", "f1"))]
                + [scores["support"]]
                for name, scores in metrics["per_class"].items()
            ),
            table_id="per-class",
        ),
        "<h2>Test rows: calibration</h2>",
        _figure(images["reliability.png"], _RELIABILITY_CAPTION),
        f'<p>Expected calibration error: <b id="ece">{binned.expected_calibration_error:.6f}'
        f"</b> ({binned.count.size} equal-width bins).</p>",
        _table(
            ["confidence bin", "rows", "mean confidence", "accuracy", "gap"],
            _calibration_rows(binned),
            table_id="calibration",
        ),
    ]


def _history_table(history: Sequence[EpochRecord]) -> str:
    return _table(
        ["epoch", "training loss", "validation loss", "validation accuracy", "learning rate"],
        (
            [
                record.epoch,
                _number(record.train_loss),
                _number(record.val_loss),
                _number(record.val_accuracy),
                f"{record.learning_rate:.4g}",
            ]
            for record in history
        ),
        table_id="history",
    )


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
.headline { font-size: 1.15em; }
.note { background: #fff6e0; border-left: 4px solid #e0a000; padding: 0.5em 1em; }
figure { margin: 1em 0; } img { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 0.9em; max-width: 800px; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th { background: #f3f3f3; } td.name, th.name { text-align: left; }
.scroll { overflow-x: auto; }
"""


def _page(
    *,
    title: str,
    summary: Mapping[str, Any],
    history: Sequence[EpochRecord],
    best_epoch: int | None,
    metrics: dict[str, Any],
    names: list[str],
    binned: Calibration,
    images: dict[str, str],
    has_validation: bool,
) -> str:
    n_rows = int(binned.count.sum())
    headline = (
        f"Test accuracy <b>{metrics['accuracy']:.4f}</b>, log-loss "
        f"<b>{metrics['log_loss']:.4f}</b>, expected calibration error "
        f"<b>{binned.expected_calibration_error:.4f}</b> on {n_rows} test rows; "
        f"{len(history)} epochs run"
        + (f", the weights of epoch {best_epoch} kept" if best_epoch is not None else "")
        + "."
    )
    curves = [
        _figure(images["loss.png"], _LOSS_CAPTION + (_VALIDATION_LOSS if has_validation else ""))
    ]
    if has_validation:
        curves.append(_figure(images["accuracy.png"], "Accuracy on the validation rows."))
    else:
        curves.insert(
            0,
            '<p class="note">This run had no validation split: validation loss and accuracy '
            "were not measured, so only the training loss is shown.</p>",
        )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="headline">{headline}</p>',
        "<h2>Run</h2>",
        _table(["", "value"], _summary_rows(summary), table_id="summary"),
        "<h2>Training curves</h2>",
        *curves,
        *_test_sections(metrics, names, binned, images),
        "<h2>Per epoch</h2>",
        _history_table(history),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


_LOSS_CAPTION = (
    "The training loss is the mean log-loss of the epoch's minibatches, each measured before "
    "its step (so while the weights moved), without the L2 penalty."
)
_VALIDATION_LOSS = " The validation loss is measured after the epoch, also without it."
_CONFUSION_CAPTION = (
    "Rows are true classes, columns predicted ones. A cell's colour is its share of the true "
    "class's rows; the table below gives every count."
)
_RELIABILITY_CAPTION = (
    "Test rows grouped by the probability the model gave its predicted class. On the diagonal, "
    "a bin's accuracy equals its mean confidence; below it the model is over-confident. The "
    "lower panel counts the rows per bin (log scale)."
)


def _figure(image: str, caption: str) -> str:
    return f"<figure>{image}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, table_id: str) -> str:
    head = "".join(
        f'<th class="name">{html.escape(text)}</th>'
        if index == 0
        else f"<th>{html.escape(text)}</th>"
        for index, text in enumerate(header)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="name">{html.escape(str(cell))}</td>'
            if index == 0
            else f"<td>{html.escape(str(cell))}</td>"
            for index, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _number(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.4f}"


def _summary_rows(summary: Mapping[str, Any], prefix: str = "") -> list[list[str]]:
    rows: list[list[str]] = []
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows += _summary_rows(value, prefix=f"{name}.")
        elif isinstance(value, float):
            rows.append([name, f"{value:.6g}"])
        elif isinstance(value, str):
            rows.append([name, value])
        else:
            rows.append([name, json.dumps(value, default=str)])
    return rows


def _calibration_rows(binned: Calibration) -> list[list[Any]]:
    return [
        [
            f"({low:.3f}, {high:.3f}]",
            int(count),
            _number(float(confidence)),
            _number(float(accuracy)),
            _number(float(abs(accuracy - confidence))),
        ]
        for low, high, count, confidence, accuracy in zip(
            binned.edges[:-1],
            binned.edges[1:],
            binned.count,
            binned.confidence,
            binned.accuracy,
            strict=True,
        )
    ]
