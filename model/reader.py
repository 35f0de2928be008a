"""Reading a table file (CSV, ``.csv.gz``, Parquet) into float64 columns, through pyarrow.

:func:`read_table` is the one entry point. pyarrow parses and converts the file (streaming, a
block at a time, so a line on stderr can say how far it got); each column then becomes one
column of a float64 matrix:

* a numeric column: its values, ``NaN`` where a cell is empty or NaN (a *missing* cell);
* a categorical column (named by the caller, or a text column none of whose cells is a number):
  the index of the cell's value in the column's sorted distinct values, ``NaN`` when missing.

A column mixing numbers and text is an error naming the first cell that is not a number.

Every problem is a :class:`~model.errors.DataFileError` naming the file, the line (CSV,
1-based, counting every physical line) or row (Parquet, 0-based), the column, what was
expected and what came. pyarrow says where a problem is only in part, so the exact place is
found by a second pass with Python's :mod:`csv` module over the file (only when something is
wrong, and without holding the file in memory). That pass also reads the few files pyarrow's
CSV dialect refuses but today's reader took (a quote after the space that follows a comma).
"""

from __future__ import annotations

import csv
import gzip
import os
import re
import sys
import time
import zlib
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from numpy.typing import NDArray

from .errors import DataFileError
from .validation import first_duplicate

__all__ = ["PARQUET_SUFFIXES", "RawTable", "file_errors", "read_table"]

PARQUET_SUFFIXES = (".parquet", ".pq")
# A file this big gets a progress bar on stderr (smaller ones just the line saying what loads).
_BIG_FILE = 32 << 20
# pyarrow's CSV block: small blocks keep the parser's buffers (and so the peak memory) small;
# below 4 MB the 387 MB benchmark CSV reads slower (BENCHMARKS.md).
_BLOCK_BYTES = 4 << 20
# What pyarrow's string-to-double conversion takes as a number (checked on distinct values).
_NUMBER = r"^[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|inf|infinity|nan)$"
_CONVERSION_ERROR = re.compile(r"In CSV column #(\d+): CSV conversion error")


@dataclass(frozen=True)
class RawTable:
    """What :func:`read_table` read.

    ``X: (n_rows, n_features)`` float64 (codes for categorical columns, ``NaN`` for missing
    cells); ``y: (n_rows,)`` label text; ``categories`` maps each categorical column to its
    sorted distinct values (what its codes index).
    """

    X: NDArray[np.float64]
    y: NDArray[np.str_]
    feature_names: tuple[str, ...]
    label_name: str
    categories: dict[str, tuple[str, ...]]


@contextmanager
def file_errors(source: str) -> Iterator[None]:
    """Why a file cannot be opened, as a DataFileError naming it."""
    try:
        yield
    except FileNotFoundError:
        raise DataFileError(f"{source}: file not found") from None
    except IsADirectoryError:
        raise DataFileError(f"{source}: is a directory, expected a file") from None
    except PermissionError:
        raise DataFileError(f"{source}: permission denied") from None


def read_table(
    source: str,
    label: str,
    features: list[str] | None = None,
    *,
    categorical: Sequence[str] = (),
    missing: bool = False,
    progress: bool = False,
    detect_categorical: bool = True,
) -> RawTable:
    """Read ``source`` (``.csv``, ``.csv.gz``, ``.parquet``): the ``label`` column and the
    ``features`` columns (default: every other column), in that order.

    ``categorical`` names columns read as categories even if their cells are numbers; other
    text columns are categorical too with ``detect_categorical``, else errors;
    ``missing=False`` refuses empty and NaN cells (an error naming the first), ``True`` keeps
    them as ``NaN``. ``progress`` writes what is loaded (and how far, for big files) to stderr.
    """
    with file_errors(source):
        size = os.stat(source).st_size
        if os.path.isdir(source):
            raise IsADirectoryError(source)
    reporter = _Progress(source, size) if progress else None
    parquet = source.lower().endswith(PARQUET_SUFFIXES)
    reader: _Reader = _ParquetReader(source) if parquet else _CsvReader(source)
    table = reader.read(label, features, set(categorical), reporter)
    result = _columns(reader, table, label, set(categorical), missing, detect_categorical)
    if reporter is not None:
        reporter.done(result.X.shape[0], result.X.shape[1] + 1)
    return result


# --- progress ----------------------------------------------------------------------------------


