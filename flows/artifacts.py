"""What a run shows in the Prefect UI: progress, one table per step, accepted prompts, a summary.

Artifact keys are derived from the run id, so each run has its own artifacts on
the Artifacts page and every version is linked to the flow run that made it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)

from prompt_descent.core.config import Prompt
from prompt_descent.core.results import IterationRecord, Promotion, RunSummary
from prompt_descent.presentation.report import (
    CHART_NAME,
    RunHistory,
    report_dir,
    save_report,
    svg_data_uri,
)
from prompt_descent.presentation.text import calls_text, prompt_sections, score_text
from prompt_descent.storage.store import Store


def _key(run_id: str, what: str) -> str:
    safe = "".join(c if c.isalnum() else "-" for c in run_id.lower())
    return f"{safe}-{what}"


def prompt_markdown(prompt: Prompt) -> str:
    fence = "```"
    return "\n\n".join(
        f"**{title}**\n\n{fence}text\n{text}\n{fence}" for title, text in prompt_sections(prompt)
    )


def diff_markdown(before: Prompt, after: Prompt) -> str:
    lines = before.diff_lines(after)
    return "```diff\n" + "\n".join(lines) + "\n```"


def chart_markdown(run_id: str, store_path: str) -> str:
    """The score chart inline (a data: URI, which the Prefect UI renders) and the report's path.

    The report is written to `reports/<run id>/` beside the store; a run that made no
    report still completes, with a warning in its log.
    """
    try:
        history = RunHistory.load(Store(store_path), run_id)
        report = save_report(history, report_dir(store_path, run_id))
    except Exception as error:  # the run is recorded already; a missing picture is no failure
        get_run_logger().warning("no report for %s: %s: %s", run_id, type(error).__name__, error)
        return ""
    chart = (report.parent / CHART_NAME).read_text(encoding="utf-8")
    return (
        f"## Scores per step\n\n![scores per step]({svg_data_uri(chart)})\n\n"
        f"Report with the prompt history and every iteration: `{report}` "
        f"(`prompt-descent report {run_id} --store {store_path}`)\n\n"
    )


class RunPublisher:
    """Publishes one optimize run's artifacts as it goes.

    The run does not wait for the Prefect API: artifacts are sent behind it, in order,
    and `finished` waits for them all (a failed one fails it). The summary's report and
    chart are written on a worker thread meanwhile.
    """

    def __init__(self, run_id: str, planned_steps: int) -> None:
        self.run_id = run_id
        self.planned_steps = max(planned_steps, 1)
        self._progress: UUID | None = None
        self._rows: list[dict[str, object]] = []
        self._publishing: asyncio.Task[None] | None = None

    def _publish(self, artifact: Coroutine[Any, Any, object]) -> None:
        previous = self._publishing

        async def after_previous() -> None:
            if previous is not None:
                await previous
            await artifact

        self._publishing = asyncio.create_task(after_previous())

    def _progress_text(self, done: int) -> str:
        return f"{self.run_id}: {done} of {self.planned_steps} planned steps done"

    async def started(self) -> None:
        async def progress() -> None:
            self._progress = await acreate_progress_artifact(
                0.0,
                key=_key(self.run_id, "progress"),
                description=self._progress_text(0),
            )

        self._publish(progress())

    async def proposal(self, row: IterationRecord) -> None:
        # the verdict and its reason come first: the UI's table scrolls, it does not wrap
        self._rows.append(
            {
                "step": row.step,
                "proposal": row.proposal,
                "accepted": row.accepted,
                "reason": row.reason,
                "batch before": score_text(row.batch_before),
                "batch after": score_text(row.batch_after),
                "val before": score_text(row.val_before),
                "val after": score_text(row.val_after),
                "calls": row.llm_calls,
                "cost usd": round(row.cost_usd, 6),
            }
        )

    async def step_done(self, step: int) -> None:
        rows, self._rows = self._rows, []

        async def step_table() -> None:
            if rows:
                await acreate_table_artifact(
                    rows,
                    key=_key(self.run_id, f"step-{step}"),
                    description=f"{self.run_id}: proposals of step {step}",
                )
            if self._progress is not None:
                await aupdate_progress_artifact(
                    self._progress,
                    100.0 * step / self.planned_steps,
                    description=self._progress_text(step),
                )

        self._publish(step_table())

    async def accepted(self, step: int, before: Prompt, after: Prompt, reason: str) -> None:
        self._publish(
            acreate_markdown_artifact(
                f"# Accepted at step {step}\n\n{reason}\n\n## Prompt {after.id}\n\n"
                f"{prompt_markdown(after)}\n\n## Diff against {before.id}\n\n"
                f"{diff_markdown(before, after)}",
                key=_key(self.run_id, "accepted-prompt"),
                description=f"{self.run_id}: prompt accepted at step {step}",
            )
        )

    async def sent(self) -> None:
        """Wait for every artifact sent behind the run so far (a failed one raises here)."""
        if self._publishing is not None:
            await self._publishing

    async def finished(self, run: RunSummary, best: Prompt, store_path: str) -> None:
        charting = asyncio.create_task(asyncio.to_thread(chart_markdown, run.run_id, store_path))
        await self.sent()
        if self._progress is not None:
            await aupdate_progress_artifact(
                self._progress, 100.0, description=f"{self._progress_text(run.steps)}; {run.status}"
            )
        get_run_logger().info(
            "%s %s: val %s -> %s, test %s -> %s, best prompt %s; %d proposals, %d accepted; "
            "LLM calls %s, %s tokens, $%.4f, %.1f s",
            run.run_id,
            run.status,
            score_text(run.baseline_val),
            score_text(run.best_val),
            score_text(run.baseline_test),
            score_text(run.best_test),
            run.best_prompt,
            run.proposals,
            run.accepted,
            calls_text(run.usage),
            f"{run.usage.tokens:,}",
            run.usage.cost_usd,
            run.seconds,
        )
        stopped = f"\n\nStopped because: {run.stop_reason}" if run.stop_reason else ""
        chart = await charting
        await acreate_markdown_artifact(
            f"# {run.name}: {run.status}{stopped}\n\n"
            "| | baseline | best |\n|---|---|---|\n"
            f"| val | {score_text(run.baseline_val)} | {score_text(run.best_val)} |\n"
            f"| test | {score_text(run.baseline_test)} | {score_text(run.best_test)} |\n"
            f"| prompt | {run.baseline_prompt} | {run.best_prompt} |\n\n"
            f"Steps {run.steps}, proposals tried {run.proposals}, accepted {run.accepted}. "
            f"LLM calls {calls_text(run.usage)}, tokens {run.usage.tokens:,}, "
            f"cost ${run.usage.cost_usd:.4f}, {run.seconds:.1f} s.\n\n"
            f"DuckDB run id `{run.run_id}` in `{store_path}`: "
            f"`prompt-descent show {run.run_id} --store {store_path}`\n\n"
            f"{chart}"
            f"## Best prompt\n\n{prompt_markdown(best)}",
            key=_key(self.run_id, "summary"),
            description=f"{self.run_id}: baseline vs best",
        )


async def publish_promotion(promotion: Promotion) -> None:
    """The reoptimize decision on its flow run: scores, verdict, reason."""
    verdict = (
        f"promoted as v{promotion.promoted_version}" if promotion.promoted else "champion kept"
    )
    champion = (
        f"v{promotion.champion_version}" if promotion.champion_version else "(none registered)"
    )
    await acreate_markdown_artifact(
        f"# {promotion.name}: {verdict}\n\n{promotion.reason}\n\n"
        "| | prompt | test score |\n|---|---|---|\n"
        f"| champion {champion} | {promotion.champion_prompt} | "
        f"{score_text(promotion.champion_score)} |\n"
        f"| challenger | {promotion.challenger_prompt} | "
        f"{score_text(promotion.challenger_score)} |\n\n"
        f"Margin {promotion.margin}; optimizer run `{promotion.run_id}`.",
        key=_key(promotion.name, "promotion"),
        description=f"{promotion.name}: challenger vs champion",
    )
