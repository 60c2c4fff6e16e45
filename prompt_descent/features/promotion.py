"""Whether a run's best prompt becomes the champion its registry name serves.

One rule, for `optimize` and the scheduled `reoptimize`: a challenger is promoted only
when it beats the champion on the same held-out split, scored with the same task model,
by more than a margin. `optimize` registers every best prompt as a version and applies
the rule by its `promote` setting; `reoptimize` registers only a challenger that wins.
"""

from __future__ import annotations

from typing import Literal

from prompt_descent.core.config import RunConfig
from prompt_descent.core.results import Promotion, RegisteredPrompt, RunSummary
from prompt_descent.storage.store import Store

PromoteRule = Literal["always", "if_better", "never"]


def decide_promotion(
    name: str,
    champion: RegisteredPrompt | None,
    run: RunSummary,
    champion_score: float,
    challenger_score: float,
    margin: float,
    split: str = "test",
) -> Promotion:
    """Promote only a different prompt that beats the champion by more than `margin`."""
    gain = challenger_score - champion_score
    held_out = f"{split} {challenger_score:.3f} vs {champion_score:.3f} ({gain:+.3f})"
    defending = f"champion v{champion.version}" if champion else "the config's prompt"
    defended_prompt = champion.prompt.id if champion else run.baseline_prompt
    if run.best_prompt == defended_prompt:
        promoted, reason = False, f"no proposal beat {defending} during optimization; kept"
    elif gain > margin:
        promoted, reason = True, f"challenger beats {defending}: {held_out} > margin {margin}"
    else:
        promoted = False
        reason = f"challenger does not beat {defending}: {held_out} is not > margin {margin}; kept"
    return _promotion(
        name, champion, run, champion_score, challenger_score, margin, promoted, reason
    )


def incomparable(champion: RegisteredPrompt, config: RunConfig) -> str | None:
    """Why the champion cannot be scored against this run's prompts, or None if it can."""
    task_model = config.models.task.model
    if champion.settings.model != task_model:
        return (
            f"champion v{champion.version} is tuned for {champion.settings.model} and this run "
            f"for {task_model}, so their scores do not compare"
        )
    unmapped = champion.prompt.placeholders() - set(config.dataset.fields)
    if unmapped:
        names = ", ".join(f"{{{name}}}" for name in sorted(unmapped))
        return f"champion v{champion.version} uses {names}, which this dataset does not map"
    return None


def promote_run(
    rule: PromoteRule,
    name: str,
    champion: RegisteredPrompt | None,
    run: RunSummary,
    champion_score: float | None,
    margin: float,
    incomparable_reason: str | None,
) -> Promotion:
    """The decision for an optimize run's best prompt, registered as a new version of `name`.

    `champion_score` is the champion's score on the run's held-out split with the run's
    task model (None when the run stopped before it was scored); `incomparable_reason`
    says why the champion cannot be scored so (see `incomparable`).
    """
    split = "test" if run.best_test is not None else "val"
    challenger_score = run.best_test if run.best_test is not None else run.best_val

    def decided(promoted: bool, reason: str) -> Promotion:
        return _promotion(
            name, champion, run, champion_score, challenger_score, margin, promoted, reason
        )

    if rule == "never":
        return decided(False, "promote: never; registered as a version, the champion is unchanged")
    if rule == "always":
        return decided(True, "promote: always")
    if champion is None:
        return decided(True, f"the first version of {name}")
    if incomparable_reason is not None:
        return decided(False, f"{incomparable_reason}; kept (promote: always replaces it)")
    if champion_score is None or challenger_score is None:
        return decided(
            False, f"the run stopped before champion v{champion.version} was scored held out; kept"
        )
    return decide_promotion(
        name, champion, run, champion_score, challenger_score, margin, split=split
    )


def _promotion(
    name: str,
    champion: RegisteredPrompt | None,
    run: RunSummary,
    champion_score: float | None,
    challenger_score: float | None,
    margin: float,
    promoted: bool,
    reason: str,
) -> Promotion:
    return Promotion(
        name=name,
        champion_version=champion.version if champion else None,
        champion_prompt=champion.prompt.id if champion else run.baseline_prompt,
        challenger_prompt=run.best_prompt,
        champion_score=champion_score,
        challenger_score=challenger_score,
        margin=margin,
        promoted=promoted,
        reason=reason,
        run_id=run.run_id,
    )


def record_promotion(promotion: Promotion, store: Store) -> None:
    """Keep the decision, promoted or not, as a row of the store's `promotions` table."""
    store.record_promotion(promotion)
