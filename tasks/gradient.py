"""Step 3, backward: the gradient model explains how the prompt should change.

The text gradient is built from everything known about the failing examples:
the prompt, each input, the model's output, the target and the score, plus the
candidates already rejected for this batch so the next proposal differs.
"""

from __future__ import annotations

from prefect import task

from prompt_descent import llm
from prompt_descent.config import Example, ModelSettings, Prompt, SplitScore
from prompt_descent.records import Feedback
from tasks.options import STEP_OPTIONS

MAX_FAILURES_SHOWN = 8

GRADIENT_SYSTEM = (
    "You are an expert prompt engineer. A language model was given a prompt and got some "
    "examples wrong. Diagnose why the prompt led to each wrong output, then say concretely "
    "how the prompt should change so the model gets them right. Do not rewrite the prompt "
    "yourself; give the reasons and the changes, briefly."
)


def describe_prompt(prompt: Prompt) -> str:
    return f"<system>\n{prompt.system}\n</system>\n<template>\n{prompt.template}\n</template>"


def gradient_messages(
    prompt: Prompt, failures: list[tuple[Example, str, float]], rejected: list[Prompt]
) -> list[dict[str, str]]:
    cases = []
    for number, (example, output, score) in enumerate(failures, start=1):
        inputs = "\n".join(f"{name}: {value}" for name, value in example.inputs.items())
        cases.append(
            f"Example {number} (score {score:.2f}):\n{inputs}\n"
            f"Model output: {output or '(empty)'}\nExpected: {example.target}"
        )
    tried = "".join(
        f"\n\nAlready tried for these examples and rejected:\n{describe_prompt(p)}"
        for p in rejected
    )
    return [
        {"role": "system", "content": GRADIENT_SYSTEM},
        {
            "role": "user",
            "content": (
                f"The prompt:\n{describe_prompt(prompt)}\n\nWrong outputs:\n\n"
                + "\n\n".join(cases)
                + tried
                + "\n\nYour diagnosis and the changes to make:"
            ),
        },
    ]


async def build_gradient(
    prompt: Prompt,
    examples: list[Example],
    scores: SplitScore,
    settings: ModelSettings,
    rejected: list[Prompt],
) -> Feedback:
    by_id = {e.id: e for e in examples}
    failures = [
        (by_id[p.example_id], p.output, p.score) for p in scores.predictions if p.score < 1.0
    ][:MAX_FAILURES_SHOWN]
    call = await llm.gateway().complete(
        "gradient", settings, gradient_messages(prompt, failures, rejected)
    )
    return Feedback(prompt_id=prompt.id, text=(call.response or "").strip(), failures=len(failures))


@task(name="gradient", task_run_name="gradient {label}", **STEP_OPTIONS)
async def gradient(
    prompt: Prompt,
    examples: list[Example],
    scores: SplitScore,
    settings: ModelSettings,
    rejected: list[Prompt],
    label: str = "",
) -> Feedback:
    return await build_gradient(prompt, examples, scores, settings, rejected)
