"""The artifact file format: one ``.npz`` per version, read with ``allow_pickle=False``.

An artifact holds numeric and fixed-width string arrays only, plus two 0-d string arrays:

* ``__meta__``: the metadata as a JSON string (format version, model name, version, parent,
  kind, created-at, ...);
* ``__checksum__``: ``"sha256:<hex>"`` over every other array's name, dtype, shape and bytes
  and the metadata text. Loading recomputes it, so a truncated, corrupted or tampered file is
  refused with an error naming the file, never half-read.

The metadata is typed as :class:`VersionMeta` (its JSON round trip is
:meth:`VersionMeta.from_json` / :meth:`VersionMeta.to_json`, nowhere else). Two kinds of
artifact exist (``VersionMeta.kind``):

* ``snapshot``: the full model: ``weights (d, k)``, ``bias (k,)``, optional
  ``velocity_weights``/``velocity_bias`` (momentum buffers), ``mean``/``scale`` (standardization),
  ``classes (k,)`` and optional ``feature_names (d,)``; a model trained on a table with
  categorical columns or missing cells also has ``encoder`` in its metadata: its raw features,
  categories and fill values as JSON (:mod:`model.encoding`; since 0.3);
* ``update``: one acknowledged online minibatch: ``X (m, d)`` raw rows and ``y (m,)`` class
  indices it was trained on, and optionally ``holdout_X``/``holdout_y``, the rows of the
  minibatch that went to the guard set instead; replaying it on the parent version reproduces
  this version exactly, guard set included.

A snapshot may also hold the guard set (:mod:`model.guard`): ``guard_X (g, d)`` raw rows and
``guard_y (g,)`` class indices, the first ``guard_offline_rows`` of them offline validation rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from numpy.typing import NDArray

from .errors import CorruptArtifactError

__all__ = [
    "FORMAT_VERSION",
    "Kind",
    "OnlineStats",
    "Record",
    "Source",
    "VersionMeta",
    "checksum",
    "encode_record",
    "parse_meta",
    "read_meta",
    "read_record",
]

FORMAT_VERSION = 1
_META = "__meta__"
_CHECKSUM = "__checksum__"
_ALLOWED_KINDS = frozenset("biufU")


Kind = Literal["snapshot", "update"]  # a full model, or one online minibatch on its parent
Source = Literal["offline", "online"]  # the training CLI, or /train


@dataclass(frozen=True)
class OnlineStats:
    """One online update as recorded: its rows, settings and prequential figures."""

    n: int
    learning_rate: float | None
    passes: int
    loss_before: float
    accuracy_before: float
    loss_after: float
    momentum: bool = True  # False: plain SGD steps, the momentum buffers left alone (0.2)


@dataclass(frozen=True)
class VersionMeta(Mapping[str, Any]):
    """One version's metadata, typed. Also a read-only mapping of its JSON form, so code that
    reads ``meta["training"]`` (as scripts did when this was a dict) keeps working.

    ``version``, ``model`` and ``format_version`` are assigned by the store when it writes.
    ``params``, ``n_features``, ``classes``, ``feature_names``, ``training``, ``metrics`` and
    ``fingerprint`` describe a snapshot (an update inherits them from its snapshot);
    ``digest`` fingerprints an update's resulting weights; ``online`` is set on every version
    an online update made.
    """

    kind: Kind
    source: Source
    parent: int | None
    created_at: str
    step: int
    chain_length: int = 0
    chain_bytes: int = 0
    version: int = 0
    model: str = ""
    format_version: int = FORMAT_VERSION
    online: OnlineStats | None = None
    digest: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    n_features: int = 0
    classes: list[Any] = field(default_factory=list)
    feature_names: list[str] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    fingerprint: str | None = None
    encoder: dict[str, Any] | None = None  # snapshots of models with a feature encoding (0.3)
    # Guarded learning (0.2). Absent from older artifacts: their defaults say "none".
    rows_seen: int = 0
    guard_offline_rows: int = 0
    guard_capacity: int = 0
    guard: dict[str, Any] | None = None
    verdict: dict[str, Any] | None = None
    key: str | None = None
    drift: dict[str, Any] | None = None
    guard_history: dict[str, Any] | None = None  # model/guard_history.py (0.3)
    # An update's sampled weights and bias, to accept a replay that differs from the
    # writer's by rounding only (model.versions.replay_matches; 0.4).
    replay_sample: list[float] | None = None
    # Models created with no data, and growing classes (model/growth.py; 0.5). Snapshots
    # carry the two settings; an update that added classes records them.
    allow_new_classes: bool = False
    online_rate_per_row: bool = False
    # Created from 0.6 on: updates step row by row (SoftmaxRegression.updated).
    online_row_steps: bool = False
    classes_added: list[Any] | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VersionMeta:
        """Parse stored metadata; anything malformed is a :class:`CorruptArtifactError`."""
        version = data.get("version")
        try:
            known = (
                _META_FIELDS if cls is VersionMeta else {f.name for f in dataclasses.fields(cls)}
            )
            values = {key: value for key, value in data.items() if key in known}
            online = data.get("online")
            values["online"] = OnlineStats(**online) if online is not None else None
            meta = cls(**values)
            kinds_ok = meta.kind in _KINDS and meta.source in _SOURCES
            types_ok = all(isinstance(getattr(meta, name), int) for name in _INT_FIELDS)
        except TypeError as exc:
            raise CorruptArtifactError(
                f"version {version}: metadata is incomplete or malformed ({exc})"
            ) from None
        if not (kinds_ok and types_ok):
            raise CorruptArtifactError(
                f"version {version}: metadata is malformed (kind {meta.kind!r}, "
                f"source {meta.source!r})"
            )
        return meta

    def to_json(self) -> dict[str, Any]:
        """The stored form: the same keys artifacts have always had, per kind and source."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "source": self.source,
            "parent": self.parent,
            "created_at": self.created_at,
            "chain_length": self.chain_length,
            "chain_bytes": self.chain_bytes,
            "step": self.step,
        }
        if self.version:
            out.update(format_version=self.format_version, model=self.model, version=self.version)
        if self.kind == "snapshot":
            out.update(
                params=self.params,
                n_features=self.n_features,
                classes=self.classes,
                feature_names=self.feature_names,
                training=self.training,
            )
            if self.encoder is not None:  # absent otherwise: what older versions wrote
                out["encoder"] = self.encoder
            for name in _ONLINE_SETTINGS:  # likewise, written only when on
                if getattr(self, name):
                    out[name] = True
            if self.source == "offline":
                out.update(metrics=self.metrics, fingerprint=self.fingerprint)
        else:
            out["digest"] = self.digest
        if self.online is not None:
            # dataclasses.asdict's result (the fields are scalars) without its deep copies.
            online = {name: getattr(self.online, name) for name in _ONLINE_FIELDS}
            if online["momentum"]:  # the default, and all 0.1.0 knew: written as it wrote
                del online["momentum"]
            out["online"] = online
        # Written only when set, so that what 0.1.0 wrote round-trips unchanged.
        for name in _GUARDED:
            value = getattr(self, name)
            if value:
                out[name] = value
        return out

    @cached_property
    def _json(self) -> dict[str, Any]:
        return self.to_json()

    def __getitem__(self, key: str) -> Any:
        return self._json[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._json)

    def __len__(self) -> int:
        return len(self._json)


