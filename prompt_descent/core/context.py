"""Examples that do not fit the task model's context window: rejected, or cut to fit."""

from __future__ import annotations

import logging

import litellm

from prompt_descent.core.config import Example, ModelSettings, Prompt
from prompt_descent.errors import UserError
from prompt_descent.llm.local import PROVIDER, llamacpp

logger = logging.getLogger(__name__)
MAX_CUTS = 8


def context_window(model: str) -> int | None:
    """Input tokens the model accepts, or None where litellm does not know it."""
    if model.startswith(f"{PROVIDER}/"):
        return llamacpp.n_ctx()
    try:
        return litellm.get_model_info(model).get("max_input_tokens")
    except Exception:  # unknown to litellm's model map: no limit we can check
        return None


def prompt_tokens(prompt: Prompt, example: Example, settings: ModelSettings) -> int:
    return litellm.token_counter(model=settings.model, messages=prompt.render(example.inputs))


def _cut(example: Example, share: float) -> Example:
    """The example with its longest input shortened to `share` of its length."""
    longest = max(example.inputs, key=lambda name: len(example.inputs[name]))
    text = example.inputs[longest]
    return example.model_copy(
        update={"inputs": {**example.inputs, longest: text[: int(len(text) * share)]}}
    )


def fit_to_context(
    prompt: Prompt, examples: list[Example], settings: ModelSettings, policy: str
) -> list[Example]:
    """`examples` with room left for the answer; too long ones rejected or cut (`policy`)."""
    window = context_window(settings.model)
    if window is None:
        return examples
    room = window - settings.max_tokens
    fitted = []
    for example in examples:
        used = prompt_tokens(prompt, example, settings)
        if used <= room:
            fitted.append(example)
            continue
        if policy == "reject":
            raise UserError(
                f"example '{example.id}' needs {used} prompt tokens but {settings.model} has "
                f"room for {room} ({window} minus max_tokens {settings.max_tokens}); shorten it, "
                "or set long_inputs: truncate",
                file=example.source,
                field="long_inputs",
            )
        cut = example
        for _ in range(MAX_CUTS):
            cut = _cut(cut, room / used * 0.95)
            used = prompt_tokens(prompt, cut, settings)
            if used <= room:
                break
        logger.warning(
            "%s: example '%s' cut to %d tokens to fit %s",
            example.source,
            example.id,
            used,
            settings.model,
        )
        fitted.append(cut)
    return fitted
