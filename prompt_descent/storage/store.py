"""DuckDB: the schema, the writes and the queries.

Only the flow process writes. DuckDB lets one process hold a file open for
writing, so every operation opens the file, does its work in one transaction and
closes it again (a `session` shares one open among a few operations in a row); a
lock held by another process is waited out with a short retry, so two runs (or a
CLI query during a run) on one file all finish. Rows are written in bulk: one
columnar insert per table and transaction.

Only writers create a store: a `Store(path)` makes the file and its directory on first
use; a reader's `Store(path, create=False)` must find a DuckDB file there. Either way a
path that cannot hold a store is a UserError before anything is made.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb

from prompt_descent.core.config import ModelSettings, Prompt
from prompt_descent.core.results import (
    CallRecord,
    Champion,
    IterationRecord,
    Promotion,
    RegistryEntry,
    RunSummary,
    Usage,
)
from prompt_descent.errors import UserError

if TYPE_CHECKING:
    from prompt_descent.features.qa import ExpandedQA

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    mode VARCHAR NOT NULL,
    config JSON NOT NULL,
    status VARCHAR NOT NULL,
    stop_reason VARCHAR,
    started_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    finished_at TIMESTAMP,
    baseline_prompt VARCHAR,
    best_prompt VARCHAR,
    baseline_val DOUBLE,
    baseline_test DOUBLE,
    best_val DOUBLE,
    best_test DOUBLE,
    steps INTEGER,
    proposals INTEGER,
    accepted INTEGER
);
CREATE TABLE IF NOT EXISTS prompts (
    prompt_id VARCHAR PRIMARY KEY,
    system VARCHAR NOT NULL,
    template VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE TABLE IF NOT EXISTS iterations (
    run_id VARCHAR NOT NULL,
    step INTEGER NOT NULL,
    proposal INTEGER NOT NULL,
    batch_ids VARCHAR[] NOT NULL,
    current_prompt VARCHAR NOT NULL,
    candidate_prompt VARCHAR,
    batch_before DOUBLE,
    batch_after DOUBLE,
    val_before DOUBLE,
    val_after DOUBLE,
    val_examples_scored INTEGER,
    accepted BOOLEAN NOT NULL,
    reason VARCHAR NOT NULL,
    llm_calls INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    cost_usd DOUBLE NOT NULL,
    seconds DOUBLE NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (run_id, step, proposal)
);
CREATE TABLE IF NOT EXISTS predictions (
    run_id VARCHAR NOT NULL,
    prompt_id VARCHAR NOT NULL,
    split VARCHAR NOT NULL,
    example_id VARCHAR NOT NULL,
    output VARCHAR NOT NULL,
    score DOUBLE NOT NULL,
    error VARCHAR,
    PRIMARY KEY (run_id, prompt_id, split, example_id)
);
-- One row per step that made proposals, stored with its first (proposal = 1), which paid for
-- it; files written before hold a copy per proposal. The key is kept so those still open.
CREATE TABLE IF NOT EXISTS gradients (
    run_id VARCHAR NOT NULL,
    step INTEGER NOT NULL,
    proposal INTEGER NOT NULL,
    prompt_id VARCHAR NOT NULL,
    feedback VARCHAR NOT NULL,
    PRIMARY KEY (run_id, step, proposal)
);
CREATE TABLE IF NOT EXISTS llm_calls (
    call_id VARCHAR PRIMARY KEY,
    call_key VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    role VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    messages JSON NOT NULL,
    params JSON NOT NULL,
    response VARCHAR,
    error VARCHAR,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd DOUBLE NOT NULL,
    latency_s DOUBLE NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE TABLE IF NOT EXISTS evaluations (
    run_id VARCHAR NOT NULL,
    prompt_id VARCHAR NOT NULL,
    split VARCHAR NOT NULL,
    score DOUBLE NOT NULL,
    examples INTEGER NOT NULL,
    label VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (run_id, prompt_id, split, label)
);
CREATE TABLE IF NOT EXISTS registry (
    name VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    prompt_id VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    temperature DOUBLE NOT NULL,
    top_p DOUBLE NOT NULL,
    frequency_penalty DOUBLE NOT NULL,
    max_tokens INTEGER NOT NULL,
    val_score DOUBLE,
    test_score DOUBLE,
    champion BOOLEAN NOT NULL,
    run_id VARCHAR,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS expanded_qa (
    run_id VARCHAR NOT NULL,
    text_id VARCHAR NOT NULL,
    pair_index INTEGER NOT NULL,
    questions VARCHAR[] NOT NULL,
    answer VARCHAR,
    error VARCHAR,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (run_id, text_id, pair_index)
);
CREATE TABLE IF NOT EXISTS promotions (
    name VARCHAR NOT NULL,
    champion_version INTEGER,
    champion_prompt VARCHAR NOT NULL,
    challenger_prompt VARCHAR NOT NULL,
    champion_score DOUBLE,
    challenger_score DOUBLE,
    margin DOUBLE NOT NULL,
    promoted BOOLEAN NOT NULL,
    promoted_version INTEGER,
    reason VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
"""

