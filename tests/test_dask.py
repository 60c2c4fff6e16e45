"""task_runner: dask: the same run, with the predictions made in Dask worker processes.

The workers are other processes, so they get the scripted demo model from
PROMPT_DESCENT_FAKE_SCRIPT; this process has its own copy, which sees only the calls
that stayed here.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

from flows.optimize import optimize_prompt
from prompt_descent.core.config import RunConfig
from prompt_descent.core.configfile import load_config
from prompt_descent.core.results import RunSummary
from prompt_descent.errors import UserError
from prompt_descent.storage.store import Store
from prompt_descent.testing.demo import demo_script

DEMO = Path(__file__).resolve().parent.parent / "data" / "contains_answer.yaml"


def demo_config(directory: Path, **overrides: object) -> RunConfig:
    settings = load_config(DEMO).model_dump(exclude={"model", "models", "source"})
    settings |= {"model": "fake/demo", "store": str(directory / "runs.duckdb")}
    return RunConfig(**(settings | overrides))


def run_alone(config: RunConfig) -> RunSummary:
    """A run that cannot reuse the other's Prefect task results."""
    results = Path(config.store).parent / "results"
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: results}):
        return asyncio.run(optimize_prompt(config))


def paid_calls(config: RunConfig, run_id: str) -> dict[str, int]:
    rows = Store(config.store).query(
        "SELECT role, count(*) AS n FROM llm_calls WHERE run_id = ? GROUP BY role",
        [run_id],
    )
    return {row["role"]: row["n"] for row in rows}


def test_dask_runner_fans_predictions_out_to_workers_with_the_same_outcome(
    tmp_path: Path, fake_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPT_DESCENT_FAKE_SCRIPT", "prompt_descent.testing.demo:demo_script")
    (tmp_path / "thread").mkdir()
    (tmp_path / "dask").mkdir()
    here = fake_model(demo_script)
    threaded = demo_config(tmp_path / "thread")
    on_dask = demo_config(
        tmp_path / "dask", task_runner="dask", dask={"workers": 2, "min_calls": 4}
    )

    thread_run = run_alone(threaded)
    calls_before_dask = len(here.calls)
    dask_run = run_alone(on_dask)

    assert dask_run.status == thread_run.status == "completed"
    assert dask_run.best_prompt == thread_run.best_prompt
    assert (dask_run.best_val, dask_run.best_test) == (thread_run.best_val, thread_run.best_test)
    assert dask_run.accepted == thread_run.accepted >= 1
    assert dask_run.usage.calls == thread_run.usage.calls
    assert paid_calls(on_dask, dask_run.run_id) == paid_calls(threaded, thread_run.run_id)
    # fan-outs of 4 or more predictions (baseline val and test, batches) were made in the
    # workers; the gradient and apply calls and the one-by-one val checks stayed here
    made_elsewhere = dask_run.usage.calls - len(here.calls[calls_before_dask:])
    assert made_elsewhere >= on_dask.splits.val + on_dask.splits.test


def test_dask_runner_without_prefect_dask_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_prefect_dask(name: str, *args, **kwargs):
        if name == "prefect_dask":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_prefect_dask)
    with pytest.raises(UserError, match=r"task_runner: dask needs prefect-dask"):
        asyncio.run(optimize_prompt(demo_config(tmp_path, task_runner="dask")))
    assert not (tmp_path / "runs.duckdb").exists()


def test_dask_address_where_no_scheduler_answers_is_a_config_error(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    config = demo_config(tmp_path, task_runner="dask", dask={"address": address})

    with pytest.raises(UserError, match=rf"dask.address {address}: no Dask scheduler answers"):
        asyncio.run(optimize_prompt(config))
    assert not (tmp_path / "runs.duckdb").exists()
