"""Named API keys: who may call what, and how fast.

A key has a name (what logs and metrics show; never the key), permissions and optional rate
limits. Keys come from three settings, merged into one :class:`Keyring` at start-up:

- ``api_key``: the single key of old, named ``default``, with every permission and no limit;
- ``api_keys``: JSON, ``{"name": {"key": "...", "permissions": ["train"], ...}}``;
- ``api_keys_file``: the same mapping in a ``.json`` or ``.toml`` file.

Only digests are kept: a key may be given as ``key`` or as ``key_sha256`` (the hex SHA-256 of
the key as clients send it), and a presented key is compared with every digest in constant
time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

__all__ = [
    "ANONYMOUS",
    "Caller",
    "KeyConfigError",
    "KeySpec",
    "Keyring",
    "Permission",
    "RateLimit",
    "build_keyring",
]

Permission = Literal["predict", "train", "admin"]

# A permission and everything it implies: admin can train, and whoever may train may predict.
_IMPLIED: dict[str, frozenset[str]] = {
    "predict": frozenset({"predict"}),
    "train": frozenset({"predict", "train"}),
    "admin": frozenset({"predict", "train", "admin"}),
}
_EVERY_PERMISSION = _IMPLIED["admin"]


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the key's name and what it may do (``request.state.caller``)."""

    name: str
    permissions: frozenset[str]

    def may(self, permission: Permission) -> bool:
        return permission in self.permissions


ANONYMOUS = Caller("anonymous", _EVERY_PERMISSION)
"""The caller when no key is configured: the routes are open to anyone."""


@dataclass(frozen=True)
class RateLimit:
    """A key's token buckets on /train; None = that bucket does not limit."""

    requests_per_second: float | None
    rows_per_second: float | None
    burst_seconds: float


