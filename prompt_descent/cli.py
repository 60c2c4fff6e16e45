"""The command line: `prompt-descent optimize CONFIG`, `runs`, `show`, `evaluate`, `models`."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from prompt_descent.runtime.environment import apply_project_defaults

apply_project_defaults()  # before Prefect or litellm is imported

from prompt_descent.errors import UserError  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)


class Promote(StrEnum):
    always = "always"
    if_better = "if_better"
    never = "never"


# Piped output gets the width of a wide terminal rather than rich's 80 columns.
console = Console(width=shutil.get_terminal_size((220, 40)).columns)

T = TypeVar("T")
StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="DuckDB file of the project [default: the --config's store, "
        "else .prompt_descent/runs.duckdb].",
    ),
]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="Run config (YAML) whose store to use.")
]


def _store_of(store: str | None, config: Path | None) -> str:
    """The store a command reads: --store, else the --config's `store:`, else the default."""
    from prompt_descent.core.configfile import load_config
    from prompt_descent.features.registry import DEFAULT_STORE

    if store is not None:
        return store
    if config is None:
        return DEFAULT_STORE
    try:
        return str(load_config(config).store)
    except UserError as error:
        _fail(error)


def _fail(error: Exception) -> None:
    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {error}", highlight=False)
    raise typer.Exit(2)


def _interruptible(work: Callable[[], T]) -> T:
    """`work()`, with a Ctrl-C reported as what it did, and exit code 130."""
    from prompt_descent.runtime.interrupt import EXIT_CODE, RunInterrupted

    err = Console(stderr=True, soft_wrap=True)
    try:
        return work()
    except RunInterrupted as stopped:
        err.print(f"interrupted: {stopped}", highlight=False)
        if stopped.resume:
            err.print(f"resume it with: {stopped.resume}", highlight=False)
        raise typer.Exit(EXIT_CODE) from None
    except KeyboardInterrupt:
        err.print("interrupted before any run started", highlight=False)
        raise typer.Exit(EXIT_CODE) from None


@app.command()
def optimize(
    config: Annotated[Path, typer.Argument(help="Run config (YAML).")],
    run_id: Annotated[str | None, typer.Option(help="Name the run (default: generated).")] = None,
    promote: Annotated[
        Promote | None,
        typer.Option(help="When the best prompt becomes the champion (default: the config's)."),
    ] = None,
) -> None:
    """Optimize the config's prompt and print baseline vs best."""
    from prompt_descent import api
    from prompt_descent.core.configfile import locate_in_config
    from prompt_descent.presentation.views import summary_table

    try:
        summary = _interruptible(
            lambda: api.optimize(config, run_id=run_id, promote=promote.value if promote else None)
        )
    except UserError as error:
        _fail(locate_in_config(error, config))
    console.print(summary_table(summary))


@app.command()
def resume(
    run: Annotated[str, typer.Argument(help="Id of an interrupted run.")],
    store: StoreOption = None,
    config_file: ConfigOption = None,
) -> None:
    """Finish an interrupted run; no LLM call it completed is made again."""
    store = _store_of(store, config_file)
    from prompt_descent import api
    from prompt_descent.presentation.views import summary_table

    try:
        summary = _interruptible(lambda: api.resume(run, store))
    except UserError as error:
        _fail(_at_option(error))
    console.print(summary_table(summary))


# The API's parameters as this CLI spells them, for errors that name one.
OPTIONS = {
    "store": "--store",
    "template": "--template",
    "fields": "--field",
    "limit": "--limit",
    "max_tokens": "--max-tokens",
    "out": "--out",
}


def _at_option(error: UserError) -> UserError:
    """`error` naming the command-line option, not the API parameter, it is about."""
    if error.file is not None or error.field not in OPTIONS:
        return error
    message = str(error).removeprefix(f"field '{error.field}': ")
    for parameter, option in OPTIONS.items():
        message = message.replace(f"`{parameter}`", option)
    return UserError(f"{OPTIONS[error.field]}: {message}")


@app.command()
def runs(store: StoreOption = None, config_file: ConfigOption = None) -> None:
    """List the runs in the store."""
    store = _store_of(store, config_file)
    from prompt_descent import api
    from prompt_descent.presentation.views import runs_table

    try:
        console.print(runs_table(api.list_runs(store), store))
    except UserError as error:
        _fail(_at_option(error))


@app.command()
def show(
    run: Annotated[str, typer.Argument(help="Run id.")],
    store: StoreOption = None,
    config_file: ConfigOption = None,
) -> None:
    """Every proposal of a run: scores, accepted or rejected and why, the prompt diff."""
    store = _store_of(store, config_file)
    from prompt_descent import api
    from prompt_descent.presentation.views import history_view

    try:
        console.print(history_view(api.run_history(run, store)))
    except UserError as error:
        _fail(_at_option(error))


