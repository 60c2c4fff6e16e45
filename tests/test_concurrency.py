"""Runs at once: one DuckDB file shared by two runs and a reader, one provider rate limit."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
from prefect.client.orchestration import get_client

from flows.limits import limit_name
from flows.optimize import optimize_prompt
from prompt_descent.core.config import RunConfig
from prompt_descent.llm.gateway import register_provider
from prompt_descent.testing.fake import ScriptedModel

DATA = Path(__file__).resolve().parents[1] / "data" / "contains_answer.jsonl"
CONFIG = """\
name: {name}
model: fake/demo
prompt:
  system: Read the text and the question, then respond.
  template: "Text: {{text}}\\nQuestion: {{question}}\\nAnswer:"
dataset: {{path: {data}, fields: {{text: text, question: question}}, target: answer}}
steps: 2
max_proposals: 2
splits: {{train: 8, val: 12, test: 12}}
store: {store}
"""


def test_two_runs_and_a_reader_share_one_duckdb_file(tmp_path: Path) -> None:
    store = tmp_path / "runs.duckdb"
    env = os.environ | {
        "PROMPT_DESCENT_FAKE_SCRIPT": "prompt_descent.testing.demo:demo_script",
        "PROMPT_DESCENT_FAKE_LATENCY": "0.02",
        "PREFECT_HOME": str(tmp_path / "prefect"),
    }
    runs = []
    for name in ("first", "second"):
        config = tmp_path / f"{name}.yaml"
        config.write_text(CONFIG.format(name=name, data=DATA, store=store))
        runs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "prompt_descent.cli",
                    "optimize",
                    str(config),
                    "--run-id",
                    name,
                ],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    readings = 0
    while any(run.poll() is None for run in runs):
        if store.exists():
            reader = subprocess.run(
                [sys.executable, "-m", "prompt_descent.cli", "runs", "--store", str(store)],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert reader.returncode == 0, reader.stderr
            readings += 1
        time.sleep(0.5)

    outputs = [run.communicate()[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert all("lock" not in output.lower() for output in outputs), outputs
    assert readings >= 1
    with duckdb.connect(str(store), read_only=True) as con:
        finished = con.execute("SELECT run_id, status FROM runs ORDER BY run_id").fetchall()
        per_run = dict(
            con.execute("SELECT run_id, count(*) FROM iterations GROUP BY run_id").fetchall()
        )
    assert finished == [("first", "completed"), ("second", "completed")]
    assert per_run.keys() == {"first", "second"}


def test_a_provider_rate_limit_is_a_prefect_global_limit_every_request_takes_a_slot(
    tmp_path: Path,
) -> None:
    model = ScriptedModel(lambda name, messages: "yes")
    register_provider("fake", model)
    data = tmp_path / "data.jsonl"
    data.write_text(
        "".join(json.dumps({"input": f"q{i}", "target": "yes"}) + "\n" for i in range(16))
    )
    config = RunConfig(
        name="limited",
        model="fake/m",
        prompt={"system": "Answer."},
        dataset={"path": str(data)},
        splits={"train": 4, "val": 6, "test": 6},
        steps=1,
        rpm_limits={"fake": 60},
        store=str(tmp_path / "runs.duckdb"),
    )

    asyncio.run(optimize_prompt(config))

    async def read_limit():
        async with get_client() as client:
            return await client.read_global_concurrency_limit_by_name(limit_name("fake"))

    limit = asyncio.run(read_limit())
    assert limit.limit == 60
    assert limit.slot_decay_per_second == 1.0
    assert len(model.calls) == 16  # baseline val + test, and the perfect batch: no proposals
    assert limit.active_slots > 0, "requests took slots, which drain at one a second"
