"""The command line through Typer's CliRunner: optimize, runs, show, evaluate."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from flows.optimize import optimize_prompt
from prompt_descent import cli
from prompt_descent.core.config import Prompt, RunConfig
from prompt_descent.core.results import RunSummary
from prompt_descent.storage.store import Store
from prompt_descent.testing.fake import Script, ScriptedModel

RegisterModel = Callable[[Script], ScriptedModel]

BASE_SYSTEM = "Answer the question."
MARKER = "Think step by step."
WORSE = "Guess wildly."


def script(model: str, messages: list[dict[str, str]]) -> str:
    """Apply proposes a worse prompt first and the marker second; the marker fixes answers."""
    system, user = messages[0]["content"], messages[-1]["content"]
    if system.startswith("You are an expert prompt engineer"):
        return f"Add '{MARKER}' to the prompt."
    if system.startswith("You improve prompts"):
        first_attempt = user.count("Attempt (") == 1  # only the baseline so far
        added = WORSE if first_attempt else MARKER
        return json.dumps({"system": f"{BASE_SYSTEM} {added}", "template": "{input}"})
    number = int(re.search(r"q(\d+)", user).group(1))
    right = MARKER in system or (WORSE not in system and number % 4 == 0)
    return f"a{number}" if right else "wrong"


def write_dataset(directory: Path, size: int = 24) -> Path:
    path = directory / "data.jsonl"
    rows = [{"id": f"e{i}", "input": f"q{i}", "target": f"a{i}"} for i in range(size)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fixed wide console, so table cells do not wrap whatever the terminal is."""
    monkeypatch.setattr(cli, "console", Console(width=400))


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli.app, list(args))


@pytest.fixture
def finished_run(tmp_path: Path, fake_model: RegisterModel) -> tuple[RunSummary, str]:
    fake_model(script)
    store = str(tmp_path / "runs.duckdb")
    config = RunConfig(
        name="cli-run",
        model="fake/m",
        prompt={"system": BASE_SYSTEM},
        dataset={"path": str(write_dataset(tmp_path)), "id": "id"},
        splits={"train": 8, "val": 8, "test": 8},
        store=store,
        steps=1,
        max_proposals=2,
    )
    summary = asyncio.run(optimize_prompt(config))
    assert (summary.proposals, summary.accepted) == (2, 1)
    return summary, store


def test_runs_lists_the_run(finished_run: tuple[RunSummary, str], wide_console: None) -> None:
    summary, store = finished_run

    result = invoke("runs", "--store", store)

    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.stdout.splitlines() if summary.run_id in line]
    assert "cli-run" in line and "completed" in line
    assert f"{summary.baseline_val:.3f}" in line and "1.000" in line
    assert "fake/m" in line  # the model the run was made with


def test_show_lists_each_proposal_with_its_reason_and_diff(
    finished_run: tuple[RunSummary, str], wide_console: None
) -> None:
    summary, store = finished_run

    result = invoke("show", summary.run_id, "--store", store)

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert summary.run_id in out
    assert "not better on the batch" in out
    assert re.search(r"better on the batch \(\d\.\d{3} -> 1\.000\)", out)
    assert "step 1 proposal 1 (rejected)" in out
    assert "step 1 proposal 2 (accepted)" in out
    lines = out.splitlines()
    assert f"+{BASE_SYSTEM} {MARKER}" in lines
    assert f"+{BASE_SYSTEM} {WORSE}" in lines
    assert f"-{BASE_SYSTEM}" in lines


def test_show_unknown_run_exits_2_with_one_line(tmp_path: Path) -> None:
    store = str(tmp_path / "runs.duckdb")
    Store(store).query("SELECT 1")  # a store, without that run

    result = invoke("show", "nosuch", "--store", store)

    assert result.exit_code == 2
    assert "no run 'nosuch'" in result.stderr
    assert "Traceback" not in result.output
    assert result.stderr.strip().count("\n") == 0


def test_evaluate_prints_the_score_and_records_it(
    tmp_path: Path, fake_model: RegisterModel, wide_console: None
) -> None:
    model = fake_model(script)
    dataset = write_dataset(tmp_path, size=8)
    store = str(tmp_path / "runs.duckdb")

    result = invoke(
        "evaluate", str(dataset), "--prompt", BASE_SYSTEM, "--model", "fake/m", "--store", store
    )

    assert result.exit_code == 0, result.output
    prompt_id = Prompt(system=BASE_SYSTEM).id
    assert f"prompt {prompt_id}: exact_match = 0.250 on 8 examples (0 failed calls)" in (
        result.stdout
    )
    assert len(model.calls) == 8
    with duckdb.connect(store, read_only=True) as con:
        rows = con.execute("SELECT prompt_id, score, examples FROM evaluations").fetchall()
    assert rows == [(prompt_id, 0.25, 8)]


