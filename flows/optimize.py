"""optimize_prompt: the trainer loop. It wires the six steps; the steps hold the logic."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from functools import cached_property

from prefect import flow, get_run_logger
from prefect.utilities.annotations import quote

from flows.artifacts import RunPublisher
from flows.fanout import check_task_runner, open_fan_out
from flows.limits import provider_rate_limits
from prompt_descent.core.batching import minibatches, planned_steps
from prompt_descent.core.config import Example, Models, Prompt, RunConfig, SplitScore
from prompt_descent.core.context import fit_to_context
from prompt_descent.core.datasets import (
    DataSplits,
    check_demos_held_out,
    load_examples,
    split_examples,
)
from prompt_descent.core.pool import Pool
from prompt_descent.core.results import (
    Attempt,
    Candidate,
    Decision,
    Feedback,
    RegisteredPrompt,
    RunSummary,
    Usage,
    Validation,
)
from prompt_descent.features.promotion import incomparable, promote_run, record_promotion
from prompt_descent.features.registry import current_champion, register_prompt, registered_by
from prompt_descent.llm.gateway import Gateway, check_api_base, check_model, outside_budget
from prompt_descent.runtime.lifecycle import OpenRun, recorded_run
from prompt_descent.storage.database import check_writable
from prompt_descent.storage.store import Store
from prompt_descent.storage.writer import RunWriter
from tasks.apply import apply
from tasks.decide import AcceptRule, decide
from tasks.demos import propose_demos
from tasks.gradient import answer_space, gradient
from tasks.metric import resolve_metric
from tasks.options import named
from tasks.score import Scorer
from tasks.validate import validate


def new_run_id(name: str) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")[:40]
    return f"{slug}-{uuid.uuid4().hex[:8]}"


def prepare_run(config: RunConfig) -> DataSplits:
    """Everything that can be wrong with a run's input, checked before any call or record.

    The CLI calls it before starting the flow too, so a mistake is one line, not a
    failed flow run with a traceback.
    """
    check_writable(config.store)
    resolve_metric(config.metric)
    check_task_runner(config.task_runner, config.dask)
    for role in Models.model_fields:
        settings = getattr(config.models, role)
        check_model(settings, _model_field(config, role))
        check_api_base(settings, f"models.{role}.api_base")
    examples = fit_to_context(
        config.prompt, load_examples(config.dataset), config.models.task, config.long_inputs
    )
    splits = split_examples(examples, config.splits, config.seed)
    check_demos_held_out(config.prompt, [("val", splits.val), ("test", splits.test)])
    return splits


def _model_field(config: RunConfig, role: str) -> str | None:
    """The config field that gave `role` its model: `model`, `models.<role>.model`, or none
    (the default model)."""
    settings = getattr(config.models, role)
    if config.model is not None and settings.model == config.model:
        return "model"
    if role in config.models.model_fields_set and "model" in settings.model_fields_set:
        return f"models.{role}.model"
    return None


def outcome(validation: Validation, decision: Decision) -> str:
    """What the history tells apply about a tried prompt."""
    if validation.val_after is not None:
        return f"val {validation.val_after:.3f}"
    return f"rejected: {decision.reason}"


@dataclass
class Trainer:
    """The state one run carries from step to step."""

    config: RunConfig
    splits: DataSplits
    gateway: Gateway
    recorder: RunWriter
    publisher: RunPublisher
    run: RunSummary
    current: Prompt  # the prompt this step starts from
    current_val: SplitScore | None = None
    pool: Pool = field(init=False)  # the best prompts so far: see core/pool.py
    answers: list[str] = field(default_factory=list)  # the label set, shown to the gradient
    right: dict[str, str] = field(default_factory=dict)  # train example id -> a right output
    bootstrap_tried: set[tuple[str, str]] = field(default_factory=set)  # (prompt id, example id)
    paying_since: tuple[float, Usage] = (0.0, Usage())  # see start_paying

    def __post_init__(self) -> None:
        self.pool = Pool(self.config.pool)

    @cached_property
    def scorer(self) -> Scorer:
        config = self.config
        return Scorer(
            metric=config.metric,
            task_model=config.models.task,
            judge=config.models.judge,
            concurrency=config.concurrency,
        )

    async def evaluate(self, prompt: Prompt, split: str, examples: list[Example], label: str):
        unbudgeted = split == "test" and self.config.budget.covers == "optimization"
        with outside_budget() if unbudgeted else contextlib.nullcontext():
            scores = await self.scorer.score(prompt, examples, label)
        self.recorder.evaluation(prompt, split, scores, label)
        return scores

    @cached_property
    def rule(self) -> AcceptRule:
        feedback_mode = self.config.mode == "feedback"
        return AcceptRule(
            always_accept=feedback_mode and self.config.feedback.always_accept,
            early_reject_chance=self.config.early_reject_chance,
            val_ties_accepted=self.config.val_ties == "accept",
            val_margin=self.config.val_margin,
        )

    async def step(self, step: int, batch: list[Example], history: list[Attempt]):
        """A new demonstration set (when that lever is on), then up to max_proposals
        instruction edits for one batch, `race` at a time; stops at the first accepted
        candidate, or after `give_up_after` edits in a row gave no usable prompt."""
        config, models = self.config, self.config.models
        start = self.pool.start()
        self.current, self.current_val = start.prompt, start.val
        batch_scores = await self.evaluate(self.current, "train", batch, f"step {step}")
        self.remember_right(batch_scores)
        if batch_scores.score >= 1.0:
            self.recorder.skipped(step, batch, self.current, batch_scores.score)
            return
        self.start_paying()  # the batch's gradient is paid for by its first edit
        proposal = 0
        if config.demos.count:
            proposal += 1
            in_batch = {e.id for e in batch}
            pool = [e for e in self.splits.train if e.id not in in_batch]
            own_outputs_only = self.demos_show_reasoning
            if own_outputs_only:
                await self.bootstrap(step, pool)
            candidate = await named(propose_demos, f"demos step {step} proposal {proposal}")(
                self.current,
                pool,
                self.right,
                config.demos,
                config.seed + step,
                history,
                own_outputs_only,
            )
            if await self.try_candidate(step, proposal, batch, batch_scores, candidate, history):
                return
        feedback = await named(gradient, f"gradient step {step}")(
            self.current,
            batch,
            batch_scores,
            models.gradient,
            config.mode,
            self.answers,
            config.right_shown,
            config.metric.answer,
            models.task.max_tokens,
        )
        unusable: list[str] = []  # why earlier edits had no prompt, for apply to avoid
        edits = unusable_in_a_row = 0
        while edits < config.max_proposals:
            if unusable_in_a_row >= config.give_up_after:
                get_run_logger().info(
                    "step %d: %d edits in a row gave no usable prompt; on to the next batch",
                    step,
                    unusable_in_a_row,
                )
                return
            at_once = min(config.race, config.max_proposals - edits)
            numbers = range(proposal + 1, proposal + 1 + at_once)
            proposal += at_once
            for number, candidate in await self.propose_edits(
                step, batch, feedback, history, unusable, numbers
            ):
                new_gradient = feedback if edits == 0 else None  # stored with the edit paying
                edits += 1
                if await self.try_candidate(
                    step, number, batch, batch_scores, candidate, history, new_gradient
                ):
                    return
                if candidate.prompt is None:  # not in the history: apply is told apart
                    unusable.append(candidate.rejected_because or "unusable")
                    unusable_in_a_row += 1
                else:
                    unusable_in_a_row = 0

    async def propose_edits(
        self,
        step: int,
        batch: list[Example],
        feedback: Feedback,
        history: list[Attempt],
        unusable: list[str],
        numbers: range,
    ) -> list[tuple[int, Candidate]]:
        """Edits from one gradient, one per proposal number, asked for at once, in the order
        to validate them. A race of several: the usable ones scored together on the batch,
        best first (validate then finds those predictions in the call cache), then the
        unusable ones, to be recorded."""
        config = self.config
        clean = config.mode == "feedback" and config.feedback.clean
        recent = history[-config.history_size :]
        variants = len(numbers)
        candidates = await asyncio.gather(
            *(
                named(apply, f"apply step {step} proposal {number}")(
                    self.current,
                    feedback,
                    recent,
                    config.models.apply,
                    clean,
                    unusable,
                    (i, variants),
                )
                for i, number in enumerate(numbers, start=1)
            )
        )
        tries: list[tuple[int, Candidate]] = []
        seen: set[str] = set()
        for number, candidate in zip(numbers, candidates, strict=True):
            if candidate.prompt is not None and candidate.prompt.id in seen:
                candidate = Candidate(
                    prompt=None,
                    rejected_because="candidate repeats another variant of this race",
                    raw=candidate.raw,
                    repeats=candidate.prompt,
                )
            elif candidate.prompt is not None:
                seen.add(candidate.prompt.id)
            tries.append((number, candidate))
        if len(tries) == 1:
            return tries
        usable = [(number, c) for number, c in tries if c.prompt is not None]
        scores = await asyncio.gather(
            *(
                self.scorer.score(c.prompt, batch, f"race step {step} proposal {number}")
                for number, c in usable
            )
        )
        ranked = sorted(zip(usable, scores, strict=True), key=lambda pair: -pair[1].score)
        return [pair for pair, _ in ranked] + [(n, c) for n, c in tries if c.prompt is None]

    async def try_candidate(
        self,
        step: int,
        proposal: int,
        batch: list[Example],
        batch_scores: SplitScore,
        candidate: Candidate,
        history: list[Attempt],
        feedback: Feedback | None = None,
    ) -> bool:
        """Validate, decide and record one candidate; True when it was accepted."""
        label = f"step {step} proposal {proposal}"
        validation = await named(validate, f"validate {label}")(
            candidate,
            batch,
            batch_scores,
            quote(self.splits.val),
            quote(self.current_val),
            self.scorer,
            self.rule,
        )
        decision = await named(decide, f"decide {label}")(validation, self.rule)
        await self.record(step, proposal, batch, feedback, candidate, validation, decision)
        if candidate.prompt is None:
            return False
        history.append(Attempt(prompt=candidate.prompt, outcome=outcome(validation, decision)))
        if decision.accepted and validation.val is not None:
            await self.accept(step, candidate.prompt, validation.val, decision.reason)
            return True
        return False

    @property
    def demos_show_reasoning(self) -> bool:
        """Bootstrapped demonstrations where the answer is read from a longer output: they
        must be the model's own outputs, since a bare target shown as a demonstration teaches
        the model to answer without its reasoning."""
        return self.config.demos.source == "bootstrapped" and self.config.metric.answer is not None

    async def bootstrap(self, step: int, pool: list[Example]) -> None:
        """Right outputs of the current prompt for the demonstrations, as DSPy's
        BootstrapFewShot finds them: it answers up to twice as many train examples of `pool`
        as there are right outputs missing, each example once per prompt."""
        missing = self.config.demos.count - sum(e.id in self.right for e in pool)
        untried = [
            e
            for e in pool
            if e.id not in self.right and (self.current.id, e.id) not in self.bootstrap_tried
        ]
        chosen = untried[: 2 * missing] if missing > 0 else []
        if chosen:
            self.bootstrap_tried |= {(self.current.id, e.id) for e in chosen}
            scores = await self.evaluate(self.current, "train", chosen, f"step {step} bootstrap")
            self.remember_right(scores)

    def remember_right(self, scores: SplitScore) -> None:
        """The current prompt's whole, right answers: the bootstrapped demonstrations."""
        for prediction in scores.predictions:
            if prediction.score >= 1.0 and not prediction.truncated and prediction.error is None:
                self.right[prediction.example_id] = prediction.output

    def start_paying(self) -> None:
        """From now, the calls and time are the next proposal's."""
        self.paying_since = (time.monotonic(), self.gateway.usage.model_copy())

    async def record(
        self,
        step: int,
        proposal: int,
        batch: list[Example],
        feedback: Feedback | None,
        candidate: Candidate,
        validation: Validation,
        decision: Decision,
    ) -> None:
        """The proposal's row, its artifact and its log line; the next proposal pays anew."""
        started, usage_before = self.paying_since
        self.run.proposals += 1
        row = self.recorder.proposal(
            step,
            proposal,
            batch,
            self.current,
            feedback,
            candidate,
            validation,
            decision,
            self.gateway.usage.minus(usage_before),
            time.monotonic() - started,
        )
        await self.publisher.proposal(row)
        verdict = "accepted" if decision.accepted else "rejected"
        get_run_logger().info(
            "step %d proposal %d: %s (%s)", step, proposal, verdict, decision.reason
        )
        self.start_paying()

    async def accept(self, step: int, prompt: Prompt, val: SplitScore, reason: str) -> None:
        await self.publisher.accepted(step, self.current, prompt, reason)
        self.pool.add(prompt, val)
        self.run.best_prompt, self.run.best_val = self.best.id, self.pool.best.val.score
        self.run.accepted += 1

    @property
    def best(self) -> Prompt:
        """The top of the pool; the config's prompt while the baseline's val is unknown."""
        return self.pool.best.prompt if self.pool.members else self.current

    def known_held_out(self, prompt_id: str) -> float | None:
        """A prompt's score on the held-out split (test, else val), if the run scored it."""
        run, on_test = self.run, bool(self.splits.test)
        known = {
            run.baseline_prompt: run.baseline_test if on_test else run.baseline_val,
            self.best.id: run.best_test if on_test else run.best_val,
        }
        return known.get(prompt_id)

    async def score_held_out(self, prompt: Prompt) -> float:
        """A prompt's score on the held-out split, with this run's task model."""
        known = self.known_held_out(prompt.id)
        if known is not None:
            return known
        split, examples = (
            ("test", self.splits.test) if self.splits.test else ("val", self.splits.val)
        )
        return (await self.evaluate(prompt, split, examples, f"champion {split}")).score

    async def train(self) -> None:
        config, splits, run = self.config, self.splits, self.run
        self.current_val = await self.evaluate(self.current, "val", splits.val, "baseline val")
        run.baseline_val = run.best_val = self.current_val.score
        self.pool.add(self.current, self.current_val)
        if splits.test:
            baseline_test = await self.evaluate(self.current, "test", splits.test, "baseline test")
            run.baseline_test = baseline_test.score
        test = "-" if run.baseline_test is None else f"{run.baseline_test:.3f}"
        get_run_logger().info(
            "baseline %s: val %.3f, test %s", self.current.id, run.baseline_val, test
        )
        history = [Attempt(prompt=self.current, outcome=f"val {self.current_val.score:.3f}")]
        batches = minibatches(
            splits.train, config.batch_size, config.seed, self.publisher.planned_steps
        )
        for step, batch in enumerate(batches, start=1):
            run.steps = step
            await self.step(step, batch, history)
            await self.publisher.step_done(step)
        if splits.test:
            run.best_test = (
                run.baseline_test
                if self.best.id == run.baseline_prompt
                else (await self.evaluate(self.best, "test", splits.test, "best test")).score
            )


