"""load_examples and split_examples: every format, field mapping, ids, splits, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from prompt_descent.core.config import DatasetSpec, Example, Splits
from prompt_descent.core.datasets import load_examples, split_examples
from prompt_descent.errors import UserError

BBH_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbh"

ROWS = [
    {"input": "2 + 2", "target": "4"},
    {"input": "3 * 3", "target": "9"},
    {"input": "10 - 7", "target": "3"},
]
ROWS_SELECT = (
    "SELECT * FROM (VALUES ('2 + 2', '4'), ('3 * 3', '9'), ('10 - 7', '3')) t(input, target)"
)


def location(file: Path, line: int | None, field: str | None) -> str:
    """The "file:line field 'x'" prefix a UserError starts with."""
    return f"{file}" + (f":{line}" if line else "") + (f" field '{field}'" if field else "")


def write(directory: Path, name: str, content: str | bytes) -> Path:
    path = directory / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def write_parquet(path: Path, select: str) -> Path:
    with duckdb.connect() as connection:
        connection.execute(f"COPY ({select}) TO '{path}' (FORMAT parquet)")
    return path


def pairs(examples: list[Example]) -> list[tuple[dict[str, str], str | None]]:
    return [(example.inputs, example.target) for example in examples]


EXPECTED = [({"input": row["input"]}, row["target"]) for row in ROWS]


# --- every format ----------------------------------------------------------------------


def test_jsonl(tmp_path: Path) -> None:
    path = write(tmp_path, "rows.jsonl", jsonl(ROWS[:2]) + "\n  \n" + jsonl(ROWS[2:]))
    assert pairs(load_examples(DatasetSpec(path=str(path)))) == EXPECTED


def test_csv_with_a_quoted_multiline_field(tmp_path: Path) -> None:
    path = write(tmp_path, "rows.csv", 'input,target\n"two\nlines",1\n3 * 3,9\n')
    examples = load_examples(DatasetSpec(path=str(path)))
    assert pairs(examples) == [({"input": "two\nlines"}, "1"), ({"input": "3 * 3"}, "9")]


def test_csv_keeps_text_as_written(tmp_path: Path) -> None:
    path = write(tmp_path, "rows.csv", "\ufeffinput,target\n007,1.50\n")
    assert pairs(load_examples(DatasetSpec(path=str(path)))) == [({"input": "007"}, "1.50")]


def test_parquet(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "rows.parquet", ROWS_SELECT)
    assert pairs(load_examples(DatasetSpec(path=str(path)))) == EXPECTED


def test_bbh_json(tmp_path: Path) -> None:
    document = {"canary": "not for training", "examples": ROWS}
    path = write(tmp_path, "task.json", json.dumps(document, indent=2))
    assert pairs(load_examples(DatasetSpec(path=str(path)))) == EXPECTED


def test_plain_json_list(tmp_path: Path) -> None:
    path = write(tmp_path, "rows.json", json.dumps(ROWS))
    assert pairs(load_examples(DatasetSpec(path=str(path)))) == EXPECTED


def test_explicit_format_overrides_the_extension(tmp_path: Path) -> None:
    path = write(tmp_path, "rows.txt", jsonl(ROWS))
    assert pairs(load_examples(DatasetSpec(path=str(path), format="jsonl"))) == EXPECTED


def test_query_on_a_parquet_file_in_memory(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "rows.parquet", ROWS_SELECT)
    spec = DatasetSpec(query=f"SELECT * FROM '{path}' WHERE target <> '9'")
    assert pairs(load_examples(spec)) == [EXPECTED[0], EXPECTED[2]]


def test_query_against_a_database_file(tmp_path: Path) -> None:
    database = tmp_path / "data.duckdb"
    with duckdb.connect(str(database)) as connection:
        connection.execute(f"CREATE TABLE rows AS {ROWS_SELECT}")
    spec = DatasetSpec(query="SELECT input, target FROM rows", database=str(database))
    assert pairs(load_examples(spec)) == EXPECTED


@pytest.mark.skipif(not BBH_DIR.is_dir(), reason="shared BBH data not present")
def test_bbh_object_counting() -> None:
    examples = load_examples(DatasetSpec(path=str(BBH_DIR / "object_counting.json")))
    assert len(examples) == 250
    assert all(example.target and example.target.isdigit() for example in examples)
    assert all("How many" in example.inputs["input"] for example in examples)


# --- field mapping, values, ids -------------------------------------------------------


def test_fields_map_placeholders_to_columns(tmp_path: Path) -> None:
    row = {"passage": "Paris is in France.", "q": "Where is Paris?", "label": "France", "x": 1}
    path = write(tmp_path, "rows.jsonl", jsonl([row]))
    spec = DatasetSpec(path=str(path), fields={"text": "passage", "question": "q"}, target="label")
    [example] = load_examples(spec)
    assert example.inputs == {"text": "Paris is in France.", "question": "Where is Paris?"}
    assert example.target == "France"


def test_no_target_column_means_feedback_mode(tmp_path: Path) -> None:
    path = write(tmp_path, "rows.jsonl", jsonl([{"input": "Write a haiku."}]))
    [example] = load_examples(DatasetSpec(path=str(path), target=None))
    assert example.target is None


def test_values_become_text(tmp_path: Path) -> None:
    row = {"a": 3, "b": 2.0, "c": 2.5, "d": True, "e": ["x", 1], "target": 10.0}
    path = write(tmp_path, "rows.jsonl", jsonl([row]))
    spec = DatasetSpec(path=str(path), fields={name: name for name in "abcde"})
    [example] = load_examples(spec)
    assert example.inputs == {"a": "3", "b": "2", "c": "2.5", "d": "true", "e": '["x", 1]'}
    assert example.target == "10"


def test_parquet_numbers_become_text(tmp_path: Path) -> None:
    select = "SELECT 7 AS input, 2.0::DOUBLE AS target UNION ALL SELECT 8, 0.25"
    path = write_parquet(tmp_path / "numbers.parquet", select)
    assert pairs(load_examples(DatasetSpec(path=str(path)))) == [
        ({"input": "7"}, "2"),
        ({"input": "8"}, "0.25"),
    ]


def test_id_column(tmp_path: Path) -> None:
    rows = [{"key": 17, **ROWS[0]}, {"key": "b", **ROWS[1]}]
    path = write(tmp_path, "rows.jsonl", jsonl(rows))
    assert [e.id for e in load_examples(DatasetSpec(path=str(path), id="key"))] == ["17", "b"]


def test_content_ids_are_short_stable_and_format_independent(tmp_path: Path) -> None:
    from_jsonl = load_examples(DatasetSpec(path=str(write(tmp_path, "a.jsonl", jsonl(ROWS)))))
    csv_text = "target,input\n" + "".join(f"{r['target']},{r['input']}\n" for r in ROWS)
    from_csv = load_examples(DatasetSpec(path=str(write(tmp_path, "a.csv", csv_text))))
    ids = [example.id for example in from_jsonl]
    assert ids == [example.id for example in from_csv]
    assert len(set(ids)) == 3
    assert all(len(i) == 12 and int(i, 16) >= 0 for i in ids)


def test_content_id_depends_on_inputs_not_target(tmp_path: Path) -> None:
    first = write(tmp_path, "a.jsonl", jsonl([{"input": "q", "target": "1"}]))
    second = write(tmp_path, "b.jsonl", jsonl([{"input": "q", "target": "2"}]))
    third = write(tmp_path, "c.jsonl", jsonl([{"input": "q2", "target": "1"}]))
    [a], [b], [c] = (load_examples(DatasetSpec(path=str(p))) for p in (first, second, third))
    assert a.id == b.id != c.id


# --- bad input: file, line and field --------------------------------------------------

GOOD = jsonl(ROWS)

# (file name, content, extra spec fields, expected line, expected field, message fragment)
BAD_FILES = {
    "malformed jsonl line": (
        "rows.jsonl",
        GOOD + '{"input": "x", "target": }\n',
        {},
        4,
        None,
        "invalid JSON: Expecting value (column 26)",
    ),
    "jsonl row not an object": ("rows.jsonl", GOOD + "\n[1, 2]\n", {}, 5, None, "got a list"),
    "missing input column": (
        "rows.jsonl",
        GOOD,
        {"fields": {"question": "q"}},
        1,
        "dataset.fields.question",
        "column 'q' not found; available columns: input, target",
    ),
    "misspelled column gets a suggestion": (
        "rows.jsonl",
        GOOD,
        {"fields": {"input": "inputs"}},
        1,
        "dataset.fields.input",
        "did you mean 'input'?",
    ),
    "missing target column in a later row": (
        "rows.jsonl",
        GOOD + jsonl([{"input": "5 - 5"}]),
        {},
        4,
        "dataset.target",
        "column 'target' not found",
    ),
    "empty target": (
        "rows.jsonl",
        GOOD + jsonl([{"input": "5 - 5", "target": "  "}]),
        {},
        4,
        "dataset.target",
        "the target column 'target' is empty",
    ),
    "null target": (
        "rows.jsonl",
        jsonl([{"input": "5 - 5", "target": None}]),
        {},
        1,
        "dataset.target",
        "is empty",
    ),
    "null input": (
        "rows.jsonl",
        jsonl([{"input": None, "target": "1"}]),
        {},
        1,
        "dataset.fields.input",
        "column 'input' is null",
    ),
    "csv missing column names the header": (
        "rows.csv",
        "input,answer\na,b\n",
        {},
        1,
        "dataset.target",
        "column 'target' not found; available columns: input, answer",
    ),
    "csv empty target after a multiline record": (
        "rows.csv",
        'input,target\n"one\ntwo\nthree",1\nfour,\n',
        {},
        5,
        "dataset.target",
        "is empty",
    ),
    "csv error in a multiline record names its first line": (
        "rows.csv",
        'input,target\na,1\n"b\nc\nd",\n',
        {},
        3,
        "dataset.target",
        "is empty",
    ),
    "csv record with too many fields": (
        "rows.csv",
        "input,target\na,1\nb,2,3\n",
        {},
        3,
        None,
        "this record has 3 fields but the header has 2",
    ),
    "bbh example not an object": (
        "task.json",
        '{"examples": [\n  {"input": "a", "target": "1"},\n  "oops"\n]}',
        {},
        3,
        None,
        "expected an object, got a string",
    ),
    "bbh example missing target": (
        "task.json",
        '{"canary": "x",\n "examples": [\n  {"input": "a", "target": "1"},\n  {"input": "b"}]}',
        {},
        4,
        "dataset.target",
        "column 'target' not found",
    ),
    "json of the wrong shape": ("task.json", '{"rows": []}', {}, 1, None, "BBH"),
    "malformed json": ("task.json", '{"examples": [\n  {"input": }]}', {}, 2, None, "invalid JSON"),
    "duplicate id": (
        "rows.jsonl",
        jsonl([{"id": "a", **ROWS[0]}, {"id": "b", **ROWS[1]}, {"id": "a", **ROWS[2]}]),
        {"id": "id"},
        3,
        "dataset.id",
        "duplicate example id 'a', first seen at line 1",
    ),
    "empty id": (
        "rows.jsonl",
        jsonl([{"id": "", **ROWS[0]}]),
        {"id": "id"},
        1,
        "dataset.id",
        "the id column 'id' is empty",
    ),
    "duplicate content": (
        "rows.jsonl",
        GOOD + jsonl([{"input": "3 * 3", "target": "6"}]),
        {},
        4,
        "dataset.fields",
        "duplicate example (same inputs as line 2)",
    ),
    "non-utf8 bytes": (
        "rows.jsonl",
        GOOD.encode() + b'{"input": "caf\xe9", "target": "1"}\n',
        {},
        4,
        None,
        "byte 0xe9 at byte offset 117 (byte 15 of the line)",
    ),
    "empty dataset": ("rows.jsonl", "\n\n", {}, None, "dataset.path", "no examples"),
    "header-only csv": ("rows.csv", "input,target\n", {}, None, "dataset.path", "no examples"),
    "unknown extension": (
        "rows.txt",
        GOOD,
        {},
        None,
        "dataset.format",
        "cannot tell the format from the extension '.txt'",
    ),
    "not really parquet": ("rows.parquet", GOOD, {}, None, None, "cannot read it as Parquet"),
}


@pytest.mark.parametrize(
    ("name", "content", "spec_fields", "line", "field", "fragment"),
    BAD_FILES.values(),
    ids=BAD_FILES.keys(),
)
def test_bad_file_names_file_line_and_field(
    tmp_path: Path,
    name: str,
    content: str | bytes,
    spec_fields: dict,
    line: int | None,
    field: str | None,
    fragment: str,
) -> None:
    path = write(tmp_path, name, content)
    with pytest.raises(UserError) as caught:
        load_examples(DatasetSpec(path=str(path), **spec_fields))
    error = caught.value
    assert (str(error.file), error.line, error.field) == (str(path), line, field)
    where = location(path, line, field)
    assert str(error).startswith(where + ": ")
    assert fragment in str(error)
    assert "\n" not in str(error)


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(UserError) as caught:
        load_examples(DatasetSpec(path=str(missing)))
    assert caught.value.field == "dataset.path"
    assert str(caught.value) == f"field 'dataset.path': dataset file not found: {missing}"


def test_parquet_row_errors_name_the_row(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "rows.parquet", ROWS_SELECT + " UNION ALL SELECT 'x', NULL")
    with pytest.raises(UserError) as caught:
        load_examples(DatasetSpec(path=str(path)))
    assert str(caught.value).startswith(f"{path} field 'dataset.target': row 4: ")


def test_sql_error_names_the_query_field(tmp_path: Path) -> None:
    with pytest.raises(UserError) as caught:
        load_examples(DatasetSpec(query="SELECT * FROM no_such_table"))
    assert caught.value.field == "dataset.query"
    assert str(caught.value).startswith("field 'dataset.query': SQL error: ")
    assert "no_such_table" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_sql_error_names_the_database(tmp_path: Path) -> None:
    database = tmp_path / "data.duckdb"
    duckdb.connect(str(database)).close()
    with pytest.raises(UserError) as caught:
        load_examples(DatasetSpec(query="SELEC 1", database=str(database)))
    assert str(caught.value).startswith(f"{database} field 'dataset.query': SQL error: ")


def test_query_column_missing(tmp_path: Path) -> None:
    with pytest.raises(UserError) as caught:
        load_examples(DatasetSpec(query="SELECT 'a' AS question, '1' AS target"))
    assert caught.value.field == "dataset.fields.input"
    assert "available columns: question, target" in str(caught.value)


def test_query_without_rows_is_an_empty_dataset() -> None:
    with pytest.raises(UserError) as caught:
        load_examples(DatasetSpec(query="SELECT 'a' AS input, '1' AS target WHERE false"))
    assert caught.value.field == "dataset.query"
    assert "no examples" in str(caught.value)


def test_missing_database_file(tmp_path: Path) -> None:
    missing = tmp_path / "none.duckdb"
    with pytest.raises(UserError) as caught:
        load_examples(DatasetSpec(query="SELECT 1", database=str(missing)))
    assert caught.value.field == "dataset.database"
    assert str(missing) in str(caught.value)


# --- splits ---------------------------------------------------------------------------


def make_examples(count: int) -> list[Example]:
    return [Example(id=f"e{i:03d}", inputs={"input": str(i)}, target=str(i)) for i in range(count)]


def ids(examples: list[Example]) -> list[str]:
    return [example.id for example in examples]


def test_split_sizes_and_disjointness() -> None:
    examples = make_examples(30)
    splits = split_examples(examples, Splits(train=10, val=8, test=5), seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (10, 8, 5)
    chosen = ids(splits.train) + ids(splits.val) + ids(splits.test)
    assert len(set(chosen)) == 23
    assert set(chosen) <= set(ids(examples))


def test_split_is_deterministic_and_ignores_row_order() -> None:
    examples = make_examples(30)
    sizes = Splits(train=10, val=8, test=5)
    first = split_examples(examples, sizes, seed=3)
    again = split_examples(examples, sizes, seed=3)
    reversed_rows = split_examples(list(reversed(examples)), sizes, seed=3)
    assert first == again == reversed_rows


def test_split_shuffles_and_depends_on_the_seed() -> None:
    examples = make_examples(30)
    sizes = Splits(train=10, val=10, test=10)
    seed_0 = split_examples(examples, sizes, seed=0)
    seed_1 = split_examples(examples, sizes, seed=1)
    assert ids(seed_0.train) != ids(examples[:10])
    assert ids(seed_0.train) != ids(seed_1.train)


def test_split_can_use_every_example_and_no_test() -> None:
    examples = make_examples(5)
    splits = split_examples(examples, Splits(train=3, val=2, test=0), seed=0)
    assert splits.test == []
    assert sorted(ids(splits.train + splits.val)) == ids(examples)


def test_split_larger_than_the_dataset() -> None:
    with pytest.raises(UserError) as caught:
        split_examples(make_examples(20), Splits(train=10, val=8, test=5), seed=0)
    assert caught.value.field == "splits"
    message = str(caught.value)
    assert message.startswith("field 'splits': ")
    assert "= 23 examples" in message
    assert "has only 20" in message
