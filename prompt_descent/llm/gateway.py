"""The one gateway to litellm: call identity, the call cache, retries, budgets, usage and cost.

A call is identified by (model, messages, sampling params). The gateway of a run
is primed with every successful call already made into the store (and with the
journal of an interrupted attempt of the same run), so the same call is never paid
twice. Every settled call is appended to the run's journal file at once, so a run
killed mid-step loses no completed call.

Faults: rate limits, 5xx, timeouts, dropped connections and empty completions are
retried with exponential backoff and full jitter, waiting at least what a
Retry-After header asks. Refusals and other bad requests are recorded as failed
calls (the example scores 0). Only systemic faults (unknown model, bad
credentials) raise, and a step whose calls fail beyond the configured fraction
stops the run.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import hashlib
import json
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import litellm
from litellm.llms.custom_llm import CustomLLM
from litellm.utils import _get_retry_after_from_exception_header, custom_llm_setup
from pydantic import BaseModel, ConfigDict
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from prompt_descent.core.concurrency import fan_out
from prompt_descent.core.config import Budget, ModelSettings, RetrySettings
from prompt_descent.core.results import CallRecord, Usage
from prompt_descent.errors import BudgetExhausted, ModelError, TooManyFailures
from prompt_descent.llm.local import PROVIDER as LOCAL_PROVIDER
from prompt_descent.llm.local import provider as local_provider
from prompt_descent.llm.local import weights as local_weights
from prompt_descent.runtime import interrupt

litellm.telemetry = False
litellm.suppress_debug_info = True
JSON_MODE = {"type": "json_object"}

local_provider.register()


class EmptyCompletion(Exception):
    """The provider answered with no text; asking again can help."""


# Worth asking again: the same request may well succeed a moment later.
RETRYABLE: tuple[type[Exception], ...] = (
    litellm.exceptions.RateLimitError,
    litellm.exceptions.Timeout,
    litellm.exceptions.APIConnectionError,
    litellm.exceptions.InternalServerError,
    litellm.exceptions.ServiceUnavailableError,
    litellm.exceptions.BadGatewayError,
    EmptyCompletion,
)
# The model can never answer: retrying or scoring 0 would hide the mistake.
SYSTEMIC: tuple[type[Exception], ...] = (
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


def check_model(settings: ModelSettings, field: str | None = None) -> None:
    """Fail before anything is recorded when a model can never be called.

    `field` is where the model was given (e.g. 'models.task.model'); the error names it.
    """
    provider = settings.model.split("/", 1)[0]
    if provider == LOCAL_PROVIDER:
        try:
            local_weights.resolve(settings.model)
        except ModelError as error:
            if error.file is not None or error.field is not None or field is None:
                raise
            raise ModelError(str(error), field=field) from None
        return
    if any(item["provider"] == provider for item in litellm.custom_provider_map):
        return
    try:
        litellm.get_llm_provider(settings.model)
    except Exception:  # litellm's BadRequestError, with a banner of its whole provider list
        raise ModelError(
            f"unknown model '{settings.model}': litellm has no provider for it; write it as "
            "provider/model, e.g. openai/gpt-4o-mini, ollama/llama3.1 or local/qwen2.5-coder-"
            "1.5b-instruct",
            field=field,
        ) from None


def check_api_base(settings: ModelSettings, field: str | None = None) -> None:
    """Fail before any call when `api_base`, its ${VAR}s filled in, is no http(s) URL.

    The message never shows the value: a URL from the environment may hold credentials.
    """
    if not settings.api_base:
        return
    url = os.path.expandvars(settings.api_base)
    unset = re.search(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", url)
    if unset:
        raise ModelError(
            f"api_base uses the environment variable {unset.group(1)}, which is not set; "
            "set it, or write the URL",
            field=field,
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ModelError(
            "api_base is not an http(s) URL (its value is not shown: it may hold "
            "credentials); write it as http://host:port/v1",
            field=field,
        )


def call_key(model: str, messages: Sequence[dict[str, Any]], params: dict[str, Any]) -> str:
    identity = json.dumps({"model": model, "messages": messages, "params": params}, sort_keys=True)
    return hashlib.sha256(identity.encode()).hexdigest()


def request_params(
    settings: ModelSettings, json_mode: bool, response_format: dict[str, Any] | None
) -> dict[str, Any]:
    """The sampling params of a call; `response_format` overrides `json_mode`."""
    params: dict[str, Any] = settings.sampling()
    if response_format is not None:
        params["response_format"] = response_format
    elif json_mode:
        params["response_format"] = JSON_MODE
    return params


class Request(BaseModel):
    """What every call of a fan-out sends besides its messages: its role, the model and
    sampling, and the reply format."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: str
    settings: ModelSettings
    json_mode: bool = False
    response_format: dict[str, Any] | None = None

    def params(self) -> dict[str, Any]:
        return request_params(self.settings, self.json_mode, self.response_format)


