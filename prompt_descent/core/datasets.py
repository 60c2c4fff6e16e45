"""Load a dataset into Examples and split it into train, val and test.

Sources: JSONL, CSV, Parquet, JSON (BBH's {"examples": [...]} or a plain list of
objects) and a DuckDB SQL query. Every bad input is a UserError naming the file,
the line (or row) and the config field to fix, so rows keep their position until
they become Examples.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import decimal
import difflib
import hashlib
import io
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import duckdb

from prompt_descent.core.config import DatasetSpec, Example, Prompt, Splits, Strict
from prompt_descent.errors import UserError

FORMAT_BY_SUFFIX = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".json": "bbh",
}
ID_HEX_CHARS = 12


class DataSplits(Strict):
    """The examples of each split, disjoint, in shuffled order."""

    train: list[Example]
    val: list[Example]
    test: list[Example]


@dataclass(frozen=True)
class _Row:
    position: int  # physical line (text files) or 1-based row number (Parquet, query)
    values: dict[str, object]


@dataclass(frozen=True)
class _Table:
    """Rows read from one source, and how to point at a place in it."""

    file: str | None  # None for a query on an in-memory database
    source_field: str  # the config field that names the source
    unit: Literal["line", "row"]
    columns: list[str] | None  # known before any row (CSV header, Parquet/query schema)
    header_position: int | None
    rows: list[_Row]

    def error(self, message: str, position: int | None, field: str | None = None) -> UserError:
        if self.unit == "line":
            return UserError(message, file=self.file, line=position, field=field)
        where = f"row {position}: " if position is not None else ""
        return UserError(where + message, file=self.file, field=field)

    def describe(self, position: int) -> str:
        return f"{self.unit} {position}"

    def locate(self, position: int) -> str:
        if self.unit == "line":
            return f"{self.file}:{position}"
        return f"{self.file or 'dataset.query'} row {position}"


SPLIT_REASON = "since a repeated example can land in two splits"


def load_examples(spec: DatasetSpec, unique_because: str = SPLIT_REASON) -> list[Example]:
    """The examples of the dataset `spec` describes, in source order, with unique ids;
    a repeated one is refused with `unique_because` as the reason."""
    table = _run_query(spec) if spec.query is not None else _read_file(spec)
    if table.columns is not None and table.rows:
        _check_columns(table.columns, spec, table, table.header_position)
    examples = [_example(row, spec, table) for row in table.rows]
    if not examples:
        raise table.error("the dataset has no examples", None, table.source_field)
    _reject_duplicates(examples, table, spec, unique_because)
    return examples


def split_examples(examples: list[Example], splits: Splits, seed: int) -> DataSplits:
    """Seeded shuffle, then the first `train`, the next `val`, the next `test` examples.

    Examples are ordered by id before shuffling, so the split depends on the data and
    the seed only, not on the order of the rows in the file.
    """
    wanted = splits.train + splits.val + splits.test
    if wanted > len(examples):
        raise UserError(
            f"train {splits.train} + val {splits.val} + test {splits.test} = {wanted} examples "
            f"but the dataset has only {len(examples)}; lower the splits or add examples",
            field="splits",
        )
    shuffled = sorted(examples, key=lambda example: example.id)
    random.Random(seed).shuffle(shuffled)
    val_end = splits.train + splits.val
    return DataSplits(
        train=shuffled[: splits.train],
        val=shuffled[splits.train : val_end],
        test=shuffled[val_end:wanted],
    )


# --- reading sources -------------------------------------------------------------------


def _read_file(spec: DatasetSpec) -> _Table:
    assert spec.path is not None
    path = Path(spec.path)
    if not path.is_file():
        raise UserError(f"dataset file not found: {path}", field="dataset.path")
    file_format = _format_of(spec, path)
    if file_format == "jsonl":
        return _read_jsonl(path)
    if file_format == "csv":
        return _read_csv(path)
    if file_format == "parquet":
        return _read_parquet(path)
    return _read_json(path)


def _format_of(spec: DatasetSpec, path: Path) -> str:
    if spec.format != "auto":
        return spec.format
    file_format = FORMAT_BY_SUFFIX.get(path.suffix.lower())
    if file_format is None:
        known = ", ".join(sorted(FORMAT_BY_SUFFIX))
        raise UserError(
            f"cannot tell the format from the extension '{path.suffix}' (known: {known}); "
            "set dataset.format to jsonl, csv, parquet or bbh",
            file=path,
            field="dataset.format",
        )
    return file_format


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read it: {exc.strerror}", file=path) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise UserError(
            f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at byte offset {exc.start} "
            f"(byte {column} of the line); save the file as UTF-8",
            file=path,
            line=line,
        ) from None


def _read_jsonl(path: Path) -> _Table:
    rows = []
    # split on "\n" only: str.splitlines would also break at U+2028 inside a JSON string.
    for number, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(
                f"invalid JSON: {exc.msg} (column {exc.colno})", file=path, line=number
            ) from None
        if not isinstance(value, dict):
            raise UserError(
                f"expected a JSON object per line, got {_json_kind(value)}", file=path, line=number
            )
        rows.append(_Row(number, value))
    return _Table(str(path), "dataset.path", "line", None, None, rows)


def _read_csv(path: Path) -> _Table:
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    header: list[str] | None = None
    rows = []
    last_line = 0
    for record in reader:
        # a record starts on the line after the previous one ended (quoted fields span lines)
        start, last_line = last_line + 1, reader.line_num
        if not record:
            continue
        if header is None:
            header = _csv_header(record, path, start)
            continue
        if len(record) != len(header):
            raise UserError(
                f"this record has {len(record)} fields but the header has {len(header)}",
                file=path,
                line=start,
            )
        rows.append(_Row(start, dict(zip(header, record, strict=True))))
    return _Table(str(path), "dataset.path", "line", header or [], 1, rows)


def _csv_header(record: list[str], path: Path, line: int) -> list[str]:
    header = [name.strip() for name in record]
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise UserError(f"the header names column '{name}' twice", file=path, line=line)
        seen.add(name)
    return header


def _read_parquet(path: Path) -> _Table:
    connection = duckdb.connect()
    try:
        result = connection.execute("SELECT * FROM read_parquet(?)", [str(path)])
        columns, rows = _fetch(result)
    except duckdb.Error as exc:
        raise UserError(f"cannot read it as Parquet: {_first_paragraph(exc)}", file=path) from None
    finally:
        connection.close()
    return _Table(str(path), "dataset.path", "row", columns, None, rows)


def _read_json(path: Path) -> _Table:
    text = _read_text(path)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"invalid JSON: {exc.msg} (column {exc.colno})", file=path, line=exc.lineno
        ) from None
    if isinstance(document, dict) and isinstance(document.get("examples"), list):
        items = _json_list_items(text, key="examples")
    elif isinstance(document, list):
        items = _json_list_items(text, key=None)
    else:
        raise UserError(
            'expected {"examples": [...]} (BBH) or a JSON list of objects, '
            f"got {_json_kind(document)}",
            file=path,
            line=1,
        )
    rows = []
    for line, value in items:
        if not isinstance(value, dict):
            raise UserError(f"expected an object, got {_json_kind(value)}", file=path, line=line)
        rows.append(_Row(line, value))
    return _Table(str(path), "dataset.path", "line", None, None, rows)


def _json_list_items(text: str, key: str | None) -> list[tuple[int, object]]:
    """The items of the top-level list (or of the top-level object's `key` list) with lines.

    `text` is known to be valid JSON; this walks it only to learn where each item starts.
    """
    decoder = json.JSONDecoder()
    line_starts = [0] + [index + 1 for index, char in enumerate(text) if char == "\n"]
    position = _skip_space(text, 0)
    if key is not None:
        position = _value_start(text, position, key, decoder)
    items = []
    position = _skip_space(text, position + 1)  # past "["
    while text[position] != "]":
        value, end = decoder.raw_decode(text, position)
        items.append((bisect.bisect_right(line_starts, position), value))
        position = _skip_space(text, end)
        if text[position] == ",":
            position = _skip_space(text, position + 1)
    return items


def _value_start(text: str, position: int, key: str, decoder: json.JSONDecoder) -> int:
    """Where the value of `key` starts in the object at `position` (the last one, as json does)."""
    found = -1
    position = _skip_space(text, position + 1)  # past "{"
    while text[position] != "}":
        name, position = decoder.raw_decode(text, position)
        position = _skip_space(text, _skip_space(text, position) + 1)  # past ":"
        if name == key:
            found = position
        _, position = decoder.raw_decode(text, position)
        position = _skip_space(text, position)
        if text[position] == ",":
            position = _skip_space(text, position + 1)
    return found


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _run_query(spec: DatasetSpec) -> _Table:
    assert spec.query is not None
    database = spec.database
    if database is not None and not Path(database).is_file():
        raise UserError(f"database file not found: {database}", field="dataset.database")
    try:
        connection = duckdb.connect(database or ":memory:", read_only=database is not None)
    except duckdb.Error as exc:
        raise UserError(
            f"cannot open the database: {_first_paragraph(exc)}",
            file=database,
            field="dataset.database",
        ) from None
    try:
        columns, rows = _fetch(connection.execute(spec.query))
    except duckdb.Error as exc:
        raise UserError(
            f"SQL error: {_first_paragraph(exc)}", file=database, field="dataset.query"
        ) from None
    except ValueError as exc:
        raise UserError(str(exc), file=database, field="dataset.query") from None
    finally:
        connection.close()
    return _Table(database, "dataset.query", "row", columns, None, rows)


def _fetch(result: duckdb.DuckDBPyConnection) -> tuple[list[str], list[_Row]]:
    if result.description is None:
        raise ValueError("the query returns no rows; it must end with a SELECT")
    columns = [column[0] for column in result.description]
    duplicated = sorted({name for name in columns if columns.count(name) > 1})
    if duplicated:
        raise ValueError(f"the result has more than one column named {', '.join(duplicated)}")
    rows = [
        _Row(number, dict(zip(columns, values, strict=True)))
        for number, values in enumerate(result.fetchall(), start=1)
    ]
    return columns, rows


def _first_paragraph(exc: Exception) -> str:
    """DuckDB's message up to its first blank line, on one line."""
    paragraph = str(exc).strip().split("\n\n")[0]
    return " ".join(paragraph.split())


def _json_kind(value: object) -> str:
    kinds = {list: "a list", dict: "an object", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return kinds.get(type(value), "a number")


# --- rows to examples ------------------------------------------------------------------


def _required_columns(spec: DatasetSpec) -> list[tuple[str, str]]:
    """(column, config field naming it) for every column an example needs."""
    required = [(column, f"dataset.fields.{name}") for name, column in spec.fields.items()]
    if spec.target is not None:
        required.append((spec.target, "dataset.target"))
    if spec.id is not None:
        required.append((spec.id, "dataset.id"))
    return required


def _check_columns(
    available: Iterable[str], spec: DatasetSpec, table: _Table, position: int | None
) -> None:
    names = list(available)
    for column, field in _required_columns(spec):
        if column not in names:
            close = difflib.get_close_matches(column, names, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise table.error(
                f"column '{column}' not found; {hint}available columns: {', '.join(names)}",
                position,
                field,
            )


def _example(row: _Row, spec: DatasetSpec, table: _Table) -> Example:
    if table.columns is None:
        _check_columns(row.values, spec, table, row.position)
    inputs = {}
    for name, column in spec.fields.items():
        value = _text(row.values[column])
        if value is None:
            raise table.error(
                f"column '{column}' is null; give it a value or leave the row out",
                row.position,
                f"dataset.fields.{name}",
            )
        inputs[name] = value
    return Example(
        id=_example_id(row, spec, table) or _content_id(row, spec),
        inputs=inputs,
        target=_target(row, spec, table),
        source=table.locate(row.position),
    )


def _target(row: _Row, spec: DatasetSpec, table: _Table) -> str | None:
    if spec.target is None:
        return None
    target = _text(row.values[spec.target])
    if target is None or not target.strip():
        raise table.error(
            f"the target column '{spec.target}' is empty; give every example a target, "
            "or set dataset.target to null for feedback mode",
            row.position,
            "dataset.target",
        )
    return target


def _example_id(row: _Row, spec: DatasetSpec, table: _Table) -> str | None:
    if spec.id is None:
        return None
    example_id = _text(row.values[spec.id])
    if example_id is None or not example_id.strip():
        raise table.error(f"the id column '{spec.id}' is empty", row.position, "dataset.id")
    return example_id


def _content_id(row: _Row, spec: DatasetSpec) -> str:
    """A short hash of the input columns: the same inputs always get the same id."""
    return hashlib.sha256(_input_key(row, spec).encode()).hexdigest()[:ID_HEX_CHARS]


def _input_key(row: _Row, spec: DatasetSpec) -> str:
    # keyed by column, not placeholder, so renaming a placeholder keeps the ids
    columns = sorted(set(spec.fields.values()))
    return json.dumps({column: _text(row.values[column]) for column in columns}, sort_keys=True)


def _reject_duplicates(
    examples: list[Example], table: _Table, spec: DatasetSpec, because: str
) -> None:
    first_seen: dict[str, int] = {}
    for row, example in zip(table.rows, examples, strict=True):
        key = example.id if spec.id is not None else _input_key(row, spec)
        if key not in first_seen:
            first_seen[key] = row.position
            continue
        earlier = table.describe(first_seen[key])
        if spec.id is not None:
            message = f"duplicate example id '{example.id}', first seen at {earlier}"
            raise table.error(message, row.position, "dataset.id")
        message = f"duplicate example (same inputs as {earlier}); remove one, {because}"
        raise table.error(message, row.position, "dataset.fields")


def _text(value: object) -> str | None:
    """A cell as prompt text; None stays None (a missing value)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if _is_whole_number(value):
        return str(int(value))  # 3.0 read back from a float column is the label "3"
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list | dict | tuple):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _is_whole_number(value: object) -> bool:
    if isinstance(value, float):
        return value.is_integer() and abs(value) < 2**53
    if isinstance(value, decimal.Decimal):
        return value.is_finite() and value == value.to_integral_value()
    return False


def check_demos_held_out(prompt: Prompt, held_out: list[tuple[str, list[Example]]]) -> None:
    """A demonstration that shows an example it is scored on would hand it its own answer.

    `held_out` names each set of examples the prompt is scored on (val, test, eval)."""
    shown_in = {
        prompt.fill(e.inputs): (split, e.id) for split, examples in held_out for e in examples
    }
    for number, demo in enumerate(prompt.demos):
        shown = shown_in.get(prompt.fill(demo.inputs))
        if shown is not None:
            split, example_id = shown
            raise UserError(
                f"this demonstration is example {example_id} of the {split} split; a "
                "demonstration is never drawn from val or test, or any set it is scored on "
                "(it would see its own answer): show a train example, or leave it out",
                field=f"prompt.demos.{number}",
            )
