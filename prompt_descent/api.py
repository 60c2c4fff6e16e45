"""The Python API: optimize, evaluate, load and run registered prompts, expand QA data.

Every function here is synchronous and runs its flow with `asyncio.run`. In async code
(a notebook cell with a running loop, a web handler, another flow) await the flows
themselves instead: `flows.optimize.optimize_prompt`, `flows.evaluate.evaluate_prompt`,
`flows.expand_qa.expand_qa`, `prompt_descent.features.serving.run_prompt`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from prompt_descent.core.config import (
    Budget,
    DatasetSpec,
    Example,
    MetricSpec,
    Models,
    ModelSettings,
    Prompt,
    RunConfig,
    SplitScore,
)
from prompt_descent.core.results import RunSummary
from prompt_descent.errors import RunStopped, UserError
from prompt_descent.features.promotion import PromoteRule
from prompt_descent.features.qa import ExpandSummary
from prompt_descent.features.registry import (
    DEFAULT_STORE,
    RegisteredPrompt,
    StoreLike,
    export_prompt,
    import_prompt,
    list_prompts,
    load_prompt,
    open_store,
    register_prompt,
)
from prompt_descent.runtime import interrupt
from prompt_descent.runtime.environment import apply_project_defaults

if TYPE_CHECKING:
    from prompt_descent.features.serving import Output
    from prompt_descent.llm.local.weights import LocalModelInfo
    from prompt_descent.llm.probe import ProbeResult
    from prompt_descent.presentation.report import RunHistory

T = TypeVar("T")

__all__ = [
    "RegisteredPrompt",
    "evaluate",
    "expand_qa",
    "export_prompt",
    "import_prompt",
    "list_prompts",
    "list_runs",
    "load_prompt",
    "local_models",
    "optimize",
    "register_prompt",
    "resume",
    "run_history",
    "run_prompt",
    "write_report",
]


def _run_flow(work: Coroutine[Any, Any, T], run_id: str, resume: str | None = None) -> T:
    """`_run(work, ...)` with a Prefect API for the flow to report to."""
    from prompt_descent.runtime.prefect_api import ensure_api

    try:
        ensure_api()
    except BaseException:
        work.close()  # never started: no "never awaited" warning
        raise
    return _run(work, run_id, resume)


def _run(work: Coroutine[Any, Any, T], run_id: str, resume: str | None = None) -> T:
    """Run `work` to its end with the two-step Ctrl-C.

    After a Ctrl-C stopped run `run_id`, raises RunInterrupted (a KeyboardInterrupt)
    naming `resume`, the command that finishes it, if it can be resumed.
    """
    try:
        with interrupt.handling_sigint():
            result = asyncio.run(work)
    except RunStopped:  # evaluate and run have no result to return after a stop
        if not interrupt.requested():
            raise
        raise interrupt.RunInterrupted(run_id, resume) from None
    if interrupt.requested():
        raise interrupt.RunInterrupted(run_id, resume)
    return result


def _no_running_loop(name: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        f"prompt_descent.{name}() is synchronous and an event loop is already running; "
        "in async code await the flow directly (see prompt_descent.api)"
    )


def optimize(
    config: RunConfig | str | Path,
    run_id: str | None = None,
    promote: PromoteRule | None = None,
) -> RunSummary:
    """Run the optimize_prompt flow on a RunConfig or a YAML config file; returns its RunSummary.

    The best prompt is registered as a new version under the config's `register_as`
    (default: its name); it becomes the champion as `promote` (default: the config's
    `promote`, if_better) rules.
    """
    _no_running_loop("optimize")
    apply_project_defaults()
    from flows.optimize import new_run_id, optimize_prompt, prepare_run
    from prompt_descent.core.configfile import load_config

    run_config = config if isinstance(config, RunConfig) else load_config(config)
    if promote is not None:
        run_config = run_config.model_copy(update={"promote": promote})
    prepare_run(run_config)  # input mistakes raise UserError here, before any flow run
    if run_id is not None:
        _check_reuse(run_id, run_config)
    run_id = run_id or new_run_id(run_config.name)
    resume_command = f"prompt-descent resume {run_id} --store {run_config.store}"
    return _run_flow(optimize_prompt(run_config, run_id=run_id), run_id, resume_command)


def _check_reuse(run_id: str, config: RunConfig) -> None:
    """A run id names one run: a completed run is never run again, and an unfinished one
    goes on only with the config it started with (its calls and rows would mix else)."""
    if not Path(config.store).is_file():
        return
    store = open_store(config.store, create=False)
    status = store.run_status(run_id)
    if status is None:
        return
    if status == "completed":
        raise UserError(
            f"run '{run_id}' in {config.store} is completed; give another run id, or none "
            "for a new one"
        )
    differing = _first_difference(store.run_config(run_id), config.model_dump(mode="json"))
    if differing is not None:
        raise UserError(
            f"run '{run_id}' in {config.store} was started with another config ('{differing}' "
            f"differs); finish it with `prompt-descent resume {run_id} --store "
            f"{config.store}`, or give another run id"
        )


def _first_difference(before: Any, after: Any, path: str = "") -> str | None:
    """The dotted path of the first setting that differs between two configs, or None."""
    if isinstance(before, dict) and isinstance(after, dict):
        for key in [*before, *(k for k in after if k not in before)]:
            found = _first_difference(before.get(key), after.get(key), f"{path}{key}.")
            if found is not None:
                return found
        return None
    return None if before == after else path.rstrip(".")


def resume(run_id: str, store: str | Path = DEFAULT_STORE) -> RunSummary:
    """Finish an interrupted optimize run with the config it started with; no LLM call it
    completed is made again."""
    _no_running_loop("resume")
    apply_project_defaults()
    from flows.optimize import optimize_prompt, prepare_run

    saved = open_store(store, create=False).run_config(run_id)  # a lookup creates nothing
    if saved is None:
        raise UserError(f"no run '{run_id}' in {store}; `prompt-descent runs` lists them")
    config = RunConfig.model_validate(saved)
    _check_reuse(run_id, config)
    prepare_run(config)
    resume_command = f"prompt-descent resume {run_id} --store {store}"
    return _run_flow(optimize_prompt(config, run_id=run_id), run_id, resume_command)


def evaluate(
    prompt: Prompt | str,
    dataset: str | Path | DatasetSpec,
    metric: str | MetricSpec = "exact_match",
    model: str | ModelSettings | None = None,
    *,
    template: str = "{input}",
    fields: Mapping[str, str] | None = None,
    target: str | None = "target",
    judge: str | ModelSettings | None = None,
    limit: int | None = None,
    concurrency: int = 4,
    store: str | Path = DEFAULT_STORE,
    run_id: str | None = None,
    max_tokens: int | None = None,
) -> SplitScore:
    """Score one prompt on a dataset (all of it, or its first `limit` examples).

    `prompt` is a Prompt or a system prompt (then `template` is the user message).
    `dataset` is a file path or a DatasetSpec (`fields` and `target` apply to a path).
    `model` is a litellm model name or full ModelSettings (default: the task role's
    defaults), `max_tokens` its answers' limit if given; `judge` likewise, for
    metric="llm_judge" (default: the same model with the judge role's settings).
    Input mistakes raise UserError before any flow run, call or store write.
    """
    _no_running_loop("evaluate")
    apply_project_defaults()
    from flows.evaluate import evaluate_prompt, prepare_evaluation
    from flows.optimize import new_run_id
    from prompt_descent.core.datasets import load_examples
    from prompt_descent.storage.database import check_writable

    the_prompt = prompt if isinstance(prompt, Prompt) else _prompt(prompt, template)
    spec = (
        dataset
        if isinstance(dataset, DatasetSpec)
        else DatasetSpec(
            path=str(dataset), fields=dict(fields or {"input": "input"}), target=target
        )
    )
    _check_fields(the_prompt, spec)
    check_writable(store)
    metric_spec = metric if isinstance(metric, MetricSpec) else MetricSpec(name=metric)
    task_settings = _settings(model, "task", max_tokens)
    models = Models(task=task_settings, judge=_settings(judge or task_settings.model, "judge"))
    examples = load_examples(spec)[:limit]
    if not examples:
        raise UserError("no examples to evaluate (limit is 0?)", field="limit")
    prepare_evaluation(metric_spec, models, the_prompt, examples, "eval")
    run_id = run_id or new_run_id(f"eval-{the_prompt.id}")
    return _run_flow(
        evaluate_prompt(
            the_prompt,
            examples,
            metric_spec,
            models,
            concurrency,
            str(store),
            run_id,
        ),
        run_id,
    )


def _prompt(system: str, template: str) -> Prompt:
    try:
        return Prompt(system=system, template=template)
    except ValidationError as error:
        message = error.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
        raise UserError(message, field="template") from None


def _check_fields(prompt: Prompt, spec: DatasetSpec) -> None:
    """Every placeholder of the template is filled from a column (a KeyError mid-flow else)."""
    unmapped = sorted(prompt.placeholders() - set(spec.fields))
    if unmapped:
        names = ", ".join(f"{{{name}}}" for name in unmapped)
        mapped = ", ".join(f"{key}={column}" for key, column in spec.fields.items()) or "nothing"
        raise UserError(
            f"the template uses {names}, which `fields` does not map to a column (it maps "
            f"{mapped}); map each placeholder, e.g. {unmapped[0]}=COLUMN",
            field="template",
        )


def _settings(
    model: str | ModelSettings | None, role: str, max_tokens: int | None = None
) -> ModelSettings:
    """`model` as settings with the role's default sampling (model default: read now)."""
    if isinstance(model, ModelSettings):
        settings = model
    else:
        defaults = getattr(Models(), role)
        settings = defaults.model_copy(update={"model": model}) if model else defaults
    if max_tokens is None:
        return settings
    try:
        return ModelSettings(**(settings.model_dump() | {"max_tokens": max_tokens}))
    except ValidationError as error:
        message = error.errors(include_url=False)[0]["msg"]
        raise UserError(f"{message} (got {max_tokens})", field="max_tokens") from None


def run_prompt(
    name: str,
    inputs: Sequence[str | Mapping[str, str]] | None = None,
    version: int | None = None,
    store: StoreLike = DEFAULT_STORE,
    concurrency: int = 4,
    *,
    file: str | Path | None = None,
    fields: Mapping[str, str] | None = None,
    id_column: str | None = None,
) -> list[Output]:
    """Apply a registered prompt, with its registered model and settings, to `inputs` or
    to the rows of `file`.

    Each input is a string (for a template with one placeholder; a JSON object fills
    several) or a mapping of placeholder -> value; their ids are their positions. A
    JSONL/CSV/Parquet `file` fills each placeholder from the column of its name, or
    the one `fields` maps it to. Returns one Output (id, output, error) per input, in
    order. Calls are cached and recorded in the store.
    """
    _no_running_loop("run_prompt")
    from prompt_descent.features.serving import file_examples, input_example
    from prompt_descent.features.serving import run_prompt as run_registered

    if (inputs is None) == (file is None):
        raise UserError("give exactly one of inputs or file")
    entry = load_prompt(name, version, store)
    if file is not None:
        examples = file_examples(entry, file, dict(fields or {}), id_column)
    else:
        examples = [
            Example(id=str(i), inputs=dict(item))
            if isinstance(item, Mapping)
            else input_example(entry, item, str(i))
            for i, item in enumerate(inputs or [])
        ]
    missing = [
        (e.id, sorted(entry.prompt.placeholders() - set(e.inputs)))
        for e in examples
        if entry.prompt.placeholders() - set(e.inputs)
    ]
    if missing:
        index, names = missing[0]
        raise UserError(f"input {index} has no value for placeholder {{{names[0]}}}")
    # not a flow: serving a prompt does not wait for a Prefect server to start
    run_id = f"run-{entry.name}-{uuid.uuid4().hex[:8]}"
    return _run(run_registered(entry, examples, open_store(store), concurrency, run_id), run_id)


def expand_qa(
    texts: str | Path,
    qa_prompt_name: str = "qa-pairs",
    rephrase_prompt_name: str = "rephrase-question",
    store: str | Path = DEFAULT_STORE,
    output: str | Path | None = None,
    *,
    text_column: str = "text",
    id_column: str | None = None,
    database: str | None = None,
    concurrency: int = 4,
    budget: Budget | None = None,
    run_id: str | None = None,
    max_failed_fraction: float = 0.5,
) -> ExpandSummary:
    """Run the expand_qa flow: texts -> QA pairs -> reworded questions; returns ExpandSummary.

    `texts` is a JSONL/CSV/Parquet file with a `text_column`, or a DuckDB query (run
    against `database`). Rows land in the store's `expanded_qa` table and, if given,
    in `output` (.jsonl or .parquet). Once more than `max_failed_fraction` of a step's
    replies (from the 8th on) failed to parse, the run stops there: status 'stopped'.
    """
    _no_running_loop("expand_qa")
    apply_project_defaults()
    from flows.expand_qa import expand_qa as expand_qa_flow
    from flows.optimize import new_run_id
    from prompt_descent.features.qa import ExpandRequest, check_request

    request = ExpandRequest(
        texts=texts,
        qa_prompt=qa_prompt_name,
        rephrase_prompt=rephrase_prompt_name,
        output=output,
        text_column=text_column,
        id_column=id_column,
        database=database,
        max_failed_fraction=max_failed_fraction,
    )
    check_request(request, open_store(store))  # a mistyped name fails before the flow starts
    run_id = run_id or new_run_id("expand-qa")
    work = expand_qa_flow(request, str(store), concurrency, budget, run_id)
    return _run_flow(work, run_id)


def list_runs(store: str | Path = DEFAULT_STORE) -> list[dict[str, Any]]:
    """Every run in the store, newest first: its mode, model, status, scores and calls."""
    return open_store(store, create=False).run_list()


def run_history(run_id: str, store: str | Path = DEFAULT_STORE) -> RunHistory:
    """A run's rows: the run, its iterations, the prompts it tried, usage, registrations."""
    from prompt_descent.presentation.report import RunHistory

    try:
        return RunHistory.load(open_store(store, create=False), run_id)
    except KeyError:
        raise UserError(f"no run '{run_id}' in {store}; `prompt-descent runs` lists them") from None


def write_report(
    run_id: str, store: str | Path = DEFAULT_STORE, out: str | Path | None = None
) -> Path:
    """A run's HTML report and score chart, in `out` (default: reports/RUN beside the
    store); returns the report's path."""
    from prompt_descent.presentation.report import report_dir, save_report

    history = run_history(run_id, store)
    target = Path(out) if out is not None else report_dir(store, run_id)
    try:
        return save_report(history, target)
    except OSError as error:
        raise UserError(
            f"cannot write the report to {target}: {error.strerror or error}", field="out"
        ) from None


def local_models() -> list[tuple[LocalModelInfo, ProbeResult | None]]:
    """The embedded models, each with whether it generates on this machine (asked in a
    child process; None when it is not installed)."""
    from prompt_descent.llm.local.weights import describe_models
    from prompt_descent.llm.probe import probe

    # probed first: a first probe joins and verifies the weights it loads
    probes = {info.name: probe(info.name) for info in describe_models() if info.installed}
    return [(info, probes.get(info.name)) for info in describe_models()]
