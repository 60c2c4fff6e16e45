"""What the gradient model is shown: failing cases, the answer space when it is small,
which outputs the token limit cut off, and, when asked, a few right cases."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import duckdb

from flows.optimize import optimize_prompt
from prompt_descent.core.config import RunConfig

HINT = "Every expected answer in this task is one of:"


def script(model: str, messages: list[dict[str, str]]) -> str:
    if messages[0]["content"].startswith("You improve prompts"):
        return json.dumps({"system": "Answer with the label only.", "template": "{input}"})
    return "a sentence, not a label"


def gradient_calls(
    tmp_path: Path,
    targets: list[str],
    answer_tokens: int = 64,
    right_shown: int = 0,
    metric: dict | None = None,
) -> list[list[dict[str, str]]]:
    """The messages of every gradient request of a one-step run."""
    tmp_path.mkdir(exist_ok=True)
    data = tmp_path / "data.jsonl"
    data.write_text(
        "".join(
            json.dumps({"input": f"item {i}", "target": t}) + "\n" for i, t in enumerate(targets)
        )
    )
    config = RunConfig(
        name="hint",
        model="fake/m",
        prompt={"system": "Label it."},
        models={"task": {"max_tokens": answer_tokens}},
        dataset={"path": str(data)},
        splits={"train": 16, "val": 4, "test": 0},
        steps=1,
        max_proposals=1,
        right_shown=right_shown,
        store=str(tmp_path / "runs.duckdb"),
        **({"metric": metric} if metric else {}),
    )
    asyncio.run(optimize_prompt(config))
    with duckdb.connect(str(tmp_path / "runs.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT messages FROM llm_calls WHERE role = 'gradient'").fetchall()
    return [json.loads(messages) for (messages,) in rows]


def gradient_prompts(tmp_path: Path, targets: list[str], **run: object) -> list[str]:
    """What each gradient request asks about: its last message."""
    return [messages[-1]["content"] for messages in gradient_calls(tmp_path, targets, **run)]


def test_a_small_label_set_is_shown_to_the_gradient_model(tmp_path: Path, fake_model) -> None:
    fake_model(script)
    (prompt,) = gradient_prompts(tmp_path, ["yes", "no"] * 10)
    assert f"{HINT} 'no', 'yes'." in prompt
    assert "Model output: a sentence, not a label" in prompt


def test_free_form_targets_are_not_summarised(tmp_path: Path, fake_model) -> None:
    fake_model(script)
    (prompt,) = gradient_prompts(tmp_path, [f"answer number {i}" for i in range(20)])
    assert HINT not in prompt


def test_outputs_the_token_limit_cut_off_are_shown_as_cut_off(tmp_path: Path, fake_model) -> None:
    fake_model(script)  # its answer is 5 tokens (the fake counts words)
    (cut,) = gradient_prompts(tmp_path / "cut", ["yes", "no"] * 10, answer_tokens=5)
    (whole,) = gradient_prompts(tmp_path / "whole", ["yes", "no"] * 10, answer_tokens=6)
    assert "Model output (cut off at the token limit): a sentence, not a label" in cut
    assert "4 of the 4 outputs shown were cut off at the limit of 5 tokens (about 3 words)" in cut
    assert "give the expected answer first" in cut
    assert "cut off" not in whole and "Model output: a sentence, not a label" in whole


def right_and_wrong(model: str, messages: list[dict[str, str]]) -> str:
    if messages[0]["content"].startswith("You improve prompts"):
        return json.dumps({"system": "Answer with the label only.", "template": "{input}"})
    return "yes"  # right on the 'yes' half of the batch


def test_right_shown_adds_the_batch_examples_the_prompt_gets_right(
    tmp_path: Path, fake_model
) -> None:
    fake_model(right_and_wrong)
    (default,) = gradient_prompts(tmp_path / "default", ["yes", "no"] * 10)
    (shown,) = gradient_prompts(tmp_path / "shown", ["yes", "no"] * 10, right_shown=1)
    assert "Right outputs" not in default
    wrong, _, right = shown.partition("Right outputs, for contrast")
    assert "Expected: no" in wrong and "Expected: yes" not in wrong
    assert right.count("Expected: yes") == 1 and "Expected: no" not in right
    assert "Model output: yes" in right


def reasons_then_answers(model: str, messages: list[dict[str, str]]) -> str:
    if messages[0]["content"].startswith("You improve prompts"):
        return json.dumps({"system": "Reason, then answer.", "template": "{input}"})
    return "It looks like yes, but no"  # 6 tokens; the answer read from it is 'no'


def test_where_the_answer_is_read_from_the_end_the_gradient_looks_at_the_reasoning(
    tmp_path: Path, fake_model
) -> None:
    fake_model(reasons_then_answers)
    answer = {"name": "exact_match", "answer": {"take": "last_label", "labels": ["yes", "no"]}}
    (system, ask), *_ = gradient_calls(
        tmp_path / "cut", ["yes", "no"] * 10, answer_tokens=6, metric=answer
    )
    (plain,) = gradient_prompts(tmp_path / "plain", ["yes", "no"] * 10, answer_tokens=6)

    prompt = ask["content"]
    assert "reasons, then answers" in system["content"]
    assert "The answer is read from each output as the last of 'yes', 'no' written." in prompt
    # a label it mentioned before the limit cut it off is not taken for its answer
    assert (
        "It looks like yes, but no\nAnswer read from it: no (from an output cut off before its "
        "answer: not an answer it gave)\nExpected: yes"
    ) in prompt
    # a cut-off output asks for shorter reasoning, not for the answer alone, first
    assert "keep the reasoning short enough" in prompt
    assert "None of them got to its answer, so this comes first" in prompt
    assert "give the expected answer first" not in prompt
    assert "give the expected answer first" in plain and "Answer read" not in plain


def test_the_gradient_is_asked_for_rules_of_the_task_not_of_its_examples(
    tmp_path: Path, fake_model
) -> None:
    fake_model(reasons_then_answers)
    answer = {"name": "exact_match", "answer": {"take": "last_label", "labels": ["yes", "no"]}}
    (reasoning, _), *_ = gradient_calls(tmp_path / "reasoning", ["yes", "no"] * 10, metric=answer)
    (plain, _), *_ = gradient_calls(tmp_path / "plain", ["yes", "no"] * 10)
    for system in (reasoning, plain):
        assert "must hold for every input of the task" in system["content"]
        assert "without these examples' particular objects, names or numbers" in system["content"]


def test_a_reasoning_output_that_answered_within_the_limit_is_read_as_its_answer(
    tmp_path: Path, fake_model
) -> None:
    fake_model(reasons_then_answers)
    answer = {"name": "exact_match", "answer": {"take": "last_label", "labels": ["yes", "no"]}}
    (_, ask), *_ = gradient_calls(tmp_path, ["yes", "no"] * 10, answer_tokens=7, metric=answer)
    assert "It looks like yes, but no\nAnswer read from it: no\nExpected: yes" in ask["content"]
    assert "cut off" not in ask["content"]