class _Progress:
    """One line saying what loads; a tqdm bar on stderr for big files."""

    def __init__(self, source: str, size: int) -> None:
        self.started = time.perf_counter()
        self.source = source
        self.size = size
        print(f"loading {source} ({size / 1e6:.1f} MB)", file=sys.stderr, flush=True)
        self.bar: Any = None
        if size >= _BIG_FILE:
            from tqdm import tqdm

            self.bar = tqdm(
                total=size, unit="B", unit_scale=True, desc="read", file=sys.stderr, leave=False
            )
        self.position = 0

    def advance(self, position: int) -> None:
        if self.bar is not None and position > self.position:
            self.bar.update(position - self.position)
            self.position = position

    def done(self, rows: int, columns: int) -> None:
        if self.bar is not None:
            self.bar.close()
        seconds = time.perf_counter() - self.started
        print(
            f"loaded {self.source}: {rows} rows x {columns} columns in {seconds:.1f} s",
            file=sys.stderr,
            flush=True,
        )


# --- collecting batches ----------------------------------------------------------------------


class _Collector:
    """Columns in, a float64 matrix out. Numeric feature columns are copied into the matrix as
    they arrive (by batches of rows, or whole) and pyarrow's buffers let go, so the peak stays
    near the matrix's own size; the label and text columns stay pyarrow arrays, converted once
    all is read.

    ``rows_hint`` sizes the matrix (pages never written cost no memory); it grows if needed.
    """

    def __init__(self, names: list[str], text: set[str], rows_hint: int) -> None:
        self.names = names  # the selected columns, label first
        self.text = text | {names[0]}  # kept as text whatever their type
        self.features = names[1:]
        self.rows_hint = max(rows_hint, 1)
        self.X: NDArray[np.float64] | None = None
        self.numeric: dict[str, int] = {}  # numeric feature -> its column in X
        self.kept: dict[str, list[pa.Array]] = {}
        self.rows = 0

    def start(self, types: dict[str, pa.DataType]) -> NDArray[np.float64]:
        """Set up for columns of these types (once)."""
        if self.X is None:
            for index, name in enumerate(self.features):
                if name not in self.text and _is_numeric_type(types[name]):
                    self.numeric[name] = index
                else:
                    self.kept[name] = []
            self.kept[self.names[0]] = []
            self.X = np.empty((self.rows_hint, len(self.features)), dtype=np.float64)
        return self.X

    def add(self, batch: pa.RecordBatch) -> None:
        """The next rows."""
        X = self.start({name: batch.column(name).type for name in self.names})
        end = self.rows + batch.num_rows
        if end > X.shape[0]:
            X = np.empty((max(end, X.shape[0] * 3 // 2), X.shape[1]))
            X[: self.rows] = self.X[: self.rows]  # type: ignore[index]
            self.X = X
        numeric = [name for name in self.numeric if not pa.types.is_null(batch.column(name).type)]
        if numeric:  # one block of rows, then one copy: cheaper than a strided write per column
            block = np.column_stack(
                [batch.column(name).to_numpy(zero_copy_only=False) for name in numeric]
            )
            columns = [self.numeric[name] for name in numeric]
            if columns == list(range(columns[0], columns[-1] + 1)):
                X[self.rows : end, columns[0] : columns[-1] + 1] = block
            else:
                X[self.rows : end, columns] = block
        for name in self.names:
            if name not in numeric:
                self.put(name, batch.column(name), self.rows)
        self.rows = end

    def put(self, name: str, column: pa.Array | pa.ChunkedArray, row: int) -> None:
        """``column``'s cells as rows ``row``, ``row + 1``, ... of column ``name``."""
        if name in self.kept:
            chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
            self.kept[name].extend(chunks)
            return
        assert self.X is not None
        out = self.X[:, self.numeric[name]]
        if pa.types.is_null(column.type):
            out[row : row + len(column)] = np.nan  # every cell empty
        else:
            _fill(column, out[row:])

    def column(self, name: str) -> pa.ChunkedArray | None:
        """A label or text column (None for a numeric one, in :attr:`matrix` already)."""
        if name not in self.kept:
            return None
        return pa.chunked_array(self.kept.pop(name))

    @property
    def matrix(self) -> NDArray[np.float64]:
        if self.X is None:
            return np.empty((0, len(self.features)))
        return self.X[: self.rows]


def _is_numeric_type(kind: pa.DataType) -> bool:
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind))


# --- where a row is ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Where:
    """Where a data row is, and its cells as written (stripped; "" when empty)."""

    place: str  # "line 7" or "row 6"
    number: int  # the DataFileError's row
    cells: dict[str, str]


class _Reader:
    """A file format: reading the table, and finding where a data row is (for errors)."""

    source: str
    columns: list[str]  # every column of the file, in file order

    def read(
        self,
        label: str,
        features: list[str] | None,
        categorical: set[str],
        progress: _Progress | None,
    ) -> _Collector:
        """The label column, then the features, collected."""
        raise NotImplementedError

    def where(self, rows: set[int]) -> dict[int, _Where]:
        """Where each data row of ``rows`` is (0-based), and its cells; with no rows, raise
        the precise error for a file whose text cannot be read, if there is one."""
        raise NotImplementedError

    def at(self, place: str | None = None) -> str:
        return self.source if place is None else f"{self.source}, {place}"


# --- CSV -------------------------------------------------------------------------------------


class _CsvReader(_Reader):
    def __init__(self, source: str) -> None:
        self.source = source
        self.columns = []
        self.header_line = 0

    def read(
        self,
        label: str,
        features: list[str] | None,
        categorical: set[str],
        progress: _Progress | None,
    ) -> _Collector:
        header, self.header_line = self._header()
        self.columns = _check_header(self.source, header, self.header_line)
        wanted = _select_columns(self.source, self.columns, self.header_line, label, features)
        try:
            table = self._arrow(wanted, categorical, progress)
        except _DialectMismatch:
            table = self._python(wanted, categorical)
        if table.rows == 0:
            raise DataFileError(
                f"{self.source}: no data rows; expected at least one row after the header "
                f"(line {self.header_line})"
            )
        return table

    # pyarrow, the fast path
    def _arrow(
        self, wanted: list[str], categorical: set[str], progress: _Progress | None
    ) -> _Collector:
        text = {wanted[0]} | categorical
        as_text: set[int] = {self.columns.index(name) for name in text if name in wanted}
        while True:  # once more per column whose type pyarrow guessed from its first block
            try:
                return self._arrow_once(wanted, as_text, categorical, progress)
            except pa.ArrowInvalid as error:
                found = _CONVERSION_ERROR.search(str(error))
                column = int(found.group(1)) if found else None
                if column is None or column in as_text or "UTF8" in str(error):
                    self._scan(set())  # raises the precise error, if today's reader sees one
                    raise _DialectMismatch from None
                as_text.add(column)

    def _arrow_once(
        self,
        wanted: list[str],
        as_text: set[int],
        categorical: set[str],
        progress: _Progress | None,
    ) -> _Collector:
        with file_errors(self.source), pa.OSFile(self.source) as raw:
            stream: Any = raw
            # A guess at the rows, from the first block: a gzip file is taken to hold 4 times
            # its size in text (the matrix grows if the guess falls short).
            text_bytes = raw.size()
            if self.source.lower().endswith(".gz"):
                stream = pa.CompressedInputStream(raw, "gzip")
                text_bytes *= 4
            try:
                reader = pa_csv.open_csv(
                    stream,
                    read_options=pa_csv.ReadOptions(
                        use_threads=True,
                        block_size=_BLOCK_BYTES,
                        skip_rows=self.header_line,
                        column_names=[f"c{i}" for i in range(len(self.columns))],
                    ),
                    parse_options=pa_csv.ParseOptions(newlines_in_values=True),
                    convert_options=pa_csv.ConvertOptions(
                        include_columns=[f"c{self.columns.index(name)}" for name in wanted],
                        column_types={f"c{i}": pa.string() for i in as_text},
                        null_values=[""],
                        strings_can_be_null=True,
                        quoted_strings_can_be_null=True,
                        true_values=[],
                        false_values=[],
                    ),
                )
                names = [f"c{self.columns.index(name)}" for name in wanted]
                collected: _Collector | None = None
                for batch in reader:
                    batch = batch.select(names).rename_columns(wanted)
                    if collected is None:
                        blocks = text_bytes / _BLOCK_BYTES
                        hint = int(batch.num_rows * blocks * 1.1) + batch.num_rows
                        collected = _Collector(wanted, categorical, hint)
                    collected.add(batch)
                    if progress is not None:
                        progress.advance(raw.tell())
            except pa.ArrowInvalid:
                raise
            except OSError as error:  # gzip: not a gzip file, truncated stream
                raise DataFileError(f"{self.source}: cannot read the file: {error}") from None
        return collected or _Collector(wanted, categorical, 0)

    # Python's csv module: today's dialect, for errors and for what pyarrow refuses
    def _python(self, wanted: list[str], categorical: set[str]) -> _Collector:
        positions = [self.columns.index(name) for name in wanted]
        values: list[list[str | None]] = [[] for _ in positions]
        rows = self._rows(check_width=True)
        next(rows)  # the header
        for _, row in rows:
            for out, position in zip(values, positions, strict=True):
                text = row[position].strip()
                out.append(text or None)
        collected = _Collector(wanted, categorical, len(values[0]))
        if values[0]:
            arrays = [pa.array(column, pa.string()) for column in values]
            collected.add(pa.RecordBatch.from_arrays(arrays, names=wanted))
        return collected

    def _open(self) -> IO[str]:
        # utf-8-sig drops the byte-order mark some spreadsheet programs write.
        if self.source.lower().endswith(".gz"):
            return gzip.open(self.source, "rt", encoding="utf-8-sig", newline="")
        return open(self.source, encoding="utf-8-sig", newline="")

    def _rows(self, *, check_width: bool = False) -> Generator[tuple[int, list[str]], None, None]:
        """``(line, cells)`` of each non-blank row, header first; raising the precise error
        for malformed CSV, text that is not UTF-8, a ragged row (with ``check_width``)."""
        line = 0
        width = None
        try:
            with file_errors(self.source), self._open() as handle:
                reader = csv.reader(handle, strict=True, skipinitialspace=True)
                start = 1
                for row in reader:
                    if row:
                        if width is None:
                            width = len(row)
                        elif check_width and len(row) != width:
                            raise DataFileError(
                                f"{self.source}, line {start}: expected {width} fields (one per "
                                f"header column), got {len(row)}",
                                row=start,
                            )
                        yield start, row
                    line = reader.line_num
                    start = line + 1
        except csv.Error as error:
            raise DataFileError(
                f"{self.source}, line {line + 1}: malformed CSV: {error}", row=line + 1
            ) from None
        except UnicodeDecodeError as error:
            raise DataFileError(
                f"{self.source}: not UTF-8 text (near line {line + 1}: {error.reason})"
            ) from None
        except (OSError, EOFError, zlib.error) as error:
            raise DataFileError(f"{self.source}: cannot read the file: {error}") from None

    def _header(self) -> tuple[list[str], int]:
        rows = self._rows()
        try:
            line, header = next(rows)
        except StopIteration:
            raise DataFileError(
                f"{self.source}: the file is empty; expected a header row naming the columns"
            ) from None
        finally:
            rows.close()
        # pyarrow skips whole lines before the column names: a header spanning lines (a quoted
        # newline) or blank lines before it must end where pyarrow's count says.
        return header, line

    def _scan(self, rows: set[int]) -> dict[int, _Where]:
        """One pass of today's reader over the file: raises the precise error for the first
        malformed, non-UTF-8 or ragged row, and says where each data row of ``rows`` is."""
        found: dict[int, _Where] = {}
        last = max(rows, default=None)
        for index, (line, row) in enumerate(self._rows(check_width=True), start=-1):
            if index in rows:  # index -1 is the header
                cells = {name: cell.strip() for name, cell in zip(self.columns, row, strict=True)}
                found[index] = _Where(f"line {line}", line, cells)
            if last is not None and index >= last:
                break
        return found

    def where(self, rows: set[int]) -> dict[int, _Where]:
        return self._scan(rows)


class _DialectMismatch(Exception):
    """pyarrow refused the file, but today's reader finds nothing wrong with it."""


# --- Parquet ---------------------------------------------------------------------------------


class _ParquetReader(_Reader):
    def __init__(self, source: str) -> None:
        self.source = source
        self.columns = []

    def read(
        self,
        label: str,
        features: list[str] | None,
        categorical: set[str],
        progress: _Progress | None,
    ) -> _Collector:
        try:
            with file_errors(self.source):
                parquet = pq.ParquetFile(self.source)
            with parquet:
                names = self.columns = list(parquet.schema_arrow.names)
                duplicate = first_duplicate(names)
                if duplicate is not None:
                    raise DataFileError(
                        f"{self.source}: duplicate column name {duplicate!r}; column names must "
                        "be unique",
                        field=duplicate,
                    )
                wanted = _select_columns(self.source, names, None, label, features)
                total = parquet.metadata.num_rows
                collected = _Collector(wanted, categorical, total)
                schema = parquet.schema_arrow
                collected.start({name: schema.field(name).type for name in wanted})
                # A column at a time: the peak memory is the matrix and one column.
                for done, name in enumerate(wanted, start=1):
                    collected.put(name, parquet.read(columns=[name]).column(0), 0)
                    if progress is not None:
                        progress.advance(progress.size * done // len(wanted))
                collected.rows = total
        except (pa.ArrowException, OSError) as error:
            raise DataFileError(
                f"{self.source}: not a readable Parquet file (corrupt or truncated): {error}"
            ) from None
        if collected.rows == 0:
            raise DataFileError(f"{self.source}: no data rows; expected at least one row")
        return collected

    def where(self, rows: set[int]) -> dict[int, _Where]:
        # Only on an error: the rows are read again (the collected ones are converted).
        table = pq.read_table(self.source)
        found = {}
        for row in rows:
            values = table.slice(row, 1).to_pylist()[0]
            cells = {name: "" if value is None else str(value) for name, value in values.items()}
            found[row] = _Where(f"row {row}", row, cells)
        return found


# --- columns ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Problem:
    """A cell that is wrong: ``rank`` orders the kinds of problem as today's reader found
    them (not a number, then not finite, then labels)."""

    rank: int
    row: int
    position: int  # the column's position in the file
    column: str
    kind: str  # "number", "missing", "infinite", "label", "category"


def _columns(
    reader: _Reader,
    collected: _Collector,
    label: str,
    categorical: set[str],
    missing: bool,
    detect_categorical: bool,
) -> RawTable:
    names = collected.features
    X = collected.matrix
    categories: dict[str, tuple[str, ...]] = {}
    problems: list[_Problem] = []
    for index, name in enumerate(names):
        position = reader.columns.index(name)
        column = collected.column(name)
        if column is None:  # numeric, in X already
            problems += _numeric_problems(X[:, index], position, name, missing)
            continue
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            reader.where(set())  # text that is not UTF-8: the scan says where
            raise DataFileError(
                f"{reader.source}: column {name!r} holds bytes that are not UTF-8 text; "
                "expected numbers or text",
                field=name,
            )
        kind = _kind(column, name in categorical)
        if kind == "categorical" and not detect_categorical and name not in categorical:
            kind = "mixed"  # text where numbers are expected
        text = _text(column)
        if kind == "numeric":
            _fill(pc.cast(text, pa.float64()), X[:, index])
            problems += _numeric_problems(X[:, index], position, name, missing)
        elif kind == "mixed":
            bad = pc.invert(pc.fill_null(_is_number(text), True))
            problems.append(_Problem(0, _first(bad), position, name, "number"))
        else:
            categories[name] = _categorical(text, X[:, index])
            if not missing and text.null_count:
                row = _first(pc.is_null(text))
                problems.append(_Problem(0, row, position, name, "category"))
    labels = collected.column(label)
    assert labels is not None
    labels = _text(labels)
    if labels.null_count:
        problems.append(_Problem(2, _first(pc.is_null(labels)), 0, label, "label"))
    if problems:
        _raise(reader, problems)
    y = np.asarray(labels.to_numpy(zero_copy_only=False).astype(str))
    return RawTable(X, y, tuple(names), label, categories)


def _kind(column: pa.ChunkedArray, categorical: bool) -> str:
    """``numeric``, ``categorical`` or ``mixed`` (numbers and text: an error)."""
    if categorical:
        return "categorical"
    if _is_numeric_type(column.type):
        return "numeric"
    values = pc.unique(_text(column)).drop_null()
    numbers = pc.sum(pc.cast(_is_number(values), pa.int64())).as_py() or 0
    distinct = len(values)
    if numbers == distinct and distinct:
        return "numeric"
    return "categorical" if numbers == 0 else "mixed"


def _text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Cells as stripped text, empty ones null."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        column = pc.cast(column, pa.string())
    stripped = pc.utf8_trim_whitespace(column)
    return pc.if_else(pc.equal(stripped, ""), pa.scalar(None, pa.string()), stripped)


def _is_number(text: Any) -> Any:
    return pc.match_substring_regex(text, _NUMBER, ignore_case=True)


def _first(mask: Any) -> int:
    return int(pc.index(pc.fill_null(mask, False), True).as_py())


def _fill(column: pa.Array | pa.ChunkedArray, out: NDArray[np.float64]) -> None:
    start = 0
    for chunk in column.chunks if isinstance(column, pa.ChunkedArray) else [column]:
        values = chunk.to_numpy(zero_copy_only=False)  # nulls come as NaN
        out[start : start + values.shape[0]] = values
        start += values.shape[0]


def _numeric_problems(
    values: NDArray[np.float64], position: int, name: str, missing: bool
) -> list[_Problem]:
    problems = []
    if not missing:
        nan = np.isnan(values)
        if nan.any():
            problems.append(_Problem(0, int(np.argmax(nan)), position, name, "missing"))
    infinite = np.isinf(values)
    if infinite.any():
        problems.append(_Problem(1, int(np.argmax(infinite)), position, name, "infinite"))
    return problems


def _categorical(text: pa.ChunkedArray, out: NDArray[np.float64]) -> tuple[str, ...]:
    """Fill ``out`` with each cell's index into the sorted distinct values, NaN if missing."""
    encoded = pc.dictionary_encode(text).combine_chunks()
    values = encoded.dictionary.to_pylist()
    order = np.argsort(np.array(values, dtype=object), kind="stable") if values else np.array([])
    rank = np.empty(len(values), dtype=np.float64)
    rank[order.astype(np.intp)] = np.arange(len(values), dtype=np.float64)
    indices = encoded.indices
    codes = pc.fill_null(indices, 0).to_numpy(zero_copy_only=False)
    out[:] = rank[codes] if len(values) else np.nan
    if indices.null_count:
        out[np.asarray(indices.is_null().to_numpy(zero_copy_only=False))] = np.nan
    return tuple(sorted(values))


def _raise(reader: _Reader, problems: list[_Problem]) -> None:
    """The precise error for the first problem in file order (today's reader's order)."""
    rows = reader.where({problem.row for problem in problems})
    ranked = []
    for problem in problems:
        if problem.kind == "missing" and rows[problem.row].cells[problem.column]:
            # NaN written out: a non-finite number, as today's reader says
            problem = _Problem(1, problem.row, problem.position, problem.column, "infinite")
        ranked.append(problem)
    first = min(ranked, key=lambda p: (p.rank, p.row, p.position))
    where = rows[first.row]
    text = where.cells[first.column]
    got = repr(text) if text else "an empty field"
    raise DataFileError(
        f"{reader.at(where.place)}, column {first.column!r}: expected {_EXPECTED[first.kind]}, "
        f"got {got}",
        field=first.column,
        row=where.number,
    )


_EXPECTED = {
    "number": "a number",
    "missing": "a number",
    "infinite": "a finite number",
    "label": "a label",
    "category": "a value",
}


# --- header ----------------------------------------------------------------------------------


def _check_header(source: str, header: list[str], line: int) -> list[str]:
    columns = [name.strip() for name in header]
    for position, name in enumerate(columns, start=1):
        if not name:
            raise DataFileError(
                f"{source}, line {line}: column {position} of the header has no name", row=line
            )
    seen: dict[str, int] = {}
    for position, name in enumerate(columns, start=1):
        if name in seen:
            raise DataFileError(
                f"{source}, line {line}: duplicate column name {name!r} (columns {seen[name]} "
                f"and {position}); column names must be unique",
                field=name,
                row=line,
            )
        seen[name] = position
    return columns


def _select_columns(
    source: str, columns: list[str], line: int | None, label: str, features: list[str] | None
) -> list[str]:
    """The label column then the feature columns (default: every other, in file order)."""
    where = source if line is None else f"{source}, line {line}"
    available = ", ".join(repr(name) for name in columns)
    if label not in columns:
        raise DataFileError(
            f"{where}: label column {label!r} not found; available columns: {available}",
            field=label,
            row=line,
        )
    if features is None:
        chosen = [name for name in columns if name != label]
        if not chosen:
            raise DataFileError(
                f"{where}: no feature columns; the header has only the label column {label!r}",
                row=line,
            )
        return [label, *chosen]
    for name in features:
        if name not in columns:
            raise DataFileError(
                f"{where}: feature column {name!r} not found; available columns: {available}",
                field=name,
                row=line,
            )
        if name == label:
            raise DataFileError(
                f"{where}: column {name!r} is the label, it cannot also be a feature",
                field=name,
                row=line,
            )
    return [label, *features]