T = TypeVar("T")
LOCK_RETRY_SECONDS = 30.0
# DuckDB shares one database instance among a process's connections to a file; two threads
# opening it at once can see the instance before its Python functions are registered, or
# create the schema twice.
_OPENING = threading.Lock()


@dataclass
class StepRows:
    """The rows one step (an evaluation, a proposal, ...) adds to the store."""

    prompts: list[Prompt] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    predictions: list[tuple[str, str, list[Any]]] = field(default_factory=list)
    iteration: IterationRecord | None = None
    gradient: tuple[int, int, str, str] | None = None
    evaluations: list[tuple[str, str, float, int, str]] = field(default_factory=list)


def _prompt_row(prompt: Prompt) -> dict[str, Any]:
    return {"prompt_id": prompt.id, "system": prompt.system, "template": prompt.template}


def _call_row(run_id: str, call: CallRecord) -> dict[str, Any]:
    return {
        "call_id": call.call_id,
        "call_key": call.key,
        "run_id": run_id,
        "role": call.role,
        "model": call.model,
        "messages": json.dumps(call.messages),
        "params": json.dumps(call.params),
        "response": call.response,
        "error": call.error,
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": call.completion_tokens,
        "cost_usd": call.cost_usd,
        "latency_s": call.latency_s,
    }


