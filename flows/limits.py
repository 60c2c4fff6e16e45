"""Provider rate limits shared by every run on one Prefect server (global concurrency limits).

A limit named `llm-rpm-<provider>` holds `rpm` slots that drain at rpm/60 per second,
so all the runs that call one provider together stay under its requests-per-minute
budget, whichever process or worker they run in.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prefect.client.orchestration import get_client
from prefect.concurrency.asyncio import rate_limit


def limit_name(provider: str) -> str:
    return f"llm-rpm-{provider}"


async def provider_rate_limits(
    rpm_limits: dict[str, int],
) -> Callable[[str], Awaitable[None]] | None:
    """Create or update the limits; returns the hook the gateway awaits before each request."""
    if not rpm_limits:
        return None
    async with get_client() as client:
        for provider, rpm in rpm_limits.items():
            await client.upsert_global_concurrency_limit_by_name(
                limit_name(provider), limit=rpm, slot_decay_per_second=rpm / 60
            )
    return rate_limit_hook(rpm_limits)


def rate_limit_hook(rpm_limits: dict[str, int]) -> Callable[[str], Awaitable[None]] | None:
    """The hook alone, for limits a run has already created (e.g. in its Dask workers)."""
    if not rpm_limits:
        return None

    async def before_request(model: str) -> None:
        provider = model.split("/", 1)[0]
        if provider in rpm_limits:
            await rate_limit(limit_name(provider))

    return before_request
