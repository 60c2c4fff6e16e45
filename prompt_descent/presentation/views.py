"""What the CLI prints: run summaries, run lists, iteration histories, prompt diffs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from prompt_descent.core.config import Prompt
from prompt_descent.core.results import RunSummary
from prompt_descent.features.registry import RegisteredPrompt
from prompt_descent.presentation.report import RunHistory
from prompt_descent.presentation.text import calls_text, score_text


def summary_table(run: RunSummary) -> Table:
    table = Table(title=f"run {run.run_id} ({run.status})")
    table.add_column("")
    table.add_column("baseline", justify="right")
    table.add_column("best", justify="right")
    table.add_row("val", score_text(run.baseline_val), score_text(run.best_val))
    table.add_row("test", score_text(run.baseline_test), score_text(run.best_test))
    table.add_row("prompt", run.baseline_prompt, run.best_prompt)
    table.add_section()
    table.add_row("steps", "", str(run.steps))
    table.add_row("proposals tried / accepted", "", f"{run.proposals} / {run.accepted}")
    table.add_row("LLM calls", "", calls_text(run.usage))
    table.add_row("tokens", "", f"{run.usage.tokens:,}")
    table.add_row("cost", "", f"${run.usage.cost_usd:.4f}")
    table.add_row("time", "", f"{run.seconds:.1f} s")
    if run.stop_reason:
        table.add_row("stopped because", "", run.stop_reason)
    if run.registered_version is not None:
        role = "champion" if run.champion else "not champion"
        table.add_row("registered", "", f"{run.name} v{run.registered_version} ({role})")
        if run.promotion:
            table.add_row("because", "", run.promotion)
    return table


def runs_table(runs: list[dict[str, Any]], store_path: str | Path) -> Table:
    table = Table(title=f"runs in {store_path}")
    for column in (
        "run",
        "name",
        "mode",
        "model",
        "status",
        "started",
        "val before",
        "val after",
        "test before",
        "test after",
        "proposals",
        "accepted",
        "calls",
        "cost",
    ):
        table.add_column(column)
    for r in runs:
        table.add_row(
            r["run_id"],
            r["name"],
            r["mode"],
            r["model"] or "-",
            r["status"],
            f"{r['started_at']:%Y-%m-%d %H:%M}",
            score_text(r["baseline_val"]),
            score_text(r["best_val"]),
            score_text(r["baseline_test"]),
            score_text(r["best_test"]),
            str(r["proposals"] or 0),
            str(r["accepted"] or 0),
            str(r["calls"]),
            f"${r['cost']:.4f}",
        )
    return table


def prompt_diff(before: Prompt, after: Prompt) -> Text:
    lines = before.diff_lines(after)
    text = Text()
    for line in lines:
        style = "green" if line.startswith("+") else "red" if line.startswith("-") else "dim"
        text.append(line + "\n", style=style)
    return text


def history_view(history: RunHistory) -> Group:
    """Every proposal of a run: its scores, the decision and why, and the prompt diff."""
    table = Table(title=f"iterations of {history.run['run_id']}")
    for column in (
        "step",
        "prop.",
        "batch before",
        "batch after",
        "val before",
        "val after",
        "val n",
        "accepted",
        "reason",
        "calls",
        "tokens",
        "s",
    ):
        table.add_column(column)
    parts: list = [table]
    for it in history.iterations:
        table.add_row(
            str(it["step"]),
            str(it["proposal"]),
            score_text(it["batch_before"]),
            score_text(it["batch_after"]),
            score_text(it["val_before"]),
            score_text(it["val_after"]),
            str(it["val_examples_scored"]),
            "yes" if it["accepted"] else "no",
            it["reason"],
            str(it["llm_calls"]),
            str(it["tokens"]),
            f"{it['seconds']:.1f}",
        )
        if it["candidate_prompt"]:
            before = history.prompts.get(it["current_prompt"])
            after = history.prompts.get(it["candidate_prompt"])
            if before and after:
                verdict = "accepted" if it["accepted"] else "rejected"
                parts.append(
                    Text(f"\nstep {it['step']} proposal {it['proposal']} ({verdict})", style="bold")
                )
                parts.append(prompt_diff(before, after))
    return Group(*parts)


def prompts_table(entries: list[RegisteredPrompt], store_path: str | Path) -> Table:
    """Every registered version: its model settings, scores and where it came from."""
    table = Table(title=f"registered prompts in {store_path}")
    for column in (
        "name",
        "version",
        "champion",
        "model",
        "temperature",
        "top_p",
        "freq. penalty",
        "max tokens",
        "val",
        "test",
        "prompt",
        "run",
        "created",
    ):
        table.add_column(column)
    for e in entries:
        s = e.settings
        table.add_row(
            e.name,
            str(e.version),
            "*" if e.champion else "",
            s.model,
            f"{s.temperature:g}",
            f"{s.top_p:g}",
            f"{s.frequency_penalty:g}",
            str(s.max_tokens),
            score_text(e.val_score),
            score_text(e.test_score),
            e.prompt.id,
            e.run_id or "",
            f"{e.created_at:%Y-%m-%d %H:%M}" if e.created_at else "",
        )
    return table


def prompt_details(entry: RegisteredPrompt) -> Group:
    s = entry.settings
    champion = " (champion)" if entry.champion else ""
    title = f"{entry.name} v{entry.version}{champion}  prompt {entry.prompt.id}"
    header = Text(title, style="bold")
    facts = Table.grid(padding=(0, 2))
    facts.add_row("model", s.model)
    facts.add_row(
        "sampling",
        f"temperature {s.temperature:g}, top_p {s.top_p:g}, "
        f"frequency_penalty {s.frequency_penalty:g}, max_tokens {s.max_tokens}",
    )
    facts.add_row("val / test", f"{score_text(entry.val_score)} / {score_text(entry.test_score)}")
    facts.add_row("run", entry.run_id or "(registered without a run)")
    parts = [
        header,
        facts,
        Text("\n---- system", style="dim"),
        Text(entry.prompt.system),
        Text("---- template", style="dim"),
        Text(entry.prompt.template),
    ]
    if entry.prompt.demos:
        parts.append(Text(f"---- demonstrations ({len(entry.prompt.demos)})", style="dim"))
        parts.append(Text(entry.prompt.demos_text()))
    return Group(*parts)
