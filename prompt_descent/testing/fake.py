"""A scripted model served as a litellm provider, for tests and benchmarks.

The script is a plain function of the conversation, so a test decides every
completion and every run of the same script sees the same trajectory. Token
usage is counted in words, which is enough to check that usage is recorded.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import litellm
from litellm.llms.custom_llm import CustomLLM

# (model name without the provider prefix, messages) -> completion text
Script = Callable[[str, list[dict[str, str]]], str]


class ScriptedModel(CustomLLM):
    """Answers every `fake/<name>` call with `script(name, messages)`."""

    def __init__(self, script: Script, latency_s: float = 0.0) -> None:
        super().__init__()
        self.script = script
        self.latency_s = latency_s
        self.calls: list[tuple[str, list[dict[str, str]]]] = []
        self.api_keys: set[str] = set()  # what credentials reached the provider
        self._lock = threading.Lock()

    def _note_key(self, kwargs: dict[str, Any]) -> None:
        if kwargs.get("api_key"):
            with self._lock:
                self.api_keys.add(kwargs["api_key"])

    def _respond(self, model: str, messages: list[dict[str, str]]) -> litellm.ModelResponse:
        with self._lock:
            self.calls.append((model, messages))
        text = self.script(model, messages)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        completion_tokens = len(text.split())
        return litellm.ModelResponse(
            model=f"fake/{model}",
            choices=[
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": text},
                }
            ],
            usage=litellm.Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            ),
        )

    def completion(self, model: str, messages: list, *args: Any, **kwargs: Any):  # type: ignore[override]
        self._note_key(kwargs)
        if self.latency_s:
            time.sleep(self.latency_s)
        return self._respond(model, messages)

    async def acompletion(self, model: str, messages: list, *args: Any, **kwargs: Any):  # type: ignore[override]
        self._note_key(kwargs)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return self._respond(model, messages)


def load_script(reference: str) -> Script:
    """The script named by 'module:function' (PROMPT_DESCENT_FAKE_SCRIPT uses this)."""
    module_name, _, function = reference.partition(":")
    if not module_name or not function:
        raise ValueError(f"expected 'module:function', got {reference!r}")
    script = getattr(importlib.import_module(module_name), function, None)
    if not callable(script):
        raise ValueError(f"{reference!r} is not a function of (model, messages)")
    return script


def serve_script_from_env(register: Callable[[str, CustomLLM], None]) -> None:
    """PROMPT_DESCENT_FAKE_SCRIPT=module:function serves that script as the `fake/...` models
    (each call taking PROMPT_DESCENT_FAKE_LATENCY seconds, default 0; with
    PROMPT_DESCENT_FAKE_RENDEZVOUS, see `_held_until_all_arrive`).

    A `prompt_descent.providers` plugin (pyproject.toml): the gateway calls it at import,
    so the flow runs a Prefect worker starts in their own processes get the scripted
    model too (demos and the deployment test).
    """
    reference = os.environ.get("PROMPT_DESCENT_FAKE_SCRIPT")
    if reference:
        latency = float(os.environ.get("PROMPT_DESCENT_FAKE_LATENCY", "0"))
        script = _loaded_on_first_call(reference)
        rendezvous = os.environ.get("PROMPT_DESCENT_FAKE_RENDEZVOUS")
        if rendezvous:
            script = _held_until_all_arrive(script, rendezvous)
        register("fake", ScriptedModel(script, latency))


def _loaded_on_first_call(reference: str) -> Script:
    """The script's module may import the gateway, which serves it: load it when first asked."""
    loaded: list[Script] = []

    def script(model: str, messages: list[dict[str, Any]]) -> str:
        if not loaded:
            loaded.append(load_script(reference))
        return loaded[0](model, messages)

    return script


def _held_until_all_arrive(script: Script, rendezvous: str, timeout_s: float = 120.0) -> Script:
    """PROMPT_DESCENT_FAKE_RENDEZVOUS=DIR:N holds each process's first call until N
    processes have made theirs, so that runs a test starts together really overlap: every
    one of them is past whatever it did before its first call before any call is answered."""
    directory, _, count = rendezvous.rpartition(":")
    if not directory or not count.isdigit():
        raise ValueError(f"expected PROMPT_DESCENT_FAKE_RENDEZVOUS=DIR:N, got {rendezvous!r}")
    arrivals, expected = Path(directory), int(count)
    arrived = threading.Event()
    lock = threading.Lock()

    def held(model: str, messages: list[dict[str, str]]) -> str:
        with lock:
            if not arrived.is_set():
                arrivals.mkdir(parents=True, exist_ok=True)
                (arrivals / str(os.getpid())).touch()
                deadline = time.monotonic() + timeout_s
                while (present := len(list(arrivals.iterdir()))) < expected:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"rendezvous {arrivals}: {expected} processes expected within "
                            f"{timeout_s:.0f} s, {present} arrived"
                        )
                    time.sleep(0.05)
                arrived.set()
        return script(model, messages)

    return held


