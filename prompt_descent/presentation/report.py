"""A run as a picture and a page: the score chart (SVG) and a self-contained HTML report.

Everything comes from the run's DuckDB rows, so a report can be made for any run
at any time (`prompt-descent report RUN`), and the optimize flow makes one at the
end of every run for its Prefect summary artifact.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prompt_descent.core.config import Prompt
from prompt_descent.core.results import RegisteredPrompt, Usage
from prompt_descent.presentation.chart import Proposal, score_chart
from prompt_descent.presentation.text import prompt_sections, score_text
from prompt_descent.storage.store import Store

CHART_NAME = "scores.svg"
REPORT_NAME = "report.html"


def report_dir(store_path: str | Path, run_id: str) -> Path:
    """Where a run's report goes: `reports/<run id>/` beside the store file."""
    return Path(store_path).parent / "reports" / run_id


@dataclass
class RunHistory:
    """The rows of one run that the chart and the report are made from."""

    run: dict[str, Any]
    iterations: list[dict[str, Any]]
    prompts: dict[str, Prompt]
    usage: Usage
    registered: list[RegisteredPrompt]

    @classmethod
    def load(cls, store: Store, run_id: str) -> RunHistory:
        with store.session():
            run = store.run_row(run_id)
            if run is None:
                raise KeyError(run_id)
            history = cls(
                run,
                store.iterations(run_id),
                store.run_prompts(run_id),
                store.run_usage(run_id),
                store.versions(run_id=run_id),
            )
        return history

    @property
    def proposals(self) -> list[dict[str, Any]]:
        return [it for it in self.iterations if it["proposal"] > 0]

    @property
    def accepted(self) -> list[dict[str, Any]]:
        return [it for it in self.iterations if it["accepted"]]

    def steps(self) -> int:
        last = max((it["step"] for it in self.iterations), default=0)
        return max(self.run["steps"] or 0, last)

    def val_by_step(self) -> list[tuple[int, float]]:
        """The current prompt's val score after each step, from the baseline at step 0."""
        baseline = self.run["baseline_val"]
        if baseline is None:
            return []
        accepted = {it["step"]: it["val_after"] for it in self.accepted}
        points, current = [(0, baseline)], baseline
        for step in range(1, self.steps() + 1):
            if accepted.get(step) is not None:
                current = accepted[step]
            points.append((step, current))
        return points


# --- the chart ----------------------------------------------------------------------------


def chart_svg(history: RunHistory) -> str:
    run = history.run
    return score_chart(
        title=f"{run['name']} ({run['run_id']}): {run['status']}",
        steps=history.steps(),
        proposals=[
            Proposal(
                step=it["step"],
                proposal=it["proposal"],
                batch_before=it["batch_before"],
                batch_after=it["batch_after"],
                val_after=it["val_after"],
                accepted=it["accepted"],
            )
            for it in history.iterations
        ],
        val_by_step=history.val_by_step(),
        best_test=run["best_test"],
        baseline_test=run["baseline_test"],
    )


