"""Prediction fan-out across processes or a cluster: `task_runner: dask`.

The run opens a prefect-dask `DaskTaskRunner` (a local cluster of worker processes,
or the scheduler at `dask.address`), and its gateway sends each fan-out of at least
`dask.min_calls` uncached calls there, split into shards: one Prefect task run per
shard, made by a private gateway in the worker (same retries, and the rate limits the
run created; no cache, no budget).
What has to stay in one place stays in the run's gateway: the cache (only uncached
calls are shipped), the budget (a shard's calls are reserved before it goes), usage,
the journal and the store.
"""

from __future__ import annotations

import asyncio
import importlib
import socket
from urllib.parse import urlsplit

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.limits import rate_limit_hook
from prompt_descent.core.config import DaskSettings, RetrySettings, RunConfig
from prompt_descent.core.results import CallRecord
from prompt_descent.errors import UserError
from prompt_descent.llm.gateway import Gateway, Request

CONNECT_SECONDS = 5.0
SHARDS_PER_WORKER = 2  # one shard per worker slot would leave it idle behind a slow shard


@task(name="call shard", task_run_name="{request.role} shard {shard}", cache_policy=NO_CACHE)
async def call_shard(
    request: Request,
    conversations: list[list[dict[str, str]]],
    concurrency: int,
    retry: RetrySettings,
    rpm_limits: dict[str, int],
    shard: str = "",
) -> list[CallRecord]:
    gateway = Gateway(
        # the run's gateway judges the failed fraction of the whole fan-out, not of a shard
        retry=retry.model_copy(update={"max_failed_fraction": 1.0}),
        before_request=rate_limit_hook(rpm_limits),
    )
    return await gateway.complete_many(
        request.role,
        request.settings,
        conversations,
        concurrency,
        request.json_mode,
        request.response_format,
    )


def _import_the_gateway() -> None:
    importlib.import_module("prompt_descent.llm.gateway")


class DaskFanOut:
    """The run's Dask task runner, as the gateway's `remote`; `close()` shuts it down."""

    def __init__(
        self, settings: DaskSettings, concurrency: int, rpm_limits: dict[str, int]
    ) -> None:
        from prefect_dask import DaskTaskRunner  # an optional extra, checked by check_task_runner

        self.settings = settings
        self.concurrency = concurrency
        self.rpm_limits = rpm_limits
        if settings.address:
            self.runner = DaskTaskRunner(address=settings.address)
        else:
            self.runner = DaskTaskRunner(
                cluster_kwargs={"n_workers": settings.workers, "threads_per_worker": 1}
            )
        self.runner.__enter__()
        workers = self.runner.client.scheduler_info()["workers"]
        self.slots = max(1, sum(w["nthreads"] for w in workers.values()))  # shards at once
        # litellm and Prefect take seconds to import: not on the first shard's clock
        self._warming = [
            self.runner.client.submit(_import_the_gateway, workers=[address], pure=False)
            for address in workers
        ]

    def takes(self, calls: int) -> bool:
        return calls >= self.settings.min_calls

    async def complete(
        self, request: Request, conversations: list[list[dict[str, str]]], retry: RetrySettings
    ) -> list[CallRecord]:
        if not conversations:
            return []
        count = min(len(conversations), self.slots * SHARDS_PER_WORKER)
        size = -(-len(conversations) // count)
        shards = [conversations[i : i + size] for i in range(0, len(conversations), size)]
        # the run's concurrency bounds the calls in flight across all shards
        each = max(1, self.concurrency // min(len(shards), self.slots))
        futures = [
            self.runner.submit(
                call_shard,
                parameters={
                    "request": request,
                    "conversations": shard,
                    "concurrency": each,
                    "retry": retry,
                    "rpm_limits": self.rpm_limits,
                    "shard": f"{number}/{len(shards)}",
                },
            )
            for number, shard in enumerate(shards, start=1)
        ]
        done = await asyncio.gather(*(asyncio.to_thread(f.result) for f in futures))
        return [record for shard in done for record in shard]

    def close(self) -> None:
        self.runner.__exit__(None, None, None)


def check_task_runner(task_runner: str, settings: DaskSettings) -> None:
    """Before anything runs: prefect-dask is installed, and a configured scheduler answers."""
    if task_runner != "dask":
        return
    try:
        import prefect_dask  # noqa: F401
    except ImportError:
        raise UserError(
            "task_runner: dask needs prefect-dask, which is not installed: "
            "pip install 'prompt-descent[dask]'"
        ) from None
    if settings.address:
        found = urlsplit(
            settings.address if "://" in settings.address else f"tcp://{settings.address}"
        )
        try:
            socket.create_connection((found.hostname, found.port or 8786), CONNECT_SECONDS).close()
        except (OSError, ValueError) as error:
            raise UserError(
                f"dask.address {settings.address}: no Dask scheduler answers there ({error})"
            ) from None


def open_fan_out(config: RunConfig) -> DaskFanOut | None:
    if config.task_runner != "dask":
        return None
    return DaskFanOut(config.dask, config.concurrency, config.rpm_limits)