@app.command()
def evaluate(
    dataset: Annotated[Path, typer.Argument(help="JSONL, CSV, Parquet or BBH JSON file.")],
    prompt: Annotated[str, typer.Option(help="The system prompt to score.")],
    template: Annotated[str, typer.Option(help="User message template.")] = "{input}",
    field: Annotated[
        list[str] | None, typer.Option(help="placeholder=column (repeatable); default input=input.")
    ] = None,
    target: Annotated[str, typer.Option(help="Target column.")] = "target",
    metric: Annotated[str, typer.Option(help="Metric name or module:function.")] = "exact_match",
    model: Annotated[str | None, typer.Option(help="litellm model (default: local).")] = None,
    max_tokens: Annotated[int, typer.Option(help="Max tokens per answer.")] = 64,
    limit: Annotated[int | None, typer.Option(help="Score only the first N examples.")] = None,
    concurrency: Annotated[int, typer.Option(help="Calls in flight.")] = 4,
    store: StoreOption = None,
    config_file: ConfigOption = None,
) -> None:
    """Score one prompt on a dataset: `prompt_descent.evaluate` with these arguments."""
    store = _store_of(store, config_file)
    from prompt_descent import api
    from prompt_descent.features.serving import parse_fields

    try:
        scores = _interruptible(
            lambda: api.evaluate(
                prompt,
                dataset,
                metric,
                model,
                template=template,
                fields=parse_fields(field) or None,
                target=target,
                limit=limit,
                concurrency=concurrency,
                store=store,
                max_tokens=max_tokens,
            )
        )
    except UserError as error:
        _fail(_at_option(error))
    failed = sum(1 for p in scores.predictions if p.error)
    console.print(
        f"prompt {scores.prompt_id}: {metric} = {scores.score:.3f} on "
        f"{len(scores.predictions)} examples ({failed} failed calls)"
    )


@app.command()
def models() -> None:
    """The embedded local models: installed, verified, size, and whether each one
    generates on this machine (one completion each, in a child process).

    Exits 1, with one line per model, when an installed model cannot generate here.
    """
    from rich.table import Table

    from prompt_descent import api

    found = api.local_models()
    table = Table(title="local models")
    for column in ("model", "installed", "verified", "generates", "size", "path"):
        table.add_column(column)
    for info, result in found:
        table.add_row(
            info.name,
            "yes" if info.installed else "no",
            "yes" if info.verified else "no",
            "-" if result is None else "yes" if result.generates else "NO",
            f"{info.size_bytes / 1e6:,.0f} MB",
            str(info.path or ""),
        )
    console.print(table)
    problems = [result.problem for _, result in found if result and result.problem]
    if problems:
        for problem in problems:
            Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {problem}")
        raise typer.Exit(1)


@app.command()
def report(
    run: Annotated[str, typer.Argument(help="Run id.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Directory; default reports/RUN beside the store.")
    ] = None,
    store: StoreOption = None,
    config_file: ConfigOption = None,
) -> None:
    """Write a run's HTML report (score chart, prompt history with diffs, iterations)."""
    store = _store_of(store, config_file)
    from prompt_descent import api
    from prompt_descent.presentation.report import CHART_NAME

    try:
        path = api.write_report(run, store, out)
    except UserError as error:
        _fail(_at_option(error))
    console.print(f"report: {path}")
    console.print(f"chart:  {path.parent / CHART_NAME}")


# -- the prompt registry and putting registered prompts to work ----------------------------


@app.command()
def prompts(store: StoreOption = None, config_file: ConfigOption = None) -> None:
    """List the registered prompts: every version, its model settings and scores."""
    store = _store_of(store, config_file)
    from prompt_descent.features.registry import list_prompts
    from prompt_descent.presentation.views import prompts_table
    from prompt_descent.storage.store import Store

    try:
        entries = list_prompts(Store(store, create=False))
    except UserError as error:
        _fail(_at_option(error))
    console.print(prompts_table(entries, store))


@app.command()
def prompt(
    name: Annotated[str, typer.Argument(help="Registry name.")],
    version: Annotated[
        int | None, typer.Option(help="Version (default: the champion, else the latest).")
    ] = None,
    export: Annotated[
        Path | None, typer.Option(help="Write it to FILE.json or FILE.yaml instead.")
    ] = None,
    store: StoreOption = None,
    config_file: ConfigOption = None,
) -> None:
    """Show a registered prompt with its model settings, or export it."""
    store = _store_of(store, config_file)
    from prompt_descent.features.registry import export_prompt, load_prompt
    from prompt_descent.presentation.views import prompt_details
    from prompt_descent.storage.store import Store

    try:
        entry = load_prompt(name, version, Store(store, create=False))
        if export is not None:
            path = export_prompt(entry, export)
            console.print(f"exported {entry.name} v{entry.version} to {path}")
            return
    except UserError as error:
        _fail(_at_option(error))
    console.print(prompt_details(entry))


