"""Offline training CLI: ``python -m model.train DATA --label COLUMN [options]``.

Loads a CSV (header row), an ``.npz`` with ``X`` and ``y``, or a bundled data set
(``builtin:digits``, ``builtin:iris``); splits it into stratified, seeded train/validation/test
parts; optionally cross-validates and searches learning rate and L2 on a log grid; trains with
early stopping on the validation part; reports test metrics; and writes a new version into the
artifact store.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .autotune import AUTO
from .data import Dataset, load_dataset
from .encoding import MISSING_CATEGORY, FeatureEncoder
from .errors import ModelError
from .maths import Index
from .metrics import classification_report
from .params import HYPER_PARAMETERS
from .report import require_matplotlib, write_report
from .repository import ModelRepository
from .softmax import EpochRecord, SoftmaxRegression
from .splits import fingerprint, stratified_kfold, train_val_test_split
from .stores import is_database, open_store
from .validation import check_labels

__all__ = ["build_parser", "main"]

# --search: L2 penalties as multiples of 1 / training rows (the "auto" one is 1), each trained
# at the learning rate the probe chose once: a few fits, not a grid of learning rates.
SEARCH_L2_FACTORS = (0.1, 1.0, 10.0, 100.0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m model.train",
        description="Train a softmax-regression model and store it as a new version. "
        "Settings left at 'auto' are chosen from the data (see the README's training section).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("data", help="CSV (header row), .npz with X and y, or builtin:digits|iris")
    p.add_argument("--label", help="label column of a CSV (default for builtin data sets)")
    p.add_argument("--features", help="comma-separated feature columns (default: all others)")
    _add_table_flags(p)
    p.add_argument(
        "--store",
        default="artifacts",
        help="artifact store: a directory, or a database postgresql://user@host:port/dbname",
    )
    p.add_argument("--name", help="model name (default: the data file's stem)")
    _add_hyper_parameter_flags(p)
    _add_run_flags(p)
    return p


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    """What a run does besides training: splits, evaluation, the store, output."""
    p.add_argument(
        "--val-fraction", type=float, default=0.1, help="rows held out for early stopping"
    )
    p.add_argument("--test-fraction", type=float, default=0.2, help="rows held out for the report")
    p.add_argument("--cv", type=int, metavar="K", help="also report K-fold cross-validation")
    p.add_argument(
        "--search",
        action="store_true",
        help="choose L2 among (0.1, 1, 10, 100) / training rows by validation log-loss",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="train and report, but write nothing (the store is not touched)",
    )
    p.add_argument(
        "--no-activate",
        dest="activate",
        action="store_false",
        help="write the new version without making it active (activate it later: "
        "POST /models/{version}/activate or python -m model.activate)",
    )
    p.add_argument(
        "--report",
        type=Path,
        metavar="DIR",
        help="also write an HTML page with training curves, confusion matrix, reliability "
        "diagram and per-class scores into DIR (needs: pip install 'softmax-serve[report]')",
    )
    p.add_argument("--keep", action="store_true", help="exempt the new version from retention")
    p.add_argument(
        "--keep-last",
        type=int,
        help="retention: remove versions beyond the newest N (default: remove none; the "
        "service applies its own --keep-last on every write)",
    )
    p.add_argument(
        "--guard-rows",
        type=int,
        default=2000,
        help="validation rows kept with the model as its guard set, which judges online "
        "updates (0: none)",
    )
    p.add_argument(
        "--if-store-empty", action="store_true", help="do nothing if the store has any model"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON (last line)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _add_table_flags(parser: argparse.ArgumentParser) -> None:
    """How a table's text columns and missing cells become features (model.encoding)."""
    group = parser.add_argument_group("categorical features and missing values")
    group.add_argument(
        "--categorical",
        help="comma-separated columns read as categories even if they hold numbers (a column "
        "none of whose cells is a number is categorical anyway); one-hot encoded",
    )
    group.add_argument(
        "--impute",
        choices=("mean", "median", "none"),
        default="mean",
        help="missing cells (empty, NaN): numeric ones take the training rows' mean or median, "
        "categorical ones the --missing-category; none: a missing cell is an error "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--missing-category",
        default=MISSING_CATEGORY,
        help="the category a missing categorical cell takes (default: %(default)s)",
    )


