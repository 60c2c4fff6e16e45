"""The one way a recorded run opens and closes.

Every flow that records a run (optimize, evaluate, expand-qa, running a registered
prompt) does its work inside `recorded_run`. It starts the run row, replays the
journal of an earlier attempt, and activates the run's gateway; whatever happens
inside, it saves the calls and closes the run as completed, stopped or failed. A run
whose process ended is never left `running`, short of a SIGKILL (and then `resume`
finishes it from the journal).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prompt_descent.core.config import Budget, RetrySettings
from prompt_descent.errors import RunStopped, TooManyFailures
from prompt_descent.llm.gateway import Gateway, activate, load_journal
from prompt_descent.runtime import interrupt
from prompt_descent.storage.store import Store


@dataclass
class OpenRun:
    """A run being recorded: what the work inside `recorded_run` reads and sets."""

    run_id: str
    store: Store
    gateway: Gateway
    journal: Path | None
    status: str = "running"  # then completed, stopped or failed
    stop_reason: str | None = None

    @property
    def interrupted(self) -> bool:
        return self.status == "stopped" and self.stop_reason == interrupt.REASON


Close = Callable[[OpenRun], Awaitable[None]]


def journal_path(store: Store, run_id: str) -> Path:
    return store.path.parent / "journal" / f"{run_id}.jsonl"


def _logger() -> logging.Logger | logging.LoggerAdapter:
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("prompt_descent")


async def _end(run: OpenRun) -> None:
    run.store.save_step(run.run_id, prompts=[], calls=run.gateway.drain())
    run.store.end_run(run.run_id, run.status, run.stop_reason)


@asynccontextmanager
async def recorded_run(
    store: Store,
    run_id: str,
    name: str,
    mode: str,
    config: dict[str, Any],
    *,
    budget: Budget | None = None,
    retry: RetrySettings | None = None,
    journaled: bool = False,
    before_request: Callable[[str], Awaitable[None]] | None = None,
    close: Close = _end,
) -> AsyncIterator[OpenRun]:
    """Open run `run_id` (or reopen it: a resume), yield it, and close it.

    A stop (budget, Ctrl-C) ends the work inside and the run is `stopped`; any other
    exception marks it `failed` and is raised. `close` writes the run's last rows;
    by default its remaining calls and its status.
    """
    journal = journal_path(store, run_id) if journaled else None
    with store.session():
        if journal is not None:
            store.save_step(run_id, prompts=[], calls=load_journal(journal))
        store.start_run(run_id, name, mode, config)
        cache, spent = store.cached_calls(), store.run_usage(run_id)
    gateway = Gateway(budget, cache, retry, journal, spent=spent, before_request=before_request)
    activate(gateway)
    run = OpenRun(run_id=run_id, store=store, gateway=gateway, journal=journal)

    def quit_now() -> None:  # a second Ctrl-C: no time for `close`
        store.end_run(run_id, "stopped", f"{interrupt.REASON}, twice: quit at once")

    with interrupt.armed(run_id, quit_now):
        try:
            yield run
            run.status = "completed"
        except RunStopped as stopped:
            run.status, run.stop_reason = "stopped", str(stopped)
            level = logging.WARNING if isinstance(stopped, TooManyFailures) else logging.INFO
            _logger().log(level, "stopping: %s; keeping what the run has so far", stopped)
        except BaseException as failure:
            run.status, run.stop_reason = "failed", f"{type(failure).__name__}: {failure}"
            raise
        finally:
            await close(run)
