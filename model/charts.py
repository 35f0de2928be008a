"""The training report's figures, drawn with matplotlib (the optional ``report`` extra).

Each function returns a :class:`matplotlib.figure.Figure` of ``DPI`` dots per inch whose pixel
size is fixed by its ``figsize`` (constrained layout, no tight bounding box), so the page can
state every image's size. Figures are built without pyplot: no global figure registry, no GUI
backend, safe in threads; ``Figure.savefig`` renders a PNG with the Agg canvas whatever backend
the process has selected. Callers (:func:`model.report.write_report`) validate the data first.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter
from numpy.typing import NDArray

from .metrics import Calibration
from .softmax import EpochRecord

__all__ = [
    "DPI",
    "accuracy_figure",
    "confusion_figure",
    "loss_figure",
    "per_class_figure",
    "reliability_figure",
]

DPI = 100
# Beyond this many classes a confusion matrix's cells are too small to print counts in.
_ANNOTATE_UP_TO = 20
# A confusion matrix labels every class up to this many, every n-th beyond.
_LABELLED_UP_TO = 60
# Class names longer than this are cut on the axes (the page's tables give them in full).
_LABEL_CHARS = 20
_TRAIN, _VALIDATION, _BEST = "#1f77b4", "#d62728", "#7f7f7f"


def loss_figure(history: Sequence[EpochRecord], best_epoch: int | None = None) -> Figure:
    """Training and (where measured) validation log-loss per epoch; one point per record."""
    figure, axes = _figure(8.0, 4.5)
    epochs = [record.epoch for record in history]
    marker = "o" if len(history) <= 30 else None
    axes.plot(
        epochs,
        [record.train_loss for record in history],
        color=_TRAIN,
        marker=marker,
        markersize=3,
        label="training (mean over the epoch's minibatches)",
    )
    validation = _validation_values(history, "val_loss")
    if validation is not None:
        axes.plot(
            epochs,
            validation,
            color=_VALIDATION,
            marker=marker,
            markersize=3,
            label="validation (end of epoch)",
        )
    _mark_best(axes, best_epoch)
    # The first epochs' losses dwarf the later ones; on a log scale the late changes show.
    axes.set_yscale("log")
    axes.yaxis.set_major_formatter(_log_ticks(axes))
    axes.yaxis.set_minor_formatter(_log_ticks(axes))
    axes.set(title="Log-loss per epoch", xlabel="epoch", ylabel="log-loss (nats, log scale)")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3, which="both")
    axes.legend(loc="upper right")
    return figure


def accuracy_figure(history: Sequence[EpochRecord], best_epoch: int | None = None) -> Figure:
    """Validation accuracy per epoch; ``history`` must hold validation figures."""
    figure, axes = _figure(8.0, 4.5)
    values = _validation_values(history, "val_accuracy")
    assert values is not None, "accuracy_figure needs a history with validation figures"
    axes.plot(
        [record.epoch for record in history],
        values,
        color=_VALIDATION,
        marker="o" if len(history) <= 30 else None,
        markersize=3,
        label="validation accuracy",
    )
    _mark_best(axes, best_epoch)
    axes.set(title="Validation accuracy per epoch", xlabel="epoch", ylabel="accuracy")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    return figure


def confusion_figure(confusion: NDArray[np.int64], classes: Sequence[str]) -> Figure:
    """Heat map of ``confusion: (k, k)`` (rows true, columns predicted).

    A cell's colour is its share of the true class's rows (so a rare class reads like a common
    one); up to 20 classes, each cell also prints its count.
    """
    k = len(classes)
    side = float(np.clip(3.0 + 0.24 * k, 6.0, 15.0))
    figure, axes = _figure(side + 1.2, side)
    support = confusion.sum(axis=1, keepdims=True)
    share = np.divide(
        confusion, support, out=np.zeros(confusion.shape, np.float64), where=support > 0
    )
    image = axes.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    colorbar = figure.colorbar(image, ax=axes, shrink=0.8, format=PercentFormatter(1.0))
    colorbar.set_label("share of the true class's rows")
    labels = _short(classes)
    size = float(np.clip(300.0 / k, 7.0, 10.0))
    # A 15-inch side holds about 60 seven-point labels: beyond that, label every n-th class.
    ticks = range(0, k, -(-k // _LABELLED_UP_TO))
    shown = [labels[index] for index in ticks]
    rotate = max(map(len, labels)) * len(ticks) > 40
    axes.set_xticks(ticks, shown, rotation=90 if rotate else 0, fontsize=size)
    axes.set_yticks(ticks, shown, fontsize=size)
    axes.set(xlabel="predicted class", ylabel="true class")
    axes.set_title(f"Confusion matrix ({int(confusion.sum())} test rows)")
    if k <= _ANNOTATE_UP_TO:
        for (row, column), count in np.ndenumerate(confusion):
            if count:
                axes.text(
                    column,
                    row,
                    str(count),
                    ha="center",
                    va="center",
                    fontsize=size,
                    color="white" if share[row, column] > 0.6 else "black",
                )
    return figure


def reliability_figure(result: Calibration) -> Figure:
    """Reliability diagram: accuracy against mean confidence per bin, above the bins' counts."""
    figure = Figure(figsize=(7.0, 7.0), dpi=DPI, layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    filled = result.count > 0
    top.plot([0, 1], [0, 1], linestyle="--", color=_BEST, label="perfectly calibrated")
    # Marker area grows with the bin's rows, so a bin of one row does not read like a bin of
    # hundreds; the lower panel gives the counts.
    top.plot(result.confidence[filled], result.accuracy[filled], color=_VALIDATION, alpha=0.5)
    top.scatter(
        result.confidence[filled],
        result.accuracy[filled],
        s=12.0 + 150.0 * np.sqrt(result.count[filled] / result.count.max()),
        color=_VALIDATION,
        zorder=3,
        clip_on=False,  # the last bin's marker sits on the frame at confidence 1
        label="a bin: its rows' mean confidence and accuracy",
    )
    top.set(xlim=(0.0, 1.0), ylim=(0.0, 1.02), ylabel="accuracy (predicted class right)")
    top.set_title(
        f"Reliability of the test probabilities: expected calibration error "
        f"{result.expected_calibration_error:.4f}"
    )
    top.grid(alpha=0.3)
    top.legend(loc="upper left")
    widths = np.diff(result.edges)
    bottom.bar(
        result.edges[:-1],
        result.count,
        width=widths,
        align="edge",
        color=_BEST,
        edgecolor="white",
    )
    # Confident models put most rows in the last bin: a log scale keeps the others visible.
    bottom.set_yscale("log")
    bottom.set_ylim(0.8, float(result.count.max()) * 3.0)
    for left, width, count in zip(result.edges[:-1], widths, result.count, strict=True):
        if count:
            bottom.text(left + width / 2, count, str(count), ha="center", va="bottom", fontsize=7)
    bottom.set(xlabel="confidence (probability of the predicted class)", ylabel="rows")
    bottom.grid(alpha=0.3, axis="y")
    return figure


def per_class_figure(
    precision: NDArray[np.float64], recall: NDArray[np.float64], classes: Sequence[str]
) -> Figure:
    """Per-class precision and recall as paired horizontal bars, one pair per class."""
    k = len(classes)
    figure, axes = _figure(8.0, float(np.clip(1.6 + 0.32 * k, 3.5, 40.0)))
    rows = np.arange(k)
    height = 0.4
    for offset, values, colour, label in (
        (-height / 2, precision, _TRAIN, "precision"),
        (height / 2, recall, _VALIDATION, "recall"),
    ):
        bars = axes.barh(rows + offset, values, height=height, color=colour, label=label)
        if k <= _ANNOTATE_UP_TO:
            for bar, value in zip(bars, values, strict=True):
                inside = value >= 0.15  # else the label goes right of the bar, in black
                axes.text(
                    value - 0.01 if inside else value + 0.01,
                    bar.get_y() + bar.get_height() / 2,
                    f"{value:.0%}",
                    ha="right" if inside else "left",
                    va="center",
                    fontsize=8,
                    color="white" if inside else "black",
                )
    axes.set_yticks(rows, _short(classes), fontsize=float(np.clip(400.0 / k, 7.0, 10.0)))
    axes.set_ylim(k - 0.5, -0.5)  # the first class on top, as in the tables
    axes.set_xlim(0.0, 1.0)
    axes.xaxis.set_major_formatter(PercentFormatter(1.0))
    axes.set(title="Precision and recall per class (test rows)", xlabel="score")
    axes.grid(alpha=0.3, axis="x")
    figure.legend(loc="outside lower center", ncols=2, frameon=False)
    return figure


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return figure, figure.subplots()


def _validation_values(history: Sequence[EpochRecord], name: str) -> list[float] | None:
    values = [getattr(record, name) for record in history]
    if all(value is None for value in values):
        return None
    return [np.nan if value is None else float(value) for value in values]


def _mark_best(axes: Axes, best_epoch: int | None) -> None:
    if best_epoch is not None:
        axes.axvline(
            best_epoch, color=_BEST, linestyle=":", label=f"epoch {best_epoch}: its weights kept"
        )


def _log_ticks(axes: Axes) -> FuncFormatter:
    """Plain numbers on a log axis (0.06, not 6 × 10⁻²): over more than a factor of 3, only
    the 1-2-3-5 ticks, so labels do not crowd."""

    def label(value: float, _position: int | None) -> str:
        low, high = axes.get_ylim()
        mantissa = value / 10.0 ** np.floor(np.log10(value))
        wide = high / low > 3.0
        return f"{value:g}" if not wide or round(mantissa) in (1, 2, 3, 5) else ""

    return FuncFormatter(label)


def _short(classes: Sequence[str]) -> list[str]:
    """Axis labels of at most 20 characters that still tell the classes apart.

    Long names are cut in the middle (names often share a prefix or a suffix, rarely both);
    where that makes two alike, the prefix and suffix all names share are dropped instead,
    and failing that the labels are the class indices (the page's tables list the classes
    in the same order).
    """
    labels = [_cut(name) for name in classes]
    if len(set(labels)) < len(labels):
        prefix = len(os.path.commonprefix(list(classes)))
        suffix = len(os.path.commonprefix([name[::-1] for name in classes]))
        labels = [
            _cut(
                ("…" if prefix else "")
                + name[prefix : len(name) - suffix]
                + ("…" if suffix else "")
            )
            for name in classes
        ]
    if len(set(labels)) < len(labels):
        labels = [str(index) for index in range(len(classes))]
    return labels


def _cut(name: str) -> str:
    keep = (_LABEL_CHARS - 1) // 2
    return name if len(name) <= _LABEL_CHARS else f"{name[:keep]}…{name[-keep:]}"
