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
from prompt_descent.core.config import Budget
from prompt_descent.core.datasets import load_examples
from prompt_descent.features.qa import (
    ExpandedQA,
    ExpandRequest,
    ExpandSummary,
    check_request,
    expand,
    questions_to_reword,
    save_expanded_qa,
    text_source,
    write_output,
)
from prompt_descent.features.registry import DEFAULT_STORE
from prompt_descent.runtime.lifecycle import OpenRun, recorded_run
from prompt_descent.storage.store import Store
from tasks.options import named
from tasks.qa import qa_pairs, rephrase

ONCE_PER_TEXT = "since each text is expanded once, under an id made from it (or give --id)"


@flow(name="expand_qa", flow_run_name="expand_qa {request.qa_prompt}")
async def expand_qa(
    request: ExpandRequest,
    store: str | Path = DEFAULT_STORE,
    concurrency: int = 4,
    budget: Budget | None = None,
    run_id: str | None = None,
) -> ExpandSummary:
    started = time.monotonic()
    the_store = Store(store)
    qa, reword = check_request(request, the_store)
    examples = load_examples(text_source(request), ONCE_PER_TEXT)
    run_id = run_id or new_run_id("expand-qa")
    rows: list[ExpandedQA] = []
    config = request.model_dump() | {
        "qa_prompt": f"{qa.name} v{qa.version}",
        "rephrase_prompt": f"{reword.name} v{reword.version}",
    }
    async with recorded_run(
        the_store, run_id, "expand_qa", "expand_qa", config, budget=budget
    ) as opened:
        gateway = opened.gateway
        stop_above = request.max_failed_fraction
        pairs = await named(qa_pairs, f"qa pairs {qa.name}")(
            qa.prompt, examples, qa.settings, concurrency, stop_above
        )
        the_store.save_step(run_id, prompts=[qa.prompt], calls=gateway.drain())
        pending = questions_to_reword(pairs)
        reworded = await named(rephrase, f"rephrase {reword.name}")(
            reword.prompt, pending, reword.settings, concurrency, stop_above
        )
        the_store.save_step(run_id, prompts=[reword.prompt], calls=gateway.drain())
        rows = expand(pairs, reworded)
        save_expanded_qa(the_store, run_id, rows)
        if request.output is not None:
            write_output(run_id, rows, request.output)
    summary = _summary(opened, len(examples), rows, request.output, started)
    get_run_logger().info(
        "%d texts -> %d rows (%d with an error)", summary.texts, summary.rows, summary.failed
    )
    return summary


def _summary(
    run: OpenRun, texts: int, rows: list[ExpandedQA], output: str | None, started: float
) -> ExpandSummary:
    return ExpandSummary(
        run_id=run.run_id,
        status=run.status,
        stop_reason=run.stop_reason,
        texts=texts,
        rows=len(rows),
        failed=sum(1 for row in rows if row.error),
        output=output if rows else None,
        usage=run.gateway.usage.model_copy(),
        seconds=time.monotonic() - started,
    )
