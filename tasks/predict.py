"""Step 1, forward: the task model answers every example with the prompt."""

from __future__ import annotations

from prompt_descent.core.config import Example, ModelSettings, Prediction, Prompt
from prompt_descent.llm.gateway import active_gateway
from tasks.options import step


@step("predict")
async def predict(
    prompt: Prompt,
    examples: list[Example],
    settings: ModelSettings,
    concurrency: int,
) -> list[Prediction]:
    """One prediction per example, in order; a failed call is an empty output with its error."""
    calls = await active_gateway().complete_many(
        "predict", settings, [prompt.render(e.inputs) for e in examples], concurrency
    )
    return [
        Prediction(
            example_id=e.id,
            output=(c.response or "").strip(),
            error=c.error,
            truncated=c.error is None and c.completion_tokens >= settings.max_tokens,
        )
        for e, c in zip(examples, calls, strict=True)
    ]
