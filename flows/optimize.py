"""optimize_prompt: the trainer loop. It wires the six steps; the steps hold the logic."""

from __future__ import annotations

import time
import uuid

from prefect import flow, get_run_logger

from prompt_descent import llm
from prompt_descent.batching import minibatches, planned_steps
from prompt_descent.config import Example, Prompt, RunConfig, SplitScore
from prompt_descent.datasets import load_examples, split_examples
from prompt_descent.errors import BudgetExhausted
from prompt_descent.recorder import RunRecorder
from prompt_descent.records import RegistryEntry, RunSummary
from prompt_descent.store import Store
from tasks.apply import apply
from tasks.decide import decide
from tasks.gradient import gradient
from tasks.metric import metric, resolve_metric
from tasks.predict import predict
from tasks.validate import validate


def new_run_id(name: str) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")[:40]
    return f"{slug}-{uuid.uuid4().hex[:8]}"


@flow(name="optimize_prompt", flow_run_name="optimize {config.name}")
async def optimize_prompt(config: RunConfig, run_id: str | None = None) -> RunSummary:
    logger = get_run_logger()
    started = time.monotonic()
    resolve_metric(config.metric)
    splits = split_examples(load_examples(config.dataset), config.splits, config.seed)
    store = Store(config.store)
    run_id = run_id or new_run_id(config.name)
    gateway = llm.Gateway(config.budget, store.cached_calls())
    llm.activate(gateway)
    recorder = RunRecorder(store, gateway, run_id)
    store.start_run(run_id, config.name, "metric", config.model_dump(mode="json"))
    models = config.models

    async def evaluate(
        prompt: Prompt, split: str, examples: list[Example], label: str
    ) -> SplitScore:
        outputs = await predict(prompt, examples, models.task, config.concurrency, label=label)
        scores = await metric(
            config.metric,
            prompt.id,
            examples,
            outputs,
            models.judge,
            config.concurrency,
            label=label,
        )
        recorder.evaluation(prompt, split, scores, label)
        return scores

    current = config.prompt
    run = RunSummary(
        run_id=run_id, name=config.name, baseline_prompt=current.id, best_prompt=current.id
    )
    try:
        current_val = await evaluate(current, "val", splits.val, "baseline val")
        run.baseline_val = run.best_val = current_val.score
        if splits.test:
            run.baseline_test = (
                await evaluate(current, "test", splits.test, "baseline test")
            ).score
        logger.info(
            "baseline %s: val %.3f test %s", current.id, run.baseline_val, run.baseline_test
        )
        history: list[tuple[Prompt, float]] = [(current, current_val.score)]
        total_steps = planned_steps(
            len(splits.train), config.batch_size, config.epochs, config.steps
        )
        for step, batch in enumerate(
            minibatches(splits.train, config.batch_size, config.seed, total_steps), start=1
        ):
            run.steps = step
            batch_scores = await evaluate(current, "train", batch, f"step {step}")
            if batch_scores.score >= 1.0:
                recorder.skipped(step, batch, current, batch_scores.score)
                continue
            rejected: list[Prompt] = []
            for proposal in range(1, config.max_proposals + 1):
                label = f"step {step} proposal {proposal}"
                proposal_started, usage_before = time.monotonic(), gateway.usage.model_copy()
                feedback = await gradient(
                    current, batch, batch_scores, models.gradient, rejected, label=label
                )
                candidate = await apply(
                    current, feedback, history[-config.history_size :], models.apply, label=label
                )
                validation = await validate(
                    candidate,
                    batch,
                    batch_scores,
                    splits.val,
                    current_val,
                    config.metric,
                    models.task,
                    models.judge,
                    config.concurrency,
                    label=label,
                )
                decision = await decide(validation, label=label)
                run.proposals += 1
                recorder.proposal(
                    step,
                    proposal,
                    batch,
                    current,
                    feedback,
                    candidate,
                    validation,
                    decision,
                    gateway.usage.minus(usage_before),
                    time.monotonic() - proposal_started,
                )
                logger.info(
                    "%s: %s (%s)",
                    label,
                    "accepted" if decision.accepted else "rejected",
                    decision.reason,
                )
                if candidate.prompt is None:
                    continue
                tried_score = validation.val_after
                if tried_score is None:
                    tried_score = validation.batch_after or 0.0
                history.append((candidate.prompt, tried_score))
                if decision.accepted and validation.val is not None:
                    current, current_val = candidate.prompt, validation.val
                    run.best_prompt, run.best_val = current.id, current_val.score
                    run.accepted += 1
                    break
                rejected.append(candidate.prompt)
        if splits.test:
            run.best_test = (
                run.baseline_test
                if current.id == run.baseline_prompt
                else (await evaluate(current, "test", splits.test, "best test")).score
            )
    except BudgetExhausted as exhausted:
        run.status, run.stop_reason = "stopped", str(exhausted)
        logger.warning("stopping: %s; keeping the best prompt so far", exhausted)
        recorder.flush_calls()
    except BaseException as failure:
        recorder.flush_calls()
        run.status, run.stop_reason = "failed", f"{type(failure).__name__}: {failure}"
        run.usage, run.seconds = gateway.usage.model_copy(), time.monotonic() - started
        store.finish_run(run_id, run)
        raise

    if run.status == "running":
        run.status = "completed"
    run.usage, run.seconds = gateway.usage.model_copy(), time.monotonic() - started
    if run.best_val is not None:
        run.registered_version = store.register(
            RegistryEntry(
                name=config.registry_name,
                settings=models.task,
                val_score=run.best_val,
                test_score=run.best_test,
                champion=True,
                run_id=run_id,
            ),
            current,
        )
    store.finish_run(run_id, run)
    return run
