"""Hyper-parameters are declared once (model.params): the estimator's signature and
get_params, the optimizer settings and the training CLI's flags all agree with the table."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import pytest

from model.errors import InvalidParameterError
from model.optimizer import SGDSettings
from model.params import HYPER_PARAMETERS, LEGACY_DEFAULTS, check_params
from model.softmax import SoftmaxRegression
from model.train import _estimator, build_parser, main

# What get_params() returned before "auto" (0.4); artifacts stored it as meta["params"], and a
# setting missing from a stored version still means this.
STORED_DEFAULTS = {
    "learning_rate": 0.05,
    "schedule": "constant",
    "power_t": 0.5,
    "decay_steps": 1000.0,
    "momentum": 0.9,
    "l2": 1e-3,
    "batch_size": 32,
    "epochs": 100,
    "patience": 10,
    "tol": 1e-4,
    "seed": 0,
    "standardize": True,
}

# The defaults from 0.4: "auto" is chosen from the data by fit (model.autotune).
DEFAULTS = STORED_DEFAULTS | {
    "learning_rate": "auto",
    "schedule": "auto",
    "l2": "auto",
    "batch_size": "auto",
    "epochs": "auto",
    "online_learning_rate": "auto",
}


def test_the_constructor_signature_is_the_table() -> None:
    signature = inspect.signature(SoftmaxRegression.__init__).parameters
    keywords = {name: p for name, p in signature.items() if name != "self"}
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in keywords.values())
    assert [(name, p.default) for name, p in keywords.items()] == [
        (parameter.name, parameter.default) for parameter in HYPER_PARAMETERS
    ]


def test_get_params_is_unchanged_and_round_trips() -> None:
    defaults = SoftmaxRegression().get_params()
    assert defaults == DEFAULTS and list(defaults) == list(DEFAULTS)
    assert LEGACY_DEFAULTS == STORED_DEFAULTS
    settings = dict(DEFAULTS, learning_rate=0.2, schedule="invscaling", standardize=False)
    assert SoftmaxRegression(**settings).get_params() == settings


def test_optimizer_settings_come_from_the_table() -> None:
    for field in dataclasses.fields(SGDSettings):  # a bare optimizer's: the fixed ones
        assert field.default == LEGACY_DEFAULTS[field.name]
    model = SoftmaxRegression(learning_rate=0.3, schedule="constant", momentum=0.0, l2=0.5)
    assert dataclasses.asdict(model.sgd_settings) == {
        field.name: model.get_params()[field.name] for field in dataclasses.fields(SGDSettings)
    }
    with pytest.raises(InvalidParameterError, match=r"^momentum must be in \[0, 1\), got 1.0$"):
        SGDSettings(momentum=1.0)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(standardize="no"), "standardize must be a boolean, got 'no'"),
        (dict(tol="0.1"), "tol must be a number, got '0.1'"),
        (dict(power_t=float("inf")), "power_t must be in [0, 10], got inf"),
        (dict(seed=1.0), "seed must be an integer >= 0, got 1.0"),
    ],
)
def test_each_declared_range_is_checked(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidParameterError) as caught:
        check_params(settings)
    assert str(caught.value) == message
    assert caught.value.field == next(iter(settings))


def test_every_valid_default_passes() -> None:
    check_params({parameter.name: parameter.default for parameter in HYPER_PARAMETERS})


def test_cli_defaults_are_the_estimators() -> None:
    args = build_parser().parse_args(["builtin:iris"])
    assert _estimator(args).get_params() == DEFAULTS


def test_cli_keeps_its_flag_spellings() -> None:
    args = build_parser().parse_args(
        ["builtin:iris", "--lr", "0.2", "--batch-size", "7", "--l2", "0.01", "--momentum", "0.5"]
        + ["--schedule", "invscaling", "--epochs", "3", "--patience", "2", "--seed", "4"]
        + ["--power-t", "0.25", "--decay-steps", "50", "--tol", "0.001", "--no-standardize"]
    )
    assert _estimator(args).get_params() == {
        "learning_rate": 0.2,
        "schedule": "invscaling",
        "power_t": 0.25,
        "decay_steps": 50.0,
        "momentum": 0.5,
        "l2": 0.01,
        "batch_size": 7,
        "epochs": 3,
        "patience": 2,
        "tol": 0.001,
        "seed": 4,
        "standardize": False,
        "online_learning_rate": "auto",
    }
    assert _estimator(args, l2=0.5).l2 == 0.5
    long_form = build_parser().parse_args(["builtin:iris", "--learning-rate", "0.3"])
    assert long_form.learning_rate == 0.3


def test_cli_help_shows_every_setting_with_its_default() -> None:
    text = " ".join(build_parser().format_help().split())
    for parameter in HYPER_PARAMETERS:
        assert all(flag in text for flag in parameter.cli_flags)
        assert f"(default: {parameter.default})" in text


def test_an_invalid_setting_on_the_cli_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["builtin:iris", "--store", str(tmp_path / "store"), "--lr", "0", "--quiet"])
    assert code == 2
    assert capsys.readouterr().err == "error: learning_rate must be > 0, got 0.0\n"
