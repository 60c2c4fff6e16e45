"""One fan-out for every batch of awaitable work: bounded, in order, stopping as one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from prompt_descent.errors import ModelError, RunStopped

T = TypeVar("T")


async def fan_out(
    work: Sequence[Callable[[], Awaitable[T]]],
    concurrency: int,
    stops: tuple[type[BaseException], ...] = (RunStopped, ModelError),
) -> list[T]:
    """Run every piece of work, at most `concurrency` at once; results in input order.

    An exception of a `stops` type (by default a spent budget, a Ctrl-C or an unusable
    model) starts no further piece, lets the ones in flight finish, and is raised as
    itself; per-record failures are the work's own business. The pieces in flight are
    calls already paid for: finished, they are recorded and cached, so a resume does not
    pay them again (and a call cancelled inside litellm leaves its coroutine unawaited).
    """
    limit = asyncio.Semaphore(concurrency)
    stopped: list[BaseException] = []  # the first stop; later ones say the same

    async def one(piece: Callable[[], Awaitable[T]]) -> T | None:
        async with limit:
            if stopped:
                return None
            try:
                return await piece()
            except stops as stop:
                stopped.append(stop)
                return None

    async with asyncio.TaskGroup() as group:
        running = [group.create_task(one(piece)) for piece in work]
    if stopped:
        raise stopped[0]
    return [task.result() for task in running]
