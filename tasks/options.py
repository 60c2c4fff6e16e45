"""What every step task declares: retries with backoff, and a cache over its inputs.

The cache key is the step's inputs and source, not the flow run, so an identical
run (or a resumed one) gets the step's persisted result back without a call. A task
run's name (`named`) is not an input: it is left out of the key.

A pure step (no LLM call of its own) is retried but neither cached nor persisted:
running it again costs less than hashing its inputs and storing its result, and a
rerun's LLM calls are served by the gateway's call cache anyway.
"""

from __future__ import annotations

from typing import Any, TypeVar

from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE
from prefect.tasks import Task, exponential_backoff

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
    "cache_policy": INPUTS + TASK_SOURCE,
    "persist_result": True,
}
PURE_STEP_OPTIONS: dict[str, Any] = {
    **RETRY_OPTIONS,
    "cache_policy": NO_CACHE,
    "persist_result": False,
}


StepTask = TypeVar("StepTask", bound=Task)


def named(step: StepTask, run_name: str) -> StepTask:
    """`step` with its task run named `run_name` in the UI and the log, e.g. 'validate step
    2 proposal 1'; taken as written, not as a format string of the step's parameters."""
    return step.with_options(task_run_name=lambda: run_name)
