"""The Python API: `import prompt_descent as pd` and call it like a library."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

import prompt_descent as pd
from prompt_descent.testing.fake import Script, ScriptedModel

RegisterModel = Callable[[Script], ScriptedModel]
Messages = list[dict[str, str]]

BASE = "Answer the question."
MARKER = "Think step by step."


def script(model: str, messages: Messages) -> str:
    """Task: right on every q<i> once the marker is in the prompt (else on q0 and q1 only)."""
    system = messages[0]["content"]
    if system.startswith("You are an expert prompt engineer"):
        return f"Add '{MARKER}'."
    if system.startswith("You improve prompts"):
        return json.dumps({"system": f"{BASE} {MARKER}", "template": "{input}"})
    number = int(messages[-1]["content"].removeprefix("q"))
    return f"a{number}" if MARKER in system or number < 2 else "wrong"


def write_project(tmp_path: Path) -> Path:
    data = tmp_path / "data.jsonl"
    data.write_text(
        "".join(json.dumps({"input": f"q{i}", "target": f"a{i}"}) + "\n" for i in range(12))
    )
    config = {
        "name": "api-demo",
        "model": "fake/m",
        "prompt": {"system": BASE},
        "dataset": {"path": "data.jsonl"},  # relative to the config file
        "splits": {"train": 4, "val": 4, "test": 4},
        "steps": 1,
        "max_proposals": 1,
        "store": "runs.duckdb",
        "models": {"task": {"temperature": 0.1, "max_tokens": 8}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_import_is_light() -> None:
    code = (
        "import sys, prompt_descent as pd; pd.Prompt; pd.load_prompt; "
        "heavy = [m for m in ('prefect', 'litellm') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_optimize_from_a_yaml_path_registers_and_load_prompt_returns_it(
    tmp_path: Path, fake_model: RegisterModel
) -> None:
    fake_model(script)
    config = write_project(tmp_path)

    summary = pd.optimize(config)

    assert summary.status == "completed" and summary.accepted == 1
    assert summary.best_val == 1.0 > summary.baseline_val
    store = tmp_path / "runs.duckdb"
    entry = pd.load_prompt("api-demo", store=store)
    assert entry.prompt == pd.Prompt(system=f"{BASE} {MARKER}")
    assert (entry.version, entry.champion, entry.run_id) == (1, True, summary.run_id)
    assert (entry.settings.model, entry.settings.temperature) == ("fake/m", 0.1)
    assert entry.settings.max_tokens == 8
    assert [e.version for e in pd.list_prompts(store)] == [1]

    outputs = pd.run_prompt("api-demo", ["q3", {"input": "q5"}], store=store)
    assert [(o.id, o.output, o.error) for o in outputs] == [("0", "a3", None), ("1", "a5", None)]


def test_evaluate_a_system_prompt_on_a_file(tmp_path: Path, fake_model: RegisterModel) -> None:
    fake_model(script)
    write_project(tmp_path)
    store = tmp_path / "runs.duckdb"

    baseline = pd.evaluate(BASE, tmp_path / "data.jsonl", model="fake/m", store=store)
    better = pd.evaluate(
        pd.Prompt(system=f"{BASE} {MARKER}"),
        pd.DatasetSpec(path=str(tmp_path / "data.jsonl")),
        metric="exact_match",
        model="fake/m",
        limit=4,
        store=store,
    )

    assert baseline.score == pytest.approx(2 / 12) and len(baseline.predictions) == 12
    assert better.score == 1.0 and len(better.predictions) == 4


def test_sync_api_refuses_a_running_loop_with_a_pointer() -> None:
    async def inside() -> None:
        pd.optimize("never-read.yaml")

    with pytest.raises(RuntimeError, match="await the flow directly"):
        asyncio.run(inside())


def test_unknown_prompt_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(pd.UserError, match="no prompt named 'x'"):
        pd.load_prompt("x", store=tmp_path / "runs.duckdb")
