"""Structured output: an LLM reply parsed and validated into a pydantic shape.

The model is asked for JSON in the strongest form it supports: a JSON schema
(`response_format` json_schema) when litellm says the model honours one, or when it
is the embedded `local/...` model (llama.cpp turns the schema into a grammar);
otherwise plain JSON mode (`{"type": "json_object"}`), which providers that do not
know it ignore. Either way the reply is then read tolerantly (code fences and prose
around the object are fine) and validated with pydantic. A reply that does not
validate gets ONE repair request carrying the reply and what was wrong with it; if
that fails too, the result keeps the error. Per-record failures are data, never
exceptions: only systemic faults (no such model, spent budget) raise.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import partial
from typing import Any, Generic, TypeVar

import litellm
from litellm.utils import type_to_response_format_param
from pydantic import BaseModel, ValidationError

from prompt_descent.core.concurrency import fan_out
from prompt_descent.core.config import ModelSettings
from prompt_descent.errors import TooManyFailures
from prompt_descent.llm.gateway import JSON_MODE, active_gateway

ShapeT = TypeVar("ShapeT", bound=BaseModel)
T = TypeVar("T")

# Custom providers (not known to litellm's model map) that honour a json_schema.
SCHEMA_PROVIDERS = frozenset({"local"})
MAX_ERROR_CHARS = 300
STOP_CHECK_AFTER = 8  # replies seen before a failure rate may stop the rest

_FENCE = re.compile(r"```[A-Za-z]*\s*\n?(.*?)```", re.DOTALL)


class StructuredResult(BaseModel, Generic[ShapeT]):
    """One structured call. `value` is None exactly when `error` says why.

    `repaired` is True when a repair request was sent (whether or not it helped);
    `raw` is the last reply received.
    """

    value: ShapeT | None = None
    raw: str = ""
    error: str | None = None
    repaired: bool = False


def response_format_for(model: str, shape: type[BaseModel]) -> dict[str, Any]:
    """The json_schema form of `shape` where the model honours it, else JSON mode."""
    provider = model.split("/", 1)[0] if "/" in model else ""
    custom = {item["provider"] for item in litellm.custom_provider_map}
    if provider in SCHEMA_PROVIDERS or (provider not in custom and _supports_schema(model)):
        return type_to_response_format_param(shape)
    return dict(JSON_MODE)


def _supports_schema(model: str) -> bool:
    try:
        return bool(litellm.supports_response_schema(model=model))
    except Exception:  # litellm raises for models it cannot map to a provider
        return False


def extract_json(reply: str) -> Any:
    """The first JSON object in `reply`: the whole reply, a fenced block, or one in prose."""
    text = reply.strip()
    for candidate in [text, *(m.group(1).strip() for m in _FENCE.finditer(text))]:
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            pass
    decoder = json.JSONDecoder()
    for start, char in enumerate(text):
        if char == "{":
            try:
                return decoder.raw_decode(text, start)[0]
            except json.JSONDecodeError:
                continue
    if not text:
        raise ValueError("the reply is empty")
    if text.count("{") > text.count("}"):
        raise ValueError("the JSON object is cut off (raise max_tokens)")
    raise ValueError("no JSON object in the reply")


def _describe(error: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(part) for part in item['loc']) or 'reply'}: {item['msg']}"
        for item in error.errors(include_url=False)
    ]
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(problems[:3]) + more


def parse_reply(reply: str, shape: type[ShapeT]) -> tuple[ShapeT | None, str | None]:
    """(value, None) when `reply` holds a valid `shape`, else (None, what is wrong)."""
    try:
        return shape.model_validate(extract_json(reply)), None
    except ValueError as error:  # ValidationError is a ValueError
        problem = _describe(error) if isinstance(error, ValidationError) else str(error)
        return None, " ".join(problem.split())[:MAX_ERROR_CHARS]


def repair_messages(
    messages: list[dict[str, str]], reply: str, problem: str, shape: type[BaseModel]
) -> list[dict[str, str]]:
    schema = json.dumps(shape.model_json_schema(), separators=(",", ":"))
    return [
        *messages,
        {"role": "assistant", "content": reply},
        {
            "role": "user",
            "content": (
                f"That reply is not the JSON asked for: {problem}. Reply with only a JSON "
                f"object that matches this JSON schema:\n{schema}"
            ),
        },
    ]


async def complete_structured(
    role: str,
    settings: ModelSettings,
    messages: list[dict[str, str]],
    shape: type[ShapeT],
) -> StructuredResult[ShapeT]:
    """One call whose reply must be a `shape`, with at most one repair request."""
    result = StructuredResult[shape]  # type: ignore[valid-type]
    gateway = active_gateway()
    response_format = response_format_for(settings.model, shape)
    call = await gateway.complete(role, settings, messages, response_format=response_format)
    if call.error or call.response is None:  # the call failed, after the gateway's retries
        return result(raw=call.response or "", error=f"call failed: {call.error}")
    value, problem = parse_reply(call.response, shape)
    if value is not None:
        return result(value=value, raw=call.response)
    repair = repair_messages(messages, call.response, problem or "", shape)
    second = await gateway.complete(role, settings, repair, response_format=response_format)
    if second.error or second.response is None:
        return result(
            raw=call.response,
            error=f"{problem}; the repair call failed: {second.error}",
            repaired=True,
        )
    value, second_problem = parse_reply(second.response, shape)
    if value is not None:
        return result(value=value, raw=second.response, repaired=True)
    return result(
        raw=second.response,
        error=f"not valid after one repair: {second_problem} (first reply: {problem})",
        repaired=True,
    )


async def complete_structured_many(
    role: str,
    settings: ModelSettings,
    conversations: Sequence[list[dict[str, str]]],
    shape: type[ShapeT],
    concurrency: int,
    stop_above: float | None = None,
) -> list[StructuredResult[ShapeT]]:
    """`complete_structured` for each conversation, at most `concurrency` at once, in order.

    With `stop_above`, once STOP_CHECK_AFTER replies are in and more than that fraction of
    them failed, the rest are not asked for: TooManyFailures. A prompt that fails most
    records fails them all, and each costs a call and a repair.
    """
    done = failed = 0

    async def one(messages: list[dict[str, str]]) -> StructuredResult[ShapeT]:
        nonlocal done, failed
        result = await complete_structured(role, settings, messages, shape)
        done, failed = done + 1, failed + (result.error is not None)
        if stop_above is not None and done >= STOP_CHECK_AFTER and failed / done > stop_above:
            raise TooManyFailures(
                f"{failed} of the first {done} {role} replies failed (more than "
                f"{stop_above:.0%}): stopped before the other {len(conversations) - done}; "
                f"last error: {result.error}"
            )
        return result

    return await fan_out([partial(one, m) for m in conversations], concurrency)
