"""evaluate_prompt: score one prompt on a set of examples and record it."""

from __future__ import annotations

from prefect import flow

from prompt_descent.core.config import Example, MetricSpec, Models, Prompt, SplitScore
from prompt_descent.core.datasets import check_demos_held_out
from prompt_descent.errors import RunStopped
from prompt_descent.llm.gateway import check_model
from prompt_descent.runtime.lifecycle import OpenRun, recorded_run
from prompt_descent.storage.store import Store
from prompt_descent.storage.writer import RunWriter
from tasks.metric import resolve_metric
from tasks.score import Scorer


def prepare_evaluation(
    spec: MetricSpec, models: Models, prompt: Prompt, examples: list[Example], split: str
) -> None:
    """What can be wrong before any call: the metric, the models, and demonstrations that
    are examples of the scored set (the API calls it first)."""
    check_demos_held_out(prompt, [(split, examples)])
    resolve_metric(spec)
    check_model(models.task)
    if spec.name == "llm_judge":
        check_model(models.judge)


@flow(name="evaluate_prompt", flow_run_name="evaluate {prompt.id}")
async def evaluate_prompt(
    prompt: Prompt,
    examples: list[Example],
    spec: MetricSpec,
    models: Models,
    concurrency: int,
    store_path: str,
    run_id: str,
    split: str = "eval",
) -> SplitScore:
    prepare_evaluation(spec, models, prompt, examples, split)
    store = Store(store_path)
    scores: SplitScore | None = None

    async def close(opened: OpenRun) -> None:
        recorder.calls(opened.gateway.drain())
        await recorder.flush()
        score = None if scores is None else scores.score
        store.end_run(run_id, opened.status, opened.stop_reason, score)

    recorder: RunWriter
    async with recorded_run(
        store, run_id, run_id, "evaluate", {"prompt": prompt.model_dump()}, close=close
    ) as opened:
        recorder = RunWriter(store, opened.gateway, run_id)
        label = f"{split} {prompt.id}"
        scorer = Scorer(
            metric=spec, task_model=models.task, judge=models.judge, concurrency=concurrency
        )
        scores = await scorer.score(prompt, examples, label)
        recorder.evaluation(prompt, split, scores, label)
    if scores is None:
        raise RunStopped(opened.stop_reason or "stopped")
    return scores
