"""A scripted model served as a litellm provider, for tests and benchmarks.

The script is a plain function of the conversation, so a test decides every
completion and every run of the same script sees the same trajectory. Token
usage is counted in words, which is enough to check that usage is recorded.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

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
        self._lock = threading.Lock()

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
        if self.latency_s:
            time.sleep(self.latency_s)
        return self._respond(model, messages)

    async def acompletion(self, model: str, messages: list, *args: Any, **kwargs: Any):  # type: ignore[override]
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return self._respond(model, messages)
