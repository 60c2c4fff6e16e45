"""The runs and what they record: prompts, calls, predictions, gradients, iterations
and evaluations. Rows are written in bulk: one columnar insert per table and transaction."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import duckdb

from prompt_descent.core.config import Prompt
from prompt_descent.core.results import CallRecord, IterationRecord, RunSummary, Usage
from prompt_descent.storage.database import Database


@dataclass
class StepRows:
    """The rows one step (an evaluation, a proposal, ...) adds to the store."""

    prompts: list[Prompt] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    predictions: list[tuple[str, str, list[Any]]] = field(default_factory=list)
    iteration: IterationRecord | None = None
    gradient: tuple[int, int, str, str] | None = None
    evaluations: list[tuple[str, str, float, int, str]] = field(default_factory=list)


def prompt_row(prompt: Prompt) -> dict[str, Any]:
    """The `prompts` row of a prompt; `stored_prompt` reads it back."""
    return {
        "prompt_id": prompt.id,
        "system": prompt.system,
        "template": prompt.template,
        "demos": prompt.demos_json(),
    }


def stored_prompt(row: dict[str, Any]) -> Prompt:
    return Prompt(system=row["system"], template=row["template"], demos=json.loads(row["demos"]))


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


class RunRecords(Database):
    """The run tables of one store."""

    def start_run(self, run_id: str, name: str, mode: str, config: dict[str, Any]) -> None:
        """Create the run row, or mark an existing one (a resume) as running again."""
        self.transaction(
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
                prompts.setdefault(prompt.id, prompt_row(prompt))
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

        self.transaction(write)

    def finish_run(self, run_id: str, summary: RunSummary) -> None:
        self.transaction(
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

        return StoredCalls(self.transaction(fetch))

    def prompt(self, prompt_id: str) -> Prompt | None:
        rows = self.query(
            "SELECT system, template, demos FROM prompts WHERE prompt_id = ?", [prompt_id]
        )
        return stored_prompt(rows[0]) if rows else None

    def run_row(self, run_id: str) -> dict[str, Any] | None:
        """The run's row of `runs`, or None."""
        rows = self.query("SELECT * FROM runs WHERE run_id = ?", [run_id])
        return rows[0] if rows else None

    def iterations(self, run_id: str) -> list[dict[str, Any]]:
        """The run's rows of `iterations`, by step and proposal."""
        return self.query(
            "SELECT * FROM iterations WHERE run_id = ? ORDER BY step, proposal", [run_id]
        )

    def run_prompts(self, run_id: str) -> dict[str, Prompt]:
        """Every prompt the run started from, tried or ended with, by id."""
        rows = self.query(
            """SELECT prompt_id, system, template, demos FROM prompts WHERE prompt_id IN (
                   SELECT current_prompt FROM iterations WHERE run_id = $1
                   UNION SELECT candidate_prompt FROM iterations WHERE run_id = $1
                   UNION SELECT baseline_prompt FROM runs WHERE run_id = $1
                   UNION SELECT best_prompt FROM runs WHERE run_id = $1)""",
            [run_id],
        )
        return {row["prompt_id"]: stored_prompt(row) for row in rows}

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
        row = self.run_row(run_id)
        return row["status"] if row else None

    def run_config(self, run_id: str) -> dict[str, Any] | None:
        row = self.run_row(run_id)
        return json.loads(row["config"]) if row else None

    def end_run(
        self, run_id: str, status: str, stop_reason: str | None = None, score: float | None = None
    ) -> None:
        """Close a run that has no optimizer summary (evaluations, prompt runs, data
        pipelines); an evaluation's `score` is kept as its best_val."""
        self.transaction(
            lambda con: con.execute(
                "UPDATE runs SET status = ?, stop_reason = ?, finished_at = current_timestamp, "
                "best_val = coalesce(?, best_val) WHERE run_id = ?",
                [status, stop_reason, score, run_id],
            )
        )
