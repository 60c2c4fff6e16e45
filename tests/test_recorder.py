"""The recorder writes behind the run: reads after flush() see every row, and a failed
write surfaces instead of being lost; the store's bulk writes and the slim call cache."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from prompt_descent.core.config import ModelSettings, Prediction, Prompt, SplitScore
from prompt_descent.core.results import CallRecord
from prompt_descent.llm.gateway import Gateway, call_key
from prompt_descent.storage.runs import StepRows
from prompt_descent.storage.store import Store
from prompt_descent.storage.writer import RunWriter

PROMPT = Prompt(system="Answer.", template="{input}")


def scores(*values: float) -> SplitScore:
    return SplitScore(
        prompt_id=PROMPT.id,
        predictions=[
            Prediction(example_id=f"e{i}", output=str(v), score=v) for i, v in enumerate(values)
        ],
    )


def call(key: str, response: str = "yes") -> CallRecord:
    return CallRecord(
        key=key,
        role="predict",
        model="fake/m",
        messages=[{"role": "user", "content": key}],
        params={"temperature": 0.0},
        response=response,
        prompt_tokens=3,
        completion_tokens=1,
    )


def test_rows_recorded_behind_the_run_are_read_back_after_flush(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs.duckdb")
    gateway = Gateway()

    async def record() -> None:
        recorder = RunWriter(store, gateway, "r1")
        for step in range(1, 6):  # more records than writes can keep up with: merged
            recorder.calls([call(f"k{step}")])
            recorder.evaluation(PROMPT, "train", scores(1.0, 0.0), f"step {step}")
        recorder.evaluation(PROMPT, "train", scores(0.0, 0.0), "step 5")  # replaces step 5
        await recorder.flush()

    asyncio.run(record())
    rows = store.query("SELECT label, score FROM evaluations WHERE run_id = 'r1' ORDER BY label")
    assert [(r["label"], r["score"]) for r in rows] == [
        ("step 1", 0.5),
        ("step 2", 0.5),
        ("step 3", 0.5),
        ("step 4", 0.5),
        ("step 5", 0.0),
    ]
    assert store.run_usage("r1").calls == 5
    predictions = store.query("SELECT example_id, score FROM predictions ORDER BY example_id")
    assert [(r["example_id"], r["score"]) for r in predictions] == [("e0", 0.0), ("e1", 0.0)]


def test_a_failed_write_surfaces_at_flush_and_at_the_next_record(tmp_path: Path) -> None:
    path = tmp_path / "runs.duckdb"
    path.write_text("not a DuckDB file")
    recorder = RunWriter(Store(path), Gateway(), "r1")

    async def record() -> None:
        recorder.evaluation(PROMPT, "val", scores(1.0), "baseline val")
        with pytest.raises(RuntimeError, match="writing run r1 to .*runs.duckdb failed") as failed:
            await recorder.flush()
        assert failed.value.__cause__ is not None  # DuckDB's own error, kept
        with pytest.raises(RuntimeError, match="writing run r1"):
            recorder.evaluation(PROMPT, "val", scores(1.0), "baseline val")

    asyncio.run(record())


def test_save_steps_writes_each_call_once_and_keeps_the_last_prediction(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs.duckdb")
    first, again = call("k1"), call("k2")
    store.save_steps(
        "r1",
        [
            StepRows(prompts=[PROMPT], calls=[first], predictions=[(PROMPT.id, "val", [])]),
            StepRows(
                prompts=[PROMPT],
                calls=[first, again],
                predictions=[(PROMPT.id, "val", scores(1.0).predictions)],
            ),
        ],
    )
    store.save_step("r1", prompts=[], calls=[again])  # a replayed journal: no duplicate
    assert store.run_usage("r1").calls == 2
    rows = store.query("SELECT score FROM predictions WHERE run_id = 'r1'")
    assert [r["score"] for r in rows] == [1.0]
    assert store.prompt(PROMPT.id) == PROMPT


def test_a_stored_call_is_served_from_the_cache_with_the_request(
    tmp_path: Path, fake_model
) -> None:
    model = fake_model(lambda model, messages: "fresh")
    store = Store(tmp_path / "runs.duckdb")
    settings = ModelSettings(model="fake/m")
    messages = [{"role": "user", "content": "question"}]
    key = call_key(settings.model, messages, settings.sampling())
    stored = call(key, response="stored").model_copy(
        update={"messages": messages, "params": settings.sampling()}
    )
    store.save_step("r1", prompts=[], calls=[stored])

    served = asyncio.run(
        Gateway(cache=store.cached_calls()).complete("gradient", settings, messages)
    )
    assert model.calls == []  # not asked
    assert served.cached and served.response == "stored" and served.role == "gradient"
    assert served.messages == messages and served.params == settings.sampling()
