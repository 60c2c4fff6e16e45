"""Feedback mode: no targets, an LLM critique is the gradient and an LLM judge the metric."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import duckdb
import pytest

from flows.optimize import optimize_prompt
from prompt_descent.core.config import RunConfig

TEXTS = [f"note {i}: the meeting moved to room {i}" for i in range(24)]
CRITIQUE = "1. Clarity: it does not ask for brevity. 4. Suggestion: ask for concise answers."


def write_inputs(tmp_path: Path) -> Path:
    path = tmp_path / "inputs.jsonl"
    path.write_text("".join(json.dumps({"input": text}) + "\n" for text in TEXTS))
    return path


def feedback_script(revision: str):
    """Concise prompts get short answers, which the judge likes; the reviser proposes `revision`."""

    def script(model: str, messages: list[dict[str, str]]) -> str:
        system = messages[0]["content"]
        if system.startswith("You grade answers"):
            return "9" if "short answer" in messages[-1]["content"] else "3"
        if system.startswith("You are an expert prompt engineer"):
            return CRITIQUE
        if system.startswith("You improve prompts"):
            return json.dumps(
                {"system": f"Here is the improved prompt: {revision}", "template": "{input}"}
            )
        if system.startswith("You tidy prompts"):
            return json.dumps({"system": revision, "template": "{input}"})
        return "short answer" if "CONCISE" in system else "a long rambling answer"

    return script


def config(tmp_path: Path, **overrides: object) -> RunConfig:
    fields = {
        "name": "feedback",
        "model": "fake/m",
        "prompt": {"system": "Summarise the note."},
        "dataset": {"path": str(write_inputs(tmp_path)), "target": None},
        "splits": {"train": 8, "val": 8, "test": 8},
        "steps": 2,
        "max_proposals": 2,
        "store": str(tmp_path / "runs.duckdb"),
    }
    return RunConfig(**(fields | overrides))


def test_no_target_means_feedback_mode_judged_by_default(tmp_path: Path) -> None:
    run_config = config(tmp_path)
    assert run_config.mode == "feedback"
    assert run_config.metric.name == "llm_judge"


def test_a_target_metric_without_targets_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="metric 'exact_match' compares with targets"):
        config(tmp_path, metric={"name": "exact_match"})


def test_judged_revision_is_accepted_and_cleaned_of_meta_commentary(
    tmp_path: Path, fake_model
) -> None:
    fake_model(feedback_script("Summarise the note. Be CONCISE."))
    summary = asyncio.run(optimize_prompt(config(tmp_path)))

    assert summary.accepted == 1
    assert summary.best_val == pytest.approx(0.9)
    assert summary.baseline_val == pytest.approx(0.3)
    with duckdb.connect(str(tmp_path / "runs.duckdb"), read_only=True) as con:
        (system,) = con.execute(
            "SELECT system FROM prompts WHERE prompt_id = ?", [summary.best_prompt]
        ).fetchone()
        (mode,) = con.execute("SELECT mode FROM runs").fetchone()
        critiques = con.execute("SELECT step, proposal, feedback FROM gradients").fetchall()
        steps = con.execute("SELECT DISTINCT step FROM iterations WHERE proposal > 0").fetchall()
    assert system == "Summarise the note. Be CONCISE."
    assert mode == "feedback"
    # the critique is the gradient: stored once per step that made proposals
    assert sorted(critiques) == [(step, 1, CRITIQUE) for (step,) in sorted(steps)]


def test_worse_revision_is_rejected_when_judged_but_taken_by_always_accept(
    tmp_path: Path, fake_model
) -> None:
    fake_model(feedback_script("Summarise the note at length."))
    (tmp_path / "judged").mkdir()
    (tmp_path / "blind").mkdir()
    judged = asyncio.run(optimize_prompt(config(tmp_path / "judged")))
    blind = asyncio.run(
        optimize_prompt(config(tmp_path / "blind", feedback={"always_accept": True}))
    )

    assert judged.accepted == 0
    assert judged.best_prompt == judged.baseline_prompt
    assert blind.accepted >= 1
    assert blind.best_prompt != blind.baseline_prompt
    assert blind.best_val == pytest.approx(judged.best_val)
    with duckdb.connect(str(tmp_path / "judged" / "runs.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT reason, candidate_prompt FROM iterations ORDER BY step, proposal"
        ).fetchall()
    reasons = [reason for reason, _ in rows]
    assert reasons[0] == "not better on the batch (0.300 vs 0.300)"
    assert set(reasons[1:]) == {"candidate was already tried"}
    # a repeat names the prompt it repeats, so the report can show its text
    assert {candidate for _, candidate in rows[1:]} == {rows[0][1]}
    page = (tmp_path / "judged" / "reports" / judged.run_id / "report.html").read_text()
    assert page.count(f"<details><summary>{rows[0][1]}</summary>") == len(rows)
