"""The service's one settings class: environment variables ``SOFTMAX_*`` and matching flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from model import ModelRepository
from model.errors import ModelError, StoreUnavailableError
from model.guard import GuardPolicy
from model.stores import is_database, open_store

from .keys import KeyConfigError, Keyring, build_keyring

__all__ = ["ENV_PREFIX", "Settings", "build_repository", "keyring_for", "startup_problem"]

ENV_PREFIX = "SOFTMAX_"


class Settings(BaseSettings):
    """Every setting is an environment variable ``SOFTMAX_<NAME>`` and a flag ``--<name>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="interface to listen on (0.0.0.0 in containers)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port")
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes")
    store: Path | str = Field(
        Path("artifacts"),
        description="artifact store: a directory, or a PostgreSQL database "
        "postgresql://user[:password]@host:port/dbname shared by replicas on several hosts",
    )
    model: str | None = Field(
        None, description="model name to serve; may be omitted if the store holds one model"
    )
    api_key: SecretStr | None = Field(
        None,
        description="bearer key required by /train and /models/{version}/activate; "
        "unset means those routes are open to anyone (a warning is logged)",
    )
    api_keys: SecretStr | None = Field(
        None,
        description="named keys as JSON: {name: {key or key_sha256, permissions (predict, "
        "train, admin), requests_per_second, rows_per_second, burst_seconds}}",
    )
    api_keys_file: Path | None = Field(
        None, description="named keys in a .json or .toml file, in the format of api_keys"
    )
    predict_requires_key: bool = Field(
        False, description="/predict needs a key with the predict (or train, admin) permission"
    )
    dashboard_requires_key: bool = Field(
        False,
        description="GET /dashboard/state (the data of the /dashboard page) needs a key "
        "(any configured key: the page is read-only)",
    )
    dashboard_refresh: float = Field(
        2.0, ge=0.5, le=3600, description="seconds between the /dashboard page's refreshes"
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="largest request body accepted (413 above)"
    )
    max_rows: int = Field(1000, ge=1, le=1_000_000, description="most rows in one request")
    max_learning_rate: float = Field(
        1.0, gt=0, le=1e6, description="upper bound of a /train request's learning_rate"
    )
    max_passes: int = Field(10, ge=1, le=1000, description="upper bound of /train's passes")
    unknown_categories: Literal["ignore", "refuse"] = Field(
        "ignore",
        description="a category a model did not see in training: ignore (all its one-hot "
        "columns 0) or refuse (422 unknown_category naming the column and the value)",
    )
    models_memory_bytes: int = Field(
        1024 * 1024 * 1024,
        ge=1,
        description="memory budget of the models the /v2 routes load by name: past it the "
        "least recently used are unloaded (the default model always stays; one model larger "
        "than the budget is still served, alone)",
    )
    reload_interval: float = Field(
        0.5, gt=0, le=3600, description="seconds between checks of the store for new versions"
    )
    keep_last: int = Field(100, ge=1, description="retention: newest versions to keep")
    snapshot_every: int = Field(
        100, ge=1, description="at most this many online updates between full snapshots"
    )
    metrics_window: int = Field(
        1000, ge=1, description="rows in the rolling prequential accuracy/log-loss window"
    )
    lock_timeout: float = Field(
        30.0, gt=0, le=3600, description="seconds to wait for the store's writer lock (503 after)"
    )
    # The guard (model/guard.py, README "The guard"): every /train is judged before it commits.
    guard_mode: Literal["enforce", "log", "off"] = Field(
        "enforce",
        description="enforce: refuse harmful updates (409); log: judge and record, never "
        "refuse; off: no guard (nor the out-of-range check)",
    )
    guard_max_loss_increase: float = Field(
        0.05, gt=0, le=100, description="most an update may raise the guard-set log-loss"
    )
    guard_max_step: float = Field(
        0.25,
        gt=0,
        description="most an update may move the weights, relative to their size",
    )
    guard_max_rate_ratio: float = Field(
        10.0,
        gt=0,
        description="most an update's learning rate x passes may exceed the model's own "
        "learning rate, as a factor",
    )
    online_momentum: bool = Field(
        False,
        description="carry the momentum buffers from one online update to the next (off: "
        "each update's effect is its own, which the guard can judge)",
    )
    guard_surprise_quantile: float = Field(
        0.95,
        gt=0.5,
        lt=1,
        description="a batch row is surprising when its loss exceeds this quantile of the "
        "guard set's row losses",
    )
    guard_surprise_alpha: float = Field(
        1e-2,
        gt=0,
        lt=0.5,
        description="refuse a batch whose count of surprising rows is this unlikely by chance",
    )
    guard_min_rows: int = Field(
        10, ge=1, description="below this many guard rows, updates are not judged"
    )
    # Across updates (model/guard_history.py); the defaults are GuardPolicy's.
    guard_suspect_rate: float = Field(
        GuardPolicy.suspect_rate,
        gt=0,
        lt=1,
        description="the share of surprising rows the pooled surprise test (across updates, "
        "overall and per key) is built to detect",
    )
    guard_max_total_loss_increase: float = Field(
        GuardPolicy.max_total_loss_increase,
        gt=0,
        le=100,
        description="most the guard-set log-loss may rise over the reference version's "
        "(summed over the updates since, each on the rows it was judged on; times the loss "
        "when it is above 1)",
    )
    guard_reference_every: int = Field(
        GuardPolicy.reference_every,
        ge=1,
        le=1_000_000,
        description="accepted updates after which the damage budget's reference moves to "
        "the active version",
    )
    guard_max_abs_z: float = Field(
        500.0,
        gt=0,
        description="rows with a feature this many standard deviations from the training "
        "mean are refused for training (422 out_of_range)",
    )
    holdout_every: int = Field(
        10,
        ge=0,
        description="every k-th row sent to /train joins the guard set instead of training "
        "(0: none)",
    )
    guard_online_rows: int = Field(
        200, ge=0, description="most online rows kept in the guard set (oldest go first)"
    )
    drift_delta: float = Field(
        0.05, ge=0, description="Page-Hinkley tolerance on the prequential loss"
    )
    drift_threshold: float = Field(
        5.0, gt=0, description="Page-Hinkley alarm threshold on the prequential loss"
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="log level"
    )

    @field_validator("store", mode="before")
    @classmethod
    def _store_address(cls, value: object) -> object:
        # A database address stays a string (a Path would fold its "//"); anything else is
        # a directory.
        if isinstance(value, str) and not is_database(value):
            return Path(value)
        return value

    @field_validator("model")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("api_key", "api_keys")
    @classmethod
    def _strip_key(cls, value: SecretStr | None) -> SecretStr | None:
        # A key read from a file often ends in a newline; clients' keys are stripped too.
        key = value.get_secret_value().strip() if value is not None else ""
        return SecretStr(key) if key else None

    @field_validator("api_keys_file", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return value or None

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("guard_online_rows")
    @classmethod
    def _holdout_needs_room(cls, value: int, info: ValidationInfo) -> int:
        if value == 0 and info.data.get("holdout_every", 0) > 0:
            raise ValueError(
                "0 keeps no held-out row, while --holdout-every takes rows from training for "
                "the guard set: set --holdout-every 0 too, or keep some rows"
            )
        return value


def build_repository(settings: Settings) -> ModelRepository:
    """The versioned model store the settings name (the local directory: the default)."""
    store = open_store(settings.store, lock_timeout=settings.lock_timeout)
    policy = GuardPolicy(
        mode=settings.guard_mode,
        max_loss_increase=settings.guard_max_loss_increase,
        max_step=settings.guard_max_step,
        max_rate_ratio=settings.guard_max_rate_ratio,
        surprise_quantile=settings.guard_surprise_quantile,
        surprise_alpha=settings.guard_surprise_alpha,
        min_rows=settings.guard_min_rows,
        max_abs_z=settings.guard_max_abs_z,
        suspect_rate=settings.guard_suspect_rate,
        max_total_loss_increase=settings.guard_max_total_loss_increase,
        reference_every=settings.guard_reference_every,
    )
    return ModelRepository(
        store,
        keep_last=settings.keep_last,
        snapshot_every=settings.snapshot_every,
        guard=policy,
        holdout_every=settings.holdout_every,
        guard_online_rows=settings.guard_online_rows,
        online_momentum=settings.online_momentum,
        drift_delta=settings.drift_delta,
        drift_threshold=settings.drift_threshold,
    )


def keyring_for(settings: Settings) -> Keyring:
    """The keys the settings configure; :class:`~service.keys.KeyConfigError` if they are
    invalid, or if /predict is to need a key and there is none."""
    keyring = build_keyring(settings.api_key, settings.api_keys, settings.api_keys_file)
    if settings.predict_requires_key and not keyring:
        raise KeyConfigError(
            "--predict-requires-key (SOFTMAX_PREDICT_REQUIRES_KEY): no key is configured "
            "(--api-key, --api-keys or --api-keys-file)"
        )
    if settings.dashboard_requires_key and not keyring:
        raise KeyConfigError(
            "--dashboard-requires-key (SOFTMAX_DASHBOARD_REQUIRES_KEY): no key is configured "
            "(--api-key, --api-keys or --api-keys-file)"
        )
    return keyring


def startup_problem(settings: Settings) -> str | None:
    """A settings mistake that must stop start-up, in one line naming the flag, or None.

    A store that exists but holds no model yet, or not the ``--model`` named, is no mistake:
    the service starts unready until the model is created (``POST /models``) or trained. Nor
    is a database that cannot be reached yet; one that answers and refuses (a wrong password,
    no such database, a newer schema) is.
    """
    try:
        keyring_for(settings)
    except KeyConfigError as exc:
        return str(exc)
    if isinstance(settings.store, Path) and not settings.store.is_dir():
        return (
            f"--store {settings.store} (SOFTMAX_STORE): no such directory; create it, or "
            f"train a model into it with python -m model.train DATA --store {settings.store}"
        )
    try:
        repository = build_repository(settings)
    except ModelError as exc:  # a database that refuses this service, or is too new
        return f"--store (SOFTMAX_STORE): {exc.message}"
    try:
        names = repository.models()
    except StoreUnavailableError:
        # Not reachable yet (refused, timed out, a name not resolvable yet: model.pgoutage):
        # the service starts live but not ready, and becomes ready when the database answers.
        return None
    except ModelError as exc:
        return f"--store (SOFTMAX_STORE): {exc.message}"
    finally:
        repository.close()
    shown = str(repository).removeprefix("the store ")  # a database's without its password
    # A --model the store does not hold yet is no mistake either: the service starts unready
    # (saying which models the store holds) until POST /models or the CLI creates it.
    if settings.model is None and len(names) > 1:
        return (
            f"--model (SOFTMAX_MODEL): the store {shown} holds several models "
            f"({', '.join(names)}); choose one"
        )
    return None