def svg_data_uri(svg: str) -> str:
    """The chart as an <img> source: the Prefect UI renders images, not inline SVG."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


# --- the HTML report -----------------------------------------------------------------------

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:70em;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em}
th{background:#f3f3f3;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.accepted td{background:#eaf7ea}pre{background:#f6f6f6;padding:.6em;white-space:pre-wrap}
.add{color:#1a7f37;background:#e6ffec}.del{color:#cf222e;background:#ffebe9}.meta{color:#888}
img{max-width:100%;border:1px solid #ddd}
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _time(value: Any) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"


def _prompt_html(prompt: Prompt | None, prompt_id: str) -> str:
    if prompt is None:
        return f"<p class=meta>prompt {_e(prompt_id)} is not in the store</p>"
    return "".join(
        f"<p><b>{_e(title)}</b></p><pre>{_e(text)}</pre>" for title, text in prompt_sections(prompt)
    )


def _diff_html(before: Prompt, after: Prompt) -> str:
    lines = before.diff_lines(after)
    out = []
    for line in lines:
        kind = (
            "meta"
            if line.startswith(("---", "+++", "@@"))
            else "add"
            if line.startswith("+")
            else "del"
            if line.startswith("-")
            else ""
        )
        out.append(f'<span class="{kind}">{_e(line)}</span>' if kind else _e(line))
    return "<pre>" + "\n".join(out) + "</pre>"


def _summary_html(history: RunHistory) -> str:
    run, usage = history.run, history.usage
    rows = [
        ("val", score_text(run["baseline_val"]), score_text(run["best_val"])),
        ("test", score_text(run["baseline_test"]), score_text(run["best_test"])),
        ("prompt", run["baseline_prompt"], run["best_prompt"]),
    ]
    table = "".join(
        f"<tr><th>{_e(a)}</th><td class=num>{_e(b)}</td><td class=num>{_e(c)}</td></tr>"
        for a, b, c in rows
    )
    stopped = f"<p>Stopped because: {_e(run['stop_reason'])}</p>" if run["stop_reason"] else ""
    registered = "".join(
        f"<p>Registered as <b>{_e(r.name)} v{r.version}</b>"
        f"{' (champion)' if r.champion else ''}.</p>"
        for r in history.registered
    )
    config = json.loads(run["config"]) if run["config"] else {}
    task_model = (config.get("models") or {}).get("task", {}).get("model", "")
    return (
        f"<table><tr><th></th><th>baseline</th><th>best</th></tr>{table}</table>"
        f"<p>Status <b>{_e(run['status'])}</b>; steps {run['steps'] or 0}, proposals tried "
        f"{len(history.proposals)}, accepted {len(history.accepted)}. LLM calls "
        f"{usage.calls}, tokens {usage.tokens:,}, cost ${usage.cost_usd:.4f}. "
        f"Task model <code>{_e(task_model)}</code>. Started {_time(run['started_at'])}, "
        f"finished {_time(run['finished_at'])}.</p>{stopped}{registered}"
    )


def _history_html(history: RunHistory) -> str:
    run, prompts = history.run, history.prompts
    baseline = run["baseline_prompt"]
    parts = [
        f"<h3>Baseline {_e(baseline)} (val {score_text(run['baseline_val'])})</h3>",
        _prompt_html(prompts.get(baseline), baseline),
    ]
    previous = baseline
    for it in history.accepted:
        new = it["candidate_prompt"]
        parts.append(
            f"<h3>Step {it['step']} proposal {it['proposal']}: accepted {_e(new)}</h3>"
            f"<p>{_e(it['reason'])}</p>"
        )
        parts.append(_prompt_html(prompts.get(new), new))
        before, after = prompts.get(previous), prompts.get(new)
        if before is not None and after is not None:
            parts.append(f"<p><b>diff against {_e(previous)}</b></p>")
            parts.append(_diff_html(before, after))
        previous = new
    if not history.accepted:
        parts.append("<p>No proposal was accepted: the baseline is the best prompt.</p>")
    return "".join(parts)


_COLUMNS = (
    ("step", "step"),
    ("proposal", "proposal"),
    ("batch before", "batch_before"),
    ("batch after", "batch_after"),
    ("val before", "val_before"),
    ("val after", "val_after"),
    ("val n", "val_examples_scored"),
    ("accepted", "accepted"),
    ("reason", "reason"),
    ("candidate", "candidate_prompt"),
    ("calls", "llm_calls"),
    ("tokens", "tokens"),
    ("cost usd", "cost_usd"),
    ("s", "seconds"),
)


def _cell(column: str, value: object) -> str:
    if column in {"batch_before", "batch_after", "val_before", "val_after"}:
        return f"<td class=num>{score_text(value)}</td>"  # type: ignore[arg-type]
    if column == "accepted":
        return f"<td>{'yes' if value else 'no'}</td>"
    if column == "cost_usd":
        return f"<td class=num>{value:.4f}</td>"
    if column == "seconds":
        return f"<td class=num>{value:.1f}</td>"
    if isinstance(value, int):
        return f"<td class=num>{value}</td>"
    return f"<td>{_e(value)}</td>"


def _candidate_cell(prompt_id: str | None, prompts: dict[str, Prompt]) -> str:
    """The candidate's id, its text collapsed beneath it."""
    if prompt_id is None:
        return "<td>-</td>"
    return (
        f"<td><details><summary>{_e(prompt_id)}</summary>"
        f"{_prompt_html(prompts.get(prompt_id), prompt_id)}</details></td>"
    )


def _iterations_html(history: RunHistory) -> str:
    if not history.iterations:
        return "<p>No iterations were recorded.</p>"
    head = "".join(f"<th>{_e(title)}</th>" for title, _ in _COLUMNS)
    body = "".join(
        f"<tr{' class=accepted' if it['accepted'] else ''}>"
        + "".join(
            _candidate_cell(it[column], history.prompts)
            if column == "candidate_prompt"
            else _cell(column, it[column])
            for _, column in _COLUMNS
        )
        + "</tr>"
        for it in history.iterations
    )
    return f"<table id=iterations><tr>{head}</tr>{body}</table>"


def render_html(history: RunHistory, chart: str) -> str:
    run = history.run
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>{_e(run['name'])} {_e(run['run_id'])}: prompt-descent report</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>{_e(run['name'])} <span class=meta>{_e(run['run_id'])}</span></h1>"
        f"{_summary_html(history)}"
        f'<h2>Scores per step</h2><img alt="scores per step" src="{svg_data_uri(chart)}">'
        f"<h2>Prompt history</h2>{_history_html(history)}"
        f"<h2>Iterations</h2>{_iterations_html(history)}"
        "</body></html>\n"
    )


def save_report(history: RunHistory, out_dir: str | Path) -> Path:
    """Write `report.html` (the chart embedded) and `scores.svg` into out_dir; returns the HTML."""
    chart = chart_svg(history)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / CHART_NAME).write_text(chart, encoding="utf-8")
    path = out / REPORT_NAME
    path.write_text(render_html(history, chart), encoding="utf-8")
    return path