class RemoteCalls(Protocol):
    """Makes a fan-out's uncached calls elsewhere (e.g. on a Dask cluster) and returns
    their records in order; the run's gateway keeps the cache, budget, usage and journal."""

    def takes(self, calls: int) -> bool: ...

    async def complete(
        self, request: Request, conversations: list[list[dict[str, str]]], retry: RetrySettings
    ) -> list[CallRecord]: ...


def _cost(response: Any) -> float:
    """litellm prices every response it returns; a model without a price costs nothing known."""
    return float(getattr(response, "_hidden_params", {}).get("response_cost") or 0.0)


def _systemic(error: Exception) -> bool:
    if isinstance(error, SYSTEMIC):
        return True
    return isinstance(error, litellm.exceptions.BadRequestError) and (
        "LLM Provider NOT provided" in str(error)
    )


def _retryable(error: BaseException) -> bool:
    if isinstance(error, RETRYABLE):
        return True
    status = getattr(error, "status_code", None)
    return (
        isinstance(error, litellm.exceptions.APIError)
        and isinstance(status, int)
        and (status >= 500 or status == 429)
    )


def _retry_after(error: BaseException | None) -> float:
    """Seconds a 429/503 asked us to wait (Retry-After), or 0."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None) or getattr(error, "headers", None)
    if not headers:
        return 0.0
    try:
        return max(float(_get_retry_after_from_exception_header(headers) or 0), 0.0)
    except (TypeError, ValueError):
        return 0.0


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}"[:500]


# Set while the calls made are not charged to the budget (see `outside_budget`).
_outside_budget: ContextVar[bool] = ContextVar("outside_budget", default=False)


@contextmanager
def outside_budget() -> Iterator[None]:
    """The calls made inside are paid, recorded and in the usage as any other, but not
    charged to the budget: `budget.covers: optimization` scores the test split so."""
    token = _outside_budget.set(True)
    try:
        yield
    finally:
        _outside_budget.reset(token)


# The calls of the step being run, where it runs (see `counted_calls`).
_step_calls: ContextVar[list[int] | None] = ContextVar("step_calls", default=None)


@contextmanager
def counted_calls() -> Iterator[list[int]]:
    """Counts the calls made inside, paid or served from the cache, in this context and
    the coroutines it starts (not in concurrent steps): the calls a step's result stands
    for, when a rerun gets that result from Prefect's result cache instead."""
    counter = [0]
    token = _step_calls.set(counter)
    try:
        yield counter
    finally:
        _step_calls.reset(token)


def _count_in_step() -> None:
    counter = _step_calls.get()
    if counter is not None:
        counter[0] += 1


