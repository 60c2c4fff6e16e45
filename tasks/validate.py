"""Step 5, the guard: score the candidate on the batch, then on the validation split.

A candidate must be strictly better than the current prompt on the batch it was
written for, then not worse on val. Both are scored the same frugal way:

- the examples the current prompt does worst on come first: a candidate that
  cannot win shows it there soonest (on the batch, a candidate that fixes none of
  the failing examples is rejected without predicting the passing ones);
- predictions go out in chunks no larger than the number of examples it takes at
  least to put the target out of reach (each example can lose at most 1), and
  scoring stops as soon as the candidate cannot reach the target even if every
  remaining example were right.

With `exhaustive` (always-accept runs) nothing stops early: every score is reported.
"""

from __future__ import annotations

import math

from prefect import task

from prompt_descent.config import (
    Example,
    MetricSpec,
    ModelSettings,
    Prediction,
    Prompt,
    SplitScore,
)
from prompt_descent.records import Candidate, Validation
from tasks.metric import compute_scores
from tasks.options import STEP_OPTIONS
from tasks.predict import generate_predictions

# sums of float scores differ in the last bits with the order they were added in
TOLERANCE = 1e-9


def hardest_first(examples: list[Example], current: SplitScore) -> list[Example]:
    score_of = {p.example_id: p.score for p in current.predictions}
    return sorted(examples, key=lambda e: score_of.get(e.id, 0.0))


def out_of_reach(reachable: float, target: float, strict: bool) -> bool:
    """Whether a best reachable score sum can no longer beat `target` (or, not `strict`,
    reach it)."""
    margin = reachable - target
    return margin <= TOLERANCE if strict else margin < -TOLERANCE


def examples_to_fall_short(margin: float, strict: bool) -> int:
    """The fewest further examples after which a candidate with this margin over the
    target (counting every unscored example as right) can be out of reach."""
    if strict:
        return max(1, math.ceil(margin - TOLERANCE))
    return max(1, math.floor(margin + TOLERANCE) + 1)


async def score_while_reachable(
    prompt: Prompt,
    examples: list[Example],
    target: float,
    strict: bool,
    spec: MetricSpec,
    task_model: ModelSettings,
    judge: ModelSettings,
    concurrency: int,
    exhaustive: bool,
) -> tuple[SplitScore, float]:
    """The candidate's scores, stopping once its score sum cannot beat `target` (or,
    not `strict`, reach it); returns them with the best sum still reachable."""
    scored: list[Prediction] = []
    total = 0.0
    while len(scored) < len(examples):
        reachable = total + len(examples) - len(scored)
        if not exhaustive and out_of_reach(reachable, target, strict):
            break
        size = (
            len(examples)
            if exhaustive
            else min(examples_to_fall_short(reachable - target, strict), concurrency)
        )
        chunk = examples[len(scored) : len(scored) + size]
        predictions = await generate_predictions(prompt, chunk, task_model, concurrency)
        scores = await compute_scores(spec, prompt.id, chunk, predictions, judge, concurrency)
        scored.extend(scores.predictions)
        total += sum(p.score for p in scores.predictions)
    reachable = total + len(examples) - len(scored)
    return SplitScore(prompt_id=prompt.id, predictions=scored), reachable


def _total(scores: SplitScore) -> float:
    return sum(p.score for p in scores.predictions)


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

    batch_target, val_target = _total(current_batch), _total(current_val)
    on_batch, batch_reachable = await score_while_reachable(
        prompt,
        hardest_first(batch, current_batch),
        batch_target,
        True,
        spec,
        task_model,
        judge,
        concurrency,
        exhaustive,
    )
    result = result.model_copy(update={"batch": on_batch})
    complete = len(on_batch.predictions) == len(batch)
    if complete:
        result = result.model_copy(update={"batch_after": on_batch.score})
    if out_of_reach(batch_reachable, batch_target, strict=True) and not exhaustive:
        if complete:
            why = f" ({on_batch.score:.3f} vs {current_batch.score:.3f})"
        else:
            why = (
                f": at most {batch_reachable / len(batch):.3f} vs {current_batch.score:.3f} "
                f"after {len(on_batch.predictions)}/{len(batch)} examples"
            )
        return result.model_copy(update={"stopped_because": f"not better on the batch{why}"})

    on_val, val_reachable = await score_while_reachable(
        prompt,
        hardest_first(val, current_val),
        val_target,
        False,
        spec,
        task_model,
        judge,
        concurrency,
        exhaustive,
    )
    result = result.model_copy(
        update={"val": on_val, "val_examples_scored": len(on_val.predictions)}
    )
    if out_of_reach(val_reachable, val_target, strict=False) and not exhaustive:
        return result.model_copy(
            update={
                "stopped_because": (
                    f"cannot reach val {current_val.score:.3f}: at most "
                    f"{val_reachable / len(val):.3f} after {len(on_val.predictions)}/{len(val)} "
                    "examples"
                )
            }
        )
    return result.model_copy(update={"val_after": on_val.score})


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
