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
from prompt_descent.core.config import Example, ModelSettings, Prompt
from prompt_descent.core.context import fit_to_context

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
        ["run.yaml:2", "field 'model'", "unknown model 'nosuchprovider/x'"],
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
        "demonstration without an input for a placeholder",
        {
            "run.yaml": config_text(
                prompt='\n  system: "s"\n  template: "{input}"\n  demos:\n'
                '    - {inputs: {other: "x"}, output: "yes"}'
            )
        },
        ["run.yaml:6", "field 'prompt.demos'", "demos[0] has no input for {input}"],
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
    from prompt_descent.llm.gateway import register_provider
    from prompt_descent.testing.fake import ScriptedModel

    register_provider("fake", ScriptedModel(lambda model, messages: "yes"))
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


# -- mistakes at any door: the command line, a config's store, model and api_base fields ----

SECRET = "s3cret"
TEXT_ROWS = [{"text": f"text {i}", "input": f"item {i}", "target": "yes"} for i in range(6)]
GARBAGE = bytes(range(256)) * 16
EVALUATE = ["evaluate", "data.jsonl", "--prompt", "Answer.", "--model", "fake/m"]
CREDENTIALS = f"http://user:{SECRET}@host:1/v1"

# (case, files to write (a name ending in / is a directory), arguments, expected parts)
COMMAND_CASES: list[tuple[str, dict[str, str | bytes], list[str], list[str]]] = [
    (
        "template placeholder without a --field",
        {},
        [*EVALUATE, "--template", "Text: {text} Q: {question}", "--field", "text=text"],
        ["--template", "{question}", "--field does not map", "text=text"],
    ),
    (
        "malformed --template",
        {},
        [*EVALUATE, "--template", "{input"],
        ["--template", "expected '}'"],
    ),
    ("malformed --field", {}, [*EVALUATE, "--field", "text"], ["--field", "placeholder=column"]),
    (
        "--max-tokens out of range",
        {},
        [*EVALUATE, "--max-tokens", "0"],
        ["--max-tokens", "(got 0)"],
    ),
    (
        "config store under a regular file",
        {"notes.txt": "a file", "run.yaml": config_text(store="notes.txt/runs.duckdb")},
        ["optimize", "run.yaml"],
        ["run.yaml:7", "field 'store'", "notes.txt is a file, not a directory"],
    ),
    (
        "--store under a regular file",
        {"notes.txt": "a file"},
        [*EVALUATE, "--store", "notes.txt/runs.duckdb"],
        ["--store", "notes.txt is a file, not a directory"],
    ),
    (
        "--store where no file can be made",
        {},
        [*EVALUATE, "--store", "/proc/prompt-descent/runs.duckdb"],
        ["--store", "cannot create the store /proc/prompt-descent/runs.duckdb"],
    ),
    (
        "config store that is not a DuckDB file",
        {"runs.duckdb": GARBAGE, "run.yaml": config_text(store="runs.duckdb")},
        ["optimize", "run.yaml"],
        ["run.yaml:7", "field 'store'", "runs.duckdb: not a DuckDB database", "move this file"],
    ),
    (
        "runs on a store that is not a DuckDB file",
        {"runs.duckdb": GARBAGE},
        ["runs", "--store", "runs.duckdb"],
        ["--store", "runs.duckdb: not a DuckDB database"],
    ),
    *[
        (
            f"{args[0]} with no store",
            {},
            [*args, "--store", "typo/none.duckdb"],
            ["--store", "no store at typo/none.duckdb"],
        )
        for args in (["runs"], ["show", "r1"], ["report", "r1"], ["prompts"], ["prompt", "p"])
    ],
    (
        "resume with no store",
        {},
        ["resume", "r1", "--store", "typo/none.duckdb"],
        ["no store at typo/none.duckdb"],
    ),
    (
        "unknown model of a role",
        {"run.yaml": config_text(models="{task: {model: foo/bar}}")},
        ["optimize", "run.yaml"],
        ["run.yaml:7", "field 'models.task.model'", "unknown model 'foo/bar'"],
    ),
    (
        "api_base with credentials",
        {"run.yaml": config_text(models=f"{{task: {{api_base: '{CREDENTIALS}'}}}}")},
        ["optimize", "run.yaml"],
        ["run.yaml:7", "field 'models.task.api_base'", "credentials"],
    ),
    (
        "api_base with credentials beside an unknown model",
        {
            "run.yaml": config_text(
                model="foo/bar", models=f"{{task: {{api_base: '{CREDENTIALS}'}}}}"
            )
        },
        ["optimize", "run.yaml"],
        ["run.yaml:7", "field 'models.task.api_base'", "credentials"],
    ),
    (
        "api_base that is no URL",
        {"run.yaml": config_text(models=f"{{task: {{api_base: 'user:{SECRET}@host:1/v1'}}}}")},
        ["optimize", "run.yaml"],
        ["run.yaml:7", "field 'models.task.api_base'", "not an http(s) URL"],
    ),
    (
        "config path that is a directory",
        {"conf/": ""},
        ["optimize", "conf"],
        ["conf is a directory"],
    ),
]


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under `root`, with the bytes of each file."""
    return {
        str(path.relative_to(root)): path.read_bytes() if path.is_file() else None
        for path in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize(
    ("case", "files", "args", "expected"), COMMAND_CASES, ids=[c[0] for c in COMMAND_CASES]
)
def test_command_mistake_is_one_line_and_creates_or_changes_nothing(
    case: str,
    files: dict[str, str | bytes],
    args: list[str],
    expected: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_model: Callable,
) -> None:
    model = fake_model(lambda name, messages: "yes")
    monkeypatch.chdir(tmp_path)
    for name, content in ({"data.jsonl": jsonl(TEXT_ROWS)} | files).items():
        if name.endswith("/"):
            (tmp_path / name).mkdir()
        elif isinstance(content, bytes):
            (tmp_path / name).write_bytes(content)
        else:
            (tmp_path / name).write_text(content)
    before = tree(tmp_path)

    result = CliRunner().invoke(cli.app, args)

    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("error:") and "\n" not in message, message
    assert result.stdout == ""
    assert "Traceback" not in result.output
    assert SECRET not in result.output
    for part in expected:
        assert part in message, f"{case}: {part!r} not in {message!r}"
    assert model.calls == []
    assert tree(tmp_path) == before  # no store, directory or flow result made; none changed


def test_cli_and_api_evaluate_make_the_same_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_model: Callable
) -> None:
    """`prompt-descent evaluate` is prompt_descent.evaluate: the same judge, the same calls."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    import prompt_descent as pd
    from prompt_descent.core.config import Models

    fake_model(lambda name, messages: "8" if "rubric" in messages[0]["content"] else "yes")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.jsonl").write_text(jsonl(ROWS[:4]))

    result = CliRunner().invoke(
        cli.app,
        [*EVALUATE, "--metric", "llm_judge", "--template", "{input}", "--store", "cli.duckdb"],
    )
    assert result.exit_code == 0, result.output
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: tmp_path / "api-results"}):
        pd.evaluate("Answer.", "data.jsonl", "llm_judge", "fake/m", store="api.duckdb")

    def calls(store: str) -> list[tuple]:
        with duckdb.connect(store, read_only=True) as con:
            return con.execute(
                "SELECT role, model, messages, params FROM llm_calls ORDER BY call_key"
            ).fetchall()

    assert calls("cli.duckdb") == calls("api.duckdb")
    judged = [json.loads(params) for role, _, _, params in calls("cli.duckdb") if role == "judge"]
    assert len(judged) == 4
    assert all(params == Models().judge.sampling() for params in judged)