def test_evaluate_with_unknown_metric_is_a_one_line_error(
    tmp_path: Path, fake_model: RegisterModel
) -> None:
    model = fake_model(script)
    dataset = write_dataset(tmp_path, size=4)

    result = invoke(
        "evaluate",
        str(dataset),
        "--prompt",
        BASE_SYSTEM,
        "--model",
        "fake/m",
        "--metric",
        "f1_score",
        "--store",
        str(tmp_path / "runs.duckdb"),
    )

    assert result.exit_code == 2
    assert "field 'metric.name'" in result.stderr
    assert "unknown metric 'f1_score'" in result.stderr
    assert "Traceback" not in result.output
    assert model.calls == []


CONFIG = """\
name: cli-optimize
model: fake/m
prompt:
  system: {system}
  template: "{{input}}"
dataset:
  path: data.jsonl
  id: id
splits: {{train: 8, val: 8, test: 8}}
steps: 1
max_proposals: 2
store: runs.duckdb
"""


def test_optimize_runs_a_yaml_config(
    tmp_path: Path, fake_model: RegisterModel, wide_console: None
) -> None:
    model = fake_model(script)
    write_dataset(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG.format(system=BASE_SYSTEM))

    result = invoke("optimize", str(config), "--run-id", "cli-opt-1")

    assert result.exit_code == 0, result.output
    assert "run cli-opt-1 (completed)" in result.stdout
    assert "2 / 1" in result.stdout  # proposals tried / accepted
    assert len(model.calls) > 0
    # paths in the config are relative to the config file
    with duckdb.connect(str(tmp_path / "runs.duckdb"), read_only=True) as con:
        status, best = con.execute(
            "SELECT status, best_prompt FROM runs WHERE run_id = 'cli-opt-1'"
        ).fetchone()
    assert status == "completed"
    assert best == Prompt(system=f"{BASE_SYSTEM} {MARKER}").id
    # the commands that read a run find it through the config that made it
    for command in (["show", "cli-opt-1"], ["runs"], ["prompts"], ["report", "cli-opt-1"]):
        found = invoke(*command, "--config", str(config))
        assert found.exit_code == 0, (command, found.output)
        assert "cli-opt-1" in found.stdout or "v1" in found.stdout, found.stdout


def test_a_run_id_names_one_run_a_completed_one_is_refused_and_another_config_too(
    tmp_path: Path, fake_model: RegisterModel, wide_console: None
) -> None:
    fake_model(script)
    write_dataset(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG.format(system=BASE_SYSTEM))
    assert invoke("optimize", str(config), "--run-id", "once").exit_code == 0
    store = tmp_path / "runs.duckdb"
    before = Store(store).query("SELECT * FROM runs ORDER BY run_id")
    calls_before = Store(store).query("SELECT count(*) AS n FROM llm_calls")

    again = invoke("optimize", str(config), "--run-id", "once")
    resumed = invoke("resume", "once", "--store", str(store))

    for result in (again, resumed):
        assert result.exit_code == 2, result.output
        assert "run 'once'" in result.stderr and "is completed" in result.stderr
        assert "Traceback" not in result.output
    # an unfinished run goes on only with the config it started with
    with duckdb.connect(str(store)) as con:
        con.execute("UPDATE runs SET status = 'stopped' WHERE run_id = 'once'")
    other = tmp_path / "other.yaml"
    other.write_text(CONFIG.format(system=BASE_SYSTEM).replace("steps: 1", "steps: 2"))
    changed = invoke("optimize", str(other), "--run-id", "once")
    assert changed.exit_code == 2, changed.output
    assert "'steps' differs" in changed.stderr
    assert "prompt-descent resume once" in changed.stderr
    after = Store(store).query("SELECT * FROM runs ORDER BY run_id")
    assert [r | {"status": "completed"} for r in after] == before
    assert Store(store).query("SELECT count(*) AS n FROM llm_calls") == calls_before


def test_optimize_with_a_bad_config_points_at_the_line(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG.format(system=BASE_SYSTEM).replace("steps: 1", "steps: -1"))

    result = invoke("optimize", str(config))

    assert result.exit_code == 2
    assert f"{config}:10" in result.stderr
    assert "steps" in result.stderr
    assert "Traceback" not in result.output