def _encoded(
    args: argparse.Namespace, data: Dataset, train: Index
) -> tuple[Dataset, FeatureEncoder | None]:
    """A raw table encoded as learned on the training rows; other data as it is."""
    if not data.is_raw:
        return data, None
    encoder = FeatureEncoder.fit(
        data,
        train,
        impute=args.impute != "none",
        numeric_fill="mean" if args.impute == "none" else args.impute,
        missing_category=args.missing_category,
    )
    return encoder.encode_dataset(data), encoder


def _add_hyper_parameter_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per hyper-parameter (``--batch-size``, ``--lr`` ...), from model.params."""
    group = parser.add_argument_group("training settings")
    for parameter in HYPER_PARAMETERS:
        how: dict[str, Any] = (
            {"action": argparse.BooleanOptionalAction}  # --standardize / --no-standardize
            if parameter.kind is bool
            else {
                "type": _number_or_auto(parameter.kind) if parameter.auto else parameter.kind,
                "choices": parameter.choices or None,
            }
        )
        group.add_argument(
            *parameter.cli_flags,
            dest=parameter.name,
            default=parameter.default,
            help=f"{parameter.help} (default: %(default)s)",
            **how,
        )


def _number_or_auto(kind: type) -> Any:
    """An argparse type: ``auto``, or a number of ``kind``."""

    def parse(text: str) -> Any:
        return AUTO if text == AUTO else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its error message
    return parse


def _estimator(args: argparse.Namespace, **overrides: Any) -> SoftmaxRegression:
    settings = {parameter.name: getattr(args, parameter.name) for parameter in HYPER_PARAMETERS}
    return SoftmaxRegression(**(settings | overrides))


def _fit(
    estimator: SoftmaxRegression,
    data: Dataset,
    train: Index,
    val: Index,
    *,
    progress: bool = False,
    description: str = "",
) -> SoftmaxRegression:
    validation = (data.X[val], data.y[val]) if val.size else None
    if not progress:
        return estimator.fit(
            data.X[train], data.y[train], validation=validation, feature_names=data.feature_names
        )
    from tqdm import tqdm

    with tqdm(total=estimator.epochs, desc=description, unit="epoch", leave=True) as bar:

        def show(record: EpochRecord) -> None:
            postfix = {"loss": f"{record.train_loss:.4f}"}
            if record.val_accuracy is not None:
                postfix["val_acc"] = f"{record.val_accuracy:.4f}"
            bar.set_postfix(postfix)
            bar.update(1)

        return estimator.fit(
            data.X[train],
            data.y[train],
            validation=validation,
            feature_names=data.feature_names,
            callback=show,
        )


def _search(args: argparse.Namespace, data: Dataset, train: Index, val: Index) -> dict[str, Any]:
    """L2 penalties around the "auto" one, each a fit at the probe's learning rate (chosen
    once); the best by validation log-loss."""
    if not val.size:
        raise ModelError("--search needs a validation split (--val-fraction > 0)")
    validation = (data.X[val], data.y[val])
    rate = (
        _estimator(args)
        .initialize(data.X[train], data.y[train], validation=validation)
        .resolved_params()["learning_rate"]
    )
    results = []
    for factor in SEARCH_L2_FACTORS:
        l2 = factor / train.size
        est = _fit(_estimator(args, learning_rate=rate, l2=l2), data, train, val)
        try:
            loss = est.log_loss(*validation)
        except ModelError:
            loss = float("inf")
        results.append({"learning_rate": rate, "l2": l2, "val_log_loss": loss})
    best = min(results, key=lambda r: r["val_log_loss"])
    return {"grid": results, "best": best}


def how_it_ended(estimator: SoftmaxRegression) -> str | None:
    """A sentence when training did not simply run its epochs: it stopped early, or it hit the
    epoch limit while the validation loss was still improving; and which weights it kept."""
    ran, best, limit = (
        estimator.n_epochs_run_,
        estimator.best_epoch_,
        estimator.resolved_params()["epochs"],
    )
    kept = (
        f"kept epoch {estimator.kept_epoch_}'s weights"
        if estimator.kept_epoch_ == best
        else f"kept the last epoch's weights, best epoch {best}"
    )
    if estimator.stop_reason_ == "plateau":
        return (
            f"stopped early after epoch {ran} of {limit}: the validation loss had not improved "
            f"for {estimator.resolved_params()['patience']} epochs ({kept})"
        )
    if best is not None and best >= ran - 1 and ran == limit:
        return (
            f"reached the epoch limit ({limit}) with the validation loss still improving "
            f"({kept}): more --epochs may help"
        )
    return None


def _cross_validate(args: argparse.Namespace, data: Dataset, rows: Index, k: int) -> dict[str, Any]:
    """K-fold accuracy over ``rows``; each fold's training part keeps its own validation part
    for early stopping."""
    scores = []
    for fold_train, fold_test in stratified_kfold(data.y[rows], k, args.seed):
        inner_train, inner_val, _ = train_val_test_split(
            data.y[rows[fold_train]], args.val_fraction, 0.0, args.seed
        )
        est = _fit(
            _estimator(args), data, rows[fold_train][inner_train], rows[fold_train][inner_val]
        )
        predicted = est.predict(data.X[rows[fold_test]])
        scores.append(float(np.mean(predicted == data.y[rows[fold_test]])))
    return {
        "k": k,
        "accuracy_mean": float(np.mean(scores)),
        "accuracy_std": float(np.std(scores)),
        "accuracy_folds": scores,
    }


def _test_metrics(
    estimator: SoftmaxRegression, data: Dataset, test: Index
) -> tuple[dict[str, Any], Any]:
    """The classification report on the held-out test rows (empty without any), and their
    probabilities."""
    if not test.size:
        return {}, None
    y_test = check_labels(data.y[test], estimator.classes_)
    proba = estimator.predict_proba(data.X[test])
    report = classification_report(
        y_test, proba.argmax(axis=1), proba, [c.item() for c in estimator.classes_]
    )
    return report, proba


def _summary(args: argparse.Namespace, report: dict[str, Any]) -> str:
    """The report as the few lines a person reads."""
    if report["version"] is None:
        lines = [f"model {report['model']}: dry run, nothing written"]
    else:
        active = "" if report["active"] else " (not active: activate it when ready)"
        lines = [
            f"model {report['model']} version {report['version']} written to {args.store}{active}"
        ]
    if report["test_accuracy"] is not None:
        lines.append(
            f"test accuracy {report['test_accuracy']:.4f}, "
            f"test log-loss {report['test_log_loss']:.4f}"
        )
    if args.cv:
        cv = report["cv"]
        lines.append(
            f"{cv['k']}-fold CV accuracy {cv['accuracy_mean']:.4f} ± {cv['accuracy_std']:.4f}"
        )
    if args.search:
        best = report["search"]["best"]
        lines.append(f"search: best learning rate {best['learning_rate']}, l2 {best['l2']}")
    lines.append(f"epochs run {report['epochs_run']}, {report['seconds']} s")
    if report["stopped"]:
        lines.append(report["stopped"])
    if "report" in report:
        lines.append(f"report: {report['report']}")
    return "\n".join(lines)


def run(args: argparse.Namespace, out: Any = sys.stdout) -> dict[str, Any] | None:
    started = time.perf_counter()
    if args.report:
        require_matplotlib()  # a missing extra fails now, not after training
    if args.if_store_empty and not args.dry_run and (models := _stored_models(args.store)):
        print(f"store {args.store} already holds {', '.join(models)}; not training", file=out)
        return None
    features = [f.strip() for f in args.features.split(",")] if args.features else None
    categorical = [c.strip() for c in args.categorical.split(",")] if args.categorical else ()
    data = load_dataset(
        args.data,
        label=args.label,
        features=features,
        categorical=categorical,
        missing=args.impute != "none",
        progress=not args.quiet,
    )
    name = args.name or (
        args.data.split(":", 1)[1]
        if args.data.startswith("builtin:")
        else Path(args.data).name.split(".")[0]
    )
    train, val, test = train_val_test_split(
        data.y, args.val_fraction, args.test_fraction, args.seed
    )
    if args.report and not test.size:
        raise ModelError("--report needs test rows (--test-fraction > 0)")
    data, encoder = _encoded(args, data, train)
    report: dict[str, Any] = {"model": name}
    estimator = _train(args, data, (train, val), report, progress=not args.quiet and out.isatty())
    metrics, proba = _test_metrics(estimator, data, test)
    training = _training_record(args, data, estimator, (train, val, test), report, started)
    version = (
        None
        if args.dry_run
        else _save(args, name, estimator, (data, val, encoder), training, metrics)
    )
    if args.report:
        title = f"{name} version {version}" if version else f"{name} (dry run)"
        report["report"] = _write_report(
            args.report, estimator, data.y[test], proba, title, training
        )
    report.update(
        version=version,
        active=bool(version) and args.activate,
        test_accuracy=metrics.get("accuracy"),
        test_log_loss=metrics.get("log_loss"),
        per_class=metrics.get("per_class"),
        confusion_matrix=metrics.get("confusion_matrix"),
        epochs_run=estimator.n_epochs_run_,
        best_epoch=estimator.best_epoch_,
        kept_epoch=estimator.kept_epoch_,
        stopped=how_it_ended(estimator),
        settings=estimator.resolved_params(),
        seconds=round(time.perf_counter() - started, 3),
    )
    print(json.dumps(report) if args.json else _summary(args, report), file=out)
    return report


def _write_report(
    directory: Path,
    estimator: SoftmaxRegression,
    y_test: Any,
    proba: Any,
    title: str,
    training: dict[str, Any],
) -> str:
    return str(
        write_report(
            directory,
            history=estimator.history_,
            y_true=check_labels(y_test, estimator.classes_),
            proba=proba,
            classes=[c.item() for c in estimator.classes_],
            title=title,
            summary=training,
            best_epoch=estimator.kept_epoch_,
        )
    )


def _stored_models(store: str) -> list[str]:
    if not is_database(store) and not Path(store).is_dir():
        return []
    repository = ModelRepository(open_store(store))
    try:
        return repository.models()
    finally:
        repository.close()


def _train(
    args: argparse.Namespace,
    data: Dataset,
    split: tuple[Index, Index],
    report: dict[str, Any],
    *,
    progress: bool,
) -> SoftmaxRegression:
    """--search and --cv (into ``report``), then the fit itself; says how training ended."""
    train, val = split
    chosen: dict[str, Any] = {}
    if args.search:
        search = _search(args, data, train, val)
        chosen = {"learning_rate": search["best"]["learning_rate"], "l2": search["best"]["l2"]}
        report["search"] = search
    if args.cv:
        report["cv"] = _cross_validate(args, data, np.concatenate([train, val]), args.cv)
    estimator = _fit(
        _estimator(args, **chosen), data, train, val, progress=progress, description=report["model"]
    )
    ended = how_it_ended(estimator)
    if ended and args.json and not args.quiet:  # else the summary says it
        print(ended, file=sys.stderr)
    return estimator


def _training_record(
    args: argparse.Namespace,
    data: Dataset,
    estimator: SoftmaxRegression,
    split: tuple[Index, Index, Index],
    report: dict[str, Any],
    started: float,
) -> dict[str, Any]:
    """What the stored version says of its training."""
    train, val, test = split
    return {
        "data": data.source,
        "rows": {"train": int(train.size), "validation": int(val.size), "test": int(test.size)},
        "epochs_run": estimator.n_epochs_run_,
        "best_epoch": estimator.best_epoch_,
        "kept_epoch": estimator.kept_epoch_,
        "stopped": estimator.stop_reason_,
        "seconds": round(time.perf_counter() - started, 3),
        **({"search": report["search"]["best"]} if args.search else {}),
        **(
            {"cv": {k: v for k, v in report["cv"].items() if k != "accuracy_folds"}}
            if args.cv
            else {}
        ),
    }


def _save(
    args: argparse.Namespace,
    name: str,
    estimator: SoftmaxRegression,
    source: tuple[Dataset, Index, FeatureEncoder | None],
    training: dict[str, Any],
    metrics: dict[str, Any],
) -> int:
    data, val, encoder = source
    repository = ModelRepository(open_store(args.store), keep_last=args.keep_last)
    try:
        saved = repository.save(
            estimator,
            name,
            training=training,
            metrics=metrics,
            fingerprint=fingerprint(data.X, data.y),
            keep=args.keep,
            guard=(data.X[val], data.y[val]) if val.size and args.guard_rows > 0 else None,
            guard_rows=args.guard_rows,
            activate=args.activate,
            encoder=encoder,
        )
    finally:
        repository.close()
    return saved.version


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args, sys.stdout)  # the current stream: the default was bound at import
    except ModelError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
