"""load_config: good configs, relative paths, and errors that name file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from prompt_descent.core.configfile import load_config
from prompt_descent.core.datasets import load_examples
from prompt_descent.errors import UserError

REPO = Path(__file__).resolve().parents[1]

VALID = """\
name: demo
prompt:
  system: Answer.
  template: "Q: {question}"
dataset:
  path: rows.jsonl
  fields:
    question: q
models:
  task:
    temperature: 0.5
"""


def location(file: Path, line: int | None, field: str | None) -> str:
    """The "file:line field 'x'" prefix a UserError starts with."""
    return f"{file}" + (f":{line}" if line else "") + (f" field '{field}'" if field else "")


def write_config(tmp_path: Path, text: str | bytes, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_valid_config_loads_with_its_values(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, VALID))
    assert config.name == "demo"
    assert config.prompt.template == "Q: {question}"
    assert config.dataset.fields == {"question": "q"}
    assert config.models.task.temperature == 0.5
    assert config.models.task.max_tokens == 256  # an explicit role starts from ModelSettings


def test_source_is_the_config_path(tmp_path: Path) -> None:
    path = write_config(tmp_path, VALID)
    assert load_config(str(path)).source == path.resolve()


def test_relative_paths_resolve_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "configs").mkdir()
    text = VALID.replace("path: rows.jsonl", "query: SELECT 1\n  database: ../db/data.duckdb")
    path = write_config(tmp_path / "configs", text + "store: history/runs.duckdb\n")
    monkeypatch.chdir(REPO)  # anywhere but the config's directory
    config = load_config(path)
    assert config.dataset.database == str(tmp_path / "db" / "data.duckdb")
    assert config.store == str(tmp_path / "configs" / "history" / "runs.duckdb")


def test_dataset_path_resolves_and_absolute_paths_stay(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, VALID))
    assert config.dataset.path == str(tmp_path / "rows.jsonl")
    absolute = VALID.replace("path: rows.jsonl", "path: /data/rows.jsonl")
    assert load_config(write_config(tmp_path, absolute)).dataset.path == "/data/rows.jsonl"


def test_default_store_is_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, VALID)
    monkeypatch.chdir(REPO)
    assert load_config(path).store == str(REPO / ".prompt_descent" / "runs.duckdb")


def test_shipped_example_config_loads_with_its_dataset() -> None:
    config = load_config(REPO / "data" / "contains_answer.yaml")
    assert config.name == "contains-answer"
    assert (config.batch_size, config.max_proposals, config.steps) == (4, 2, 2)
    assert (config.splits.train, config.splits.val, config.splits.test) == (8, 12, 12)
    assert config.models.task.max_tokens == 4
    assert config.dataset.path == str(REPO / "data" / "contains_answer.jsonl")
    examples = load_examples(config.dataset)
    assert len(examples) >= 32
    assert {example.target for example in examples} == {"yes", "no"}


def test_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^config file not found: .*nope\.yaml$"):
        load_config(tmp_path / "nope.yaml")


# (config text, expected line, expected field, fragment of the message)
BAD_CONFIGS = {
    "invalid yaml": (
        "name: demo\nprompt:\n  system: a\n bad: indent\n",
        4,
        None,
        "invalid YAML: ",
    ),
    "unclosed bracket names where it started": (
        "name: demo\nprompt: [a, b\n",
        3,
        None,
        "started at line 2",
    ),
    "top level is a list": ("- name: demo\n", 1, None, "expected a mapping"),
    "top level is a scalar": ("just text\n", 1, None, "got the value 'just text'"),
    "value out of range": (
        VALID.replace("temperature: 0.5", "temperature: 3.5"),
        11,
        "models.task.temperature",
        "less than or equal to 2 (got 3.5)",
    ),
    "wrong type": (
        VALID + "batch_size: many\n",
        12,
        "batch_size",
        "valid integer",
    ),
    "missing nested field points at its parent": (
        VALID.replace("  system: Answer.\n", ""),
        2,
        "prompt.system",
        "required field is missing",
    ),
    "missing top-level field points at the top": (
        VALID.replace("name: demo\n", ""),
        1,
        "name",
        "required field is missing",
    ),
    "unknown field points at the key": (
        VALID.replace("temperature: 0.5", "temprature: 0.5"),
        11,
        "models.task.temprature",
        "did you mean 'temperature'?",
    ),
    "unknown top-level field": (
        VALID + "step: 3\n",
        12,
        "step",
        "did you mean 'steps'?",
    ),
    "both path and query": (
        VALID.replace("  path: rows.jsonl\n", "  path: rows.jsonl\n  query: SELECT 1\n"),
        5,
        "dataset",
        "give exactly one of 'path' or 'query'",
    ),
    "dict value of the wrong type": (
        VALID.replace("question: q", "question: [q]"),
        8,
        "dataset.fields.question",
        "valid string",
    ),
    "duplicate key": (
        VALID + "name: again\n",
        12,
        "name",
        "duplicate key (first given at line 1)",
    ),
    "empty file": ("", None, None, "the config file is empty"),
}


@pytest.mark.parametrize(
    ("text", "line", "field", "fragment"), BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys()
)
def test_bad_config_names_file_line_and_field(
    tmp_path: Path, text: str, line: int | None, field: str | None, fragment: str
) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(UserError) as caught:
        load_config(path)
    error = caught.value
    assert (Path(error.file), error.line, error.field) == (path.resolve(), line, field)
    where = location(path.resolve(), line, field)
    assert str(error).startswith(where + ": ")
    assert fragment in str(error)
    assert "\n" not in str(error)


def test_first_error_in_file_order_and_a_count_of_the_rest(tmp_path: Path) -> None:
    text = VALID.replace("temperature: 0.5", "temprature: 0.5\n    max_tokens: 0") + "seed: x\n"
    with pytest.raises(UserError) as caught:
        load_config(write_config(tmp_path, text))
    assert caught.value.line == 11
    assert caught.value.field == "models.task.temprature"
    assert str(caught.value).endswith("(and 2 more errors)")


def test_non_utf8_config_names_line_and_offset(tmp_path: Path) -> None:
    path = write_config(tmp_path, b"name: demo\nprompt:\n  system: caf\xe9\n")
    with pytest.raises(UserError) as caught:
        load_config(path)
    assert caught.value.line == 3
    assert "byte 0xe9 at byte offset 32" in str(caught.value)
