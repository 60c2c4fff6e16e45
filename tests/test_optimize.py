"""optimize_prompt and evaluate_prompt end to end, on a scripted fake model.

Every test scripts the four roles (task, gradient, apply, judge) so the trajectory is
known in advance, runs the flow, and checks the outcome both in the returned summary
and in the DuckDB rows the run wrote.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from rich.console import Console

from flows.evaluate import evaluate_prompt
from flows.optimize import optimize_prompt
from prompt_descent.core.config import (
    Example,
    MetricSpec,
    Models,
    ModelSettings,
    Prompt,
    RunConfig,
)
from prompt_descent.core.datasets import load_examples, split_examples
from prompt_descent.core.results import RunSummary
from prompt_descent.errors import ModelError, UserError
from prompt_descent.presentation.views import summary_table
from prompt_descent.storage.store import Store
from prompt_descent.testing.fake import Script, ScriptedModel
from tasks.gradient import describe_prompt

Messages = list[dict[str, str]]
RegisterModel = Callable[[Script], ScriptedModel]

BASE_SYSTEM = "Answer the question."
MARKER = "Think step by step."
DATASET_SIZE = 24
SPLITS = {"train": 8, "val": 8, "test": 8}
FORTY_VAL = {"train": 8, "val": 40, "test": 0}

GRADIENT_START = "You are an expert prompt engineer"
APPLY_START = "You improve prompts"
JUDGE_START = "You grade answers"

# --- the scripted model ------------------------------------------------------------------

# (system prompt, example number) -> does the task model answer this example right?
Rule = Callable[[str, int], bool]


def role_of(messages: Messages) -> str:
    system = messages[0]["content"]
    for role, start in (
        ("gradient", GRADIENT_START),
        ("apply", APPLY_START),
        ("judge", JUDGE_START),
    ):
        if system.startswith(start):
            return role
    return "task"


def number_of(user_message: str) -> int:
    found = re.search(r"q(\d+)", user_message)
    assert found, f"not a dataset input: {user_message!r}"
    return int(found.group(1))


def proposal(system: str, template: str = "{input}") -> str:
    return json.dumps({"system": system, "template": template})


def with_marker(messages: Messages) -> str:
    return proposal(f"{BASE_SYSTEM} {MARKER}")


def is_repair(messages: Messages) -> bool:
    return len(messages) > 2 and messages[-2]["role"] == "assistant"


def script_for(
    right: Rule,
    apply: Callable[[Messages], str] = with_marker,
    gradient: str = f"The prompt should tell the model to '{MARKER}'",
    empty_for: frozenset[int] = frozenset(),
) -> Script:
    """Task model: `a<i>` for `q<i>` when `right(system, i)`, else "wrong" ("" if in empty_for)."""

    def script(model: str, messages: Messages) -> str:
        role = role_of(messages)
        if role == "gradient":
            return gradient
        if role == "apply":
            return apply(messages)
        if role == "judge":
            return "10"
        number = number_of(messages[-1]["content"])
        if number in empty_for:
            return ""
        return f"a{number}" if right(messages[0]["content"], number) else "wrong"

    return script


def marker_fixes_all(system: str, number: int) -> bool:
    """The baseline gets every fourth example right; the marker makes it get all right."""
    return MARKER in system or number % 4 == 0


def calls_of(model: ScriptedModel, role: str) -> list[Messages]:
    return [messages for _, messages in model.calls if role_of(messages) == role]


def feedback_shown_to_apply(model: ScriptedModel) -> list[str]:
    """The gradient text each apply request was written from, in order."""
    shown = [
        re.search(r"\nFeedback:\n(.*?)\n\n", m[1]["content"], re.S)
        for m in calls_of(model, "apply")
    ]
    assert all(shown)
    return [s.group(1) for s in shown]


# --- config, run, read back ----------------------------------------------------------------


def write_dataset(directory: Path, size: int = DATASET_SIZE) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / "data.jsonl"
    rows = [{"id": f"e{i}", "input": f"q{i}", "target": f"a{i}"} for i in range(size)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def make_config(tmp_path: Path, **overrides: Any) -> RunConfig:
    settings: dict[str, Any] = {
        "name": "qa",
        "model": "fake/m",
        "prompt": {"system": BASE_SYSTEM, "template": "{input}"},
        "dataset": {"path": str(write_dataset(tmp_path)), "id": "id"},
        "splits": SPLITS,
        "store": str(tmp_path / "runs.duckdb"),
        "batch_size": 4,
        "steps": 1,
        "max_proposals": 1,
    }
    return RunConfig(**(settings | overrides))


def run(config: RunConfig) -> RunSummary:
    return asyncio.run(optimize_prompt(config))


def rows(config: RunConfig, sql: str, *params: Any) -> list[dict[str, Any]]:
    return Store(config.store).query(sql, list(params))


def iterations(config: RunConfig, run_id: str) -> list[dict[str, Any]]:
    return rows(config, "SELECT * FROM iterations WHERE run_id = ? ORDER BY step, proposal", run_id)


def numbers(examples: list[Example]) -> set[int]:
    return {number_of(e.inputs["input"]) for e in examples}


def split_numbers(config: RunConfig) -> dict[str, set[int]]:
    splits = split_examples(load_examples(config.dataset), config.splits, config.seed)
    return {
        "train": numbers(splits.train),
        "val": numbers(splits.val),
        "test": numbers(splits.test),
    }


def served_key(call: tuple[str, Messages]) -> str:
    model, messages = call
    return json.dumps([model, messages], sort_keys=True)


# --- accept / reject ----------------------------------------------------------------------


def test_improving_candidate_is_accepted_and_registered(
    tmp_path: Path, fake_model: RegisterModel
) -> None:
    model = fake_model(script_for(marker_fixes_all))
    config = make_config(tmp_path, models={"task": {"temperature": 0.3, "max_tokens": 32}})

    summary = run(config)

    assert summary.status == "completed"
    assert summary.accepted >= 1
    assert summary.best_val == 1.0 > summary.baseline_val
    assert summary.best_test == 1.0 > summary.baseline_test
    best = Prompt(system=f"{BASE_SYSTEM} {MARKER}")
    assert summary.best_prompt == best.id != summary.baseline_prompt
    accepted = [it for it in iterations(config, summary.run_id) if it["accepted"]]
    assert len(accepted) == 1
    assert accepted[0]["reason"].startswith("better on the batch")
    assert accepted[0]["candidate_prompt"] == best.id
    assert accepted[0]["val_examples_scored"] == SPLITS["val"]
    (entry,) = rows(config, "SELECT * FROM registry WHERE name = ?", "qa")
    assert entry["prompt_id"] == best.id
    assert entry["champion"] is True
    assert (entry["model"], entry["temperature"], entry["max_tokens"]) == ("fake/m", 0.3, 32)
    assert (entry["val_score"], entry["test_score"], entry["run_id"]) == (
        1.0,
        1.0,
        summary.run_id,
    )
    assert Store(config.store).prompt(best.id) == best
    (run_row,) = rows(config, "SELECT * FROM runs WHERE run_id = ?", summary.run_id)
    assert (run_row["status"], run_row["best_prompt"], run_row["accepted"]) == (
        "completed",
        best.id,
        1,
    )
    assert len(calls_of(model, "gradient")) == len(calls_of(model, "apply")) == 1


def worse_each_time(messages: Messages) -> str:
    """A new worse prompt per attempt (each earlier attempt is listed in the message)."""
    attempt = messages[-1]["content"].count("Attempt (")
    return proposal(f"{BASE_SYSTEM} Guess wildly, version {attempt}.")


def marker_only(system: str, number: int) -> bool:
    return "Guess wildly" not in system and number % 4 == 0


def test_worse_candidate_is_rejected_and_baseline_kept(
    tmp_path: Path, fake_model: RegisterModel
) -> None:
    model = fake_model(script_for(marker_only, apply=worse_each_time))
    config = make_config(tmp_path, max_proposals=2)

    summary = run(config)

    assert summary.status == "completed"
    assert (summary.accepted, summary.proposals) == (0, 2)
    assert summary.best_prompt == summary.baseline_prompt == config.prompt.id
    assert summary.best_val == summary.baseline_val
    assert summary.best_test == summary.baseline_test
    proposals = iterations(config, summary.run_id)
    assert [it["proposal"] for it in proposals] == [1, 2]
    assert not any(it["accepted"] for it in proposals)
    assert all(it["reason"].startswith("not better on the batch: at most") for it in proposals)
    assert all(it["val_examples_scored"] == 0 for it in proposals)
    # a candidate that fixes none of the failing batch examples cannot win the batch:
    # the passing ones are never predicted with it
    (batch_ids,) = {tuple(it["batch_ids"]) for it in proposals}
    failing = {int(i[1:]) for i in batch_ids if int(i[1:]) % 4}
    candidate_inputs = [
        number_of(m[-1]["content"])
        for m in calls_of(model, "task")
        if "Guess wildly" in m[0]["content"]
    ]
    assert 0 < len(failing) < len(batch_ids)
    assert sorted(candidate_inputs) == sorted(list(failing) * 2)
    # one gradient serves the batch, stored once; the second proposal is told why the first
    # was rejected, once
    assert len(calls_of(model, "gradient")) == 1
    (stored,) = rows(config, "SELECT step, proposal, feedback FROM gradients")
    assert (stored["step"], stored["proposal"]) == (1, 1)
    assert feedback_shown_to_apply(model) == [stored["feedback"]] * 2
    second_apply = calls_of(model, "apply")[1][-1]["content"]
    first_reason = proposals[0]["reason"]
    assert second_apply.count(first_reason) == 1 and f"rejected: {first_reason}" in second_apply
    (entry,) = rows(config, "SELECT prompt_id, champion FROM registry")
    assert entry == {"prompt_id": config.prompt.id, "champion": True}


def test_apply_is_told_what_is_known_of_each_earlier_attempt(
    tmp_path: Path, fake_model: RegisterModel
) -> None:
    model = fake_model(script_for(marker_only, apply=worse_each_time))
    config = make_config(tmp_path, max_proposals=2)

    summary = run(config)

    first, _ = iterations(config, summary.run_id)
    assert first["batch_after"] is None  # stopped before the whole batch was scored
    second_apply = calls_of(model, "apply")[1][-1]["content"]
    assert f"Attempt (val {summary.baseline_val:.3f}):\n{describe_prompt(config.prompt)}" in (
        second_apply
    )
    # the rejected candidate was never fully scored: it is shown with why, not with a score
    rejected = Prompt(system=f"{BASE_SYSTEM} Guess wildly, version 1.")
    assert f"Attempt (rejected: {first['reason']}):\n{describe_prompt(rejected)}" in second_apply
    assert "scoring" not in second_apply


def test_candidate_better_on_batch_but_worse_on_val_is_rejected_early(
    tmp_path: Path, fake_model: RegisterModel
) -> None:
    config = make_config(tmp_path)
    split = split_numbers(config)

    def overfits(system: str, number: int) -> bool:
        if MARKER in system:  # right on train, wrong on val
            return number not in split["val"]
        return number in split["val"]  # baseline: perfect on val, wrong on train

    model = fake_model(script_for(overfits))
    summary = run(config)

    assert summary.baseline_val == 1.0
    assert summary.accepted == 0
    assert summary.best_prompt == config.prompt.id
    (it,) = iterations(config, summary.run_id)
    assert not it["accepted"]
    assert it["batch_after"] == 1.0 > it["batch_before"]
    assert "val" in it["reason"]
    assert it["reason"].startswith("cannot reach val 1.000")
    # val is scored in chunks: once a chunk is all wrong, 1.0 is out of reach
    assert 0 < it["val_examples_scored"] < SPLITS["val"]
    assert it["val_after"] is None
    candidate_val_calls = [
        m
        for m in calls_of(model, "task")
        if MARKER in m[0]["content"] and number_of(m[-1]["content"]) in split["val"]
    ]
    assert len(candidate_val_calls) == it["val_examples_scored"]


def test_exact_val_check_asks_about_the_current_prompts_failures_first(
    tmp_path: Path, fake_model: RegisterModel
) -> None:
    config = make_config(tmp_path, concurrency=8, early_reject_chance=0)
    split = split_numbers(config)
    baseline_wrong = {n for n in split["val"] if n % 4}
    assert 0 < len(baseline_wrong) < SPLITS["val"]

    def overfits(system: str, number: int) -> bool:
        if MARKER in system:  # right on train, wrong on val
            return number not in split["val"]
        return number % 4 == 0

    model = fake_model(script_for(overfits))
    summary = run(config)

    (it,) = iterations(config, summary.run_id)
    assert not it["accepted"]
    # it must be wrong on one more example than the baseline is in all of val: the
    # baseline's failures first, then one more; no prediction beyond that is paid for
    assert it["val_examples_scored"] == len(baseline_wrong) + 1
    candidate_val = [
        number_of(m[-1]["content"])
        for m in calls_of(model, "task")
        if MARKER in m[0]["content"] and number_of(m[-1]["content"]) in split["val"]
    ]
    assert len(candidate_val) == len(baseline_wrong) + 1
    assert baseline_wrong < set(candidate_val)


def forty_val(tmp_path: Path, early_reject_chance: float) -> tuple[RunConfig, set[int], set[int]]:
    """A config with 40 val examples; its val numbers; the half of them the baseline gets."""
    dataset = {"path": str(write_dataset(tmp_path / "forty", 48)), "id": "id"}
    config = make_config(
        tmp_path, splits=FORTY_VAL, dataset=dataset, early_reject_chance=early_reject_chance
    )
    val = split_numbers(config)["val"]
    return config, val, set(sorted(val)[::2])


def test_a_candidate_unlikely_to_reach_val_is_rejected_before_it_certainly_cannot(
    tmp_path: Path, fake_model: RegisterModel
) -> None:
    exact, val, baseline_right = forty_val(tmp_path, 0.0)

    def overfits(system: str, number: int) -> bool:
        if MARKER in system:  # right on train, wrong on val
            return number not in val
        return number in baseline_right

    model = fake_model(script_for(overfits))
    by_chance = exact.model_copy(
        update={"early_reject_chance": 0.01, "store": str(tmp_path / "chance.duckdb")}
    )
    (certain,) = iterations(exact, run(exact).run_id)
    exact_calls = len(calls_of(model, "task"))
    (unlikely,) = iterations(by_chance, run(by_chance).run_id)

    wrong = len(val) - len(baseline_right)
    assert certain["reason"].startswith("cannot reach val")
    assert certain["val_examples_scored"] == wrong + 1
    assert not unlikely["accepted"]
    found = re.fullmatch(
        r"unlikely to reach val (\S+): (\S+)% chance after (\d+)/40 examples", unlikely["reason"]
    )
    assert found, unlikely["reason"]
    assert float(found[1]) == unlikely["val_before"]
    assert float(found[2]) < 1.0
    assert int(found[3]) == unlikely["val_examples_scored"] < wrong + 1
    # the second run paid only for the val predictions its early stop needed
    candidate_val_calls = [
        m
        for m in calls_of(model, "task")[exact_calls:]
        if MARKER in m[0]["content"] and number_of(m[-1]["content"]) in val
    ]
    assert len(candidate_val_calls) == unlikely["val_examples_scored"]


def test_a_candidate_that_ties_on_val_is_not_given_up_on_by_chance(
    tmp_path: Path, fake_model: RegisterModel
) -> None:
    config, val, baseline_right = forty_val(tmp_path, 0.01)

    def trades_places(system: str, number: int) -> bool:
        if number not in val:
            return MARKER in system  # the candidate fixes the batch
        return (number in baseline_right) != (MARKER in system)  # and swaps the val halves

    fake_model(script_for(trades_places))
    summary = run(config)

    (it,) = iterations(config, summary.run_id)
    assert it["accepted"], it["reason"]
    assert it["val_examples_scored"] == 40
    assert it["val_after"] == it["val_before"] == 0.5


def test_with_val_ties_rejected_a_candidate_must_be_better_on_val_too(
    tmp_path: Path, fake_model: RegisterModel
) -> None:
    config, val, baseline_right = forty_val(tmp_path, 0.0)
    one_more = min(baseline_right)

    def trades_places(system: str, number: int) -> bool:
        if number not in val:
            return MARKER in system  # the candidate fixes the batch
        return (number in baseline_right) != (MARKER in system)  # and swaps the val halves

    def one_better(system: str, number: int) -> bool:
        return trades_places(system, number) or (MARKER in system and number == one_more)

    strict = config.model_copy(update={"val_ties": "reject"})
    fake_model(script_for(trades_places))
    (tie,) = iterations(strict, run(strict).run_id)
    fake_model(script_for(one_better))
    elsewhere = strict.model_copy(update={"store": str(tmp_path / "better.duckdb")})
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: tmp_path / "better"}):
        (better,) = iterations(elsewhere, run(elsewhere).run_id)  # no cached answers of the tie
    assert not tie["accepted"]
    assert tie["reason"] == "cannot beat val 0.500: at most 0.500 after 40/40 examples"
    assert better["accepted"], better["reason"]
    assert better["val_after"] == 0.525 > better["val_before"] == 0.5


def test_with_a_val_margin_a_candidate_must_beat_val_by_that_many_standard_errors(
    tmp_path: Path, fake_model: RegisterModel
) -> None:
    config, val, baseline_right = forty_val(tmp_path, 0.0)
    # half of 40 right: one standard error of the sum is sqrt(40) * 0.5 = 3.16 examples

    def gains(more: int) -> Callable[[str, int], bool]:
        extra = set(sorted(baseline_right)[:more])

        def script(system: str, number: int) -> bool:
            if number not in val:
                return MARKER in system
            if MARKER in system:
                return number not in baseline_right or number in extra
            return number in baseline_right

        return script

    margin = config.model_copy(update={"val_margin": 1.0})
    fake_model(script_for(gains(3)))
    (three,) = iterations(margin, run(margin).run_id)
    fake_model(script_for(gains(4)))
    elsewhere = margin.model_copy(update={"store": str(tmp_path / "four.duckdb")})
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: tmp_path / "four"}):
        (four,) = iterations(elsewhere, run(elsewhere).run_id)
    assert not three["accepted"]
    assert three["reason"].startswith(
        "cannot reach val 0.579 (0.500 + 1 standard error): at most 0.5"
    ), three["reason"]
    assert four["accepted"], four["reason"]
    assert four["val_after"] == 0.6 > four["val_before"] == 0.5


def drops_input(messages: Messages) -> str:
    return proposal(f"{BASE_SYSTEM} Dropped the input.", template="Answer now:")


def test_placeholder_dropping_candidate_is_rejected_before_predictions(
    tmp_path: Path, fake_model: RegisterModel
) -> None:
    model = fake_model(script_for(marker_fixes_all, apply=drops_input))
    config = make_config(tmp_path, max_proposals=2)

    summary = run(config)

    assert summary.status == "completed"
    assert summary.accepted == 0
    first, second = iterations(config, summary.run_id)
    for it in (first, second):
        assert it["reason"] == "candidate drops placeholder {input}"
        assert it["candidate_prompt"] is None
        assert it["batch_after"] is None
    assert not any("Dropped the input" in m[0]["content"] for m in calls_of(model, "task"))
    # it has no place in the history of attempts: the next apply is told apart
    second_apply = calls_of(model, "apply")[-1][1]["content"]  # (its repair repeats it)
    assert (
        "Proposals for these examples that could not be used:\n"
        "- candidate drops placeholder {input}" in second_apply
    )


def test_placeholder_renamed_candidate_is_rejected(
    tmp_path: Path, fake_model: RegisterModel
) -> None:
    def renames(messages: Messages) -> str:
        return proposal(f"{BASE_SYSTEM} Renamed.", template="Q: {question}")

    model = fake_model(script_for(marker_fixes_all, apply=renames))
    config = make_config(tmp_path)

    summary = run(config)

    (it,) = iterations(config, summary.run_id)
    assert it["reason"] == "candidate drops placeholder {input}"
    assert not any("Renamed" in m[0]["content"] for m in calls_of(model, "task"))


def test_a_step_gives_up_its_batch_after_edits_in_a_row_with_no_usable_prompt(
    tmp_path: Path, fake_model: RegisterModel
) -> None:
    # per batch: the prompt unchanged, a usable edit no better, then unchanged until the end
    replies = [proposal(BASE_SYSTEM), proposal(f"{BASE_SYSTEM} Be brief.")]
    asked: list[int] = []

    def stuck(messages: Messages) -> str:
        if not is_repair(messages):
            asked.append(1)
        return replies[len(asked) - 1] if len(asked) <= len(replies) else proposal(BASE_SYSTEM)

    model = fake_model(script_for(marker_fixes_all, apply=stuck))
    config = make_config(tmp_path, steps=2, max_proposals=5)

    summary = run(config)

    assert summary.status == "completed"
    reasons = [(it["step"], it["reason"]) for it in iterations(config, summary.run_id)]
    identical = "candidate is identical to the current prompt"
    assert reasons == [
        (1, identical),
        # a usable edit: the count starts again
        (1, "not better on the batch: at most 0.250 vs 0.250 after 3/4 examples"),
        (1, identical),
        (1, identical),
        (2, identical),
        (2, identical),
    ]
    assert len(calls_of(model, "gradient")) == 2  # the next batch was given its own gradient


def test_malformed_apply_reply_is_repaired_once(tmp_path: Path, fake_model: RegisterModel) -> None:
    def garbage_then_json(messages: Messages) -> str:
        return with_marker(messages) if is_repair(messages) else "Sure! Here is a better prompt"

    model = fake_model(script_for(marker_fixes_all, apply=garbage_then_json))
    config = make_config(tmp_path)

    summary = run(config)

    assert summary.accepted == 1
    assert summary.best_val == 1.0
    applies = calls_of(model, "apply")
    assert len(applies) == 2
    assert [is_repair(m) for m in applies] == [False, True]
    assert "not the JSON asked for" in applies[1][-1]["content"]


def test_apply_reply_still_malformed_after_repair_is_rejected(
    tmp_path: Path, fake_model: RegisterModel
) -> None:
    model = fake_model(script_for(marker_fixes_all, apply=lambda messages: "no JSON here"))
    config = make_config(tmp_path)

    summary = run(config)

    assert summary.accepted == 0
    (it,) = iterations(config, summary.run_id)
    assert "not valid after one repair" in it["reason"]
    assert it["candidate_prompt"] is None
    assert len(calls_of(model, "apply")) == 2


# --- budgets -----------------------------------------------------------------------------


def test_call_budget_stops_run_and_keeps_baseline(
    tmp_path: Path, fake_model: RegisterModel
) -> None:
    model = fake_model(script_for(marker_fixes_all))
    # baseline val 8 + baseline test 8 + batch 4 = 20: the gradient call is one too many
    config = make_config(tmp_path, budget={"max_llm_calls": 20})

    summary = run(config)

    assert summary.status == "stopped"
    assert "max_llm_calls" in (summary.stop_reason or "")
    assert len(model.calls) <= 20
    assert summary.usage.calls == len(model.calls)
    assert calls_of(model, "gradient") == []
    (calls,) = rows(config, "SELECT count(*) AS n FROM llm_calls WHERE run_id = ?", summary.run_id)
    assert calls["n"] <= 20
    (run_row,) = rows(config, "SELECT * FROM runs WHERE run_id = ?", summary.run_id)
    assert run_row["status"] == "stopped"
    assert "max_llm_calls" in run_row["stop_reason"]
    assert run_row["best_prompt"] == config.prompt.id
    (entry,) = rows(config, "SELECT prompt_id, val_score FROM registry")
    assert entry == {"prompt_id": config.prompt.id, "val_score": summary.baseline_val}


def test_call_budget_hit_after_an_acceptance_keeps_the_accepted_prompt(
    tmp_path: Path, fake_model: RegisterModel
) -> None:
    model = fake_model(script_for(marker_fixes_all))
    # step 1 costs 16 + 4 + 1 + 1 + 4 + 8 = 34 calls and accepts; the budget runs out
    # in step 2 or in the final test evaluation of the new prompt.
    config = make_config(tmp_path, steps=2, budget={"max_llm_calls": 40})

    summary = run(config)

    assert summary.status == "stopped"
    assert "max_llm_calls=40" in (summary.stop_reason or "")
    assert summary.accepted == 1
    best = Prompt(system=f"{BASE_SYSTEM} {MARKER}")
    assert summary.best_prompt == best.id
    assert summary.best_val == 1.0
    assert len(model.calls) <= 40
    (calls,) = rows(config, "SELECT count(*) AS n FROM llm_calls WHERE run_id = ?", summary.run_id)
    assert calls["n"] <= 40
    (run_row,) = rows(config, "SELECT status, best_prompt FROM runs")
    assert run_row == {"status": "stopped", "best_prompt": best.id}
    (entry,) = rows(config, "SELECT prompt_id, val_score, champion FROM registry")
    assert entry == {"prompt_id": best.id, "val_score": 1.0, "champion": True}


# --- what is recorded --------------------------------------------------------------------


def test_duckdb_rows_match_what_happened(tmp_path: Path, fake_model: RegisterModel) -> None:
    model = fake_model(script_for(marker_fixes_all))
    config = make_config(tmp_path, steps=2, max_proposals=2)

    summary = run(config)
    run_id = summary.run_id

    its = iterations(config, run_id)
    proposals = [it for it in its if it["proposal"] > 0]
    skipped = [it for it in its if it["proposal"] == 0]
    assert len(proposals) == summary.proposals
    assert len(its) == summary.proposals + len(skipped)
    assert [it["step"] for it in skipped] == [2]  # the accepted prompt is perfect on step 2
    assert (
        sum(it["llm_calls"] for it in proposals)
        == len(calls_of(model, "gradient") + calls_of(model, "apply"))
        + SPLITS["val"]
        + config.batch_size
    )
    assert sum(it["accepted"] for it in its) == summary.accepted == 1

    (usage,) = rows(
        config,
        "SELECT count(*) AS calls, sum(prompt_tokens + completion_tokens) AS tokens, "
        "count(DISTINCT call_key) AS keys FROM llm_calls WHERE run_id = ?",
        run_id,
    )
    assert usage["calls"] == len(model.calls) == summary.usage.calls
    assert usage["keys"] == usage["calls"]
    assert usage["tokens"] == summary.usage.tokens > 0
    roles = rows(
        config,
        "SELECT role, count(*) AS n FROM llm_calls WHERE run_id = ? GROUP BY role ORDER BY role",
        run_id,
    )
    assert {r["role"]: r["n"] for r in roles} == {
        "apply": len(calls_of(model, "apply")),
        "gradient": len(calls_of(model, "gradient")),
        "predict": len(calls_of(model, "task")),
    }

    baseline_val = rows(
        config,
        "SELECT * FROM predictions WHERE run_id = ? AND prompt_id = ? AND split = 'val'",
        run_id,
        summary.baseline_prompt,
    )
    assert len(baseline_val) == SPLITS["val"]
    assert sum(p["score"] for p in baseline_val) / len(baseline_val) == summary.baseline_val

    evaluations = {
        e["label"]: e for e in rows(config, "SELECT * FROM evaluations WHERE run_id = ?", run_id)
    }
    assert {"baseline val", "baseline test", "best test"} <= set(evaluations)
    assert evaluations["baseline val"]["score"] == summary.baseline_val
    assert evaluations["baseline val"]["examples"] == SPLITS["val"]
    assert evaluations["baseline test"]["score"] == summary.baseline_test
    assert evaluations["best test"]["score"] == summary.best_test
    assert evaluations["best test"]["prompt_id"] == summary.best_prompt

    # one gradient for the one step that made proposals: what they were written from
    gradients = rows(config, "SELECT * FROM gradients WHERE run_id = ?", run_id)
    assert [(g["step"], g["proposal"]) for g in gradients] == [(1, 1)]
    assert [g["feedback"] for g in gradients] == feedback_shown_to_apply(model)
    prompt_ids = {p["prompt_id"] for p in rows(config, "SELECT prompt_id FROM prompts")}
    assert {summary.baseline_prompt, summary.best_prompt} <= prompt_ids

    (run_row,) = rows(config, "SELECT * FROM runs WHERE run_id = ?", run_id)
    assert run_row["status"] == "completed"
    assert run_row["finished_at"] is not None
    for column in ("baseline_val", "baseline_test", "best_val", "best_test", "proposals"):
        assert run_row[column] == getattr(summary, column)
    assert json.loads(run_row["config"])["name"] == "qa"


def test_perfect_batch_is_skipped_without_a_gradient(
    tmp_path: Path, fake_model: RegisterModel
) -> None:
    model = fake_model(script_for(lambda system, number: True))
    config = make_config(tmp_path, steps=2)

    summary = run(config)

    assert summary.status == "completed"
    assert (summary.steps, summary.proposals, summary.accepted) == (2, 0, 0)
    its = iterations(config, summary.run_id)
    assert [(it["step"], it["proposal"]) for it in its] == [(1, 0), (2, 0)]
    assert all(it["reason"].startswith("batch already perfect") for it in its)
    assert all(it["batch_before"] == 1.0 and not it["accepted"] for it in its)
    assert calls_of(model, "gradient") == calls_of(model, "apply") == []


def test_failed_example_is_scored_zero_with_its_error(
    tmp_path: Path, fake_model: RegisterModel
) -> None:
    config = make_config(tmp_path, retry={"base_seconds": 0})
    empty = min(split_numbers(config)["val"])
    model = fake_model(script_for(lambda system, number: True, empty_for=frozenset({empty})))

    summary = run(config)

    assert summary.status == "completed"
    assert summary.baseline_val == (SPLITS["val"] - 1) / SPLITS["val"]
    (failed,) = rows(
        config,
        "SELECT * FROM predictions WHERE run_id = ? AND example_id = ?",
        summary.run_id,
        f"e{empty}",
    )
    assert (failed["split"], failed["score"], failed["output"]) == ("val", 0.0, "")
    assert "empty completion" in failed["error"]
    asked = [m for m in calls_of(model, "task") if number_of(m[-1]["content"]) == empty]
    assert len(asked) >= 1
    others = rows(
        config,
        "SELECT count(*) AS n FROM predictions WHERE run_id = ? AND error IS NOT NULL",
        summary.run_id,
    )
    assert others == [{"n": 1}]


def test_unknown_model_fails_before_anything_is_recorded(tmp_path: Path) -> None:
    config = make_config(tmp_path, model="nosuchprovider/x")

    with pytest.raises(UserError) as raised:
        run(config)

    assert isinstance(raised.value, ModelError)
    message = str(raised.value)
    assert "nosuchprovider/x" in message
    assert "\n" not in message
    assert "unknown model" in message
    assert not Path(config.store).exists(), "nothing is recorded for a model that cannot run"


# --- no call is paid twice ---------------------------------------------------------------


def test_no_call_is_paid_twice_within_a_run(tmp_path: Path, fake_model: RegisterModel) -> None:
    model = fake_model(script_for(marker_only, apply=worse_each_time))
    # two epochs: every train example is predicted again with the same prompt in epoch 2
    config = make_config(tmp_path, steps=4, max_proposals=2)

    summary = run(config)

    assert summary.steps == 4
    served = [served_key(call) for call in model.calls]
    assert len(served) == len(set(served))
    assert len(served) == summary.usage.calls
    train_calls = {
        number_of(m[-1]["content"])
        for m in calls_of(model, "task")
        if m[0]["content"] == BASE_SYSTEM
    } & split_numbers(config)["train"]
    assert len(train_calls) == SPLITS["train"]


def test_second_identical_run_makes_no_llm_call(tmp_path: Path, fake_model: RegisterModel) -> None:
    model = fake_model(script_for(marker_fixes_all))
    config = make_config(tmp_path, steps=2)

    first = run(config)
    served_first = len(model.calls)
    second = run(config)

    assert served_first > 0
    assert len(model.calls) == served_first
    assert second.usage.calls == 0
    assert second.run_id != first.run_id
    assert_same_outcome(first, second)
    # every step came from Prefect's result cache: its calls count as served from a cache
    served = first.usage.calls + first.usage.cached_calls
    assert second.usage.cached_calls == served
    assert f"0 paid, {served} from the cache" in render(summary_table(second))


def test_second_run_without_prefect_cache_is_served_by_the_store(
    tmp_path: Path, fake_model: RegisterModel
) -> None:
    model = fake_model(script_for(marker_fixes_all))
    config = make_config(tmp_path, steps=2)

    first = run(config)
    served_first = len(model.calls)
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: tmp_path / "other-results"}):
        second = run(config)

    assert (tmp_path / "other-results").is_dir()  # the tasks really ran again
    assert len(model.calls) == served_first
    assert second.usage.calls == 0
    assert second.usage.cached_calls == first.usage.calls  # shown beside the calls paid
    assert f"0 paid, {first.usage.calls} from the cache" in render(summary_table(second))
    assert_same_outcome(first, second)
    (calls,) = rows(config, "SELECT count(*) AS n FROM llm_calls WHERE run_id = ?", second.run_id)
    assert calls["n"] == 0


def render(table: Any) -> str:
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def assert_same_outcome(first: RunSummary, second: RunSummary) -> None:
    assert second.status == first.status == "completed"
    compared = ("best_prompt", "baseline_val", "baseline_test", "best_val", "best_test")
    assert [getattr(second, name) for name in compared] == [
        getattr(first, name) for name in compared
    ]
    assert (second.proposals, second.accepted) == (first.proposals, first.accepted)


# --- evaluate_prompt -----------------------------------------------------------------------


def test_evaluate_prompt_scores_and_records(tmp_path: Path, fake_model: RegisterModel) -> None:
    model = fake_model(script_for(lambda system, number: number % 4 == 0))
    examples = [Example(id=f"e{i}", inputs={"input": f"q{i}"}, target=f"a{i}") for i in range(8)]
    models = Models(task=ModelSettings(model="fake/m"), judge=ModelSettings(model="fake/m"))
    store = str(tmp_path / "runs.duckdb")
    prompt = Prompt(system=BASE_SYSTEM)

    scores = asyncio.run(
        evaluate_prompt(prompt, examples, MetricSpec(), models, 2, store, "eval-1")
    )

    assert scores.score == 0.25
    assert [p.score for p in scores.predictions] == [1.0, 0, 0, 0, 1.0, 0, 0, 0]
    assert len(model.calls) == 8
    (evaluation,) = Store(store).query("SELECT * FROM evaluations")
    assert (evaluation["run_id"], evaluation["prompt_id"]) == ("eval-1", prompt.id)
    assert (evaluation["score"], evaluation["examples"]) == (0.25, 8)
    (run_row,) = Store(store).query("SELECT mode, status, best_val FROM runs")
    assert run_row == {"mode": "evaluate", "status": "completed", "best_val": 0.25}
    assert len(Store(store).query("SELECT * FROM predictions WHERE run_id = 'eval-1'")) == 8


def test_evaluate_prompt_with_llm_judge(tmp_path: Path, fake_model: RegisterModel) -> None:
    model = fake_model(script_for(lambda system, number: True))
    examples = [Example(id=f"e{i}", inputs={"input": f"q{i}"}) for i in range(3)]
    models = Models(task=ModelSettings(model="fake/m"), judge=ModelSettings(model="fake/m"))

    scores = asyncio.run(
        evaluate_prompt(
            Prompt(system=BASE_SYSTEM),
            examples,
            MetricSpec(name="llm_judge", rubric="names the answer"),
            models,
            2,
            str(tmp_path / "runs.duckdb"),
            "eval-judge",
        )
    )

    assert scores.score == 1.0
    judged = calls_of(model, "judge")
    assert len(judged) == 3
    assert all("Rubric: names the answer" in m[0]["content"] for m in judged)
