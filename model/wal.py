"""The update log: acknowledged online updates appended to per-model segment files.

Recording an online update is an append, not a file of its own: the store writes the update's
record at the end of the model's newest *segment* and one ``fdatasync`` makes every record
appended since the last one durable, however many there are (group commit: see
:mod:`model.commit`). Snapshots stay ``.npz`` files (:mod:`model.artifact`).

**A segment** is ``u<first version:08d>.log`` in the model's directory: records back to back,
nothing else. The records of one segment form one line of descent: each record's parent is the
record before it (the first one's parent is any version), so the versions of a segment that
retention must keep are always a prefix of it, and retention removes the rest by truncating
the file (:meth:`~model.store.LocalArtifactStore.remove`). A record whose parent is not the
newest version of the newest segment (after a snapshot, a rollback, or another segment's
truncation) starts a new segment.

**A record** is a 20-byte header and a body::

    offset  size  field
    0       4     magic b"SSU1"
    4       4     version number (unsigned, little-endian)
    8       8     body length n (unsigned, little-endian)
    16      4     CRC-32 of bytes 4..16 and of the body
    20      n     body: a 4-byte length m, m bytes of UTF-8 JSON
                  {"meta": <the version's metadata>, "arrays": [[name, dtype, shape], ...]},
                  then each array's bytes (C order), in that order

**Recovery.** Reading a segment stops at the first record that is incomplete (the file ends
inside it) or fails its magic, its CRC or its framing. If nothing valid follows that point in
the newest segment, it is a *torn tail*: the remains of an append a crash or power loss cut
short, which was never acknowledged (an update is acknowledged only after the sync that covers
its record). The next writer cuts it off (truncates the file there, syncs, and says so in the
log) and the model opens at the last complete record, never at a half-written one. Anything
else (a bad record with valid ones after it, or in an older segment) is damage, not a torn
write: the versions before it stay readable, and writing to the model is refused with a
:class:`~model.errors.CorruptArtifactError` naming the file and offset, for an operator to
restore the file from a backup.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .errors import CorruptArtifactError

__all__ = [
    "HEADER",
    "MAGIC",
    "SEGMENT",
    "Entry",
    "Scan",
    "decode",
    "encode",
    "encode_entry",
    "scan",
    "segment_name",
]

MAGIC = b"SSU1"
_HEADER = struct.Struct("<4sIQI")  # magic, version, body length, CRC-32
HEADER = _HEADER.size
_LENGTH = struct.Struct("<I")
SEGMENT = re.compile(r"^u(\d{8})\.log$")
_ALLOWED_KINDS = frozenset("biufU")
_MAX_VERSION = 2**32 - 1
_CHUNK = 1 << 20  # bytes read at a time when scanning a segment


def segment_name(first_version: int) -> str:
    return f"u{first_version:08d}.log"


def encode(version: int, meta: Mapping[str, Any], arrays: Mapping[str, NDArray[Any]]) -> bytes:
    """One record's bytes: header, then the body (metadata JSON and the arrays' bytes)."""
    return encode_entry(version, dict(meta), arrays, 0)[0]


def encode_entry(
    version: int, meta: dict[str, Any], arrays: Mapping[str, NDArray[Any]], offset: int
) -> tuple[bytes, Entry]:
    """One record's bytes, and its :class:`Entry` once written at ``offset`` of a segment."""
    if not 0 < version <= _MAX_VERSION:
        raise ValueError(f"version {version} does not fit a log record")
    manifest = []
    blobs = []
    for name, arr in arrays.items():
        if arr.dtype.kind not in _ALLOWED_KINDS:
            raise ValueError(f"array {name!r} of dtype {arr.dtype} cannot go in a record")
        contiguous = np.ascontiguousarray(arr)
        manifest.append((name, contiguous.dtype.str, tuple(contiguous.shape)))
        blobs.append(contiguous.data.cast("B") if contiguous.size else b"")
    text = json.dumps({"meta": meta, "arrays": manifest}, allow_nan=False).encode()
    body = b"".join([_LENGTH.pack(len(text)), text, *blobs])
    head = struct.pack("<IQ", version, len(body))
    crc = zlib.crc32(body, zlib.crc32(head))
    data = MAGIC + head + struct.pack("<I", crc) + body
    entry = Entry(version, offset, len(data), meta, tuple(manifest), _LENGTH.size + len(text))
    return data, entry


@dataclass(frozen=True)
class Entry:
    """Where one record lies in its segment, and its (verified) metadata."""

    version: int
    offset: int
    length: int
    meta: dict[str, Any]
    arrays: tuple[tuple[str, str, tuple[int, ...]], ...] = ()  # name, dtype, shape
    data_start: int = 0  # where the arrays' bytes begin in the body

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass
class Scan:
    """What reading a segment from ``start`` found: the complete records, where the readable
    part ends, and why it ends there (None: at the end of the file)."""

    entries: list[Entry] = field(default_factory=list)
    end: int = 0
    problem: str | None = None
    valid_after: bool = False  # a complete record lies somewhere after ``end``


