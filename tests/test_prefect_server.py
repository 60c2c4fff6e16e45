"""The Prefect side, for real: a `prefect server start`, its UI in Chromium, a deployment
run by a process worker.

One server (module scope, its own PREFECT_HOME) serves every test here. Models are
the scripted demo model (prompt_descent.testing.demo): in this process it is registered
directly; the worker's flow-run processes get it from PROMPT_DESCENT_FAKE_SCRIPT.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import duckdb
import httpx
import litellm
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.events.clients import PrefectEventsClient
from prefect.events.worker import EventsWorker
from prefect.exceptions import ObjectAlreadyExists
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

from flows.optimize import optimize_prompt
from prompt_descent.core.config import Prompt, RunConfig
from prompt_descent.core.results import RunSummary
from prompt_descent.errors import ModelError
from prompt_descent.features.registry import register_prompt
from prompt_descent.llm.gateway import register_provider
from prompt_descent.runtime import tether
from prompt_descent.storage.store import Store
from prompt_descent.testing.demo import YES_NO, demo_script
from prompt_descent.testing.fake import ScriptedModel

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATA = ROOT / "data" / "contains_answer.jsonl"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DEMO_SCRIPT = "prompt_descent.testing.demo:demo_script"
VAGUE = Prompt(
    system="Read the text and the question, then respond.",
    template="Text: {text}\nQuestion: {question}\nAnswer:",
)
SERVER_START_SECONDS = 150
POOL = "prompt-descent"  # the work pool prefect.yaml names


# --- the server ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    url: str
    api: str
    home: Path

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a Prefect command that talks to this server."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        return env | {
            "PREFECT_HOME": str(self.home),
            "PREFECT_API_URL": self.api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            **extra,
        }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("prefect-server-home")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = Server(url, f"{url}/api", home).env(
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_UI_API_URL=f"{url}/api",  # what the UI in the browser calls
        PREFECT_UI_ENABLED="true",
    )
    env.pop("PREFECT_API_URL")
    log = (home / "server.log").open("w")
    process = tether.spawn(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        cwd=home,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"prefect server exited: {(home / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"prefect server not healthy after {SERVER_START_SECONDS} s")
            time.sleep(0.3)
        yield Server(url, f"{url}/api", home)
    finally:
        tether.stop(process)
        log.close()


@contextlib.contextmanager
def reporting_to(server: Server, results: Path) -> Iterator[None]:
    """Flows run inside report to `server`, its events too, and all of it is sent on exit.

    The events worker is one per client type, and the suite's own server (conftest) has
    the one that reads PREFECT_API_URL: this server's events get a client of their own.
    """
    EventsWorker.set_client_override(PrefectEventsClient, api_url=server.api)
    try:
        with temporary_settings(
            updates={PREFECT_API_URL: server.api, PREFECT_LOCAL_STORAGE_PATH: results}
        ):
            try:
                yield
            finally:
                # logs and events go out in background batches: send them all before reading
                APILogWorker.drain_all(timeout=30)
                EventsWorker.drain_all(timeout=30)
    finally:
        EventsWorker.set_client_override(None)


def call(server: Server, work: Any) -> Any:
    """Run `work(client)` against the server."""

    async def run() -> Any:
        async with get_client() as client:
            return await work(client)

    with temporary_settings(updates={PREFECT_API_URL: server.api}):
        return asyncio.run(run())


# --- (a) an optimize run, watched through the API -------------------------------------------


def demo_config(directory: Path, **overrides: Any) -> dict[str, Any]:
    return {
        "name": "contains-answer",
        "model": "fake/demo",
        "prompt": VAGUE.model_dump(),
        "dataset": {
            "path": str(DATA),
            "fields": {"text": "text", "question": "question"},
            "target": "answer",
        },
        "batch_size": 4,
        "max_proposals": 2,
        "steps": 2,
        "splits": {"train": 8, "val": 12, "test": 12},
        "store": str(directory / "runs.duckdb"),
    } | overrides


@dataclass
class OptimizedRun:
    summary: RunSummary
    config: RunConfig
    flow_run_id: UUID
    artifacts: dict[str, Any]  # key -> artifact


@pytest.fixture(scope="module")
def optimized(server: Server, tmp_path_factory: pytest.TempPathFactory) -> OptimizedRun:
    directory = tmp_path_factory.mktemp("optimize-on-server")
    config = RunConfig(**demo_config(directory))
    register_provider("fake", ScriptedModel(demo_script))
    # conftest keeps Prefect at WARNING; the run's INFO lines are what this server should get
    run_loggers = [logging.getLogger(name) for name in ("prefect.flow_runs", "prefect.task_runs")]
    levels = [logger.level for logger in run_loggers]
    for logger in run_loggers:
        logger.setLevel(logging.INFO)
    try:
        with reporting_to(server, directory / "results"):
            summary = asyncio.run(optimize_prompt(config))
    finally:
        for logger, level in zip(run_loggers, levels, strict=True):
            logger.setLevel(level)

    prefix = re.sub(r"[^a-z0-9]", "-", summary.run_id.lower())

    async def artifacts(client: Any) -> list[Any]:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_=f"{prefix}-%"))
        )
        return found

    found = call(server, artifacts)
    by_key = {a.key.removeprefix(f"{prefix}-"): a for a in found}
    assert "summary" in by_key, sorted(by_key)
    return OptimizedRun(summary, config, by_key["summary"].flow_run_id, by_key)


def test_optimize_run_is_recorded_on_the_server(server: Server, optimized: OptimizedRun) -> None:
    summary = optimized.summary
    assert summary.status == "completed"
    assert summary.best_val is not None and summary.best_val > summary.baseline_val

    async def read(client: Any) -> tuple[Any, list[Any], list[Any]]:
        flow_run = await client.read_flow_run(optimized.flow_run_id)
        task_runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[optimized.flow_run_id]))
        )
        logs = await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[optimized.flow_run_id]))
        )
        return flow_run, task_runs, logs

    flow_run, task_runs, logs = call(server, read)
    assert flow_run.state.is_completed()
    assert flow_run.name == "optimize contains-answer"
    names = {t.name for t in task_runs}
    assert {"predict baseline val", "predict step 1", "gradient step 1"} <= names
    assert {"validate step 1 proposal 1", "decide step 1 proposal 1"} <= names
    # the key numbers are in the run's log, not only in DuckDB
    messages = "\n".join(log.message for log in logs)
    assert re.search(r"step 1 proposal 1: accepted \(better on the batch \(0\.\d+ -> ", messages)
    assert f"baseline {summary.baseline_prompt}: val {summary.baseline_val:.3f}, test " in messages
    assert (
        f"{summary.run_id} completed: val {summary.baseline_val:.3f} -> {summary.best_val:.3f}, "
        f"test {summary.baseline_test:.3f} -> {summary.best_test:.3f}"
    ) in messages


def test_a_run_that_fails_still_shows_the_steps_it_finished(server: Server, tmp_path: Path) -> None:
    """The step artifacts are sent behind the run; a failure waits for them before raising."""

    def revoked_after_step_1(model: str, messages: list[dict[str, str]]) -> str:
        asking_apply = messages[0]["content"].startswith("You improve prompts")
        if asking_apply and YES_NO in messages[1]["content"]:  # step 2: yes/no was accepted
            raise litellm.exceptions.AuthenticationError(
                "the key was revoked", llm_provider="fake", model=model
            )
        return demo_script(model, messages)

    config = RunConfig(**demo_config(tmp_path))
    register_provider("fake", ScriptedModel(revoked_after_step_1))
    try:
        with reporting_to(server, tmp_path / "results"), pytest.raises(ModelError, match="revoked"):
            asyncio.run(optimize_prompt(config))
    finally:
        register_provider("fake", ScriptedModel(demo_script))

    (run,) = Store(config.store).query("SELECT run_id, status FROM runs")
    assert run["status"] == "failed"
    prefix = re.sub(r"[^a-z0-9]", "-", run["run_id"].lower())

    async def artifact_keys(client: Any) -> set[str]:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_=f"{prefix}-%"))
        )
        return {a.key.removeprefix(f"{prefix}-") for a in found}

    keys = call(server, artifact_keys)
    assert {"progress", "step-1", "accepted-prompt"} <= keys
    assert "summary" not in keys


def test_artifacts_hold_the_iteration_table_and_the_summary(optimized: OptimizedRun) -> None:
    summary, artifacts = optimized.summary, optimized.artifacts
    rows = Store(optimized.config.store).query(
        "SELECT * FROM iterations WHERE run_id = ? AND proposal > 0 ORDER BY step, proposal",
        [summary.run_id],
    )
    assert rows
    for step in sorted({row["step"] for row in rows}):
        table = json.loads(artifacts[f"step-{step}"].data)
        expected = [row for row in rows if row["step"] == step]
        assert [(r["step"], r["proposal"], r["accepted"], r["reason"]) for r in table] == [
            (r["step"], r["proposal"], r["accepted"], r["reason"]) for r in expected
        ]
    text = artifacts["summary"].data
    assert f"| val | {summary.baseline_val:.3f} | {summary.best_val:.3f} |" in text
    assert f"| test | {summary.baseline_test:.3f} | {summary.best_test:.3f} |" in text
    assert "![scores per step](data:image/svg+xml;base64,PHN2Zy" in text  # "<svg"
    report = Path(optimized.config.store).parent / "reports" / summary.run_id / "report.html"
    assert f"`{report}`" in text and report.is_file()
    assert artifacts["progress"].data == 100.0
    assert artifacts["progress"].description == (
        f"{summary.run_id}: {summary.steps} of {summary.steps} planned steps done; completed"
    )
    assert "accepted-prompt" in artifacts


# --- (b) the UI, in a browser ---------------------------------------------------------------


def rendered_dom(url: str, profile: Path, until: str) -> str:
    """The page's DOM from headless Chromium, once the app has rendered `until` into it.

    On a loaded 2-core machine the app can still be an empty shell when the virtual-time
    budget ends, so a page that lacks `until` is loaded again with a longer budget."""
    dom = ""
    for budget_ms in (15_000, 30_000, 60_000):
        browser = tether.spawn(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                f"--virtual-time-budget={budget_ms}",
                "--dump-dom",
                url,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            dom, _ = browser.communicate(timeout=budget_ms / 1000 + 90)
        finally:
            tether.stop(browser)
        if until in dom:
            break
    return dom


def visible_text(dom: str) -> str:
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed")
def test_ui_shows_the_run_and_its_iteration_table(
    server: Server, optimized: OptimizedRun, tmp_path: Path
) -> None:
    table = optimized.artifacts["step-1"]
    pages = {
        "run": f"{server.url}/runs/flow-run/{optimized.flow_run_id}",
        "table": f"{server.url}/artifacts/artifact/{table.id}",
        "summary": f"{server.url}/artifacts/artifact/{optimized.artifacts['summary'].id}",
    }
    until = {"run": "Completed", "table": "reason", "summary": "data:image/svg+xml"}
    doms = {name: rendered_dom(url, tmp_path / name, until[name]) for name, url in pages.items()}

    run_page = visible_text(doms["run"])
    assert "optimize contains-answer" in run_page
    assert "Completed" in run_page
    assert "Can't connect to Server API" not in run_page

    table_page = visible_text(doms["table"])
    headers = ("proposal", "accepted", "reason", "batch before", "batch after", "val after")
    at = [table_page.find(f" {header} ") for header in headers]
    assert -1 not in at and at == sorted(at), at  # the verdict and reason before the scores
    first = json.loads(table.data)[0]
    assert first["reason"] in table_page

    summary_page = doms["summary"]
    assert 'src="data:image/svg+xml;base64,PHN2Zy' in summary_page  # the chart, rendered inline
    assert f"{optimized.summary.best_val:.3f}" in visible_text(summary_page)


# --- (c) a deployment, run by a process worker ------------------------------------------------


def run_command(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> str:
    done = subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def run_deployment(
    server: Server, name: str, parameters: list[dict[str, Any]], tmp_path: Path
) -> list[Any]:
    """Deploy the project's deployment `name` (prefect.yaml), start one flow run of it per
    parameters, let a process worker run them all, and return the flow runs as they ended.

    The runs overlap: no model call is answered before every run has made its first."""
    env = server.env(
        PROMPT_DESCENT_FAKE_SCRIPT=DEMO_SCRIPT,
        PROMPT_DESCENT_FAKE_LATENCY="0.2",
        PROMPT_DESCENT_FAKE_RENDEZVOUS=f"{tmp_path / 'arrived'}:{len(parameters)}",
    )

    async def create_pool(client: Any) -> None:
        with contextlib.suppress(ObjectAlreadyExists):
            await client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))

    call(server, create_pool)
    deployed = run_command(
        [str(BIN / "prefect"), "--no-prompt", "deploy", "--name", name.split("/")[1]],
        env,
        ROOT,  # where prefect.yaml is: the deployment under test is the project's own
        120,
    )
    assert name in deployed

    async def trigger(client: Any) -> list[UUID]:
        deployment = await client.read_deployment_by_name(name)
        assert deployment.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
        ]
        runs = [
            await client.create_flow_run_from_deployment(deployment.id, parameters=given)
            for given in parameters
        ]
        return [run.id for run in runs]

    run_ids = call(server, trigger)
    limit = str(len(run_ids))
    worker = tether.spawn(
        [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--run-once", "--limit", limit],
        env=env,
        cwd=tmp_path,
        stdout=(tmp_path / "worker.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        worker.wait(timeout=150)
    finally:
        tether.stop(worker)

    async def states(client: Any) -> list[Any]:
        return [await client.read_flow_run(run_id) for run_id in run_ids]

    flow_runs = call(server, states)
    log = (tmp_path / "worker.log").read_text()[-4000:]
    assert [r.state.type.value for r in flow_runs] == ["COMPLETED"] * len(run_ids), log
    assert len(list((tmp_path / "arrived").iterdir())) == len(run_ids)  # one process each
    return flow_runs


def artifact_keys_of(server: Server, flow_run_id: UUID) -> set[str]:
    """The keys of the artifacts on one flow run itself (not on its subflows)."""

    async def read(client: Any) -> list[Any]:
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )

    return {artifact.key for artifact in call(server, read) if artifact.key}


def test_a_deployment_run_shows_the_optimization_on_the_run_the_user_started(
    server: Server, tmp_path: Path
) -> None:
    config = demo_config(tmp_path, steps=1, max_proposals=1, splits={"train": 4, "val": 8})
    config_path = tmp_path / "on-demand.yaml"
    config_path.write_text(json.dumps(config))  # JSON is YAML
    (flow_run,) = run_deployment(
        server, "optimize/optimize", [{"config_path": str(config_path)}], tmp_path
    )
    assert flow_run.name == "optimize on-demand"
    (run,) = Store(config["store"]).query("SELECT run_id, status FROM runs")
    assert run["status"] == "completed"
    prefix = re.sub(r"[^a-z0-9]", "-", run["run_id"].lower())
    keys = artifact_keys_of(server, flow_run.id)
    assert {f"{prefix}-summary", f"{prefix}-progress", f"{prefix}-step-1"} <= keys, keys


def test_nightly_deployment_runs_twice_at_once_and_records_its_decisions(
    server: Server, tmp_path: Path
) -> None:
    # fresh data arrives as rows of a DuckDB table; the config reads them with a query
    data = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(data)) as con:
        con.execute(f"CREATE TABLE questions AS SELECT * FROM read_json_auto('{DATA}')")
    config = demo_config(
        tmp_path,
        steps=1,
        max_proposals=1,
        splits={"train": 4, "val": 8, "test": 8},
        dataset={
            "query": "SELECT text, question, answer FROM questions",
            "database": str(data),
            "fields": {"text": "text", "question": "question"},
            "target": "answer",
        },
    )
    config_path = tmp_path / "nightly.yaml"
    config_path.write_text(json.dumps(config))  # JSON is YAML
    store = Store(config["store"])
    register_prompt("contains-answer", VAGUE, RunConfig(**config).models.task, store)

    # both runs read the champion before their first model call, so before either promotes
    nightly = {"config_path": str(config_path), "margin": 0.05}
    flow_runs = run_deployment(server, "reoptimize/reoptimize-nightly", [nightly] * 2, tmp_path)
    assert all(r.name == "reoptimize nightly" for r in flow_runs)
    for flow_run in flow_runs:  # the challenger's steps and the decision, on the run itself
        keys = artifact_keys_of(server, flow_run.id)
        assert "contains-answer-promotion" in keys, keys
        assert any(key.endswith("-summary") for key in keys), keys

    async def schedule(client: Any) -> Any:
        return await client.read_deployment_by_name("reoptimize/reoptimize-nightly")

    deployment = call(server, schedule)
    assert deployment.schedules and deployment.schedules[0].schedule.cron == "0 3 * * *"

    promotions = store.query("SELECT * FROM promotions ORDER BY created_at")
    assert len(promotions) == 2
    for row in promotions:
        assert row["name"] == "contains-answer" and row["champion_version"] == 1
        assert row["champion_prompt"] == VAGUE.id
        assert row["margin"] == 0.05 and row["reason"]
        # the vague champion answers in sentences (test 0.0); the challenger says yes/no
        assert row["champion_score"] == 0.0 < row["challenger_score"]
        assert row["promoted"] is True and row["reason"].startswith("challenger beats")
    champions = store.query("SELECT version FROM registry WHERE champion")
    versions = {row["promoted_version"] for row in promotions}
    assert versions == {2, 3} and champions == [{"version": 3}]
    runs = store.query("SELECT run_id, status FROM runs ORDER BY started_at")
    assert [r["status"] for r in runs] == ["completed", "completed"]
