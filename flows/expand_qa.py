"""expand_qa: texts -> QA pairs -> reworded questions, with two registered prompts.

The QA prompt (placeholder {text}) must reply {"pairs": [{"question", "answer"}]};
the rephrase prompt (placeholder {question}) must reply {"rephrasings": [3 strings]}.
Both run with the model and sampling settings they were registered with. Rows go to
DuckDB (`expanded_qa`) and, if asked, to a JSONL or Parquet file; a record whose reply
never parsed is kept there with its error. In async code, await this flow directly;
`prompt_descent.expand_qa` is the synchronous wrapper.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger

from flows.optimize import new_run_id
from prompt_descent.core.config import Budget, Example
from prompt_descent.core.datasets import load_examples
from prompt_descent.features.qa import (
    QA_PLACEHOLDER,
    REPHRASE_PLACEHOLDER,
    ExpandedQA,
    ExpandSummary,
    expand,
    output_format,
    questions_to_reword,
    registered_prompt,
    save_expanded_qa,
    text_source,
    write_output,
)
from prompt_descent.features.registry import DEFAULT_STORE, RegisteredPrompt
from prompt_descent.runtime.lifecycle import OpenRun, recorded_run
from prompt_descent.storage.store import Store
from tasks.qa import qa_pairs, rephrase


def prepare_expansion(
    texts: str | Path,
    qa_prompt_name: str,
    rephrase_prompt_name: str,
    store: Store,
    output: str | Path | None,
    text_column: str = "text",
    id_column: str | None = None,
    database: str | None = None,
) -> tuple[list[Example], RegisteredPrompt, RegisteredPrompt]:
    """The texts and both registered prompts, or a UserError before any flow run or call."""
    output_format(output)
    examples = load_examples(text_source(texts, text_column, id_column, database))
    qa = registered_prompt(qa_prompt_name, QA_PLACEHOLDER, store)
    reword = registered_prompt(rephrase_prompt_name, REPHRASE_PLACEHOLDER, store)
    return examples, qa, reword


@flow(name="expand_qa", flow_run_name="expand_qa {qa_prompt_name}")
async def expand_qa(
    texts: str | Path,
    qa_prompt_name: str = "qa-pairs",
    rephrase_prompt_name: str = "rephrase-question",
    store: str | Path = DEFAULT_STORE,
    output: str | Path | None = None,
    text_column: str = "text",
    id_column: str | None = None,
    database: str | None = None,
    concurrency: int = 4,
    budget: Budget | None = None,
    run_id: str | None = None,
) -> ExpandSummary:
    """`texts`: a JSONL/CSV/Parquet file with a `text_column`, or a DuckDB query
    (run against `database`, in memory if None)."""
    started = time.monotonic()
    the_store = Store(store)
    examples, qa, reword = prepare_expansion(
        texts,
        qa_prompt_name,
        rephrase_prompt_name,
        the_store,
        output,
        text_column,
        id_column,
        database,
    )
    run_id = run_id or new_run_id("expand-qa")
    rows: list[ExpandedQA] = []
    config = {
        "texts": str(texts),
        "qa_prompt": f"{qa.name} v{qa.version}",
        "rephrase_prompt": f"{reword.name} v{reword.version}",
        "output": str(output) if output else None,
    }
    async with recorded_run(
        the_store, run_id, "expand_qa", "expand_qa", config, budget=budget
    ) as opened:
        gateway = opened.gateway
        pairs = await qa_pairs(qa.prompt, examples, qa.settings, concurrency, label=qa.name)
        the_store.save_step(run_id, prompts=[qa.prompt], calls=gateway.drain())
        pending = questions_to_reword(pairs)
        reworded = await rephrase(
            reword.prompt, pending, reword.settings, concurrency, label=reword.name
        )
        the_store.save_step(run_id, prompts=[reword.prompt], calls=gateway.drain())
        rows = expand(pairs, reworded)
        save_expanded_qa(the_store, run_id, rows)
        if output is not None:
            write_output(run_id, rows, output)
    summary = _summary(opened, len(examples), rows, output, started)
    get_run_logger().info(
        "%d texts -> %d rows (%d with an error)", summary.texts, summary.rows, summary.failed
    )
    return summary


def _summary(
    run: OpenRun, texts: int, rows: list[ExpandedQA], output: str | Path | None, started: float
) -> ExpandSummary:
    return ExpandSummary(
        run_id=run.run_id,
        status=run.status,
        stop_reason=run.stop_reason,
        texts=texts,
        rows=len(rows),
        failed=sum(1 for row in rows if row.error),
        output=str(output) if output is not None and rows else None,
        usage=run.gateway.usage.model_copy(),
        seconds=time.monotonic() - started,
    )
