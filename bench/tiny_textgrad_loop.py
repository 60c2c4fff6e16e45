"""Reference loop: Tiny TextGrad, from its published description (label-free).

5 iterations; each predicts on a batch of train inputs with the current prompt,
asks for one critique of (prompt, inputs, outputs), one revision along the
critique, one clean-up of the revision (meta-commentary removed), and always
accepts the result. No targets are used while optimizing. Plain asyncio + litellm:
no cache, no Prefect, no DuckDB.

Messages are prompt-descent's where they exist: the critique instruction
(tasks.gradient.CRITIQUE_SYSTEM with describe_prompt), the revision
(tasks.apply.apply_messages) and the clean-up (tasks.apply.clean_messages). A
revision that is not JSON or drops `{input}` leaves the prompt as it was.
"""

from __future__ import annotations

from _common import Caller, OutOfBudget
from ape_loop import LoopResult

from prompt_descent.core.batching import minibatches
from prompt_descent.core.config import Example, Models, Prompt
from prompt_descent.core.results import Feedback
from prompt_descent.llm.structured import parse_reply
from tasks.apply import ProposedPrompt, apply_messages, check_candidate, clean_messages
from tasks.gradient import CRITIQUE_SYSTEM, describe_prompt


def critique_messages(prompt: Prompt, cases: list[tuple[Example, str]]) -> list[dict[str, str]]:
    shown = "\n\n".join(
        f"Example {n}:\n"
        + "\n".join(f"{name}: {value}" for name, value in example.inputs.items())
        + f"\nModel output: {output or '(empty)'}"
        for n, (example, output) in enumerate(cases, start=1)
    )
    return [
        {"role": "system", "content": CRITIQUE_SYSTEM},
        {
            "role": "user",
            "content": f"The prompt:\n{describe_prompt(prompt)}\n\nAnswers:\n\n{shown}\n\n"
            "Your critique:",
        },
    ]


def _parsed(reply: str):
    return parse_reply(reply, ProposedPrompt)[0]


async def tiny_textgrad_loop(
    prompt: Prompt,
    train: list[Example],
    models: Models,
    caller: Caller,
    iterations: int = 5,
    batch_size: int = 4,
    seed: int = 0,
    concurrency: int = 1,
) -> LoopResult:
    result = LoopResult(best=prompt, caller=caller)
    try:
        for step, batch in enumerate(minibatches(train, batch_size, seed, iterations), start=1):
            current = result.best
            outputs = await caller.many(
                "predict", models.task, [current.render(e.inputs) for e in batch], concurrency
            )
            critique = await caller.ask(
                "gradient",
                models.gradient,
                critique_messages(current, list(zip(batch, outputs, strict=True))),
            )
            feedback = Feedback(prompt_id=current.id, text=critique.strip(), failures=len(batch))
            revised = _parsed(
                await caller.ask(
                    "apply", models.apply, apply_messages(current, feedback, []), json_mode=True
                )
            )
            if revised is None:
                result.decisions.append((step, 1, False, "revision not JSON"))
                continue
            cleaned = _parsed(
                await caller.ask("clean", models.apply, clean_messages(revised), json_mode=True)
            )
            candidate = check_candidate(current, cleaned or revised, [])
            if candidate.prompt is None:
                result.decisions.append((step, 1, False, candidate.rejected_because))
                continue
            result.best = candidate.prompt
            result.decisions.append((step, 1, True, "always accept"))
    except OutOfBudget as spent:
        result.stop_reason = str(spent)
    return result
