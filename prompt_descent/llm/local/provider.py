"""litellm provider `local`: the embedded model behind `litellm.completion`, at zero cost."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import litellm
from litellm import CustomLLM, ModelResponse
from litellm.types.utils import Usage

from prompt_descent.errors import ModelError
from prompt_descent.llm.local import PROVIDER
from prompt_descent.llm.local.llamacpp import run_chat
from prompt_descent.llm.local.weights import MODELS


def _fill(model_response: ModelResponse, model: str, raw: dict[str, Any]) -> ModelResponse:
    name = model.removeprefix(f"{PROVIDER}/")
    _register_zero_cost(name)  # GGUF paths are priced on first use
    choice = raw["choices"][0]
    model_response.choices[0].message.content = choice["message"].get("content") or ""
    model_response.choices[0].finish_reason = choice.get("finish_reason") or "stop"
    usage = raw.get("usage") or {}
    model_response.usage = Usage(  # type: ignore[attr-defined]
        prompt_tokens=usage.get("prompt_tokens", 0),
        completion_tokens=usage.get("completion_tokens", 0),
        total_tokens=usage.get("total_tokens", 0),
    )
    model_response.model = f"{PROVIDER}/{name}"
    model_response.created = raw.get("created", model_response.created)
    return model_response


class LocalModelError(litellm.BadRequestError, ModelError):
    """The ModelError that callers of litellm receive for a `local/...` model.

    litellm wraps any exception it does not know into an APIConnectionError (retryable,
    with a traceback glued to the message); its own types pass through untouched. Being
    a litellm.BadRequestError as well, this one reaches the caller as it was raised: still
    a ModelError, not retried, and str() is the one-line message.
    """

    def __init__(self, message: str, model: str = "") -> None:
        super().__init__(message=message, model=model, llm_provider=PROVIDER)
        self.message = message  # litellm's init prefixes "litellm.BadRequestError: "

    def __str__(self) -> str:
        # litellm's __str__ appends "LiteLLM Retried: N times" although it never retries a 400.
        return self.message


class LocalProvider(CustomLLM):
    """litellm provider `local`: runs GGUF models in-process with llama.cpp."""

    def completion(  # type: ignore[override]
        self,
        model: str,
        messages: list,
        *args: Any,
        model_response: ModelResponse,
        optional_params: dict,
        **kwargs: Any,
    ) -> ModelResponse:
        try:
            raw = run_chat(model, messages, optional_params)
        except ModelError as exc:
            raise LocalModelError(str(exc), model) from None
        return _fill(model_response, model, raw)

    async def acompletion(self, *args: Any, **kwargs: Any) -> ModelResponse:  # type: ignore[override]
        return await asyncio.to_thread(self.completion, *args, **kwargs)


def register() -> None:
    """Make `local/...` models callable through litellm, at zero cost. Idempotent."""
    if not any(p.get("provider") == PROVIDER for p in litellm.custom_provider_map):
        handler = {"provider": PROVIDER, "custom_handler": LocalProvider()}
        litellm.custom_provider_map.append(handler)
    litellm.utils.custom_llm_setup()
    for name in MODELS:
        _register_zero_cost(name)


_priced: set[str] = set()


def _register_zero_cost(name: str) -> None:
    """Without a cost-map entry `litellm.completion_cost` raises for our models."""
    key = f"{PROVIDER}/{name}"
    if key in _priced:
        return
    entry = {
        "input_cost_per_token": 0.0,
        "output_cost_per_token": 0.0,
        "litellm_provider": PROVIDER,
        "mode": "chat",
    }
    # register_model warns once per model that it lacks cache-token prices: noise here.
    logger = logging.getLogger("LiteLLM")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        litellm.register_model({key: entry})
    finally:
        logger.setLevel(level)
    _priced.add(key)