FAULT_KINDS = (
    "rate_limit",
    "rate_limit_retry_after",
    "server_error",
    "unavailable",
    "timeout",
    "connection_reset",
    "empty",
    "truncated",
    "malformed_json",
)
# A refusal is final, not transient: not in the default schedule, whose runs must recover.
REFUSAL = "refusal"
REPAIR_MARKER = "not the JSON asked for"  # structured.repair_messages


class FaultyModel(ScriptedModel):
    """A scripted model whose calls fail on a seeded schedule, the way real providers do.

    Whether a call fails, and how, depends only on (seed, conversation, attempt), so
    two runs see the same faults. A fault hits only a conversation's first
    `faulty_attempts` attempts, so retries and repairs recover from every one: a run
    through faults must end exactly where the fault-free run ends. `injected` counts
    the faults by kind.
    """

    def __init__(
        self,
        script: Script,
        rate: float = 0.3,
        seed: int = 0,
        kinds: tuple[str, ...] = FAULT_KINDS,
        faulty_attempts: int = 2,
    ) -> None:
        super().__init__(script)
        self.rate, self.seed, self.kinds = rate, seed, kinds
        self.faulty_attempts = faulty_attempts
        self.attempts: dict[str, int] = {}
        self.injected: dict[str, int] = {}

    def _fault(self, messages: list[dict[str, str]]) -> str | None:
        conversation = repr(messages)
        with self._lock:
            attempt = self.attempts.get(conversation, 0)
            self.attempts[conversation] = attempt + 1
        if attempt >= self.faulty_attempts:
            return None
        chance = random.Random(f"{self.seed}|{conversation}|{attempt}")
        if chance.random() >= self.rate:
            return None
        wants_json = "JSON" in messages[0]["content"]
        kinds = [k for k in self.kinds if wants_json or k not in ("malformed_json", "truncated")]
        if REPAIR_MARKER in messages[-1]["content"]:
            # a repair is the last chance for a proposal: no content faults there
            kinds = [k for k in kinds if k not in ("malformed_json", "truncated", "empty")]
        if not kinds:
            return None
        kind = chance.choice(kinds)
        with self._lock:
            self.injected[kind] = self.injected.get(kind, 0) + 1
        return kind

    def _respond(self, model: str, messages: list[dict[str, str]]) -> litellm.ModelResponse:
        kind = self._fault(messages)
        if kind is None:
            return super()._respond(model, messages)
        raise_fault(kind, model)
        text = super()._respond(model, messages).choices[0].message.content
        faulty = {
            "empty": "",
            "truncated": text[: len(text) // 2],
            "malformed_json": "Sure! Here is the prompt: {system: oops",
            REFUSAL: "",
        }[kind]
        return litellm.ModelResponse(
            model=f"fake/{model}",
            choices=[
                {
                    "index": 0,
                    "finish_reason": {"truncated": "length", REFUSAL: "content_filter"}.get(
                        kind, "stop"
                    ),
                    "message": {"role": "assistant", "content": faulty},
                }
            ],
            usage=litellm.Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2),
        )


def raise_fault(kind: str, model: str) -> None:
    """Raise the litellm exception a provider fault of `kind` arrives as (if it raises)."""
    request = httpx.Request("POST", "https://fake.invalid/v1/chat/completions")
    where = {"llm_provider": "fake", "model": model}
    if kind == "rate_limit":
        raise litellm.RateLimitError(
            "429 Too Many Requests", **where, response=httpx.Response(429, request=request)
        )
    if kind == "rate_limit_retry_after":
        raise litellm.RateLimitError(
            "429 Too Many Requests",
            **where,
            response=httpx.Response(429, headers={"retry-after": "1"}, request=request),
        )
    if kind == "server_error":
        raise litellm.InternalServerError(
            "500 Internal Server Error", **where, response=httpx.Response(500, request=request)
        )
    if kind == "unavailable":
        raise litellm.ServiceUnavailableError(
            "503 Service Unavailable", **where, response=httpx.Response(503, request=request)
        )
    if kind == "timeout":
        raise litellm.Timeout("Request timed out", **where)
    if kind == "connection_reset":
        raise litellm.APIConnectionError("Connection reset by peer", **where)