class Gateway:
    """The calls of one run: cache, retries, budget, usage, and the journal."""

    def __init__(
        self,
        budget: Budget | None = None,
        cache: Mapping[str, CallRecord] | None = None,
        retry: RetrySettings | None = None,
        journal: Path | None = None,
        spent: Usage | None = None,
        before_request: Callable[[str], Awaitable[None]] | None = None,
        remote: RemoteCalls | None = None,
    ) -> None:
        self.budget = budget or Budget()
        self.retry = retry or RetrySettings()
        self.journal = journal
        self.before_request = before_request  # e.g. a shared rate limit, awaited per attempt
        self.remote = remote
        self.usage = (spent or Usage()).model_copy()
        self.unbudgeted = Usage()  # the part of `usage` made outside_budget()
        self._stored: Mapping[str, CallRecord] = cache or {}  # read, never copied: it is large
        self._cache: dict[str, CallRecord] = {}  # this run's calls
        self._unsaved: list[CallRecord] = []
        self._lock = threading.Lock()
        self._in_flight = 0
        self._started = time.monotonic()
        if journal is not None:
            journal.parent.mkdir(parents=True, exist_ok=True)

    # -- budget -------------------------------------------------------------

    def exhausted_because(self) -> str | None:
        """Why no further call may be issued, or None."""
        b, u = self.budget, self.usage.minus(self.unbudgeted)
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
        interrupt.check()
        if _outside_budget.get():
            return
        with self._lock:
            reason = self.exhausted_because()
            if reason:
                raise BudgetExhausted(reason)
            self._in_flight += 1

    def _release(self) -> None:
        """A reserved call that ends with nothing to record (dropped by an interrupt)."""
        if not _outside_budget.get():
            with self._lock:
                self._in_flight -= 1

    def _settle(self, record: CallRecord) -> None:
        with self._lock:
            if _outside_budget.get():
                self.unbudgeted.add(record)
            else:
                self._in_flight -= 1
            self.usage.add(record)
            _count_in_step()
            self._unsaved.append(record)
            if record.error is None:
                self._cache[record.key] = record
            if self.journal is not None:
                with self.journal.open("a", encoding="utf-8") as journal:
                    journal.write(record.model_dump_json() + "\n")

    def drain(self) -> list[CallRecord]:
        """The calls paid for since the last drain, for the flow to persist."""
        with self._lock:
            unsaved, self._unsaved = self._unsaved, []
        return unsaved

    # -- calls --------------------------------------------------------------

    def _wait(self, state: RetryCallState) -> float:
        backoff = wait_random_exponential(
            multiplier=self.retry.base_seconds, max=self.retry.max_wait_seconds
        )(state)
        asked = _retry_after(state.outcome.exception() if state.outcome else None)
        return max(backoff, min(asked, self.retry.max_wait_seconds))

    async def _ask(
        self, settings: ModelSettings, messages: list[dict[str, str]], params: dict[str, Any]
    ) -> Any:
        if self.before_request is not None:
            await self.before_request(settings.model)
        interrupt.check()
        response = await litellm.acompletion(
            model=settings.model,
            messages=messages,
            num_retries=0,
            api_base=os.path.expandvars(settings.api_base) if settings.api_base else None,
            api_key=os.environ.get(settings.api_key_env) if settings.api_key_env else None,
            **params,
        )
        choice = response.choices[0]
        if not (choice.message.content or "").strip() and choice.finish_reason != "content_filter":
            raise EmptyCompletion(f"empty completion (finish_reason={choice.finish_reason})")
        return response

    def _served_from_cache(
        self, key: str, role: str, messages: list[dict[str, str]], params: dict[str, Any]
    ) -> CallRecord | None:
        cached = self._cache.get(key) or self._stored.get(key)
        if cached is None:
            return None
        update = {"role": role, "messages": messages, "params": params, "cached": True}
        served = cached.model_copy(update=update)
        with self._lock:
            self.usage.add(served)  # counted as served from the cache, not as paid
        _count_in_step()
        return served

    def served_by_result_cache(self, calls: int) -> None:
        """A step's result came from Prefect's result cache: the calls it stands for were
        served from a cache too, though none reached this gateway."""
        with self._lock:
            self.usage.cached_calls += calls

    async def complete(
        self,
        role: str,
        settings: ModelSettings,
        messages: list[dict[str, str]],
        json_mode: bool = False,
        response_format: dict[str, Any] | None = None,
    ) -> CallRecord:
        """One call. `response_format` (a JSON-able dict such as litellm's json_schema form)
        overrides `json_mode`; either way it is part of the call's identity."""
        params = request_params(settings, json_mode, response_format)
        key = call_key(settings.model, messages, params)
        cached = self._served_from_cache(key, role, messages, params)
        if cached is not None:
            return cached
        self._reserve()
        started = time.monotonic()
        record = CallRecord(
            key=key, role=role, model=settings.model, messages=messages, params=params
        )
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(lambda e: _retryable(e) and not interrupt.requested()),
                wait=self._wait,
                stop=stop_after_attempt(self.retry.attempts),
                reraise=True,
            ):
                with attempt:
                    response = await self._ask(settings, messages, params)
        except Exception as error:
            if interrupt.requested():  # not the call's failure: it was stopped, or never made
                self._release()
                raise interrupt.Interrupted(interrupt.REASON) from None
            failed = record.model_copy(
                update={"error": _one_line(error), "latency_s": time.monotonic() - started}
            )
            self._settle(failed)
            if _systemic(error):
                raise ModelError(f"model '{settings.model}' ({role}): {_one_line(error)}") from None
            return failed
        choice = response.choices[0]
        usage = getattr(response, "usage", None)
        refused = choice.finish_reason == "content_filter"
        record = record.model_copy(
            update={
                "response": choice.message.content or "",
                "error": "refused by the provider's content filter" if refused else None,
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
        response_format: dict[str, Any] | None = None,
    ) -> list[CallRecord]:
        """All conversations, at most `concurrency` in flight, results in input order.

        Raises TooManyFailures when more than the configured fraction of them failed.
        """
        if self.remote is not None and self.remote.takes(len(conversations)):
            request = Request(
                role=role, settings=settings, json_mode=json_mode, response_format=response_format
            )
            calls = await self._complete_remotely(request, conversations)
        else:
            calls = await fan_out(
                [
                    partial(self.complete, role, settings, m, json_mode, response_format)
                    for m in conversations
                ],
                concurrency,
            )
        failed = [c for c in calls if c.error]
        if calls and len(failed) / len(calls) > self.retry.max_failed_fraction:
            raise TooManyFailures(
                f"{len(failed)} of {len(calls)} {role} calls failed (more than "
                f"{self.retry.max_failed_fraction:.0%}); last error: {failed[-1].error}"
            )
        return calls

    async def _complete_remotely(
        self, request: Request, conversations: Sequence[list[dict[str, str]]]
    ) -> list[CallRecord]:
        """Cache hits here; the rest reserved against the budget, made remotely, settled here
        (journaled when they come back, so a run killed meanwhile pays them again)."""
        params = request.params()
        calls = [
            self._served_from_cache(
                call_key(request.settings.model, m, params), request.role, m, params
            )
            for m in conversations
        ]
        missing = [i for i, call in enumerate(calls) if call is None]
        reserved = 0
        try:
            for _ in missing:
                self._reserve()
                reserved += 1
            made = await self.remote.complete(
                request, [conversations[i] for i in missing], self.retry
            )
        except BaseException:
            for _ in range(reserved):
                self._release()
            raise
        for i, record in zip(missing, made, strict=True):
            self._settle(record)
            calls[i] = record
        return calls


def load_journal(path: Path) -> list[CallRecord]:
    """The calls an interrupted attempt of a run completed; a torn last line is skipped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(CallRecord.model_validate_json(line))
        except ValueError:
            continue
    return records


# Per flow run: asyncio copies the context into every task, so concurrent runs in one
# process each reach their own gateway. Steps called outside a run share `_unbound`.
_active: ContextVar[Gateway | None] = ContextVar("gateway", default=None)
_unbound = Gateway()


def activate(gateway: Gateway) -> None:
    """Make `gateway` the one the steps of the current run call through."""
    _active.set(gateway)


def active_gateway() -> Gateway:
    return _active.get() or _unbound


def _register_plugin_providers() -> None:
    """Each installed `prompt_descent.providers` entry point is called with
    `register_provider`, in every process that imports the gateway: the flow runs a
    Prefect worker starts in their own processes too. The scripted `fake/...` models of
    the tests and the demo come this way (pyproject.toml)."""
    for plugin in entry_points(group="prompt_descent.providers"):
        plugin.load()(register_provider)


_register_plugin_providers()