@app.command("prompt-import")
def prompt_import(
    file: Annotated[Path, typer.Argument(help="A prompt exported as JSON or YAML.")],
    name: Annotated[
        str | None, typer.Argument(help="Registry name (default: the name in the file).")
    ] = None,
    champion: Annotated[
        bool, typer.Option(help="Make it the champion that `run` and `load_prompt` use.")
    ] = True,
    store: StoreOption = None,
    config_file: ConfigOption = None,
) -> None:
    """Register a prompt from an export file, without optimizing."""
    store = _store_of(store, config_file)
    from prompt_descent.features.registry import import_prompt

    try:
        entry = import_prompt(file, name, store, champion=champion)
    except UserError as error:
        _fail(error)
    role = " (champion)" if entry.champion else ""
    console.print(f"registered {entry.name} v{entry.version}{role}, prompt {entry.prompt.id}")


@app.command()
def run(
    name: Annotated[str, typer.Argument(help="Registry name.")],
    text: Annotated[
        str | None, typer.Option("--input", help="One input (the template's one placeholder).")
    ] = None,
    file: Annotated[Path | None, typer.Option(help="JSONL, CSV or Parquet inputs.")] = None,
    version: Annotated[
        int | None, typer.Option(help="Version (default: the champion, else the latest).")
    ] = None,
    field: Annotated[
        list[str] | None,
        typer.Option(help="placeholder=column for --file (repeatable); default: same name."),
    ] = None,
    id_column: Annotated[str | None, typer.Option("--id", help="Column of example ids.")] = None,
    concurrency: Annotated[int, typer.Option(help="Calls in flight.")] = 4,
    store: StoreOption = None,
    config_file: ConfigOption = None,
) -> None:
    """Apply a registered prompt with its registered model and sampling settings.

    Prints one JSON line per input: {"id", "output", "error"}.
    """
    store = _store_of(store, config_file)
    import json

    from prompt_descent import api
    from prompt_descent.features.serving import parse_fields

    try:
        if (text is None) == (file is None):
            raise UserError("give exactly one of --input TEXT or --file FILE")
        if field and file is None:
            raise UserError("--field maps columns of a --file; --input fills the placeholders")
        outputs = _interruptible(
            lambda: api.run_prompt(
                name,
                None if text is None else [text],
                version,
                store,
                concurrency,
                file=file,
                fields=parse_fields(field),
                id_column=id_column,
            )
        )
    except UserError as error:
        _fail(error)
    for output in outputs:
        typer.echo(json.dumps(output.model_dump(), ensure_ascii=False))


@app.command("expand-qa")
def expand_qa(
    texts: Annotated[
        str, typer.Argument(help="JSONL/CSV/Parquet file with a text column, or a DuckDB query.")
    ],
    output: Annotated[
        Path | None, typer.Option(help="Also write the rows to FILE.jsonl or FILE.parquet.")
    ] = None,
    qa_prompt: Annotated[str, typer.Option(help="Registered QA prompt ({text}).")] = "qa-pairs",
    rephrase_prompt: Annotated[
        str, typer.Option(help="Registered rephrase prompt ({question}).")
    ] = "rephrase-question",
    text_column: Annotated[str, typer.Option(help="Column holding the text.")] = "text",
    id_column: Annotated[str | None, typer.Option("--id", help="Column of text ids.")] = None,
    database: Annotated[
        str | None, typer.Option(help="DuckDB file a query runs against (default: in memory).")
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Calls in flight.")] = 4,
    max_failed: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Stop once more than this fraction of a step's replies failed to parse "
            "(checked from the 8th on); 1 never stops early.",
        ),
    ] = 0.5,
    store: StoreOption = None,
    config_file: ConfigOption = None,
) -> None:
    """Texts -> QA pairs -> reworded questions, with the registered prompts; rows in DuckDB."""
    store = _store_of(store, config_file)
    from prompt_descent import api

    try:
        summary = _interruptible(
            lambda: api.expand_qa(
                texts,
                qa_prompt,
                rephrase_prompt,
                store,
                output,
                text_column=text_column,
                id_column=id_column,
                database=database,
                concurrency=concurrency,
                max_failed_fraction=max_failed,
            )
        )
    except UserError as error:
        _fail(error)
    written = f"; written to {summary.output}" if summary.output else ""
    stopped = f" ({summary.stop_reason})" if summary.stop_reason else ""
    console.print(
        f"run {summary.run_id} {summary.status}{stopped}: {summary.texts} texts -> "
        f"{summary.rows} rows, {summary.failed} with an error{written}"
    )
    # the rows are kept, with their errors; a script must still see that some failed, or
    # that the run stopped before every text was expanded
    if summary.failed:
        problem = (
            f"{summary.failed} of {summary.rows} rows failed; their errors are in the "
            f"expanded_qa table (run {summary.run_id})"
        )
    elif summary.status != "completed":
        problem = f"run {summary.run_id} {summary.status} before every text was expanded"
    else:
        return
    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {problem}", highlight=False)
    raise typer.Exit(1)


if __name__ == "__main__":
    app()
