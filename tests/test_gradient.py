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


def gradient_prompts(
    tmp_path: Path, targets: list[str], answer_tokens: int = 64, right_shown: int = 0
) -> list[str]:
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
    )
    asyncio.run(optimize_prompt(config))
    with duckdb.connect(str(tmp_path / "runs.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT messages FROM llm_calls WHERE role = 'gradient'").fetchall()
    return [json.loads(messages)[-1]["content"] for (messages,) in rows]


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
