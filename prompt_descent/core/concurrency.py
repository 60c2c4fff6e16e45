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
    model) cancels the rest and is raised as itself; per-record failures are the work's
    own business.
    """
    limit = asyncio.Semaphore(concurrency)

    async def one(piece: Callable[[], Awaitable[T]]) -> T:
        async with limit:
            return await piece()

    try:
        async with asyncio.TaskGroup() as group:
            running = [group.create_task(one(piece)) for piece in work]
    except* stops as failures:
        # the first stop reason is the one to report; the sibling pieces were cancelled
        raise failures.exceptions[0] from None
    return [task.result() for task in running]
