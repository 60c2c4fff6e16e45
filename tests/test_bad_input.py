"""Bad input: one clear line naming file, line and field, and nothing written to the store."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from prompt_descent import cli
from prompt_descent.config import Example, ModelSettings, Prompt
from prompt_descent.context import fit_to_context

TABLES = ("runs", "prompts", "iterations", "predictions", "llm_calls", "evaluations", "registry")
ROWS = [{"input": f"item {i}", "target": "yes" if i % 2 else "no"} for i in range(12)]


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def config_text(data: str = "data.jsonl", **extra: str) -> str:
    lines = {
        "name": "bad-input",
        "model": "fake/m",
        "prompt": '{system: "Answer yes or no.", template: "{input}"}',
        "dataset": f"{{path: {data}}}",
        "splits": "{train: 4, val: 4, test: 2}",
        "steps": "1",
    } | extra
    return "".join(f"{key}: {value}\n" for key, value in lines.items())


# (case, files to write, expected parts of the message)
CASES: list[tuple[str, dict[str, str | bytes], list[str]]] = [
    (
        "malformed JSONL line",
        {"data.jsonl": jsonl(ROWS[:2]) + '{"input": "x", "target": \n' + jsonl(ROWS[2:])},
        ["data.jsonl:3", "JSON"],
    ),
    (
        "malformed CSV line",
        {
            "data.csv": "input,target\nitem 1,yes\nitem 2,no,extra\n",
            "run.yaml": config_text("data.csv"),
        },
        ["data.csv:3"],
    ),
    (
        "missing target field",
        {"data.jsonl": jsonl(ROWS[:3]) + json.dumps({"input": "no target"}) + "\n"},
        ["data.jsonl:4", "target"],
    ),
    ("empty dataset", {"data.jsonl": ""}, ["data.jsonl", "no examples"]),
    (
        "split sizes larger than the data",
        {"run.yaml": config_text(splits="{train: 10, val: 10, test: 10}")},
        ["field 'splits'", "30", "12"],
    ),
    (
        "duplicate example ids",
        {
            "data.jsonl": jsonl(
                [{"id": "a", **ROWS[0]}, {"id": "b", **ROWS[1]}, {"id": "a", **ROWS[2]}]
            ),
            "run.yaml": config_text(dataset="{path: data.jsonl, id: id}"),
        },
        ["data.jsonl:3", "duplicate example id 'a'", "line 1"],
    ),
    (
        "unknown metric",
        {"run.yaml": config_text(metric="{name: accuracy_plus}")},
        ["run.yaml", "metric.name", "unknown metric 'accuracy_plus'"],
    ),
    (
        "unknown model",
        {"run.yaml": config_text(model="nosuchprovider/x")},
        ["unknown model 'nosuchprovider/x'"],
    ),
    ("invalid YAML", {"run.yaml": config_text() + "steps: [1\n"}, ["run.yaml:", "YAML"]),
    (
        "template placeholder not in the dataset",
        {
            "run.yaml": config_text(
                prompt='{system: "s", template: "{question}"}',
                dataset="{path: data.jsonl, fields: {question: question}}",
            )
        },
        ["data.jsonl", "question"],
    ),
    (
        "non-UTF-8 text",
        {"data.jsonl": jsonl(ROWS[:2]).encode() + b'{"input": "caf\xe9"}\n'},
        ["data.jsonl:3", "UTF-8"],
    ),
    (
        "input longer than the context",
        {
            "data.jsonl": jsonl(ROWS[:5] + [{"input": "word " * 3000, "target": "yes"}] + ROWS[5:]),
            "tiny.gguf": b"GGUF",
            "run.yaml": config_text(model="local/tiny.gguf"),
        },
        ["data.jsonl:6", "long_inputs", "room for"],
    ),
    (
        "value out of range",
        {"run.yaml": config_text(models="{task: {temperature: 7}}")},
        ["run.yaml:", "models.task.temperature"],
    ),
]


@pytest.fixture(scope="module")
def store_with_a_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project store that already holds one finished run."""
    from prompt_descent import llm
    from prompt_descent.fake import ScriptedModel

    llm.register_provider("fake", ScriptedModel(lambda model, messages: "yes"))
    directory = tmp_path_factory.mktemp("project")
    (directory / "data.jsonl").write_text(jsonl(ROWS))
    store = directory / "runs.duckdb"
    (directory / "run.yaml").write_text(config_text(store=str(store)))
    result = CliRunner().invoke(cli.app, ["optimize", str(directory / "run.yaml")])
    assert result.exit_code == 0, result.output
    return store


def snapshot(store: Path) -> dict[str, int]:
    with duckdb.connect(str(store), read_only=True) as con:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


@pytest.mark.parametrize(("case", "files", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line_and_leaves_the_store_unchanged(
    case: str,
    files: dict[str, str | bytes],
    expected: list[str],
    tmp_path: Path,
    store_with_a_run: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PROMPT_DESCENT_N_CTX", "512")
    files = {"data.jsonl": jsonl(ROWS), "run.yaml": config_text()} | files
    files["run.yaml"] += f"store: {store_with_a_run}\n"
    for name, content in files.items():
        write: Callable = (
            (tmp_path / name).write_bytes
            if isinstance(content, bytes)
            else (tmp_path / name).write_text
        )
        write(content)
    before = snapshot(store_with_a_run)

    result = CliRunner().invoke(cli.app, ["optimize", str(tmp_path / "run.yaml")])

    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert message.startswith("error:") and "\n" not in message, message
    assert "Traceback" not in message
    for part in expected:
        assert part in message, f"{case}: {part!r} not in {message!r}"
    assert snapshot(store_with_a_run) == before


def test_truncate_policy_cuts_a_long_input_to_fit_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PROMPT_DESCENT_N_CTX", "256")
    (tmp_path / "tiny.gguf").write_bytes(b"GGUF")
    settings = ModelSettings(model=f"local/{tmp_path / 'tiny.gguf'}", max_tokens=16)
    long = Example(id="long", inputs={"input": "word " * 2000}, source="data.jsonl:7")
    short = Example(id="short", inputs={"input": "a few words"})

    with caplog.at_level(logging.WARNING):
        fitted = fit_to_context(Prompt(system="Summarise."), [short, long], settings, "truncate")

    assert fitted[0] == short
    assert 0 < len(fitted[1].inputs["input"]) < len(long.inputs["input"]) // 4
    assert "data.jsonl:7" in caplog.text and "'long' cut" in caplog.text
