"""Provider faults: a run through a 30% fault schedule ends where the fault-free run ends."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import duckdb
import pytest
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

from flows.optimize import optimize_prompt
from prompt_descent.core.config import RunConfig
from prompt_descent.llm.gateway import register_provider
from prompt_descent.testing.fake import FAULT_KINDS, REFUSAL, FaultyModel, ScriptedModel

MARKER = "Reply with the category only."
JSON_FAULTS = ("malformed_json", "truncated")


def script(model: str, messages: list[dict[str, str]]) -> str:
    """Right answers only once the prompt asks for the bare category."""
    system = messages[0]["content"]
    if system.startswith("You are an expert prompt engineer"):
        return "The outputs add words around the category; ask for the category alone."
    if system.startswith("You improve prompts"):
        return json.dumps({"system": f"Classify the item. {MARKER}", "template": "{input}"})
    item = messages[-1]["content"]
    category = "fruit" if item.startswith("apple") else "tool"
    return category if MARKER in system else f"I think it is a {category}."


def write_data(directory: Path) -> Path:
    rows = [
        {
            "input": f"{'apple' if i % 2 else 'hammer'} number {i}",
            "target": "fruit" if i % 2 else "tool",
        }
        for i in range(30)
    ]
    path = directory / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def config(directory: Path, **overrides: object) -> RunConfig:
    directory.mkdir(parents=True, exist_ok=True)
    fields = {
        "name": "faults",
        "model": "fake/m",
        "prompt": {"system": "Classify the item."},
        "dataset": {"path": str(write_data(directory))},
        "splits": {"train": 8, "val": 10, "test": 10},
        "steps": 2,
        "max_proposals": 2,
        "concurrency": 4,
        "retry": {"attempts": 4, "base_seconds": 0.01, "max_wait_seconds": 0.05},
        "store": str(directory / "runs.duckdb"),
    }
    return RunConfig(**(fields | overrides))


def outcome(summary) -> tuple:
    return (
        summary.status,
        summary.baseline_prompt,
        summary.best_prompt,
        summary.baseline_val,
        summary.best_val,
        summary.baseline_test,
        summary.best_test,
        summary.accepted,
    )


def test_a_run_through_faults_ends_where_the_fault_free_run_ends(tmp_path: Path) -> None:
    register_provider("fake", ScriptedModel(script))
    clean = asyncio.run(optimize_prompt(config(tmp_path / "clean")))

    faulty = FaultyModel(script, rate=0.3, seed=7)
    register_provider("fake", faulty)
    # its own Prefect result cache, or the clean run's cached steps would be served
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: tmp_path / "faulty-results"}):
        through_faults = asyncio.run(optimize_prompt(config(tmp_path / "faulty")))

    assert outcome(through_faults) == outcome(clean)
    assert clean.accepted == 1 and clean.best_val == 1.0
    assert set(faulty.injected) >= set(FAULT_KINDS) - set(JSON_FAULTS), faulty.injected
    assert sum(faulty.injected.values()) >= 15
    with duckdb.connect(str(tmp_path / "faulty" / "runs.duckdb"), read_only=True) as con:
        (failed_predictions,) = con.execute(
            "SELECT count(*) FROM predictions WHERE error IS NOT NULL"
        ).fetchone()
        (repairs,) = con.execute(
            "SELECT count(*) FROM llm_calls WHERE role = 'apply' "
            "AND messages::VARCHAR LIKE '%not the JSON asked for%'"
        ).fetchone()
    assert failed_predictions == 0


@pytest.mark.parametrize("kind", JSON_FAULTS)
def test_a_broken_json_proposal_is_repaired_to_the_same_outcome(tmp_path: Path, kind: str) -> None:
    register_provider("fake", ScriptedModel(script))
    clean = asyncio.run(optimize_prompt(config(tmp_path / "clean", steps=1)))

    faulty = FaultyModel(script, rate=1.0, seed=0, kinds=(kind,))
    register_provider("fake", faulty)
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: tmp_path / "faulty-results"}):
        repaired = asyncio.run(optimize_prompt(config(tmp_path / "faulty", steps=1)))

    assert outcome(repaired) == outcome(clean)
    assert faulty.injected == {kind: 1}
    with duckdb.connect(str(tmp_path / "faulty" / "runs.duckdb"), read_only=True) as con:
        (repairs,) = con.execute(
            "SELECT count(*) FROM llm_calls WHERE role = 'apply' "
            "AND messages::VARCHAR LIKE '%not the JSON asked for%'"
        ).fetchone()
    assert repairs == 1


def test_refused_examples_score_zero_with_the_refusal_kept(tmp_path: Path) -> None:
    refusing = FaultyModel(script, rate=0.2, seed=3, kinds=(REFUSAL,), faulty_attempts=99)
    register_provider("fake", refusing)
    run_config = config(tmp_path, steps=1, retry={"max_failed_fraction": 1.0})
    summary = asyncio.run(optimize_prompt(run_config))

    assert summary.status == "completed"
    with duckdb.connect(str(tmp_path / "runs.duckdb"), read_only=True) as con:
        refused = con.execute(
            "SELECT score, error FROM predictions WHERE error IS NOT NULL"
        ).fetchall()
        (recorded,) = con.execute(
            "SELECT count(*) FROM llm_calls WHERE error LIKE '%content filter%'"
        ).fetchone()
    assert refused and all(score == 0 for score, _ in refused)
    assert all("content filter" in error for _, error in refused)
    assert recorded >= len(refused)


def test_a_step_with_too_many_failed_calls_stops_the_run_and_keeps_the_best(
    tmp_path: Path,
) -> None:
    refusing = FaultyModel(script, rate=0.6, seed=1, kinds=(REFUSAL,), faulty_attempts=99)
    register_provider("fake", refusing)
    run_config = config(tmp_path, retry={"max_failed_fraction": 0.25})
    summary = asyncio.run(optimize_prompt(run_config))

    assert summary.status == "stopped"
    assert "calls failed (more than 25%)" in summary.stop_reason
    assert summary.best_prompt == summary.baseline_prompt
    with duckdb.connect(str(tmp_path / "runs.duckdb"), read_only=True) as con:
        status, reason = con.execute("SELECT status, stop_reason FROM runs").fetchone()
    assert status == "stopped"
    assert reason == summary.stop_reason


@pytest.mark.parametrize("kind", ["rate_limit_retry_after"])
def test_retry_after_is_honoured_up_to_the_configured_cap(tmp_path: Path, kind: str) -> None:
    faulty = FaultyModel(script, rate=1.0, seed=0, kinds=(kind,), faulty_attempts=1)
    register_provider("fake", faulty)
    summary = asyncio.run(optimize_prompt(config(tmp_path, steps=1, max_proposals=1)))

    assert summary.status == "completed"
    assert faulty.injected[kind] == summary.usage.calls
