"""The one gateway to litellm: call identity, the call cache, budgets, usage and cost.

A call is identified by (model, messages, sampling params). The gateway of a run
is primed with every successful call already in the store, so the same call is
never paid twice, within a run or across runs. Retries with backoff are litellm's
own (`num_retries`); a call that still fails comes back as a record with its
error, and only systemic faults (unknown model, bad credentials) raise.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Sequence
from typing import Any

import litellm
from litellm.llms.custom_llm import CustomLLM
from litellm.utils import custom_llm_setup

from prompt_descent.config import Budget, ModelSettings
from prompt_descent.errors import BudgetExhausted, ModelError
from prompt_descent.records import CallRecord, Usage

litellm.telemetry = False
litellm.suppress_debug_info = True

NUM_RETRIES = 3
JSON_MODE = {"type": "json_object"}

# Errors that say the model can never answer, so retrying or scoring 0 would hide them.
SYSTEMIC_ERRORS: tuple[type[Exception], ...] = (
    litellm.exceptions.AuthenticationError,
    litellm.exceptions.NotFoundError,
    litellm.exceptions.PermissionDeniedError,
    ModelError,
)


def register_provider(name: str, handler: CustomLLM) -> None:
    """Make `name/…` models resolve to `handler` (replacing an earlier handler of that name)."""
    litellm.custom_provider_map = [
        item for item in litellm.custom_provider_map if item["provider"] != name
    ] + [{"provider": name, "custom_handler": handler}]
    custom_llm_setup()


def call_key(model: str, messages: Sequence[dict[str, Any]], params: dict[str, Any]) -> str:
    identity = json.dumps({"model": model, "messages": messages, "params": params}, sort_keys=True)
    return hashlib.sha256(identity.encode()).hexdigest()


def _cost(response: Any) -> float:
    try:
        return float(litellm.completion_cost(completion_response=response) or 0.0)
    except Exception:  # litellm raises for models without a price; those cost nothing known
        return 0.0


def _systemic(error: Exception) -> bool:
    if isinstance(error, SYSTEMIC_ERRORS):
        return True
    text = str(error)
    return isinstance(error, litellm.exceptions.BadRequestError) and (
        "LLM Provider NOT provided" in text or "ModelError" in text
    )


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}"[:500]


class Gateway:
    """The calls of one run: cache, budget, usage, and the journal the flow persists."""

    def __init__(self, budget: Budget | None = None, cache: dict[str, CallRecord] | None = None):
        self.budget = budget or Budget()
        self._cache: dict[str, CallRecord] = dict(cache or {})
        self._journal: list[CallRecord] = []
        self._lock = threading.Lock()
        self._in_flight = 0
        self._started = time.monotonic()
        self.usage = Usage()

    # -- budget -------------------------------------------------------------

    def exhausted_because(self) -> str | None:
        """Why no further call may be issued, or None."""
        b, u = self.budget, self.usage
        if b.max_llm_calls is not None and u.calls + self._in_flight >= b.max_llm_calls:
            return f"budget: max_llm_calls={b.max_llm_calls} reached"
        if b.max_tokens is not None and u.tokens >= b.max_tokens:
            return f"budget: max_tokens={b.max_tokens} reached ({u.tokens} used)"
        if b.max_cost_usd is not None and u.cost_usd >= b.max_cost_usd:
            return f"budget: max_cost_usd={b.max_cost_usd} reached (${u.cost_usd:.4f} spent)"
        if b.max_seconds is not None and time.monotonic() - self._started >= b.max_seconds:
            return f"budget: max_seconds={b.max_seconds} reached"
        return None

    def _reserve(self) -> None:
        with self._lock:
            reason = self.exhausted_because()
            if reason:
                raise BudgetExhausted(reason)
            self._in_flight += 1

    def _settle(self, record: CallRecord) -> None:
        with self._lock:
            self._in_flight -= 1
            self.usage.add(record)
            self._journal.append(record)
            if record.error is None:
                self._cache[record.key] = record

    def drain(self) -> list[CallRecord]:
        """The calls paid for since the last drain, for the flow to persist."""
        with self._lock:
            journal, self._journal = self._journal, []
        return journal

    # -- calls --------------------------------------------------------------

    async def complete(
        self,
        role: str,
        settings: ModelSettings,
        messages: list[dict[str, str]],
        json_mode: bool = False,
    ) -> CallRecord:
        params: dict[str, Any] = settings.sampling()
        if json_mode:
            params["response_format"] = JSON_MODE
        key = call_key(settings.model, messages, params)
        cached = self._cache.get(key)
        if cached is not None:
            return cached.model_copy(update={"role": role, "cached": True})
        self._reserve()
        started = time.monotonic()
        record = CallRecord(
            key=key, role=role, model=settings.model, messages=messages, params=params
        )
        try:
            response = await litellm.acompletion(
                model=settings.model,
                messages=messages,
                num_retries=NUM_RETRIES,
                retry_strategy="exponential_backoff_retry",
                api_base=settings.api_base,
                api_key=os.environ.get(settings.api_key_env) if settings.api_key_env else None,
                **params,
            )
        except Exception as error:
            failed = record.model_copy(
                update={"error": _one_line(error), "latency_s": time.monotonic() - started}
            )
            self._settle(failed)
            if _systemic(error):
                raise ModelError(f"model '{settings.model}' ({role}): {_one_line(error)}") from None
            return failed
        content = response.choices[0].message.content or ""
        usage = getattr(response, "usage", None)
        record = record.model_copy(
            update={
                "response": content,
                "error": None if content.strip() else "empty completion",
                "prompt_tokens": getattr(usage, "prompt_tokens", 0) or 0,
                "completion_tokens": getattr(usage, "completion_tokens", 0) or 0,
                "cost_usd": _cost(response),
                "latency_s": time.monotonic() - started,
            }
        )
        self._settle(record)
        return record

    async def complete_many(
        self,
        role: str,
        settings: ModelSettings,
        conversations: Sequence[list[dict[str, str]]],
        concurrency: int,
        json_mode: bool = False,
    ) -> list[CallRecord]:
        """All conversations, at most `concurrency` in flight, results in input order."""
        limit = asyncio.Semaphore(concurrency)

        async def one(messages: list[dict[str, str]]) -> CallRecord:
            async with limit:
                return await self.complete(role, settings, messages, json_mode)

        try:
            async with asyncio.TaskGroup() as group:
                running = [group.create_task(one(m)) for m in conversations]
        except* (BudgetExhausted, ModelError) as failures:
            # the first stop reason is the one to report; the sibling calls were cancelled
            raise failures.exceptions[0] from None
        return [call.result() for call in running]


_active = Gateway()


def activate(gateway: Gateway) -> None:
    """Make `gateway` the one the steps of this process call through."""
    global _active
    _active = gateway


def gateway() -> Gateway:
    return _active