def _frame(data: bytes | memoryview, offset: int) -> tuple[int, int, str | None]:
    """(version, record length, problem) of the record starting at ``offset`` of ``data``."""
    if len(data) - offset < HEADER:
        return 0, 0, f"an incomplete record header ({len(data) - offset} bytes)"
    magic, version, length, crc = _HEADER.unpack_from(data, offset)
    if magic != MAGIC:
        return 0, 0, "no record starts there (bad magic)"
    if offset + HEADER + length > len(data):
        return version, 0, f"an incomplete record ({len(data) - offset} of {HEADER + length} bytes)"
    body = memoryview(data)[offset + HEADER : offset + HEADER + length]
    if zlib.crc32(body, zlib.crc32(memoryview(data)[offset + 4 : offset + 16])) != crc:
        return version, 0, "a record that fails its CRC"
    return version, HEADER + length, None


def _parse(body: memoryview, where: str) -> tuple[dict[str, Any], list[Any], int]:
    if len(body) < _LENGTH.size:
        raise CorruptArtifactError(f"{where}: record body too short")
    (size,) = _LENGTH.unpack_from(body, 0)
    try:
        document = json.loads(bytes(body[_LENGTH.size : _LENGTH.size + size]))
        meta, manifest = document["meta"], document["arrays"]
        if not isinstance(meta, dict) or not isinstance(manifest, list):
            raise TypeError("meta or arrays of the wrong type")
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptArtifactError(f"{where}: record metadata unreadable ({exc})") from None
    return meta, manifest, _LENGTH.size + size


def scan(path: Path, start: int = 0) -> Scan:
    """Read the records of the segment at ``path`` from byte ``start`` (a record boundary),
    a chunk at a time (a segment of large records is never read into memory whole)."""
    found = Scan(end=start)
    last_version = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        data, base = b"", start  # the file's bytes [base, base + len(data))
        offset = start
        while offset < size:
            while True:  # hold the whole record in ``data`` (or all there is of it)
                held = base + len(data) - offset
                need = HEADER
                if held >= HEADER:
                    need += _HEADER.unpack_from(data, offset - base)[2]
                if held >= need or base + len(data) >= size:
                    break
                more = min(max(_CHUNK, need - held), size - base - len(data))
                chunk = os.pread(fd, more, base + len(data))
                data, base = data[offset - base :] + chunk, offset
                if not chunk:  # the file shrank meanwhile (retention): what is here is all
                    size = base + len(data)
            version, length, problem = _frame(data, offset - base)
            if problem is None and version <= last_version:
                problem = f"a record out of order (version {version} after {last_version})"
            if problem is None:
                body = memoryview(data)[offset - base + HEADER : offset - base + length]
                try:
                    meta, manifest, data_start = _parse(body, f"{path} at byte {offset}")
                    arrays = _manifest(manifest)
                except CorruptArtifactError as exc:
                    problem = exc.message
                else:
                    if meta.get("version") != version:
                        problem = f"a record whose metadata says version {meta.get('version')!r}"
            if problem is not None:
                rest = data[offset - base :] + os.pread(fd, size, base + len(data))
                found.problem = problem
                found.valid_after = _valid_record_after(rest, 1)
                break
            found.entries.append(Entry(version, offset, length, meta, arrays, data_start))
            last_version = version
            offset += length
    finally:
        os.close(fd)
    found.end = offset
    return found


def _valid_record_after(data: bytes, offset: int) -> bool:
    """Whether a complete record starts anywhere in ``data`` from ``offset`` on."""
    while (offset := data.find(MAGIC, offset)) >= 0:
        if _frame(data, offset)[2] is None:
            return True
        offset += 1
    return False


def _manifest(raw: list[Any]) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
    try:
        return tuple(
            (str(name), str(dtype), tuple(int(n) for n in shape)) for name, dtype, shape in raw
        )
    except (ValueError, TypeError) as exc:
        raise CorruptArtifactError(f"record arrays undescribed ({exc})") from None


def decode(path: Path, entry: Entry) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
    """Read one record's arrays, verified against its CRC; its metadata is the entry's (read
    and verified when the segment was scanned)."""
    where = f"{path} at byte {entry.offset}"
    fd = os.open(path, os.O_RDONLY)  # FileNotFoundError: the segment was removed
    try:
        data = os.pread(fd, entry.length, entry.offset)
    finally:
        os.close(fd)
    version, length, problem = _frame(data, 0)
    if problem is not None or length != entry.length or version != entry.version:
        raise CorruptArtifactError(
            f"{where}: version {entry.version}'s record is no longer there or damaged "
            f"({problem or 'another record'})"
        )
    body = memoryview(data)[HEADER:]
    cursor = entry.data_start
    arrays: dict[str, NDArray[Any]] = {}
    try:
        for name, dtype_text, shape in entry.arrays:
            dtype = np.dtype(dtype_text)
            if dtype.kind not in _ALLOWED_KINDS:
                raise ValueError(f"array {name!r} has dtype {dtype}")
            count = math.prod(shape)
            size = count * dtype.itemsize
            if cursor + size > len(body):
                raise ValueError(f"array {name!r} runs past the record")
            flat = np.frombuffer(body, dtype=dtype, count=count, offset=cursor)
            arrays[name] = flat.reshape(shape).copy()
            cursor += size
    except (ValueError, TypeError) as exc:
        raise CorruptArtifactError(f"{where}: record arrays unreadable ({exc})") from None
    return entry.meta, arrays