_ONLINE_SETTINGS = ("allow_new_classes", "online_rate_per_row", "online_row_steps")
_GUARDED = (
    "classes_added",
    "rows_seen",
    "guard_offline_rows",
    "guard_capacity",
    "guard",
    "verdict",
    "key",
    "drift",
    "guard_history",
    "replay_sample",
)
_META_FIELDS = frozenset(f.name for f in dataclasses.fields(VersionMeta))
_ONLINE_FIELDS = tuple(f.name for f in dataclasses.fields(OnlineStats))
_KINDS = get_args(Kind)
_SOURCES = get_args(Source)
_INT_FIELDS = (
    "step",
    "chain_length",
    "chain_bytes",
    "version",
    "rows_seen",
    "guard_offline_rows",
    "guard_capacity",
)


@dataclass(frozen=True)
class Record:
    """One version's file content: its metadata and its arrays."""

    meta: dict[str, Any]
    arrays: Mapping[str, NDArray[Any]]

    @property
    def version(self) -> int:
        return int(self.meta["version"])

    @property
    def kind(self) -> str:
        return str(self.meta["kind"])


def checksum(arrays: Mapping[str, NDArray[Any]], meta_text: str) -> str:
    """``sha256:<hex>`` over the arrays (sorted by name) and the metadata text."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        if arr.size:  # an empty array (an update whose rows all joined the guard set) has none
            digest.update(arr.data.cast("B"))
    digest.update(meta_text.encode())
    return "sha256:" + digest.hexdigest()


def encode_record(record: Record) -> bytes:
    """Serialize a record into ``.npz`` bytes (uncompressed: loading must stay fast)."""
    for name, arr in record.arrays.items():
        if name.startswith("__") or arr.dtype.kind not in _ALLOWED_KINDS:
            raise ValueError(f"array {name!r} of dtype {arr.dtype} cannot go in an artifact")
    meta_text = json.dumps(record.meta, sort_keys=True, allow_nan=False)
    buffer = io.BytesIO()
    payload: dict[str, Any] = {n: np.ascontiguousarray(a) for n, a in record.arrays.items()}
    payload[_META] = np.array(meta_text)
    payload[_CHECKSUM] = np.array(checksum(record.arrays, meta_text))
    np.savez(buffer, **payload)
    return buffer.getvalue()


@contextlib.contextmanager
def _open(path: Path) -> Iterator[Any]:
    # The file is opened here, not by np.load: when np.load fails on a damaged archive it
    # leaves its own handle open (a ResourceWarning, and a file descriptor until collected).
    with open(path, "rb") as file:  # FileNotFoundError propagates
        try:
            npz = np.load(file, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError, RuntimeError) as exc:
            raise CorruptArtifactError(f"{path}: not a readable .npz artifact ({exc})") from None
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise CorruptArtifactError(f"{path}: not an .npz archive (a bare .npy array)")
        with npz:
            yield npz


def _string(npz: Any, key: str, path: Path) -> str:
    try:
        value = npz[key]
    except KeyError:
        raise CorruptArtifactError(
            f"{path}: missing {key} (not a softmax-serve artifact)"
        ) from None
    # A corrupted zip header can claim encryption or an unsupported method: zipfile raises
    # RuntimeError (or its subclass NotImplementedError) for those.
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, RuntimeError) as exc:
        raise CorruptArtifactError(f"{path}: unreadable {key} ({exc})") from None
    if not (isinstance(value, np.ndarray) and value.dtype.kind == "U" and value.ndim == 0):
        raise CorruptArtifactError(f"{path}: {key} is not a string")
    return str(value)


def parse_meta(text: str, path: Path | str) -> dict[str, Any]:
    """Stored metadata text parsed and checked (``path``: where it was read, for errors)."""
    try:
        meta = json.loads(text)
    except ValueError as exc:
        raise CorruptArtifactError(f"{path}: metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise CorruptArtifactError(
            f"{path}: unsupported artifact format (expected format_version {FORMAT_VERSION})"
        )
    for key in ("version", "kind"):
        if key not in meta:
            raise CorruptArtifactError(f"{path}: metadata has no {key!r}")
    return meta


def read_meta(path: Path) -> dict[str, Any]:
    """Only the metadata (not checksum-verified): cheap, for listings."""
    with _open(path) as npz:
        return parse_meta(_string(npz, _META, path), path)


def read_record(path: Path) -> Record:
    """Read and verify a whole artifact. Raises :class:`CorruptArtifactError` naming the file
    if it is truncated, tampered with, holds a pickled/object array, or fails its checksum."""
    with _open(path) as npz:
        meta_text = _string(npz, _META, path)
        expected = _string(npz, _CHECKSUM, path)
        arrays: dict[str, NDArray[Any]] = {}
        for name in npz.files:
            if name in (_META, _CHECKSUM):
                continue
            try:
                arr = npz[name]
            except ValueError as exc:  # object arrays need pickle, which is refused
                raise CorruptArtifactError(f"{path}: array {name!r} refused ({exc})") from None
            except (OSError, zipfile.BadZipFile, EOFError, RuntimeError) as exc:
                raise CorruptArtifactError(f"{path}: array {name!r} unreadable ({exc})") from None
            if not isinstance(arr, np.ndarray):  # NpzFile returns raw bytes for a non-.npy member
                raise CorruptArtifactError(f"{path}: member {name!r} is not a .npy array")
            if arr.dtype.kind not in _ALLOWED_KINDS:
                raise CorruptArtifactError(f"{path}: array {name!r} has dtype {arr.dtype}")
            arrays[name] = arr
    actual = checksum(arrays, meta_text)
    if actual != expected:
        raise CorruptArtifactError(
            f"{path}: checksum mismatch (file says {expected[:19]}..., content is "
            f"{actual[:19]}...): the file was corrupted or modified"
        )
    return Record(parse_meta(meta_text, path), arrays)
