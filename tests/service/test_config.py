"""Settings and ``python -m service``: every setting a flag, bad values fail fast with code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import ENV_PREFIX, Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_service(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m service ARGS`` with no SOFTMAX_* variables but ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    clean.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=REPO_ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def test_help_lists_every_setting_as_a_flag_with_its_variable() -> None:
    result = run_service("--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # undo argparse's line wrapping
    for name in Settings.model_fields:
        assert flag(name) in text, name
        assert f"env {ENV_PREFIX}{name.upper()}" in text, name


INVALID = {
    "port not a number": (["--port", "abc"], {}, "--port (SOFTMAX_PORT)", "valid integer"),
    "port too high": (["--port", "70000"], {}, "--port (SOFTMAX_PORT)", "less than or equal"),
    "no workers": ([], {"SOFTMAX_WORKERS": "0"}, "--workers (SOFTMAX_WORKERS)", "greater than"),
    "no rows": (["--max-rows", "0"], {}, "--max-rows (SOFTMAX_MAX_ROWS)", "greater than"),
    "no reload interval": (["--reload-interval", "0"], {}, "--reload-interval", "greater than"),
    "tiny body limit": (["--max-body-bytes", "100"], {}, "--max-body-bytes", "1024"),
    "NaN learning rate": (["--max-learning-rate", "nan"], {}, "--max-learning-rate", "'nan'"),
    "endless lock wait": (["--lock-timeout", "inf"], {}, "--lock-timeout", "3600"),
    "log level": (["--log-level", "loud"], {}, "--log-level (SOFTMAX_LOG_LEVEL)", "'debug'"),
}


@pytest.mark.parametrize(("args", "env", "named", "why"), INVALID.values(), ids=INVALID.keys())
def test_an_invalid_setting_exits_2_naming_the_flag(
    args: list[str], env: dict[str, str], named: str, why: str
) -> None:
    result = run_service(*args, **env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert f"error: invalid setting {named}" in result.stderr
    assert why in result.stderr
    assert "Traceback" not in result.stderr
    assert "Uvicorn running" not in result.stderr


def test_a_flag_overrides_its_variable() -> None:
    # SOFTMAX_PORT alone would be refused; the flag wins, so only the workers are wrong.
    result = run_service("--port", "8080", "--workers", "0", SOFTMAX_PORT="x")
    assert result.returncode == 2
    assert "error: invalid setting --workers (SOFTMAX_WORKERS)" in result.stderr
    assert "--port" not in result.stderr


def test_an_unknown_flag_exits_2() -> None:
    result = run_service("--prot", "80")
    assert result.returncode == 2
    assert "unrecognized arguments: --prot" in result.stderr


def test_settings_validate_at_construction() -> None:
    with pytest.raises(ValidationError, match="workers"):
        Settings(workers=0)
    with pytest.raises(ValidationError, match="max_learning_rate"):
        Settings(max_learning_rate=0)
    settings = Settings(store=Path("/tmp/x"), model="", log_level="DEBUG", api_key="k")
    assert settings.model is None and settings.log_level == "debug"
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "k"
    assert "k" not in repr(settings.api_key)
    with pytest.raises(ValidationError):
        settings.port = 1  # frozen


def test_store_mistakes_stop_start_up_in_one_line(tmp_path: Path) -> None:
    from .helpers import save_model

    store = tmp_path / "store"
    store.mkdir()
    save_model(store, "iris", epochs=2)
    save_model(store, "digits", epochs=2)
    cases = {
        "no such store": (
            ["--store", str(tmp_path / "nope")],
            f"--store {tmp_path / 'nope'} (SOFTMAX_STORE): no such directory",
        ),
        "several models, none chosen": (
            ["--store", str(store), "--port", "0"],
            f"--model (SOFTMAX_MODEL): the store {store} holds several models (digits, iris)",
        ),
    }
    for name, (args, message) in cases.items():
        result = run_service(*args)
        assert result.returncode == 2, (name, result.stderr)
        assert result.stderr.startswith(f"error: invalid setting {message}"), name
        assert len(result.stderr.strip().splitlines()) == 1, (name, result.stderr)
        assert "Uvicorn running" not in result.stderr


def test_key_mistakes_stop_start_up_in_one_line_without_the_key(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    broken = tmp_path / "keys.json"
    broken.write_text('{"ci": {"key": "s3cret-ci-key", "permissions": ["train"],}}')
    bad_permission = tmp_path / "keys.toml"
    bad_permission.write_text('[ci]\nkey = "s3cret-ci-key"\npermissions = ["fly"]\n')
    unknown_format = tmp_path / "keys.yaml"
    unknown_format.write_text("ci: {}\n")
    file_flag = "--api-keys-file {} (SOFTMAX_API_KEYS_FILE): "
    cases: dict[str, tuple[list[str], dict[str, str], str]] = {
        "no such file": (
            ["--api-keys-file", str(tmp_path / "nope.json")],
            {},
            file_flag.format(tmp_path / "nope.json") + "cannot read it (No such file",
        ),
        "not JSON": (
            ["--api-keys-file", str(broken)],
            {},
            file_flag.format(broken) + "not valid JSON (Expecting property name",
        ),
        "unknown permission": (
            ["--api-keys-file", str(bad_permission)],
            {},
            file_flag.format(bad_permission) + "ci.permissions.0: Input should be 'predict'",
        ),
        "not JSON nor TOML": (
            ["--api-keys-file", str(unknown_format)],
            {},
            file_flag.format(unknown_format) + "expected a .json or .toml file",
        ),
        "variable not JSON": (
            [],
            {"SOFTMAX_API_KEYS": '{"ci": "s3cret-ci-key'},
            "--api-keys (SOFTMAX_API_KEYS): not valid JSON (Unterminated string",
        ),
        "closed predict without keys": (
            ["--predict-requires-key", "true"],
            {},
            "--predict-requires-key (SOFTMAX_PREDICT_REQUIRES_KEY): no key is configured",
        ),
    }
    for name, (args, env, message) in cases.items():
        result = run_service("--store", str(store), *args, **env)
        assert result.returncode == 2, (name, result.stderr)
        assert result.stderr.startswith(f"error: invalid setting {message}"), (name, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, (name, result.stderr)
        assert "s3cret" not in result.stderr, name
        assert "Uvicorn running" not in result.stderr
