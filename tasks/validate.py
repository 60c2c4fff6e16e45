"""Step 5, the guard: score the candidate on the batch, then on the validation split.

The batch comes first because it is small: a candidate that does not beat the
current prompt on the examples it was written for is rejected there. Validation
then runs in chunks and stops as soon as the candidate can no longer reach the
current prompt's val score even if every remaining example were right. With
`exhaustive` (always-accept runs) nothing stops early: every score is reported.
"""

from __future__ import annotations

from prefect import task

from prompt_descent.config import Example, MetricSpec, ModelSettings, Prompt, SplitScore
from prompt_descent.records import Candidate, Validation
from tasks.metric import compute_scores
from tasks.options import STEP_OPTIONS
from tasks.predict import generate_predictions


async def _score(
    prompt: Prompt,
    examples: list[Example],
    spec: MetricSpec,
    task_model: ModelSettings,
    judge: ModelSettings,
    concurrency: int,
) -> SplitScore:
    predictions = await generate_predictions(prompt, examples, task_model, concurrency)
    return await compute_scores(spec, prompt.id, examples, predictions, judge, concurrency)


async def validate_candidate(
    candidate: Candidate,
    batch: list[Example],
    current_batch: SplitScore,
    val: list[Example],
    current_val: SplitScore,
    spec: MetricSpec,
    task_model: ModelSettings,
    judge: ModelSettings,
    concurrency: int,
    exhaustive: bool = False,
) -> Validation:
    result = Validation(batch_before=current_batch.score, val_before=current_val.score)
    if candidate.prompt is None:
        return result.model_copy(update={"stopped_because": candidate.rejected_because})
    prompt = candidate.prompt
    on_batch = await _score(prompt, batch, spec, task_model, judge, concurrency)
    result = result.model_copy(update={"batch": on_batch, "batch_after": on_batch.score})
    if on_batch.score <= current_batch.score and not exhaustive:
        return result.model_copy(
            update={
                "stopped_because": (
                    f"not better on the batch ({on_batch.score:.3f} vs {current_batch.score:.3f})"
                )
            }
        )

    scored = []
    total = 0.0
    for start in range(0, len(val), concurrency):
        chunk = await _score(
            prompt, val[start : start + concurrency], spec, task_model, judge, concurrency
        )
        scored.extend(chunk.predictions)
        total += sum(p.score for p in chunk.predictions)
        best_reachable = (total + len(val) - len(scored)) / len(val)
        if best_reachable < current_val.score and not exhaustive:
            partial = SplitScore(prompt_id=prompt.id, predictions=scored)
            return result.model_copy(
                update={
                    "val": partial,
                    "val_examples_scored": len(scored),
                    "stopped_because": (
                        f"cannot reach val {current_val.score:.3f}: at most {best_reachable:.3f} "
                        f"after {len(scored)}/{len(val)} examples"
                    ),
                }
            )
    on_val = SplitScore(prompt_id=prompt.id, predictions=scored)
    return result.model_copy(
        update={"val": on_val, "val_after": on_val.score, "val_examples_scored": len(scored)}
    )


@task(name="validate", task_run_name="validate {label}", **STEP_OPTIONS)
async def validate(
    candidate: Candidate,
    batch: list[Example],
    current_batch: SplitScore,
    val: list[Example],
    current_val: SplitScore,
    spec: MetricSpec,
    task_model: ModelSettings,
    judge: ModelSettings,
    concurrency: int,
    exhaustive: bool = False,
    label: str = "",
) -> Validation:
    return await validate_candidate(
        candidate,
        batch,
        current_batch,
        val,
        current_val,
        spec,
        task_model,
        judge,
        concurrency,
        exhaustive,
    )
