"""reoptimize: a challenger from the registered champion, promoted only if it wins held out.

The scheduled job of a data team: load the config (its dataset is read afresh, e.g. a
DuckDB query over the latest rows), start the optimizer from the prompt the registry
serves now, then score champion and challenger on the held-out test split with the same
task model settings. The challenger becomes the new champion only when it beats the
champion by more than `margin`; either way the decision and its reason are a row of the
`promotions` table and a markdown artifact on the flow run.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.artifacts import publish_promotion
from flows.evaluate import evaluate_prompt
from flows.optimize import new_run_id, optimize_prompt
from prompt_descent.core.config import Prompt, RunConfig
from prompt_descent.core.configfile import load_config
from prompt_descent.core.datasets import load_examples, split_examples
from prompt_descent.core.results import Promotion, RegisteredPrompt
from prompt_descent.errors import UserError
from prompt_descent.features.promotion import decide_promotion, record_promotion
from prompt_descent.features.registry import current_champion, register_prompt
from prompt_descent.presentation.text import score_text
from prompt_descent.storage.store import Store


def _run_name() -> str:
    return f"reoptimize {Path(flow_run.parameters['config_path']).stem}"


def _challenger_config(config: RunConfig, champion: RegisteredPrompt | None) -> RunConfig:
    """The config with the champion's prompt as the starting point."""
    if config.splits.test == 0:
        raise UserError(
            "reoptimize compares champion and challenger on the test split; set splits.test",
            file=config.source,
            field="splits.test",
        )
    if champion is None:
        return config
    unmapped = champion.prompt.placeholders() - set(config.dataset.fields)
    if unmapped:
        names = ", ".join(f"{{{name}}}" for name in sorted(unmapped))
        raise UserError(
            f"champion {champion.name} v{champion.version} uses {names}, which "
            "dataset.fields does not map; map it or register a champion for this dataset",
            file=config.source,
            field="dataset.fields",
        )
    return config.model_copy(update={"prompt": champion.prompt})


async def _test_score(config: RunConfig, prompt: Prompt, known: float | None, label: str) -> float:
    """The prompt's test score: the optimizer's if it got that far, else scored now."""
    if known is not None:
        return known
    splits = split_examples(load_examples(config.dataset), config.splits, config.seed)
    scores = await evaluate_prompt(
        prompt,
        splits.test,
        config.metric,
        config.models,
        config.concurrency,
        config.store,
        new_run_id(f"{config.name}-{label}-test"),
        split="test",
    )
    return scores.score


@flow(name="reoptimize", flow_run_name=_run_name)
async def reoptimize(config_path: str, margin: float = 0.0) -> Promotion:
    """Re-optimize from the registered champion; promote the challenger only if it wins on
    the test split by more than `margin`. Every decision is a row of `promotions`."""
    logger = get_run_logger()
    config = load_config(config_path)
    store = Store(config.store)
    name = config.registry_name
    champion = current_champion(name, store)
    logger.info(
        "champion of %s: %s",
        name,
        f"v{champion.version} {champion.prompt.id} (test {score_text(champion.test_score)})"
        if champion
        else "none registered; starting from the config's prompt",
    )
    challenger_config = _challenger_config(config, champion)
    # in this flow run, not a subflow: its steps and artifacts are on the run the user started
    run = await optimize_prompt.fn(challenger_config, register_best=False)
    champion_score = await _test_score(
        challenger_config, challenger_config.prompt, run.baseline_test, "champion"
    )
    challenger = store.prompt(run.best_prompt) or challenger_config.prompt
    challenger_score = await _test_score(challenger_config, challenger, run.best_test, "challenger")
    promotion = decide_promotion(name, champion, run, champion_score, challenger_score, margin)
    if champion is None and not promotion.promoted:
        promotion = promotion.model_copy(
            update={
                "reason": f"{promotion.reason}; nothing is registered yet: "
                "`prompt-descent optimize CONFIG` registers one"
            }
        )
    if promotion.promoted:
        version = register_prompt(
            name,
            challenger,
            config.models.task,
            store,
            val_score=run.best_val,
            test_score=challenger_score,
            champion=True,
            run_id=run.run_id,
        ).version
        promotion = promotion.model_copy(update={"promoted_version": version})
    record_promotion(promotion, store)
    logger.info(
        "%s: %s (%s)",
        name,
        f"promoted {challenger.id} as v{promotion.promoted_version}"
        if promotion.promoted
        else "champion kept",
        promotion.reason,
    )
    await publish_promotion(promotion)
    return promotion
