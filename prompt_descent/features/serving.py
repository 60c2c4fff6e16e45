"""Put a registered prompt to work: fill its template from inputs and call its model.

The calls go through the gateway with the registered model and sampling settings, so
they are cached (the same input is never paid twice) and recorded in `llm_calls`
under a run of mode 'run'. This is a plain async function rather than a Prefect flow:
it is one fan-out of calls, and a command that answers one input should not wait for
a Prefect server to start.
"""

from __future__ import annotations

import json
import uuid
from functools import partial
from pathlib import Path

from prompt_descent.core.concurrency import fan_out
from prompt_descent.core.config import DatasetSpec, Example
from prompt_descent.core.datasets import load_examples
from prompt_descent.core.results import Record
from prompt_descent.errors import RunStopped, UserError
from prompt_descent.features.registry import RegisteredPrompt
from prompt_descent.runtime.lifecycle import OpenRun, recorded_run
from prompt_descent.storage.store import Store


class Output(Record):
    """One input's answer, or the error of its call."""

    id: str
    output: str | None
    error: str | None = None


def parse_fields(items: list[str] | None) -> dict[str, str]:
    """`placeholder=column` options as a mapping."""
    fields: dict[str, str] = {}
    for item in items or []:
        placeholder, sep, column = item.partition("=")
        if not sep or not placeholder.strip() or not column.strip():
            raise UserError(f"--field expects placeholder=column, got '{item}'")
        fields[placeholder.strip()] = column.strip()
    return fields


def _describe(entry: RegisteredPrompt) -> str:
    return f"prompt '{entry.name}' v{entry.version}"


def input_example(entry: RegisteredPrompt, text: str, example_id: str) -> Example:
    """One literal input: the template's only placeholder, or a JSON object of them all."""
    names = sorted(entry.prompt.placeholders())
    if len(names) == 1:
        return Example(id=example_id, inputs={names[0]: text})
    listed = ", ".join(f"{{{name}}}" for name in names)
    try:
        values = json.loads(text)
    except ValueError:
        values = None
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise UserError(
            f"{_describe(entry)} has placeholders {listed}: give the input as a JSON object "
            "of strings with a key for each, or a --file with a column per placeholder"
        )
    missing = [name for name in names if name not in values]
    if missing:
        raise UserError(f"the input has no key '{missing[0]}' for {_describe(entry)}'s {listed}")
    return Example(id=example_id, inputs={name: values[name] for name in names})


def file_examples(
    entry: RegisteredPrompt,
    path: str | Path,
    fields: dict[str, str] | None = None,
    id_column: str | None = None,
) -> list[Example]:
    """The rows of a JSONL/CSV/Parquet file; each placeholder reads the column of its name
    unless `fields` maps it to another."""
    placeholders = entry.prompt.placeholders()
    unknown = sorted(set(fields or {}) - placeholders)
    if unknown:
        raise UserError(
            f"--field {unknown[0]}=...: {_describe(entry)} has no placeholder "
            f"{{{unknown[0]}}}; its placeholders: "
            + ", ".join(f"{{{name}}}" for name in sorted(placeholders))
        )
    mapping = {name: name for name in placeholders} | (fields or {})
    spec = DatasetSpec(path=str(path), fields=mapping, target=None, id=id_column)
    return load_examples(spec, "since each input is answered once (or give --id)")


async def run_prompt(
    entry: RegisteredPrompt,
    examples: list[Example],
    store: Store,
    concurrency: int = 4,
    run_id: str | None = None,
) -> list[Output]:
    """The registered prompt's answer for each example, in order; calls recorded in `store`."""
    run_id = run_id or f"run-{entry.name}-{uuid.uuid4().hex[:8]}"
    config = {"name": entry.name, "version": entry.version, "prompt_id": entry.prompt.id}

    async def close(opened: OpenRun) -> None:
        store.save_step(run_id, prompts=[entry.prompt], calls=opened.gateway.drain())
        store.end_run(run_id, opened.status, opened.stop_reason)

    calls = []
    async with recorded_run(store, run_id, entry.name, "run", config, close=close) as opened:
        # Not complete_many: a failed input is an output line with its error, never a stop.
        calls = await fan_out(
            [
                partial(
                    opened.gateway.complete, "run", entry.settings, entry.prompt.render(e.inputs)
                )
                for e in examples
            ],
            concurrency,
        )
    if opened.status != "completed":
        raise RunStopped(opened.stop_reason or "stopped")
    return [
        Output(id=e.id, output=None if c.error else (c.response or "").strip(), error=c.error)
        for e, c in zip(examples, calls, strict=True)
    ]
