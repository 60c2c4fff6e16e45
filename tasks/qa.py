"""The expand_qa steps: QA pairs from texts, then rewordings of each question.

Each step is one coarse task over all its records, fanned out with asyncio; every
reply must parse into its shape (prompt_descent.llm.structured, one repair at most), and
a record that never parses comes back with its error instead of failing the batch,
unless more than `stop_above` of them do (then the step stops early: TooManyFailures).
"""

from __future__ import annotations

from prompt_descent.core.config import Example, ModelSettings, Prompt
from prompt_descent.features.qa import (
    QA_PLACEHOLDER,
    REPHRASE_PLACEHOLDER,
    QAPairs,
    Rephrasings,
    Rewording,
    TextPairs,
)
from prompt_descent.llm.structured import complete_structured_many
from tasks.options import step


@step("qa_pairs")
async def qa_pairs(
    prompt: Prompt,
    texts: list[Example],
    settings: ModelSettings,
    concurrency: int,
    stop_above: float | None = None,
) -> list[TextPairs]:
    results = await complete_structured_many(
        "qa",
        settings,
        [prompt.render({QA_PLACEHOLDER: t.inputs[QA_PLACEHOLDER]}) for t in texts],
        QAPairs,
        concurrency,
        stop_above,
    )
    return [
        TextPairs(text_id=t.id, pairs=r.value.pairs if r.value else [], error=r.error)
        for t, r in zip(texts, results, strict=True)
    ]


@step("rephrase")
async def rephrase(
    prompt: Prompt,
    pending: list[Rewording],
    settings: ModelSettings,
    concurrency: int,
    stop_above: float | None = None,
) -> list[Rewording]:
    results = await complete_structured_many(
        "rephrase",
        settings,
        [prompt.render({REPHRASE_PLACEHOLDER: p.question}) for p in pending],
        Rephrasings,
        concurrency,
        stop_above,
    )
    return [
        p.model_copy(
            update={"rephrasings": r.value.rephrasings if r.value else [], "error": r.error}
        )
        for p, r in zip(pending, results, strict=True)
    ]