class StoredCalls(Mapping[str, CallRecord]):
    """The store's successful calls by key, each made a CallRecord only when it is asked
    for: a store's history runs to hundreds of thousands of calls, and a run hits few."""

    def __init__(self, rows: dict[str, tuple[Any, ...]]) -> None:
        self._rows = rows  # key -> (model, response, prompt/completion tokens, cost, latency)

    def __getitem__(self, key: str) -> CallRecord:
        model, response, prompt_tokens, completion_tokens, cost_usd, latency_s = self._rows[key]
        return CallRecord(
            key=key,
            role="",
            model=model,
            messages=[],
            params={},
            response=response,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=cost_usd,
            latency_s=latency_s,
            cached=True,
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


def _is_lock_conflict(error: duckdb.Error) -> bool:
    return "lock" in str(error).lower()


DUCKDB_MAGIC = b"DUCK"  # bytes 8-12 of every DuckDB file, after the header's checksum
WHERE_TO = "give a store path in a directory you can write"


def _not_a_database(path: Path) -> UserError:
    return UserError(
        f"{path}: not a DuckDB database (the file holds something else); give another "
        "store path, or move this file away if nothing of yours is in it",
        field="store",
    )


def check_readable(path: str | Path) -> None:
    """A UserError unless `path` is an existing DuckDB file; reads 12 bytes, writes nothing."""
    target = Path(path)
    if target.is_dir():
        raise UserError(
            f"{target} is a directory, not a store file; give a file path such as "
            f"{target / 'runs.duckdb'}",
            field="store",
        )
    if not target.is_file():
        raise UserError(
            f"no store at {target}: nothing has been recorded there; check the path "
            "(optimize, evaluate and prompt-import create a store)",
            field="store",
        )
    try:
        with target.open("rb") as file:
            header = file.read(12)
    except OSError as error:
        raise UserError(f"cannot read {target}: {error.strerror}", field="store") from None
    if header[8:12] != DUCKDB_MAGIC:
        raise _not_a_database(target)


def check_writable(path: str | Path) -> None:
    """A UserError if a store cannot be written at `path`; creates nothing that stays."""
    target = Path(path)
    if target.exists():
        check_readable(target)
        if not os.access(target, os.W_OK) or not os.access(target.parent, os.W_OK):
            raise UserError(f"cannot write the store {target}: permission denied", field="store")
        return
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(
            f"cannot create the store {target}: {ancestor} is a file, not a directory; " + WHERE_TO,
            field="store",
        )
    try:  # os.access says yes to root everywhere, /proc included: ask the file system
        handle, probe = tempfile.mkstemp(prefix=".prompt-descent-check-", dir=ancestor)
    except OSError as error:
        raise UserError(
            f"cannot create the store {target}: no file can be made in {ancestor} "
            f"({error.strerror}); " + WHERE_TO,
            field="store",
        ) from None
    os.close(handle)
    os.unlink(probe)


class Store:
    """One DuckDB file. Each method is one short transaction."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        """`create`: a writer's store, made with its directory on first use if missing;
        without it (a reader's) the file must be a DuckDB store already."""
        self.path = Path(path)
        self.create = create
        if not create:
            check_readable(self.path)
        self._session = threading.local()
        self._schema_ready = False

    @contextmanager
    def session(self) -> Iterator[None]:
        """The operations of this thread inside it share one open of the file.

        Opening and closing are most of a small operation's cost; the file stays locked
        for the session, so keep it to a few operations in a row.
        """
        with self._connect():
            yield

    @contextmanager
    def _connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        con = getattr(self._session, "con", None)
        if con is not None:  # inside a session
            yield con
            return
        if not self._schema_ready:
            if not self.create:
                check_readable(self.path)  # DuckDB would make a missing file
            elif not self.path.exists():
                check_writable(self.path)
                self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + LOCK_RETRY_SECONDS
        while True:
            try:
                with _OPENING:
                    con = duckdb.connect(str(self.path))
                    if not self._schema_ready:  # on the first open, not in __init__: one fewer
                        con.execute(SCHEMA)
                        self._schema_ready = True
                break
            except duckdb.Error as error:
                if "not a valid DuckDB database" in str(error):
                    raise _not_a_database(self.path) from None
                if not _is_lock_conflict(error) or time.monotonic() > deadline:
                    raise
                time.sleep(random.uniform(0.05, 0.25))
        self._session.con = con
        try:
            yield con
        finally:
            self._session.con = None
            with _OPENING:
                con.close()

    def _run(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        with self._connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                result = work(con)
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
            return result

    def query(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        """Rows as dicts; for the CLI and for tests."""

        def fetch(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
            cursor = con.execute(sql, params or [])
            columns = [d[0] for d in cursor.description]
            return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

        return self._run(fetch)

    # -- writes ------------------------------------------------------------

    def start_run(self, run_id: str, name: str, mode: str, config: dict[str, Any]) -> None:
        """Create the run row, or mark an existing one (a resume) as running again."""
        self._run(
            lambda con: con.execute(
                """INSERT INTO runs (run_id, name, mode, config, status)
                   VALUES (?, ?, ?, ?, 'running')
                   ON CONFLICT (run_id) DO UPDATE SET status = 'running', stop_reason = NULL,
                   finished_at = NULL""",
                [run_id, name, mode, json.dumps(config)],
            )
        )

    def save_step(
        self,
        run_id: str,
        prompts: list[Prompt],
        calls: list[CallRecord],
        predictions: list[tuple[str, str, list[Any]]] = (),
        iteration: IterationRecord | None = None,
        gradient: tuple[int, int, str, str] | None = None,
        evaluations: list[tuple[str, str, float, int, str]] = (),
    ) -> None:
        """Everything one step produced, written in one transaction."""
        self.save_steps(
            run_id,
            [StepRows(prompts, calls, list(predictions), iteration, gradient, list(evaluations))],
        )

    def save_steps(self, run_id: str, steps: list[StepRows]) -> None:
        """Several steps' rows in one transaction, one bulk insert per table.

        A later step's prediction, evaluation or iteration replaces an earlier one with
        the same key, as if the steps had been written one after the other.
        """
        prompts: dict[str, dict[str, Any]] = {}
        calls: dict[str, dict[str, Any]] = {}
        predictions: dict[tuple[str, str, str], dict[str, Any]] = {}
        gradients: dict[tuple[int, int], dict[str, Any]] = {}
        iterations: dict[tuple[int, int], dict[str, Any]] = {}
        evaluations: dict[tuple[str, str, str], dict[str, Any]] = {}
        for rows in steps:
            for prompt in rows.prompts:
                prompts.setdefault(prompt.id, _prompt_row(prompt))
            for call in rows.calls:
                calls.setdefault(call.call_id, _call_row(run_id, call))
            for prompt_id, split, scored in rows.predictions:
                for p in scored:
                    predictions[prompt_id, split, p.example_id] = {
                        "run_id": run_id,
                        "prompt_id": prompt_id,
                        "split": split,
                        "example_id": p.example_id,
                        "output": p.output,
                        "score": p.score,
                        "error": p.error,
                    }
            if rows.gradient is not None:
                step, proposal, prompt_id, feedback = rows.gradient
                gradients.setdefault(
                    (step, proposal),
                    {
                        "run_id": run_id,
                        "step": step,
                        "proposal": proposal,
                        "prompt_id": prompt_id,
                        "feedback": feedback,
                    },
                )
            if rows.iteration is not None:
                row = {"run_id": run_id, **rows.iteration.model_dump()}
                iterations[row["step"], row["proposal"]] = row
            for prompt_id, split, score, examples, label in rows.evaluations:
                evaluations[prompt_id, split, label] = {
                    "run_id": run_id,
                    "prompt_id": prompt_id,
                    "split": split,
                    "score": score,
                    "examples": examples,
                    "label": label,
                }
        # {rows}: the new rows, one list parameter per column, zipped by unnest
        upsert = "INSERT INTO {} BY NAME {{rows}} ON CONFLICT DO "
        statements = [
            (prompts, upsert.format("prompts") + "NOTHING"),
            (calls, upsert.format("llm_calls") + "NOTHING"),
            (
                predictions,
                upsert.format("predictions")
                + "UPDATE SET output = excluded.output, score = excluded.score, "
                "error = excluded.error",
            ),
            (gradients, upsert.format("gradients") + "NOTHING"),
            (iterations, "INSERT OR REPLACE INTO iterations BY NAME {rows}"),
            (
                evaluations,
                upsert.format("evaluations")
                + "UPDATE SET score = excluded.score, examples = excluded.examples",
            ),
        ]
        writes = [(list(rows.values()), sql) for rows, sql in statements if rows]
        if not writes:
            return

        def write(con: duckdb.DuckDBPyConnection) -> None:
            for rows, sql in writes:
                columns = list(rows[0])
                select = "SELECT " + ", ".join(
                    f"unnest(${i}) AS {column}" for i, column in enumerate(columns, start=1)
                )
                con.execute(sql.format(rows=select), [[row[c] for row in rows] for c in columns])

        self._run(write)

    def finish_run(self, run_id: str, summary: RunSummary) -> None:
        self._run(
            lambda con: con.execute(
                """UPDATE runs SET status = ?, stop_reason = ?, finished_at = current_timestamp,
                   baseline_prompt = ?, best_prompt = ?, baseline_val = ?, baseline_test = ?,
                   best_val = ?, best_test = ?, steps = ?, proposals = ?, accepted = ?
                   WHERE run_id = ?""",
                [
                    summary.status,
                    summary.stop_reason,
                    summary.baseline_prompt,
                    summary.best_prompt,
                    summary.baseline_val,
                    summary.baseline_test,
                    summary.best_val,
                    summary.best_test,
                    summary.steps,
                    summary.proposals,
                    summary.accepted,
                    run_id,
                ],
            )
        )

    def register(self, entry: RegistryEntry, prompt: Prompt) -> int:
        """Add a new version under `entry.name`; returns the version number."""

        def write(con: duckdb.DuckDBPyConnection) -> int:
            con.execute(
                "INSERT INTO prompts (prompt_id, system, template) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                [prompt.id, prompt.system, prompt.template],
            )
            (version,) = con.execute(
                "SELECT coalesce(max(version), 0) + 1 FROM registry WHERE name = ?", [entry.name]
            ).fetchone()
            if entry.champion:
                con.execute("UPDATE registry SET champion = false WHERE name = ?", [entry.name])
            s = entry.settings
            con.execute(
                """INSERT INTO registry (name, version, prompt_id, model, temperature, top_p,
                   frequency_penalty, max_tokens, val_score, test_score, champion, run_id)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                [
                    entry.name,
                    version,
                    prompt.id,
                    s.model,
                    s.temperature,
                    s.top_p,
                    s.frequency_penalty,
                    s.max_tokens,
                    entry.val_score,
                    entry.test_score,
                    entry.champion,
                    entry.run_id,
                ],
            )
            return version

        return self._run(write)

    # -- reads -------------------------------------------------------------

    def cached_calls(self) -> StoredCalls:
        """Every successful call ever made into this store, by call key.

        Without their messages and params: a hit is the same request, so the gateway
        takes those from the request (the store's history can be large).
        """

        def fetch(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[Any, ...]]:
            rows = con.execute(
                """SELECT call_key, any_value(model), any_value(response),
                          any_value(prompt_tokens), any_value(completion_tokens),
                          any_value(cost_usd), any_value(latency_s)
                   FROM llm_calls WHERE error IS NULL AND response IS NOT NULL
                   GROUP BY call_key"""
            ).fetchall()
            return {row[0]: row[1:] for row in rows}

        return StoredCalls(self._run(fetch))

    def prompt(self, prompt_id: str) -> Prompt | None:
        rows = self.query("SELECT system, template FROM prompts WHERE prompt_id = ?", [prompt_id])
        return Prompt(**rows[0]) if rows else None

    def run_usage(self, run_id: str) -> Usage:
        """What a run has paid for so far, over all its attempts."""
        (row,) = self.query(
            """SELECT count(*) AS calls,
                      coalesce(sum(prompt_tokens + completion_tokens), 0) AS tokens,
                      coalesce(sum(cost_usd), 0) AS cost_usd
               FROM llm_calls WHERE run_id = ?""",
            [run_id],
        )
        return Usage(**row)

    def run_list(self) -> list[dict[str, Any]]:
        """Every run with its task model (an optimize run's config names it; other runs
        list the models they called), its paid calls and their cost, oldest first."""
        return self.query(
            """WITH paid AS (
                   SELECT run_id, string_agg(DISTINCT model, ', ' ORDER BY model) AS models,
                          count(*) AS calls, sum(cost_usd) AS cost
                   FROM llm_calls GROUP BY run_id)
               SELECT r.*, coalesce(r.config->>'$.models.task.model', p.models) AS model,
                      coalesce(p.calls, 0) AS calls, coalesce(p.cost, 0) AS cost
               FROM runs r LEFT JOIN paid p USING (run_id) ORDER BY r.started_at"""
        )

    def run_status(self, run_id: str) -> str | None:
        rows = self.query("SELECT status FROM runs WHERE run_id = ?", [run_id])
        return rows[0]["status"] if rows else None

    def run_config(self, run_id: str) -> dict[str, Any] | None:
        rows = self.query("SELECT config FROM runs WHERE run_id = ?", [run_id])
        return json.loads(rows[0]["config"]) if rows else None

    def registered_version(self, run_id: str) -> int | None:
        rows = self.query("SELECT max(version) AS v FROM registry WHERE run_id = ?", [run_id])
        return rows[0]["v"] if rows else None

    def registry_rows(self, name: str | None = None) -> list[dict[str, Any]]:
        """Registry entries with their prompt text, by name then version."""
        where = "WHERE r.name = ?" if name is not None else ""
        return self.query(
            f"""SELECT r.*, p.system, p.template FROM registry r JOIN prompts p USING (prompt_id)
                {where} ORDER BY r.name, r.version""",
            [name] if name is not None else [],
        )

    def end_run(
        self, run_id: str, status: str, stop_reason: str | None = None, score: float | None = None
    ) -> None:
        """Close a run that has no optimizer summary (evaluations, prompt runs, data
        pipelines); an evaluation's `score` is kept as its best_val."""
        self._run(
            lambda con: con.execute(
                "UPDATE runs SET status = ?, stop_reason = ?, finished_at = current_timestamp, "
                "best_val = coalesce(?, best_val) WHERE run_id = ?",
                [status, stop_reason, score, run_id],
            )
        )

    def save_expanded_qa(self, run_id: str, rows: list[ExpandedQA]) -> None:
        """The expand_qa pipeline's rows, failed ones with their error."""
        if not rows:
            return
        self._run(
            lambda con: con.executemany(
                """INSERT OR REPLACE INTO expanded_qa
                   (run_id, text_id, pair_index, questions, answer, error)
                   VALUES (?, ?, ?, ?, ?, ?)""",
                [[run_id, r.text_id, r.pair_index, r.questions, r.answer, r.error] for r in rows],
            )
        )

    def champion(self, name: str) -> Champion | None:
        """The champion registered under `name` (the newest, should there be two)."""
        rows = self.query(
            """SELECT r.*, p.system, p.template FROM registry r JOIN prompts p USING (prompt_id)
               WHERE r.name = ? AND r.champion ORDER BY r.version DESC LIMIT 1""",
            [name],
        )
        if not rows:
            return None
        row = rows[0]
        return Champion(
            name=name,
            version=row["version"],
            prompt=Prompt(system=row["system"], template=row["template"]),
            settings=ModelSettings(
                model=row["model"],
                temperature=row["temperature"],
                top_p=row["top_p"],
                frequency_penalty=row["frequency_penalty"],
                max_tokens=row["max_tokens"],
            ),
            val_score=row["val_score"],
            test_score=row["test_score"],
            run_id=row["run_id"],
        )

    def record_promotion(self, promotion: Promotion) -> None:
        """Why a challenger was or was not promoted: one row of `promotions`."""
        row = promotion.model_dump()
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self._run(
            lambda con: con.execute(
                f"INSERT INTO promotions ({columns}) VALUES ({marks})", list(row.values())
            )
        )