class KeySpec(BaseModel):
    """One named key as written in ``api_keys`` or ``api_keys_file``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: SecretStr | None = Field(None, description="the bearer key itself")
    key_sha256: str | None = Field(
        None, pattern=r"^[0-9a-fA-F]{64}$", description="or its hex SHA-256 digest"
    )
    permissions: list[Permission] = Field(min_length=1)
    requests_per_second: float | None = Field(None, gt=0, le=1e6, allow_inf_nan=False)
    rows_per_second: float | None = Field(None, gt=0, le=1e9, allow_inf_nan=False)
    burst_seconds: float = Field(1.0, gt=0, le=3600, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_key(self) -> KeySpec:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of 'key' and 'key_sha256'")
        if self.key is not None and not self.key.get_secret_value().strip():
            raise ValueError("'key' is blank")
        return self

    def digest(self) -> bytes:
        if self.key is not None:
            return _digest(self.key.get_secret_value().strip())
        assert self.key_sha256 is not None  # the validator above
        return bytes.fromhex(self.key_sha256)

    def rate_limit(self) -> RateLimit:
        return RateLimit(self.requests_per_second, self.rows_per_second, self.burst_seconds)


class KeyConfigError(ValueError):
    """A key setting that must stop start-up; the message is one line naming the flag."""


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True)
class _Key:
    caller: Caller
    digest: bytes
    limit: RateLimit | None


class Keyring:
    """The configured keys. Empty: every route is open (:data:`ANONYMOUS`)."""

    def __init__(self, keys: dict[str, KeySpec], *, legacy_key: str | None = None) -> None:
        entries = [
            _Key(Caller(name, _implied(spec.permissions)), spec.digest(), spec.rate_limit())
            for name, spec in keys.items()
        ]
        if legacy_key:
            entries.insert(0, _Key(Caller("default", _EVERY_PERMISSION), _digest(legacy_key), None))
        seen: dict[bytes, str] = {}
        for entry in entries:
            other = seen.setdefault(entry.digest, entry.caller.name)
            if other != entry.caller.name:
                raise KeyConfigError(
                    f"--api-key / --api-keys / --api-keys-file: {other!r} and "
                    f"{entry.caller.name!r} have the same key; give each name its own"
                )
        self._keys = tuple(entries)
        # Only the single key of old: a wrong key keeps its old answer, 403 (see the README).
        self.legacy_only = bool(legacy_key) and not keys

    def __bool__(self) -> bool:
        return bool(self._keys)

    @property
    def names(self) -> list[str]:
        return [entry.caller.name for entry in self._keys]

    def describe(self) -> str:
        """``name (permissions), ...`` for the start-up log: never a key."""
        return ", ".join(
            f"{entry.caller.name} ({'+'.join(sorted(entry.caller.permissions))})"
            for entry in self._keys
        )

    def limits(self) -> dict[str, RateLimit]:
        return {e.caller.name: e.limit for e in self._keys if e.limit is not None}

    def identify(self, key: str) -> Caller | None:
        """The caller whose key this is, or None; every digest is compared, in constant time."""
        supplied = _digest(key)
        found: Caller | None = None
        for entry in self._keys:
            if hmac.compare_digest(supplied, entry.digest):
                found = entry.caller
        return found


def _implied(permissions: list[Permission]) -> frozenset[str]:
    return frozenset().union(*(_IMPLIED[p] for p in permissions))


def build_keyring(
    api_key: SecretStr | None, api_keys: SecretStr | None, api_keys_file: Path | None
) -> Keyring:
    """The keyring of the three key settings, or :class:`KeyConfigError` naming the flag."""
    keys: dict[str, KeySpec] = {}
    sources: list[tuple[str, dict[str, KeySpec]]] = []
    if api_keys is not None:
        sources.append(("--api-keys (SOFTMAX_API_KEYS)", _parse_json_text(api_keys)))
    if api_keys_file is not None:
        sources.append(
            (f"--api-keys-file {api_keys_file} (SOFTMAX_API_KEYS_FILE)", _read(api_keys_file))
        )
    taken = {"default"} if api_key is not None else set()
    for setting, specs in sources:
        for name, spec in specs.items():
            if name in taken:
                raise KeyConfigError(f"{setting}: the key name {name!r} is used twice")
            taken.add(name)
            keys[name] = spec
    legacy = api_key.get_secret_value() if api_key is not None else None
    return Keyring(keys, legacy_key=legacy)


def _parse_json_text(text: SecretStr) -> dict[str, KeySpec]:
    setting = "--api-keys (SOFTMAX_API_KEYS)"
    try:
        data = json.loads(text.get_secret_value())
    except ValueError as exc:  # the decoder's messages say where, never quote the text
        raise KeyConfigError(f"{setting}: not valid JSON ({exc})") from None
    return _specs(data, setting)


def _read(path: Path) -> dict[str, KeySpec]:
    setting = f"--api-keys-file {path} (SOFTMAX_API_KEYS_FILE)"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise KeyConfigError(f"{setting}: cannot read it ({exc.strerror})") from None
    if path.suffix == ".toml":
        try:
            data: object = tomllib.loads(raw.decode())
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise KeyConfigError(f"{setting}: not valid TOML ({exc})") from None
    elif path.suffix == ".json":
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise KeyConfigError(f"{setting}: not valid JSON ({exc})") from None
    else:
        raise KeyConfigError(f"{setting}: expected a .json or .toml file")
    return _specs(data, setting)


def _specs(data: Any, setting: str) -> dict[str, KeySpec]:
    if not isinstance(data, dict) or not data:
        raise KeyConfigError(f"{setting}: expected an object of named keys, {{name: {{...}}}}")
    specs: dict[str, KeySpec] = {}
    for name, value in data.items():
        if not name or not name.isascii() or not name.replace("-", "").replace("_", "").isalnum():
            raise KeyConfigError(
                f"{setting}: key name {name!r}: use letters, digits, '-' and '_' only"
            )
        try:
            specs[name] = KeySpec.model_validate(value)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            where = f".{where}" if where else ""
            # The message only: pydantic's input may be the key itself.
            raise KeyConfigError(f"{setting}: {name}{where}: {error['msg']}") from None
    return specs
