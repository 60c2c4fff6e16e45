"""A planted API key reaches the provider and nothing else: not DuckDB, Prefect, logs or exports."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prompt_descent import cli
from prompt_descent.llm.gateway import register_provider
from prompt_descent.testing.fake import ScriptedModel

SECRET = "sk-planted-7f3a9c2e4b1d"
CONFIG = """\
name: secrets
model: fake/m
prompt: {{system: "Answer.", template: "{{input}}"}}
dataset: {{path: data.jsonl}}
splits: {{train: 4, val: 4, test: 4}}
steps: 1
store: {store}
models:
  task: {{api_key_env: PLANTED_KEY, api_base: "${{PLANTED_BASE}}"}}
"""


def script(model: str, messages: list[dict[str, str]]) -> str:
    if messages[0]["content"].startswith("You improve prompts"):
        return json.dumps({"system": "Answer in one word.", "template": "{input}"})
    return "yes" if "one word" in messages[0]["content"] else "yes, it is"


def files_under(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


def test_a_planted_key_is_used_but_never_stored_logged_or_exported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PLANTED_KEY", SECRET)
    monkeypatch.setenv("PLANTED_BASE", f"https://user:{SECRET}@llm.invalid/v1")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    model = ScriptedModel(script)
    register_provider("fake", model)
    (tmp_path / "data.jsonl").write_text(
        "".join(json.dumps({"input": f"q{i}", "target": "yes"}) + "\n" for i in range(12))
    )
    store = tmp_path / "runs.duckdb"
    (tmp_path / "run.yaml").write_text(CONFIG.format(store=store))
    runner = CliRunner()

    with caplog.at_level(logging.DEBUG):
        outputs = [
            runner.invoke(cli.app, ["optimize", str(tmp_path / "run.yaml"), "--run-id", "s1"])
        ]
        outputs += [
            runner.invoke(cli.app, args)
            for args in (
                ["runs", "--store", str(store)],
                ["show", "s1", "--store", str(store)],
                ["prompt", "secrets", "--store", str(store), "--export", str(tmp_path / "p.json")],
                ["prompt", "secrets", "--store", str(store), "--export", str(tmp_path / "p.yaml")],
                ["report", "s1", "--store", str(store), "--out", str(tmp_path / "report")],
            )
        ]

    assert all(result.exit_code == 0 for result in outputs), [r.output for r in outputs]
    assert model.api_keys == {SECRET}, "the key must reach the provider, or this test is moot"
    leaks = [
        str(p)
        for p in files_under(tmp_path, Path(os.environ["PREFECT_HOME"]))
        if SECRET.encode() in p.read_bytes()
    ]
    assert leaks == []
    assert not any(SECRET in result.output for result in outputs)
    assert SECRET not in caplog.text
    assert (tmp_path / "p.json").exists() and (tmp_path / "report").exists()
