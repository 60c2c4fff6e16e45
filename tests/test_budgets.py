"""Every budget stops a run cleanly, keeps the best prompt, and says which budget it was."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import duckdb
import litellm
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.optimize import optimize_prompt
from prompt_descent.core.config import RunConfig
from prompt_descent.llm.gateway import register_provider
from prompt_descent.testing.fake import ScriptedModel

PRICE_PER_TOKEN = 0.001


def script(model: str, messages: list[dict[str, str]]) -> str:
    if messages[0]["content"].startswith("You improve prompts"):
        return json.dumps(
            {"system": f"Answer yes. Attempt {len(messages)}.", "template": "{input}"}
        )
    if messages[0]["content"].startswith("You are an expert prompt engineer"):
        return "Say yes."
    return "no"


@pytest.fixture
def priced_fake_model() -> Iterator[ScriptedModel]:
    """The fake model with a price in litellm's cost map, so runs have a real cost."""
    litellm.register_model(
        {
            "fake/priced": {
                "input_cost_per_token": PRICE_PER_TOKEN,
                "output_cost_per_token": PRICE_PER_TOKEN,
                "litellm_provider": "fake",
                "mode": "chat",
            }
        }
    )
    model = ScriptedModel(script, latency_s=0.01)
    register_provider("fake", model)
    yield model


def config(tmp_path: Path, budget: dict) -> RunConfig:
    data = tmp_path / "data.jsonl"
    data.write_text(
        "".join(json.dumps({"input": f"question {i}", "target": "yes"}) + "\n" for i in range(40))
    )
    return RunConfig(
        name="budget",
        model="fake/priced",
        prompt={"system": "Answer."},
        dataset={"path": str(data)},
        splits={"train": 20, "val": 10, "test": 10},
        max_proposals=5,
        budget=budget,
        store=str(tmp_path / "runs.duckdb"),
    )


@pytest.mark.parametrize(
    ("budget", "reason"),
    [
        ({"max_tokens": 400}, "max_tokens=400"),
        ({"max_cost_usd": 0.5}, "max_cost_usd=0.5"),
        ({"max_seconds": 1.0}, "max_seconds=1.0"),
    ],
)
def test_a_budget_stops_the_run_cleanly_and_keeps_the_best_prompt(
    tmp_path: Path, priced_fake_model: ScriptedModel, budget: dict, reason: str
) -> None:
    summary = asyncio.run(optimize_prompt(config(tmp_path, budget)))

    assert summary.status == "stopped"
    assert reason in summary.stop_reason
    assert summary.registered_version == 1
    with duckdb.connect(str(tmp_path / "runs.duckdb"), read_only=True) as con:
        status, stop_reason = con.execute("SELECT status, stop_reason FROM runs").fetchone()
        tokens, cost = con.execute(
            "SELECT sum(prompt_tokens + completion_tokens), sum(cost_usd) FROM llm_calls"
        ).fetchone()
    assert (status, stop_reason) == ("stopped", summary.stop_reason)
    assert cost == pytest.approx(tokens * PRICE_PER_TOKEN)
    assert summary.usage.cost_usd == pytest.approx(cost)
    largest_call = 60  # tokens: no single call of this script is bigger
    if "max_tokens" in budget:
        assert budget["max_tokens"] <= tokens < budget["max_tokens"] + largest_call * 4
    if "max_cost_usd" in budget:
        assert budget["max_cost_usd"] <= cost < budget["max_cost_usd"] + largest_call * 4 * 0.001


@pytest.mark.parametrize(("covers", "test_calls"), [("run", 0), ("optimization", 10)])
def test_a_budget_for_the_optimization_alone_leaves_out_scoring_the_test_split(
    tmp_path: Path, priced_fake_model: ScriptedModel, covers: str, test_calls: int
) -> None:
    """With covers: optimization the 10 test predictions are paid on top of the 30 calls."""
    run = config(tmp_path, {"max_llm_calls": 30, "covers": covers})
    summary = asyncio.run(optimize_prompt(run))

    assert summary.status == "stopped"
    assert "max_llm_calls=30" in summary.stop_reason
    assert summary.baseline_test is not None
    with duckdb.connect(str(tmp_path / "runs.duckdb"), read_only=True) as con:
        (recorded,) = con.execute("SELECT count(*) FROM llm_calls").fetchone()
    assert recorded == summary.usage.calls == 30 + test_calls


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_spent_budget_ends_its_step_stopped_not_failed_and_is_not_cached(
    tmp_path: Path, priced_fake_model: ScriptedModel
) -> None:
    """The step the budget ran out in is a Completed task run named Stopped, nothing is
    logged as an error, and a run with more budget runs that step instead of being served
    the stop from the result cache."""
    task_log, records = logging.getLogger("prefect.task_runs"), Records()
    task_log.addHandler(records)
    try:
        state = asyncio.run(
            optimize_prompt(config(tmp_path, {"max_llm_calls": 30}), return_state=True)
        )
    finally:
        task_log.removeHandler(records)
    summary = state.result()

    async def task_runs() -> list:
        async with get_client() as client:
            return await client.read_task_runs(
                flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
                )
            )

    runs = asyncio.run(task_runs())
    assert summary.status == "stopped"
    assert [r.levelname for r in records.records if r.levelno >= logging.WARNING] == []
    stopped = [r for r in runs if r.state.name == "Stopped"]
    assert len(stopped) == 1
    assert stopped[0].state.is_completed()
    assert "max_llm_calls=30" in stopped[0].state.message
    assert not [r.name for r in runs if not r.state.is_completed()]

    more = config(tmp_path, {"max_llm_calls": 200}).model_copy(update={"steps": 1})
    again = asyncio.run(optimize_prompt(more))
    assert again.status == "completed"
    assert again.proposals >= 1