@flow(name="optimize_prompt", flow_run_name="optimize {config.name}")
async def optimize_prompt(
    config: RunConfig, run_id: str | None = None, register_best: bool = True
) -> RunSummary:
    """Optimize the config's prompt and register the best one as a version, the champion
    as `config.promote` rules; unless `register_best` is False (reoptimize registers only
    a challenger that wins).

    Given the id of an earlier, interrupted run it resumes it: every call that
    attempt completed (in DuckDB or in its journal) is served again, not paid again.
    """
    started = time.monotonic()
    splits = prepare_run(config)
    store = Store(config.store)
    run_id = run_id or new_run_id(config.name)
    steps = planned_steps(len(splits.train), config.batch_size, config.epochs, config.steps)
    run = RunSummary(
        run_id=run_id,
        name=config.name,
        baseline_prompt=config.prompt.id,
        best_prompt=config.prompt.id,
    )
    publisher = RunPublisher(run_id, steps)
    trainer: Trainer | None = None
    champion: RegisteredPrompt | None = (
        current_champion(config.registry_name, store) if register_best else None
    )
    champion_score: float | None = None

    async def close(opened: OpenRun) -> None:
        run.status, run.stop_reason = opened.status, opened.stop_reason
        gateway = opened.gateway
        if gateway.remote is not None:
            gateway.remote.close()
        recorder = RunWriter(store, gateway, run_id) if trainer is None else trainer.recorder
        recorder.calls(gateway.drain())
        if run.status == "failed":  # the steps done so far still reach the UI
            with contextlib.suppress(Exception):
                await publisher.sent()
        with store.session():  # opened first, the file stays open for the recorder's last write
            await recorder.flush()
            if opened.journal is not None:
                opened.journal.unlink(missing_ok=True)
            run.usage = store.run_usage(run_id).model_copy(  # every attempt's paid calls
                update={"cached_calls": gateway.usage.cached_calls}
            )
            run.seconds = time.monotonic() - started
            run.registered_version = registered_by(run_id, config.registry_name, store)
            if (
                register_best
                and run.registered_version is None
                and run.status != "failed"
                and not opened.interrupted  # its resume registers the prompt it ends with
                and run.best_val is not None
            ):
                register(trainer.best if trainer is not None else config.prompt)
            store.finish_run(run_id, run)

    def register(best: Prompt) -> None:
        """The best prompt as a new version; the champion only as `config.promote` rules."""
        known = (
            None
            if champion is None or trainer is None
            else trainer.known_held_out(champion.prompt.id)
        )
        promotion = promote_run(
            config.promote,
            config.registry_name,
            champion,
            run,
            champion_score if champion_score is not None else known,
            config.promote_margin,
            incomparable(champion, config) if champion is not None else None,
        )
        run.registered_version = register_prompt(
            config.registry_name,
            best,
            config.models.task,
            store,
            val_score=run.best_val,
            test_score=run.best_test,
            champion=promotion.promoted,
            run_id=run_id,
        ).version
        if promotion.promoted:
            promotion = promotion.model_copy(update={"promoted_version": run.registered_version})
        record_promotion(promotion, store)
        run.champion, run.promotion = promotion.promoted, promotion.reason

    async with recorded_run(
        store,
        run_id,
        config.name,
        config.mode,
        config.model_dump(mode="json"),
        budget=config.budget,
        retry=config.retry,
        journaled=True,
        before_request=await provider_rate_limits(config.rpm_limits),
        close=close,
    ) as opened:
        trainer = Trainer(
            config=config,
            splits=splits,
            gateway=opened.gateway,
            recorder=RunWriter(store, opened.gateway, run_id),
            publisher=publisher,
            run=run,
            current=config.prompt,
            answers=answer_space(splits.train),
        )
        await publisher.started()
        opened.gateway.remote = open_fan_out(config)
        await trainer.train()
        if (
            config.promote == "if_better"
            and champion is not None
            and incomparable(champion, config) is None
        ):
            champion_score = await trainer.score_held_out(champion.prompt)
    await publisher.finished(run, trainer.best, config.store)
    return run
