"""What every step task declares: retries with backoff, and a cache over its inputs.

The cache key is the step's inputs and source, not the flow run, so an identical
run (or a resumed one) gets the step's persisted result back without a call.
`label` only names the task run and is left out of the key.

A pure step (no LLM call of its own) is retried but neither cached nor persisted:
running it again costs less than hashing its inputs and storing its result, and a
rerun's LLM calls are served by the gateway's call cache anyway.
"""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE
from prefect.tasks import exponential_backoff

from prompt_descent.errors import BudgetExhausted, UserError
from prompt_descent.runtime.interrupt import Interrupted


async def _worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """A spent budget, a Ctrl-C or a user mistake will fail the same way again."""
    error = await state.aresult(raise_on_failure=False)
    return not isinstance(error, BudgetExhausted | Interrupted | UserError)


RETRY_OPTIONS: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": _worth_retrying,
}
STEP_OPTIONS: dict[str, Any] = {
    **RETRY_OPTIONS,
    "cache_policy": (INPUTS + TASK_SOURCE) - "label",
    "persist_result": True,
}
PURE_STEP_OPTIONS: dict[str, Any] = {
    **RETRY_OPTIONS,
    "cache_policy": NO_CACHE,
    "persist_result": False,
}
