"""What every step task declares: retries with backoff, a cache over its inputs, and a
clean end when the run is asked to stop inside it.

The cache key is the step's inputs and source, not the flow run, so an identical
run (or a resumed one) gets the step's persisted result back without a call. A task
run's name (`named`) is not an input: it is left out of the key.

A pure step (no LLM call of its own) is retried but neither cached nor persisted:
running it again costs less than hashing its inputs and storing its result, and a
rerun's LLM calls are served by the gateway's call cache anyway.

A stop the user asked for (a budget spent, a Ctrl-C) is not a failure: the step's task
run ends Completed, named "Stopped", with nothing stored under its cache key (a resume
with more budget runs it again), and `named` raises the stop in the flow, which closes
the run as stopped.

A step's result is stored with the number of LLM calls it took, so that a rerun served
from the result cache still counts those calls, as served from the cache.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from prefect import task
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE
from prefect.context import TaskRunContext
from prefect.states import Completed
from prefect.tasks import Task, exponential_backoff
from prefect.transactions import get_transaction

from prompt_descent.errors import BudgetExhausted, TooManyFailures, UserError
from prompt_descent.llm.gateway import active_gateway, counted_calls
from prompt_descent.runtime.interrupt import Interrupted

ASKED_STOPS = (BudgetExhausted, Interrupted)


async def _worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """A user mistake fails the same way again, and so do too many failed calls or replies:
    the gateway has retried each call already, and a reply that did not parse is served
    again from the call cache (asked-for stops never fail a step)."""
    error = await state.aresult(raise_on_failure=False)
    return not isinstance(error, UserError | TooManyFailures)


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

Params = ParamSpec("Params")
Result = TypeVar("Result")
StepFunction = Callable[Params, Awaitable[Result]]


@dataclass(frozen=True)
class StepStopped:
    """What a step's task run returns when the run was asked to stop inside it."""

    stop: BudgetExhausted | Interrupted


@dataclass(frozen=True)
class StepResult:
    """What a step's task run returns, and the result cache keeps."""

    value: Any
    calls: int  # LLM calls made for it, paid or from the call cache


def step(name: str, *, pure: bool = False) -> Callable[[StepFunction], Task]:
    """The step's function as a task named `name`, with the options above."""

    def decorate(function: StepFunction) -> Task:
        @functools.wraps(function)
        async def as_step(*args: Any, **kwargs: Any) -> Any:
            context = TaskRunContext.get()
            if context is None or context.task.fn is not as_step:
                # part of another step (`.fn`): that one counts the calls and ends Stopped
                return await function(*args, **kwargs)
            try:
                with counted_calls() as made:
                    value = await function(*args, **kwargs)
            except ASKED_STOPS as stop:
                get_transaction().write_on_commit = False
                return Completed(name="Stopped", message=str(stop), data=StepStopped(stop))
            return StepResult(value, made[0])

        options = PURE_STEP_OPTIONS if pure else STEP_OPTIONS
        return task(name=name, **options)(as_step)

    return decorate


def named(step: Task, run_name: str) -> Callable[..., Awaitable[Any]]:
    """Run `step` with its task run named `run_name` in the UI and the log, e.g. 'validate
    step 2 proposal 1' (taken as written, not as a format string of the step's parameters).
    A stop inside it is raised here, in the flow."""
    renamed = step.with_options(task_run_name=lambda: run_name)

    async def run(*args: Any, **kwargs: Any) -> Any:
        state = await renamed(*args, return_state=True, **kwargs)
        result = await state.aresult()
        if isinstance(result, StepStopped):
            raise result.stop
        if not isinstance(result, StepResult):  # cached before results carried their calls
            return result
        if state.name == "Cached" and result.calls:
            active_gateway().served_by_result_cache(result.calls)
        return result.value

    return run
