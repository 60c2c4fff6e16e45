"""Turns what the steps returned into rows: the flow calls it after every step."""

from __future__ import annotations

from prompt_descent.config import Example, Prompt, SplitScore
from prompt_descent.llm import Gateway
from prompt_descent.records import (
    Candidate,
    Decision,
    Feedback,
    IterationRecord,
    Usage,
    Validation,
)
from prompt_descent.store import Store


class RunRecorder:
    def __init__(self, store: Store, gateway: Gateway, run_id: str) -> None:
        self.store = store
        self.gateway = gateway
        self.run_id = run_id

    def evaluation(self, prompt: Prompt, split: str, scores: SplitScore, label: str) -> None:
        self.store.save_step(
            self.run_id,
            prompts=[prompt],
            calls=self.gateway.drain(),
            predictions=[(prompt.id, split, scores.predictions)],
            evaluations=[(prompt.id, split, scores.score, len(scores.predictions), label)],
        )

    def skipped(self, step: int, batch: list[Example], current: Prompt, score: float) -> None:
        self.store.save_step(
            self.run_id,
            prompts=[current],
            calls=self.gateway.drain(),
            iteration=IterationRecord(
                step=step,
                proposal=0,
                batch_ids=[e.id for e in batch],
                current_prompt=current.id,
                candidate_prompt=None,
                batch_before=score,
                batch_after=None,
                val_before=None,
                val_after=None,
                val_examples_scored=0,
                accepted=False,
                reason="batch already perfect: nothing to learn",
                llm_calls=0,
                tokens=0,
                cost_usd=0.0,
                seconds=0.0,
            ),
        )

    def proposal(
        self,
        step: int,
        proposal: int,
        batch: list[Example],
        current: Prompt,
        feedback: Feedback,
        candidate: Candidate,
        validation: Validation,
        decision: Decision,
        spent: Usage,
        seconds: float,
    ) -> IterationRecord:
        prompts = [current] + ([candidate.prompt] if candidate.prompt else [])
        predictions = [
            (candidate.prompt.id, split, scores.predictions)
            for split, scores in (("train", validation.batch), ("val", validation.val))
            if candidate.prompt is not None and scores is not None
        ]
        row = IterationRecord(
            step=step,
            proposal=proposal,
            batch_ids=[e.id for e in batch],
            current_prompt=current.id,
            candidate_prompt=candidate.prompt.id if candidate.prompt else None,
            batch_before=validation.batch_before,
            batch_after=validation.batch_after,
            val_before=validation.val_before,
            val_after=validation.val_after,
            val_examples_scored=validation.val_examples_scored,
            accepted=decision.accepted,
            reason=decision.reason,
            llm_calls=spent.calls,
            tokens=spent.tokens,
            cost_usd=spent.cost_usd,
            seconds=seconds,
        )
        self.store.save_step(
            self.run_id,
            prompts=prompts,
            calls=self.gateway.drain(),
            predictions=predictions,
            gradient=(step, proposal, current.id, feedback.text),
            iteration=row,
        )
        return row

    def flush_calls(self) -> None:
        self.store.save_step(self.run_id, prompts=[], calls=self.gateway.drain())
